//! `darkroom run --provider replicate` with the real binary against a `darkroom sim` process
//! (Replicate's API under `/replicate/v1`): the ledger equals the simulator's bill at Replicate's
//! prices, under the flaky profile too; a row Replicate can't make whole is refused up front with
//! its line and nothing is sent; a second run resumes and buys nothing more.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::path::Path;
use std::process::Command;

use support::{code, darkroom, text, write, SimProcess};

/// `darkroom` pointed at the simulator's Replicate API, with a token (and no Luma key at all).
fn on_replicate(dir: &Path, sim: &SimProcess) -> Command {
    let root = sim.base_url.replace("/dream-machine/v1", "/replicate");
    let mut command = darkroom(dir);
    command
        .env("REPLICATE_BASE_URL", root)
        .env("REPLICATE_API_TOKEN", "r8_test-token");
    command
}

fn chairs(dir: &Path) {
    write(
        dir,
        "chairs.csv",
        "id,prompt,aspect_ratio,variants\n\
         oak,An oak dining chair in a bright room,1:1,2\n\
         teak,A teak lounge chair on a terrace,16:9,1\n\
         cane,A cane rocking chair on a porch,4:3,1\n",
    );
}

/// The ledger's net spend over every pass, from `darkroom report --json`.
fn ledger_spent(dir: &Path, sim: &SimProcess, job: &str) -> i64 {
    let output = on_replicate(dir, sim)
        .args(["report", job, "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    report["spent_micros"].as_i64().unwrap()
}

#[test]
fn a_job_runs_on_replicate_with_the_ledger_equal_to_the_bill_at_replicates_price_and_resumes_buying_nothing()
{
    let dir = tempfile::tempdir().unwrap();
    chairs(dir.path());
    let sim = SimProcess::start(dir.path(), &["--time-scale", "0.01"]);
    let run = || {
        on_replicate(dir.path(), &sim)
            .args(["run", "chairs.csv", "--provider", "replicate"])
            .output()
            .unwrap()
    };
    let output = run();
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 0, "{stderr}");
    assert_eq!(
        sim.net_billing(),
        4 * 10_000,
        "four previews at Replicate's $0.01"
    );
    assert_eq!(ledger_spent(dir.path(), &sim, "chairs"), sim.net_billing());
    assert!(
        stderr.contains("--provider replicate"),
        "the printed next step keeps the provider: {stderr}"
    );

    let again = run();
    assert_eq!(code(&again), 0, "{}", text(&again.stderr));
    assert_eq!(sim.net_billing(), 4 * 10_000, "the resumed run bought nothing");
    assert_eq!(ledger_spent(dir.path(), &sim, "chairs"), sim.net_billing());
}

#[test]
fn under_the_flaky_profile_a_replicate_run_ends_with_the_ledger_equal_to_the_bill() {
    let dir = tempfile::tempdir().unwrap();
    let rows: String = (0..40)
        .map(|n| format!("chair-{n},A chair number {n} in a sunlit studio,1:1\n"))
        .collect();
    write(dir.path(), "many.csv", &format!("id,prompt,aspect_ratio\n{rows}"));
    let sim = SimProcess::start(
        dir.path(),
        &["--faults", "flaky", "--time-scale", "0.01", "--seed", "14"],
    );
    for _ in 0..3 {
        let output = on_replicate(dir.path(), &sim)
            .args(["run", "many.csv", "--provider", "replicate", "--budget", "5"])
            // The simulator runs at 1/100 of real time: so does the settlement window (240 s).
            .env("DARKROOM_SETTLE_WINDOW_SECONDS", "3")
            .output()
            .unwrap();
        assert!(matches!(code(&output), 0 | 1), "{}", text(&output.stderr));
        assert_eq!(ledger_spent(dir.path(), &sim, "many"), sim.net_billing());
    }
    let results = std::fs::read_to_string(dir.path().join("out/many/results.jsonl")).unwrap();
    let done = results
        .lines()
        .filter(|l| l.contains(r#""status":"done""#))
        .count() as i64;
    assert!(done >= 35, "most of the job was made: {done}");
    assert_eq!(
        sim.net_billing(),
        done * 10_000,
        "each image kept was paid once, nothing else"
    );
}

#[test]
fn a_row_replicate_cannot_make_whole_is_refused_with_its_line_and_nothing_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "refs.csv",
        "id,prompt,image_ref\n\
         one,A chair like this one,https://cdn.example.com/a.jpg\n\
         two,A chair like these two,https://cdn.example.com/a.jpg https://cdn.example.com/b.jpg\n",
    );
    let sim = SimProcess::start(dir.path(), &[]);
    let output = on_replicate(dir.path(), &sim)
        .args(["run", "refs.csv", "--provider", "replicate"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 2, "{stderr}");
    assert!(
        stderr.contains("line 3 (id \"two\"): replicate can't make 2 image references (takes at most 1)"),
        "{stderr}"
    );
    assert!(!stderr.contains("row one"), "{stderr}");
    assert!(stderr.contains("nothing was sent"), "{stderr}");
    assert_eq!(sim.net_billing(), 0);
}

#[test]
fn replicate_without_a_token_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    chairs(dir.path());
    let output = darkroom(dir.path())
        .args(["run", "chairs.csv", "--provider", "replicate"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 2, "{stderr}");
    assert!(stderr.contains("REPLICATE_API_TOKEN is not set"), "{stderr}");
}

#[test]
fn estimate_shows_the_cost_on_each_provider_side_by_side_and_the_rows_each_cannot_make() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "mixed.csv",
        "id,prompt,image_ref,format,variants\n\
         plain,A plain chair on white,,,2\n\
         two,A chair like these two,https://cdn.example.com/a.jpg https://cdn.example.com/b.jpg,,1\n\
         png,A chair as a PNG,,png,1\n",
    );
    let output = darkroom(dir.path())
        .args(["estimate", "mixed.csv", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let estimate: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let providers = estimate["providers"].as_array().unwrap();
    assert_eq!(providers[0]["provider"], "luma");
    assert_eq!(providers[0]["tasks"], 4);
    assert_eq!(providers[0]["cost_micros"], 4 * 4_000);
    assert_eq!(providers[1]["provider"], "replicate");
    assert_eq!(providers[1]["tasks"], 2, "only the plain row's two variants");
    assert_eq!(providers[1]["cost_micros"], 2 * 10_000);
    let refused: Vec<i64> = providers[1]["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_i64().unwrap())
        .collect();
    assert_eq!(refused, [3, 4]);

    let output = darkroom(dir.path())
        .args(["validate", "mixed.csv"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "valid on Luma: {}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("; replicate can't make 2 row(s) (--provider replicate lists them)"),
        "{}",
        text(&output.stdout)
    );
    let output = darkroom(dir.path())
        .args(["validate", "mixed.csv", "--provider", "replicate"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 2, "not runnable on Replicate as it is: {stderr}");
    assert!(
        stderr.contains(
            "mixed.csv: line 3 (id \"two\"): replicate can't make 2 image references (takes at most 1)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("mixed.csv: line 4 (id \"png\"): replicate can't make format png (makes only jpg)"),
        "{stderr}"
    );
}
