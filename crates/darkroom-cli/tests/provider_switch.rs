//! A job resumed on another provider, with the real binary against `darkroom sim` processes sharing
//! one account: each create an earlier run left unsettled is settled against the provider that
//! received it (never looked for in the new provider's list, which would pay for it again), tasks
//! never sent are made on the new provider at its price, and the ledger equals the sum of both
//! providers' bills. A provider whose key is missing while it holds unsettled creates refuses the
//! run with exit 2, naming the provider and the rows, with nothing sent.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{against, code, get_json, text, write, Killed, SimProcess};

/// Rows of the job: one preview each (photon-flash-1: Luma $0.004, Replicate $0.01).
const ROWS: usize = 10;
/// Creates in flight at once on the first run: the ones left unsettled when it is killed.
const IN_FLIGHT: usize = 3;

fn job(dir: &Path) {
    let rows: String = (0..ROWS)
        .map(|n| format!("lamp-{n},A brass desk lamp number {n} on an oak desk,1:1\n"))
        .collect();
    write(dir, "lamps.csv", &format!("id,prompt,aspect_ratio\n{rows}"));
}

/// `darkroom` against `sim`, with a Replicate token for its Replicate API too.
fn on_both(dir: &Path, sim: &SimProcess) -> Command {
    let mut command = against(dir, sim);
    command
        .env(
            "REPLICATE_BASE_URL",
            sim.base_url.replace("/dream-machine/v1", "/replicate"),
        )
        .env("REPLICATE_API_TOKEN", "r8_test-token")
        // The simulator runs at 1/100 of real time: so does the settlement window (240 s).
        .env("DARKROOM_SETTLE_WINDOW_SECONDS", "3");
    command
}

/// The simulator holds every Luma create unanswered for 1.5 s before committing it; darkroom on
/// Luma is killed while its first creates are held. Returns once those creates have committed
/// (the account in `state` is the simulator's, kept across its restarts).
fn killed_with_creates_in_flight_on_luma(dir: &Path, state: &Path) {
    let sim = SimProcess::start(
        dir,
        &[
            "--state",
            state.to_str().unwrap(),
            "--time-scale",
            "0.01",
            "--create-late",
            "1",
            "--late-commit-delay",
            "1.5",
        ],
    );
    let child = on_both(dir, &sim)
        .args(["run", "lamps.csv", "--max-in-flight", &IN_FLIGHT.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let started = Instant::now();
    loop {
        let stats = get_json(&sim.base_url, "/sim/stats");
        if stats["faults"]["create_late"].as_u64().unwrap_or(0) >= IN_FLIGHT as u64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no creates arrived: {stats}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    // The held creates commit (and are billed) on Luma after their delay.
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(
        sim.net_billing(),
        IN_FLIGHT as i64 * 4_000,
        "Luma billed the creates it committed"
    );
}

fn report(dir: &Path, sim: &SimProcess) -> serde_json::Value {
    let output = on_both(dir, sim)
        .args(["report", "lamps", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn a_job_resumed_on_another_provider_settles_each_create_where_it_was_sent_and_pays_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    job(dir.path());
    let state = dir.path().join("account");
    killed_with_creates_in_flight_on_luma(dir.path(), &state);

    let sim = SimProcess::start(
        dir.path(),
        &["--state", state.to_str().unwrap(), "--time-scale", "0.01"],
    );
    let output = on_both(dir.path(), &sim)
        .args(["run", "lamps.csv", "--provider", "replicate"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{IN_FLIGHT} task(s) of this pass were sent to luma and are not settled"
        )),
        "the run says where the unsettled creates are settled: {stderr}"
    );

    let billing = get_json(&sim.base_url, "/sim/billing");
    let charges = |provider: &str| {
        billing["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["provider"] == provider && e["kind"] == "charge")
            .count()
    };
    assert_eq!(
        (charges("luma"), charges("replicate")),
        (IN_FLIGHT, ROWS - IN_FLIGHT),
        "the creates Luma received were settled on Luma, the rest made once on Replicate: {billing}"
    );
    let bill = sim.net_billing();
    assert_eq!(
        bill,
        IN_FLIGHT as i64 * 4_000 + (ROWS - IN_FLIGHT) as i64 * 10_000
    );
    assert_eq!(
        report(dir.path(), &sim)["spent_micros"],
        bill,
        "the ledger equals both bills"
    );

    let results = std::fs::read_to_string(dir.path().join("out/lamps/results.jsonl")).unwrap();
    let done = results
        .lines()
        .filter(|l| l.contains(r#""status":"done""#))
        .count();
    assert_eq!(done, ROWS, "{results}");
    let made_on = |provider: &str| {
        results
            .lines()
            .filter(|l| l.contains(&format!(r#""provider":"{provider}""#)))
            .count()
    };
    assert_eq!(
        (made_on("luma"), made_on("replicate")),
        (IN_FLIGHT, ROWS - IN_FLIGHT),
        "results.jsonl names the provider that made each image: {results}"
    );

    let again = on_both(dir.path(), &sim)
        .args(["run", "lamps.csv"])
        .output()
        .unwrap();
    assert_eq!(code(&again), 0, "{}", text(&again.stderr));
    assert_eq!(
        sim.net_billing(),
        bill,
        "done tasks are never made again, on any provider"
    );
}

#[test]
fn resuming_on_another_provider_without_the_key_of_the_one_holding_unsettled_creates_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    job(dir.path());
    let state = dir.path().join("account");
    killed_with_creates_in_flight_on_luma(dir.path(), &state);

    let sim = SimProcess::start(
        dir.path(),
        &["--state", state.to_str().unwrap(), "--time-scale", "0.01"],
    );
    let before = get_json(&sim.base_url, "/sim/stats");
    // A Replicate token only: Luma's key is missing, and Luma holds the unsettled creates.
    let output = on_both(dir.path(), &sim)
        .env_remove("LUMAAI_API_KEY")
        .env_remove("LUMAAI_BASE_URL")
        .args(["run", "lamps.csv", "--provider", "replicate"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{IN_FLIGHT} task(s) of this pass were sent to luma and are not settled, and LUMAAI_API_KEY is not set; nothing was sent"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 2 (id \"lamp-0\"): sent to luma, not settled"),
        "{stderr}"
    );
    assert!(stderr.contains("--provider luma"), "says what to do: {stderr}");
    let after = get_json(&sim.base_url, "/sim/stats");
    assert_eq!(
        before["creates_accepted"], after["creates_accepted"],
        "nothing was sent to either provider"
    );
    assert_eq!(sim.net_billing(), IN_FLIGHT as i64 * 4_000);
}
