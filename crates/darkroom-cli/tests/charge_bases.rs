//! What each charge was computed from, in `darkroom report --json` (`charges`), for a job run by
//! the real binary on each provider of a `darkroom sim` process: per image on Luma and Replicate
//! (the rate is the charge), per megapixel on fal, where the ledger's charge equals the units fal
//! says it billed times the rate, and the charges add up to fal's bill.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::path::Path;
use std::process::Command;

use support::{against, code, darkroom, get_json, text, write, SimProcess};

fn job(dir: &Path) {
    write(
        dir,
        "lamps.csv",
        "id,prompt,aspect_ratio,variants\n\
         desk,A brass desk lamp on an oak desk,1:1,2\n\
         floor,A tall floor lamp by a window,21:9,1\n\
         wall,A wall lamp above a bed,9:16,1\n",
    );
}

fn origin(sim: &SimProcess) -> String {
    sim.base_url.trim_end_matches("/dream-machine/v1").to_string()
}

fn report(command: &mut Command) -> serde_json::Value {
    let output = command.args(["report", "lamps", "--json"]).output().unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Units × rate, rounded up to the micro-dollar, with units a decimal of at most 6 places.
fn amount(units: &str, rate: i64) -> i64 {
    let (whole, part) = units.split_once('.').unwrap_or((units, ""));
    let millionths =
        whole.parse::<i64>().unwrap() * 1_000_000 + format!("{part:0<6}").parse::<i64>().unwrap();
    (millionths * rate + 999_999) / 1_000_000
}

#[test]
fn a_fal_charge_is_the_megapixels_fal_billed_times_the_rate_and_the_charges_add_up_to_its_bill() {
    let dir = tempfile::tempdir().unwrap();
    job(dir.path());
    let sim = SimProcess::start(dir.path(), &["--time-scale", "0.1"]);
    let on_fal = || {
        let mut command = darkroom(dir.path());
        command
            .env("FAL_KEY", "fal-test-key-0001")
            .env("DARKROOM_FAL_QUEUE_URL", format!("{}/fal/queue", origin(&sim)))
            .env("DARKROOM_FAL_API_URL", format!("{}/fal/api/v1", origin(&sim)));
        command
    };
    let output = on_fal()
        .args(["run", "lamps.csv", "--provider", "fal", "--budget", "5"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let report = report(&mut on_fal());
    let charges = report["charges"].as_array().unwrap();
    assert_eq!(charges.len(), 4, "{charges:#?}");
    let mut total = 0;
    for charge in charges {
        assert_eq!(charge["provider"], "fal", "{charge}");
        assert_eq!(charge["basis"], "per-megapixel", "{charge}");
        assert_eq!(charge["rate_micros"], 5_000, "flash per megapixel: {charge}");
        let units = charge["units"].as_str().unwrap();
        assert_eq!(
            charge["billed_units"].as_str(),
            Some(units),
            "fal billed what was charged: {charge}"
        );
        let micros = charge["charge_micros"].as_i64().unwrap();
        assert_eq!(micros, amount(units, 5_000), "{charge}");
        total += micros;
    }
    // 1536 × 1536 and 1152 × 2048 are 2.359296 MP; 2432 × 1024 is 2.490368 MP.
    let units: Vec<&str> = charges.iter().map(|c| c["units"].as_str().unwrap()).collect();
    assert_eq!(units.iter().filter(|u| **u == "2.359296").count(), 3, "{units:?}");
    assert_eq!(units.iter().filter(|u| **u == "2.490368").count(), 1, "{units:?}");
    let bill = get_json(&sim.base_url, "/sim/fal/billing")["net_micros"]
        .as_i64()
        .unwrap();
    assert_eq!(total, bill, "the charges are fal's bill");
    assert_eq!(report["spent_micros"], bill);
}

#[test]
fn a_luma_or_replicate_charge_is_one_image_at_its_price() {
    let dir = tempfile::tempdir().unwrap();
    job(dir.path());
    let sim = SimProcess::start(dir.path(), &["--time-scale", "0.1"]);
    let output = against(dir.path(), &sim)
        .args(["run", "lamps.csv", "--budget", "5"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let on_replicate = || {
        let mut command = darkroom(dir.path());
        command
            .env("REPLICATE_BASE_URL", format!("{}/replicate", origin(&sim)))
            .env("REPLICATE_API_TOKEN", "r8_test-token");
        command
    };
    // The same rows as a job of their own, on Replicate.
    let output = on_replicate()
        .args([
            "run",
            "lamps.csv",
            "--job",
            "shades",
            "--provider",
            "replicate",
            "--budget",
            "5",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let mut total = 0;
    for (job, provider, rate) in [("lamps", "luma", 4_000), ("shades", "replicate", 10_000)] {
        let output = against(dir.path(), &sim)
            .args(["report", job, "--json"])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let charges = report["charges"].as_array().unwrap();
        assert_eq!(charges.len(), 4, "{charges:#?}");
        for charge in charges {
            assert_eq!(charge["provider"], provider, "{charge}");
            assert_eq!(charge["basis"], "per-image", "{charge}");
            assert_eq!(charge["units"], "1", "{charge}");
            assert_eq!(
                charge["rate_micros"], rate,
                "photon-flash-1 on {provider}: {charge}"
            );
            assert_eq!(charge["charge_micros"], rate, "{charge}");
            assert!(
                charge["billed_units"].is_null(),
                "{provider} says nothing of units: {charge}"
            );
            total += charge["charge_micros"].as_i64().unwrap();
        }
    }
    assert_eq!(total, sim.net_billing(), "the charges are the bill");
}

#[test]
fn submits_adopted_after_their_answer_was_lost_get_their_basis_too() {
    let dir = tempfile::tempdir().unwrap();
    job(dir.path());
    let sim = SimProcess::start(
        dir.path(),
        &["--time-scale", "0.1", "--create-dropped", "0.5", "--seed", "11"],
    );
    let output = darkroom(dir.path())
        .env("FAL_KEY", "fal-test-key-0001")
        .env("DARKROOM_FAL_QUEUE_URL", format!("{}/fal/queue", origin(&sim)))
        .env("DARKROOM_FAL_API_URL", format!("{}/fal/api/v1", origin(&sim)))
        .env("DARKROOM_SETTLE_WINDOW_SECONDS", "3")
        .args(["run", "lamps.csv", "--provider", "fal", "--budget", "5"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let stats = get_json(&sim.base_url, "/sim/fal/stats");
    assert!(
        stats["faults"]["create_dropped"].as_i64().unwrap_or(0) > 0,
        "{stats}"
    );
    let report = report(darkroom(dir.path()).env("FAL_KEY", "fal-test-key-0001"));
    let charges = report["charges"].as_array().unwrap();
    let total: i64 = charges.iter().map(|c| c["charge_micros"].as_i64().unwrap()).sum();
    let bill = get_json(&sim.base_url, "/sim/fal/billing")["net_micros"]
        .as_i64()
        .unwrap();
    assert_eq!(
        total, bill,
        "every charge, adopted ones too, has its basis: {charges:#?}"
    );
    for charge in charges {
        let units = charge["units"].as_str().unwrap();
        assert_eq!(
            charge["charge_micros"].as_i64().unwrap(),
            amount(units, 5_000),
            "{charge}"
        );
    }
}
