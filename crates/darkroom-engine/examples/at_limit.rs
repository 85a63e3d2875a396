//! How close a run gets to the floor the account's limits set: wall time ÷ max(N / rate, N × latency
//! ÷ concurrency), and the 429s received, against the simulator enforcing the limits.
//!
//! `cargo run --release -p darkroom-engine --example at_limit -- [TASKS]`

#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{run_pass, RunSettings};
use darkroom_jobs::Pass;
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
    let tasks: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let flaky = Faults::profile("flaky").unwrap();
    let scenarios = [
        Scenario {
            name: "3,000/min, 40 concurrent, token bucket",
            per_minute: 3000,
            concurrent: 40,
            time_scale: 1.0,
            window: RateWindow::Bucket,
            faults: Faults::default(),
        },
        Scenario {
            name: "3,000/min, 40 concurrent, sliding window",
            per_minute: 3000,
            concurrent: 40,
            time_scale: 1.0,
            window: RateWindow::Sliding,
            faults: Faults::default(),
        },
        Scenario {
            name: "3,000/min, 40 concurrent, flaky",
            per_minute: 3000,
            concurrent: 40,
            time_scale: 1.0,
            window: RateWindow::Bucket,
            faults: flaky,
        },
        Scenario {
            name: "80/min, 40 concurrent (time scale 0.01)",
            per_minute: 80,
            concurrent: 40,
            time_scale: 0.01,
            window: RateWindow::Sliding,
            faults: Faults::default(),
        },
    ];
    println!("| scenario | tasks | floor | wall | wall ÷ floor | 429s | paid twice |");
    println!("|---|---|---|---|---|---|---|");
    for s in scenarios {
        let sim_config = SimConfig {
            creates_per_minute: Some(s.per_minute),
            max_concurrent: Some(s.concurrent),
            rate_window: s.window,
            time_scale: s.time_scale,
            faults: s.faults,
            seed: 3,
            ..SimConfig::default()
        };
        let support::Bench {
            dir,
            sim,
            client,
            ledger,
            job,
        } = support::setup("limit", sim_config, tasks, "16:9").await;
        // darkroom is told the account's limits, on the simulator's scaled clock.
        let mut settings = RunSettings::new("limit", Pass::Preview, dir.path().join("out"));
        settings.creates_per_minute = Some(s.per_minute);
        settings.rate_window = Duration::from_secs(60).mul_f64(s.time_scale);
        settings.max_in_flight = s.concurrent;
        settings.latency_photon_flash_1 = Duration::from_secs_f64(0.3 * s.time_scale);
        settings.polls_per_second = 200;
        let tx = support::discard_events();
        let started = Instant::now();
        let outcome = run_pass(&ledger, &client, &settings, job, tx, Shutdown::default())
            .await
            .unwrap();
        let wall = started.elapsed().as_secs_f64();
        let n = tasks as f64;
        let floor = (n * 60.0 / f64::from(s.per_minute) * s.time_scale)
            .max(n * 0.3 * s.time_scale / f64::from(s.concurrent));
        let billing = sim.billing().net_micros;
        let images = i64::try_from(outcome.counts.done).unwrap() * 4_000;
        println!(
            "| {} | {} | {floor:.1} s | {wall:.1} s | {:.3} | {} | {} |",
            s.name,
            outcome.counts.done,
            wall / floor,
            sim.stats().rate_limited,
            if billing == images && ledger.net_charges().await.unwrap().micros() == billing {
                "no"
            } else {
                "YES"
            }
        );
        sim.shutdown().await;
    }
}
