//! `darkroom review`: a local contact sheet of a job's previews. Click to choose, see what
//! promoting the choice costs, export the select file, or promote: the final pass runs in the
//! background and the finals appear beside their previews as they complete.
//!
//! The server binds to 127.0.0.1 by default. Anything that writes or spends needs the token the
//! page was served with (in an `X-Darkroom-Token` header, which no other site can set without a
//! CORS preflight we never answer), and every request must name this server in its `Host` header
//! (no DNS rebinding). Thumbnails are made from the images on disk, looked up by task id in the
//! ledger, never by a path from the request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use darkroom_engine::promote::{self, PromoteOptions, Selection};
use darkroom_engine::report::escape;
use darkroom_engine::scheduler::Shutdown;
use darkroom_jobs::{Money, Pass};
use darkroom_ledger::Ledger;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::commands::pass::{run_settings, RunFlags};
use crate::commands::promote::{open_job, options, selection_errors};
use crate::commands::{connect, Connection, Upstream};
use crate::config::{self, Settings};
use crate::exit::{Exit, Failure};

const PAGE: &str = include_str!("review.html");

/// Serve a local page to choose previews and promote them (Ctrl-C stops it).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job's name (as `darkroom status` lists it).
    pub job: String,
    /// The port to serve on (0: any free port).
    #[arg(long, value_name = "N", default_value_t = 7878)]
    pub port: u16,
    /// The address to bind. Anything but loopback shows the page (and its token) to the network.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// The final pass's budget in USD when "promote" makes finals [default: config budget.default].
    #[arg(long, value_name = "USD", value_parser = crate::commands::parse_usd)]
    pub budget: Option<Money>,
    /// Where the job's images are; finals go to OUT/JOB/final/, the export to OUT/JOB/select.csv.
    #[arg(long, value_name = "DIR", env = crate::config::env::OUT, default_value = "out")]
    pub out: PathBuf,
    #[command(flatten)]
    pub upstream: Upstream,
    #[command(flatten)]
    pub flags: RunFlags,
}

struct Review {
    ledger: Ledger,
    job: String,
    job_id: i64,
    db: PathBuf,
    out: PathBuf,
    token: String,
    /// Host header values this server answers to.
    hosts: Vec<String>,
    settings: Settings,
    options: PromoteOptions,
    flags: RunFlags,
    /// `None` without a key and without `--sim`: the page is shown, promotion says it needs one.
    connection: Option<Connection>,
    finals: Mutex<FinalPass>,
    shutdown: Shutdown,
}

/// The final pass the page started, if any.
#[derive(Default)]
struct FinalPass {
    running: bool,
    message: Option<String>,
}

pub fn run(config_file: Option<&Path>, args: Args) -> anyhow::Result<Exit> {
    let settings = config::resolve(config_file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run_async(settings, args))
}

async fn run_async(settings: Settings, args: Args) -> anyhow::Result<Exit> {
    let options = options(&settings)?;
    let (ledger, job_id) = open_job(&args.upstream.db, &args.job).await?;
    if let Some(budget) = args.budget {
        crate::commands::set_budget_flag(&ledger, job_id, Pass::Final, budget).await?;
    }
    let listener = tokio::net::TcpListener::bind((args.bind, args.port))
        .await
        .map_err(|e| {
            Failure::new(
                Exit::BadInput,
                format!("could not listen on {}:{}: {e}", args.bind, args.port),
            )
            .with_hint("choose another port with --port N (0 picks a free one)")
        })?;
    let addr: SocketAddr = listener.local_addr()?;
    let connection = connect_for_sending(&args.upstream).await?;
    let token = new_token();
    let mut hosts = vec![format!("{addr}"), format!("localhost:{}", addr.port())];
    if addr.ip().is_loopback() {
        hosts.push(format!("127.0.0.1:{}", addr.port()));
    }
    let shutdown = Shutdown::default();
    let review = Arc::new(Review {
        ledger,
        job: args.job.clone(),
        job_id,
        db: args.upstream.db.clone(),
        out: args.out.clone(),
        token,
        hosts,
        settings,
        options,
        flags: args.flags.clone(),
        finals: Mutex::new(FinalPass {
            running: false,
            message: connection.is_none().then(|| PROMOTION_NEEDS_KEY.to_string()),
        }),
        connection,
        shutdown: shutdown.clone(),
    });
    let app = Router::new()
        .route("/", get(page))
        .route("/api/state", get(state))
        .route("/api/export", post(export))
        .route("/api/promote", post(start_promotion))
        .route("/thumb/{pass}/{key}", get(thumb))
        .layer(middleware::from_fn_with_state(review.clone(), guard))
        .with_state(review.clone());
    println!("review {}: http://{addr}/", args.job);
    eprintln!(
        "open it in a browser; Ctrl-C stops the server (a promotion under way stops with it, resumable)"
    );
    let stop = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.stop.cancel();
        })
        .await?;
    // Let a final pass in progress drain its in-flight generations, as `run` does on Ctrl-C.
    while review.finals.lock().map(|f| f.running).unwrap_or(false) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    review.ledger.close().await;
    Ok(Exit::Done)
}

fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every request must name this server as its host; writes must carry the page's token.
async fn guard(State(review): State<Arc<Review>>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !review.hosts.iter().any(|h| h == host) {
        tracing::warn!(host, "review: refused a request for another host");
        return (StatusCode::FORBIDDEN, "unknown host").into_response();
    }
    if request.method() != axum::http::Method::GET && !has_token(request.headers(), &review.token) {
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

async fn page(State(review): State<Arc<Review>>) -> Response {
    let html = PAGE
        .replace("{{JOB}}", &escape(&review.job))
        .replace("{{TOKEN}}", &review.token)
        .replace("{{MODEL}}", review.options.model.as_str());
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

fn internal(error: impl std::fmt::Display) -> Response {
    tracing::warn!(%error, "review: request failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({"error": error.to_string()})),
    )
        .into_response()
}

async fn state(State(review): State<Arc<Review>>) -> Response {
    let report = match darkroom_engine::report::build(&review.ledger, review.job_id, &review.job).await {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    let final_pass = match review.ledger.pass(review.job_id, Pass::Final).await {
        Ok(p) => p,
        Err(e) => return internal(e),
    };
    let (running, message) = review
        .finals
        .lock()
        .map(|f| (f.running, f.message.clone()))
        .unwrap_or((false, None));
    let budget = final_pass
        .as_ref()
        .map_or(review.settings.budget.default.micros(), |p| p.budget_micros);
    let committed = final_pass
        .as_ref()
        .map_or(0, |p| p.spent_micros + p.reserved_micros);
    Json(json!({
        "job": review.job,
        "final_model": review.options.model.as_str(),
        "final_price_micros": review.options.price.micros(),
        "final_budget_micros": budget,
        "final_left_micros": budget - committed,
        "running": running,
        "message": message,
        "groups": report.groups,
        "passes": report.passes,
    }))
    .into_response()
}

async fn thumb(
    State(review): State<Arc<Review>>,
    UrlPath((pass, key)): UrlPath<(String, String)>,
) -> Response {
    let pass = match pass.as_str() {
        "preview" => Pass::Preview,
        "final" => Pass::Final,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let tiles = match review.ledger.tiles(review.job_id, pass).await {
        Ok(t) => t,
        Err(e) => return internal(e),
    };
    let Some(path) = tiles
        .into_iter()
        .find(|t| t.task_key == key && t.state == "done")
        .and_then(|t| t.output_path)
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let cached = darkroom_engine::thumbs::thumb_path(&review.out.join(&review.job), pass.as_str(), &key);
    let made =
        tokio::task::spawn_blocking(move || darkroom_engine::thumbs::thumbnail(Path::new(&path), &cached))
            .await;
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

#[derive(Debug, Deserialize)]
struct Chosen {
    ids: Vec<String>,
}

/// Checks the chosen ids; the error response lists every one that can't be promoted.
async fn checked_plan(review: &Review, ids: Vec<String>) -> Result<promote::Plan, Response> {
    if ids.is_empty() {
        return Err((
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "nothing is selected"})),
        )
            .into_response());
    }
    let plan = promote::plan(&review.ledger, review.job_id, &Selection::Ids(ids))
        .await
        .map_err(internal)?;
    if plan.has_errors() {
        return Err((
            StatusCode::BAD_REQUEST,
            Json(
                json!({"error": "some chosen previews can't be promoted", "errors": selection_errors(&plan)}),
            ),
        )
            .into_response());
    }
    Ok(plan)
}

async fn export(State(review): State<Arc<Review>>, Json(chosen): Json<Chosen>) -> Response {
    let ids = chosen.ids.clone();
    if let Err(response) = checked_plan(&review, chosen.ids).await {
        return response;
    }
    let path = review.out.join(&review.job).join("select.csv");
    let mut csv = String::from("id,pass,keep\n");
    for id in &ids {
        // Ids are letters, digits, '-', '_' and '.': nothing to quote.
        csv.push_str(&format!("{id},preview,y\n"));
    }
    match darkroom_engine::images::write_atomically(&path, csv.as_bytes()) {
        Ok(()) => Json(json!({"path": path.display().to_string(), "count": ids.len()})).into_response(),
        Err(e) => internal(e),
    }
}

async fn start_promotion(State(review): State<Arc<Review>>, Json(chosen): Json<Chosen>) -> Response {
    let plan = match checked_plan(&review, chosen.ids).await {
        Ok(plan) => plan,
        Err(response) => return response,
    };
    if review.connection.is_none() {
        return (StatusCode::CONFLICT, Json(json!({"error": PROMOTION_NEEDS_KEY}))).into_response();
    }
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
    let cost = plan.cost(review.options.price);
    let count = plan.chosen.len();
    let background = review.clone();
    tokio::spawn(async move {
        let message = match make_finals(&background, plan).await {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "review: the final pass failed");
                format!("the final pass stopped: {error:#}")
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

/// Adds the finals and runs the final pass, as `darkroom promote` does.
async fn make_finals(review: &Review, plan: promote::Plan) -> anyhow::Result<String> {
    let _lock = darkroom_engine::lock::JobLock::acquire(&review.db, &review.job)?;
    if review.ledger.pass(review.job_id, Pass::Final).await?.is_none() {
        review
            .ledger
            .set_budget(review.job_id, Pass::Final, review.settings.budget.default)
            .await?;
    }
    let Some(connection) = &review.connection else {
        anyhow::bail!(PROMOTION_NEEDS_KEY);
    };
    let client = &connection.client;
    let without = promote::add_finals(&review.ledger, client, review.job_id, &plan, &review.options).await?;
    let deadline = review
        .ledger
        .pass(review.job_id, Pass::Final)
        .await?
        .and_then(|p| p.deadline_at);
    let mut settings = run_settings(
        &review.settings,
        &review.job,
        Pass::Final,
        &review.out,
        &review.flags,
        deadline,
    );
    if let Some(listen) = review.flags.callbacks_listen {
        let receiver =
            darkroom_engine::callbacks::CallbackReceiver::bind(listen, review.flags.callbacks_url.as_deref())
                .with_context(|| format!("could not listen for callbacks on {listen}"))?;
        settings.callbacks = Some(receiver);
    }
    let (tx, mut rx) = mpsc::channel(1024);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let outcome = darkroom_engine::run_pass(
        &review.ledger,
        client,
        &settings,
        review.job_id,
        tx,
        review.shutdown.clone(),
    )
    .await?;
    let _ = drain.await;
    crate::commands::pass::refresh_report(
        &review.ledger,
        review.job_id,
        &review.job,
        &review.out.join(&review.job),
    )
    .await;
    let c = outcome.counts;
    let mut message = format!(
        "finals: {} done, {} blocked, {} failed, {} skipped; spent {} of {}",
        c.done, c.blocked, c.failed, c.skipped, outcome.spent, outcome.budget
    );
    if !without.is_empty() {
        message.push_str(&format!(
            "; made from the prompt alone (preview URL expired): {}",
            without.join(", ")
        ));
    }
    if let Some(stop) = outcome.stop {
        message.push_str(&format!("; stopped: {stop}"));
    }
    Ok(message)
}

/// What the page and the terminal say when review runs without a key and without `--sim`.
const PROMOTION_NEEDS_KEY: &str = "promotion needs a key: LUMAAI_API_KEY is not set (export it, or \
     start review with --sim to promote against the built-in simulator); choosing and exporting work";

/// A key is needed only to send: without `--sim` and without `LUMAAI_API_KEY`, review shows the
/// page with no connection (and says promotion needs one) instead of refusing to start.
async fn connect_for_sending(upstream: &Upstream) -> anyhow::Result<Option<Connection>> {
    if upstream.sim || config::api_key().is_some() {
        return Ok(Some(connect(upstream).await?));
    }
    eprintln!("{PROMOTION_NEEDS_KEY}");
    Ok(None)
}
