//! The kill test: a job run against the simulator's `flaky` profile, the darkroom process killed with
//! SIGKILL at random moments and restarted each time until the job is done. Then: every task has
//! exactly one image on disk, the ledger's charges equal the simulator's bill to the micro-dollar, every
//! charge the upstream kept belongs to an image we kept, and spend stayed within the budget.
//!
//! Each run is killed 0.3 to 1.5 s after it starts; creates go at 1,200 a minute so every run is cut
//! short mid-flight. CI runs a small version. The full one (2,000 tasks, 20 kills):
//! `DARKROOM_KILL_TASKS=2000 DARKROOM_KILLS=20 cargo test --release -p darkroom-cli --test kill -- --nocapture`

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{darkroom, get_json, SimProcess};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator for the kill moments (printed, so a failure can be replayed).
struct Lcg(u64);

impl Lcg {
    fn next_in(&mut self, low: u64, high: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        low + (self.0 >> 33) % (high - low)
    }
}

#[test]
fn killed_at_random_moments_the_job_still_ends_with_one_image_per_task_and_the_bill_reconciled() {
    let tasks = setting("DARKROOM_KILL_TASKS", 150);
    let kills = setting("DARKROOM_KILLS", 5);
    let seed = setting("DARKROOM_KILL_SEED", 20261124);
    let mut moments = Lcg(seed);
    println!("kill test: {tasks} tasks, {kills} kills, seed {seed}");

    let dir = tempfile::tempdir().unwrap();
    let mut rows = String::from("id,prompt,aspect_ratio\n");
    for i in 0..tasks {
        rows.push_str(&format!(
            "item-{i},A studio photo of product number {i} on a plain backdrop,1:1\n"
        ));
    }
    std::fs::write(dir.path().join("kill.csv"), rows).unwrap();

    let sim = SimProcess::start(
        dir.path(),
        &[
            "--faults",
            "flaky",
            "--time-scale",
            "0.05",
            "--rate-per-minute",
            "0",
            "--seed",
            &seed.to_string(),
        ],
    );
    let url = sim.base_url.clone();

    let rate = setting("DARKROOM_KILL_RATE", 1200).to_string();
    let budget = format!("{}", tasks); // far above the job's cost: the budget is checked, not hit
    let run = || {
        let mut command = darkroom(dir.path());
        command
            .args([
                "run",
                "kill.csv",
                "--base-url",
                &url,
                "--budget",
                &budget,
                "--json",
                "--rate-per-minute",
                &rate,
            ])
            .env("LUMAAI_API_KEY", "k")
            // The simulator runs at 1/20 of real time: so does the settlement window (240 s).
            .env("DARKROOM_SETTLE_WINDOW_SECONDS", "12")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    };
    let started = Instant::now();
    let mut killed = 0;
    for _ in 0..kills {
        let mut child = run().spawn().unwrap();
        std::thread::sleep(Duration::from_millis(moments.next_in(300, 1500)));
        let alive = child.try_wait().unwrap().is_none();
        println!(
            "kill after {:.1?}: {}",
            started.elapsed(),
            if alive { "killed" } else { "already ended" }
        );
        if alive {
            child.kill().unwrap();
            killed += 1;
        }
        let _ = child.wait();
    }
    let mut finished = None;
    for _ in 0..5 {
        let run_started = Instant::now();
        let status = run().status().unwrap();
        println!(
            "run to the end: exit {:?} in {:.1?}",
            status.code(),
            run_started.elapsed()
        );
        if matches!(status.code(), Some(0 | 1)) {
            finished = status.code();
            break;
        }
    }
    println!(
        "killed {killed} times; finished with exit {finished:?} after {:.1?}",
        started.elapsed()
    );
    assert!(finished.is_some(), "the job never finished");

    // One image per done task; no temporary file left behind.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ledger = runtime
        .block_on(darkroom_ledger::Ledger::open(&dir.path().join("darkroom.db")))
        .unwrap();
    let job = runtime.block_on(ledger.job("kill")).unwrap();
    let counts = runtime
        .block_on(ledger.counts(job.id, darkroom_jobs::Pass::Preview))
        .unwrap();
    assert_eq!(counts.done + counts.blocked, tasks, "{counts:?}");
    let files: Vec<String> = std::fs::read_dir(dir.path().join("out/kill/preview"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().all(|f| !f.starts_with('.')),
        "temporary files left: {files:?}"
    );
    assert_eq!(files.len() as u64, counts.done);

    // The ledger's charges equal the bill; every charge kept upstream is an image we kept.
    let billing = get_json(&url, "/sim/billing");
    let billed = billing["net_micros"].as_i64().unwrap();
    assert_eq!(runtime.block_on(ledger.net_charges()).unwrap().micros(), billed);
    let mut net_by_id: HashMap<String, i64> = HashMap::new();
    for entry in billing["entries"].as_array().unwrap() {
        let sign = if entry["kind"] == "charge" { 1 } else { -1 };
        *net_by_id
            .entry(entry["generation_id"].as_str().unwrap().to_string())
            .or_default() += sign * entry["micros"].as_i64().unwrap();
    }
    let ours: HashMap<String, (darkroom_ledger::GenerationState, i64)> = runtime
        .block_on(ledger.upstream_generations())
        .unwrap()
        .into_iter()
        .map(|(id, state, charge)| (id, (state, charge)))
        .collect();
    let mut kept = HashSet::new();
    for (id, net) in &net_by_id {
        let (state, charge) = ours
            .get(id)
            .unwrap_or_else(|| panic!("generation {id} was billed but is not in the ledger"));
        assert_eq!(charge, net, "generation {id}");
        if *net > 0 {
            assert_eq!(
                *state,
                darkroom_ledger::GenerationState::Kept,
                "generation {id} was paid for but its image was not kept"
            );
            kept.insert(id.clone());
        }
    }
    assert_eq!(kept.len() as u64, counts.done, "one paid generation per image");
    let pass = runtime
        .block_on(ledger.pass(job.id, darkroom_jobs::Pass::Preview))
        .unwrap()
        .unwrap();
    assert!(pass.spent_micros + pass.reserved_micros <= pass.budget_micros);
    assert_eq!(pass.reserved_micros, 0, "no reservation left behind");
    let stats = get_json(&url, "/sim/stats");
    println!("faults injected: {}", stats["faults"]);
    println!(
        "billed {billed} micro-dollars for {} images; ledger matches",
        counts.done
    );

    drop(sim);
}
