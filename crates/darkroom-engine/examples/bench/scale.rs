//! A million-task job: validate and estimate, load, peak memory while running, resume at 99%.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use darkroom_engine::run_pass;
use darkroom_engine::scheduler::Shutdown;
use darkroom_jobs::{Pass, PriceTable, ReadOptions, Routing};
use darkroom_ledger::Ledger;
use darkroom_sim::SimConfig;
use tokio::runtime::Handle;

use crate::measure::{peak_memory_mb, reset_peak_memory};
use crate::setup::{client, count_events, load, settings, start_sim, stop_sim};

/// Writes a CSV job of about `tasks` tasks at `file`; returns its rows.
fn write_job(file: &std::path::Path, tasks: u64) -> u64 {
    // Rows ask for 1, 2 or 3 variants in turn (as `generate_job` writes them): 2 tasks a row.
    let rows = tasks / 2;
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(file).unwrap());
        writeln!(out, "id,prompt,aspect_ratio,variants,sku,group").unwrap();
        let ratios = ["1:1", "16:9", "9:16", "4:3", "3:4"];
        for i in 0..rows {
            writeln!(
                out,
                "p{i},\"An armchair number {i} in a bright living room, product photography\",{},{},SKU-{},{}",
                ratios[(i % 5) as usize],
                1 + i % 3,
                i / 4,
                i % 100
            )
            .unwrap();
        }
    }
    rows
}

/// Loading alone (for profiling, e.g. under `perf record`): a job of about `tasks` tasks written,
/// then loaded into a fresh ledger; prints the wall time and peak memory.
pub(crate) async fn load_only(tasks: u64) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("million.csv");
    let rows = write_job(&file, tasks);
    reset_peak_memory();
    let ledger = Ledger::open(&dir.path().join("darkroom.db")).await.unwrap();
    let started = Instant::now();
    load(&ledger, "million", &file).await;
    let seconds = started.elapsed().as_secs_f64();
    ledger.close().await;
    format!(
        "loading {rows} rows: {seconds:.2} s, peak {:.0} MB\n",
        peak_memory_mb()
    )
}

/// A million-task job: validate and estimate, load, peak memory while running, resume at 99%.
pub(crate) async fn scale(sims: &Handle, tasks: u64) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("million.csv");
    let rows = write_job(&file, tasks);
    let file_mb = std::fs::metadata(&file).unwrap().len() as f64 / 1e6;

    // Validate + estimate: one streaming read, tasks counted per model.
    let started = Instant::now();
    let counted = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || {
            let routing = Routing::default();
            let mut estimate = darkroom_jobs::EstimateBuilder::new(PriceTable::default(), None);
            let report = darkroom_jobs::read_job(&file, &ReadOptions::default(), |row| {
                let n = darkroom_jobs::expand(&row, Pass::Preview, &routing).count() as u64;
                estimate.add(routing.model_for(Pass::Preview), n);
            })
            .unwrap();
            assert!(report.is_valid());
            let estimate = estimate.finish(
                Pass::Preview,
                darkroom_jobs::Assumptions {
                    creates_per_minute: 80,
                    max_in_flight: 40,
                    latency_seconds_photon_1: 3.5,
                    latency_seconds_photon_flash_1: 0.3,
                },
                0.25,
            );
            estimate.tasks
        })
        .await
        .unwrap()
    };
    let validate = started.elapsed().as_secs_f64();
    eprintln!("validate + estimate: {validate:.2} s");

    // Load into a fresh ledger.
    reset_peak_memory();
    let db = dir.path().join("darkroom.db");
    let ledger = Ledger::open(&db).await.unwrap();
    let started = Instant::now();
    let job = load(&ledger, "million", &file).await;
    let load_seconds = started.elapsed().as_secs_f64();
    let load_peak = peak_memory_mb();
    eprintln!("load: {load_seconds:.1} s, peak {load_peak:.0} MB");

    // Run with the limits off until 20,000 tasks are done, then stop: the run drains and writes
    // the output files for every task of the job.
    // The simulator shares the process: a small image cache keeps its memory out of the figure.
    let sim = start_sim(
        sims,
        SimConfig {
            image_cache: 16,
            ..SimConfig::unlimited()
        },
    )
    .await;
    let client = client(&sim);
    let out = dir.path().join("out");
    let mut run_settings = settings("million", &out, None, 64, 0.0);
    run_settings.polls_per_second = 100_000;
    let shutdown = Shutdown::default();
    let part = 5_000;
    let (tx, _) = count_events(Some((part, shutdown.clone())));
    reset_peak_memory();
    let run_start_rss = peak_memory_mb();
    let started = Instant::now();
    let outcome = run_pass(&ledger, &client, &run_settings, job, tx, shutdown)
        .await
        .unwrap();
    let run_seconds = started.elapsed().as_secs_f64();
    let run_peak = peak_memory_mb();
    eprintln!("partial run: {run_seconds:.1} s, peak {run_peak:.0} MB");
    let started = Instant::now();
    darkroom_engine::outputs::write_outputs(&ledger, job, &out.join("million"))
        .await
        .unwrap();
    let outputs_seconds = started.elapsed().as_secs_f64();
    let done_in_part = outcome.counts.done;
    ledger.close().await;

    // Resume with 99% done: mark the first 99% done directly in the ledger (as a run that got that
    // far leaves them), then time a fresh start until the simulator sees its first create.
    let ledger = Ledger::open(&db).await.unwrap();
    ledger.mark_first_tasks_done(counted * 99 / 100).await.unwrap();
    ledger.close().await;
    let shutdown = Shutdown::default();
    let (tx, _) = count_events(Some((1, shutdown.clone())));
    let before = sim.stats().creates_accepted;
    let started = Instant::now();
    let first_create = {
        let sim_watch = async {
            while sim.stats().creates_accepted == before {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            started.elapsed().as_secs_f64()
        };
        let resume = async {
            let ledger = Ledger::open(&db).await.unwrap();
            let job = load(&ledger, "million", &file).await;
            run_pass(&ledger, &client, &run_settings, job, tx, shutdown)
                .await
                .unwrap();
        };
        let (first, ()) = tokio::join!(sim_watch, resume);
        first
    };
    stop_sim(sims, sim).await;

    let mut out = format!(
        "### A {counted}-task job ({rows} rows, {file_mb:.0} MB CSV)\n\n| measure | result | goal |\n|---|---|---|\n"
    );
    writeln!(
        out,
        "| validate + estimate (one streaming read) | {validate:.2} s | |"
    )
    .unwrap();
    writeln!(
        out,
        "| load into a fresh ledger | {load_seconds:.1} s (peak {load_peak:.0} MB) | |"
    )
    .unwrap();
    writeln!(out, "| peak memory while running (limits off; stopped after {done_in_part} done, then the output files of every task written; {run_start_rss:.0} MB resident at its start) | {run_peak:.0} MB | < 150 MB |").unwrap();
    writeln!(
        out,
        "| that partial run, including writing the output files | {run_seconds:.1} s | |"
    )
    .unwrap();
    writeln!(
        out,
        "| writing the output files of all {counted} tasks again | {outputs_seconds:.1} s | |"
    )
    .unwrap();
    writeln!(out, "| resume with 99% done: start (open ledger, re-check the unchanged file) to first create | {first_create:.2} s | < 2 s |").unwrap();
    out
}
