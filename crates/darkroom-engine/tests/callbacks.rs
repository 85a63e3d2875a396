//! Callbacks against the simulator's own deliveries: each callback matched to its generation by
//! its token, a forged token refused, lost and duplicated callbacks, and far fewer status reads
//! than polling alone.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use darkroom_engine::callbacks::CallbackReceiver;
use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{run_pass, Outcome, RunSettings};
use darkroom_jobs::{Money, Pass};
use darkroom_ledger::Ledger;
use darkroom_luma::ClientConfig;
use darkroom_sim::{Faults, SimConfig, SimHandle};
use darkroom_testkit::sim::status_reads;

struct Run {
    outcome: Outcome,
    sim: SimHandle,
    ledger: Ledger,
    dir: tempfile::TempDir,
}

fn job(dir: &Path, rows: usize) -> std::path::PathBuf {
    darkroom_testkit::jobs::write_csv(dir, "chairs.csv", rows, |i| {
        format!("row-{i},A linen armchair number {i} by a window,1:1")
    })
}

/// Runs `rows` previews with or without callbacks against a fresh simulator with `faults`.
async fn run(rows: usize, faults: Faults, callbacks: bool) -> (Run, Option<CallbackReceiver>) {
    let sim = darkroom_testkit::sim::spawn(SimConfig {
        time_scale: 0.1,
        creates_per_minute: None,
        max_concurrent: Some(40),
        faults,
        seed: 3,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = darkroom_testkit::ledger::open_in(dir.path()).await;
    let client = darkroom_testkit::sim::client(&sim, Duration::from_secs(10));
    let mut s = RunSettings::new("chairs", Pass::Preview, dir.path().join("out"));
    s.creates_per_minute = None;
    s.latency_photon_flash_1 = Duration::from_millis(30);
    s.polls_per_second = 200;
    let receiver =
        callbacks.then(|| CallbackReceiver::bind(SocketAddr::from(([127, 0, 0, 1], 0)), None).unwrap());
    s.callbacks = receiver.clone();
    let file = job(dir.path(), rows);
    let budget = Money::parse_usd("5").unwrap();
    let job_id = darkroom_testkit::ledger::load_job(&ledger, "chairs", &file, Pass::Preview, budget).await;
    let tx = darkroom_testkit::events::discard();
    let outcome = run_pass(&ledger, &client, &s, job_id, tx, Shutdown::default())
        .await
        .unwrap();
    (
        Run {
            outcome,
            sim,
            ledger,
            dir,
        },
        receiver,
    )
}

async fn assert_paid_once(run: &Run, images: usize) {
    assert_eq!(run.outcome.counts.done, images as u64, "{:?}", run.outcome.counts);
    let billed = run.sim.billing().net_micros;
    assert_eq!(run.ledger.net_charges().await.unwrap().micros(), billed);
    assert_eq!(billed, 4_000 * images as i64);
    let on_disk = std::fs::read_dir(run.dir.path().join("out/chairs/preview"))
        .unwrap()
        .count();
    assert_eq!(on_disk, images);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_replace_most_status_reads_and_every_image_arrives() {
    let (polled, _) = run(120, Faults::default(), false).await;
    assert_paid_once(&polled, 120).await;
    let (called, receiver) = run(120, Faults::default(), true).await;
    assert_paid_once(&called, 120).await;
    let counts = receiver.unwrap().counts();
    // Two deliveries per generation (dreaming, then completed), each matched by its token.
    assert_eq!(counts.refused, 0);
    assert!(counts.received >= 2 * 120, "{counts:?}");
    assert!(counts.nudges >= 120, "{counts:?}");
    let (with, without) = (status_reads(&called.sim), status_reads(&polled.sim));
    // The benchmark program measures the ratio for 1,000 previews; here, a loaded machine only
    // has to show callbacks far ahead.
    assert!(
        with * 3 <= without,
        "status reads: {with} with callbacks, {without} polling alone"
    );
    assert!(with <= 2 * 120, "at most about one read per completion: {with}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_callbacks_are_covered_by_the_safety_poll_and_duplicates_change_nothing() {
    let faults = Faults {
        callback_lost: 0.3,
        callback_duplicated: 0.3,
        ..Faults::default()
    };
    let (run, receiver) = run(40, faults, true).await;
    assert_paid_once(&run, 40).await;
    let stats = run.sim.stats();
    assert!(stats.faults.get("callback_lost").copied().unwrap_or(0) > 0);
    assert!(stats.faults.get("callback_duplicated").copied().unwrap_or(0) > 0);
    assert_eq!(receiver.unwrap().counts().refused, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_callback_lost_the_run_still_completes_by_polling() {
    let faults = Faults {
        callback_lost: 1.0,
        ..Faults::default()
    };
    let (run, receiver) = run(10, faults, true).await;
    assert_paid_once(&run, 10).await;
    assert_eq!(receiver.unwrap().counts().received, 0);
}

#[tokio::test]
async fn a_callback_with_an_unknown_token_is_refused() {
    let receiver = CallbackReceiver::bind(SocketAddr::from(([127, 0, 0, 1], 0)), None).unwrap();
    let tracker = tokio_util::task::TaskTracker::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let client = darkroom_testkit::sim::build(ClientConfig {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        download_timeout: Duration::from_secs(1),
        ..darkroom_testkit::sim::client_config("http://127.0.0.1:9".into())
    });
    let poller =
        darkroom_engine::poller::Poller::spawn(client, 10, Duration::from_secs(5), &tracker, stop.clone());
    receiver.serve(poller, &tracker, stop.clone()).unwrap();
    let (_token, url) = receiver.new_token();
    let http = reqwest::Client::new();
    let body = serde_json::json!({"id": "x", "state": "completed"});
    let forged = format!("{}/{}", receiver.url(), "0123456789abcdef0123456789abcdef");
    assert_eq!(http.post(&forged).json(&body).send().await.unwrap().status(), 403);
    assert_eq!(
        http.post(receiver.url())
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(http.post(&url).json(&body).send().await.unwrap().status(), 200);
    // A prefix added by a proxy or tunnel doesn't matter: the token is the last segment.
    let prefixed = url.replace(receiver.url(), &format!("{}/hooks/darkroom", receiver.url()));
    assert_eq!(
        http.post(&prefixed).json(&body).send().await.unwrap().status(),
        200
    );
    assert_eq!(http.get(&url).send().await.unwrap().status(), 405);
    let counts = receiver.counts();
    assert_eq!((counts.refused, counts.received), (2, 2));
    stop.cancel();
    tracker.close();
    tracker.wait().await;
}
