//! Observed prices through the real binary: a run against a simulator process billing Flash at
//! double the table, `darkroom prices` and `darkroom prices --check`.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::path::Path;

use support::{against, code, darkroom, text, write, SimProcess};

fn vases(dir: &Path, rows: usize) {
    let mut job = String::from("id,prompt,aspect_ratio\n");
    for i in 0..rows {
        job.push_str(&format!("v{i},A ceramic vase number {i} on a walnut table,1:1\n"));
    }
    write(dir, "vases.csv", &job);
}

/// A fast simulator process billing Flash at $0.008 (the table says $0.004).
fn double_price_sim(dir: &Path) -> SimProcess {
    SimProcess::start(
        dir,
        &[
            "--price-photon-flash-1",
            "0.008",
            "--time-scale",
            "0.02",
            "--rate-per-minute",
            "0",
        ],
    )
}

#[test]
fn a_run_on_an_account_charging_double_spends_at_most_its_budget_and_says_why_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let sim = double_price_sim(dir.path());
    vases(dir.path(), 300);
    let output = against(dir.path(), &sim)
        .args(["run", "vases.csv", "--budget", "1", "--rate-per-minute", "0"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 3, "{stderr}");
    assert!(
        sim.net_billing() <= 1_000_000,
        "the account paid {} micro-dollars",
        sim.net_billing()
    );
    assert!(
        stderr
            .contains("the account is charging $0.008 per photon-flash-1 image, the price table says $0.004"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("the account is charging").count(),
        1,
        "the warning comes once: {stderr}"
    );
    assert!(
        stderr.contains(r#"[prices] "photon-flash-1" = "0.008""#),
        "{stderr}"
    );
    assert!(
        stderr.contains("at the observed price of photon-flash-1 $0.008"),
        "{stderr}"
    );

    // status shows the difference; prices shows when it was last observed on this account.
    let status = darkroom(dir.path()).args(["status", "vases"]).output().unwrap();
    assert!(
        text(&status.stdout)
            .contains("photon-flash-1: the account charged $0.008 an image, the table says $0.004"),
        "{}",
        text(&status.stdout)
    );
    let prices = darkroom(dir.path())
        .args(["prices", "--base-url", &sim.base_url])
        .output()
        .unwrap();
    let listing = text(&prices.stdout);
    assert_eq!(code(&prices), 0, "{}", text(&prices.stderr));
    let flash = listing.lines().find(|l| l.starts_with("photon-flash-1")).unwrap();
    assert!(
        flash.contains("$0.004") && flash.contains("built-in default") && flash.contains("observed $0.008"),
        "{listing}"
    );
}

#[test]
fn with_json_the_price_warning_is_an_event_on_stdout_and_a_line_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let sim = double_price_sim(dir.path());
    vases(dir.path(), 40);
    let output = against(dir.path(), &sim)
        .args([
            "run",
            "vases.csv",
            "--budget",
            "1",
            "--rate-per-minute",
            "0",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let event = text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "price_observed")
        .expect("a price_observed event");
    assert_eq!(event["observed"], "0.008");
    assert_eq!(event["table"], "0.004");
    assert_eq!(event["applied"], true);
    assert_eq!(event["config_line"], r#"[prices] "photon-flash-1" = "0.008""#);
    assert!(text(&output.stderr).contains("warning: the account is charging $0.008"));
    assert_eq!(sim.net_billing(), 40 * 8_000);
}

#[test]
fn prices_names_where_each_price_came_from() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "mine.toml", "[prices]\n\"photon-1\" = \"0.02\"\n");
    let output = darkroom(dir.path())
        .args(["--config", "mine.toml", "prices"])
        .env("DARKROOM_PRICE_PHOTON_FLASH_1", "0.005")
        .output()
        .unwrap();
    let listing = text(&output.stdout);
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let photon = listing.lines().find(|l| l.starts_with("photon-1")).unwrap();
    assert!(
        photon.contains("$0.02") && photon.contains("config file mine.toml"),
        "{listing}"
    );
    let flash = listing.lines().find(|l| l.starts_with("photon-flash-1")).unwrap();
    assert!(
        flash.contains("$0.005") && flash.contains("environment DARKROOM_PRICE_PHOTON_FLASH_1"),
        "{listing}"
    );
    assert!(flash.contains("not observed on this account"), "{listing}");
}

#[test]
fn prices_check_observes_each_model_with_one_image_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let sim = double_price_sim(dir.path());
    let output = against(dir.path(), &sim)
        .args(["prices", "--check", "--budget", "0.1", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let answer: serde_json::Value = serde_json::from_str(&text(&output.stdout)).unwrap();
    let flash = &answer["prices"][1];
    assert_eq!(flash["model"], "photon-flash-1");
    assert_eq!(flash["probe"]["observed"], "0.008");
    assert_eq!(flash["last_observed"]["price"], "0.008");
    assert_eq!(answer["prices"][0]["probe"]["observed"], "0.015");
    // One image per model, nothing more.
    assert_eq!(sim.net_billing(), 15_000 + 8_000);
    // The observation stays in the ledger for the next look.
    let again = against(dir.path(), &sim).args(["prices"]).output().unwrap();
    assert!(
        text(&again.stdout).contains("observed $0.008"),
        "{}",
        text(&again.stdout)
    );
}

#[test]
fn prices_check_refuses_a_budget_that_cannot_cover_the_probes_and_spends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = double_price_sim(dir.path());
    let output = against(dir.path(), &sim)
        .args(["prices", "--check", "--budget", "0.01"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("cannot cover the probes") && stderr.contains("$0.038"),
        "{stderr}"
    );
    assert_eq!(sim.net_billing(), 0);
}
