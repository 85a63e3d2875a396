//! `shared-account`: two jobs run at once on one account, sharing its create rate and in-flight
//! cap through one ledger, against one job of their combined size: the wall time's ratio (the goal
//! is at most 1.1) and the 429s each draws.

use std::time::Instant;

use darkroom_engine::account::Account;
use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{run_pass, RunSettings};
use darkroom_sim::{RateWindow, SimConfig};
use tokio::runtime::Handle;

use crate::setup::{client, count_events, load, settings, start_sim, stop_sim};

/// 200 previews at 80 a minute (a sliding window) and 40 in flight, on the simulator's clock scaled
/// by 0.1: as one job, then as two jobs of 100 started together.
pub(crate) async fn shared_account(sims: &Handle) -> String {
    let (tasks, per_minute, concurrent, time_scale) = (200usize, 80u32, 40u32, 0.1);
    let config = SimConfig {
        creates_per_minute: Some(per_minute),
        max_concurrent: Some(concurrent),
        rate_window: RateWindow::Sliding,
        time_scale,
        seed: 17,
        ..SimConfig::default()
    };
    let mut out = String::from(
        "### One account shared by two jobs (200 previews, 80 a minute in any window, 40 in flight, time ×0.1)\n\n\
         | runs | wall | ratio to one job | 429s | ledger = bill |\n|---|---|---|---|---|\n",
    );
    let mut one_wall = None;
    for jobs in [1usize, 2] {
        let sim = start_sim(sims, config.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let ledger = darkroom_testkit::ledger::open_in(dir.path()).await;
        let account = Account::new(None, "luma", &sim.base_url(), "bench-key");
        let mut runs = Vec::new();
        for j in 0..jobs {
            let name = format!("job{j}");
            let file =
                darkroom_testkit::jobs::write_csv(dir.path(), &format!("{name}.csv"), tasks / jobs, |i| {
                    format!("{name}-{i},A product photo of item {i} for {name},16:9")
                });
            let job = load(&ledger, &name, &file).await;
            let mut settings: RunSettings = settings(
                &name,
                &dir.path().join("out"),
                Some(per_minute),
                concurrent,
                time_scale,
            );
            settings.account = Some(account.clone());
            runs.push((job, settings));
        }
        let started = Instant::now();
        let handles: Vec<_> = runs
            .into_iter()
            .map(|(job, settings)| {
                let (ledger, client) = (ledger.clone(), client(&sim));
                tokio::spawn(async move {
                    let (tx, _) = count_events(None);
                    run_pass(&ledger, &client, &settings, job, tx, Shutdown::default())
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut done = 0;
        for handle in handles {
            done += handle.await.unwrap().counts.done;
        }
        let wall = started.elapsed().as_secs_f64();
        let billing = sim.billing().net_micros;
        let matches = ledger.net_charges().await.unwrap().micros() == billing;
        let rate_limited = sim.stats().rate_limited;
        stop_sim(sims, sim).await;
        let ratio = wall / *one_wall.get_or_insert(wall);
        let row = format!(
            "| {jobs} job(s) of {} ({done} done) | {wall:.1} s | **{ratio:.3}** | {rate_limited} | {} |\n",
            tasks / jobs,
            if matches { "yes" } else { "**no**" }
        );
        eprint!("{row}");
        out.push_str(&row);
    }
    out.push('\n');
    out
}
