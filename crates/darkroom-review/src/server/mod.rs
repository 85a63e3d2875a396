//! The review server: a local contact sheet of a job's previews. Click to choose, see what
//! promoting the choice costs, export the select file, or promote: the final pass runs in the
//! background and the finals appear beside their previews as they complete.
//!
//! Anything that writes or spends needs the token the page was served with (in an
//! `X-Darkroom-Token` header, which no other site can set without a CORS preflight we never
//! answer), and every request must name this server in its `Host` header (no DNS rebinding).
//! Thumbnails are made from the images on disk, looked up by task in the job's ledger rows, never
//! by a path from the request. The writes (export, promotion) are in `promotion`.

mod pages;
mod promotion;
mod sheet;
mod trial;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use darkroom_engine::promote::PromoteOptions;
use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::RunSettings;
use darkroom_jobs::{Money, Pass};
use darkroom_ledger::Ledger;
use darkroom_provider::Provider;
use serde_json::json;

use crate::report::escape;

const PAGE: &str = include_str!("review.html");

/// Where the final pass receives the upstream's callbacks, bound anew for each promotion.
#[derive(Debug, Clone)]
pub struct Callbacks {
    /// The address to listen on (port 0 picks one).
    pub listen: SocketAddr,
    /// The URL the upstream reaches the receiver at; `None`: `http://ADDR`.
    pub url: Option<String>,
}

/// What a review server serves, resolved by the caller from config and flags.
#[derive(Debug)]
pub struct ReviewConfig {
    /// The job's name.
    pub job: String,
    /// The job's id in the ledger.
    pub job_id: i64,
    /// The ledger file: the job's run lock lives beside it (`darkroom_engine::lock`).
    pub ledger_path: PathBuf,
    /// `OUT`: the job's images are under `OUT/JOB/`, the export goes to `OUT/JOB/select.csv`.
    pub out: PathBuf,
    /// The page's token: writes must carry it in `X-Darkroom-Token` (see [`new_token`]).
    pub token: String,
    /// The `Host` header values this server answers to (see [`hosts_for`]).
    pub hosts: Vec<String>,
    /// How finals are made (model, price, reference, weight).
    pub promote: PromoteOptions,
    /// The final pass's budget when it has none yet.
    pub default_budget: Money,
    /// The final pass's run settings; its deadline is read from the ledger when a promotion starts.
    pub run: RunSettings,
    /// Callbacks for the final pass, if the caller wants them.
    pub callbacks: Option<Callbacks>,
    /// The providers a promotion's finals are routed over (`--routing`, `--failover`), as
    /// `darkroom promote` routes them; `None`: the page's client alone.
    pub routes: Option<darkroom_engine::routing::RoutePlan>,
}

/// The final pass the page started, if any.
#[derive(Debug, Default)]
struct FinalPass {
    running: bool,
    message: Option<String>,
}

/// What the page and a promotion's answer say when the server has no provider to send with.
pub const PROMOTION_NEEDS_KEY: &str = "promotion needs a key: LUMAAI_API_KEY is not set (export it, or \
     start review with --sim to promote against the built-in simulator); choosing and exporting work";

/// The server's state: its config, the ledger, the upstream client, and the final pass under way.
#[derive(Debug)]
pub struct ReviewState {
    config: ReviewConfig,
    ledger: Ledger,
    /// `None` when started without a key: the page is shown, promotion says it needs one.
    client: Option<Arc<dyn Provider>>,
    finals: Mutex<FinalPass>,
    shutdown: Shutdown,
    /// The contact sheet the page reads in pages and by change (`sheet`, `pages`).
    sheet: tokio::sync::Mutex<sheet::Sheet>,
}

impl ReviewState {
    /// The state of a server for `config`. `shutdown` stops a final pass under way (resumable),
    /// as Ctrl-C stops `darkroom run`. Without a `client` (no key) the page is shown and a
    /// promotion is answered 409 with [`PROMOTION_NEEDS_KEY`]: a key is needed only to send.
    pub fn new(
        config: ReviewConfig,
        ledger: Ledger,
        client: Option<Arc<dyn Provider>>,
        shutdown: Shutdown,
    ) -> Arc<ReviewState> {
        Arc::new(ReviewState {
            config,
            ledger,
            finals: Mutex::new(FinalPass {
                running: false,
                message: client.is_none().then(|| PROMOTION_NEEDS_KEY.to_string()),
            }),
            client,
            shutdown,
            sheet: tokio::sync::Mutex::new(sheet::Sheet::new(new_token())),
        })
    }

    /// Whether a final pass the page started is still running.
    pub fn finals_running(&self) -> bool {
        self.finals.lock().map(|f| f.running).unwrap_or(false)
    }

    /// Waits until no final pass is running (it drains its in-flight generations after a stop).
    pub async fn finals_finished(&self) {
        while self.finals_running() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// The ledger the server reads and writes.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The promotion options with the routing choices the job has now (a trial's page may have
    /// saved new ones since the server started).
    async fn promote_options(&self) -> darkroom_ledger::Result<PromoteOptions> {
        let mut options = self.config.promote.clone();
        options.choices = self.ledger.routing_choices(&self.config.job).await?;
        Ok(options)
    }

    /// The sheet, brought up to date with the ledger and the routing choices.
    async fn fresh_sheet(&self) -> darkroom_ledger::Result<tokio::sync::MutexGuard<'_, sheet::Sheet>> {
        let options = self.promote_options().await?;
        let mut sheet = self.sheet.lock().await;
        sheet.refresh(&self.ledger, self.config.job_id, &options).await?;
        Ok(sheet)
    }
}

/// A fresh random token for a server's page: 16 bytes from the OS, as 32 hex digits.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `Host` values a server bound to `addr` answers to: `ADDR`, `localhost:PORT`, and
/// `127.0.0.1:PORT` when bound to loopback.
pub fn hosts_for(addr: SocketAddr) -> Vec<String> {
    let mut hosts = vec![format!("{addr}"), format!("localhost:{}", addr.port())];
    if addr.ip().is_loopback() {
        hosts.push(format!("127.0.0.1:{}", addr.port()));
    }
    hosts
}

/// The review server's routes: `GET /` (the page), `GET /api/state` (the whole contact sheet as
/// JSON, in one answer: for scripts), the page's paged reads `GET /api/sheet`, `GET /api/changes`
/// and `GET /api/ids` (see `pages`), `GET /thumb/{pass}/{task key}` and `GET /image/{pass}/{task
/// key}`, `POST /api/export` and `POST /api/promote` (both need the token), and for a trial
/// `GET /trial` (Flash | Photon 1 pairs), `GET /api/trial` and `POST /api/routing` (needs the
/// token; see `trial`), all behind the host and token guard.
pub fn router(state: Arc<ReviewState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/state", get(contact_sheet))
        .route("/api/sheet", get(pages::sheet))
        .route("/api/changes", get(pages::changes))
        .route("/api/ids", get(pages::ids))
        .route("/image/{pass}/{key}", get(pages::image))
        .route("/api/export", post(promotion::export))
        .route("/api/promote", post(promotion::start))
        .route("/thumb/{pass}/{key}", get(thumb))
        .route("/trial", get(trial::page))
        .route("/api/trial", get(trial::pairs))
        .route("/api/routing", post(trial::choose))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Serves [`router`] on `listener` until `stop` completes, then stops taking requests and tells a
/// final pass under way to stop (it drains; wait with [`ReviewState::finals_finished`]).
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ReviewState>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            stop.await;
            shutdown.stop.cancel();
        })
        .await
}

/// Every request must name this server as its host; writes must carry the page's token.
async fn guard(State(review): State<Arc<ReviewState>>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !review.config.hosts.iter().any(|h| h == host) {
        tracing::warn!(host, "review: refused a request for another host");
        return (StatusCode::FORBIDDEN, "unknown host").into_response();
    }
    if request.method() != axum::http::Method::GET && !has_token(request.headers(), &review.config.token) {
        tracing::warn!(path = %request.uri().path(), "review: refused a write without the page's token");
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"error": "this action needs the token of the page darkroom served"})),
        )
            .into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn has_token(headers: &HeaderMap, token: &str) -> bool {
    let given = headers
        .get("x-darkroom-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Compared without an early exit, so timing says nothing about the token.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn page(State(review): State<Arc<ReviewState>>) -> Response {
    let html = PAGE
        .replace("{{JOB}}", &escape(&review.config.job))
        .replace("{{TOKEN}}", &review.config.token)
        .replace("{{MODEL}}", review.config.promote.model.as_str());
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

/// The pass named in a request and the path the ledger has for that pass's done task `key` of
/// this job (never a path from the request): the response to send instead when the pass is
/// unknown or no such image is done (404), or the ledger failed (500).
async fn done_image(review: &ReviewState, pass: &str, key: &str) -> Result<(Pass, PathBuf), Response> {
    let Some(pass) = Pass::parse(pass) else {
        return Err(StatusCode::NOT_FOUND.into_response());
    };
    match review.ledger.done_image(review.config.job_id, pass, key).await {
        Ok(Some(path)) => Ok((pass, PathBuf::from(path))),
        Ok(None) => Err(StatusCode::NOT_FOUND.into_response()),
        Err(e) => Err(internal(e)),
    }
}

fn internal(error: impl std::fmt::Display) -> Response {
    tracing::warn!(%error, "review: request failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({"error": error.to_string()})),
    )
        .into_response()
}

/// The whole contact sheet in one answer, with the passes and what the final pass has left (the
/// page itself reads `/api/sheet` and `/api/changes`).
async fn contact_sheet(State(review): State<Arc<ReviewState>>) -> Response {
    let config = &review.config;
    let report = match crate::report::build(&review.ledger, config.job_id, &config.job).await {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    let mut body = match final_figures(&review).await {
        Ok(figures) => figures,
        Err(e) => return internal(e),
    };
    if let serde_json::Value::Object(map) = &mut body {
        map.insert("groups".into(), json!(report.groups));
        map.insert("passes".into(), json!(report.passes));
    }
    Json(body).into_response()
}

/// The job, the final model and price, the final budget and what it has left, and the promotion
/// under way (`running`, `message`).
async fn final_figures(review: &ReviewState) -> darkroom_ledger::Result<serde_json::Value> {
    let config = &review.config;
    let final_pass = review.ledger.pass(config.job_id, Pass::Final).await?;
    let (running, message) = review
        .finals
        .lock()
        .map(|f| (f.running, f.message.clone()))
        .unwrap_or((false, None));
    let budget = final_pass
        .as_ref()
        .map_or(config.default_budget.micros(), |p| p.budget_micros);
    let committed = final_pass
        .as_ref()
        .map_or(0, |p| p.spent_micros + p.reserved_micros);
    Ok(json!({
        "job": config.job,
        "final_model": config.promote.model.as_str(),
        "final_price_micros": config.promote.price.micros(),
        "final_budget_micros": budget,
        "final_left_micros": budget - committed,
        "running": running,
        "message": message,
    }))
}

/// A done task's thumbnail (any pass: previews, finals, reframes), found among this job's tasks
/// of the pass by its key (one indexed read); anything else is 404. The image's path comes from the ledger, never from the request.
async fn thumb(
    State(review): State<Arc<ReviewState>>,
    UrlPath((pass, key)): UrlPath<(String, String)>,
) -> Response {
    let (pass, path) = match done_image(&review, &pass, &key).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let cached = crate::thumbs::thumb_path(&review.config.out.join(&review.config.job), pass.as_str(), &key);
    let made = tokio::task::spawn_blocking(move || crate::thumbs::thumbnail(&path, &cached)).await;
    match made {
        Ok(Ok(bytes)) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "private, max-age=3600"),
            ],
            bytes,
        )
            .into_response(),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}
