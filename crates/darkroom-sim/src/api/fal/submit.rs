//! A submit to fal's queue (`POST /fal/queue/fal-ai/luma-photon[/flash]`): checked as fal's
//! schema checks it, admitted against a storm and the credit, charged per megapixel, and answered,
//! dropped or committed late as the faults say.

// Handlers return early with a ready `Response` as their error; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rand::Rng;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::time::Instant;

use super::{authorize, counted, error, price, urls, APP, ASPECT_RATIOS, ENDPOINTS};
use crate::state::{Account, Generation, Refusal};
use crate::{Kill, Sim};

pub(super) async fn submit_photon(
    State(sim): State<Arc<Sim>>,
    Extension(kill): Extension<Kill>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let response = submit(&sim, &kill, 0, &headers, query.as_deref(), &body).await;
    counted(&sim, &format!("POST /{APP}"), response)
}

pub(super) async fn submit_flash(
    State(sim): State<Arc<Sim>>,
    Extension(kill): Extension<Kill>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let response = submit(&sim, &kill, 1, &headers, query.as_deref(), &body).await;
    counted(&sim, &format!("POST /{APP}/flash"), response)
}

/// A submit's input checked as fal's schema checks it: `prompt` a non-empty string, and
/// `aspect_ratio`, when given, one of the seven. Other fields are ignored, as fal ignores them.
fn checked_input(body: &Bytes) -> Result<(String, String), Response> {
    let invalid = |loc: &str, msg: &str, kind: &str| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!([{"loc": ["body", loc], "msg": msg, "type": kind}]),
        )
    };
    let Ok(Value::Object(input)) = serde_json::from_slice::<Value>(body) else {
        return Err(invalid("", "Input should be a valid dictionary", "dict_type"));
    };
    let prompt = match input.get("prompt") {
        Some(Value::String(p)) if !p.trim().is_empty() => p.clone(),
        Some(_) => {
            return Err(invalid(
                "prompt",
                "Input should be a non-empty string",
                "string_type",
            ))
        }
        None => return Err(invalid("prompt", "Field required", "missing")),
    };
    let aspect_ratio = match input.get("aspect_ratio") {
        None | Some(Value::Null) => "1:1".to_string(),
        Some(Value::String(r)) if ASPECT_RATIOS.contains(&r.as_str()) => r.clone(),
        Some(_) => {
            let msg = format!(
                "Input should be {}",
                ASPECT_RATIOS.map(|r| format!("'{r}'")).join(", ")
            );
            return Err(invalid("aspect_ratio", &msg, "literal_error"));
        }
    };
    Ok((prompt, aspect_ratio))
}

async fn submit(
    sim: &Arc<Sim>,
    kill: &Kill,
    endpoint: usize,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &Bytes,
) -> Response {
    if let Err(response) = authorize(sim, headers) {
        return response;
    }
    let (prompt, aspect_ratio) = match checked_input(body) {
        Ok(input) => input,
        Err(response) => return response,
    };
    let webhook = query.and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("fal_webhook="))
            .and_then(percent_decode)
    });
    let now = Instant::now();
    let generation = match admit(sim, endpoint, &prompt, &aspect_ratio, now) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let generation = match generation {
        Admitted::Now(generation) => generation,
        Admitted::Dropped => {
            kill.0.notify_one();
            return std::future::pending::<Response>().await;
        }
        Admitted::Late(generation) => match commit_late(sim, generation).await {
            Some(generation) => generation,
            None => return error(StatusCode::SERVICE_UNAVAILABLE, "Server shutting down"),
        },
    };
    if let Some(url) = webhook {
        super::webhook::schedule(sim.clone(), generation.id.clone(), url);
    }
    let mut answer = urls(sim, &generation.id);
    answer["queue_position"] = json!(0);
    (StatusCode::OK, Json(answer)).into_response()
}

/// `%XX` sequences and `+` of a query value decoded; `None` when not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

enum Admitted {
    Now(Generation),
    Dropped,
    Late(Generation),
}

/// Checks a submit against a storm, the credit and the submit faults, then draws and accepts it.
fn admit(
    sim: &Sim,
    endpoint: usize,
    prompt: &str,
    aspect_ratio: &str,
    now: Instant,
) -> Result<Admitted, Response> {
    let config = &sim.config;
    let (endpoint_id, model, rate) = ENDPOINTS[endpoint];
    let (price, _) = price(aspect_ratio, rate);
    let mut account = sim.fal();
    account.settle(now);
    if account.chance(config.faults.rate_limit_storm) {
        account.fault("rate_limit_storm");
        account.start_storm(now, config.storm_length.mul_f64(config.time_scale.max(0.001)));
    }
    // fal queues what is over the concurrency limit and has no per-minute limit.
    let mut limits = config.clone();
    limits.max_concurrent = None;
    limits.creates_per_minute = None;
    match account.admit(&limits, now, price) {
        Ok(()) => {}
        Err(Refusal::RateLimited { retry_after, detail }) => {
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, detail);
            let seconds = retry_after.as_secs_f64().ceil().max(1.0);
            account.announce_pause(now + Duration::from_secs_f64(seconds));
            if let Ok(value) = header::HeaderValue::from_str(&format!("{seconds:.0}")) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return Err(response);
        }
        Err(Refusal::NoCredit) => {
            return Err(error(
                StatusCode::FORBIDDEN,
                "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing.",
            ));
        }
    }
    if account.chance(config.faults.create_5xx) {
        account.fault("create_5xx");
        return Err(error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error"));
    }
    let generation = draw(
        sim,
        &mut account,
        endpoint_id,
        model,
        prompt,
        aspect_ratio,
        now,
        price,
    );
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

/// The generation a submit makes: its latency, outcome and picture, as the Luma side draws them.
#[allow(clippy::too_many_arguments)]
fn draw(
    sim: &Sim,
    account: &mut Account,
    endpoint_id: &str,
    model: &str,
    prompt: &str,
    aspect_ratio: &str,
    now: Instant,
    price: i64,
) -> Generation {
    let config = &sim.config;
    let (low, high) = if model == "photon-1" {
        config.latency_photon_1
    } else {
        config.latency_photon_flash_1
    };
    let latency = if high > low {
        account.rng.gen_range(low..high)
    } else {
        low
    } * config.time_scale.max(0.0);
    let outcome = crate::api::create::draw_outcome(account, &config.faults);
    let unknown_state = account.chance(config.faults.unknown_state);
    if unknown_state {
        account.fault("unknown_state");
    }
    let echo = json!({"prompt": prompt, "aspect_ratio": aspect_ratio});
    let id = account.new_id();
    // As on the Luma side: each generation draws its own picture (the variants of a row differ)
    // unless the prompt asks for the request's own (`[sim:duplicate]`) or pictures are not distinct.
    let mut seed = blake3::Hasher::new();
    seed.update(format!("{endpoint_id}\n{echo}").as_bytes());
    if config.distinct_pictures && !crate::picture::Look::asked_duplicate(&echo) {
        seed.update(id.as_bytes());
    }
    Generation {
        id,
        created_at: OffsetDateTime::now_utc(),
        image_seed: *seed.finalize().as_bytes(),
        echo,
        model: endpoint_id.to_string(),
        provider: crate::state::FAL.to_string(),
        source_aspect: None,
        aspect_ratio: aspect_ratio.to_string(),
        format: "jpg".into(),
        price,
        dreaming_at: now + Duration::from_secs_f64(latency * 0.1),
        done_at: now + Duration::from_secs_f64(latency),
        outcome,
        settled: false,
        deleted: false,
        unknown_state,
    }
}

/// Commits a late submit after `late_commit_delay`, whether or not its client still waits.
async fn commit_late(sim: &Arc<Sim>, mut generation: Generation) -> Option<Generation> {
    let delay = sim.config.late_commit_delay;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let committer = sim.clone();
    sim.tracker.spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = committer.stop.cancelled() => return,
        }
        generation.created_at = OffsetDateTime::now_utc();
        generation.dreaming_at += delay;
        generation.done_at += delay;
        committer.fal().accept(generation.clone());
        let _ = tx.send(generation);
    });
    rx.await.ok()
}
