//! A trial side by side: `GET /trial` (the pairs page), `GET /api/trial` (each sampled row's
//! Flash image beside its Photon 1 image, with the choice that covers it) and `POST /api/routing`
//! (the token's write: "Flash is enough" or "needs Photon 1" for a row or a `group`, saved in the
//! ledger as routing the trialled job's later final runs honour, or cleared). A row or group the
//! trial does not hold is refused: the page can only judge what it shows.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use darkroom_engine::trial::figures::metadata;
use darkroom_jobs::choices::GROUP_COLUMN;
use darkroom_jobs::{ChoiceScope, Model, Pass, RoutingChoices};
use darkroom_ledger::{TileRecord, TrialRecord};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{internal, ReviewState};
use crate::report::escape;

const PAGE: &str = include_str!("trial.html");

/// One side of a pair: the task's key, state, and whether its image is there to show.
#[derive(Debug, Serialize)]
struct Side {
    key: String,
    state: String,
    done: bool,
}

/// One sampled row: its prompt and group, both images, and the choice that covers it.
#[derive(Debug, Serialize)]
struct Pair {
    row_id: String,
    prompt: String,
    group: Option<String>,
    flash: Option<Side>,
    photon: Option<Side>,
    /// `photon-flash-1` or `photon-1`, and whether the row's own choice or its group's.
    choice: Option<Choice>,
}

#[derive(Debug, Serialize)]
struct Choice {
    model: Model,
    scope: ChoiceScope,
}

/// What the page posts: a row or group, and the model its finals are made with (`null` clears).
#[derive(Debug, Deserialize)]
pub(super) struct RoutingRequest {
    scope: String,
    key: String,
    model: Option<String>,
}

/// `GET /trial`: the pairs page.
pub(super) async fn page(State(review): State<Arc<ReviewState>>) -> Response {
    let html = PAGE
        .replace("{{JOB}}", &escape(&review.config.job))
        .replace("{{TOKEN}}", &review.config.token);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'",
            ),
        ],
        html,
    )
        .into_response()
}

/// `GET /api/trial`: the trial's pairs; 404 when the job served is not a trial.
pub(super) async fn pairs(State(review): State<Arc<ReviewState>>) -> Response {
    match trial_pairs(&review).await {
        Ok(Some((trial, pairs))) => Json(json!({
            "job": review.config.job,
            "of_job": trial.of_job,
            "pairs": pairs,
        }))
        .into_response(),
        Ok(None) => not_a_trial(&review),
        Err(e) => internal(e),
    }
}

/// `POST /api/routing`: saves (or clears) a choice for a row or group of the trial.
pub(super) async fn choose(
    State(review): State<Arc<ReviewState>>,
    Json(request): Json<RoutingRequest>,
) -> Response {
    let bad = |error: String| (StatusCode::BAD_REQUEST, Json(json!({"error": error}))).into_response();
    let Some(scope) = ChoiceScope::parse(&request.scope) else {
        return bad(format!("scope {:?} is not one of row, group", request.scope));
    };
    let model = match request.model.as_deref().map(|m| (m, Model::parse(m))) {
        None => None,
        Some((_, Some(model))) => Some(model),
        Some((text, None)) => return bad(format!("model {text:?} is not one of photon-flash-1, photon-1")),
    };
    let (trial, pairs) = match trial_pairs(&review).await {
        Ok(Some(found)) => found,
        Ok(None) => return not_a_trial(&review),
        Err(e) => return internal(e),
    };
    let known = pairs.iter().any(|p| match scope {
        ChoiceScope::Row => p.row_id == request.key,
        ChoiceScope::Group => p.group.as_deref() == Some(request.key.as_str()),
    });
    if !known {
        return bad(format!("the trial has no {scope} {:?}", request.key));
    }
    let saved = review
        .ledger
        .set_routing_choice(&trial.of_job, scope, &request.key, model)
        .await;
    if let Err(e) = saved {
        return internal(e);
    }
    pairs_after_write(&review).await
}

async fn pairs_after_write(review: &ReviewState) -> Response {
    match trial_pairs(review).await {
        Ok(Some((trial, pairs))) => {
            Json(json!({"job": review.config.job, "of_job": trial.of_job, "pairs": pairs})).into_response()
        }
        Ok(None) => not_a_trial(review),
        Err(e) => internal(e),
    }
}

fn not_a_trial(review: &ReviewState) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("{} is not a trial; make one with darkroom trial FILE", review.config.job)})),
    )
        .into_response()
}

/// The trial record and its pairs, in file order; `None` when the job is not a trial.
async fn trial_pairs(review: &ReviewState) -> darkroom_ledger::Result<Option<(TrialRecord, Vec<Pair>)>> {
    let ledger = &review.ledger;
    let job_id = review.config.job_id;
    let Some(trial) = ledger.trial(job_id).await? else {
        return Ok(None);
    };
    let choices = ledger.routing_choices(&trial.of_job).await?;
    let flash = ledger.tiles(job_id, Pass::Preview).await?;
    let mut photon: BTreeMap<String, TileRecord> = ledger
        .tiles(job_id, Pass::Final)
        .await?
        .into_iter()
        .map(|t| (t.row_id.clone(), t))
        .collect();
    let mut pairs: Vec<Pair> = flash
        .into_iter()
        .map(|f| {
            let p = photon.remove(&f.row_id);
            pair(&choices, Some(f), p)
        })
        .collect();
    pairs.extend(photon.into_values().map(|p| pair(&choices, None, Some(p))));
    Ok(Some((trial, pairs)))
}

fn pair(choices: &RoutingChoices, flash: Option<TileRecord>, photon: Option<TileRecord>) -> Pair {
    let any = flash.as_ref().or(photon.as_ref());
    let (row_id, prompt, meta) = any.map_or_else(Default::default, |t| {
        (t.row_id.clone(), t.prompt.clone(), metadata(&t.metadata_json))
    });
    let choice = choices
        .chosen(Pass::Final, &row_id, &meta)
        .map(|(model, scope)| Choice { model, scope });
    let side = |t: TileRecord| Side {
        done: t.state == darkroom_ledger::TaskState::Done,
        state: t.state.as_str().to_string(),
        key: t.task_key,
    };
    Pair {
        row_id,
        prompt,
        group: meta.get(GROUP_COLUMN).cloned(),
        flash: flash.map(side),
        photon: photon.map(side),
        choice,
    }
}
