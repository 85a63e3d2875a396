//! The three ways an upstream may count "80 creates a minute" (a token bucket, N in any 60 s,
//! strict spacing), each with darkroom learning, darkroom pinned to strict spacing, and the naive
//! client, in one run: wall time as a ratio to that semantics' own floor.

use darkroom_engine::limits::Pacing;
use darkroom_sim::{RateWindow, SimConfig};
use tokio::runtime::Handle;

use crate::naive::naive_run;
use crate::setup::{run_darkroom_paced, start_sim, stop_sim, FLASH_MEAN_LATENCY};

/// 100 previews at 80 a minute, 40 concurrent, on real time (a 429's `Retry-After` is whole
/// seconds, so a scaled clock would measure its rounding).
pub(crate) async fn windows(sims: &Handle) -> String {
    let (tasks, per_minute) = (100usize, 80u32);
    let mut out = String::from(
        "### Three ways of counting 80 creates a minute (100 previews, 40 concurrent, flash latency 0.1–0.5 s)\n\n\
         | upstream counts | floor | client | wall | wall ÷ floor | wall ÷ naive | 429s | 429s a minute | paid twice | ledger = bill |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (name, window) in [
        ("token bucket of 80, refilled 80 a minute", RateWindow::Bucket),
        ("80 in any 60 s", RateWindow::Sliding),
        ("one every 0.75 s", RateWindow::Spacing),
    ] {
        let config = SimConfig {
            creates_per_minute: Some(per_minute),
            max_concurrent: Some(40),
            rate_window: window,
            seed: 11,
            ..SimConfig::default()
        };
        let floor = floor(window, tasks, per_minute);
        let sim = start_sim(sims, config.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let (naive, naive_done) = naive_run(&sim.base_url(), tasks, 40, dir.path()).await;
        let naive_429s = sim.stats().rate_limited;
        stop_sim(sims, sim).await;
        let row = format!(
            "| {name} | {floor:.1} s | naive | {naive:.1} s{} | {:.3} | 1 | {naive_429s} | {:.0} | | |\n",
            if naive_done < tasks as u64 {
                format!(" ({naive_done} done)")
            } else {
                String::new()
            },
            naive / floor,
            naive_429s as f64 * 60.0 / naive,
        );
        eprint!("{row}");
        out.push_str(&row);
        for (label, pacing) in [
            ("darkroom, learning", Pacing::Learn),
            ("darkroom, strict", Pacing::Strict),
        ] {
            let ran = run_darkroom_paced(sims, config.clone(), tasks, Some(per_minute), 40, pacing).await;
            let row = format!(
                "| | | {label} | {:.1} s{} | **{:.3}** | {:.2} | {} | {:.1} | {} | {} |\n",
                ran.wall,
                if ran.not_done > 0 {
                    format!(" ({} not done)", ran.not_done)
                } else {
                    String::new()
                },
                ran.wall / floor,
                ran.wall / naive,
                ran.rate_limited,
                ran.rate_limited as f64 * 60.0 / ran.wall,
                ran.paid_twice,
                if ran.ledger_matches_bill { "yes" } else { "NO" },
            );
            eprint!("{row}");
            out.push_str(&row);
        }
    }
    out
}

/// The earliest the last of `tasks` images can be done, in seconds: when the upstream lets the
/// last create through, plus the mean latency. A bucket of N lets N through at once and one every
/// 60/N s after; a window lets N through every 60 s; spacing one every 60/N s from the first.
fn floor(window: RateWindow, tasks: usize, per_minute: u32) -> f64 {
    let (n, gap) = (tasks as f64, 60.0 / f64::from(per_minute));
    let last_create = match window {
        RateWindow::Bucket => (n - f64::from(per_minute)).max(0.0) * gap,
        RateWindow::Sliding => ((n - 1.0) / f64::from(per_minute)).floor() * 60.0,
        RateWindow::Spacing => (n - 1.0) * gap,
    };
    last_create + FLASH_MEAN_LATENCY
}
