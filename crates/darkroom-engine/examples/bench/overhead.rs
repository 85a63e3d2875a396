//! darkroom's own cost with the limits off: CPU per task, and the ledger's transitions alone.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use darkroom_engine::run_pass;
use darkroom_engine::scheduler::Shutdown;
use darkroom_jobs::Pass;
use darkroom_sim::SimConfig;
use tokio::runtime::Handle;

use crate::measure::cpu_seconds;
use crate::setup::{client, count_events, fresh_job, settings, start_sim, stop_sim};

/// Limits off, latency 0: tasks per second end to end, and CPU seconds per 1,000 tasks.
pub(crate) async fn overhead(sims: &Handle) -> String {
    let tasks = 5000;
    let sim = start_sim(sims, SimConfig::unlimited()).await;
    let dir = tempfile::tempdir().unwrap();
    let (ledger, job, _) = fresh_job(dir.path(), "overhead", tasks).await;
    let client = client(&sim);
    let mut settings = settings("overhead", &dir.path().join("out"), None, 64, 0.0);
    settings.polls_per_second = 100_000;
    settings.max_downloads = 16;
    let (tx, _) = count_events(None);
    let (cpu0, sim0) = cpu_seconds();
    let started = Instant::now();
    let outcome = run_pass(&ledger, &client, &settings, job, tx, Shutdown::default())
        .await
        .unwrap();
    let wall = started.elapsed().as_secs_f64();
    let (cpu1, sim1) = cpu_seconds();
    assert_eq!(outcome.counts.done, tasks as u64);
    let darkroom_cpu = (cpu1 - cpu0) - (sim1 - sim0);
    let sim_cpu = sim1 - sim0;
    // One image, to time the steps of a task on their own.
    let url = {
        let created = client
            .create(
                &serde_json::from_str(
                    r#"{"prompt":"a chair","model":"photon-flash-1","aspect_ratio":"16:9"}"#,
                )
                .unwrap(),
            )
            .await
            .unwrap();
        loop {
            let g = client.get(&created.id).await.unwrap();
            if let Some(url) = g.image_url() {
                break url.to_string();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let bytes = client.download(&url, 1 << 26).await.unwrap();
    stop_sim(sims, sim).await;
    let reps = 200;
    let t = Instant::now();
    for _ in 0..reps {
        darkroom_engine::images::verify(
            &bytes,
            darkroom_jobs::Format::Jpg,
            darkroom_jobs::AspectRatio::Landscape16x9,
        )
        .unwrap();
    }
    let verify_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(reps);
    let t = Instant::now();
    for i in 0..reps {
        darkroom_engine::files::write_atomically(&dir.path().join(format!("w/{i}.jpg")), &bytes).unwrap();
    }
    let write_ms = t.elapsed().as_secs_f64() * 1e3 / f64::from(reps);
    let ledger_us = ledger_steps(dir.path(), 2000).await;
    let mut out = String::from(
        "### Overhead (limits off, latency 0, 5,000 tasks)\n\n\
         | measure | result | goal |\n|---|---|---|\n",
    );
    writeln!(
        out,
        "| tasks per second, end to end (ledger, create, poll, download, verify, write) | {:.0} | ≥ 1,000 |",
        tasks as f64 / wall
    )
    .unwrap();
    writeln!(
        out,
        "| darkroom CPU seconds per 1,000 tasks | {:.2} | |",
        darkroom_cpu * 1000.0 / tasks as f64
    )
    .unwrap();
    writeln!(
        out,
        "| simulator CPU seconds per 1,000 tasks (same process, same cores) | {:.2} | |",
        sim_cpu * 1000.0 / tasks as f64
    )
    .unwrap();
    writeln!(
        out,
        "| tasks per second darkroom's CPU alone would allow on these cores | {:.0} | |",
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as f64 * tasks as f64
            / darkroom_cpu.max(1e-9)
    )
    .unwrap();
    writeln!(
        out,
        "| verify one {} KB 2048×1152 JPEG | {verify_us:.0} µs | |",
        bytes.len() / 1024
    )
    .unwrap();
    writeln!(
        out,
        "| write it atomically (temporary file, fsync, rename, directory fsync) | {write_ms:.2} ms | |"
    )
    .unwrap();
    writeln!(out, "| a task's ledger transitions, one after another (reserve → intent → submitted → completed → done) | {ledger_us:.0} µs | |").unwrap();
    out
}

/// The ledger's part of one task: its five transitions, timed alone.
pub(crate) async fn ledger_steps(dir: &Path, tasks: usize) -> f64 {
    let (ledger, job, _) = fresh_job(dir, "ledger-steps", tasks).await;
    let pending = ledger
        .pending_tasks(job, Pass::Preview, 0, tasks as i64)
        .await
        .unwrap();
    let started = Instant::now();
    for task in &pending {
        ledger.reserve(task.id).await.unwrap();
        let generation = ledger.record_intent(task.id, "fp", "luma").await.unwrap();
        ledger
            .record_submitted(generation, &format!("u{}", task.id))
            .await
            .unwrap();
        ledger
            .record_completed(generation, "http://x/y.jpg")
            .await
            .unwrap();
        let content = darkroom_engine::images::content_of(b"an image");
        ledger
            .record_done(generation, "/tmp/x.jpg", &content)
            .await
            .unwrap();
    }
    started.elapsed().as_secs_f64() * 1e6 / pending.len() as f64
}
