//! The engine end to end against the real simulator on a loopback port and a real SQLite ledger:
//! budgets, faults, resume, cache, and the bill reconciled to the micro-dollar.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::path::Path;
use std::time::Duration;

use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{run_pass, Event, Outcome, RunSettings, StopReason};
use darkroom_jobs::{Money, Pass};
use darkroom_sim::SimConfig;
use darkroom_testkit::{images_in, Harness};
use tokio::sync::mpsc;

/// A fast simulator: real limits off unless a test sets them, latency scaled down.
fn fast_sim() -> SimConfig {
    SimConfig {
        time_scale: 0.02,
        creates_per_minute: None,
        max_concurrent: Some(40),
        ..SimConfig::default()
    }
}

async fn harness(sim_config: SimConfig) -> Harness {
    Harness::start(sim_config).await
}

fn write_job(dir: &Path, name: &str, rows: usize, variants: u32) -> std::path::PathBuf {
    let mut text = String::from("id,prompt,aspect_ratio,variants\n");
    for i in 0..rows {
        text.push_str(&format!(
            "row-{i},A ceramic vase number {i} on a walnut table,1:1,{variants}\n"
        ));
    }
    let path = dir.join(format!("{name}.csv"));
    std::fs::write(&path, text).unwrap();
    path
}

fn settings(h: &Harness, job: &str) -> RunSettings {
    let mut s = h.settings(job);
    s.latency_photon_1 = Duration::from_millis(60);
    s.stuck_after = Duration::from_secs(5);
    // The simulator runs 50 times faster than the real API: so does the settlement window.
    s.settle_window = Duration::from_secs(2);
    s.drain_timeout = Duration::from_secs(10);
    s
}

/// Creates the job, sets its budget and loads the file: what `darkroom run` does before running.
async fn load_into(h: &Harness, file: &Path, settings: &RunSettings, budget: Money) -> i64 {
    h.load(file, settings, budget).await
}

async fn load_and_run(
    h: &Harness,
    file: &Path,
    settings: &RunSettings,
    budget: Money,
) -> (Outcome, Vec<Event>) {
    let job = h.load(file, settings, budget).await;
    h.run_collecting(job, settings).await
}

async fn assert_bill_matches(h: &Harness) {
    let billed = h.sim.billing().net_micros;
    assert_eq!(
        h.ledger.net_charges().await.unwrap().micros(),
        billed,
        "ledger charges equal the simulator's bill"
    );
}

#[tokio::test]
async fn a_clean_run_puts_every_image_on_disk_and_the_bill_matches() {
    let h = harness(fast_sim()).await;
    let file = write_job(h.dir.path(), "vases", 20, 2);
    let s = settings(&h, "vases");
    let (outcome, _) = load_and_run(&h, &file, &s, Money::parse_usd("10").unwrap()).await;
    assert_eq!(outcome.stop, None);
    assert_eq!(outcome.counts.done, 40);
    assert_eq!(outcome.spent, Money::from_micros(40 * 4_000));
    assert_eq!(images_in(&h.dir.path().join("out/vases/preview")), 40);
    assert!(h.dir.path().join("out/vases/preview/row-3-2.jpg").exists());
    assert_bill_matches(&h).await;
    let results = std::fs::read_to_string(h.dir.path().join("out/vases/results.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 40);
}

#[tokio::test]
async fn the_budget_ends_mid_batch_with_40_in_flight_and_is_never_exceeded() {
    let mut sim = fast_sim();
    sim.time_scale = 0.2; // long enough that 40 are in flight together
    let h = harness(sim).await;
    let file = write_job(h.dir.path(), "tight", 100, 1);
    let mut s = settings(&h, "tight");
    s.max_in_flight = 40;
    // 57.5 flash images' worth: 57 fit.
    let budget = Money::from_micros(4_000 * 57 + 2_000);
    let (outcome, events) = load_and_run(&h, &file, &s, budget).await;
    assert_eq!(outcome.stop, Some(StopReason::BudgetExhausted));
    assert!(outcome.spent <= budget);
    assert_eq!(outcome.counts.done, 57);
    assert_eq!(outcome.counts.skipped, 43);
    assert!(events.iter().any(|e| matches!(e, Event::BudgetWarning { .. })));
    assert_bill_matches(&h).await;
}

#[tokio::test]
async fn a_second_run_resumes_and_pays_for_nothing_already_done() {
    let h = harness(fast_sim()).await;
    let file = write_job(h.dir.path(), "again", 10, 1);
    let s = settings(&h, "again");
    let (first, _) = load_and_run(&h, &file, &s, Money::parse_usd("1").unwrap()).await;
    assert_eq!(first.counts.done, 10);
    let billed = h.sim.billing().net_micros;
    let (second, _) = load_and_run(&h, &file, &s, Money::parse_usd("1").unwrap()).await;
    assert_eq!(second.counts.done, 10);
    assert_eq!(h.sim.billing().net_micros, billed, "nothing new was bought");
}

#[tokio::test]
async fn the_cache_reuses_an_identical_task_from_another_job_at_no_cost() {
    let h = harness(fast_sim()).await;
    let first = write_job(h.dir.path(), "one", 3, 1);
    let (outcome, _) = load_and_run(&h, &first, &settings(&h, "one"), Money::parse_usd("1").unwrap()).await;
    assert_eq!(outcome.counts.done, 3);
    let second = write_job(h.dir.path(), "two", 3, 1);
    let (outcome, _) = load_and_run(&h, &second, &settings(&h, "two"), Money::parse_usd("1").unwrap()).await;
    assert_eq!((outcome.counts.done, outcome.counts.cached), (3, 3));
    assert_eq!(outcome.spent, Money::ZERO);
    assert_eq!(images_in(&h.dir.path().join("out/two/preview")), 3);
    // Each copy holds the picture its source was recorded with (its own task's metadata inside in
    // place of its source's), and results.jsonl records the copy as written.
    let results = std::fs::read_to_string(h.dir.path().join("out/two/results.jsonl")).unwrap();
    for line in results.lines() {
        let result: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = result["id"].as_str().unwrap();
        let copy = std::fs::read(h.dir.path().join(format!("out/two/preview/{id}.jpg"))).unwrap();
        let source = std::fs::read(h.dir.path().join(format!("out/one/preview/{id}.jpg"))).unwrap();
        let picture = |bytes: &[u8]| darkroom_engine::metadata::embed(bytes, None).unwrap();
        assert!(picture(&copy) == picture(&source), "{id} holds another picture");
        let names = |bytes: &[u8], job: &str| {
            let needle = format!("<darkroom:Job>{job}</darkroom:Job>");
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        };
        assert!(
            names(&copy, "two") && !names(&copy, "one"),
            "{id} carries its own job's fields"
        );
        assert_eq!(
            result["content_hash"],
            blake3::hash(&copy).to_hex().as_str(),
            "{id}"
        );
    }

    let mut no_cache = settings(&h, "three");
    no_cache.use_cache = false;
    let third = write_job(h.dir.path(), "three", 3, 1);
    let (outcome, _) = load_and_run(&h, &third, &no_cache, Money::parse_usd("1").unwrap()).await;
    assert_eq!((outcome.counts.done, outcome.counts.cached), (3, 0));
}

/// The tasks a run left in flight, with their open generations: what a failure message needs.
async fn unfinished(h: &Harness) -> String {
    let mut lines = Vec::new();
    for job in h.ledger.jobs().await.unwrap() {
        for task in h.ledger.unfinished_tasks(job.id, Pass::Preview).await.unwrap() {
            let generations: Vec<String> = h
                .ledger
                .open_generations(task.id)
                .await
                .unwrap()
                .iter()
                .map(|g| format!("{}:{}:{:?}", g.id, g.state, g.upstream_id))
                .collect();
            lines.push(format!(
                "{} {} [{}]",
                task.task_key,
                task.state,
                generations.join(", ")
            ));
        }
    }
    lines.join("; ")
}

/// Net charges equal exactly one image per done task: nothing was paid twice, nothing lost.
async fn assert_paid_once_per_image(h: &Harness, outcome: &Outcome, price: i64) {
    assert_bill_matches(h).await;
    assert_eq!(
        h.sim.billing().net_micros,
        i64::try_from(outcome.counts.done - outcome.counts.cached).unwrap() * price
    );
}

async fn run_with_faults(faults: darkroom_sim::Faults, rows: usize) -> (Harness, Outcome) {
    let mut sim = fast_sim();
    sim.faults = faults;
    sim.seed = 7;
    let h = harness(sim).await;
    let file = write_job(h.dir.path(), "faulty", rows, 1);
    let mut s = settings(&h, "faulty");
    s.max_attempts = 6;
    s.breaker_threshold = 1000;
    let (outcome, _) = load_and_run(&h, &file, &s, Money::parse_usd("50").unwrap()).await;
    (h, outcome)
}

#[tokio::test]
async fn creates_answered_500_are_reconciled_and_retried_without_paying_twice() {
    let faults = darkroom_sim::Faults {
        create_5xx: 0.2,
        ..Default::default()
    };
    let (h, outcome) = run_with_faults(faults, 60).await;
    assert_eq!(outcome.counts.done, 60, "{:?}", outcome.counts);
    assert!(h.sim.stats().faults.get("create_5xx").copied().unwrap_or(0) > 0);
    assert_paid_once_per_image(&h, &outcome, 4_000).await;
}

#[tokio::test]
async fn creates_accepted_then_dropped_are_adopted_not_paid_twice() {
    let faults = darkroom_sim::Faults {
        create_dropped: 0.2,
        ..Default::default()
    };
    let (h, outcome) = run_with_faults(faults, 60).await;
    assert_eq!(outcome.counts.done, 60, "{:?}", outcome.counts);
    assert!(h.sim.stats().faults.get("create_dropped").copied().unwrap_or(0) > 0);
    assert_paid_once_per_image(&h, &outcome, 4_000).await;
    assert_eq!(images_in(&h.dir.path().join("out/faulty/preview")), 60);
}

#[tokio::test]
async fn failed_generations_are_refunded_and_retried_and_moderated_ones_blocked() {
    let faults = darkroom_sim::Faults {
        generation_failed: 0.2,
        moderation: 0.1,
        ..Default::default()
    };
    let (h, outcome) = run_with_faults(faults, 60).await;
    let blocked = h.sim.stats().faults.get("moderation").copied().unwrap_or(0);
    assert!(blocked > 0);
    assert_eq!(
        outcome.counts.blocked, blocked,
        "every moderated generation blocks its task"
    );
    assert_eq!(
        outcome.counts.done + outcome.counts.blocked,
        60,
        "{:?}",
        outcome.counts
    );
    assert_paid_once_per_image(&h, &outcome, 4_000).await;
    let errors = std::fs::read_to_string(h.dir.path().join("out/faulty/errors.jsonl")).unwrap();
    assert_eq!(
        errors.lines().filter(|l| l.contains("\"blocked\"")).count() as u64,
        blocked
    );
}

#[tokio::test]
async fn truncated_and_failed_downloads_are_downloaded_again() {
    let faults = darkroom_sim::Faults {
        download_truncated: 0.3,
        download_failed: 0.1,
        get_5xx: 0.2,
        ..Default::default()
    };
    let (h, outcome) = run_with_faults(faults, 40).await;
    assert_eq!(
        outcome.counts.done,
        40,
        "{:?}\nleft unfinished: {}",
        outcome.counts,
        unfinished(&h).await
    );
    assert!(
        h.sim
            .stats()
            .faults
            .get("download_truncated")
            .copied()
            .unwrap_or(0)
            > 0
    );
    assert_paid_once_per_image(&h, &outcome, 4_000).await;
}

#[tokio::test]
async fn a_stuck_generation_is_abandoned_and_the_task_still_completes() {
    let mut sim = fast_sim();
    sim.faults = darkroom_sim::Faults {
        stuck: 0.15,
        ..Default::default()
    };
    sim.seed = 11;
    let h = harness(sim).await;
    let file = write_job(h.dir.path(), "stuck", 30, 1);
    let mut s = settings(&h, "stuck");
    s.stuck_after = Duration::from_millis(800);
    s.max_attempts = 6;
    let (outcome, _) = load_and_run(&h, &file, &s, Money::parse_usd("5").unwrap()).await;
    assert_eq!(outcome.counts.done, 30, "{:?}", outcome.counts);
    let stuck = h.sim.stats().faults.get("stuck").copied().unwrap_or(0);
    assert!(stuck > 0);
    // The upstream keeps the charge of a stuck generation; the ledger records it too.
    assert_bill_matches(&h).await;
    assert_eq!(
        h.sim.billing().net_micros,
        (30 + i64::try_from(stuck).unwrap()) * 4_000
    );
}

#[tokio::test]
async fn a_generation_abandoned_as_stuck_that_fails_later_is_refunded_in_the_ledger_too() {
    let mut sim = fast_sim();
    // Every generation fails, after 0.1 to 0.5 s: longer than this run waits before giving up.
    sim.time_scale = 1.0;
    sim.faults = darkroom_sim::Faults {
        generation_failed: 1.0,
        ..Default::default()
    };
    let h = harness(sim).await;
    let file = write_job(h.dir.path(), "late", 5, 1);
    let mut s = settings(&h, "late");
    s.stuck_after = Duration::from_millis(30);
    s.max_attempts = 2;
    let job = load_into(&h, &file, &s, Money::parse_usd("1").unwrap()).await;
    let (tx, mut rx) = mpsc::channel(10_000);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let outcome = run_pass(&h.ledger, &h.client, &s, job, tx, Shutdown::default())
        .await
        .unwrap();
    assert_eq!(outcome.counts.failed, 5, "{:?}", outcome.counts);
    // Each attempt was abandoned while still dreaming; by now the upstream has failed and refunded
    // every one of them.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(h.sim.billing().net_micros, 0);
    // The end of the run settled those that had ended by then; this settles the rest.
    darkroom_engine::reconcile::settle_abandoned(&h.ledger, &h.client, job, Pass::Preview)
        .await
        .unwrap();
    assert_bill_matches(&h).await;
    let pass = h.ledger.pass(job, Pass::Preview).await.unwrap().unwrap();
    assert_eq!(pass.spent_micros, 0, "the pass's spend is refunded too");
    // Settled generations are not read again.
    let again = darkroom_engine::reconcile::settle_abandoned(&h.ledger, &h.client, job, Pass::Preview)
        .await
        .unwrap();
    assert_eq!(again, 0);
}

#[tokio::test]
async fn a_storm_of_429s_slows_the_run_down_but_fails_nothing() {
    let faults = darkroom_sim::Faults {
        rate_limit_storm: 0.05,
        ..Default::default()
    };
    let (h, outcome) = run_with_faults(faults, 40).await;
    assert_eq!(outcome.counts.done, 40, "{:?}", outcome.counts);
    assert!(h.sim.stats().rate_limited > 0);
    assert_paid_once_per_image(&h, &outcome, 4_000).await;
}

#[tokio::test]
async fn the_hostile_profile_completes_every_completable_task_and_the_bill_reconciles() {
    let mut faults = darkroom_sim::Faults::profile("hostile").unwrap();
    faults.stuck = 0.0; // covered on its own above; here every charge must map to an image
    let (h, outcome) = run_with_faults(faults, 80).await;
    assert_eq!(
        outcome.counts.done + outcome.counts.blocked,
        80,
        "{:?}\nleft unfinished: {}",
        outcome.counts,
        unfinished(&h).await
    );
    assert_paid_once_per_image(&h, &outcome, 4_000).await;
}

#[tokio::test]
async fn a_run_stopped_mid_way_resumes_and_pays_once_per_image() {
    let mut sim = fast_sim();
    sim.time_scale = 0.2;
    let h = harness(sim).await;
    let file = write_job(h.dir.path(), "stop", 60, 1);
    let mut s = settings(&h, "stop");
    // Few in flight, so the stop (after 10 images) lands long before all 60 are dispatched.
    s.max_in_flight = 8;
    let job = load_into(&h, &file, &s, Money::parse_usd("1").unwrap()).await;
    let shutdown = Shutdown::default();
    let (tx, mut rx) = mpsc::channel(10_000);
    let stopper = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut finished = 0;
            while let Some(event) = rx.recv().await {
                if matches!(event, Event::TaskFinished { .. }) {
                    finished += 1;
                    if finished == 10 {
                        shutdown.stop.cancel();
                    }
                }
            }
        })
    };
    let first = run_pass(&h.ledger, &h.client, &s, job, tx, shutdown)
        .await
        .unwrap();
    stopper.await.unwrap();
    assert_eq!(first.stop, Some(StopReason::Interrupted));
    assert!(
        first.counts.done >= 10 && first.counts.done < 60,
        "{:?}",
        first.counts
    );
    assert_eq!(first.counts.in_flight, 0, "in-flight work was let finish");

    let (second, _) = load_and_run(&h, &file, &s, Money::parse_usd("1").unwrap()).await;
    assert_eq!(second.counts.done, 60);
    assert_paid_once_per_image(&h, &second, 4_000).await;
}

#[tokio::test]
async fn a_task_left_in_flight_with_its_generation_abandoned_is_made_on_the_next_run() {
    // A run stopped between abandoning a generation and putting its task back leaves the task
    // "submitted" with nothing open upstream: the next run must still make it.
    let h = harness(fast_sim()).await;
    let file = write_job(h.dir.path(), "gap", 1, 1);
    let s = settings(&h, "gap");
    let job = load_into(&h, &file, &s, Money::parse_usd("1").unwrap()).await;
    let task = h
        .ledger
        .pending_tasks(job, Pass::Preview, 0, 1)
        .await
        .unwrap()
        .remove(0);
    assert!(matches!(
        h.ledger.reserve(task.id).await.unwrap(),
        darkroom_ledger::Reservation::Reserved
    ));
    let generation = h.ledger.record_intent(task.id, "fp", "luma").await.unwrap();
    let request: darkroom_provider::CreateRequest = serde_json::from_str(&task.request_json).unwrap();
    let created = h.client.create(&request).await.unwrap();
    h.ledger.record_submitted(generation, &created.id).await.unwrap();
    h.ledger.abandon_generation(generation).await.unwrap();

    let (tx, mut rx) = mpsc::channel(100);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let outcome = run_pass(&h.ledger, &h.client, &s, job, tx, Shutdown::default())
        .await
        .unwrap();
    assert_eq!(outcome.counts.done, 1, "{:?}", outcome.counts);
    assert_eq!(outcome.counts.in_flight, 0);
    // Two generations were paid for (the abandoned one stays paid), and the ledger says so.
    assert_bill_matches(&h).await;
    assert_eq!(h.sim.billing().net_micros, 2 * 4_000);
}

#[tokio::test]
async fn a_run_dropped_at_any_instant_resumes_without_paying_twice() {
    let mut sim = fast_sim();
    sim.time_scale = 0.2;
    sim.faults = darkroom_sim::Faults {
        create_dropped: 0.1,
        ..Default::default()
    };
    let h = harness(sim).await;
    let file = write_job(h.dir.path(), "crash", 60, 1);
    let s = settings(&h, "crash");
    let job = load_into(&h, &file, &s, Money::parse_usd("1").unwrap()).await;
    // Three runs cut off mid-flight, as a kill would: the future is dropped wherever it is.
    for cut in [300u64, 500, 700] {
        let (tx, mut rx) = mpsc::channel(10_000);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let run = run_pass(&h.ledger, &h.client, &s, job, tx, Shutdown::default());
        let _ = tokio::time::timeout(Duration::from_millis(cut), run).await;
    }
    let (outcome, _) = load_and_run(&h, &file, &s, Money::parse_usd("1").unwrap()).await;
    assert_eq!(outcome.counts.done, 60, "{:?}", outcome.counts);
    assert_paid_once_per_image(&h, &outcome, 4_000).await;
}

#[tokio::test]
async fn an_unwritable_image_stops_the_run_loses_nothing_paid_and_the_next_run_downloads_it_again() {
    let h = harness(fast_sim()).await;
    let file = write_job(h.dir.path(), "disk", 12, 1);
    let mut s = settings(&h, "disk");
    s.max_in_flight = 1; // one at a time, so the failure stops the run before most tasks start
                         // A directory where row-3's image must go: the write fails, as on a full or read-only disk.
    let blocker = h.dir.path().join("out/disk/preview/row-3.jpg");
    std::fs::create_dir_all(blocker.join("x")).unwrap();
    let (first, _) = load_and_run(&h, &file, &s, Money::parse_usd("1").unwrap()).await;
    match &first.stop {
        Some(StopReason::Failed(reason)) => assert!(reason.contains("row-3.jpg"), "{reason}"),
        other => panic!("expected the run to stop on the write failure, got {other:?}"),
    }
    assert!(first.counts.done < 12);
    assert_eq!(
        first.counts.in_flight, 1,
        "the paid task waits, downloading, for the next run: {:?}",
        first.counts
    );
    let billed = h.sim.billing().net_micros;

    std::fs::remove_dir_all(&blocker).unwrap();
    let (second, _) = load_and_run(&h, &file, &s, Money::parse_usd("1").unwrap()).await;
    assert_eq!(second.stop, None);
    assert_eq!(second.counts.done, 12);
    assert!(h.dir.path().join("out/disk/preview/row-3.jpg").is_file());
    assert_eq!(
        h.sim.billing().net_micros,
        billed + i64::try_from(12 - first.counts.done - 1).unwrap() * 4_000,
        "row-3 was not bought again"
    );
    assert_paid_once_per_image(&h, &second, 4_000).await;
}

#[tokio::test]
async fn at_the_deadline_no_new_create_is_sent_in_flight_work_finishes_and_the_rest_is_skipped() {
    let h = harness(SimConfig {
        time_scale: 1.0,
        ..fast_sim()
    })
    .await;
    let file = write_job(h.dir.path(), "night", 40, 1);
    let mut s = settings(&h, "night");
    s.max_in_flight = 2;
    s.deadline_ms = Some(darkroom_ledger::now_ms() + 1_200);
    let (outcome, _) = load_and_run(&h, &file, &s, Money::parse_usd("1").unwrap()).await;
    assert_eq!(outcome.stop, Some(StopReason::Deadline));
    assert!(
        outcome.counts.done > 0 && outcome.counts.skipped > 0,
        "{:?}",
        outcome.counts
    );
    assert_eq!(
        outcome.counts.done + outcome.counts.skipped,
        40,
        "{:?}",
        outcome.counts
    );
    assert_paid_once_per_image(&h, &outcome, 4_000).await;

    // Resumed without a deadline, it finishes.
    s.deadline_ms = None;
    let (outcome, _) = load_and_run(&h, &file, &s, Money::parse_usd("1").unwrap()).await;
    assert_eq!((outcome.stop, outcome.counts.done), (None, 40));
}
