//! The cache with providers, with the real binary and its built-in simulator (`--sim`): the
//! provider is part of the cache's key, so an image made on Luma is never served to a run on
//! Replicate (which makes and bills its own), while a run on the same provider still takes the
//! image from the cache at no cost. Both manifests (the pass's and the export's) name the
//! provider that made each image.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use support::{code, darkroom, text, write};

const ROWS: &str = "id,prompt,aspect_ratio\n\
                    oak,An oak dining chair in a bright room,1:1\n\
                    teak,A teak lounge chair on a terrace,16:9\n";

/// `darkroom run FILE --sim --budget 1 EXTRA...`, which must succeed.
fn run(dir: &Path, file: &str, extra: &[&str]) {
    let output = darkroom(dir)
        .args(["run", file, "--sim", "--budget", "1"])
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{file}: {}", text(&output.stderr));
}

/// The job's preview results.jsonl lines: (id, status, provider, cost in micro-dollars).
fn results(dir: &Path, job: &str) -> Vec<(String, String, Option<String>, i64)> {
    let mut lines: Vec<_> = std::fs::read_to_string(dir.join(format!("out/{job}/results.jsonl")))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["id"].as_str().unwrap().to_string(),
                v["status"].as_str().unwrap().to_string(),
                v["provider"].as_str().map(String::from),
                v["cost_micros"].as_i64().unwrap(),
            )
        })
        .collect();
    lines.sort();
    lines
}

/// A manifest's (id or file, provider) pairs, sorted.
fn providers_in(manifest: &Path, key: &str) -> Vec<(String, String)> {
    let mut reader = csv::Reader::from_path(manifest).unwrap();
    let headers = reader.headers().unwrap().clone();
    let mut rows: Vec<_> = reader
        .records()
        .map(|r| {
            let row: BTreeMap<&str, String> =
                headers.iter().zip(r.unwrap().iter().map(String::from)).collect();
            (row[key].clone(), row["provider"].clone())
        })
        .collect();
    rows.sort();
    rows
}

/// The ledger's net spend on the job, from `darkroom report --json`.
fn spent(dir: &Path, job: &str) -> i64 {
    let output = darkroom(dir).args(["report", job, "--json"]).output().unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    report["spent_micros"].as_i64().unwrap()
}

#[test]
fn an_image_made_on_luma_is_not_served_from_the_cache_to_a_run_on_replicate_which_makes_and_bills_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    for file in [
        "on-luma.csv",
        "on-replicate.csv",
        "again-on-replicate.csv",
        "again-on-luma.csv",
    ] {
        write(dir, file, ROWS);
    }
    run(dir, "on-luma.csv", &[]);
    assert_eq!(spent(dir, "on-luma"), 2 * 4_000, "two previews at Luma's $0.004");

    run(dir, "on-replicate.csv", &["--provider", "replicate"]);
    let made = |id: &str, provider: &str, cost: i64| {
        (
            id.to_string(),
            "done".to_string(),
            Some(provider.to_string()),
            cost,
        )
    };
    assert_eq!(
        results(dir, "on-replicate"),
        vec![
            made("oak", "replicate", 10_000),
            made("teak", "replicate", 10_000)
        ],
        "made on Replicate, not copied from Luma's images"
    );
    assert_eq!(
        spent(dir, "on-replicate"),
        2 * 10_000,
        "billed at Replicate's $0.01"
    );

    // The same provider still hits the cache, on each provider, at no cost.
    for (file, job, provider) in [
        ("again-on-replicate.csv", "again-on-replicate", "replicate"),
        ("again-on-luma.csv", "again-on-luma", "luma"),
    ] {
        run(dir, file, &["--provider", provider]);
        let statuses: Vec<_> = results(dir, job)
            .into_iter()
            .map(|(id, status, _, cost)| (id, status, cost))
            .collect();
        assert_eq!(
            statuses,
            vec![
                ("oak".to_string(), "cached".to_string(), 0),
                ("teak".to_string(), "cached".to_string(), 0)
            ],
            "{provider}"
        );
        assert_eq!(spent(dir, job), 0, "{provider}");
    }
}

#[test]
fn the_pass_manifest_and_the_export_manifest_name_the_provider_that_made_each_image() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write(dir, "chairs.csv", ROWS);
    run(dir, "chairs.csv", &["--provider", "replicate"]);
    let named = |first: &str, second: &str, provider: &str| {
        vec![
            (first.to_string(), provider.to_string()),
            (second.to_string(), provider.to_string()),
        ]
    };
    assert_eq!(
        providers_in(&dir.join("out/chairs/manifest.csv"), "id"),
        named("oak", "teak", "replicate")
    );
    // A copy from the cache was made by no create of its own: its provider cell is empty.
    write(dir, "copies.csv", ROWS);
    run(dir, "copies.csv", &["--provider", "replicate"]);
    assert_eq!(
        providers_in(&dir.join("out/copies/manifest.csv"), "id"),
        named("oak", "teak", "")
    );

    let output = darkroom(dir).args(["export", "chairs"]).output().unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    assert_eq!(
        providers_in(&dir.join("out/chairs/export/manifest.csv"), "file"),
        named("preview/oak.jpg", "preview/teak.jpg", "replicate")
    );
}
