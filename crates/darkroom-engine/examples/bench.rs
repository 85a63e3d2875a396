//! The benchmark program: how close darkroom gets to the floor the account's limits set, what it
//! costs in CPU with the limits off, how it behaves with a million-task job, and how it compares
//! with the client a user would otherwise script. Every scenario runs against the simulator
//! (`darkroom_sim::spawn`) on loopback with a real SQLite ledger, and prints a Markdown table.
//!
//! ```sh
//! cargo run --release -p darkroom-engine --example bench -- [limit] [overhead] [scale] [naive] [--write BENCHMARKS.md]
//! ```
//!
//! Scenarios: `limit`, `faults`, `overhead`, `scale` (`--scale-tasks N`), `naive`; with none named,
//! all of these run. `trace` and `ledger` are for diagnosis. `--write FILE` replaces the text between
//! `<!-- bench:begin -->` and `<!-- bench:end -->` in FILE with the tables, the machine and the
//! command. The simulator runs on a runtime of its own (threads named `sim`), so darkroom's CPU time
//! is the process's minus the simulator's threads'.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{run_pass, Event, RunSettings};
use darkroom_jobs::{Money, Pass, PriceTable, ReadOptions, Routing};
use darkroom_ledger::Ledger;
use darkroom_provider::Provider;
use darkroom_sim::{Faults, RateWindow, SimConfig, SimHandle};
use futures::StreamExt;
use tokio::runtime::Handle;

const FLASH_MICROS: i64 = 4_000;
const FLASH_MEAN_LATENCY: f64 = 0.3;

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let mut chosen = Vec::new();
    let mut write = None;
    let mut scale_tasks = 1_000_000u64;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--write" => write = args.next().map(PathBuf::from),
            "--scale-tasks" => scale_tasks = args.next().and_then(|n| n.parse().ok()).unwrap_or(scale_tasks),
            name => chosen.push(name.to_string()),
        }
    }
    if chosen.is_empty() {
        chosen = ["limit", "faults", "overhead", "scale", "naive"]
            .map(String::from)
            .to_vec();
    }
    // The simulator's own runtime: its threads are named, so their CPU time can be told apart.
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sim")
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("darkroom")
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()
        .unwrap();
    let sims = sim_rt.handle().clone();
    let report = rt.block_on(async move {
        let mut report = String::new();
        for name in &chosen {
            let section = match name.as_str() {
                "limit" => limit(&sims).await,
                "overhead" => overhead(&sims).await,
                "scale" => scale(&sims, scale_tasks).await,
                "naive" => naive(&sims).await,
                "faults" => faults_one_by_one(&sims).await,
                "trace" => trace_flaky(&sims).await,
                // The ledger's part alone, for profiling.
                "ledger" => {
                    let dir = tempfile::tempdir().unwrap();
                    format!(
                        "ledger transitions per task: {:.0} µs\n",
                        ledger_steps(dir.path(), 5000).await
                    )
                }
                other => panic!(
                    "unknown scenario {other:?}: limit, faults, overhead, scale, naive, trace or ledger"
                ),
            };
            println!("{section}");
            report.push_str(&section);
            report.push('\n');
        }
        report
    });
    drop(rt);
    drop(sim_rt);
    if let Some(path) = write {
        let text = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = ("<!-- bench:begin -->", "<!-- bench:end -->");
        let (Some(a), Some(b)) = (text.find(begin), text.find(end)) else {
            panic!("{} has no {begin} ... {end} section", path.display());
        };
        let command: Vec<String> = std::env::args().skip(1).collect();
        let updated = format!(
            "{}{begin}\n\n{}\n`cargo run --release -p darkroom-engine --example bench -- {}`\n\n{report}{end}{}",
            &text[..a],
            machine(),
            command.join(" "),
            &text[b + end.len()..]
        );
        std::fs::write(&path, updated).unwrap();
        eprintln!("updated {}", path.display());
    }
}

// ---- measuring ---------------------------------------------------------------------------------

/// The machine: cores, memory, CPU model, date.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".into(), |m| m.trim().to_string());
    let date = time::OffsetDateTime::now_utc().date();
    format!(
        "Machine: {cores} cores ({model}), {:.1} GiB memory, shared with other work. Measured {date}.\n",
        mem_kb as f64 / 1024.0 / 1024.0
    )
}

/// CPU seconds (user + system) of the whole process, and of the simulator's threads.
fn cpu_seconds() -> (f64, f64) {
    fn ticks(stat: &str) -> u64 {
        // Fields after the command name (which may hold spaces): state is the first; utime and
        // stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        n(11) + n(12)
    }
    const TICKS_PER_SECOND: f64 = 100.0;
    let all = ticks(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default());
    let mut sim = 0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() == "sim" {
                sim += ticks(&std::fs::read_to_string(task.path().join("stat")).unwrap_or_default());
            }
        }
    }
    (all as f64 / TICKS_PER_SECOND, sim as f64 / TICKS_PER_SECOND)
}

/// Peak resident memory since the last [`reset_peak_memory`], in MB.
fn peak_memory_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn reset_peak_memory() {
    // Linux: writing 5 to clear_refs resets the peak resident set size.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

// ---- shared set-up -----------------------------------------------------------------------------

/// Starts a simulator on its own runtime, with plenty of credit.
async fn start_sim(sims: &Handle, config: SimConfig) -> SimHandle {
    let config = SimConfig {
        credits_micros: 100_000_000_000,
        ..config
    };
    sims.spawn(darkroom_sim::spawn(config)).await.unwrap().unwrap()
}

async fn stop_sim(sims: &Handle, sim: SimHandle) {
    sims.spawn(sim.shutdown()).await.unwrap();
}

/// A job file of `tasks` one-image rows, loaded into a fresh ledger with a budget that covers it.
async fn fresh_job(dir: &Path, name: &str, tasks: usize) -> (Ledger, i64, PathBuf) {
    let file = dir.join(format!("{name}.csv"));
    let mut text = String::from("id,prompt,aspect_ratio\n");
    for i in 0..tasks {
        writeln!(text, "t{i},A product photo of item {i},16:9").unwrap();
    }
    std::fs::write(&file, text).unwrap();
    let ledger = Ledger::open(&dir.join(format!("{name}.db"))).await.unwrap();
    let job = load(&ledger, name, &file).await;
    (ledger, job, file)
}

async fn load(ledger: &Ledger, name: &str, file: &Path) -> i64 {
    let job = ledger
        .upsert_job(name, &file.display().to_string(), "")
        .await
        .unwrap();
    ledger
        .set_budget(job, Pass::Preview, Money::parse_usd("100000").unwrap())
        .await
        .unwrap();
    darkroom_engine::load::load_job(
        ledger,
        job,
        file,
        Pass::Preview,
        Routing::default(),
        PriceTable::default(),
        ReadOptions::default(),
    )
    .await
    .unwrap();
    job
}

/// darkroom's settings for an account with these limits, on the simulator's (scaled) clock.
fn settings(
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
fn count_events(stop_after: Option<(u64, Shutdown)>) -> (tokio::sync::mpsc::Sender<Event>, Arc<AtomicU64>) {
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
struct Ran {
    wall: f64,
    done: u64,
    not_done: u64,
    rate_limited: u64,
    paid_twice: i64,
    ledger_matches_bill: bool,
    storms: u64,
}

async fn run_darkroom(
    sims: &Handle,
    sim_config: SimConfig,
    tasks: usize,
    per_minute: Option<u32>,
    concurrent: u32,
) -> Ran {
    let time_scale = sim_config.time_scale;
    let sim = start_sim(sims, sim_config).await;
    let dir = tempfile::tempdir().unwrap();
    let (ledger, job, _) = fresh_job(dir.path(), "bench", tasks).await;
    let client = client(&sim);
    let settings = settings(
        "bench",
        &dir.path().join("out"),
        per_minute,
        concurrent,
        time_scale,
    );
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

fn client(sim: &SimHandle) -> Arc<dyn Provider> {
    Arc::new(
        darkroom_luma::LumaProvider::new(darkroom_luma::ClientConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            download_timeout: Duration::from_secs(30),
            user_agent: "darkroom-bench".into(),
            ..darkroom_luma::ClientConfig::new(sim.base_url(), darkroom_luma::ApiKey::new("bench".into()))
        })
        .unwrap(),
    )
}

fn floor_seconds(tasks: usize, per_minute: u32, concurrent: u32, time_scale: f64) -> f64 {
    let n = tasks as f64;
    (n * 60.0 / f64::from(per_minute) * time_scale)
        .max(n * FLASH_MEAN_LATENCY * time_scale / f64::from(concurrent))
}

// ---- scenarios ---------------------------------------------------------------------------------

struct LimitCase {
    name: &'static str,
    per_minute: u32,
    time_scale: f64,
    window: RateWindow,
    faults: Faults,
}

/// 1,000 previews at the account's limits: wall time ÷ the floor, 429s, nothing paid twice.
async fn limit(sims: &Handle) -> String {
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
async fn trace_flaky(sims: &Handle) -> String {
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

/// Each fault of the `flaky` profile alone, at its `flaky` rate: which one makes the tail.
async fn faults_one_by_one(sims: &Handle) -> String {
    let tasks = 1000;
    let flaky = Faults::profile("flaky").unwrap();
    let none = Faults::default();
    let cases = [
        (
            "create 5xx 2%",
            Faults {
                create_5xx: flaky.create_5xx,
                ..none
            },
        ),
        (
            "accepted then dropped 2%",
            Faults {
                create_dropped: flaky.create_dropped,
                ..none
            },
        ),
        (
            "get 5xx 2%",
            Faults {
                get_5xx: flaky.get_5xx,
                ..none
            },
        ),
        (
            "slow get 1%",
            Faults {
                get_slow: flaky.get_slow,
                ..none
            },
        ),
        (
            "generation failed 2%",
            Faults {
                generation_failed: flaky.generation_failed,
                ..none
            },
        ),
        (
            "moderation 1%",
            Faults {
                moderation: flaky.moderation,
                ..none
            },
        ),
        (
            "download truncated 2%",
            Faults {
                download_truncated: flaky.download_truncated,
                ..none
            },
        ),
        (
            "download failed 1%",
            Faults {
                download_failed: flaky.download_failed,
                ..none
            },
        ),
        (
            "429 storm 0.2%",
            Faults {
                rate_limit_storm: flaky.rate_limit_storm,
                ..none
            },
        ),
    ];
    let mut out = String::from(
        "### Each `flaky` fault alone (1,000 previews, 3,000/min, 40 concurrent)\n\n\
         | fault | done | wall ÷ floor | 429s | storms | paid twice |\n|---|---|---|---|---|---|\n",
    );
    for (name, faults) in cases {
        let config = SimConfig {
            creates_per_minute: Some(3000),
            max_concurrent: Some(40),
            faults,
            seed: 3,
            ..SimConfig::default()
        };
        let ran = run_darkroom(sims, config, tasks, Some(3000), 40).await;
        let row = format!(
            "| {name} | {} | {:.3} | {} | {} | {} |\n",
            ran.done,
            ran.wall / floor_seconds(tasks, 3000, 40, 1.0),
            ran.rate_limited,
            ran.storms,
            ran.paid_twice
        );
        eprint!("{row}");
        out.push_str(&row);
    }
    out
}

/// Limits off, latency 0: tasks per second end to end, and CPU seconds per 1,000 tasks.
async fn overhead(sims: &Handle) -> String {
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
async fn ledger_steps(dir: &Path, tasks: usize) -> f64 {
    let (ledger, job, _) = fresh_job(dir, "ledger-steps", tasks).await;
    let pending = ledger
        .pending_tasks(job, Pass::Preview, 0, tasks as i64)
        .await
        .unwrap();
    let started = Instant::now();
    for task in &pending {
        ledger.reserve(task.id).await.unwrap();
        let generation = ledger.record_intent(task.id, "fp").await.unwrap();
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

/// A million-task job: validate and estimate, load, peak memory while running, resume at 99%.
async fn scale(sims: &Handle, tasks: u64) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("million.csv");
    // Rows ask for 1, 2 or 3 variants in turn (as `generate_job` writes them): 2 tasks a row.
    let rows = tasks / 2;
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
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
    mark_done(&db, counted * 99 / 100).await;
    let ledger = Ledger::open(&db).await.unwrap();
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

/// Marks the first `n` tasks done, as a run that got that far leaves them (a benchmark shortcut:
/// running 990,000 tasks first would take a quarter of an hour).
async fn mark_done(db: &Path, n: u64) {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .connect()
        .await
        .unwrap();
    sqlx::query(
        "UPDATE tasks SET state = 'done', reserved_micros = 0, output_path = 'out/' || task_key || '.jpg',
                generation_id = 'g-' || id, attempts = 1, finished_at = 0, latency_ms = 300
         WHERE id IN (SELECT id FROM tasks ORDER BY id LIMIT ?1)",
    )
    .bind(i64::try_from(n).unwrap())
    .execute(&mut conn)
    .await
    .unwrap();
}

// ---- the naive client --------------------------------------------------------------------------

/// What a user would otherwise script: every row fired with bounded concurrency and no create-rate
/// limiter, each failed call retried up to twice (as the official SDKs do: 0.5 s doubling, or the
/// `Retry-After` given), each generation polled with GET every 250 ms, then its image downloaded.
async fn naive_run(base_url: &str, tasks: usize, concurrent: usize, dir: &Path) -> (f64, u64) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let started = Instant::now();
    let done = futures::stream::iter(0..tasks)
        .map(|i| {
            let http = http.clone();
            let base_url = base_url.to_string();
            let path = dir.join(format!("t{i}.jpg"));
            async move {
                let body = serde_json::json!({
                    "prompt": format!("A product photo of item {i}"),
                    "model": "photon-flash-1",
                    "aspect_ratio": "16:9",
                });
                let created: serde_json::Value = call(|| {
                    http.post(format!("{base_url}/generations/image"))
                        .bearer_auth("naive")
                        .json(&body)
                })
                .await?;
                let id = created["id"].as_str()?.to_string();
                let url = loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let generation: serde_json::Value = call(|| {
                        http.get(format!("{base_url}/generations/{id}"))
                            .bearer_auth("naive")
                    })
                    .await?;
                    match generation["state"].as_str() {
                        Some("completed") => break generation["assets"]["image"].as_str()?.to_string(),
                        Some("failed") => return None,
                        _ => {}
                    }
                };
                let bytes = http.get(url).send().await.ok()?.bytes().await.ok()?;
                tokio::fs::write(&path, &bytes).await.ok()?;
                Some(())
            }
        })
        .buffer_unordered(concurrent)
        .filter(|r| std::future::ready(r.is_some()))
        .count()
        .await;
    (started.elapsed().as_secs_f64(), done as u64)
}

/// One API call with up to two retries on 408, 409, 429, 5xx and connection errors.
async fn call(request: impl Fn() -> reqwest::RequestBuilder) -> Option<serde_json::Value> {
    let mut delay = Duration::from_millis(500);
    for attempt in 0..3 {
        let last = attempt == 2;
        match request().send().await {
            Ok(response) if response.status().is_success() => return response.json().await.ok(),
            Ok(response) => {
                let status = response.status().as_u16();
                if last || !(status == 408 || status == 409 || status == 429 || status >= 500) {
                    return None;
                }
                let wait = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|s| *s <= 60.0)
                    .map_or(delay, Duration::from_secs_f64);
                tokio::time::sleep(wait).await;
            }
            Err(_) if !last => tokio::time::sleep(delay).await,
            Err(_) => return None,
        }
        delay *= 2;
    }
    None
}

/// darkroom beside the naive client, on the same simulated account.
async fn naive(sims: &Handle) -> String {
    let tasks = 1000;
    let dropped = Faults {
        create_dropped: 0.02,
        ..Faults::default()
    };
    let cases = [
        ("3,000/min, 40 concurrent", 3000, 1.0, Faults::default()),
        (
            "80/min, 40 concurrent (time scale 0.01)",
            80,
            0.01,
            Faults::default(),
        ),
        (
            "3,000/min, 40 concurrent, 2% accepted-then-dropped",
            3000,
            1.0,
            dropped,
        ),
    ];
    let mut out = String::from(
        "### darkroom beside a naive client (1,000 previews)\n\n\
         | scenario | client | wall | 429s | rows lost | paid twice |\n|---|---|---|---|---|---|\n",
    );
    for (name, per_minute, time_scale, faults) in cases {
        let config = SimConfig {
            creates_per_minute: Some(per_minute),
            max_concurrent: Some(40),
            rate_window: RateWindow::Sliding,
            time_scale,
            faults,
            seed: 7,
            ..SimConfig::default()
        };
        let sim = start_sim(sims, config.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let (wall, done) = naive_run(&sim.base_url(), tasks, 40, dir.path()).await;
        let stats = sim.stats();
        let naive_paid_twice = sim.billing().net_micros / FLASH_MICROS - done as i64;
        stop_sim(sims, sim).await;
        let ours = run_darkroom(sims, config, tasks, Some(per_minute), 40).await;
        let rows = [
            format!(
                "| {name} | naive | {wall:.1} s | {} | {} | {naive_paid_twice} |\n",
                stats.rate_limited,
                tasks as u64 - done
            ),
            format!(
                "| | darkroom | {:.1} s ({:.2}× naive) | {} | {} | {} |\n",
                ours.wall,
                ours.wall / wall,
                ours.rate_limited,
                ours.not_done,
                ours.paid_twice
            ),
        ];
        for row in rows {
            eprint!("{row}");
            out.push_str(&row);
        }
    }
    out
}
