//! The engine end to end against the real simulator on a loopback port and a real SQLite ledger:
//! budgets, faults, resume, cache, and the bill reconciled to the micro-dollar.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::path::Path;
use std::time::Duration;

use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{load, run_pass, Event, Outcome, RunSettings, StopReason};
use darkroom_jobs::{Money, Pass, PriceTable, ReadOptions, Routing};
use darkroom_ledger::Ledger;
use darkroom_luma::{ApiKey, Client, ClientConfig};
use darkroom_sim::{SimConfig, SimHandle};
use tokio::sync::mpsc;

struct Harness {
    dir: tempfile::TempDir,
    ledger: Ledger,
    sim: SimHandle,
    client: Client,
}

/// A fast simulator: real limits off unless a test sets them, latency scaled down.
fn fast_sim() -> SimConfig {
    let mut config = SimConfig::default();
    config.time_scale = 0.02;
    config.creates_per_minute = None;
    config.max_concurrent = Some(40);
    config
}

async fn harness(sim_config: SimConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("darkroom.db")).await.unwrap();
    let sim = darkroom_sim::spawn(sim_config).await.unwrap();
    let client = Client::new(ClientConfig {
        base_url: sim.base_url(),
        api_key: ApiKey::new("test-key-do-not-leak".to_string()),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        download_timeout: Duration::from_secs(30),
        user_agent: "darkroom-tests".into(),
    })
    .unwrap();
    Harness {
        dir,
        ledger,
        sim,
        client,
    }
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
    let mut s = RunSettings::new(job, Pass::Preview, h.dir.path().join("out"));
    s.creates_per_minute = None;
    s.latency_photon_flash_1 = Duration::from_millis(10);
    s.latency_photon_1 = Duration::from_millis(60);
    s.polls_per_second = 200;
    s.stuck_after = Duration::from_secs(5);
    s.drain_timeout = Duration::from_secs(10);
    s
}

async fn load_and_run(
    h: &Harness,
    file: &Path,
    settings: &RunSettings,
    budget: Money,
) -> (Outcome, Vec<Event>) {
    let job = h
        .ledger
        .upsert_job(&settings.job_name, &file.display().to_string(), "")
        .await
        .unwrap();
    h.ledger.set_budget(job, settings.pass, budget).await.unwrap();
    load::load_job(
        &h.ledger,
        job,
        file,
        settings.pass,
        Routing::default(),
        PriceTable::default(),
        ReadOptions::default(),
    )
    .await
    .unwrap();
    let (tx, mut rx) = mpsc::channel(100_000);
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        events
    });
    let outcome = run_pass(&h.ledger, &h.client, settings, job, tx, Shutdown::default())
        .await
        .unwrap();
    (outcome, collector.await.unwrap())
}

fn images_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "jpg"))
                .count()
        })
        .unwrap_or(0)
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

    let mut no_cache = settings(&h, "three");
    no_cache.use_cache = false;
    let third = write_job(h.dir.path(), "three", 3, 1);
    let (outcome, _) = load_and_run(&h, &third, &no_cache, Money::parse_usd("1").unwrap()).await;
    assert_eq!((outcome.counts.done, outcome.counts.cached), (3, 0));
}
