//! Routing by price and failover, with the real binary against a `darkroom sim` process serving
//! Luma's and Replicate's APIs on one account. The simulator accepts one key only, so a Luma key
//! other than it is refused (401) exactly as a revoked key would be: a run with failover moves its
//! tasks never sent to Replicate, within the same budget, and the ledger equals what each provider
//! billed (Luma nothing). A cheapest-routed job makes each row on the cheapest provider that can
//! make it. A kill mid-failover and the same command again pay for nothing twice.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{darkroom, get_json, text, write, Killed, SimProcess};

/// The one key the simulator accepts, on every provider's API.
const KEY: &str = "sim-good-key";

/// A job of `rows` plain previews (photon-flash-1, 1:1: Luma $0.004, Replicate $0.01).
fn plain_job(dir: &Path, rows: usize) {
    let rows: String = (0..rows)
        .map(|n| format!("lamp-{n},A brass desk lamp number {n} on an oak desk,1:1\n"))
        .collect();
    write(dir, "lamps.csv", &format!("id,prompt,aspect_ratio\n{rows}"));
}

/// `darkroom` against `sim` with `luma_key` for Luma and the simulator's key for Replicate; fal
/// has no key, so it is never used.
fn darkroom_on(dir: &Path, sim: &SimProcess, luma_key: &str) -> Command {
    let mut command = darkroom(dir);
    command
        .env("LUMAAI_API_KEY", luma_key)
        .env("LUMAAI_BASE_URL", &sim.base_url)
        .env(
            "REPLICATE_BASE_URL",
            sim.base_url.replace("/dream-machine/v1", "/replicate"),
        )
        .env("REPLICATE_API_TOKEN", KEY)
        // The simulator runs at 1/100 of real time: so does the settlement window (240 s).
        .env("DARKROOM_SETTLE_WINDOW_SECONDS", "3");
    command
}

/// What the simulator billed each provider, net of refunds, in micro-dollars.
fn billed_by_provider(sim: &SimProcess) -> BTreeMap<String, i64> {
    let billing = get_json(&sim.base_url, "/sim/billing");
    let mut by_provider = BTreeMap::new();
    for entry in billing["entries"].as_array().unwrap() {
        let micros = entry["micros"].as_i64().unwrap();
        let signed = if entry["kind"] == "refund" {
            -micros
        } else {
            micros
        };
        let provider = entry["provider"].as_str().unwrap_or("luma").to_string();
        *by_provider.entry(provider).or_insert(0) += signed;
    }
    by_provider
}

/// The ledger's net spend of the job, from `darkroom report --json`.
fn ledger_spent(dir: &Path, sim: &SimProcess, job: &str) -> i64 {
    let output = darkroom_on(dir, sim, KEY)
        .args(["report", job, "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    report["spent_micros"].as_i64().unwrap()
}

/// Each line of the job's `results.jsonl`: (id, status, provider).
fn results(dir: &Path, job: &str) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(dir.join("out").join(job).join("results.jsonl")).unwrap();
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let field = |name: &str| v[name].as_str().unwrap_or_default().to_string();
            (field("id"), field("status"), field("provider"))
        })
        .collect()
}

#[test]
fn a_run_whose_luma_key_is_refused_fails_over_to_replicate_and_finishes_within_budget() {
    let dir = tempfile::tempdir().unwrap();
    plain_job(dir.path(), 5);
    let sim = SimProcess::start(dir.path(), &["--api-key", KEY, "--time-scale", "0.01"]);

    let output = darkroom_on(dir.path(), &sim, "a-revoked-key")
        .args(["run", "lamps.csv", "--failover", "replicate", "--budget", "1"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(support::code(&output), 0, "{stderr}");
    assert!(
        stderr.contains("failover: luma refused the run")
            && stderr.contains("5 task(s) never sent there move to replicate"),
        "the run says which provider refused, where the tasks went and how many: {stderr}"
    );
    assert!(stderr.contains("Invalid API key"), "and why: {stderr}");

    let billed = billed_by_provider(&sim);
    assert_eq!(billed.get("luma").copied().unwrap_or(0), 0, "Luma billed nothing");
    assert_eq!(billed.get("replicate").copied(), Some(5 * 10_000));
    assert_eq!(
        ledger_spent(dir.path(), &sim, "lamps"),
        billed.values().sum::<i64>(),
        "the ledger is Luma's bill plus Replicate's"
    );
    let results = results(dir.path(), "lamps");
    assert_eq!(results.len(), 5);
    for (id, status, provider) in &results {
        assert_eq!(
            (status.as_str(), provider.as_str()),
            ("done", "replicate"),
            "{id}"
        );
    }
}

#[test]
fn a_refused_run_without_failover_stops_as_before_and_sends_nothing_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    plain_job(dir.path(), 3);
    let sim = SimProcess::start(dir.path(), &["--api-key", KEY, "--time-scale", "0.01"]);

    let output = darkroom_on(dir.path(), &sim, "a-revoked-key")
        .args(["run", "lamps.csv", "--budget", "1"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(support::code(&output), 5, "{stderr}");
    assert!(!stderr.contains("failover"), "{stderr}");
    assert!(billed_by_provider(&sim).values().all(|m| *m == 0));
}

#[test]
fn failover_under_a_budget_that_ends_mid_run_never_exceeds_it() {
    let dir = tempfile::tempdir().unwrap();
    plain_job(dir.path(), 6);
    let sim = SimProcess::start(dir.path(), &["--api-key", KEY, "--time-scale", "0.01"]);

    // $0.035 is three and a half of Replicate's $0.01 previews (and eight of Luma's $0.004).
    let output = darkroom_on(dir.path(), &sim, "a-revoked-key")
        .args(["run", "lamps.csv", "--failover", "replicate", "--budget", "0.035"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(support::code(&output), 3, "the budget ran out: {stderr}");
    let billed = billed_by_provider(&sim);
    let total: i64 = billed.values().sum();
    assert_eq!(billed.get("replicate").copied(), Some(3 * 10_000), "{billed:?}");
    assert!(total <= 35_000, "billed {total} over a $0.035 budget");
    assert_eq!(ledger_spent(dir.path(), &sim, "lamps"), total);
    assert!(
        stderr.contains("lamps preview: 3 done (0 cached), 0 blocked, 0 failed, 3 skipped, 0 left"),
        "what did not fit is skipped: {stderr}"
    );
    assert!(
        stderr.contains("raise it with `darkroom run lamps.csv --failover replicate --budget USD`"),
        "the command printed to resume routes as this one did: {stderr}"
    );
}

#[test]
fn a_cheapest_routed_mixed_job_makes_each_row_where_it_is_cheapest() {
    let dir = tempfile::tempdir().unwrap();
    // Rows only Luma can make (a modify reference) and plain rows; Luma's previews cost $0.02
    // here, on its table and its bill alike, so Replicate's $0.01 is cheaper for the plain ones.
    mixed_job(dir.path());
    let sim = SimProcess::start(
        dir.path(),
        &[
            "--api-key",
            KEY,
            "--time-scale",
            "0.01",
            "--price-photon-flash-1",
            "0.02",
        ],
    );

    let output = darkroom_on(dir.path(), &sim, KEY)
        .env("DARKROOM_PRICE_PHOTON_FLASH_1", "0.02")
        .args(["run", "mix.csv", "--routing", "cheapest", "--budget", "1"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(support::code(&output), 0, "{stderr}");
    assert!(
        stderr.contains("2 task(s) go to luma, $0.04 at its prices")
            && stderr.contains("3 task(s) go to replicate, $0.03 at its prices"),
        "the run names how many tasks went where: {stderr}"
    );
    assert!(stderr.contains("fal: not used (FAL_KEY is not set)"), "{stderr}");
    for (id, status, provider) in results(dir.path(), "mix") {
        let expected = if id.starts_with("edit") {
            "luma"
        } else {
            "replicate"
        };
        assert_eq!((status.as_str(), provider.as_str()), ("done", expected), "{id}");
    }
    let billed = billed_by_provider(&sim);
    assert_eq!(billed.get("luma").copied(), Some(2 * 20_000), "{billed:?}");
    assert_eq!(billed.get("replicate").copied(), Some(3 * 10_000), "{billed:?}");
    assert_eq!(
        ledger_spent(dir.path(), &sim, "mix"),
        billed.values().sum::<i64>(),
        "the ledger is the sum of both bills"
    );
}

#[test]
fn cheapest_routing_refuses_a_row_no_provider_with_a_key_can_make_before_spending() {
    let dir = tempfile::tempdir().unwrap();
    mixed_job(dir.path());
    let sim = SimProcess::start(dir.path(), &["--api-key", KEY, "--time-scale", "0.01"]);
    // No Luma key at all: only Replicate is used, and it can't modify.
    let output = darkroom_on(dir.path(), &sim, KEY)
        .env_remove("LUMAAI_API_KEY")
        .args(["run", "mix.csv", "--routing", "cheapest"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(support::code(&output), 2, "{stderr}");
    assert!(
        stderr.contains("line 3 (id \"edit-1\")") && stderr.contains("line 5 (id \"edit-2\")"),
        "the row is named with its line: {stderr}"
    );
    assert!(
        billed_by_provider(&sim).values().all(|m| *m == 0),
        "nothing was spent"
    );
}

/// The simulator holds every create unanswered for 1.5 s before committing it; darkroom, failed
/// over from a refused Luma key to Replicate, is killed while its first Replicate creates are held.
fn killed_mid_failover(dir: &Path, state: &Path, in_flight: usize) {
    let sim = SimProcess::start(
        dir,
        &[
            "--api-key",
            KEY,
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
    let child = darkroom_on(dir, &sim, "a-revoked-key")
        .args([
            "run",
            "lamps.csv",
            "--failover",
            "replicate",
            "--max-in-flight",
            &in_flight.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let started = Instant::now();
    loop {
        let stats = get_json(&sim.base_url, "/sim/stats");
        if stats["faults"]["create_late"].as_u64().unwrap_or(0) >= in_flight as u64 {
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
    // The held creates commit (and are billed) on Replicate after their delay.
    std::thread::sleep(Duration::from_millis(2_500));
    let billed = billed_by_provider(&sim);
    assert_eq!(
        billed.get("replicate").copied(),
        Some(in_flight as i64 * 10_000),
        "{billed:?}"
    );
}

#[test]
fn a_kill_mid_failover_and_the_same_command_again_pay_for_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    plain_job(dir.path(), 8);
    let state = dir.path().join("account");
    killed_mid_failover(dir.path(), &state, 3);

    let sim = SimProcess::start(
        dir.path(),
        &[
            "--api-key",
            KEY,
            "--state",
            state.to_str().unwrap(),
            "--time-scale",
            "0.01",
        ],
    );
    let output = darkroom_on(dir.path(), &sim, "a-revoked-key")
        .args([
            "run",
            "lamps.csv",
            "--failover",
            "replicate",
            "--max-in-flight",
            "3",
        ])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(support::code(&output), 0, "{stderr}");
    let billed = billed_by_provider(&sim);
    assert_eq!(billed.get("luma").copied().unwrap_or(0), 0, "{billed:?}");
    assert_eq!(
        billed.get("replicate").copied(),
        Some(8 * 10_000),
        "each image billed once, the three held at the kill included: {billed:?}"
    );
    assert_eq!(ledger_spent(dir.path(), &sim, "lamps"), 8 * 10_000);
    let results = results(dir.path(), "lamps");
    assert_eq!(results.len(), 8);
    assert!(
        results.iter().all(|(_, s, p)| s == "done" && p == "replicate"),
        "{results:?}"
    );
}

/// The mixed job of the cheapest-routing tests: two rows only Luma can make, three plain ones.
fn mixed_job(dir: &Path) {
    write(
        dir,
        "mix.csv",
        "id,prompt,aspect_ratio,modify_image_ref\n\
         plain-1,A linen armchair in a sunlit room,1:1,\n\
         edit-1,The same armchair in green velvet,1:1,https://example.com/chair.jpg\n\
         plain-2,A walnut side table,1:1,\n\
         edit-2,The same table in black oak,1:1,https://example.com/table.jpg\n\
         plain-3,A wool rug on a concrete floor,1:1,\n",
    );
}

#[test]
fn estimate_shows_the_cheapest_mix_over_the_providers_with_a_key() {
    let dir = tempfile::tempdir().unwrap();
    mixed_job(dir.path());
    let output = darkroom(dir.path())
        .env("LUMAAI_API_KEY", "k")
        .env("REPLICATE_API_TOKEN", "r")
        .env("DARKROOM_PRICE_PHOTON_FLASH_1", "0.02")
        .args(["estimate", "mix.csv", "--json"])
        .output()
        .unwrap();
    assert_eq!(support::code(&output), 0, "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let mix = &json["cheapest_mix"];
    // Edits on Luma at $0.02, plain rows on Replicate at $0.01; fal has no key.
    assert_eq!(mix["cost_micros"], 2 * 20_000 + 3 * 10_000, "{mix}");
    assert_eq!(mix["with_key"], true);
    let providers: Vec<(String, u64)> = mix["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["provider"].as_str().unwrap().to_string(),
                p["tasks"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(providers, [("luma".to_string(), 2), ("replicate".to_string(), 3)]);
    assert_eq!(mix["none"], serde_json::json!([]));

    let text_output = darkroom(dir.path())
        .env("LUMAAI_API_KEY", "k")
        .env("REPLICATE_API_TOKEN", "r")
        .env("DARKROOM_PRICE_PHOTON_FLASH_1", "0.02")
        .args(["estimate", "mix.csv"])
        .output()
        .unwrap();
    let stdout = text(&text_output.stdout);
    assert!(stdout.contains("cheapest        $0.07"), "{stdout}");
}

#[test]
fn estimate_names_the_rows_no_provider_with_a_key_can_make() {
    let dir = tempfile::tempdir().unwrap();
    mixed_job(dir.path());
    let output = darkroom(dir.path())
        .env("REPLICATE_API_TOKEN", "r")
        .args(["estimate", "mix.csv", "--json"])
        .output()
        .unwrap();
    assert_eq!(support::code(&output), 0, "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let mix = &json["cheapest_mix"];
    assert_eq!(mix["cost_micros"], 3 * 10_000, "{mix}");
    assert_eq!(
        mix["none"],
        serde_json::json!([{"line": 3, "row": "edit-1"}, {"line": 5, "row": "edit-2"}])
    );
    let stderr = text(
        &darkroom(dir.path())
            .env("REPLICATE_API_TOKEN", "r")
            .args(["estimate", "mix.csv"])
            .output()
            .unwrap()
            .stderr,
    );
    assert!(
        stderr.contains("mix.csv: line 3 (id \"edit-1\"): no provider of the cheapest mix can make it"),
        "{stderr}"
    );
}

#[test]
fn a_luma_account_over_its_monthly_cap_fails_over_to_replicate_on_another_account() {
    let dir = tempfile::tempdir().unwrap();
    plain_job(dir.path(), 4);
    // Luma's account answers every create 429 with a monthly-usage body: a quota refusal, not a
    // rate limit. Replicate is served by a second simulator, an account of its own.
    let luma = SimProcess::start(dir.path(), &["--time-scale", "0.01", "--monthly-limit-exceeded"]);
    let replicate = SimProcess::start(dir.path(), &["--api-key", KEY, "--time-scale", "0.01"]);
    let output = darkroom_on(dir.path(), &replicate, KEY)
        .env("LUMAAI_BASE_URL", &luma.base_url)
        .args(["run", "lamps.csv", "--failover", "replicate", "--budget", "1"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(support::code(&output), 0, "{stderr}");
    assert!(
        stderr.contains("failover: luma refused the run") && stderr.contains("move to replicate"),
        "{stderr}"
    );
    assert_eq!(luma.net_billing(), 0, "Luma billed nothing");
    assert_eq!(
        billed_by_provider(&replicate).get("replicate").copied(),
        Some(4 * 10_000)
    );
    assert_eq!(
        ledger_spent(dir.path(), &replicate, "lamps"),
        4 * 10_000,
        "the ledger is the two bills"
    );
}

#[test]
fn a_cheapest_routed_run_from_the_config_fails_over_to_the_next_cheapest_when_the_cheapest_refuses() {
    let dir = tempfile::tempdir().unwrap();
    plain_job(dir.path(), 3);
    write(
        dir.path(),
        "darkroom.toml",
        "[provider]\nrouting = \"cheapest\"\n",
    );
    let sim = SimProcess::start(dir.path(), &["--api-key", KEY, "--time-scale", "0.01"]);
    // Luma's $0.004 preview is the cheapest, but its key is refused.
    let output = darkroom_on(dir.path(), &sim, "a-revoked-key")
        .args(["--config", "darkroom.toml", "run", "lamps.csv", "--budget", "1"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(support::code(&output), 0, "{stderr}");
    assert!(stderr.contains("3 task(s) go to luma"), "{stderr}");
    assert!(
        stderr.contains("failover: luma refused the run")
            && stderr.contains("3 task(s) never sent there move to replicate"),
        "{stderr}"
    );
    assert_eq!(
        billed_by_provider(&sim).get("replicate").copied(),
        Some(3 * 10_000)
    );
    assert_eq!(ledger_spent(dir.path(), &sim, "lamps"), 3 * 10_000);
}
