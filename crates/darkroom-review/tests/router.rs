//! The review server's router, driven with requests (`tower::ServiceExt::oneshot`, no socket)
//! against a real ledger file whose previews the simulator made on a loopback port: the contact
//! sheet's JSON, the token and host guard, thumbnails found only among the job's own tasks, and a
//! promotion that makes finals through the engine as `darkroom promote` does.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use darkroom_engine::prepare::{prepare_job, JobFile};
use darkroom_engine::promote::{PreviewReference, PromoteOptions};
use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{run_pass, RunSettings};
use darkroom_jobs::{Model, Money, Pass, PriceTable, ReadOptions, Routing};
use darkroom_ledger::Ledger;
use darkroom_luma::{ApiKey, ClientConfig, LumaProvider};
use darkroom_provider::Provider;
use darkroom_review::server::hosts_for;
use darkroom_review::{router, ReviewConfig, ReviewState};
use darkroom_sim::{SimConfig, SimHandle};
use serde_json::Value;
use tower::ServiceExt as _;

const HOST: &str = "127.0.0.1:7878";
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// A ledger with two jobs whose previews are done: `vases` (served) and `lamps` (another job).
struct Fixture {
    dir: tempfile::TempDir,
    sim: SimHandle,
    ledger: Ledger,
    client: Arc<dyn Provider>,
    vases: i64,
}

fn run_settings(dir: &Path, job: &str, pass: Pass) -> RunSettings {
    let mut s = RunSettings::new(job, pass, dir.join("out"));
    s.creates_per_minute = None;
    s.latency_photon_flash_1 = Duration::from_millis(10);
    s.latency_photon_1 = Duration::from_millis(20);
    s.polls_per_second = 200;
    s.stuck_after = Duration::from_secs(10);
    s
}

async fn previews(f: (&Ledger, &Arc<dyn Provider>, &Path), job: &str, csv: &str) -> i64 {
    let (ledger, client, dir) = f;
    let file = dir.join(format!("{job}.csv"));
    std::fs::write(&file, csv).unwrap();
    let prepared = prepare_job(
        ledger,
        JobFile {
            name: job,
            file: &file,
            pass: Pass::Preview,
            budget: None,
            default_budget: Money::parse_usd("1").unwrap(),
            routing: Routing::default(),
            prices: PriceTable::default(),
            read: ReadOptions::default(),
        },
    )
    .await
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let settings = run_settings(dir, job, Pass::Preview);
    let outcome = run_pass(
        ledger,
        client,
        &settings,
        prepared.job_id,
        tx,
        Shutdown::default(),
    )
    .await
    .unwrap();
    drain.await.unwrap();
    assert_eq!(
        outcome.counts.done, outcome.counts.total,
        "{job}: every preview is made"
    );
    prepared.job_id
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("darkroom.db")).await.unwrap();
    let sim = darkroom_sim::spawn(SimConfig {
        time_scale: 0.02,
        creates_per_minute: None,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let client: Arc<dyn Provider> = Arc::new(
        LumaProvider::new(ClientConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            download_timeout: Duration::from_secs(30),
            user_agent: "darkroom-review-tests".into(),
            ..ClientConfig::new(sim.base_url(), ApiKey::new("simulator".to_string()))
        })
        .unwrap(),
    );
    let parts = (&ledger, &client, dir.path());
    let vases = previews(
        parts,
        "vases",
        "id,prompt\nvase-1,a blue vase on a table\nvase-2,a red vase by a window\n",
    )
    .await;
    previews(parts, "lamps", "id,prompt\nlamp-1,a brass lamp on a desk\n").await;
    Fixture {
        dir,
        sim,
        ledger,
        client,
        vases,
    }
}

fn state(f: &Fixture) -> Arc<ReviewState> {
    state_on(f, f.client.clone())
}

/// The review state of `vases`, promoting through `client`.
fn state_on(f: &Fixture, client: Arc<dyn Provider>) -> Arc<ReviewState> {
    let config = ReviewConfig {
        job: "vases".into(),
        job_id: f.vases,
        ledger_path: f.dir.path().join("darkroom.db"),
        out: f.dir.path().join("out"),
        token: TOKEN.into(),
        hosts: hosts_for(HOST.parse().unwrap()),
        promote: PromoteOptions {
            reference: PreviewReference::ModifyImageRef,
            weight: 0.85,
            model: Model::Photon1,
            price: PriceTable::default().price(Model::Photon1),
            prices: PriceTable::default(),
            choices: Default::default(),
        },
        default_budget: Money::parse_usd("2").unwrap(),
        run: run_settings(f.dir.path(), "vases", Pass::Final),
        callbacks: None,
        routes: None,
    };
    ReviewState::new(config, f.ledger.clone(), Some(client), Shutdown::default())
}

fn get(uri: &str) -> Request<Body> {
    Request::builder()
        .uri(uri)
        .header(header::HOST, HOST)
        .body(Body::empty())
        .unwrap()
}

fn post(uri: &str, token: Option<&str>, json: &str) -> Request<Body> {
    let mut request = Request::builder()
        .method("POST")
        .uri(uri)
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header("x-darkroom-token", token);
    }
    request.body(Body::from(json.to_string())).unwrap()
}

async fn send(state: &Arc<ReviewState>, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, body.to_vec())
}

async fn json(state: &Arc<ReviewState>, request: Request<Body>) -> (StatusCode, Value) {
    let (status, body) = send(state, request).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_shows_the_jobs_previews_and_what_the_final_pass_would_have_left() {
    let f = fixture().await;
    let review = state(&f);
    let (status, body) = json(&review, get("/api/state")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["job"], "vases");
    assert_eq!(body["final_model"], "photon-1");
    assert_eq!(
        body["final_price_micros"],
        PriceTable::default().price(Model::Photon1).micros()
    );
    // No final pass yet: the default budget, all of it left.
    assert_eq!(body["final_budget_micros"], 2_000_000);
    assert_eq!(body["final_left_micros"], 2_000_000);
    assert_eq!(body["running"], false);
    let ids: Vec<&str> = body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["tiles"].as_array().unwrap())
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["vase-1", "vase-2"],
        "only this job's previews, in file order"
    );
    assert_eq!(body["passes"][0]["counts"]["done"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_without_the_pages_token_is_refused_and_nothing_is_written_or_spent() {
    let f = fixture().await;
    let review = state(&f);
    let billed = f.sim.billing().charged_micros;
    let select = f.dir.path().join("out/vases/select.csv");
    let chosen = r#"{"ids":["vase-1"]}"#;
    for token in [None, Some("not-the-token"), Some(&TOKEN[..31])] {
        let (status, body) = json(&review, post("/api/export", token, chosen)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{token:?}: {body}");
        assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
        let (status, _) = json(&review, post("/api/promote", token, chosen)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{token:?}");
    }
    assert!(!select.exists(), "no select file without the token");
    assert!(
        f.ledger.pass(f.vases, Pass::Final).await.unwrap().is_none(),
        "no final pass without the token"
    );
    assert_eq!(f.sim.billing().charged_micros, billed, "nothing spent");

    // With the token, the export is written.
    let (status, body) = json(&review, post("/api/export", Some(TOKEN), chosen)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        std::fs::read_to_string(&select).unwrap(),
        "id,pass,keep\nvase-1,preview,y\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_naming_another_host_is_refused_even_with_the_token() {
    let f = fixture().await;
    let review = state(&f);
    for host in ["evil.example", "evil.example:7878", ""] {
        let request = Request::builder()
            .uri("/api/state")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        let (status, _) = send(&review, request).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{host:?}");
    }
    let request = Request::builder()
        .method("POST")
        .uri("/api/export")
        .header(header::HOST, "evil.example")
        .header("x-darkroom-token", TOKEN)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"ids":["vase-1"]}"#))
        .unwrap();
    assert_eq!(send(&review, request).await.0, StatusCode::FORBIDDEN);
    assert!(!f.dir.path().join("out/vases/select.csv").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thumbnail_is_served_only_for_a_done_task_of_the_job_never_for_a_path() {
    let f = fixture().await;
    let review = state(&f);
    let (status, bytes) = send(&review, get("/thumb/preview/vase-1")).await;
    assert_eq!(status, StatusCode::OK);
    let thumb = image::load_from_memory(&bytes).unwrap();
    assert!(thumb.width().max(thumb.height()) <= darkroom_review::thumbs::THUMB_SIZE);

    // Another job's task, an unknown one, a pass with no such task, a path: all 404.
    for uri in [
        "/thumb/preview/lamp-1",
        "/thumb/preview/vase-9",
        "/thumb/final/vase-1",
        "/thumb/other/vase-1",
        "/thumb/preview/..%2F..%2Fdarkroom.db",
        "/thumb/preview/%2Fetc%2Fpasswd",
    ] {
        let (status, _) = send(&review, get(uri)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_through_the_router_makes_the_finals_under_the_final_budget() {
    let f = fixture().await;
    let review = state(&f);
    let price = PriceTable::default().price(Model::Photon1).micros();

    // An id that is no preview of this job is refused with its name; nothing is spent.
    let (status, body) = json(
        &review,
        post("/api/promote", Some(TOKEN), r#"{"ids":["vase-1","lamp-1"]}"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0], "lamp-1: no preview with this id in the job");
    assert!(f.ledger.pass(f.vases, Pass::Final).await.unwrap().is_none());

    let (status, body) = json(
        &review,
        post("/api/promote", Some(TOKEN), r#"{"ids":["vase-2"]}"#),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["count"], 1);
    assert_eq!(body["cost_micros"], price);
    tokio::time::timeout(Duration::from_secs(120), review.finals_finished())
        .await
        .expect("the final pass ends");

    let final_pass = f.ledger.pass(f.vases, Pass::Final).await.unwrap().unwrap();
    assert_eq!(
        final_pass.budget_micros, 2_000_000,
        "the default budget, set once"
    );
    assert_eq!(final_pass.spent_micros, price);
    let counts = f.ledger.counts(f.vases, Pass::Final).await.unwrap();
    assert_eq!((counts.total, counts.done), (1, 1));
    let photon_1: Vec<_> = f
        .sim
        .billing()
        .entries
        .into_iter()
        .filter(|e| e.model == "photon-1" && e.kind == "charge")
        .collect();
    assert_eq!(photon_1.len(), 1, "one final, paid once");
    assert!(f.dir.path().join("out/vases/report.html").exists());

    let (_, state) = json(&review, get("/api/state")).await;
    assert_eq!(state["running"], false);
    let message = state["message"].as_str().unwrap();
    assert!(message.starts_with("finals: 1 done"), "{message}");
    assert_eq!(state["final_left_micros"], 2_000_000 - price);
    let pair = &state["groups"][1]["tiles"][0];
    assert_eq!(pair["id"], "vase-2");
    assert_eq!(pair["final"]["state"], "done");
    let (status, _) = send(&review, get("/thumb/final/vase-2")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the final's thumbnail is served once it is done"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_onto_replicate_of_a_final_replicate_cannot_make_is_refused_with_nothing_sent() {
    let f = fixture().await;
    // The page promotes with `modify_image_ref` (its config above), which Replicate can't make.
    let replicate: Arc<dyn Provider> = Arc::new(
        darkroom_replicate::ReplicateProvider::new(darkroom_replicate::ClientConfig::new(
            f.sim.replicate_base_url(),
            darkroom_replicate::ApiToken::new("r8_test-token".into()),
        ))
        .unwrap(),
    );
    let review = state_on(&f, replicate);
    let billed = f.sim.billing().entries.len();
    let (status, body) = json(
        &review,
        post("/api/promote", Some(TOKEN), r#"{"ids":["vase-2"]}"#),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    tokio::time::timeout(Duration::from_secs(60), review.finals_finished())
        .await
        .expect("the final pass ends");

    assert_eq!(
        f.sim.billing().entries.len(),
        billed,
        "nothing was sent or billed"
    );
    let final_pass = f.ledger.pass(f.vases, Pass::Final).await.unwrap().unwrap();
    assert_eq!((final_pass.spent_micros, final_pass.reserved_micros), (0, 0));
    let counts = f.ledger.counts(f.vases, Pass::Final).await.unwrap();
    assert_eq!(
        (counts.total, counts.pending),
        (1, 1),
        "the final waits, unsent: {counts:?}"
    );
    let (_, state) = json(&review, get("/api/state")).await;
    let said = state.to_string();
    assert!(
        said.contains("replicate can't make") || said.contains("ask for what replicate can't make"),
        "the page says why: {said}"
    );
}
