//! `darkroom audit` with the real binary against a `darkroom sim` process: a generation on the
//! account that no create of this ledger sent (another ledger's or tool's, even with this job's
//! request) is reported and never charged here, so each ledger on a shared account equals its own
//! part of the bill.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use support::{against, code, previews, text, SimProcess};

/// The ledger's net spend over every pass, from `darkroom report --json`.
fn ledger_spent(dir: &std::path::Path, sim: &SimProcess) -> i64 {
    let output = against(dir, sim)
        .args(["report", "vases", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    report["spent_micros"].as_i64().unwrap()
}

#[test]
fn a_generation_with_this_jobs_request_that_no_create_of_this_ledger_sent_is_never_charged_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(dir.path(), &["--time-scale", "0.01"]);
    let output = previews(dir.path(), &sim);
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    assert_eq!(ledger_spent(dir.path(), &sim), sim.net_billing());
    let spent = ledger_spent(dir.path(), &sim);

    // Someone else on the account (another ledger, another tool) makes a generation with a
    // request of this job, and one with a request nobody in this ledger asked for. Every create
    // darkroom sends is recorded before it leaves, so neither is this ledger's. (A create of ours
    // committed after we stopped waiting is booked: `darkroom-engine`'s `tests/late_commits.rs`.)
    let body = r#"{"model":"photon-flash-1","prompt":"A shallow stoneware bowl of lemons on linen","aspect_ratio":"1:1"}"#;
    assert_eq!(sim.create_generation(body), 201);
    let other =
        r#"{"model":"photon-flash-1","prompt":"A bicycle leaning on a brick wall","aspect_ratio":"1:1"}"#;
    assert_eq!(sim.create_generation(other), 201);
    std::thread::sleep(std::time::Duration::from_millis(300)); // let both finish (scaled latency)

    let output = against(dir.path(), &sim)
        .args(["audit", "vases", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "nothing recorded: {}", text(&output.stderr));
    let found: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(found["job"], "vases");
    assert_eq!(
        (found["extra"].as_i64(), found["adopted"].as_i64()),
        (Some(0), Some(0)),
        "{found}"
    );
    assert_eq!(found["foreign"], 2, "{found}");
    assert!(
        text(&output.stderr).contains("2 are not this job's"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(
        ledger_spent(dir.path(), &sim),
        spent,
        "nothing charged to this job"
    );
}

#[test]
fn two_ledgers_running_the_same_job_on_one_account_never_charge_each_others_images() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(dir.path(), &["--time-scale", "0.01"]);
    let (x, y) = (dir.path().join("x"), dir.path().join("y"));
    std::fs::create_dir_all(&x).unwrap();
    std::fs::create_dir_all(&y).unwrap();
    // Team x runs the product file, then team y runs the same file with its own ledger: y's
    // end-of-run audit reads x's generations (same requests, made a moment before y began).
    let first = previews(&x, &sim);
    assert_eq!(code(&first), 0, "{}", text(&first.stderr));
    let second = previews(&y, &sim);
    assert_eq!(code(&second), 0, "{}", text(&second.stderr));
    assert!(
        !text(&second.stderr).contains("extra charge"),
        "{}",
        text(&second.stderr)
    );
    let (spent_x, spent_y) = (ledger_spent(&x, &sim), ledger_spent(&y, &sim));
    assert_eq!(spent_x, spent_y, "each ledger holds its own five images");
    assert_eq!(spent_x + spent_y, sim.net_billing(), "together they are the bill");
}

#[test]
fn darkroom_audit_names_a_job_the_ledger_does_not_have() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(dir.path(), &[]);
    let output = previews(dir.path(), &sim);
    assert_eq!(code(&output), 0);
    let output = against(dir.path(), &sim)
        .args(["audit", "nope"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 2);
    assert!(
        text(&output.stderr).contains("no job named \"nope\""),
        "{}",
        text(&output.stderr)
    );
}
