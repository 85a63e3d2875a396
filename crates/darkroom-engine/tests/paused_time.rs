//! Back-off, deadlines and drain end to end on paused tokio time: the real simulator on a loopback
//! port (its clock is tokio's, so it pauses too), a real SQLite ledger, and `run_pass`.
//!
//! Paused time normally leaps to the next timer whenever the runtime is idle, and the ledger's
//! SQLite connection works on a thread of its own: a leap while it works would fire the pool's
//! timeouts. So each test drives the clock itself (`drive_clock`): a task that never lets the
//! runtime idle and moves time forward at a fixed multiple of real time (`SPEED`). Minutes of the run pass in
//! a few seconds, and a slow SQLite write is at most a few virtual seconds. Assertions are on
//! tokio's clock and on what the simulator and the ledger saw, never on real time; since real work
//! also moves the clock, bounds from above are generous and only where they are the point.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::time::Duration;

use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{run_pass, Event, Outcome, RunSettings, StopReason};
use darkroom_jobs::{Money, Pass};
use darkroom_sim::{RateLimitOnce, RefuseCreates, SimConfig};
use darkroom_testkit::clock::drive_clock;
use darkroom_testkit::Harness;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Virtual seconds per real second while a test's clock is driven: slow enough that a request's
/// real round trip (a few milliseconds in a debug build) stays well under the spacing of creates
/// (0.76 s at 80 a minute) and far under the client's timeouts.
const SPEED: u32 = 20;

/// The client's request timeout: virtual, so generous (six real seconds at `SPEED`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The account at its real rate (80 creates a minute, 40 at once) and real latencies: on paused
/// time nothing needs to be scaled down.
fn real_account() -> SimConfig {
    SimConfig {
        creates_per_minute: Some(80),
        max_concurrent: Some(40),
        ..SimConfig::default()
    }
}

/// Strictly spaced, as the timings below assume (a learning burst is `limits::tests`' subject).
fn settings(h: &Harness) -> RunSettings {
    let mut s = RunSettings::new("paused", Pass::Preview, h.dir.path().join("out"));
    s.creates_per_minute = Some(80);
    s.pacing = darkroom_engine::limits::Pacing::Strict;
    s
}

/// Loads `rows` rows (photon-flash-1 previews) with a budget that covers them all.
async fn load(h: &Harness, rows: usize, settings: &RunSettings) -> i64 {
    let mut text = String::from("id,prompt,aspect_ratio\n");
    for i in 0..rows {
        text.push_str(&format!(
            "row-{i},A glass teapot number {i} on a linen cloth,1:1\n"
        ));
    }
    let file = h.dir.path().join("paused.csv");
    std::fs::write(&file, text).unwrap();
    h.load(&file, settings, Money::from_micros(10_000_000)).await
}

/// Runs the pass with `shutdown`, collecting its events.
async fn run(h: &Harness, job: i64, settings: &RunSettings, shutdown: Shutdown) -> (Outcome, Vec<Event>) {
    let (tx, mut rx) = mpsc::channel(100_000);
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        events
    });
    let outcome = run_pass(&h.ledger, &h.client, settings, job, tx, shutdown)
        .await
        .unwrap();
    (outcome, collector.await.unwrap())
}

async fn start(sim: SimConfig) -> Harness {
    Harness::start_with_timeout(sim, REQUEST_TIMEOUT).await
}

fn creates_sent(h: &Harness) -> u64 {
    h.sim
        .stats()
        .requests
        .iter()
        .filter(|(key, _)| key.starts_with("POST /generations/image"))
        .map(|(_, n)| n)
        .sum()
}

fn rate_limited_events(events: &[Event]) -> Vec<(Option<u64>, u64, u32)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::RateLimited {
                retry_after_ms,
                paused_for_ms,
                answers,
                ..
            } => Some((*retry_after_ms, *paused_for_ms, *answers)),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_of_a_minute_holds_every_create_for_that_minute_and_the_run_then_finishes() {
    let clock = drive_clock(SPEED);
    // 10 creates a minute: 6 s between creates, so no create is still on its way when another is
    // answered 429, however slow the machine (the upstream counts only what arrives in a pause).
    let h = start(SimConfig {
        creates_per_minute: Some(10),
        rate_limit_once: Some(RateLimitOnce {
            after_creates: 3,
            retry_after: Duration::from_secs(60),
            as_http_date: false,
        }),
        ..real_account()
    })
    .await;
    let mut s = settings(&h);
    s.creates_per_minute = Some(10);
    let job = load(&h, 8, &s).await;
    let start = Instant::now();
    let (outcome, events) = run(&h, job, &s, Shutdown::default()).await;
    let took = Instant::now() - start;
    clock.abort();

    let stats = h.sim.stats();
    assert_eq!(stats.creates_inside_pause, 0, "{stats:?}");
    assert_eq!(stats.rate_limited, 1, "{stats:?}");
    assert_eq!(outcome.counts.done, 8, "{:?}", outcome.counts);
    assert_eq!(outcome.stop, None);
    // Eight creates at 10 a minute take about 42 s; the pause adds its whole minute.
    assert!(took >= Duration::from_secs(42 + 60), "{took:?}");
    assert!(took < Duration::from_secs(240), "{took:?}");
    let pauses = rate_limited_events(&events);
    assert_eq!(pauses.len(), 1, "{pauses:?}");
    assert_eq!(pauses[0].0, Some(60_000));
    assert!(pauses[0].1 >= 59_000, "{pauses:?}");
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_of_an_hour_pauses_two_minutes_at_a_time_until_give_up_after_ends_the_run() {
    let clock = drive_clock(SPEED * 5);
    let h = start(SimConfig {
        refuse_creates: Some(RefuseCreates::rate_limited(Duration::from_secs(3600))),
        ..real_account()
    })
    .await;
    let mut s = settings(&h);
    s.give_up_after = Duration::from_secs(600);
    let job = load(&h, 5, &s).await;
    let start = Instant::now();
    let (outcome, events) = run(&h, job, &s, Shutdown::default()).await;
    let took = Instant::now() - start;
    clock.abort();

    match &outcome.stop {
        Some(StopReason::Refused(reason)) => {
            assert!(reason.contains("with Retry-After 1h"), "{reason}");
            assert!(reason.contains("give_up_after = 10m"), "{reason}");
        }
        other => panic!("expected giving up, got {other:?}"),
    }
    // Each pause is clamped to two minutes, never the hour asked for; the tenth minute of 429s
    // ends the run, not the first hour.
    let pauses = rate_limited_events(&events);
    assert!(pauses.iter().all(|p| p.1 <= 120_000), "{pauses:?}");
    assert!(pauses.iter().any(|p| p.1 >= 119_000), "{pauses:?}");
    assert!(
        (4..=8).contains(&pauses.len()),
        "a 429 every two minutes for ten: {pauses:?}"
    );
    assert!(took >= Duration::from_secs(600), "{took:?}");
    assert!(took < Duration::from_secs(800), "{took:?}");
    // Nothing failed, nothing paid: every task waits for a later run.
    assert_eq!(outcome.counts.pending, 5, "{:?}", outcome.counts);
    assert_eq!(outcome.spent, Money::ZERO);
    assert_eq!(h.sim.billing().charged_micros, 0);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_stops_dispatch_and_ends_every_task_not_yet_sent_skipped() {
    let clock = drive_clock(SPEED);
    let h = start(real_account()).await;
    let mut s = settings(&h);
    // 200 creates at 80 a minute would take two and a half minutes; the deadline is in one.
    s.deadline_ms = Some(darkroom_ledger::now_ms() + 60_000);
    let job = load(&h, 200, &s).await;
    let (outcome, events) = run(&h, job, &s, Shutdown::default()).await;
    clock.abort();

    assert_eq!(outcome.stop, Some(StopReason::Deadline));
    let counts = &outcome.counts;
    assert!(counts.skipped > 0, "{counts:?}");
    assert!(counts.done > 0, "{counts:?}");
    assert_eq!(counts.done + counts.skipped, 200, "{counts:?}");
    // Every create sent was made into an image: none went out after the deadline to be dropped.
    assert_eq!(creates_sent(&h), counts.done, "{counts:?}");
    // At most a minute's worth of creates (80, and the first at once).
    assert!(counts.done <= 81, "{counts:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Stopping { reason } if reason.contains("deadline"))),
        "a Stopping event"
    );
    // errors.jsonl names each skipped task and why.
    let errors = std::fs::read_to_string(&outcome.outputs.as_ref().unwrap().errors).unwrap();
    let lines: Vec<serde_json::Value> = errors.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len() as u64, counts.skipped);
    assert!(
        lines
            .iter()
            .all(|l| l["status"] == "skipped" && l["reason"] == "deadline"),
        "{errors}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deadline_already_past_sends_nothing_and_skips_every_task() {
    let clock = drive_clock(SPEED);
    let h = start(real_account()).await;
    let mut s = settings(&h);
    s.deadline_ms = Some(darkroom_ledger::now_ms() - 1);
    let job = load(&h, 10, &s).await;
    let (outcome, _) = run(&h, job, &s, Shutdown::default()).await;
    clock.abort();

    assert_eq!(outcome.stop, Some(StopReason::Deadline));
    assert_eq!(outcome.counts.skipped, 10, "{:?}", outcome.counts);
    assert_eq!(creates_sent(&h), 0);
    assert_eq!(outcome.spent, Money::ZERO);
}

/// Photon-1 generations take 20 to 30 s here; the run is stopped (first Ctrl-C) 5 s in, when the
/// first creates are in flight.
fn slow_account() -> SimConfig {
    SimConfig {
        latency_photon_1: (20.0, 30.0),
        latency_photon_flash_1: (20.0, 30.0),
        ..real_account()
    }
}

/// Stops the run `after` from now, as a first Ctrl-C would.
fn stop_after(after: Duration) -> Shutdown {
    let shutdown = Shutdown::default();
    let stop = shutdown.stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        stop.cancel();
    });
    shutdown
}

#[tokio::test(start_paused = true)]
async fn after_a_stop_in_flight_work_drains_within_the_drain_timeout_and_nothing_new_is_sent() {
    let clock = drive_clock(SPEED);
    let h = start(slow_account()).await;
    let mut s = settings(&h);
    s.latency_photon_flash_1 = Duration::from_secs(20);
    s.drain_timeout = Duration::from_secs(60);
    let job = load(&h, 40, &s).await;
    let start = Instant::now();
    let (outcome, _) = run(&h, job, &s, stop_after(Duration::from_secs(5))).await;
    let took = Instant::now() - start;
    clock.abort();

    assert_eq!(outcome.stop, Some(StopReason::Interrupted));
    let counts = &outcome.counts;
    let sent = creates_sent(&h);
    // Creates went out for 5 s at 80 a minute (about 7); each finished and was downloaded.
    assert!((2..=10).contains(&sent), "{sent} creates");
    assert_eq!(counts.done, sent, "{counts:?}");
    assert_eq!(counts.in_flight, 0, "{counts:?}");
    assert_eq!(counts.pending, 40 - sent, "{counts:?}");
    // The drain waited for generations of up to 30 s, not for the whole drain timeout.
    assert!(took >= Duration::from_secs(20), "{took:?}");
    assert!(took < Duration::from_secs(5 + 60), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_drain_that_outlasts_its_timeout_stops_and_the_next_run_finishes_without_sending_again() {
    let clock = drive_clock(SPEED);
    let h = start(slow_account()).await;
    let mut s = settings(&h);
    s.latency_photon_flash_1 = Duration::from_secs(20);
    s.drain_timeout = Duration::from_secs(3);
    let job = load(&h, 20, &s).await;
    let start = Instant::now();
    let (outcome, _) = run(&h, job, &s, stop_after(Duration::from_secs(5))).await;
    let took = Instant::now() - start;

    assert_eq!(outcome.stop, Some(StopReason::Interrupted));
    let sent = creates_sent(&h);
    assert!(sent >= 2, "{sent} creates");
    // Nothing could finish in 3 s: the run stopped at the drain timeout (plus the moment aborted
    // tasks get to notice), leaving what it sent in flight for the next run.
    assert_eq!(outcome.counts.done, 0, "{:?}", outcome.counts);
    assert_eq!(outcome.counts.in_flight, sent, "{:?}", outcome.counts);
    assert!(took >= Duration::from_secs(5 + 3), "{took:?}");
    assert!(took < Duration::from_secs(5 + 3 + 20), "{took:?}");

    // The next run resumes what is in flight (no create sent again) and makes the rest.
    let (outcome, _) = run(&h, job, &s, Shutdown::default()).await;
    clock.abort();
    assert_eq!(outcome.stop, None);
    assert_eq!(outcome.counts.done, 20, "{:?}", outcome.counts);
    assert_eq!(creates_sent(&h), 20, "each task created once");
    assert_eq!(
        h.ledger.net_charges().await.unwrap().micros(),
        h.sim.billing().net_micros
    );
}
