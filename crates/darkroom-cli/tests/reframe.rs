//! `darkroom reframe` as users meet it: the real binary with `--sim` (one simulated account across
//! commands) or a `darkroom sim` process, a real ledger, the A/B ad set's previews, two promoted,
//! reframed, exported and read back with exiftool (a reader no one here wrote).

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use darkroom_testkit::exiftool::{tags, text as tag};
use support::{against, code, darkroom, previews, text, write, SimProcess};

const FLASH: i64 = 4_000;
const PHOTON: i64 = 15_000;

fn run(dir: &Path, args: &[&str]) -> Output {
    let output = darkroom(dir).args(args).output().unwrap();
    assert_eq!(code(&output), 0, "{args:?}: {}", text(&output.stderr));
    output
}

/// results.jsonl of `job` by (pass, id).
fn results(dir: &Path, job: &str) -> BTreeMap<(String, String), serde_json::Value> {
    std::fs::read_to_string(dir.join(format!("out/{job}/results.jsonl")))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let key = (
                v["pass"].as_str().unwrap().to_string(),
                v["id"].as_str().unwrap().to_string(),
            );
            (key, v)
        })
        .collect()
}

/// The simulated account's net bill (`--sim`'s account beside the ledger).
fn bill(dir: &Path) -> i64 {
    SimProcess::start(dir, &["--state", ".darkroom/sim"]).net_billing()
}

/// The A/B ad set's previews (10 rows, 2 variants each), then finals of two of them.
fn ads_with_two_finals(dir: &Path) {
    write(dir, "ab-ads.csv", include_str!("../../../jobs/ab-ads.csv"));
    run(dir, &["run", "ab-ads.csv", "--sim", "--budget", "1"]);
    write(dir, "chosen.csv", "id\nrun-a-2\nrun-story-a-1\n");
    run(
        dir,
        &[
            "promote",
            "ab-ads",
            "--select",
            "chosen.csv",
            "--sim",
            "--budget",
            "1",
        ],
    );
}

#[test]
fn the_ad_set_walk_previews_two_finals_reframed_and_exported_with_the_ledger_equal_to_the_bill() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    ads_with_two_finals(dir);
    let previews = results(dir, "ab-ads")
        .keys()
        .filter(|(p, _)| p == "preview")
        .count() as i64;
    let reframe = ["reframe", "ab-ads", "--to", "1:1,9:16", "--sim", "--budget", "1"];
    let out = run(dir, &reframe);
    // run-a-2 is 16:9: both shapes; run-story-a-1 is already 9:16: only the square.
    assert!(
        text(&out.stderr).contains("reframing: 3 image(s) to make for $0.045"),
        "{}",
        text(&out.stderr)
    );
    let made = results(dir, "ab-ads");
    for (id, source, (w, h)) in [
        ("run-a-2-1-1", "run-a-2", (1536, 1536)),
        ("run-a-2-9-16", "run-a-2", (1152, 2048)),
        ("run-story-a-1-1-1", "run-story-a-1", (1536, 1536)),
    ] {
        let result = &made[&("reframe".to_string(), id.to_string())];
        let final_ = &made[&("final".to_string(), source.to_string())];
        assert_eq!(result["source"], format!("final/{source}.jpg"));
        assert_eq!(result["model"], "photon-1");
        let path = dir.join(format!("out/ab-ads/reframe/{id}.jpg"));
        let found = tags(&path);
        assert_eq!(tag(&found, "File:ImageWidth"), Some(w.to_string()), "{id}");
        assert_eq!(tag(&found, "File:ImageHeight"), Some(h.to_string()), "{id}");
        assert_eq!(
            tag(&found, "XMP-darkroom:Prompt").as_deref(),
            final_["prompt"].as_str()
        );
        assert_eq!(
            tag(&found, "XMP-darkroom:GenerationId").as_deref(),
            result["generation_id"].as_str()
        );
        assert_eq!(tag(&found, "XMP-darkroom:Pass").as_deref(), Some("reframe"));
        assert_eq!(
            tag(&found, "XMP-darkroom:Source"),
            Some(format!("final/{source}.jpg"))
        );
        assert_eq!(
            tag(&found, "XMP-darkroom:SourceGenerationId").as_deref(),
            final_["generation_id"].as_str()
        );
    }
    assert!(!dir.join("out/ab-ads/reframe/run-story-a-1-9-16.jpg").exists());
    let manifest = std::fs::read_to_string(dir.join("out/ab-ads/manifest.csv")).unwrap();
    assert!(
        manifest
            .lines()
            .any(|l| l.starts_with("run-a-2-9-16,reframe,") && l.contains("final/run-a-2.jpg")),
        "{manifest}"
    );

    let expected = previews * FLASH + 2 * PHOTON + 3 * PHOTON;
    assert_eq!(bill(dir), expected);
    // The same command again makes nothing new and pays nothing.
    let again = run(dir, &reframe);
    assert!(
        text(&again.stderr).contains(
            "reframing: 0 image(s) to make for $0.00, 0 in flight from an earlier run, 3 already made"
        ),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(bill(dir), expected);

    run(dir, &["export", "ab-ads", "--zip", "ab-ads.zip"]);
    let zip = std::fs::File::open(dir.join("ab-ads.zip")).unwrap();
    let mut archive = zip::ZipArchive::new(zip).unwrap();
    let names: Vec<String> = (0..archive.len())
        .map(|i| archive.by_index(i).unwrap().name().unwrap().to_string())
        .collect();
    for name in [
        "ab-ads/final/run-a-2.jpg",
        "ab-ads/reframe/run-a-2-9-16.jpg",
        "ab-ads/reframe/run-story-a-1-1-1.jpg",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
    let status = run(dir, &["status", "ab-ads", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let spent: i64 = status["jobs"][0]["passes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            darkroom_jobs::Money::parse_usd(p["spent"].as_str().unwrap())
                .unwrap()
                .micros()
        })
        .sum();
    assert_eq!(spent, expected, "the ledger equals the bill: {status:#}");
}

#[test]
fn bad_to_values_are_refused_by_name_before_anything_is_spent() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    ads_with_two_finals(dir);
    let before = bill(dir);
    for to in ["9x16", "1:1,2:1", "", "square"] {
        let out = darkroom(dir)
            .args(["reframe", "ab-ads", "--to", to, "--sim"])
            .output()
            .unwrap();
        assert_eq!(code(&out), 2, "{to}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("expected"),
            "{to}: {}",
            text(&out.stderr)
        );
    }
    let out = darkroom(dir)
        .args(["reframe", "ab-ads", "--to", "1:1,9x16", "--sim"])
        .output()
        .unwrap();
    assert!(text(&out.stderr).contains("\"9x16\""), "{}", text(&out.stderr));
    write(dir, "unknown.csv", "id\nrun-a-2\nno-such-row\n");
    let out = darkroom(dir)
        .args([
            "reframe",
            "ab-ads",
            "--to",
            "1:1",
            "--select",
            "unknown.csv",
            "--sim",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("unknown.csv, line 3: no-such-row: no final with this id"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(bill(dir), before, "nothing spent");
    assert!(!dir.join("out/ab-ads/reframe").exists());
}

#[test]
fn a_budget_too_small_for_one_reframe_spends_nothing_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    ads_with_two_finals(dir);
    let before = bill(dir);
    let out = darkroom(dir)
        .args(["reframe", "ab-ads", "--to", "1:1", "--sim", "--budget", "0.01"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 3, "{}", text(&out.stderr));
    assert_eq!(bill(dir), before);
    assert!(!dir.join("out/ab-ads/reframe/run-a-2-1-1.jpg").exists());
}

#[test]
fn a_source_whose_upstream_url_expired_is_skipped_by_name_and_nothing_is_spent() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    {
        let first = SimProcess::start(dir, &[]);
        assert_eq!(code(&previews(dir, &first)), 0);
    } // That simulator is gone, and with it every URL it served.
    let second = SimProcess::start(dir, &[]);
    let out = against(dir, &second)
        .args(["reframe", "vases", "--to", "1:1", "--from", "preview"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    for key in ["tall-1", "tall-2", "jar"] {
        assert!(
            stderr.contains(&format!("{key}: its upstream URL no longer resolves")),
            "{stderr}"
        );
    }
    assert!(!stderr.contains("bowl:"), "bowl is square already: {stderr}");
    assert_eq!(second.net_billing(), 0, "nothing spent");
    let results = std::fs::read_to_string(dir.join("out/vases/results.jsonl")).unwrap();
    assert!(!results.contains("\"reframe\""), "{results}");
}

#[test]
fn estimate_prices_each_final_in_each_shape_it_lacks_and_refuses_a_bad_shape() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write(dir, "ab-ads.csv", include_str!("../../../jobs/ab-ads.csv"));
    let out = run(dir, &["estimate", "ab-ads.csv", "--to", "1:1,9:16", "--json"]);
    let estimate: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 6 rows of 2 variants: the 16:9 rows in both shapes, the 9:16 and 1:1 rows in one each.
    assert_eq!(estimate["tasks"], 16, "{estimate:#}");
    assert_eq!(estimate["total_micros"], 16 * PHOTON, "{estimate:#}");
    let out = darkroom(dir)
        .args(["estimate", "ab-ads.csv", "--to", "1:1,5:4"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr).contains("\"5:4\" is not an aspect ratio"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_reframe_makes_and_pays_only_its_own_shapes_and_names_another_to_left_waiting_with_its_command() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    ads_with_two_finals(dir);
    let before = bill(dir);
    // Two finals (run-a-2 16:9, run-story-a-1 9:16) in two shapes each: 4 reframes, room for one.
    let first = [
        "reframe", "ab-ads", "--to", "4:3,21:9", "--sim", "--budget", "0.02",
    ];
    let out = darkroom(dir).args(first).output().unwrap();
    assert_eq!(code(&out), 3, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("reframing: 4 image(s) to make for $0.06"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(bill(dir), before + PHOTON);

    // Another --to makes its 4 and only those: the 3 left of the first stay unmade and are named.
    let other = run(
        dir,
        &["reframe", "ab-ads", "--to", "3:4,9:21", "--sim", "--budget", "2"],
    );
    let stderr = text(&other.stderr);
    assert!(
        stderr.contains("reframing: 4 image(s) to make for $0.06"),
        "{stderr}"
    );
    assert!(
        stderr.contains("3 reframe(s) asked for by another --to wait, not made by this command")
            && stderr.contains("`darkroom reframe ab-ads --to 4:3,21:9 --sim` makes them"),
        "{stderr}"
    );
    assert_eq!(
        bill(dir),
        before + 5 * PHOTON,
        "what was announced, and only that, was paid"
    );
    let reframes = dir.join("out/ab-ads/reframe");
    let made = std::fs::read_dir(&reframes).unwrap().count();
    assert_eq!(made, 5, "1 of the first --to and 4 of the second");

    // The first command again resumes its own 3, announced at their price, and nothing else.
    let resumed = run(
        dir,
        &["reframe", "ab-ads", "--to", "4:3,21:9", "--sim", "--budget", "1"],
    );
    let stderr = text(&resumed.stderr);
    assert!(
        stderr.contains(
            "reframing: 3 image(s) to make for $0.045, 0 in flight from an earlier run, 1 already made"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("another --to"), "{stderr}");
    assert_eq!(bill(dir), before + 8 * PHOTON);
    assert_eq!(std::fs::read_dir(&reframes).unwrap().count(), 8);
}

#[test]
fn a_preview_copied_from_the_trials_cache_is_promoted_with_its_picture_as_the_upstream_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write(dir, "ab-ads.csv", include_str!("../../../jobs/ab-ads.csv"));
    // README's order: a trial first, then the job, whose previews the trial made come from the cache.
    run(dir, &["trial", "ab-ads.csv", "--sim"]);
    run(dir, &["run", "ab-ads.csv", "--sim"]);
    let previews = results(dir, "ab-ads");
    let preview = &previews[&("preview".to_string(), "run-a-1".to_string())];
    assert_eq!(preview["status"], "cached", "{preview}");
    write(dir, "chosen.csv", "id\nrun-a-1\nrun-b-2\n");
    let promote = run(dir, &["promote", "ab-ads", "--select", "chosen.csv", "--sim"]);
    let stderr = text(&promote.stderr);
    assert!(!stderr.contains("prompt alone"), "{stderr}");
    let made = results(dir, "ab-ads");
    let final_ = &made[&("final".to_string(), "run-a-1".to_string())];
    assert!(
        final_["reference"]
            .as_str()
            .unwrap()
            .starts_with("modify_image_ref = preview run-a-1"),
        "{final_}"
    );
    let found = tags(&dir.join(final_["path"].as_str().unwrap()));
    assert_eq!(
        tag(&found, "XMP-darkroom:Source").as_deref(),
        Some("preview/run-a-1.jpg")
    );
    assert_eq!(
        tag(&found, "XMP-darkroom:SourceGenerationId").as_deref(),
        preview["generation_id"].as_str()
    );
    // A reframe of a final whose preview was a copy, and of the copied preview itself, both reach
    // the upstream's image.
    let out = run(
        dir,
        &[
            "reframe",
            "ab-ads",
            "--to",
            "1:1",
            "--from",
            "preview",
            "--select",
            "chosen.csv",
            "--sim",
        ],
    );
    assert!(
        text(&out.stderr).contains("reframing: 2 image(s) to make"),
        "{}",
        text(&out.stderr)
    );
    assert!(dir.join("out/ab-ads/reframe/run-a-1-preview-1-1.jpg").is_file());
}
