//! The work after the last image: from the last image on disk to the end of the run, as
//! `darkroom run` ends it (the engine's finish: outputs rewritten, the account audited; then the
//! HTML report with a thumbnail of every image), with the thumbnails made at the end or as the
//! images arrive (`darkroom_review::thumbs::Maker`, what `darkroom run` does).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{run_pass, Event};
use darkroom_review::thumbs::Maker;
use darkroom_sim::SimConfig;
use tokio::runtime::Handle;

use crate::setup::{client, fresh_job, settings, start_sim, stop_sim};

/// One run's figures, in seconds from its start.
struct Tail {
    last_image: f64,
    engine_done: f64,
    exit: f64,
}

/// Runs `tasks` previews (no rate cap, 40 concurrent, 0.1–0.5 s latency) and ends as the CLI
/// does, with the thumbnails made as images arrive when `early` is set.
async fn run_once(sims: &Handle, tasks: usize, early: bool) -> Tail {
    let sim = start_sim(
        sims,
        SimConfig {
            creates_per_minute: None,
            max_concurrent: Some(40),
            seed: 11,
            ..SimConfig::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (ledger, job, _) = fresh_job(dir.path(), "tail", tasks).await;
    let client = client(&sim);
    let out = dir.path().join("out");
    let settings = settings("tail", &out, None, 40, 1.0);
    let job_dir = out.join("tail");
    let maker = early.then(|| Maker::start(&job_dir));
    let started = Instant::now();
    let last_image = Arc::new(Mutex::new(0.0f64));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(1024);
    let seen = last_image.clone();
    let consumer = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            if let Event::TaskFinished {
                task,
                path: Some(path),
                ..
            } = &event
            {
                *seen.lock().unwrap() = started.elapsed().as_secs_f64();
                if let Some(maker) = &maker {
                    maker.offer("preview", task, std::path::Path::new(path));
                }
            }
        }
        maker
    });
    let outcome = run_pass(&ledger, &client, &settings, job, tx, Shutdown::default())
        .await
        .unwrap();
    assert_eq!(outcome.counts.done, tasks as u64, "every image made");
    let engine_done = started.elapsed().as_secs_f64();
    if let Some(maker) = consumer.await.unwrap() {
        maker.finish().await;
    }
    darkroom_review::report::refresh(&ledger, job, "tail", &job_dir)
        .await
        .expect("the report is written");
    let exit = started.elapsed().as_secs_f64();
    ledger.close().await;
    stop_sim(sims, sim).await;
    let last_image = *last_image.lock().unwrap();
    Tail {
        last_image,
        engine_done,
        exit,
    }
}

/// The table: per job size, thumbnails at the end against as images arrive.
pub(crate) async fn tail(sims: &Handle) -> String {
    let mut out = String::from(
        "### After the last image (no rate cap, 40 concurrent, 0.1–0.5 s latency)\n\n\
         From the last image on disk to the end of the run: the engine's finish (outputs, audit), \
         then the HTML report with every thumbnail. Goal: ≤ 0.5 s at 300 tasks, ≤ 5% of the wall \
         time at 2,000.\n\n\
         | tasks | thumbnails | wall | last image at | engine finish | report | after the last image | share of wall |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for tasks in [300, 2_000] {
        for early in [false, true] {
            let t = run_once(sims, tasks, early).await;
            let after = t.exit - t.last_image;
            let row = format!(
                "| {tasks} | {} | {:.2} s | {:.2} s | {:.2} s | {:.2} s | **{after:.2} s** | {:.1}% |\n",
                if early { "as images arrive" } else { "at the end" },
                t.exit,
                t.last_image,
                t.engine_done - t.last_image,
                t.exit - t.engine_done,
                100.0 * after / t.exit,
            );
            eprint!("{row}");
            out.push_str(&row);
        }
    }
    out
}
