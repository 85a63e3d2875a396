//! Observed prices end to end: the real simulator billing at prices other than the table's, a real
//! SQLite ledger, and the engine learning what the account really charges.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::path::Path;
use std::time::Duration;

use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{run_pass, Event, Outcome, RunSettings, StopReason};
use darkroom_jobs::{Money, Pass};
use darkroom_provider::CreateRequest;
use darkroom_sim::SimConfig;
use darkroom_testkit::Harness;
use tokio::sync::mpsc;

/// A fast simulator billing Flash at `flash_micros` an image.
fn sim_billing_flash_at(flash_micros: i64) -> SimConfig {
    SimConfig {
        time_scale: 0.02,
        creates_per_minute: None,
        max_concurrent: Some(40),
        price_photon_flash_1_micros: flash_micros,
        ..SimConfig::default()
    }
}

async fn harness(sim_config: SimConfig) -> Harness {
    Harness::start(sim_config).await
}

fn write_job(dir: &Path, rows: usize) -> std::path::PathBuf {
    let mut text = String::from("id,prompt,aspect_ratio\n");
    for i in 0..rows {
        text.push_str(&format!(
            "row-{i},A ceramic vase number {i} on a walnut table,1:1\n"
        ));
    }
    let path = dir.join("vases.csv");
    std::fs::write(&path, text).unwrap();
    path
}

fn settings(h: &Harness, max_in_flight: u32) -> RunSettings {
    let mut s = h.settings("vases");
    s.max_in_flight = max_in_flight;
    s.drain_timeout = Duration::from_secs(10);
    s.balance_every = Duration::from_millis(50);
    s
}

/// Loads `rows` tasks under `budget` and runs the pass; `during` runs once the first task finished.
async fn run(
    h: &Harness,
    rows: usize,
    max_in_flight: u32,
    budget: Money,
    during: Option<Box<dyn FnOnce() -> tokio::task::JoinHandle<()> + Send>>,
) -> (i64, Outcome, Vec<Event>) {
    let file = write_job(h.dir.path(), rows);
    let settings = settings(h, max_in_flight);
    let job = h.load(&file, &settings, budget).await;
    let (tx, mut rx) = mpsc::channel(100_000);
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        let mut during = during;
        let mut started = None;
        while let Some(e) = rx.recv().await {
            if matches!(e, Event::TaskFinished { .. }) {
                if let Some(start) = during.take() {
                    started = Some(start());
                }
            }
            events.push(e);
        }
        if let Some(handle) = started {
            handle.await.unwrap();
        }
        events
    });
    let outcome = run_pass(&h.ledger, &h.client, &settings, job, tx, Shutdown::default())
        .await
        .unwrap();
    (job, outcome, collector.await.unwrap())
}

fn price_events(events: &[Event]) -> Vec<(String, Money, Money, bool, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::PriceObserved {
                model,
                table,
                observed,
                applied,
                config_line,
                ..
            } => Some((model.clone(), *table, *observed, *applied, config_line.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_charging_double_the_table_is_noticed_and_the_run_stops_within_the_budget_in_real_money() {
    let h = harness(sim_billing_flash_at(8_000)).await;
    let budget = Money::parse_usd("1").unwrap();
    let (job, outcome, events) = run(&h, 400, 40, budget, None).await;

    let bill = h.sim.billing();
    assert!(
        bill.net_micros <= budget.micros(),
        "the account paid {} of a {budget} budget",
        Money::from_micros(bill.net_micros)
    );
    assert_eq!(outcome.stop, Some(StopReason::BudgetExhausted));
    let stopping: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Stopping { reason } => Some(reason),
            _ => None,
        })
        .collect();
    assert!(
        stopping
            .iter()
            .any(|r| r.contains("observed price") && r.contains("$0.008")),
        "the run says it stopped for the budget at the observed price: {stopping:?}"
    );
    let warnings = price_events(&events);
    assert_eq!(
        warnings,
        vec![(
            "photon-flash-1".to_string(),
            Money::from_micros(4_000),
            Money::from_micros(8_000),
            true,
            "[prices] \"photon-flash-1\" = \"0.008\"".to_string()
        )],
        "one warning, with both figures and the config line"
    );
    // The ledger's charges are what the account was billed, to the micro-dollar.
    assert_eq!(h.ledger.net_charges().await.unwrap().micros(), bill.net_micros);
    assert_eq!(outcome.spent.micros(), bill.net_micros);
    // Nearly the whole budget was used: the run did not stop early out of caution either.
    assert!(
        bill.net_micros > budget.micros() - 8_000 * 41,
        "spent only {}",
        bill.net_micros
    );
    assert_eq!(
        h.ledger
            .pass_price(job, Pass::Preview, "photon-flash-1")
            .await
            .unwrap(),
        Some(Money::from_micros(8_000))
    );
    let observations = h.ledger.observations(job, Pass::Preview).await.unwrap();
    assert_eq!(observations.len(), 1);
    assert_eq!(observations[0].table_micros, 4_000);
    assert_eq!(observations[0].observed_micros, 8_000);
    assert_eq!(
        h.ledger.last_observed(&h.sim.base_url()).await.unwrap()[0].observed_micros,
        8_000
    );
    let report = darkroom_review::report::build(&h.ledger, job, "vases")
        .await
        .unwrap();
    assert!(
        report
            .to_text()
            .contains("photon-flash-1: table $0.004, observed $0.008 over 125 images (higher: counted at the observed price)"),
        "{}",
        report.to_text()
    );
    assert_eq!(report.passes[0].prices[0].observed_micros, 8_000);
    // results.jsonl keeps each task's table price; its cost is what was counted.
    let results = std::fs::read_to_string(h.dir.path().join("out/vases/results.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(results.lines().next().unwrap()).unwrap();
    assert_eq!(first["price_micros"], 4_000);
    assert_eq!(first["cost_micros"], 8_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_observed_price_is_recorded_and_the_table_stays() {
    let h = harness(sim_billing_flash_at(2_000)).await;
    let (job, outcome, events) = run(&h, 60, 8, Money::parse_usd("1").unwrap(), None).await;

    assert_eq!(outcome.stop, None);
    assert_eq!(outcome.counts.done, 60);
    assert_eq!(
        price_events(&events),
        vec![(
            "photon-flash-1".to_string(),
            Money::from_micros(4_000),
            Money::from_micros(2_000),
            false,
            "[prices] \"photon-flash-1\" = \"0.002\"".to_string()
        )]
    );
    // Reservations and charges stayed at the table's price: conservative.
    assert_eq!(
        h.ledger
            .pass_price(job, Pass::Preview, "photon-flash-1")
            .await
            .unwrap(),
        None
    );
    assert_eq!(outcome.spent.micros(), 60 * 4_000);
    assert_eq!(h.sim.billing().net_micros, 60 * 2_000);
    let observations = h.ledger.observations(job, Pass::Preview).await.unwrap();
    assert_eq!(observations[0].observed_micros, 2_000);
    assert_eq!(observations[0].table_micros, 4_000);
    let report = darkroom_review::report::build(&h.ledger, job, "vases")
        .await
        .unwrap();
    assert!(
        report
            .to_text()
            .contains("observed $0.002 over 60 images (lower: the table's price was kept)"),
        "{}",
        report.to_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_by_someone_else_during_the_run_only_raises_the_observed_price() {
    let h = harness(sim_billing_flash_at(4_000)).await;
    let other = h.client.clone();
    let someone_else: Box<dyn FnOnce() -> tokio::task::JoinHandle<()> + Send> = Box::new(move || {
        tokio::spawn(async move {
            for i in 0..25 {
                let request = CreateRequest {
                    model: "photon-flash-1".into(),
                    prompt: format!("Someone else's picture number {i}"),
                    aspect_ratio: Some("1:1".into()),
                    format: None,
                    image_ref: None,
                    style_ref: None,
                    character_ref: None,
                    modify_image_ref: None,
                    reframe: None,
                    callback_url: None,
                };
                other.create(&request).await.unwrap();
            }
        })
    });
    let (job, outcome, _events) = run(&h, 200, 2, Money::parse_usd("5").unwrap(), Some(someone_else)).await;

    assert_eq!(outcome.counts.done, 200);
    let observations = h.ledger.observations(job, Pass::Preview).await.unwrap();
    assert!(!observations.is_empty());
    assert!(
        observations.iter().all(|o| o.observed_micros > 4_000),
        "someone else's spend makes the observed price higher, never lower: {observations:?}"
    );
    // The pass is now more careful: it reserves and charges above the table, so its spend is at
    // least what the account paid for its own images.
    let in_force = h
        .ledger
        .pass_price(job, Pass::Preview, "photon-flash-1")
        .await
        .unwrap();
    assert!(in_force > Some(Money::from_micros(4_000)), "{in_force:?}");
    let ours = h.sim.billing().net_micros - 25 * 4_000;
    assert!(
        outcome.spent.micros() >= ours,
        "{} < {ours}",
        outcome.spent.micros()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_reserved_at_a_price_of_zero_is_sent_and_finished_never_left_reserved() {
    // Config loading refuses a price of $0; this is the engine's own path below it: a reservation
    // of $0 is still a reservation, and the task goes out on it.
    let h = harness(sim_billing_flash_at(4_000)).await;
    let file = write_job(h.dir.path(), 8);
    let mut settings = settings(&h, 4);
    settings.prices.photon_flash_1 = Money::ZERO;
    let job = h
        .ledger
        .upsert_job("vases", &file.display().to_string(), "")
        .await
        .unwrap();
    h.ledger
        .set_budget(job, Pass::Preview, Money::parse_usd("1").unwrap())
        .await
        .unwrap();
    darkroom_engine::load::load_job(
        &h.ledger,
        job,
        &file,
        Pass::Preview,
        darkroom_jobs::Routing::default(),
        settings.prices,
        darkroom_jobs::ReadOptions::default(),
    )
    .await
    .unwrap();
    let (outcome, _) = h.run_collecting(job, &settings).await;
    let counts = h.ledger.counts(job, Pass::Preview).await.unwrap();
    assert_eq!(
        (counts.done, counts.in_flight, counts.pending),
        (8, 0, 0),
        "{outcome:?}"
    );
    assert_eq!(h.sim.billing().net_micros, 8 * 4_000);
}
