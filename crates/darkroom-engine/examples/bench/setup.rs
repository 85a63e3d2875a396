//! What the scenarios share: a simulator on its own runtime, a fresh job in a ledger, darkroom's
//! settings for an account's limits, an event counter, and one measured run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use darkroom_engine::limits::Pacing;
use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{run_pass, Event, RunSettings};
use darkroom_jobs::{Money, Pass};
use darkroom_ledger::Ledger;
use darkroom_provider::Provider;
use darkroom_sim::{SimConfig, SimHandle};
use tokio::runtime::Handle;

/// What the simulator charges for a photon-flash-1 image, in micro-dollars.
pub(crate) const FLASH_MICROS: i64 = 4_000;
/// The simulator's mean photon-flash-1 latency, in (unscaled) seconds.
pub(crate) const FLASH_MEAN_LATENCY: f64 = 0.3;

/// Starts a simulator on its own runtime, with plenty of credit.
pub(crate) async fn start_sim(sims: &Handle, config: SimConfig) -> SimHandle {
    let config = SimConfig {
        credits_micros: 100_000_000_000,
        ..config
    };
    sims.spawn(darkroom_sim::spawn(config)).await.unwrap().unwrap()
}

/// Shuts `sim` down on its own runtime.
pub(crate) async fn stop_sim(sims: &Handle, sim: SimHandle) {
    sims.spawn(sim.shutdown()).await.unwrap();
}

/// A job file of `tasks` one-image rows, loaded into a fresh ledger with a budget that covers it.
pub(crate) async fn fresh_job(dir: &Path, name: &str, tasks: usize) -> (Ledger, i64, PathBuf) {
    let file = darkroom_testkit::jobs::write_csv(dir, &format!("{name}.csv"), tasks, |i| {
        format!("t{i},A product photo of item {i},16:9")
    });
    let ledger = darkroom_testkit::ledger::open_in(dir).await;
    let job = load(&ledger, name, &file).await;
    (ledger, job, file)
}

/// Creates job `name`, budgets its preview pass at $100,000 and loads `file`.
pub(crate) async fn load(ledger: &Ledger, name: &str, file: &Path) -> i64 {
    let budget = Money::parse_usd("100000").unwrap();
    darkroom_testkit::ledger::load_job(ledger, name, file, Pass::Preview, budget).await
}

/// darkroom's settings for an account with these limits, on the simulator's (scaled) clock.
pub(crate) fn settings(
    name: &str,
    out: &Path,
    per_minute: Option<u32>,
    concurrent: u32,
    time_scale: f64,
) -> RunSettings {
    let mut settings = RunSettings::new(name, Pass::Preview, out);
    settings.creates_per_minute = per_minute;
    settings.rate_window = Duration::from_secs(60).mul_f64(time_scale.max(1e-3));
    settings.max_in_flight = concurrent;
    settings.latency_photon_flash_1 = Duration::from_secs_f64(FLASH_MEAN_LATENCY * time_scale);
    settings.polls_per_second = 200;
    // The settlement window scales with the simulator's time, as every other wait does.
    settings.settle_window = darkroom_engine::DEFAULT_SETTLE_WINDOW.mul_f64(time_scale.max(1e-3));
    settings
}

/// Counts finished tasks; cancels `stop` once `stop_after` have finished.
pub(crate) fn count_events(
    stop_after: Option<(u64, Shutdown)>,
) -> (tokio::sync::mpsc::Sender<Event>, Arc<AtomicU64>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(100_000);
    let finished = Arc::new(AtomicU64::new(0));
    let counter = finished.clone();
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            if let Event::TaskFinished { .. } = event {
                let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some((limit, shutdown)) = &stop_after {
                    if n >= *limit {
                        shutdown.stop.cancel();
                    }
                }
            }
        }
    });
    (tx, finished)
}

/// A run's figures: wall time, 429s, done tasks, and generations paid beyond one per done task.
pub(crate) struct Ran {
    pub(crate) wall: f64,
    pub(crate) done: u64,
    pub(crate) not_done: u64,
    pub(crate) rate_limited: u64,
    pub(crate) paid_twice: i64,
    pub(crate) ledger_matches_bill: bool,
    pub(crate) storms: u64,
}

/// Runs `tasks` previews through darkroom against a simulator with `sim_config`, pacing as
/// darkroom does by default.
pub(crate) async fn run_darkroom(
    sims: &Handle,
    sim_config: SimConfig,
    tasks: usize,
    per_minute: Option<u32>,
    concurrent: u32,
) -> Ran {
    run_darkroom_paced(sims, sim_config, tasks, per_minute, concurrent, Pacing::default()).await
}

/// The same, pacing creates as `pacing` says.
pub(crate) async fn run_darkroom_paced(
    sims: &Handle,
    sim_config: SimConfig,
    tasks: usize,
    per_minute: Option<u32>,
    concurrent: u32,
    pacing: Pacing,
) -> Ran {
    let time_scale = sim_config.time_scale;
    let sim = start_sim(sims, sim_config).await;
    let dir = tempfile::tempdir().unwrap();
    let (ledger, job, _) = fresh_job(dir.path(), "bench", tasks).await;
    let client = client(&sim);
    let mut settings = settings(
        "bench",
        &dir.path().join("out"),
        per_minute,
        concurrent,
        time_scale,
    );
    settings.pacing = pacing;
    let (tx, _) = count_events(None);
    let started = Instant::now();
    let outcome = run_pass(&ledger, &client, &settings, job, tx, Shutdown::default())
        .await
        .unwrap();
    let wall = started.elapsed().as_secs_f64();
    let billing = sim.billing().net_micros;
    let stats = sim.stats();
    let done = outcome.counts.done;
    let ran = Ran {
        wall,
        done,
        not_done: outcome.counts.total - done,
        rate_limited: stats.rate_limited,
        paid_twice: billing / FLASH_MICROS - done as i64,
        ledger_matches_bill: ledger.net_charges().await.unwrap().micros() == billing,
        storms: stats.faults.get("rate_limit_storm").copied().unwrap_or(0),
    };
    stop_sim(sims, sim).await;
    ran
}

/// A client for `sim`.
pub(crate) fn client(sim: &SimHandle) -> std::sync::Arc<dyn Provider> {
    darkroom_testkit::sim::client(sim, darkroom_testkit::sim::REQUEST_TIMEOUT)
}

/// The shortest time `tasks` images can take under these limits, in (scaled) seconds.
pub(crate) fn floor_seconds(tasks: usize, per_minute: u32, concurrent: u32, time_scale: f64) -> f64 {
    let n = tasks as f64;
    (n * 60.0 / f64::from(per_minute) * time_scale)
        .max(n * FLASH_MEAN_LATENCY * time_scale / f64::from(concurrent))
}
