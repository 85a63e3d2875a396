//! `darkroom validate` and `darkroom estimate` as users run them: the real binary on every example in
//! `jobs/` and on broken files, checking stdout, stderr and the exit code.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::text;

/// The binary with a clean environment, run in this crate's directory (some paths below are
/// relative to it).
fn darkroom() -> Command {
    let mut command = support::darkroom(Path::new(env!("CARGO_TARGET_TMPDIR")));
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    command
}

fn jobs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../jobs")
}

fn run(args: &[&str]) -> Output {
    darkroom().args(args).output().unwrap()
}

#[test]
fn every_example_job_file_is_valid() {
    let mut seen = 0;
    for entry in std::fs::read_dir(jobs_dir()).unwrap() {
        let path = entry.unwrap().path();
        let output = run(&["validate", path.to_str().unwrap()]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            text(&output.stderr)
        );
        assert!(
            text(&output.stdout).contains(": valid;"),
            "{}",
            text(&output.stdout)
        );
        assert!(output.stderr.is_empty(), "{}", text(&output.stderr));
        seen += 1;
    }
    assert!(seen >= 4, "the examples are all there");
}

#[test]
fn validate_summarises_rows_tasks_and_metadata_columns() {
    let output = run(&["validate", jobs_dir().join("ab-ads.csv").to_str().unwrap()]);
    assert_eq!(
        text(&output.stdout).trim().rsplit(": ").next().unwrap(),
        "group, arm, channel"
    );
    assert!(text(&output.stdout).contains("6 rows, 12 tasks"));
}

#[test]
fn a_broken_file_lists_every_problem_with_its_line_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.csv");
    std::fs::write(
        &path,
        "id,prompt,aspect_ratio,variants\nsofa-1,A red sofa,1:1,1\nsofa-3,A red sofa,5:4,1\nsofa-4,ab,1:1,1\nsofa-1,A blue sofa,1:1,0\n",
    )
    .unwrap();
    let output = run(&["validate", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("line 3 (id \"sofa-3\"): aspect_ratio \"5:4\" is not one of"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 4 (id \"sofa-4\"): prompt \"ab\" is too short"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 5 (id \"sofa-1\"): variants \"0\""),
        "{stderr}"
    );
    assert!(
        text(&output.stdout).contains("3 error(s)"),
        "{}",
        text(&output.stdout)
    );
}

#[test]
fn thousands_of_errors_show_the_first_fifty_then_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.csv");
    let mut body = String::from("id,prompt\n");
    for i in 0..3000 {
        body.push_str(&format!("r{i},x\n"));
    }
    std::fs::write(&path, body).unwrap();
    let output = run(&["validate", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().filter(|l| l.contains("too short")).count(), 50);
    assert!(
        stderr.contains("... and 2950 more"),
        "{}",
        stderr.lines().last().unwrap()
    );
}

#[test]
fn an_unreadable_or_unknown_file_is_a_clear_error() {
    let output = run(&["validate", "no-such-file.csv"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("no-such-file.csv"));
    let output = run(&["validate", "Cargo.toml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("expected .csv or .jsonl"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn estimate_prices_each_model_the_promote_plan_and_the_time_floor() {
    let output = run(&[
        "estimate",
        jobs_dir().join("example.csv").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let estimate: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(estimate["tasks"], 8);
    assert_eq!(estimate["total"], "0.032");
    assert_eq!(estimate["total_micros"], 32_000);
    assert_eq!(estimate["all_photon_1_micros"], 120_000);
    assert_eq!(estimate["preview_then_promote"]["finals"], 2);
    assert_eq!(estimate["preview_then_promote"]["total_micros"], 32_000 + 30_000);
    // 8 creates at 80 a minute: 6 s.
    assert_eq!(estimate["shortest_seconds"], 6.0);

    let output = run(&[
        "estimate",
        jobs_dir().join("example.csv").to_str().unwrap(),
        "--pass",
        "final",
        "--budget",
        "0.05",
    ]);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("photon-1"), "{stdout}");
    assert!(
        stdout.contains("does not cover the job: it pays for 3 of 8 tasks"),
        "{stdout}"
    );
}

#[test]
fn a_config_file_with_an_unknown_key_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("darkroom.toml");
    std::fs::write(&config, "[limits]\ncreates_per_minit = 10\n").unwrap();
    let job = jobs_dir().join("example.csv");
    let output = run(&[
        "--config",
        config.to_str().unwrap(),
        "estimate",
        job.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("creates_per_minit") && stderr.contains("darkroom.toml"),
        "{stderr}"
    );

    std::fs::write(&config, "[limits]\ncreates_per_minute = 8\n").unwrap();
    let output = run(&[
        "--config",
        config.to_str().unwrap(),
        "estimate",
        job.to_str().unwrap(),
        "--json",
    ]);
    let estimate: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(estimate["shortest_seconds"], 60.0, "8 creates at 8 a minute");

    let output = darkroom()
        .env("DARKROOM_RATE_PER_MINUTE", "16")
        .args(["estimate", job.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let estimate: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        estimate["shortest_seconds"], 30.0,
        "the variable overrides the default"
    );
}

#[test]
fn a_job_file_without_rows_is_refused_alike_by_validate_run_and_trial_and_nothing_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.csv"), "id,prompt,aspect_ratio\n").unwrap();
    std::fs::write(dir.path().join("empty.jsonl"), "\n\n").unwrap();
    for (file, expected) in [
        (
            "empty.csv",
            "empty.csv: line 2: the file has no rows (expected a row after the header line)",
        ),
        (
            "empty.jsonl",
            "empty.jsonl: line 1: the file has no rows (expected one JSON object per line)",
        ),
    ] {
        for command in [
            &["validate", file][..],
            &["run", file, "--sim"],
            &["trial", file, "--sim"],
        ] {
            let output = support::darkroom(dir.path()).args(command).output().unwrap();
            let stderr = text(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{command:?}: {stderr}");
            assert!(stderr.contains("no rows"), "{command:?}: {stderr}");
            if command[0] != "trial" {
                assert!(stderr.contains(expected), "{command:?}: {stderr}");
            }
        }
    }
    let status = support::darkroom(dir.path())
        .args(["status", "--json"])
        .output()
        .unwrap();
    let jobs = text(&status.stdout);
    assert!(!jobs.contains("\"empty\""), "nothing recorded: {jobs}");
}

#[test]
fn jsonl_counts_must_be_json_numbers_and_each_refusal_names_its_line_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typed.jsonl");
    std::fs::write(
        &path,
        concat!(
            "{\"id\":\"ok\",\"prompt\":\"A red sofa in a sunlit room\",\"variants\":2}\n",
            "{\"id\":\"text\",\"prompt\":\"A red sofa in a sunlit room\",\"variants\":\"2\"}\n",
            "{\"id\":\"half\",\"prompt\":\"A red sofa in a sunlit room\",\"variants\":2.5}\n",
            "{\"id\":\"flag\",\"prompt\":\"A red sofa in a sunlit room\",\"variants\":true}\n",
            "{\"id\":\"weight\",\"prompt\":\"A red sofa\",\"style_ref\":{\"url\":\"https://a/b.jpg\",\"weight\":\"0.5\"}}\n",
        ),
    )
    .unwrap();
    let output = run(&["validate", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("line 2 (id \"text\"): variants must be a JSON number (e.g. \"variants\": 2), not the string \"2\""),
        "{stderr}"
    );
    assert!(stderr.contains("line 3 (id \"half\"): variants"), "{stderr}");
    assert!(stderr.contains("line 4 (id \"flag\"): variants"), "{stderr}");
    assert!(stderr.contains("line 5 (id \"weight\")"), "{stderr}");
    assert!(!stderr.contains("line 1 "), "{stderr}");
}
