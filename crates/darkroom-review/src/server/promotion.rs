//! The review page's writes: exporting a selection as a select file, and promoting it. Each final
//! is made with the model the job's routing choices name for its row or group (saved on a trial's
//! pairs page), as `darkroom promote` makes it. A promotion runs in the background through the engine's promotion (`prepare_finals`: the budget
//! policy, then the finals) and `run_pass`, under the job's lock, as `darkroom promote` does; the
//! page reads its progress from the contact sheet.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use darkroom_engine::callbacks::CallbackReceiver;
use darkroom_engine::lock::JobLock;
use darkroom_engine::promote::{self, Plan, PromoteOptions, Selection};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::{internal, ReviewState};

/// The ids the page chose.
#[derive(Debug, Deserialize)]
pub(super) struct Chosen {
    ids: Vec<String>,
}

/// Checks the chosen ids; the error response lists every one that can't be promoted.
async fn checked_plan(review: &ReviewState, ids: Vec<String>) -> Result<Plan, Response> {
    if ids.is_empty() {
        return Err((
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "nothing is selected"})),
        )
            .into_response());
    }
    let plan = promote::plan(&review.ledger, review.config.job_id, &Selection::Ids(ids))
        .await
        .map_err(internal)?;
    if plan.has_errors() {
        return Err((
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "some chosen previews can't be promoted", "errors": plan.problems()})),
        )
            .into_response());
    }
    Ok(plan)
}

/// `POST /api/export`: writes `OUT/JOB/select.csv` with the chosen ids (`darkroom promote
/// --select` reads it).
pub(super) async fn export(State(review): State<Arc<ReviewState>>, Json(chosen): Json<Chosen>) -> Response {
    let ids = chosen.ids.clone();
    if let Err(response) = checked_plan(&review, chosen.ids).await {
        return response;
    }
    let path = review.config.out.join(&review.config.job).join("select.csv");
    let mut csv = String::from("id,pass,keep\n");
    for id in &ids {
        // Ids are letters, digits, '-', '_' and '.': nothing to quote.
        csv.push_str(&format!("{id},preview,y\n"));
    }
    match darkroom_engine::files::write_atomically(&path, csv.as_bytes()) {
        Ok(()) => Json(json!({"path": path.display().to_string(), "count": ids.len()})).into_response(),
        Err(e) => internal(e),
    }
}

/// `POST /api/promote`: starts the final pass for the chosen previews (202), unless one is running
/// (409) or an id can't be promoted (400, nothing spent).
pub(super) async fn start(State(review): State<Arc<ReviewState>>, Json(chosen): Json<Chosen>) -> Response {
    if review.client.is_none() {
        return (
            StatusCode::CONFLICT,
            Json(json!({"error": super::PROMOTION_NEEDS_KEY})),
        )
            .into_response();
    }
    let plan = match checked_plan(&review, chosen.ids).await {
        Ok(plan) => plan,
        Err(response) => return response,
    };
    {
        let Ok(mut finals) = review.finals.lock() else {
            return internal("the review server's state is poisoned");
        };
        if finals.running {
            return (
                StatusCode::CONFLICT,
                Json(json!({"error": "finals are being made; wait for them to finish"})),
            )
                .into_response();
        }
        finals.running = true;
        finals.message = Some(format!("making {} final(s)", plan.chosen.len()));
    }
    let options = match review.promote_options().await {
        Ok(options) => options,
        Err(e) => {
            if let Ok(mut finals) = review.finals.lock() {
                finals.running = false;
            }
            return internal(e);
        }
    };
    let cost = plan.routed_cost(&options);
    let count = plan.chosen.len();
    let background = review.clone();
    tokio::spawn(async move {
        let message = match make_finals(&background, plan, &options).await {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "review: the final pass failed");
                format!("the final pass stopped: {error}")
            }
        };
        if let Ok(mut finals) = background.finals.lock() {
            finals.running = false;
            finals.message = Some(message);
        }
    });
    (
        StatusCode::ACCEPTED,
        Json(json!({"count": count, "cost_micros": cost.micros(), "cost": cost.to_string()})),
    )
        .into_response()
}

/// An error and its causes on one line, as `anyhow` prints `{:#}`.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Adds the finals (each with the model its routing choice names, `options`) and runs the final
/// pass, as `darkroom promote` does; returns the line the page shows, or why the pass could not
/// run.
async fn make_finals(review: &ReviewState, plan: Plan, options: &PromoteOptions) -> Result<String, String> {
    let config = &review.config;
    let client = review.client.as_ref().ok_or(super::PROMOTION_NEEDS_KEY)?;
    let _lock = JobLock::acquire(&config.ledger_path, &config.job).map_err(|e| with_causes(&e))?;
    let added = promote::prepare_finals(
        &review.ledger,
        client,
        config.job_id,
        &plan,
        options,
        (None, config.default_budget),
    )
    .await
    .map_err(|e| with_causes(&e))?;
    let mut settings = config.run.clone();
    settings.deadline_ms = added.pass.deadline_at;
    // Only this selection's finals: another selection's left unmade stay as they are.
    settings.scope = Some(darkroom_ledger::TaskScope::of_keys(plan.keys()));
    if let Some(callbacks) = &config.callbacks {
        let receiver = CallbackReceiver::bind(callbacks.listen, callbacks.url.as_deref())
            .map_err(|e| format!("could not listen for callbacks on {}: {e}", callbacks.listen))?;
        settings.callbacks = Some(receiver);
    }
    let (tx, mut rx) = mpsc::channel(1024);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let (ledger, shutdown) = (&review.ledger, review.shutdown.clone());
    let outcome = match &config.routes {
        Some(routes) => {
            darkroom_engine::routing::run_routed(ledger, routes, &settings, config.job_id, tx, shutdown).await
        }
        None => darkroom_engine::run_pass(ledger, client, &settings, config.job_id, tx, shutdown).await,
    }
    .map_err(|e| with_causes(&e))?;
    let _ = drain.await;
    crate::report::refresh(
        &review.ledger,
        config.job_id,
        &config.job,
        &config.out.join(&config.job),
    )
    .await;
    let c = outcome.counts;
    let mut message = format!(
        "finals: {} done, {} blocked, {} failed, {} skipped; spent {} of {}",
        c.done, c.blocked, c.failed, c.skipped, outcome.spent, outcome.budget
    );
    if !added.without_reference.is_empty() {
        message.push_str(&format!(
            "; made from the prompt alone (preview URL expired): {}",
            added.without_reference.join(", ")
        ));
    }
    if let Some(stop) = outcome.stop {
        message.push_str(&format!("; stopped: {stop}"));
    }
    Ok(message)
}
