//! Stuck generations on paused tokio time, against the real simulator and a real SQLite ledger: the
//! stuck limit counts from the submission the ledger recorded (a resumed run does not start the
//! clock again), and a failed read never takes a generation off the poller, so a run with
//! generations that never finish still ends within the stuck limit.
//!
//! The clock is driven by `darkroom_testkit::clock::drive_clock`: a task moves paused time forward at a fixed multiple
//! of real time, and the engine reads the ledger's times on a wall clock that moves with tokio's
//! (`WallClock::on_tokio_time`).

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::time::Duration;

use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{run_pass, Event, Outcome, RunSettings, StopReason, WallClock};
use darkroom_jobs::Money;
use darkroom_sim::{Faults, SimConfig};
use darkroom_testkit::clock::drive_clock;
use darkroom_testkit::Harness;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Virtual seconds per real second while a test's clock is driven.
const SPEED: u32 = 20;

/// The stuck limit of these tests.
const STUCK_AFTER: Duration = Duration::from_secs(120);

/// Every generation stays `dreaming` forever; reads fail at `get_5xx`.
async fn stuck_account(get_5xx: f64) -> Harness {
    let sim = SimConfig {
        faults: Faults {
            stuck: 1.0,
            get_5xx,
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    Harness::start_with_timeout(sim, Duration::from_secs(120)).await
}

/// One attempt per task (a stuck generation fails its task), the stuck limit above, the ledger's
/// times read on tokio's clock.
fn settings(h: &Harness, wall_clock: WallClock) -> RunSettings {
    let mut s = h.settings("stuck");
    s.max_attempts = 1;
    s.stuck_after = STUCK_AFTER;
    s.drain_timeout = Duration::from_secs(2);
    s.polls_per_second = 20;
    s.wall_clock = wall_clock;
    s
}

async fn load(h: &Harness, rows: usize, settings: &RunSettings) -> i64 {
    let mut text = String::from("id,prompt,aspect_ratio\n");
    for i in 0..rows {
        text.push_str(&format!("row-{i},A paper lantern number {i} in the rain,1:1\n"));
    }
    let file = h.dir.path().join("stuck.csv");
    std::fs::write(&file, text).unwrap();
    h.load(&file, settings, Money::from_micros(10_000_000)).await
}

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

/// The tasks that ended as given up on a stuck generation.
fn given_up_as_stuck(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| {
            matches!(e, Event::TaskFinished { state, reason: Some(reason), .. }
                if state == "failed" && reason.contains("was not finished"))
        })
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_resumed_run_gives_up_on_a_stuck_generation_when_an_unbroken_run_would() {
    let clock = drive_clock(SPEED);
    let h = stuck_account(0.0).await;
    let wall = WallClock::on_tokio_time();
    let s = settings(&h, wall);
    let job = load(&h, 3, &s).await;
    let submitted = Instant::now();

    // The first run is stopped 50 s in; its generations are left in flight for the next run.
    let (first, _) = run(&h, job, &s, stop_after(Duration::from_secs(50))).await;
    assert_eq!(first.stop, Some(StopReason::Interrupted));
    assert_eq!(first.counts.in_flight, 3, "{:?}", first.counts);
    // A few more minutes pass before the resume: they count toward the stuck limit too.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let resumed = Instant::now();
    let (second, events) = run(&h, job, &s, Shutdown::default()).await;
    let ended = Instant::now();
    clock.abort();

    assert_eq!(second.stop, None);
    assert_eq!(second.counts.failed, 3, "{:?}", second.counts);
    assert_eq!(given_up_as_stuck(&events), 3, "{events:?}");
    // Given up at the stuck limit counted from the submission (about 2 minutes), not 2 minutes
    // after the resume (which came about 80 s after it).
    let since_submission = ended - submitted;
    assert!(since_submission >= STUCK_AFTER, "{since_submission:?}");
    assert!(
        since_submission < STUCK_AFTER + Duration::from_secs(25),
        "gave up {since_submission:?} after submission"
    );
    assert!(ended - resumed < Duration::from_secs(70), "{:?}", ended - resumed);
    // Each task was created once: the resume polled, it did not send again.
    assert_eq!(h.sim.stats().creates_accepted, 3);
    assert_eq!(
        h.ledger.net_charges().await.unwrap().micros(),
        h.sim.billing().net_micros
    );
}

#[tokio::test(start_paused = true)]
async fn failed_reads_never_take_a_stuck_generation_off_the_poller_and_the_run_ends_at_the_stuck_limit() {
    let clock = drive_clock(SPEED);
    // Half of all reads fail: confirming reads at the stuck limit among them.
    let h = stuck_account(0.5).await;
    let s = settings(&h, WallClock::on_tokio_time());
    let job = load(&h, 8, &s).await;
    let start = Instant::now();
    let (outcome, events) = run(&h, job, &s, Shutdown::default()).await;
    let took = Instant::now() - start;
    clock.abort();

    let stats = h.sim.stats();
    assert!(stats.faults.get("get_5xx").copied().unwrap_or(0) > 0, "{stats:?}");
    assert_eq!(outcome.stop, None);
    assert_eq!(outcome.counts.failed, 8, "{:?}", outcome.counts);
    assert_eq!(given_up_as_stuck(&events), 8, "{events:?}");
    // A failed confirming read is tried again a poll interval later, not a whole stuck limit
    // later: with reads failing half the time, every task is given up well within a minute of
    // its limit.
    assert!(took >= STUCK_AFTER, "{took:?}");
    assert!(
        took < STUCK_AFTER + Duration::from_secs(60),
        "the run took {took:?}"
    );
    // The poller kept reading the generations all along (at most 5 s apart each, through a list
    // call or one by one): a generation dropped from polling would leave far fewer reads.
    let reads: u64 = stats
        .requests
        .iter()
        .filter(|(key, _)| key.starts_with("GET /generations"))
        .map(|(_, n)| n)
        .sum();
    assert!(reads >= 120 / 5, "{reads} status reads: {:?}", stats.requests);
}
