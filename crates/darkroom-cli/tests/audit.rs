//! `darkroom audit` with the real binary against a `darkroom sim` process: a generation the
//! upstream committed that the ledger never heard of is recorded, so the ledger equals the bill.

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
fn darkroom_audit_records_a_generation_committed_behind_the_ledgers_back_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(dir.path(), &["--time-scale", "0.01"]);
    let output = previews(dir.path(), &sim);
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    assert_eq!(ledger_spent(dir.path(), &sim), sim.net_billing());

    // The account makes a generation with a request of this job that the ledger never heard of:
    // what a create committed after darkroom stopped waiting for it looks like.
    let body = r#"{"model":"photon-flash-1","prompt":"A shallow stoneware bowl of lemons on linen","aspect_ratio":"1:1"}"#;
    assert_eq!(sim.create_generation(body), 201);
    // And one nobody in this ledger asked for.
    let other =
        r#"{"model":"photon-flash-1","prompt":"A bicycle leaning on a brick wall","aspect_ratio":"1:1"}"#;
    assert_eq!(sim.create_generation(other), 201);
    std::thread::sleep(std::time::Duration::from_millis(300)); // let both finish (scaled latency)

    let output = against(dir.path(), &sim)
        .args(["audit", "vases", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        code(&output),
        1,
        "something was recorded: {}",
        text(&output.stderr)
    );
    let found: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(found["job"], "vases");
    assert_eq!(found["extra"], 1, "{found}");
    assert_eq!(found["adopted"], 0, "{found}");
    assert_eq!(found["foreign"], 1, "{found}");
    assert!(
        text(&output.stderr).contains("recorded as extra charges"),
        "{}",
        text(&output.stderr)
    );
    // The ledger now equals the bill, less the foreign generation nobody here asked for.
    assert_eq!(ledger_spent(dir.path(), &sim), sim.net_billing() - 4_000);
    // The report says what the audit found.
    let output = against(dir.path(), &sim)
        .args(["report", "vases"])
        .output()
        .unwrap();
    assert!(
        text(&output.stdout).contains("1 extra charges ($0.004)"),
        "{}",
        text(&output.stdout)
    );

    // A second audit finds the extra already recorded: nothing new, exit 0.
    let output = against(dir.path(), &sim)
        .args(["audit", "vases"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    assert_eq!(ledger_spent(dir.path(), &sim), sim.net_billing() - 4_000);
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
