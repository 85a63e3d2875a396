//! fal's platform API: the by-endpoint request list (with payloads, for settling a submit whose
//! answer was lost) and the account's billing (its credit in USD).

// Handlers return early with a ready `Response` as their error; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::time::Instant;

use super::{authorize, counted, error, failed_result, output, read_fault, status_word};
use crate::state::{format_time, Generation};
use crate::Sim;

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    endpoint_id: Option<String>,
    start: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// One listed request, with its payloads.
fn item(sim: &Sim, generation: &Generation, now: Instant) -> Value {
    let word = status_word(generation, now);
    let ended = word == "COMPLETED";
    let (status_code, json_output) = match failed_result(generation) {
        Some((status, body)) if ended => (json!(status.as_u16()), body),
        _ if ended => (json!(200), output(sim, generation)),
        _ => (Value::Null, Value::Null),
    };
    let run = generation
        .done_at
        .saturating_duration_since(generation.dreaming_at);
    json!({
        "request_id": generation.id,
        "endpoint_id": generation.model,
        "sent_at": format_time(generation.created_at),
        "started_at": (word != "IN_QUEUE").then(|| format_time(generation.created_at)),
        "ended_at": ended.then(|| format_time(generation.created_at + run)),
        "status_code": status_code,
        "duration": ended.then_some(run.as_secs_f64()),
        "json_input": generation.echo,
        "json_output": json_output,
    })
}

pub(super) async fn list(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    let response = async {
        authorize(&sim, &headers)?;
        if let Some(failure) = read_fault(&sim).await {
            return Err(failure);
        }
        let Some(endpoint) = query.endpoint_id.filter(|e| !e.is_empty()) else {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!([{"loc": ["query", "endpoint_id"], "msg": "Field required", "type": "missing"}]),
            ));
        };
        let start = match query.start.as_deref() {
            None => OffsetDateTime::now_utc() - time::Duration::days(1),
            Some(text) => OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|_| {
                    error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("start {text:?} is not an ISO 8601 time"),
                    )
                })?,
        };
        let offset: usize = query.cursor.as_deref().and_then(|c| c.parse().ok()).unwrap_or(0);
        let limit = query.limit.unwrap_or(100).clamp(1, 100);
        let now = Instant::now();
        let mut account = sim.fal();
        account.settle(now);
        let mut matching = account
            .order
            .iter()
            .rev()
            .filter_map(|id| account.generations.get(id))
            .filter(|g| !g.deleted && g.model == endpoint && g.created_at >= start);
        let items: Vec<Value> = matching
            .by_ref()
            .skip(offset)
            .take(limit)
            .map(|g| item(&sim, g, now))
            .collect();
        let has_more = matching.next().is_some();
        Ok(Json(json!({
            "items": items,
            "has_more": has_more,
            "next_cursor": has_more.then(|| (offset + limit).to_string()),
        }))
        .into_response())
    }
    .await
    .unwrap_or_else(|e| e);
    counted(&sim, "GET /models/requests/by-endpoint", response)
}

pub(super) async fn billing(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    let response = match authorize(&sim, &headers) {
        Err(response) => response,
        Ok(()) => {
            let mut account = sim.fal();
            account.settle(Instant::now());
            // USD, as a number.
            #[allow(clippy::cast_precision_loss)]
            let dollars = account.balance as f64 / 1_000_000.0;
            Json(json!({"username": "darkroom-sim", "credits": {"current_balance": dollars, "currency": "USD"}}))
                .into_response()
        }
    };
    counted(&sim, "GET /account/billing", response)
}
