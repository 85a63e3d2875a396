//! The upstream may commit at any time after we stop waiting, and a terminal answer that cannot be
//! used is a failed attempt at once: the engine against the real simulator on a loopback port
//! (late-committing creates, generations completed without an image and their siblings) and a real
//! SQLite ledger, with the bill reconciled to the micro-dollar.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::path::{Path, PathBuf};
use std::time::Duration;

use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{run_pass, Outcome, RunSettings};
use darkroom_jobs::{Money, Pass};
use darkroom_sim::{Faults, SimConfig};
use darkroom_testkit::{images_in, Harness};
use tokio::sync::mpsc;

/// A simulator 50 times faster than the real API, with `faults`, creates committed late after
/// `late_commit_delay`.
fn sim_config(faults: Faults, late_commit_delay: Duration) -> SimConfig {
    SimConfig {
        time_scale: 0.02,
        creates_per_minute: None,
        faults,
        late_commit_delay,
        ..SimConfig::default()
    }
}

/// [`sim_config`]'s simulator, and a client that gives up on a request after `timeout`.
async fn harness(faults: Faults, late_commit_delay: Duration, timeout: Duration) -> Harness {
    Harness::start_with_timeout(sim_config(faults, late_commit_delay), timeout).await
}

/// [`harness`] with only the first create committed late, and a client that gives up after
/// 200 ms.
async fn harness_late_once(faults: Faults, late_commit_delay: Duration) -> Harness {
    let sim = SimConfig {
        late_commit_limit: Some(1),
        ..sim_config(faults, late_commit_delay)
    };
    Harness::start_with_timeout(sim, Duration::from_millis(200)).await
}

fn settings(h: &Harness, job: &str) -> RunSettings {
    let mut s = h.settings(job);
    // Hours: a test that finishes at all shows nothing waited for a stuck generation.
    s.stuck_after = Duration::from_secs(4 * 3600);
    s.drain_timeout = Duration::from_secs(10);
    s
}

fn write_job(dir: &Path, name: &str, rows: usize) -> PathBuf {
    darkroom_testkit::jobs::write_csv(dir, &format!("{name}.csv"), rows, |i| {
        format!("row-{i},A glass teapot number {i} on a linen cloth,1:1")
    })
}

async fn load_job(h: &Harness, file: &Path, s: &RunSettings) -> i64 {
    h.load(file, s, Money::parse_usd("5").unwrap()).await
}

/// Runs the pass to its end; a run that does not end within a minute is a failure, not a hang.
async fn run(h: &Harness, job: i64, s: &RunSettings) -> Outcome {
    let (tx, mut rx) = mpsc::channel(10_000);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        run_pass(&h.ledger, &h.client, s, job, tx, Shutdown::default()),
    )
    .await
    .expect("the run ended")
    .unwrap();
    drain.await.unwrap();
    outcome
}

async fn assert_ledger_equals_bill(h: &Harness) {
    assert_eq!(
        h.ledger.net_charges().await.unwrap().micros(),
        h.sim.billing().net_micros,
        "the ledger's net charges equal the simulator's bill"
    );
    // Every generation the upstream billed is in the ledger.
    let known: Vec<String> = h
        .ledger
        .upstream_generations()
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    for entry in h.sim.billing().entries {
        assert!(
            known.contains(&entry.generation_id),
            "billed generation {} is in the ledger",
            entry.generation_id
        );
    }
}

fn charges(h: &Harness) -> usize {
    h.sim
        .billing()
        .entries
        .iter()
        .filter(|e| e.kind == "charge")
        .count()
}

#[tokio::test]
async fn a_create_the_upstream_commits_after_the_client_timed_out_is_adopted_and_paid_once() {
    let faults = Faults {
        create_late: 1.0,
        ..Faults::default()
    };
    // The create's answer would come after 1.2 s; the client waits 300 ms.
    let h = harness(faults, Duration::from_millis(1200), Duration::from_millis(300)).await;
    let file = write_job(h.dir.path(), "late", 1);
    let mut s = settings(&h, "late");
    s.settle_window = Duration::from_secs(6);
    let job = load_job(&h, &file, &s).await;
    let outcome = run(&h, job, &s).await;
    assert_eq!(outcome.counts.done, 1, "{outcome:?}");
    assert_eq!(h.sim.stats().faults.get("create_late"), Some(&1));
    assert_eq!(charges(&h), 1, "exactly one generation was billed");
    assert_eq!(images_in(&h.dir.path().join("out/late/preview")), 1);
    assert_ledger_equals_bill(&h).await;
    let audit = outcome.audit.unwrap();
    assert_eq!(
        (audit.record.adopted, audit.record.extra),
        (0, 0),
        "the window found it; the audit had nothing to add"
    );
}

#[tokio::test]
async fn a_late_commit_that_lands_after_the_window_closed_is_recorded_by_the_audit_as_an_extra_charge() {
    let faults = Faults {
        create_late: 1.0,
        ..Faults::default()
    };
    // Only the first create is late: the re-send is answered at once.
    let h = harness_late_once(faults, Duration::from_millis(1500)).await;
    let file = write_job(h.dir.path(), "later", 1);
    let mut s = settings(&h, "later");
    // The window closes before the commit lands, so the task is sent again.
    s.settle_window = Duration::from_millis(400);
    let job = load_job(&h, &file, &s).await;
    let first = run(&h, job, &s).await;
    assert_eq!(first.counts.done, 1);
    // If the run ended before the late commit landed, the next run's audit finds it.
    let mut audits = vec![first.audit.unwrap()];
    if audits[0].record.extra == 0 {
        tokio::time::sleep(Duration::from_millis(1600)).await;
        audits.push(run(&h, job, &s).await.audit.unwrap());
    }
    let extra: i64 = audits.iter().map(|a| a.record.extra).sum();
    let extra_micros: i64 = audits.iter().map(|a| a.record.extra_micros).sum();
    assert_eq!(charges(&h), 2, "the upstream billed both creates");
    assert_eq!(
        (extra, extra_micros),
        (1, 4_000),
        "the late one is an extra charge on its task"
    );
    assert_eq!(
        images_in(&h.dir.path().join("out/later/preview")),
        1,
        "one kept image"
    );
    assert_ledger_equals_bill(&h).await;
    let pass = h.ledger.pass(job, Pass::Preview).await.unwrap().unwrap();
    assert_eq!(
        pass.spent(),
        Money::from_micros(8_000),
        "the pass's spend holds both charges"
    );
}

#[tokio::test]
async fn the_end_of_run_audit_adopts_a_late_generation_for_a_task_that_still_needs_an_image() {
    // Real-time latencies of a second, and only the first create late (committed at 0.7 s).
    let sim = SimConfig {
        time_scale: 1.0,
        latency_photon_flash_1: (1.0, 1.0),
        creates_per_minute: None,
        faults: Faults {
            create_late: 1.0,
            ..Faults::default()
        },
        late_commit_delay: Duration::from_millis(700),
        late_commit_limit: Some(1),
        ..SimConfig::default()
    };
    let h = Harness::start_with_timeout(sim, Duration::from_millis(200)).await;
    let file = write_job(h.dir.path(), "adopt", 2);
    let mut s = settings(&h, "adopt");
    s.latency_photon_flash_1 = Duration::from_millis(1000);
    // The first task's window closes empty at 0.3 s and, with one attempt, it fails; its create
    // commits at 0.7 s, while the second task's generation is still dreaming (until 1 s).
    s.settle_window = Duration::from_millis(300);
    s.max_attempts = 1;
    let job = load_job(&h, &file, &s).await;
    let outcome = run(&h, job, &s).await;
    let audit = outcome.audit.clone().unwrap();
    assert_eq!((audit.record.adopted, audit.record.extra), (1, 0), "{audit:?}");
    assert_eq!(
        outcome.counts.done, 2,
        "the adopted generation became the failed task's image: {outcome:?}"
    );
    assert_eq!(charges(&h), 2, "nothing was bought again");
    assert_eq!(images_in(&h.dir.path().join("out/adopt/preview")), 2);
    assert_ledger_equals_bill(&h).await;
}

#[tokio::test]
async fn a_task_left_unknown_by_a_dropped_run_is_settled_by_the_next_run_without_a_second_create() {
    let faults = Faults {
        create_late: 1.0,
        ..Faults::default()
    };
    let h = harness(faults, Duration::from_millis(1500), Duration::from_millis(200)).await;
    let file = write_job(h.dir.path(), "resume", 1);
    let mut s = settings(&h, "resume");
    s.settle_window = Duration::from_secs(3);
    let job = load_job(&h, &file, &s).await;
    // The first run is dropped while its task waits in the window (as a killed process would be).
    let (tx, mut rx) = mpsc::channel(10_000);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let stopped = tokio::time::timeout(
        Duration::from_millis(600),
        run_pass(&h.ledger, &h.client, &s, job, tx, Shutdown::default()),
    )
    .await;
    assert!(stopped.is_err(), "the first run was still settling its create");
    drain.abort();
    let task = h.ledger.unfinished_tasks(job, Pass::Preview).await.unwrap();
    assert_eq!(task.len(), 1, "the task is left mid-flight");
    // The second run goes on with the same window and finds the late commit: nothing re-sent.
    let outcome = run(&h, job, &s).await;
    assert_eq!(outcome.counts.done, 1);
    assert_eq!(charges(&h), 1, "one create, one charge");
    assert_ledger_equals_bill(&h).await;
}

#[tokio::test]
async fn a_generation_completed_without_an_image_is_a_failed_attempt_at_once_retried_within_the_cap() {
    let faults = Faults {
        completed_without_image: 1.0,
        ..Faults::default()
    };
    let h = harness(faults, Duration::from_secs(65), Duration::from_secs(10)).await;
    let file = write_job(h.dir.path(), "noimage", 2);
    let mut s = settings(&h, "noimage");
    s.max_attempts = 3;
    let job = load_job(&h, &file, &s).await;
    // stuck_after is hours: finishing at all shows nothing waited it out.
    let outcome = run(&h, job, &s).await;
    assert_eq!(outcome.counts.failed, 2, "{outcome:?}");
    assert_eq!(outcome.counts.attempts, 6, "three attempts each, no more");
    assert_eq!(charges(&h), 6);
    assert_eq!(
        h.sim.billing().refunded_micros,
        0,
        "the upstream keeps a completed generation's charge"
    );
    assert_ledger_equals_bill(&h).await;
    let errors = std::fs::read_to_string(h.dir.path().join("out/noimage/errors.jsonl")).unwrap();
    assert_eq!(errors.lines().count(), 2);
    assert!(errors.contains("completed without an image"), "{errors}");
    let report = darkroom_review::report::build(&h.ledger, job, "noimage")
        .await
        .unwrap();
    let report = serde_json::to_string(&report).unwrap();
    assert!(report.contains("completed without an image"), "{report}");
}

#[tokio::test]
async fn some_generations_completed_without_an_image_are_retried_and_every_task_still_gets_one() {
    let faults = Faults {
        completed_without_image: 0.3,
        ..Faults::default()
    };
    let h = harness(faults, Duration::from_secs(65), Duration::from_secs(10)).await;
    let file = write_job(h.dir.path(), "some", 12);
    let mut s = settings(&h, "some");
    s.max_attempts = 8;
    let job = load_job(&h, &file, &s).await;
    let outcome = run(&h, job, &s).await;
    let injected = h
        .sim
        .stats()
        .faults
        .get("completed_without_image")
        .copied()
        .unwrap_or(0);
    assert!(injected > 0);
    assert_eq!(outcome.counts.done, 12, "{outcome:?}");
    assert_eq!(outcome.counts.attempts, 12 + injected);
    assert_eq!(images_in(&h.dir.path().join("out/some/preview")), 12);
    assert_ledger_equals_bill(&h).await;
}

#[tokio::test]
async fn an_image_url_that_404s_forever_or_serves_no_image_is_a_failed_attempt_not_a_ten_minute_wait() {
    for (fault, reason) in [
        ("image_missing", "not at its URL"),
        ("not_an_image", "does not serve an image"),
    ] {
        let mut faults = Faults::default();
        match fault {
            "image_missing" => faults.image_missing = 1.0,
            _ => faults.not_an_image = 1.0,
        }
        let h = harness(faults, Duration::from_secs(65), Duration::from_secs(10)).await;
        let file = write_job(h.dir.path(), fault, 1);
        let mut s = settings(&h, fault);
        s.max_attempts = 2;
        let job = load_job(&h, &file, &s).await;
        let outcome = run(&h, job, &s).await;
        assert_eq!(
            (outcome.counts.failed, outcome.counts.attempts),
            (1, 2),
            "{fault}: {outcome:?}"
        );
        let errors = std::fs::read_to_string(h.dir.path().join(format!("out/{fault}/errors.jsonl"))).unwrap();
        assert!(errors.contains(reason), "{fault}: {errors}");
        assert_ledger_equals_bill(&h).await;
    }
}

#[tokio::test]
async fn a_generation_failed_without_a_reason_is_refunded_and_retried() {
    let faults = Faults {
        failed_without_reason: 1.0,
        ..Faults::default()
    };
    let h = harness(faults, Duration::from_secs(65), Duration::from_secs(10)).await;
    let file = write_job(h.dir.path(), "noreason", 1);
    let mut s = settings(&h, "noreason");
    s.max_attempts = 2;
    let job = load_job(&h, &file, &s).await;
    let outcome = run(&h, job, &s).await;
    assert_eq!(
        (outcome.counts.failed, outcome.counts.attempts),
        (1, 2),
        "{outcome:?}"
    );
    assert_eq!(h.sim.billing().net_micros, 0, "failures are refunded");
    assert_ledger_equals_bill(&h).await;
    let errors = std::fs::read_to_string(h.dir.path().join("out/noreason/errors.jsonl")).unwrap();
    assert!(errors.contains("failed without a reason"), "{errors}");
}

#[tokio::test]
async fn a_generation_in_an_undocumented_state_is_waited_on_until_it_completes() {
    let faults = Faults {
        unknown_state: 1.0,
        ..Faults::default()
    };
    let h = harness(faults, Duration::from_secs(65), Duration::from_secs(10)).await;
    let file = write_job(h.dir.path(), "odd", 3);
    let s = settings(&h, "odd");
    let job = load_job(&h, &file, &s).await;
    let outcome = run(&h, job, &s).await;
    assert_eq!(
        (outcome.counts.done, outcome.counts.attempts),
        (3, 3),
        "{outcome:?}"
    );
    assert_ledger_equals_bill(&h).await;
}

#[tokio::test]
async fn a_task_waiting_out_its_settlement_window_does_not_stall_the_other_creates() {
    let faults = Faults {
        create_late: 1.0,
        ..Faults::default()
    };
    let h = harness_late_once(faults, Duration::from_millis(1500)).await;
    let file = write_job(h.dir.path(), "beside", 8);
    let mut s = settings(&h, "beside");
    s.max_in_flight = 2; // the waiting task holds one slot; the other seven share the second
    s.settle_window = Duration::from_secs(6);
    let job = load_job(&h, &file, &s).await;
    let (tx, mut rx) = mpsc::channel(10_000);
    let collect = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(event) = rx.recv().await {
            events.push(event);
        }
        events
    });
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        run_pass(&h.ledger, &h.client, &s, job, tx, Shutdown::default()),
    )
    .await
    .unwrap()
    .unwrap();
    let events = collect.await.unwrap();
    assert_eq!(outcome.counts.done, 8);
    let adopted_at = events
        .iter()
        .position(|e| matches!(e, darkroom_engine::Event::Reconciled { adopted: true, .. }))
        .expect("the late create was adopted");
    let done_before = events[..adopted_at]
        .iter()
        .filter(|e| matches!(e, darkroom_engine::Event::TaskFinished { state, .. } if state == "done"))
        .count();
    assert_eq!(
        done_before, 7,
        "every other task finished while the late one was being settled"
    );
    assert_eq!(charges(&h), 8);
    assert_ledger_equals_bill(&h).await;
}

/// A job of `rows` rows with `variants` identical variants each: every variant of a row sends the
/// same request, so any of their generations matches any of them.
fn write_variants_job(dir: &Path, name: &str, rows: usize, variants: u32) -> PathBuf {
    let mut text = String::from("id,prompt,aspect_ratio,variants\n");
    for i in 0..rows {
        text.push_str(&format!(
            "row-{i},A brass lamp number {i} on a desk,1:1,{variants}\n"
        ));
    }
    let path = dir.join(format!("{name}.csv"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The generation each done task kept, from `results.jsonl`; panics if two tasks kept one.
fn kept_generations(h: &Harness, job: &str) -> Vec<String> {
    let results = std::fs::read_to_string(h.dir.path().join(format!("out/{job}/results.jsonl"))).unwrap();
    let ids: Vec<String> = results
        .lines()
        .map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            line["generation_id"].as_str().unwrap().to_string()
        })
        .collect();
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(
        distinct.len(),
        ids.len(),
        "no two tasks kept one generation: {ids:?}"
    );
    ids
}

fn adoptions(events: &[darkroom_engine::Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, darkroom_engine::Event::Reconciled { adopted: true, .. }))
        .count()
}

/// Every one of the job's `tasks` tasks kept its own generation, each accepted create was charged
/// once, and the ledger equals the simulator's bill.
async fn assert_one_paid_generation_each(h: &Harness, job: &str, tasks: usize) {
    assert_eq!(
        charges(h),
        tasks,
        "each accepted create is one task's image, paid once"
    );
    assert_eq!(kept_generations(h, job).len(), tasks, "one generation per task");
    assert_ledger_equals_bill(h).await;
}

#[tokio::test]
async fn identical_variants_whose_creates_are_all_lost_are_reconciled_together_each_adopting_a_different_generation(
) {
    // Every create is accepted and charged, then its answer is lost: all twelve identical-request
    // tasks reconcile at once, each reading the list while the others claim.
    let faults = Faults {
        create_dropped: 1.0,
        ..Faults::default()
    };
    let h = harness(faults, Duration::from_secs(65), Duration::from_secs(5)).await;
    let file = write_variants_job(h.dir.path(), "twins", 3, 4);
    let mut s = settings(&h, "twins");
    s.max_in_flight = 12;
    s.settle_window = Duration::from_secs(6);
    let job = load_job(&h, &file, &s).await;
    let (outcome, events) = h.run_collecting(job, &s).await;
    assert_eq!(outcome.counts.done, 12, "{outcome:?}");
    assert_eq!(
        outcome.counts.attempts, 12,
        "no create was sent again: {outcome:?}"
    );
    assert_eq!(adoptions(&events), 12);
    assert_one_paid_generation_each(&h, "twins", 12).await;
}

#[tokio::test]
async fn two_identical_variants_whose_creates_time_out_and_commit_late_each_adopt_a_different_generation() {
    // Both creates outlive the client's 200 ms and are committed 600 ms after they arrived: both
    // tasks are unknown together and find both generations in one later search.
    let faults = Faults {
        create_late: 1.0,
        ..Faults::default()
    };
    let h = harness(faults, Duration::from_millis(600), Duration::from_millis(200)).await;
    let file = write_variants_job(h.dir.path(), "pair", 1, 2);
    let mut s = settings(&h, "pair");
    s.max_in_flight = 2;
    s.settle_window = Duration::from_secs(6);
    let job = load_job(&h, &file, &s).await;
    let (outcome, events) = h.run_collecting(job, &s).await;
    assert_eq!(
        (outcome.counts.done, outcome.counts.attempts),
        (2, 2),
        "{outcome:?}"
    );
    assert_eq!(adoptions(&events), 2);
    assert_one_paid_generation_each(&h, "pair", 2).await;
}

#[tokio::test]
async fn identical_variants_under_500s_and_lost_answers_get_one_paid_generation_each() {
    // Some creates fail with a 500 before anything is accepted (found nowhere: sent again once
    // the window closes), some are accepted and their answers lost (adopted by one of the
    // identical tasks), the rest answer: every task ends with its own generation, none paid twice.
    let faults = Faults {
        create_5xx: 0.3,
        create_dropped: 0.3,
        ..Faults::default()
    };
    let h = harness(faults, Duration::from_secs(65), Duration::from_secs(5)).await;
    let file = write_variants_job(h.dir.path(), "mixed", 4, 3);
    let mut s = settings(&h, "mixed");
    s.max_in_flight = 12;
    s.settle_window = Duration::from_secs(2);
    s.max_attempts = 20;
    let job = load_job(&h, &file, &s).await;
    let (outcome, events) = h.run_collecting(job, &s).await;
    assert_eq!(outcome.counts.done, 12, "{outcome:?}");
    assert!(adoptions(&events) > 0, "some lost answers were reconciled");
    assert_one_paid_generation_each(&h, "mixed", 12).await;
}

#[tokio::test]
async fn identical_variants_reconciling_through_slow_list_reads_never_share_a_generation_or_pay_twice() {
    // Every status read (the searches' list reads among them) answers after 300 ms, so each search
    // reads the list while its siblings' creates and re-sends go out and are recorded, and its
    // matches are claimed long after they were read: a claim must still never take a generation
    // a sibling recorded meanwhile, and no accepted create may be missed and sent again.
    let faults = Faults {
        create_5xx: 0.2,
        create_dropped: 0.4,
        get_slow: 1.0,
        ..Faults::default()
    };
    let sim = SimConfig {
        slow_delay: Duration::from_millis(300),
        ..sim_config(faults, Duration::from_secs(65))
    };
    let h = Harness::start_with_timeout(sim, Duration::from_secs(5)).await;
    let file = write_variants_job(h.dir.path(), "slowlist", 2, 6);
    let mut s = settings(&h, "slowlist");
    s.max_in_flight = 12;
    s.settle_window = Duration::from_secs(3);
    s.max_attempts = 20;
    let job = load_job(&h, &file, &s).await;
    let (outcome, events) = h.run_collecting(job, &s).await;
    assert_eq!(outcome.counts.done, 12, "{outcome:?}");
    assert!(adoptions(&events) > 0, "some lost answers were reconciled");
    assert!(
        h.sim.stats().faults.get("get_slow").copied().unwrap_or(0) > 0,
        "the list was read slowly"
    );
    assert_one_paid_generation_each(&h, "slowlist", 12).await;
}
