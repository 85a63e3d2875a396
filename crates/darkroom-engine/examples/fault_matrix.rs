//! The fault matrix: each fault kind of the simulator at a high rate, one at a time and all
//! together, against a real ledger. Prints, per row, the faults injected, how the tasks ended, the
//! exit code `darkroom run` would give, and whether the ledger's charges equal the simulator's bill.
//!
//! `cargo run --release -p darkroom-engine --example fault_matrix -- [TASKS]`

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use darkroom_engine::StopReason;
use darkroom_sim::{Faults, SimConfig};

#[tokio::main]
async fn main() {
    let tasks: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
    let storm = Faults {
        rate_limit_storm: 0.01,
        ..Faults::default()
    };
    let all = Faults {
        create_5xx: 0.10,
        create_dropped: 0.05,
        get_5xx: 0.10,
        get_slow: 0.01,
        generation_failed: 0.05,
        moderation: 0.02,
        stuck: 0.02,
        download_truncated: 0.05,
        download_failed: 0.02,
        rate_limit_storm: 0.01,
        // The matrix polls; callbacks are measured in the benchmark program.
        callback_lost: 0.0,
        callback_duplicated: 0.0,
        ..Faults::default()
    };
    let rows: Vec<(&str, Faults)> = vec![
        ("none", Faults::default()),
        (
            "5xx on create 10%",
            Faults {
                create_5xx: 0.10,
                ..Faults::default()
            },
        ),
        (
            "accepted then dropped 5%",
            Faults {
                create_dropped: 0.05,
                ..Faults::default()
            },
        ),
        (
            "5xx on get/list 10%",
            Faults {
                get_5xx: 0.10,
                ..Faults::default()
            },
        ),
        (
            "failed generations 5%",
            Faults {
                generation_failed: 0.05,
                ..Faults::default()
            },
        ),
        (
            "moderation 2%",
            Faults {
                moderation: 0.02,
                ..Faults::default()
            },
        ),
        (
            "stuck generations 2%",
            Faults {
                stuck: 0.02,
                ..Faults::default()
            },
        ),
        (
            "truncated downloads 5%",
            Faults {
                download_truncated: 0.05,
                ..Faults::default()
            },
        ),
        ("429 storms", storm),
        ("all together", all),
    ];
    println!("| faults | injected | done | blocked | failed | attempts | exit | ledger = bill | seconds |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, faults) in rows {
        let sim_config = SimConfig {
            time_scale: 0.02,
            creates_per_minute: None,
            faults,
            seed: 42,
            ..SimConfig::default()
        };
        let bench = darkroom_testkit::bench::setup("matrix", sim_config, tasks, "1:1").await;
        let mut settings = bench.settings();
        settings.creates_per_minute = None;
        settings.latency_photon_flash_1 = Duration::from_millis(10);
        settings.polls_per_second = 200;
        settings.stuck_after = Duration::from_secs(3);
        settings.settle_window = Duration::from_secs(2);
        settings.max_attempts = 6;
        settings.breaker_threshold = 1_000;
        let started = Instant::now();
        let outcome = bench.run(&settings).await;
        let seconds = started.elapsed().as_secs_f64();
        let c = outcome.counts;
        let exit = match outcome.stop {
            Some(StopReason::BudgetExhausted | StopReason::SpendingLimit(_)) => 3,
            Some(StopReason::Interrupted) => 4,
            Some(StopReason::Deadline) => 6,
            Some(StopReason::Refused(_)) => 5,
            Some(StopReason::Failed(_)) => 1,
            None if c.failed + c.blocked + c.pending + c.in_flight > 0 => 1,
            None => 0,
        };
        let injected: u64 = bench.sim.stats().faults.values().sum();
        let matched = bench.ledger.net_charges().await.unwrap().micros() == bench.sim.billing().net_micros;
        println!(
            "| {name} | {injected} | {} | {} | {} | {} | {exit} | {} | {seconds:.1} |",
            c.done,
            c.blocked,
            c.failed,
            c.attempts,
            if matched { "yes" } else { "NO" }
        );
        bench.sim.shutdown().await;
    }
}
