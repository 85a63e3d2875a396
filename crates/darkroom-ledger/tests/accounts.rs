//! One account's limits and budgets shared by every run on it (migration 0013), against a real
//! SQLite file and an injected clock: the permit's rate and in-flight cap across runs, a killed
//! run's slots, shared pauses, and daily and monthly limits of accounts and labels.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.
use darkroom_jobs::{AspectRatio, Format, Metadata, Model, Money, Pass, References, Task};
use darkroom_ledger::{
    AccountHolder, AccountSpec, Ledger, LimitPeriod, LimitScope, NewTask, Permit, PermitWait, Reservation,
    TaskState, HOLDER_LEASE_MS, SLOT_HORIZON_MS,
};

const DAY_MS: i64 = 86_400_000;
/// 80 creates a minute.
const INTERVAL: i64 = 750;

fn new_task(key: &str, price: i64) -> NewTask {
    NewTask {
        task: Task {
            row_id: key.to_string(),
            pass: Pass::Preview,
            variant: 1,
            variants: 1,
            model: Model::PhotonFlash1,
            prompt: format!("a prompt for {key}"),
            aspect_ratio: AspectRatio::Square,
            format: Format::Jpg,
            refs: References::default(),
            metadata: Metadata::new(),
            fingerprint: format!("fp-{key}"),
        },
        line: 2,
        price: Money::from_micros(price),
        request_json: "{}".into(),
    }
}

async fn open() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("darkroom.db")).await.unwrap();
    (dir, ledger)
}

/// A job `name` of `count` tasks at `price` with a budget that never binds; returns its task ids.
async fn job(ledger: &Ledger, name: &str, count: usize, price: i64) -> (i64, Vec<i64>) {
    let job = ledger.upsert_job(name, "job.csv", "file-fp").await.unwrap();
    ledger
        .set_budget(job, Pass::Preview, Money::from_micros(1_000_000_000))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..count)
        .map(|i| new_task(&format!("{name}-{i}"), price))
        .collect();
    let mut loader = ledger.begin_load(job, Pass::Preview).await.unwrap();
    loader.load_page(&tasks).await.unwrap();
    loader.finish("file-fp").await.unwrap();
    let ids = ledger
        .pending_tasks(job, Pass::Preview, 0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    (job, ids)
}

fn spec(cap: u32) -> AccountSpec {
    AccountSpec {
        name: "team".into(),
        key_hash: "hash".into(),
        base_url: "http://127.0.0.1:1/v1".into(),
        create_interval_ms: INTERVAL,
        max_in_flight: cap,
    }
}

/// Reserves the task and asks for its permit at `now`.
async fn permit(ledger: &Ledger, task: i64, holder: AccountHolder, now: i64) -> Permit {
    if ledger.task(task).await.unwrap().state == TaskState::Pending {
        assert_eq!(ledger.reserve_at(task, now).await.unwrap(), Reservation::Reserved);
    }
    ledger
        .record_intent_on_account(task, "req", "luma", holder, now)
        .await
        .unwrap()
}

#[tokio::test]
async fn two_runs_on_one_account_get_creates_no_closer_than_the_accounts_interval() {
    let (_dir, ledger) = open().await;
    let (_, a) = job(&ledger, "a", 60, 4_000).await;
    let (_, b) = job(&ledger, "b", 60, 4_000).await;
    let t0 = 1_000_000;
    let one = ledger.join_account(&spec(0), None, 1, t0).await.unwrap();
    let two = ledger.join_account(&spec(0), None, 2, t0).await.unwrap();
    assert_eq!(one.account_id, two.account_id);

    // Both runs ask every 100 ms; each grant is an instant the create goes out.
    let mut sent = Vec::new();
    let (mut next_a, mut next_b) = (a.iter(), b.iter());
    let (mut ta, mut tb) = (next_a.next(), next_b.next());
    let mut now = t0;
    while now < t0 + 30_000 {
        for (task, holder) in [(&mut ta, one), (&mut tb, two)] {
            let Some(id) = *task else { continue };
            ledger.account_heartbeat(holder, now).await.unwrap();
            if let Permit::Granted { generation, wait_ms } = permit(&ledger, *id, holder, now).await {
                assert!(wait_ms <= darkroom_ledger::MAX_PERMIT_WAIT_MS, "{wait_ms}");
                sent.push(now + wait_ms);
                ledger.record_not_created(generation, false).await.unwrap();
                *task = if holder == one {
                    next_a.next()
                } else {
                    next_b.next()
                };
            }
        }
        now += 100;
    }
    sent.sort_unstable();
    assert!(sent.len() >= 38, "{} creates in 30 s", sent.len());
    for pair in sent.windows(2) {
        assert!(
            pair[1] - pair[0] >= INTERVAL,
            "creates {pair:?} closer than {INTERVAL} ms"
        );
    }
}

#[tokio::test]
async fn a_run_alone_on_its_account_is_not_held_back_but_a_run_that_joins_waits_for_what_it_used() {
    let (_dir, ledger) = open().await;
    let (_, a) = job(&ledger, "a", 5, 4_000).await;
    let (_, b) = job(&ledger, "b", 1, 4_000).await;
    let t0 = 5_000_000;
    let one = ledger.join_account(&spec(0), None, 1, t0).await.unwrap();
    // Alone: five creates at once (its own create gate paces it), none told to wait.
    for &task in &a {
        match permit(&ledger, task, one, t0).await {
            Permit::Granted { wait_ms, .. } => assert_eq!(wait_ms, 0),
            other => panic!("{other:?}"),
        }
    }
    // A second run joins: its first create waits for the five intervals the first one used.
    let two = ledger.join_account(&spec(0), None, 2, t0).await.unwrap();
    match permit(&ledger, b[0], two, t0).await {
        Permit::Wait { retry_in_ms, reason } => {
            assert_eq!(reason, PermitWait::Rate);
            assert_eq!(retry_in_ms, 5 * INTERVAL - darkroom_ledger::MAX_PERMIT_WAIT_MS);
        }
        other => panic!("{other:?}"),
    }
    match permit(&ledger, b[0], two, t0 + 5 * INTERVAL - 1_000).await {
        Permit::Granted { wait_ms, .. } => assert_eq!(wait_ms, 1_000),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_in_flight_cap_counts_every_runs_generations_until_their_end_is_recorded() {
    let (_dir, ledger) = open().await;
    let (_, a) = job(&ledger, "a", 2, 4_000).await;
    let (_, b) = job(&ledger, "b", 2, 4_000).await;
    let t0 = 9_000_000;
    let one = ledger.join_account(&spec(2), None, 1, t0).await.unwrap();
    let two = ledger.join_account(&spec(2), None, 2, t0).await.unwrap();
    let Permit::Granted {
        generation: first, ..
    } = permit(&ledger, a[0], one, t0).await
    else {
        panic!("the first create gets a slot")
    };
    ledger.record_submitted(first, "up-1").await.unwrap();
    let Permit::Granted { .. } = permit(&ledger, b[0], two, t0 + 1_000).await else {
        panic!("the second create gets the other slot")
    };
    let later = t0 + 2_000;
    assert_eq!(
        permit(&ledger, b[1], two, later).await,
        Permit::Wait {
            retry_in_ms: darkroom_ledger::IN_FLIGHT_RETRY_MS,
            reason: PermitWait::InFlight { cap: 2 }
        }
    );
    assert_eq!(ledger.accounts(later).await.unwrap()[0].in_flight, 2);
    // Run one sees its generation complete: the slot is free for run two.
    ledger
        .record_completed(first, "https://cdn.example/1.jpg")
        .await
        .unwrap();
    assert!(matches!(
        permit(&ledger, b[1], two, later).await,
        Permit::Granted { .. }
    ));
}

#[tokio::test]
async fn a_killed_runs_generations_keep_their_slots_until_the_horizon_after_their_intent() {
    let (_dir, ledger) = open().await;
    let (_, a) = job(&ledger, "a", 1, 4_000).await;
    let (_, b) = job(&ledger, "b", 1, 4_000).await;
    let t0 = 20_000_000;
    let killed = ledger.join_account(&spec(1), None, 1, t0).await.unwrap();
    let Permit::Granted { generation, .. } = permit(&ledger, a[0], killed, t0).await else {
        panic!("granted")
    };
    ledger.record_submitted(generation, "up-1").await.unwrap();
    // The first run dies (no heartbeat, no end recorded). Past its lease its slot still counts.
    let other = ledger
        .join_account(&spec(1), None, 2, t0 + HOLDER_LEASE_MS + 1)
        .await
        .unwrap();
    let mut now = t0 + HOLDER_LEASE_MS + 1;
    assert!(matches!(
        permit(&ledger, b[0], other, now).await,
        Permit::Wait {
            reason: PermitWait::InFlight { .. },
            ..
        }
    ));
    now = t0 + SLOT_HORIZON_MS;
    ledger.account_heartbeat(other, now).await.unwrap();
    assert!(matches!(
        permit(&ledger, b[0], other, now).await,
        Permit::Wait {
            reason: PermitWait::InFlight { .. },
            ..
        }
    ));
    now = t0 + SLOT_HORIZON_MS + 1;
    assert!(matches!(
        permit(&ledger, b[0], other, now).await,
        Permit::Granted { .. }
    ));
}

#[tokio::test]
async fn a_live_runs_generation_holds_its_slot_past_the_horizon() {
    let (_dir, ledger) = open().await;
    let (_, a) = job(&ledger, "a", 2, 4_000).await;
    let t0 = 30_000_000;
    let run = ledger.join_account(&spec(1), None, 1, t0).await.unwrap();
    let Permit::Granted { generation, .. } = permit(&ledger, a[0], run, t0).await else {
        panic!("granted")
    };
    ledger.record_submitted(generation, "up-1").await.unwrap();
    let now = t0 + 2 * SLOT_HORIZON_MS;
    ledger.account_heartbeat(run, now).await.unwrap();
    assert!(matches!(
        permit(&ledger, a[1], run, now).await,
        Permit::Wait {
            reason: PermitWait::InFlight { cap: 1 },
            ..
        }
    ));
}

#[tokio::test]
async fn a_retry_after_given_to_one_run_holds_the_other_runs_permits() {
    let (_dir, ledger) = open().await;
    let (_, b) = job(&ledger, "b", 1, 4_000).await;
    let t0 = 40_000_000;
    let one = ledger.join_account(&spec(0), None, 1, t0).await.unwrap();
    let two = ledger.join_account(&spec(0), None, 2, t0).await.unwrap();
    ledger.pause_account(one.account_id, t0 + 5_000).await.unwrap();
    ledger.pause_account(one.account_id, t0 + 1_000).await.unwrap(); // never shortened
    assert_eq!(
        permit(&ledger, b[0], two, t0).await,
        Permit::Wait {
            retry_in_ms: 5_000,
            reason: PermitWait::Paused
        }
    );
    assert!(matches!(
        permit(&ledger, b[0], two, t0 + 5_000).await,
        Permit::Granted { .. }
    ));
}

/// Reserves, sends and charges `task` now (the money log's time is the real clock).
async fn charge(ledger: &Ledger, task: i64, upstream: &str) -> Reservation {
    let reservation = ledger.reserve(task).await.unwrap();
    if reservation == Reservation::Reserved {
        let generation = ledger.record_intent(task, "req", "luma").await.unwrap();
        ledger.record_submitted(generation, upstream).await.unwrap();
    }
    reservation
}

#[tokio::test]
async fn concurrent_reservations_of_two_jobs_never_pass_their_accounts_monthly_limit() {
    let (_dir, ledger) = open().await;
    let (a, a_tasks) = job(&ledger, "a", 100, 15_000).await;
    let (b, b_tasks) = job(&ledger, "b", 100, 15_000).await;
    for job in [a, b] {
        ledger.set_job_scope(job, Some("team"), None).await.unwrap();
    }
    let limit = Money::from_micros(15_000 * 25 + 14_999);
    ledger
        .set_spending_limit(LimitScope::Account, "team", LimitPeriod::Month, Some(limit), 0)
        .await
        .unwrap();
    let handles: Vec<_> = a_tasks
        .into_iter()
        .chain(b_tasks)
        .enumerate()
        .map(|(i, task)| {
            let ledger = ledger.clone();
            tokio::spawn(async move { charge(&ledger, task, &format!("up-{i}")).await })
        })
        .collect();
    let mut charged = 0;
    let mut refused = None;
    for handle in handles {
        match handle.await.unwrap() {
            Reservation::Reserved => charged += 1,
            Reservation::OverLimit(usage) => refused = Some(usage),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(charged, 25);
    assert_eq!(
        ledger.net_charges().await.unwrap(),
        Money::from_micros(15_000 * 25)
    );
    let usage = refused.unwrap();
    assert_eq!(
        (usage.scope, usage.period),
        (LimitScope::Account, LimitPeriod::Month)
    );
    let text = usage.to_string();
    assert!(text.contains("monthly limit of account \"team\""), "{text}");
    let shown = ledger.spending_limits(darkroom_ledger::now_ms()).await.unwrap();
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].spent, Money::from_micros(15_000 * 25));
    assert_eq!(shown[0].reserved, Money::ZERO);
}

#[tokio::test]
async fn a_daily_limit_starts_again_at_midnight_utc_and_refunds_give_room_back() {
    let (_dir, ledger) = open().await;
    let (job_id, tasks) = job(&ledger, "a", 4, 10_000).await;
    ledger
        .set_job_scope(job_id, Some("team"), Some("acme"))
        .await
        .unwrap();
    ledger
        .set_spending_limit(
            LimitScope::Label,
            "acme",
            LimitPeriod::Day,
            Some(Money::from_micros(20_000)),
            0,
        )
        .await
        .unwrap();
    assert_eq!(charge(&ledger, tasks[0], "up-0").await, Reservation::Reserved);
    assert_eq!(charge(&ledger, tasks[1], "up-1").await, Reservation::Reserved);
    let now = darkroom_ledger::now_ms();
    let midnight = (now / DAY_MS + 1) * DAY_MS;
    match ledger.reserve_at(tasks[2], midnight - 1).await.unwrap() {
        Reservation::OverLimit(usage) => {
            assert_eq!((usage.scope, usage.period), (LimitScope::Label, LimitPeriod::Day));
            assert_eq!(usage.name, "acme");
            // What the limit had used before the refused task: two charges, not its price too.
            assert_eq!(usage.spent, Money::from_micros(20_000));
            assert_eq!(usage.reserved, Money::ZERO);
            assert!(
                usage.to_string().contains("daily limit of label \"acme\""),
                "{usage}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ledger.reserve_at(tasks[2], midnight).await.unwrap(),
        Reservation::Reserved
    );
    ledger.release(tasks[2], TaskState::Pending, None).await.unwrap();

    // A refund today gives its money back to today's limit.
    let generation = ledger.open_generations(tasks[1]).await.unwrap()[0].id;
    ledger
        .record_generation_failed(generation, "failed upstream", TaskState::Pending)
        .await
        .unwrap();
    assert_eq!(
        ledger
            .period_spend(LimitScope::Label, "acme", LimitPeriod::Day, now)
            .await
            .unwrap(),
        Money::from_micros(10_000)
    );
    assert_eq!(ledger.reserve(tasks[2]).await.unwrap(), Reservation::Reserved);
}

#[tokio::test]
async fn a_limit_binds_only_the_jobs_of_its_account_or_label_and_can_be_removed() {
    let (_dir, ledger) = open().await;
    let (a, a_tasks) = job(&ledger, "a", 2, 10_000).await;
    let (b, b_tasks) = job(&ledger, "b", 2, 10_000).await;
    ledger.set_job_scope(a, Some("team"), Some("acme")).await.unwrap();
    ledger
        .set_job_scope(b, Some("team"), Some("globex"))
        .await
        .unwrap();
    ledger
        .set_spending_limit(
            LimitScope::Label,
            "acme",
            LimitPeriod::Month,
            Some(Money::ZERO),
            0,
        )
        .await
        .unwrap();
    assert!(matches!(
        ledger.reserve(a_tasks[0]).await.unwrap(),
        Reservation::OverLimit(_)
    ));
    assert_eq!(ledger.reserve(b_tasks[0]).await.unwrap(), Reservation::Reserved);
    ledger
        .set_spending_limit(LimitScope::Label, "acme", LimitPeriod::Month, None, 0)
        .await
        .unwrap();
    assert_eq!(ledger.reserve(a_tasks[0]).await.unwrap(), Reservation::Reserved);
    // A run without --label keeps the job's label; an empty one removes it.
    ledger.set_job_scope(a, Some("team"), None).await.unwrap();
    assert_eq!(
        ledger.job_scope(a).await.unwrap(),
        (Some("team".into()), Some("acme".into()))
    );
    ledger.set_job_scope(a, Some("team"), Some("")).await.unwrap();
    assert_eq!(ledger.job_scope(a).await.unwrap(), (Some("team".into()), None));
    let _ = b_tasks;
}
