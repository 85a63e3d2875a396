//! The HTTP surface: Luma's paths under `/dream-machine/v1`, Replicate's under `/replicate/v1`
//! (`replicate.rs`), the image assets, and `/sim/billing` and `/sim/stats` for tests to reconcile
//! against. This file holds the router and the reads;
//! creating a generation is `create.rs`, checking a request `validate.rs`, serving images `assets.rs`.

// Handlers return early with a ready `Response` as their error; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::state::LUMA;
use crate::Sim;

mod assets;
mod create;
mod fal;
mod reframe;
mod replicate;
mod tamper;
mod validate;

const API: &str = "/dream-machine/v1";

pub(crate) fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route(&format!("{API}/generations/image"), post(create::create))
        .route(&format!("{API}/generations/image/reframe"), post(create::reframe))
        .route(&format!("{API}/generations"), get(list))
        .route(&format!("{API}/generations/{{id}}"), get(read).delete(delete))
        .route(&format!("{API}/credits"), get(credits))
        .route(&format!("{API}/ping"), get(ping))
        .route("/sim/assets/{file}", get(assets::asset))
        .route("/sim/billing", get(billing))
        .route("/sim/stats", get(stats))
        .merge(fal::routes())
        .merge(replicate::routes())
        .with_state(sim)
}

fn error(status: StatusCode, detail: impl Into<Value>) -> Response {
    (status, Json(json!({ "detail": detail.into() }))).into_response()
}

fn authorize(sim: &Sim, headers: &HeaderMap) -> Result<(), Response> {
    authorize_scheme(sim, headers, "Bearer ", "Invalid API key is provided")
}

/// Checks `Authorization: {scheme}KEY` against the configured key (any non-empty key when none is
/// configured); otherwise a 401 with `refusal`, the upstream's words.
fn authorize_scheme(sim: &Sim, headers: &HeaderMap, scheme: &str, refusal: &str) -> Result<(), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix(scheme))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    match (token, &sim.config.api_key) {
        (Some(given), Some(expected)) if given == expected => Ok(()),
        (Some(_), None) => Ok(()),
        _ => Err(error(StatusCode::UNAUTHORIZED, refusal.to_string())),
    }
}

/// Counts the request by endpoint and status, and returns the response.
fn counted(sim: &Sim, endpoint: &str, response: Response) -> Response {
    counted_in(sim, Sim::lock, endpoint, response)
}

/// Counts the request in the stats of the account `account` locks (Luma's or fal's).
fn counted_in(
    sim: &Sim,
    account: fn(&Sim) -> std::sync::MutexGuard<'_, crate::state::Account>,
    endpoint: &str,
    response: Response,
) -> Response {
    let key = format!("{endpoint} {}", response.status().as_u16());
    let mut account = account(sim);
    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        account.stats.rate_limited += 1;
    }
    account.count(key);
    drop(account);
    sim.changed.notify_one();
    response
}

pub(super) async fn maybe_slow_or_failing(sim: &Sim) -> Option<Response> {
    let (slow, fail) = {
        let mut account = sim.lock();
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

async fn read(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let response = async {
        authorize(&sim, &headers)?;
        if let Some(failure) = maybe_slow_or_failing(&sim).await {
            return Err(failure);
        }
        let now = Instant::now();
        let mut account = sim.lock();
        account.settle(now);
        match account
            .generations
            .get(&id)
            .filter(|g| !g.deleted && g.provider == LUMA)
        {
            Some(generation) => Ok(Json(generation.to_json(now, &sim.asset_base())).into_response()),
            None => Err(error(StatusCode::NOT_FOUND, "Generation not found")),
        }
    }
    .await
    .unwrap_or_else(|e| e);
    counted(&sim, "GET /generations/{id}", response)
}

#[derive(Debug, Deserialize)]
struct Page {
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn list(State(sim): State<Arc<Sim>>, headers: HeaderMap, Query(page): Query<Page>) -> Response {
    let response = async {
        authorize(&sim, &headers)?;
        if let Some(failure) = maybe_slow_or_failing(&sim).await {
            return Err(failure);
        }
        let (limit, offset) = (page.limit.unwrap_or(100).min(1000), page.offset.unwrap_or(0));
        let now = Instant::now();
        let mut account = sim.lock();
        account.settle(now);
        let base = sim.asset_base();
        let mut live = account.order.iter().rev().filter_map(|id| account.generations.get(id)).filter(|g| !g.deleted && g.provider == LUMA);
        let generations: Vec<Value> = live.by_ref().skip(offset).take(limit).map(|g| g.to_json(now, &base)).collect();
        let has_more = live.next().is_some();
        Ok(Json(json!({
            "generations": generations, "has_more": has_more, "count": generations.len(), "limit": limit, "offset": offset
        }))
        .into_response())
    }
    .await
    .unwrap_or_else(|e| e);
    counted(&sim, "GET /generations", response)
}

async fn delete(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let response = match authorize(&sim, &headers) {
        Err(response) => response,
        Ok(()) => {
            let mut account = sim.lock();
            match account
                .generations
                .get_mut(&id)
                .filter(|g| !g.deleted && g.provider == LUMA)
            {
                Some(generation) => {
                    generation.deleted = true;
                    account.revision += 1;
                    StatusCode::NO_CONTENT.into_response()
                }
                None => error(StatusCode::NOT_FOUND, "Generation not found"),
            }
        }
    };
    counted(&sim, "DELETE /generations/{id}", response)
}

async fn credits(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    let response = match authorize(&sim, &headers) {
        Err(response) => response,
        Ok(()) => {
            let mut account = sim.lock();
            account.settle(Instant::now());
            // USD cents, as a float.
            let cents = account.balance as f64 / 10_000.0;
            Json(json!({ "credit_balance": cents })).into_response()
        }
    };
    counted(&sim, "GET /credits", response)
}

async fn ping(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    let response = match authorize(&sim, &headers) {
        Err(response) => response,
        Ok(()) => Json(json!({"message": "pong"})).into_response(),
    };
    counted(&sim, "GET /ping", response)
}

async fn billing(State(sim): State<Arc<Sim>>) -> Response {
    Json(sim.billing()).into_response()
}

async fn stats(State(sim): State<Arc<Sim>>) -> Response {
    Json(sim.stats()).into_response()
}
