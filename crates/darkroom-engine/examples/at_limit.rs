//! How close a run gets to the floor the account's limits set: wall time ÷ max(N / rate, N × latency
//! ÷ concurrency), and the 429s received, against the simulator enforcing the limits.
//!
//! `cargo run --release -p darkroom-engine --example at_limit -- [TASKS]`

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{load, run_pass, RunSettings};
use darkroom_jobs::{Money, Pass, PriceTable, ReadOptions, Routing};
use darkroom_ledger::Ledger;
use darkroom_luma::{ApiKey, Client, ClientConfig};
use darkroom_sim::{Faults, RateWindow, SimConfig};

struct Scenario {
    name: &'static str,
    per_minute: u32,
    concurrent: u32,
    time_scale: f64,
    window: RateWindow,
    faults: Faults,
}

#[tokio::main]
async fn main() {
    let tasks: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(1000);
    let flaky = Faults::profile("flaky").unwrap();
    let scenarios = [
        Scenario { name: "3,000/min, 40 concurrent, token bucket", per_minute: 3000, concurrent: 40, time_scale: 1.0, window: RateWindow::Bucket, faults: Faults::default() },
        Scenario { name: "3,000/min, 40 concurrent, sliding window", per_minute: 3000, concurrent: 40, time_scale: 1.0, window: RateWindow::Sliding, faults: Faults::default() },
        Scenario { name: "3,000/min, 40 concurrent, flaky", per_minute: 3000, concurrent: 40, time_scale: 1.0, window: RateWindow::Bucket, faults: flaky },
        Scenario { name: "80/min, 40 concurrent (time scale 0.01)", per_minute: 80, concurrent: 40, time_scale: 0.01, window: RateWindow::Sliding, faults: Faults::default() },
    ];
    println!("| scenario | tasks | floor | wall | wall ÷ floor | 429s | paid twice |");
    println!("|---|---|---|---|---|---|---|");
    for s in scenarios {
        let dir = tempfile::tempdir().unwrap();
        let sim = darkroom_sim::spawn(SimConfig {
            creates_per_minute: Some(s.per_minute),
            max_concurrent: Some(s.concurrent),
            rate_window: s.window,
            time_scale: s.time_scale,
            faults: s.faults,
            seed: 3,
            credits_micros: 1_000_000_000,
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let client = Client::new(ClientConfig {
            base_url: sim.base_url(),
            api_key: ApiKey::new("bench".into()),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            download_timeout: Duration::from_secs(30),
            user_agent: "darkroom-at-limit".into(),
        })
        .unwrap();
        let ledger = Ledger::open(&dir.path().join("darkroom.db")).await.unwrap();
        let file = dir.path().join("limit.csv");
        let mut text = String::from("id,prompt,aspect_ratio\n");
        for i in 0..tasks {
            text.push_str(&format!("t{i},A product photo of item {i},16:9\n"));
        }
        std::fs::write(&file, text).unwrap();
        let job = ledger.upsert_job("limit", "limit.csv", "").await.unwrap();
        ledger.set_budget(job, Pass::Preview, Money::parse_usd("100").unwrap()).await.unwrap();
        load::load_job(&ledger, job, &file, Pass::Preview, Routing::default(), PriceTable::default(), ReadOptions::default())
            .await
            .unwrap();
        // darkroom is told the account's limits (scaled like the simulator's clock).
        let mut settings = RunSettings::new("limit", Pass::Preview, dir.path().join("out"));
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let rate = (f64::from(s.per_minute) / s.time_scale).round() as u32;
        settings.creates_per_minute = Some(rate);
        settings.max_in_flight = s.concurrent;
        settings.latency_photon_flash_1 = Duration::from_secs_f64(0.3 * s.time_scale);
        settings.polls_per_second = 200;
        let (tx, mut rx) = tokio::sync::mpsc::channel(100_000);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let started = Instant::now();
        let outcome = run_pass(&ledger, &client, &settings, job, tx, Shutdown::default()).await.unwrap();
        let wall = started.elapsed().as_secs_f64();
        let n = tasks as f64;
        let floor = (n * 60.0 / f64::from(s.per_minute) * s.time_scale).max(n * 0.3 * s.time_scale / f64::from(s.concurrent));
        let billing = sim.billing().net_micros;
        let images = i64::try_from(outcome.counts.done).unwrap() * 4_000;
        println!(
            "| {} | {} | {floor:.1} s | {wall:.1} s | {:.3} | {} | {} |",
            s.name,
            outcome.counts.done,
            wall / floor,
            sim.stats().rate_limited,
            if billing == images && ledger.net_charges().await.unwrap().micros() == billing { "no" } else { "YES" }
        );
        sim.shutdown().await;
    }
}
