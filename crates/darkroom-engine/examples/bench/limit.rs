//! At the account's limits: how close darkroom gets to the floor they set, and a trace of one
//! flaky run.

use std::fmt::Write as _;
use std::time::Instant;

use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{run_pass, Event};
use darkroom_sim::{Faults, RateWindow, SimConfig};
use tokio::runtime::Handle;

use crate::setup::{client, floor_seconds, fresh_job, run_darkroom, settings, start_sim, stop_sim};

pub(crate) struct LimitCase {
    name: &'static str,
    per_minute: u32,
    time_scale: f64,
    window: RateWindow,
    faults: Faults,
}

/// 1,000 previews at the account's limits: wall time ÷ the floor, 429s, nothing paid twice.
pub(crate) async fn limit(sims: &Handle) -> String {
    let tasks = 1000;
    let flaky = Faults::profile("flaky").unwrap();
    let cases = [
        LimitCase {
            name: "3,000/min, 40 concurrent, token bucket",
            per_minute: 3000,
            time_scale: 1.0,
            window: RateWindow::Bucket,
            faults: Faults::default(),
        },
        LimitCase {
            name: "3,000/min, 40 concurrent, sliding window",
            per_minute: 3000,
            time_scale: 1.0,
            window: RateWindow::Sliding,
            faults: Faults::default(),
        },
        LimitCase {
            name: "3,000/min, 40 concurrent, `flaky`",
            per_minute: 3000,
            time_scale: 1.0,
            window: RateWindow::Bucket,
            faults: flaky,
        },
        LimitCase {
            name: "80/min, 40 concurrent (time scale 0.01)",
            per_minute: 80,
            time_scale: 0.01,
            window: RateWindow::Sliding,
            faults: Faults::default(),
        },
    ];
    let mut out = String::from(
        "### At the limit (1,000 previews, flash latency 0.1–0.5 s)\n\n\
         | scenario | done | floor | wall | wall ÷ floor | 429s | 429 storms | wall ÷ (floor + storms) | paid twice | ledger = bill |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for case in cases {
        let config = SimConfig {
            creates_per_minute: Some(case.per_minute),
            max_concurrent: Some(40),
            rate_window: case.window,
            time_scale: case.time_scale,
            faults: case.faults,
            seed: 3,
            ..SimConfig::default()
        };
        let ran = run_darkroom(sims, config, tasks, Some(case.per_minute), 40).await;
        let floor = floor_seconds(tasks, case.per_minute, 40, case.time_scale);
        // A storm refuses every create for its length: no client can send during it.
        let storm_seconds = ran.storms as f64 * 5.0 * case.time_scale;
        let row = format!(
            "| {} | {}{} | {floor:.1} s | {:.1} s | {:.3} | {} | {} ({storm_seconds:.0} s) | {:.3} | {} | {} |\n",
            case.name,
            ran.done,
            if ran.not_done > 0 {
                format!(" (+{} blocked or failed)", ran.not_done)
            } else {
                String::new()
            },
            ran.wall,
            ran.wall / floor,
            ran.rate_limited,
            ran.storms,
            ran.wall / (floor + storm_seconds),
            ran.paid_twice,
            if ran.ledger_matches_bill { "yes" } else { "NO" },
        );
        eprint!("{row}");
        out.push_str(&row);
    }
    out
}

/// One `flaky` run with its events on a time line: where the time beyond the floor goes.
pub(crate) async fn trace_flaky(sims: &Handle) -> String {
    let config = SimConfig {
        creates_per_minute: Some(3000),
        max_concurrent: Some(40),
        faults: Faults::profile("flaky").unwrap(),
        seed: 3,
        ..SimConfig::default()
    };
    let sim = start_sim(sims, config).await;
    let dir = tempfile::tempdir().unwrap();
    let (ledger, job, _) = fresh_job(dir.path(), "trace", 1000).await;
    let client = client(&sim);
    let settings = settings("trace", &dir.path().join("out"), Some(3000), 40, 1.0);
    let (tx, mut rx) = tokio::sync::mpsc::channel(100_000);
    let started = Instant::now();
    let log = tokio::spawn(async move {
        let mut done = 0;
        let mut lines = String::new();
        let mut last_second = 0;
        while let Some(event) = rx.recv().await {
            let at = started.elapsed().as_secs_f64();
            match event {
                Event::TaskFinished { .. } => {
                    done += 1;
                    if at as u64 > last_second {
                        last_second = at as u64;
                        writeln!(lines, "{at:6.2} s  {done} finished").unwrap();
                    }
                }
                other => writeln!(lines, "{at:6.2} s  {other:?}").unwrap(),
            }
        }
        lines
    });
    run_pass(&ledger, &client, &settings, job, tx, Shutdown::default())
        .await
        .unwrap();
    let wall = started.elapsed().as_secs_f64();
    let lines = log.await.unwrap();
    let stats = sim.stats();
    stop_sim(sims, sim).await;
    format!("{lines}wall {wall:.1} s, faults {:?}\n", stats.faults)
}
