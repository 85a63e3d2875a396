//! `POST /generations/image`: a create checked against the account's limits and credit, charged,
//! and answered as Luma answers it, or refused, dropped or committed late as the faults say.

// Handlers return early with a ready `Response` as their error; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rand::Rng;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::time::Instant;

use super::validate::{echo, validate, Checked};
use super::{authorize, counted, error};
use crate::state::{Account, Generation, Outcome, Refusal, MODERATION_REASONS, RETRYABLE_REASONS};
use crate::{Kill, Sim};

pub(super) async fn create(
    State(sim): State<Arc<Sim>>,
    Extension(kill): Extension<Kill>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = create_inner(&sim, &kill, &headers, &body, false).await;
    counted(&sim, "POST /generations/image", response)
}

/// `POST /generations/image/reframe`: a create whose picture is its source's, extended.
pub(super) async fn reframe(
    State(sim): State<Arc<Sim>>,
    Extension(kill): Extension<Kill>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = create_inner(&sim, &kill, &headers, &body, true).await;
    counted(&sim, "POST /generations/image/reframe", response)
}

async fn create_inner(
    sim: &Arc<Sim>,
    kill: &Kill,
    headers: &HeaderMap,
    body: &Bytes,
    is_reframe: bool,
) -> Response {
    if let Err(response) = authorize(sim, headers) {
        return response;
    }
    let request = match parse(body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let checked = if is_reframe {
        super::reframe::validate(&request)
    } else {
        validate(&request)
    };
    let checked = match checked {
        Ok(checked) => checked,
        Err(response) => return response,
    };
    let now = Instant::now();
    let accepted = admit(sim, &request, &checked, now);
    // The answer shows the generation as it was when accepted (`queued`, as Luma's creates answer),
    // not as it is by the time a loaded machine gets round to writing the answer.
    let (generation, accepted_at) = match accepted {
        Ok(Admitted::Dropped) => {
            // Accepted and charged; the client never hears of it.
            kill.0.notify_one();
            std::future::pending::<(Generation, Instant)>().await
        }
        Ok(Admitted::Late(generation)) => match commit_late(sim, generation).await {
            Some(generation) => (generation, Instant::now()),
            None => return error(StatusCode::SERVICE_UNAVAILABLE, "Server shutting down"),
        },
        Ok(Admitted::Now(generation)) => (generation, now),
        Err(response) => return response,
    };
    if let Some(url) = request.get("callback_url").and_then(Value::as_str) {
        crate::callbacks::schedule(sim.clone(), generation.id.clone(), url.to_string());
    }
    let body = generation.to_json(accepted_at, &sim.asset_base());
    (StatusCode::CREATED, Json(body)).into_response()
}

/// The body as a JSON object, or the 422 Luma answers for anything else.
fn parse(body: &Bytes) -> Result<Value, Response> {
    match serde_json::from_slice(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(other) => Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!([{"type": "model_attributes_type", "loc": ["body"], "msg": "Input should be a valid dictionary or object to extract fields from", "input": other}]),
        )),
        Err(e) => Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!([{"type": "json_invalid", "loc": ["body", e.column()], "msg": "JSON decode error", "input": {}, "ctx": {"error": e.to_string()}}]),
        )),
    }
}

/// Checks a valid create against the refusals, limits and credit, then draws and accepts its
/// generation (or holds it, or drops the connection, as the faults say).
fn admit(sim: &Sim, request: &Value, checked: &Checked, now: Instant) -> Result<Admitted, Response> {
    let config = &sim.config;
    let price = if checked.model == "photon-1" {
        config.price_photon_1_micros
    } else {
        config.price_photon_flash_1_micros
    };
    let mut account = sim.lock();
    account.settle(now);
    // A reframe's source must be fetchable before anything is charged.
    let source = match &checked.media {
        Some(url) => Some(super::reframe::source(&account, url, &sim.asset_base(), now)?),
        None => None,
    };
    account.note_create_arrived(now);
    refuse(sim, &mut account, now, price)?;
    let mut generation = draw_generation(sim, &mut account, request, checked, now, price);
    if let Some((seed, aspect)) = source {
        generation.image_seed = seed;
        generation.source_aspect = Some(aspect);
    }
    let faults = config.faults;
    let late_so_far = account.stats.faults.get("create_late").copied().unwrap_or(0);
    let late_allowed = config.late_commit_limit.is_none_or(|limit| late_so_far < limit);
    if late_allowed && account.chance(faults.create_late) {
        account.fault("create_late");
        return Ok(Admitted::Late(generation));
    }
    account.accept(generation.clone());
    if account.chance(faults.create_dropped) {
        account.fault("create_dropped");
        return Ok(Admitted::Dropped);
    }
    Ok(Admitted::Now(generation))
}

/// The answer to a create the account refuses now (a standing refusal, a 429, no credit, a 500),
/// if it does.
fn refuse(sim: &Sim, account: &mut Account, now: Instant, price: i64) -> Result<(), Response> {
    let config = &sim.config;
    if let Some(refuse) = &config.refuse_creates {
        return Err(rate_limited(
            sim,
            account,
            now,
            refuse.retry_after,
            &refuse.detail,
            false,
        ));
    }
    if let Some(once) = config.rate_limit_once {
        if account.once_pause_until.is_none() && account.stats.creates_accepted >= once.after_creates {
            account.once_pause_until = Some(now + once.retry_after);
        }
        if let Some(until) = account.once_pause_until.filter(|until| now < *until) {
            return Err(rate_limited(
                sim,
                account,
                now,
                until - now,
                "Too many requests",
                once.as_http_date,
            ));
        }
    }
    if account.chance(config.faults.rate_limit_storm) {
        account.fault("rate_limit_storm");
        account.start_storm(now, config.storm_length.mul_f64(config.time_scale.max(0.001)));
    }
    match account.admit(config, now, price) {
        Ok(()) => {}
        Err(Refusal::RateLimited { retry_after, detail }) => {
            return Err(rate_limited(sim, account, now, retry_after, detail, false));
        }
        Err(Refusal::NoCredit) => {
            let status = StatusCode::from_u16(config.insufficient_credit_status)
                .unwrap_or(StatusCode::PAYMENT_REQUIRED);
            return Err(error(
                status,
                "Insufficient credits: add credits to your account to create generations",
            ));
        }
    }
    if account.chance(config.faults.create_5xx) {
        account.fault("create_5xx");
        return Err(error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error"));
    }
    Ok(())
}

/// The generation an accepted create makes: its latency, its outcome and its picture.
pub(super) fn draw_generation(
    sim: &Sim,
    account: &mut Account,
    request: &Value,
    checked: &Checked,
    now: Instant,
    price: i64,
) -> Generation {
    let config = &sim.config;
    let (low, high) = if checked.model == "photon-1" {
        config.latency_photon_1
    } else {
        config.latency_photon_flash_1
    };
    let latency = if high > low {
        account.rng.gen_range(low..high)
    } else {
        low
    } * config.time_scale.max(0.0);
    let queued = latency * 0.1;
    let outcome = draw_outcome(account, &config.faults);
    let unknown_state = account.chance(config.faults.unknown_state);
    if unknown_state {
        account.fault("unknown_state");
    }
    let id = account.new_id();
    // A generation that modifies one of ours redoes its picture (so a final keeps its
    // preview's composition); any other request gets a picture of its own.
    let echoed = match checked.media {
        Some(_) => super::reframe::echo(request, &checked.model),
        None => echo(request, &checked.model),
    };
    let image_seed = modified_generation(request, &sim.asset_base())
        .and_then(|source| account.generations.get(source).map(|g| g.image_seed))
        .unwrap_or_else(|| picture_seed(config, &echoed, &id));
    Generation {
        id,
        created_at: OffsetDateTime::now_utc(),
        echo: echoed,
        model: checked.model.clone(),
        aspect_ratio: checked.aspect_ratio.clone(),
        format: checked.format.clone(),
        price,
        dreaming_at: now + Duration::from_secs_f64(queued),
        done_at: now + Duration::from_secs_f64(latency),
        outcome,
        settled: false,
        deleted: false,
        unknown_state,
        image_seed,
        provider: crate::state::LUMA.to_string(),
        source_aspect: None,
    }
}

/// The seed of a new picture: the request's hash, mixed with the generation's id when every
/// generation draws its own (`SimConfig::distinct_pictures`) unless the prompt asks for the
/// request's own picture (`[sim:duplicate]`).
fn picture_seed(config: &crate::SimConfig, echo: &Value, id: &str) -> [u8; 32] {
    let request = echo.to_string();
    let duplicate = crate::picture::Look::asked_duplicate(echo);
    let mut hasher = blake3::Hasher::new();
    hasher.update(request.as_bytes());
    if config.distinct_pictures && !duplicate {
        hasher.update(id.as_bytes());
    }
    *hasher.finalize().as_bytes()
}

/// How a generation will end, drawn from the fault rates in a fixed order (so a seed replays it).
pub(super) fn draw_outcome(account: &mut Account, faults: &crate::Faults) -> Outcome {
    if account.chance(faults.moderation) {
        account.fault("moderation");
        Outcome::Failed(MODERATION_REASONS[account.rng.gen_range(0..MODERATION_REASONS.len())])
    } else if account.chance(faults.generation_failed) {
        account.fault("generation_failed");
        Outcome::Failed(RETRYABLE_REASONS[account.rng.gen_range(0..RETRYABLE_REASONS.len())])
    } else if account.chance(faults.stuck) {
        account.fault("stuck");
        Outcome::Stuck
    } else if account.chance(faults.completed_without_image) {
        account.fault("completed_without_image");
        Outcome::CompletedWithoutImage
    } else if account.chance(faults.image_missing) {
        account.fault("image_missing");
        Outcome::ImageMissing
    } else if account.chance(faults.not_an_image) {
        account.fault("not_an_image");
        Outcome::NotAnImage
    } else if account.chance(faults.failed_without_reason) {
        account.fault("failed_without_reason");
        Outcome::FailedWithoutReason
    } else {
        Outcome::Completed
    }
}

/// What a create that passed validation and the limits turned into.
pub(super) enum Admitted {
    /// Accepted and charged; answer now.
    Now(Generation),
    /// Accepted and charged; the connection is dropped without an answer.
    Dropped,
    /// Held: committed (listed, charged) only after `late_commit_delay`.
    Late(Generation),
}

/// Commits a late create after `late_commit_delay`, whether or not its client is still waiting
/// (the commit runs on the simulator's own tracker, so a client that gave up does not cancel it).
/// Returns the committed generation for the answer, or `None` if the simulator stopped first.
pub(super) async fn commit_late(sim: &Arc<Sim>, mut generation: Generation) -> Option<Generation> {
    let delay = sim.config.late_commit_delay;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let committer = sim.clone();
    sim.tracker.spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = committer.stop.cancelled() => return,
        }
        // Its life (queued, dreaming, done) starts at the commit.
        generation.created_at = OffsetDateTime::now_utc();
        generation.dreaming_at += delay;
        generation.done_at += delay;
        committer.lock().accept(generation.clone());
        committer.changed.notify_one();
        let _ = tx.send(generation);
    });
    rx.await.ok()
}

/// A 429 with `detail` and, unless turned off, a `Retry-After` of `retry_after` (whole seconds,
/// at least one, or an HTTP date rounded up to the next whole second); the pause it announces is
/// remembered so creates arriving inside it are counted.
fn rate_limited(
    sim: &Sim,
    account: &mut Account,
    now: Instant,
    retry_after: Duration,
    detail: &str,
    as_http_date: bool,
) -> Response {
    let mut response = error(StatusCode::TOO_MANY_REQUESTS, detail);
    if !sim.config.retry_after {
        return response;
    }
    let value = if as_http_date {
        // The date means "not before": round up, so a client reading it waits at least this long.
        let at = std::time::SystemTime::now() + retry_after;
        let whole = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
        account.announce_pause(now + retry_after);
        httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(whole))
    } else {
        let seconds = retry_after.as_secs_f64().ceil().max(1.0);
        account.announce_pause(now + Duration::from_secs_f64(seconds));
        format!("{seconds:.0}")
    };
    if let Ok(value) = header::HeaderValue::from_str(&value) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The id of our own generation a request's `modify_image_ref` points at, if it does: an image URL
/// of this simulator, on any loopback port (a simulator with a state directory answers on the
/// ports its account's URLs were handed out on, and the ids are the account's).
fn modified_generation<'a>(request: &'a Value, asset_base: &str) -> Option<&'a str> {
    let url = request.get("modify_image_ref")?.get("url")?.as_str()?;
    own_generation(url, asset_base)
}

/// The id of our own generation an image `url` names: an image URL of this simulator, on any
/// loopback port.
pub(super) fn own_generation<'a>(url: &'a str, asset_base: &str) -> Option<&'a str> {
    let file = match url.strip_prefix(asset_base) {
        Some(rest) => rest.strip_prefix('/')?,
        None => {
            let (origin, file) = url.split_once("/sim/assets/")?;
            let port = origin.strip_prefix("http://127.0.0.1:")?;
            port.parse::<u16>().ok()?;
            file
        }
    };
    file.split('.').next()
}
