//! Replicate's predictions API for Photon under `/replicate/v1`, on the same account: creates of
//! `luma/photon` and `luma/photon-flash` (charged per output at Replicate's prices, 600 a minute),
//! reads, the `created_after` list with cursor pages, statuses `starting`, `processing`,
//! `succeeded`, `failed` and `aborted` (a `Cancel-After` deadline that passed before the start),
//! and outputs served under `/replicate/delivery/` that are deleted, with the input, an hour after
//! the prediction ends (`data_removed`). Faults are the account's. Like Replicate, unknown input
//! fields are ignored without a word. A create naming `webhook` gets signed deliveries
//! (`replicate/webhook.rs`).

// Handlers return early with a ready `Response` as their error; boxing it would only add noise.
#![allow(clippy::result_large_err)]

mod webhook;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::time::Instant;

use super::create::{commit_late, draw_generation, Admitted};
use super::validate::Checked;
use super::{authorize, counted};
use crate::state::{format_time, Account, Generation, Outcome, Refusal, REPLICATE};
use crate::{Kill, Sim};

/// Where Replicate's API is served.
pub(crate) const API: &str = "/replicate/v1";
/// Predictions per list page, as Replicate's.
const PAGE: usize = 100;
/// What a prediction blocked by the safety checker fails with (Replicate's E005).
const FLAGGED: &str =
    "The input or output was flagged as sensitive. Please try again with different inputs. (E005)";

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route(
            &format!("{API}/models/{{owner}}/{{name}}/predictions"),
            post(create),
        )
        .route(&format!("{API}/predictions"), get(list))
        .route(&format!("{API}/webhooks/default/secret"), get(webhook::secret))
        .route(&format!("{API}/predictions/{{id}}"), get(read))
        .route(&format!("{API}/predictions/{{id}}/cancel"), post(cancel))
        .route("/replicate/delivery/{file}", get(delivery))
}

/// Replicate's error body: `{title, detail, status}`.
fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = json!({"title": title, "detail": detail, "status": status.as_u16()});
    (status, Json(body)).into_response()
}

fn origin(sim: &Sim) -> String {
    sim.asset_base().trim_end_matches("/sim/assets").to_string()
}

/// The prediction as Replicate's API shows it at `now`.
fn prediction(generation: &Generation, now: Instant, sim: &Sim) -> Value {
    let state = generation.state(now);
    let ended = matches!(state, "completed" | "failed");
    let removed = ended && now >= generation.done_at + sim.config.replicate.retention;
    let status = match (state, &generation.outcome) {
        ("queued", _) => "starting",
        ("dreaming", _) => "processing",
        ("completed", Outcome::Canceled) => "canceled",
        ("completed", _) => "succeeded",
        ("failed", Outcome::Aborted) => "aborted",
        ("failed", _) => "failed",
        (other, _) => other,
    };
    let error = match (&generation.outcome, state) {
        (Outcome::Failed(reason), "failed") if crate::MODERATION_REASONS.contains(reason) => json!(FLAGGED),
        (Outcome::Failed(reason), "failed") => json!(reason),
        _ => Value::Null,
    };
    let has_output = state == "completed"
        && !matches!(
            generation.outcome,
            Outcome::CompletedWithoutImage | Outcome::Canceled
        );
    let output =
        (has_output && !removed).then(|| format!("{}/replicate/delivery/{}.jpg", origin(sim), generation.id));
    let base = origin(sim);
    json!({
        "id": generation.id,
        "model": model_path(&generation.model),
        "version": "official",
        "input": if removed { Value::Null } else { generation.echo.clone() },
        "output": output,
        "status": status,
        "error": error,
        "logs": if removed { Value::Null } else { json!("") },
        "created_at": format_time(generation.created_at),
        "data_removed": removed,
        "source": "api",
        "urls": {
            "get": format!("{base}{API}/predictions/{}", generation.id),
            "cancel": format!("{base}{API}/predictions/{}/cancel", generation.id),
        },
    })
}

fn model_path(model: &str) -> &'static str {
    if model == "photon-1" {
        "luma/photon"
    } else {
        "luma/photon-flash"
    }
}

async fn read(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let response = async {
        authorize(&sim, &headers)?;
        if let Some(failure) = super::maybe_slow_or_failing(&sim).await {
            return Err(failure);
        }
        let now = Instant::now();
        let mut account = sim.lock();
        account.settle(now);
        match account.generations.get(&id).filter(|g| g.provider == REPLICATE) {
            Some(generation) => Ok(Json(prediction(generation, now, &sim)).into_response()),
            None => Err(problem(
                StatusCode::NOT_FOUND,
                "Not found",
                "The requested resource could not be found.",
            )),
        }
    }
    .await
    .unwrap_or_else(|e| e);
    counted(&sim, "GET /replicate/predictions/{id}", response)
}

/// `POST /predictions/{id}/cancel`: a prediction not ended yet ends now as `canceled` (charged,
/// no output); an ended one is answered as it is.
async fn cancel(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let response = (|| {
        authorize(&sim, &headers)?;
        let now = Instant::now();
        let mut account = sim.lock();
        account.settle(now);
        let Some(generation) = account
            .generations
            .get_mut(&id)
            .filter(|g| g.provider == REPLICATE)
        else {
            return Err(problem(
                StatusCode::NOT_FOUND,
                "Not found",
                "The requested resource could not be found.",
            ));
        };
        if matches!(generation.state(now), "queued" | "dreaming" | "rendering") {
            generation.outcome = Outcome::Canceled;
            generation.unknown_state = false;
            generation.dreaming_at = generation.dreaming_at.min(now);
            generation.done_at = now;
        }
        Ok(Json(prediction(generation, now, &sim)).into_response())
    })()
    .unwrap_or_else(|e| e);
    counted(&sim, "POST /replicate/predictions/{id}/cancel", response)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    created_after: Option<String>,
    cursor: Option<usize>,
}

async fn list(State(sim): State<Arc<Sim>>, headers: HeaderMap, Query(query): Query<ListQuery>) -> Response {
    let response = async {
        authorize(&sim, &headers)?;
        if let Some(failure) = super::maybe_slow_or_failing(&sim).await {
            return Err(failure);
        }
        let after = match query.created_after.as_deref() {
            None => None,
            Some(text) => Some(
                OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(
                    |_| {
                        problem(
                            StatusCode::BAD_REQUEST,
                            "Invalid created_after",
                            "created_after must be an ISO 8601 time",
                        )
                    },
                )?,
            ),
        };
        let offset = query.cursor.unwrap_or(0);
        let now = Instant::now();
        let mut account = sim.lock();
        account.settle(now);
        let mut newest_first = account
            .order
            .iter()
            .rev()
            .filter_map(|id| account.generations.get(id))
            .filter(|g| g.provider == REPLICATE && after.is_none_or(|after| g.created_at > after));
        let results: Vec<Value> = newest_first
            .by_ref()
            .skip(offset)
            .take(PAGE)
            .map(|g| prediction(g, now, &sim))
            .collect();
        let next = newest_first.next().map(|_| {
            let after = query
                .created_after
                .as_deref()
                .map(|a| format!("&created_after={a}"))
                .unwrap_or_default();
            format!(
                "{}{API}/predictions?cursor={}{after}",
                origin(&sim),
                offset + PAGE
            )
        });
        Ok(Json(json!({"previous": null, "next": next, "results": results})).into_response())
    }
    .await
    .unwrap_or_else(|e| e);
    counted(&sim, "GET /replicate/predictions", response)
}

async fn create(
    State(sim): State<Arc<Sim>>,
    Extension(kill): Extension<Kill>,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let response = create_inner(&sim, &kill, &headers, &format!("{owner}/{name}"), &body).await;
    counted(&sim, "POST /replicate/predictions", response)
}

async fn create_inner(
    sim: &Arc<Sim>,
    kill: &Kill,
    headers: &HeaderMap,
    model: &str,
    body: &Bytes,
) -> Response {
    if let Err(response) = authorize(sim, headers) {
        return response;
    }
    let model = match model {
        "luma/photon" => "photon-1",
        "luma/photon-flash" => "photon-flash-1",
        _ => {
            return problem(
                StatusCode::NOT_FOUND,
                "Not found",
                "The requested resource could not be found.",
            )
        }
    };
    let input = match checked_input(body) {
        Ok(input) => input,
        Err(response) => return response,
    };
    let deadline = headers
        .get("cancel-after")
        .and_then(|v| v.to_str().ok())
        .and_then(cancel_after);
    let now = Instant::now();
    let (generation, at) = match admit(sim, &input, model, deadline, now) {
        Ok(Admitted::Dropped) => {
            kill.0.notify_one();
            std::future::pending::<(Generation, Instant)>().await
        }
        Ok(Admitted::Late(generation)) => match commit_late(sim, generation).await {
            Some(generation) => (generation, Instant::now()),
            None => {
                return problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Unavailable",
                    "Server shutting down",
                )
            }
        },
        Ok(Admitted::Now(generation)) => (generation, now),
        Err(response) => return response,
    };
    let asked = serde_json::from_slice::<Value>(body)
        .ok()
        .as_ref()
        .and_then(webhook::requested);
    if let Some((url, start)) = asked {
        webhook::schedule(sim.clone(), generation.id.clone(), url, start);
    }
    (StatusCode::CREATED, Json(prediction(&generation, at, sim))).into_response()
}

/// The body's `input`, checked as Replicate checks Photon's schema (422 naming each field); fields
/// the schema doesn't know are kept out of the echo, as Replicate drops them.
fn checked_input(body: &Bytes) -> Result<Value, Response> {
    let invalid = |detail: String| {
        problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Input validation failed",
            &detail,
        )
    };
    let parsed: Value = serde_json::from_slice(body).map_err(|e| invalid(format!("- body: {e}")))?;
    let Some(input) = parsed.get("input").and_then(Value::as_object) else {
        return Err(invalid("- input: input is required".into()));
    };
    let mut problems = Vec::new();
    match input.get("prompt").and_then(Value::as_str) {
        Some(prompt) if !prompt.trim().is_empty() => {}
        _ => problems.push("- input.prompt: prompt is required".to_string()),
    }
    if let Some(ratio) = input.get("aspect_ratio") {
        if !ratio
            .as_str()
            .is_some_and(|r| super::validate::ASPECT_RATIOS.contains(&r))
        {
            problems.push("- input.aspect_ratio: aspect_ratio must be one of the following: \"1:1\", \"3:4\", \"4:3\", \"9:16\", \"16:9\", \"9:21\", \"21:9\"".into());
        }
    }
    for name in ["image_reference", "style_reference", "character_reference"] {
        if input.get(name).is_some_and(|v| !v.is_string()) {
            problems.push(format!("- input.{name}: Invalid type. Expected: string (a URI)"));
        }
    }
    for name in ["image_reference_weight", "style_reference_weight"] {
        if input
            .get(name)
            .is_some_and(|v| !v.as_f64().is_some_and(|w| (0.0..=1.0).contains(&w)))
        {
            problems.push(format!("- input.{name}: Must be a number from 0 to 1"));
        }
    }
    if !problems.is_empty() {
        return Err(invalid(problems.join("\n")));
    }
    let known = [
        "prompt",
        "aspect_ratio",
        "image_reference",
        "image_reference_weight",
        "style_reference",
        "style_reference_weight",
        "character_reference",
        "seed",
    ];
    let kept = input.iter().filter(|(k, _)| known.contains(&k.as_str()));
    Ok(Value::Object(kept.map(|(k, v)| (k.clone(), v.clone())).collect()))
}

/// `Cancel-After`: `30s`, `1m`, `2h`, or plain seconds.
fn cancel_after(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let number: u64 = number.parse().ok()?;
    let seconds = match unit {
        "" | "s" => number,
        "m" => number.checked_mul(60)?,
        "h" => number.checked_mul(3600)?,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

/// Checks a create against the account's refusals, Replicate's limit and the credit, then draws
/// its prediction (or holds it, or drops the connection, as the faults say).
fn admit(
    sim: &Sim,
    input: &Value,
    model: &str,
    deadline: Option<Duration>,
    now: Instant,
) -> Result<Admitted, Response> {
    let config = &sim.config;
    let price = if model == "photon-1" {
        config.replicate.price_photon_1_micros
    } else {
        config.replicate.price_photon_flash_1_micros
    };
    let mut account = sim.lock();
    account.settle(now);
    account.note_create_arrived(now);
    refuse(sim, &mut account, now, price)?;
    let checked = Checked {
        model: model.to_string(),
        aspect_ratio: input
            .get("aspect_ratio")
            .and_then(Value::as_str)
            .unwrap_or("16:9")
            .to_string(),
        format: "jpg".to_string(),
        media: None,
    };
    let mut generation = draw_generation(sim, &mut account, input, &checked, now, price);
    generation.echo = input.clone();
    generation.provider = REPLICATE.to_string();
    if let Some(deadline) = deadline.filter(|d| now + *d < generation.dreaming_at) {
        generation.outcome = Outcome::Aborted;
        generation.dreaming_at = now + deadline;
        generation.done_at = now + deadline;
    }
    let late_so_far = account.stats.faults.get("create_late").copied().unwrap_or(0);
    let late_allowed = config.late_commit_limit.is_none_or(|limit| late_so_far < limit);
    if late_allowed && account.chance(config.faults.create_late) {
        account.fault("create_late");
        return Ok(Admitted::Late(generation));
    }
    account.accept(generation.clone());
    if account.chance(config.faults.create_dropped) {
        account.fault("create_dropped");
        return Ok(Admitted::Dropped);
    }
    Ok(Admitted::Now(generation))
}

/// The answer to a create refused now (a standing refusal, a throttle, no credit, a 500), if it is.
fn refuse(sim: &Sim, account: &mut Account, now: Instant, price: i64) -> Result<(), Response> {
    let config = &sim.config;
    if let Some(refuse) = &config.refuse_creates {
        return Err(problem(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
            &refuse.detail,
        ));
    }
    if account.chance(config.faults.rate_limit_storm) {
        account.fault("rate_limit_storm");
        account.start_storm(now, config.storm_length.mul_f64(config.time_scale.max(0.001)));
    }
    match account.admit_replicate(config, now, price) {
        Ok(()) => {}
        Err(Refusal::RateLimited { retry_after, .. }) => {
            // Replicate says when the limit resets in the body (whether it sends `Retry-After`
            // is not documented): whole seconds, rounded up.
            let seconds = retry_after.as_secs_f64().ceil().max(1.0);
            account.announce_pause(now + Duration::from_secs_f64(seconds));
            let detail = format!("Request was throttled. Your rate limit resets in ~{seconds:.0}s.");
            return Err(problem(
                StatusCode::TOO_MANY_REQUESTS,
                "Request was throttled",
                &detail,
            ));
        }
        Err(Refusal::NoCredit) => {
            return Err(problem(
                StatusCode::PAYMENT_REQUIRED,
                "Insufficient credit",
                "You have insufficient credit to run this model. Go to https://replicate.com/account/billing#billing to purchase credit.",
            ));
        }
    }
    if account.chance(config.faults.create_5xx) {
        account.fault("create_5xx");
        return Err(problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal server error",
            "Internal server error",
        ));
    }
    Ok(())
}

/// An output on Replicate's file host: the picture until the retention ends, then 404.
async fn delivery(State(sim): State<Arc<Sim>>, Path(file): Path<String>) -> Response {
    let id = file.split('.').next().unwrap_or_default().to_string();
    let now = Instant::now();
    let live = {
        let mut account = sim.lock();
        account.settle(now);
        account
            .generations
            .get(&id)
            .is_some_and(|g| g.provider == REPLICATE && now < g.done_at + sim.config.replicate.retention)
    };
    if !live {
        let response = problem(
            StatusCode::NOT_FOUND,
            "Not found",
            "The file was removed or never existed.",
        );
        return counted(&sim, "GET /replicate/delivery", response);
    }
    let response = super::assets::serve(&sim, &id, Sim::lock, REPLICATE).await;
    counted(&sim, "GET /replicate/delivery", response)
}
