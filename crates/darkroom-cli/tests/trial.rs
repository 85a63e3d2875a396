//! `darkroom trial` as users meet it: the real binary with `--sim` (one simulated account across
//! commands) and a real ledger. The A/B ad set tried on both models, the figures as text and JSON,
//! the same command resumed without a second charge, the seeded and stratified sample, bad input
//! refused before anything is recorded, and a choice made on the review page's pairs changing what
//! `estimate --pass final` says and what a finals run sends.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::path::Path;
use std::process::{Output, Stdio};

use serde_json::Value;
use support::{code, darkroom, first_url, http, text, write, Killed};

fn ab_ads(dir: &Path) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../jobs/ab-ads.csv");
    std::fs::copy(source, dir.join("ab-ads.csv")).unwrap();
}

fn darkroom_ok(dir: &Path, args: &[&str]) -> Output {
    let output = darkroom(dir).args(args).output().unwrap();
    assert_eq!(code(&output), 0, "{args:?}: {}", text(&output.stderr));
    output
}

fn images(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".jpg"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The ids in a trial's rows file, in order.
fn sampled_ids(dir: &Path, trial: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join("out").join(trial).join("trial-rows.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn a_trial_of_the_ab_ads_makes_both_models_images_a_table_and_a_projection_and_resumes_for_free() {
    let dir = tempfile::tempdir().unwrap();
    ab_ads(dir.path());
    let args = [
        "trial",
        "ab-ads.csv",
        "--sim",
        "--sample",
        "20",
        "--per-month",
        "10000",
    ];
    let first = darkroom_ok(dir.path(), &args);
    let (stdout, stderr) = (text(&first.stdout), text(&first.stderr));
    assert!(
        stderr.contains("6 row(s), fewer than --sample 20: the trial takes every row"),
        "{stderr}"
    );
    // The next step is the pairs page, not the contact sheet's promotion of previews.
    assert!(
        stderr.contains("next: darkroom review ab-ads-trial --sim, page /trial: judge each pair"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("choose the previews to make finals of"),
        "{stderr}"
    );
    let out = dir.path().join("out/ab-ads-trial");
    let expected = [
        "coffee-a.jpg",
        "coffee-b.jpg",
        "run-a.jpg",
        "run-b.jpg",
        "run-story-a.jpg",
        "run-story-b.jpg",
    ];
    assert_eq!(images(&out.join("preview")), expected, "Flash images");
    assert_eq!(images(&out.join("final")), expected, "Photon 1 images");
    let table_row = |model: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(model))
            .map(str::to_string)
    };
    let flash = table_row("photon-flash-1 ").expect(&stdout);
    assert!(
        flash.contains(" 6 ") && flash.contains("$0.004") && flash.trim_end().ends_with(" 0.0%"),
        "the QC flag rate is the last column, measured: {flash}"
    );
    assert!(
        table_row("photon-1 ").expect(&stdout).contains("$0.015"),
        "{stdout}"
    );
    assert!(
        stdout.contains("keep rate 25% assumed: no pair judged yet"),
        "{stdout}"
    );
    // The whole job is 12 images: $0.048 with Flash, $0.18 with Photon 1, and previews with a
    // quarter promoted: 12 × $0.004 + 3 × $0.015 = $0.093.
    let job = stdout
        .lines()
        .find(|l| l.contains("the whole job"))
        .expect(&stdout);
    for figure in ["12", "$0.048", "$0.18", "$0.093 (3 promoted)"] {
        assert!(job.contains(figure), "{figure}: {job}");
    }
    let month = stdout.lines().find(|l| l.contains("a month")).expect(&stdout);
    for figure in ["10000", "$40.00", "$150.00", "$77.50 (2500 promoted)"] {
        assert!(month.contains(figure), "{figure}: {month}");
    }

    // The same command again, with --json: nothing is made or paid again.
    let mut again: Vec<&str> = args.to_vec();
    again.push("--json");
    let second = darkroom_ok(dir.path(), &again);
    let json: Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(
        (json["job"].as_str(), json["trial_job"].as_str()),
        (Some("ab-ads"), Some("ab-ads-trial"))
    );
    assert_eq!(
        (
            json["rows"].as_u64(),
            json["job_rows"].as_u64(),
            json["seed"].as_u64()
        ),
        (Some(6), Some(6), Some(1))
    );
    let models = json["models"].as_array().unwrap();
    assert_eq!(models[0]["model"], "photon-flash-1");
    assert_eq!(models[1]["model"], "photon-1");
    for (model, spent) in models.iter().zip(["0.024", "0.09"]) {
        assert_eq!(model["spent"], spent, "paid once: {model}");
        assert_eq!(
            (model["images"].as_u64(), model["failed"].as_u64()),
            (Some(6), Some(0)),
            "{model}"
        );
        assert!(model["latency_p50_ms"].as_i64().unwrap() > 0, "{model}");
        assert!(
            model["latency_p95_ms"].as_i64() >= model["latency_p50_ms"].as_i64(),
            "{model}"
        );
        assert_eq!(model["failure_rate"], 0.0);
        assert_eq!(model["moderation_rate"], 0.0);
        assert_eq!(
            model["qc_flag_rate"], 0.0,
            "every image measured, none flagged: {model}"
        );
    }
    assert_eq!(json["keep_rate"]["source"], "assumed");
    assert_eq!(json["job_projection"]["all_flash"], "0.048");
    assert_eq!(json["per_month"]["previews_then_promotion"], "77.50");
    assert_eq!(json["strata"].as_array().unwrap().len(), 4, "group × arm");
}

#[test]
fn the_same_seed_takes_the_same_rows_stratified_by_group_and_another_seed_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("id,prompt,group\n");
    for i in 0..30 {
        csv.push_str(&format!("big-{i},a big product shot number {i},big\n"));
    }
    for i in 0..5 {
        csv.push_str(&format!("small-{i},a small product shot number {i},small\n"));
    }
    write(dir.path(), "shop.csv", &csv);
    // A budget of zero draws and records the sample but makes nothing (exit 3: the budget ran out).
    let sample = |job: &str, seed: &str| {
        let output = darkroom(dir.path())
            .args([
                "trial", "shop.csv", "--sim", "--sample", "7", "--seed", seed, "--budget", "0", "--job", job,
            ])
            .output()
            .unwrap();
        assert_eq!(code(&output), 3, "{}", text(&output.stderr));
        sampled_ids(dir.path(), &format!("{job}-trial"))
    };
    let a = sample("a", "42");
    assert_eq!(a, sample("b", "42"), "the same seed, the same rows");
    assert_ne!(a, sample("c", "43"), "another seed, other rows");
    assert_eq!(a.len(), 7);
    let small = a.iter().filter(|id| id.starts_with("small-")).count();
    assert_eq!((a.len() - small, small), (6, 1), "each group its share: {a:?}");
}

#[test]
fn bad_input_is_refused_with_a_clear_error_before_anything_is_recorded_or_sent() {
    let dir = tempfile::tempdir().unwrap();
    ab_ads(dir.path());
    write(
        dir.path(),
        "broken.csv",
        "id,prompt,aspect_ratio\nok,a fine prompt here,1:1\nbad,another prompt,5:4\n",
    );
    write(dir.path(), "empty.csv", "id,prompt\n");
    for (args, says) in [
        (vec!["trial", "ab-ads.csv", "--sim", "--sample", "0"], "--sample"),
        (vec!["trial", "missing.csv", "--sim"], "missing.csv"),
        (vec!["trial", "broken.csv", "--sim"], "5:4"),
        (vec!["trial", "empty.csv", "--sim"], "no row to sample"),
        (
            vec!["trial", "ab-ads.csv", "--sim", "--per-month", "0"],
            "--per-month",
        ),
    ] {
        let output = darkroom(dir.path()).args(&args).output().unwrap();
        assert_eq!(code(&output), 2, "{args:?}: {}", text(&output.stderr));
        assert!(
            text(&output.stderr).contains(says),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
    assert!(!dir.path().join("darkroom.db").exists(), "no ledger was made");
    assert!(
        !dir.path().join(".darkroom").exists(),
        "no simulator account was touched"
    );
    assert!(!dir.path().join("out").exists(), "nothing was written");
}

#[test]
fn a_choice_made_on_the_review_pages_pairs_changes_the_final_estimate_and_what_finals_send() {
    let dir = tempfile::tempdir().unwrap();
    ab_ads(dir.path());
    darkroom_ok(dir.path(), &["trial", "ab-ads.csv", "--sim", "--sample", "6"]);
    let before = text(&darkroom_ok(dir.path(), &["estimate", "ab-ads.csv", "--pass", "final"]).stdout);
    assert!(before.contains("photon-1              12 images"), "{before}");
    assert!(!before.contains("chosen after the trial"), "{before}");

    let mut child = darkroom(dir.path())
        .args(["review", "ab-ads-trial", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = first_url(child.stdout.take().unwrap());
    let server = Killed(child);
    let url = url.trim_end_matches('/');
    let (status, page) = http(url, "GET", "/trial", &[], "");
    assert_eq!(status, 200);
    let token = page
        .split("name=\"darkroom-token\" content=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let (status, pairs) = http(url, "GET", "/api/trial", &[], "");
    assert_eq!(status, 200, "{pairs}");
    let pairs: Value = serde_json::from_str(&pairs).unwrap();
    assert_eq!(pairs["pairs"].as_array().unwrap().len(), 6);
    let choice = r#"{"scope":"group","key":"coffee","model":"photon-flash-1"}"#;
    let headers = [
        ("Content-Type", "application/json"),
        ("X-Darkroom-Token", token.as_str()),
    ];
    let (status, body) = http(url, "POST", "/api/routing", &headers, choice);
    assert_eq!(status, 200, "{body}");
    drop(server);

    let after = text(&darkroom_ok(dir.path(), &["estimate", "ab-ads.csv", "--pass", "final"]).stdout);
    assert!(
        after.contains("4 image(s) priced at photon-flash-1: chosen after the trial (Flash is enough"),
        "{after}"
    );
    // 8 trail-shoe finals at $0.015 and 4 coffee finals at $0.004.
    assert!(after.contains("$0.136"), "{after}");
    let json: Value = serde_json::from_slice(
        &darkroom_ok(
            dir.path(),
            &["estimate", "ab-ads.csv", "--pass", "final", "--json"],
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(json["routed_by_trial"]["photon-flash-1"], 4);

    darkroom_ok(dir.path(), &["run", "ab-ads.csv", "--pass", "final", "--sim"]);
    let results = std::fs::read_to_string(dir.path().join("out/ab-ads/results.jsonl")).unwrap();
    for line in results.lines() {
        let result: Value = serde_json::from_str(line).unwrap();
        let id = result["id"].as_str().unwrap();
        let expected = if id.starts_with("coffee") {
            "photon-flash-1"
        } else {
            "photon-1"
        };
        assert_eq!(result["model"], expected, "{line}");
    }
}

#[test]
fn a_trial_without_budget_splits_the_default_budget_between_the_models_as_a_given_one_is() {
    let dir = tempfile::tempdir().unwrap();
    ab_ads(dir.path());
    let trial = darkroom(dir.path())
        .env("DARKROOM_BUDGET", "1")
        .args(["trial", "ab-ads.csv", "--sim"])
        .output()
        .unwrap();
    assert_eq!(code(&trial), 0, "{}", text(&trial.stderr));
    let status = darkroom_ok(dir.path(), &["status", "ab-ads-trial", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let budget = |pass: &str| {
        let passes = status["jobs"][0]["passes"].as_array().unwrap();
        let found = passes.iter().find(|p| p["pass"] == pass).unwrap();
        darkroom_jobs::Money::parse_usd(found["budget"].as_str().unwrap())
            .unwrap()
            .micros()
    };
    // 10 rows at $0.004 (Flash) and $0.015 (Photon 1): Flash gets 4/19 of the dollar ($0.2105...),
    // rounded down to a whole cent so both read as amounts people write.
    assert_eq!(budget("preview"), 210_000, "{status:#}");
    assert_eq!(budget("final"), 790_000, "{status:#}");
}
