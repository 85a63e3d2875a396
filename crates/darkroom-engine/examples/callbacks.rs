//! Callbacks against polling alone: the same previews twice against the simulator at 3,000
//! creates/min and 40 concurrent (flash latency 0.1–0.5 s), once polling and once with callbacks;
//! the status reads the simulator answered (GETs and list calls) and the wall time of each.
//!
//! `cargo run --release -p darkroom-engine --example callbacks -- [TASKS] [LOST]`
//! (LOST: the share of callback deliveries the simulator drops, default 0.)

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::net::SocketAddr;
use std::time::Instant;

use darkroom_engine::callbacks::CallbackReceiver;
use darkroom_sim::{Faults, SimConfig};
use darkroom_testkit::sim::status_reads;

struct Measured {
    wall: f64,
    reads: u64,
    done: u64,
    paid_once: bool,
}

async fn measure(tasks: usize, lost: f64, callbacks: bool) -> Measured {
    let sim_config = SimConfig {
        creates_per_minute: Some(3000),
        max_concurrent: Some(40),
        faults: Faults {
            callback_lost: lost,
            ..Faults::default()
        },
        seed: 5,
        ..SimConfig::default()
    };
    let bench = darkroom_testkit::bench::setup("callbacks", sim_config, tasks, "1:1").await;
    let mut settings = bench.settings();
    settings.creates_per_minute = Some(3000);
    settings.max_in_flight = 40;
    settings.polls_per_second = 200;
    if callbacks {
        settings.callbacks =
            Some(CallbackReceiver::bind(SocketAddr::from(([127, 0, 0, 1], 0)), None).unwrap());
    }
    let started = Instant::now();
    let outcome = bench.run(&settings).await;
    let wall = started.elapsed().as_secs_f64();
    let billed = bench.sim.billing().net_micros;
    let measured = Measured {
        wall,
        reads: status_reads(&bench.sim),
        done: outcome.counts.done,
        paid_once: billed == i64::try_from(outcome.counts.done).unwrap() * 4_000
            && bench.ledger.net_charges().await.unwrap().micros() == billed,
    };
    bench.sim.shutdown().await;
    measured
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let tasks: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let lost: f64 = args.next().and_then(|p| p.parse().ok()).unwrap_or(0.0);
    let polled = measure(tasks, 0.0, false).await;
    let called = measure(tasks, lost, true).await;
    let floor = tasks as f64 * 60.0 / 3000.0;
    println!("| mode | images | status reads | reads per image | wall | wall ÷ floor | paid once |");
    println!("|---|---|---|---|---|---|---|");
    for (mode, m) in [
        ("polling alone", &polled),
        (&*format!("callbacks ({:.0}% lost)", lost * 100.0), &called),
    ] {
        println!(
            "| {mode} | {} | {} | {:.2} | {:.1} s | {:.3} | {} |",
            m.done,
            m.reads,
            m.reads as f64 / m.done.max(1) as f64,
            m.wall,
            m.wall / floor,
            if m.paid_once { "yes" } else { "NO" }
        );
    }
    println!(
        "\nstatus reads: {:.1}x fewer with callbacks; wall time ratio (callbacks / polling) {:.3}",
        polled.reads as f64 / called.reads.max(1) as f64,
        called.wall / polled.wall
    );
}
