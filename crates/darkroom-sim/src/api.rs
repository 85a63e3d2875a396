//! The HTTP surface: Luma's paths under `/dream-machine/v1`, the image assets, and `/sim/billing`
//! and `/sim/stats` for tests to reconcile against.

// Handlers return early with a ready `Response` as their error; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::state::{Generation, Outcome, Refusal, MODERATION_REASONS, RETRYABLE_REASONS};
use crate::{Kill, Sim};

const API: &str = "/dream-machine/v1";
const ASPECT_RATIOS: [&str; 7] = ["1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21"];

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route(&format!("{API}/generations/image"), post(create))
        .route(&format!("{API}/generations"), get(list))
        .route(&format!("{API}/generations/{{id}}"), get(read).delete(delete))
        .route(&format!("{API}/credits"), get(credits))
        .route(&format!("{API}/ping"), get(ping))
        .route("/sim/assets/{file}", get(asset))
        .route("/sim/billing", get(billing))
        .route("/sim/stats", get(stats))
        .with_state(sim)
}

fn error(status: StatusCode, detail: impl Into<Value>) -> Response {
    (status, Json(json!({ "detail": detail.into() }))).into_response()
}

fn authorize(sim: &Sim, headers: &HeaderMap) -> Result<(), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    match (token, &sim.config.api_key) {
        (Some(given), Some(expected)) if given == expected => Ok(()),
        (Some(_), None) => Ok(()),
        _ => Err(error(StatusCode::UNAUTHORIZED, "Invalid API key is provided")),
    }
}

/// Counts the request by endpoint and status, and returns the response.
fn counted(sim: &Sim, endpoint: &str, response: Response) -> Response {
    let key = format!("{endpoint} {}", response.status().as_u16());
    let mut account = sim.lock();
    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        account.stats.rate_limited += 1;
    }
    account.count(key);
    response
}

async fn create(
    State(sim): State<Arc<Sim>>,
    Extension(kill): Extension<Kill>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = create_inner(&sim, &kill, &headers, &body).await;
    counted(&sim, "POST /generations/image", response)
}

async fn create_inner(sim: &Arc<Sim>, kill: &Kill, headers: &HeaderMap, body: &Bytes) -> Response {
    if let Err(response) = authorize(sim, headers) {
        return response;
    }
    let request: Value = match serde_json::from_slice(body) {
        Ok(value @ Value::Object(_)) => value,
        Ok(other) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!([{"type": "model_attributes_type", "loc": ["body"], "msg": "Input should be a valid dictionary or object to extract fields from", "input": other}]),
            )
        }
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!([{"type": "json_invalid", "loc": ["body", e.column()], "msg": "JSON decode error", "input": {}, "ctx": {"error": e.to_string()}}]),
            )
        }
    };
    let checked = match validate(&request) {
        Ok(checked) => checked,
        Err(response) => return response,
    };
    let config = &sim.config;
    let price = if checked.model == "photon-1" {
        config.price_photon_1_micros
    } else {
        config.price_photon_flash_1_micros
    };
    let now = Instant::now();
    let accepted: Result<Admitted, Response> = (|| {
        let mut account = sim.lock();
        account.settle(now);
        account.note_create_arrived(now);
        if let Some(refuse) = &config.refuse_creates {
            return Err(rate_limited(
                sim,
                &mut account,
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
                    &mut account,
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
                return Err(rate_limited(sim, &mut account, now, retry_after, detail, false));
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
        let faults = config.faults;
        let outcome = if account.chance(faults.moderation) {
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
        };
        let unknown_state = account.chance(faults.unknown_state);
        if unknown_state {
            account.fault("unknown_state");
        }
        let id = account.new_id();
        // A generation that modifies one of ours redoes its picture (so a final keeps its
        // preview's composition); any other request gets a picture of its own.
        let image_seed = modified_generation(&request, &sim.asset_base())
            .and_then(|source| account.generations.get(source).map(|g| g.image_seed))
            .unwrap_or_else(|| {
                *blake3::hash(echo(&request, &checked.model).to_string().as_bytes()).as_bytes()
            });
        let generation = Generation {
            id,
            created_at: OffsetDateTime::now_utc(),
            echo: echo(&request, &checked.model),
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
        };
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
    })();
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

/// What a create that passed validation and the limits turned into.
enum Admitted {
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
async fn commit_late(sim: &Arc<Sim>, mut generation: Generation) -> Option<Generation> {
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
        let _ = tx.send(generation);
    });
    rx.await.ok()
}

/// A 429 with `detail` and, unless turned off, a `Retry-After` of `retry_after` (whole seconds,
/// at least one, or an HTTP date rounded up to the next whole second); the pause it announces is
/// remembered so creates arriving inside it are counted.
fn rate_limited(
    sim: &Sim,
    account: &mut crate::state::Account,
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

struct Checked {
    model: String,
    aspect_ratio: String,
    format: String,
}

/// Schema errors (422, pydantic style, all of them) first; then the business rules (400).
fn validate(request: &Value) -> Result<Checked, Response> {
    let mut problems = Vec::new();
    let field = |name: &str| request.get(name).filter(|v| !v.is_null());
    let enum_error = |name: &str, value: &Value, expected: &str| json!({"type": "enum", "loc": ["body", name], "msg": format!("Input should be {expected}"), "input": value, "ctx": {"expected": expected}});
    let model = match field("model") {
        None => {
            problems.push(json!({"type": "missing", "loc": ["body", "model"], "msg": "Field required", "input": request}));
            String::new()
        }
        Some(Value::String(m)) if m == "photon-1" || m == "photon-flash-1" => m.clone(),
        Some(other) => {
            problems.push(enum_error("model", other, "'photon-1' or 'photon-flash-1'"));
            String::new()
        }
    };
    let aspect_ratio = match field("aspect_ratio") {
        None => "16:9".to_string(),
        Some(Value::String(a)) if ASPECT_RATIOS.contains(&a.as_str()) => a.clone(),
        Some(other) => {
            problems.push(enum_error(
                "aspect_ratio",
                other,
                "'1:1', '16:9', '9:16', '4:3', '3:4', '21:9' or '9:21'",
            ));
            String::new()
        }
    };
    let format = match field("format") {
        None => "jpg".to_string(),
        Some(Value::String(f)) if f == "jpg" || f == "png" => f.clone(),
        Some(other) => {
            problems.push(enum_error("format", other, "'jpg' or 'png'"));
            String::new()
        }
    };
    for name in ["prompt", "callback_url"] {
        if let Some(value) = field(name) {
            if !value.is_string() {
                problems.push(json!({"type": "string_type", "loc": ["body", name], "msg": "Input should be a valid string", "input": value}));
            }
        }
    }
    let refs_ok = |value: &Value| {
        value
            .as_array()
            .is_some_and(|a| a.iter().all(|r| r.get("url").is_some_and(Value::is_string)))
    };
    for name in ["image_ref", "style_ref"] {
        if let Some(value) = field(name) {
            if !refs_ok(value) {
                problems.push(json!({"type": "list_type", "loc": ["body", name], "msg": "Input should be a valid list of {url, weight}", "input": value}));
            }
        }
    }
    if let Some(value) = field("modify_image_ref") {
        if !value.get("url").is_some_and(Value::is_string) {
            problems.push(json!({"type": "model_type", "loc": ["body", "modify_image_ref"], "msg": "Input should be a valid {url, weight}", "input": value}));
        }
    }
    if let Some(value) = field("character_ref") {
        let images = value
            .get("identity0")
            .and_then(|i| i.get("images"))
            .and_then(Value::as_array);
        if !images.is_some_and(|a| a.iter().all(Value::is_string)) {
            problems.push(json!({"type": "model_type", "loc": ["body", "character_ref"], "msg": "Input should be {identity0: {images: [url, ...]}}", "input": value}));
        }
    }
    if !problems.is_empty() {
        return Err(error(StatusCode::UNPROCESSABLE_ENTITY, Value::Array(problems)));
    }
    let prompt = field("prompt").and_then(Value::as_str).unwrap_or("").trim();
    let length = prompt.chars().count();
    let too_many = |name: &str, max: usize| {
        let n = match name {
            "character_ref" => request
                .pointer("/character_ref/identity0/images")
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
            _ => field(name).and_then(Value::as_array).map_or(0, Vec::len),
        };
        (n > max).then(|| format!("Too many {name} images: {n}, maximum is {max}"))
    };
    let rule = if length == 0 {
        Some("Prompt is required".to_string())
    } else if length < 3 {
        Some("Prompt is too short, minimum length is 3 characters".to_string())
    } else if length > 5000 {
        Some("Prompt is too long, maximum length is 5000 characters".to_string())
    } else {
        too_many("image_ref", 4)
            .or_else(|| too_many("style_ref", 1))
            .or_else(|| too_many("character_ref", 4))
    };
    if let Some(message) = rule {
        return Err(error(StatusCode::BAD_REQUEST, message));
    }
    Ok(Checked {
        model,
        aspect_ratio,
        format,
    })
}

/// The request as the API echoes it: every image field, `null` when unset.
fn echo(request: &Value, model: &str) -> Value {
    let pick = |name: &str| request.get(name).cloned().unwrap_or(Value::Null);
    json!({
        "generation_type": "image",
        "model": model,
        "prompt": pick("prompt"),
        "aspect_ratio": request.get("aspect_ratio").cloned().unwrap_or(json!("16:9")),
        "callback_url": pick("callback_url"),
        "image_ref": pick("image_ref"),
        "style_ref": pick("style_ref"),
        "character_ref": pick("character_ref"),
        "modify_image_ref": pick("modify_image_ref"),
    })
}

async fn maybe_slow_or_failing(sim: &Sim) -> Option<Response> {
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
        match account.generations.get(&id).filter(|g| !g.deleted) {
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
        let mut live = account.order.iter().rev().filter_map(|id| account.generations.get(id)).filter(|g| !g.deleted);
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
            match account.generations.get_mut(&id).filter(|g| !g.deleted) {
                Some(generation) => {
                    generation.deleted = true;
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

/// The id of our own generation a request's `modify_image_ref` points at, if it does.
fn modified_generation<'a>(request: &'a Value, asset_base: &str) -> Option<&'a str> {
    let url = request.get("modify_image_ref")?.get("url")?.as_str()?;
    let file = url.strip_prefix(asset_base)?.strip_prefix('/')?;
    file.split('.').next()
}

async fn asset(State(sim): State<Arc<Sim>>, Path(file): Path<String>) -> Response {
    let response = asset_inner(&sim, &file).await;
    counted(&sim, "GET /sim/assets", response)
}

async fn asset_inner(sim: &Arc<Sim>, file: &str) -> Response {
    let id = file.split('.').next().unwrap_or_default();
    let (seed, aspect, format, truncate, fail, outcome) = {
        let now = Instant::now();
        let mut account = sim.lock();
        account.settle(now);
        let Some(generation) = account
            .generations
            .get(id)
            .filter(|g| !g.deleted && g.state(now) == "completed")
        else {
            return error(StatusCode::NOT_FOUND, "Not found");
        };
        let found = (
            generation.image_seed,
            generation.aspect_ratio.clone(),
            generation.format.clone(),
            generation.outcome.clone(),
        );
        let fail = account.chance(sim.config.faults.download_failed);
        let truncate = !fail && account.chance(sim.config.faults.download_truncated);
        if fail {
            account.fault("download_failed");
        }
        if truncate {
            account.fault("download_truncated");
        }
        (found.0, found.1, found.2, truncate, fail, found.3)
    };
    match outcome {
        Outcome::ImageMissing | Outcome::CompletedWithoutImage => {
            return error(StatusCode::NOT_FOUND, "Not found");
        }
        Outcome::NotAnImage => {
            return (
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body><h1>Service temporarily unavailable</h1></body></html>",
            )
                .into_response();
        }
        _ => {}
    }
    if fail {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
    }
    let bytes = sim.image(seed, &aspect, format == "png").await;
    let content_type = if format == "png" {
        "image/png"
    } else {
        "image/jpeg"
    };
    if truncate {
        let half = bytes.slice(..bytes.len() / 2);
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(half),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "truncated",
            )),
        ];
        let mut response = Response::new(Body::from_stream(futures::stream::iter(chunks)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, header::HeaderValue::from(bytes.len()));
        return response;
    }
    ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

async fn billing(State(sim): State<Arc<Sim>>) -> Response {
    Json(sim.billing()).into_response()
}

async fn stats(State(sim): State<Arc<Sim>>) -> Response {
    Json(sim.stats()).into_response()
}
