//! fal.ai's queue API for Luma Photon, as `providers-api.md` §2 describes it, under `/fal`:
//! the queue host at `/fal/queue` (submit, status, result), the platform API at `/fal/api/v1`
//! (the by-endpoint request list, the account's billing), images at `/fal/media`, and
//! `/sim/fal/billing` for tests to reconcile against; webhook deliveries are signed with a key
//! published at `/fal/rest/.well-known/jwks.json` (`fal/webhook.rs`).
//!
//! fal is its own account here (its own credit, billing record, counts and random draws), made
//! of the same generations as the Luma side: the same latencies and fault profile, charged at
//! submit per megapixel of output and refunded on failure (fal never bills a 5xx failure). As on
//! fal, a submit over the concurrency limit queues rather than being refused, and there is no
//! per-minute limit; a rate-limit storm still answers 429. The list shows requests still in the
//! queue too (whether fal's does is unconfirmed).

// Handlers return early with a ready `Response` as their error; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::error;
use crate::state::{Generation, Outcome};
use crate::Sim;

mod list;
mod submit;
mod webhook;

/// The owner/app of every Photon request path.
const APP: &str = "fal-ai/luma-photon";
/// The text-to-image endpoints and their rate, micro-dollars per megapixel (fal's published
/// $0.019 and $0.005).
const ENDPOINTS: [(&str, &str, i64); 2] = [
    ("fal-ai/luma-photon", "photon-1", 19_000),
    ("fal-ai/luma-photon/flash", "photon-flash-1", 5_000),
];
const ASPECT_RATIOS: [&str; 7] = ["1:1", "3:4", "4:3", "9:16", "16:9", "9:21", "21:9"];

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route(&format!("/fal/queue/{APP}"), post(submit::submit_photon))
        .route(&format!("/fal/queue/{APP}/flash"), post(submit::submit_flash))
        .route(&format!("/fal/queue/{APP}/requests/{{id}}/status"), get(status))
        .route(&format!("/fal/queue/{APP}/requests/{{id}}"), get(result))
        .route("/fal/api/v1/models/requests/by-endpoint", get(list::list))
        .route("/fal/api/v1/account/billing", get(list::billing))
        .route("/fal/media/{file}", get(media))
        .route("/fal/rest/.well-known/jwks.json", get(webhook::jwks))
        .route("/sim/fal/billing", get(sim_billing))
        .route("/sim/fal/stats", get(sim_stats))
}

/// The price of one image at `aspect_ratio` for an endpoint's rate: its pixels in megapixels
/// times the rate, rounded up to the micro-dollar. Also the billed units' text.
pub(crate) fn price(aspect_ratio: &str, rate_micros: i64) -> (i64, String) {
    let (width, height) = crate::picture::size_for(aspect_ratio);
    let pixels = i64::from(width) * i64::from(height);
    let micros = (pixels * rate_micros + 999_999) / 1_000_000;
    (
        micros,
        format!("{}.{:06}", pixels / 1_000_000, pixels % 1_000_000),
    )
}

fn authorize(sim: &Sim, headers: &HeaderMap) -> Result<(), Response> {
    super::authorize_scheme(sim, headers, "Key ", "Invalid Key")
}

/// Counts the request in the fal account's stats.
fn counted(sim: &Sim, endpoint: &str, response: Response) -> Response {
    super::counted_in(sim, Sim::fal, endpoint, response)
}

/// The `get_slow` and `get_5xx` faults of a read, drawn from the fal account.
async fn read_fault(sim: &Sim) -> Option<Response> {
    let (slow, fail) = {
        let mut account = sim.fal();
        let fail = account.chance(sim.config.faults.get_5xx);
        let slow = !fail && account.chance(sim.config.faults.get_slow);
        if fail {
            account.fault("get_5xx");
        }
        if slow {
            account.fault("get_slow");
        }
        (slow, fail)
    };
    if slow {
        tokio::time::sleep(sim.config.slow_delay).await;
    }
    fail.then(|| error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error"))
}

/// `http://127.0.0.1:PORT`, the origin this simulator's URLs name.
fn origin(sim: &Sim) -> String {
    sim.asset_base().trim_end_matches("/sim/assets").to_string()
}

fn urls(sim: &Sim, id: &str) -> Value {
    let base = format!("{}/fal/queue/{APP}/requests/{id}", origin(sim));
    json!({
        "request_id": id,
        "gateway_request_id": id,
        "response_url": base,
        "status_url": format!("{base}/status"),
        "cancel_url": format!("{base}/cancel"),
    })
}

/// fal's status word for a generation at `now`.
fn status_word(generation: &Generation, now: Instant) -> &'static str {
    match generation.state(now) {
        "rendering" => "RENDERING",
        "queued" => "IN_QUEUE",
        "dreaming" => "IN_PROGRESS",
        _ => "COMPLETED",
    }
}

/// The `error` and `error_type` of a failed generation.
fn failure(generation: &Generation) -> Option<(Value, &'static str)> {
    match generation.outcome {
        Outcome::Failed(reason) if crate::MODERATION_REASONS.contains(&reason) => {
            Some((json!(reason), "content_policy_violation"))
        }
        Outcome::Failed(reason) => Some((json!(reason), "runner_disconnected")),
        Outcome::FailedWithoutReason => Some((Value::Null, "internal_error")),
        _ => None,
    }
}

/// Reads a generation of the fal account (settling it first), or the 404 fal answers.
fn find(sim: &Sim, id: &str, now: Instant) -> Result<Generation, Response> {
    let mut account = sim.fal();
    account.settle(now);
    account
        .generations
        .get(id)
        .filter(|g| !g.deleted)
        .cloned()
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "Request not found"))
}

async fn status(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let response = async {
        authorize(&sim, &headers)?;
        if let Some(failure) = read_fault(&sim).await {
            return Err(failure);
        }
        let now = Instant::now();
        let generation = find(&sim, &id, now)?;
        let word = status_word(&generation, now);
        let mut body = urls(&sim, &id);
        body["status"] = json!(word);
        body["logs"] = Value::Null;
        if word == "IN_QUEUE" {
            body["queue_position"] = json!(0);
        }
        if word != "COMPLETED" {
            return Ok((StatusCode::ACCEPTED, Json(body)).into_response());
        }
        body["metrics"] =
            json!({"inference_time": (generation.done_at - generation.dreaming_at).as_secs_f64()});
        if let Some((reason, kind)) = failure(&generation) {
            body["error"] = reason;
            body["error_type"] = json!(kind);
        }
        Ok(Json(body).into_response())
    }
    .await
    .unwrap_or_else(|e| e);
    counted(&sim, &format!("GET /{APP}/requests/{{id}}/status"), response)
}

/// A completed generation's output (`{"images": [...]}`); no image for one completed without.
fn output(sim: &Sim, generation: &Generation) -> Value {
    let images: Vec<Value> = if matches!(generation.outcome, Outcome::CompletedWithoutImage) {
        Vec::new()
    } else {
        vec![json!({
            "url": format!("{}/fal/media/{}.jpg", origin(sim), generation.id),
            "content_type": "image/jpeg",
            "file_name": format!("{}.jpg", generation.id),
            "file_size": null,
        })]
    };
    json!({ "images": images })
}

/// The error body a failed generation's result answers with, and its status.
fn failed_result(generation: &Generation) -> Option<(StatusCode, Value)> {
    let (reason, kind) = failure(generation)?;
    let text = reason.as_str().unwrap_or("Internal error").to_string();
    Some(if kind == "content_policy_violation" {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"detail": [{"loc": ["body", "prompt"], "msg": text, "type": kind}]}),
        )
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"detail": text, "error_type": kind}),
        )
    })
}

async fn result(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let response = async {
        authorize(&sim, &headers)?;
        if let Some(failure) = read_fault(&sim).await {
            return Err(failure);
        }
        let now = Instant::now();
        let generation = find(&sim, &id, now)?;
        if status_word(&generation, now) != "COMPLETED" {
            return Err(error(StatusCode::BAD_REQUEST, "Request is still in progress"));
        }
        if let Some((status, body)) = failed_result(&generation) {
            return Ok((status, Json(body)).into_response());
        }
        let rate = ENDPOINTS
            .iter()
            .find(|e| e.0 == generation.model)
            .map_or(0, |e| e.2);
        let (_, units) = price(&generation.aspect_ratio, rate);
        let mut response = Json(output(&sim, &generation)).into_response();
        if let Ok(value) = header::HeaderValue::from_str(&units) {
            response.headers_mut().insert("x-fal-billable-units", value);
        }
        Ok(response)
    }
    .await
    .unwrap_or_else(|e| e);
    counted(&sim, &format!("GET /{APP}/requests/{{id}}"), response)
}

async fn media(State(sim): State<Arc<Sim>>, Path(file): Path<String>) -> Response {
    let id = file.split('.').next().unwrap_or_default();
    let response = super::assets::serve(&sim, id, Sim::fal, crate::state::FAL).await;
    counted(&sim, "GET /fal/media", response)
}

async fn sim_billing(State(sim): State<Arc<Sim>>) -> Response {
    Json(sim.fal_billing()).into_response()
}

async fn sim_stats(State(sim): State<Arc<Sim>>) -> Response {
    Json(sim.fal().stats.clone()).into_response()
}
