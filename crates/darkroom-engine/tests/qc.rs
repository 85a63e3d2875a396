//! Quality checks end to end, against the real simulator and a real SQLite ledger: the simulator
//! draws each kind of bad image a prompt asks for (`[sim:blank]`, `[sim:off-aspect]`,
//! `[sim:duplicate]`, `[sim:tiny]`), the run flags exactly those, in the ledger, `results.jsonl` and
//! `manifest.csv`; its ordinary pictures, in every aspect ratio and both formats, are never
//! flagged; and the flags survive a resumed run without an image being downloaded again.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::collections::BTreeMap;

use darkroom_engine::{Outcome, RunSettings};
use darkroom_jobs::{Money, Pass};
use darkroom_ledger::QcKind;
use darkroom_sim::SimConfig;
use darkroom_testkit::Harness;

/// A fast simulator whose generations each draw their own picture, as the real upstream's do.
async fn harness() -> Harness {
    Harness::start(SimConfig {
        time_scale: 0.02,
        creates_per_minute: None,
        max_concurrent: Some(40),
        distinct_pictures: true,
        ..SimConfig::default()
    })
    .await
}

async fn run(h: &Harness, job: &str, text: &str) -> (i64, Outcome, RunSettings) {
    let file = darkroom_testkit::jobs::write(h.dir.path(), &format!("{job}.csv"), text);
    let settings = h.settings(job);
    let id = h.load(&file, &settings, Money::parse_usd("5").unwrap()).await;
    let (outcome, _) = h.run_collecting(id, &settings).await;
    (id, outcome, settings)
}

/// Task key → the kinds of its flags, for every flagged task of the job's previews.
async fn flags(h: &Harness, job: i64) -> BTreeMap<String, Vec<QcKind>> {
    let keys: BTreeMap<i64, String> = h
        .ledger
        .tiles(job, Pass::Preview)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.id, t.task_key))
        .collect();
    let mut found: BTreeMap<String, Vec<QcKind>> = BTreeMap::new();
    for flag in h.ledger.qc_flags(job, Pass::Preview, 0, i64::MAX).await.unwrap() {
        found
            .entry(keys[&flag.task_id].clone())
            .or_default()
            .push(flag.kind);
    }
    found
}

const BAD_AND_GOOD: &str = "id,prompt,variants,aspect_ratio
good,A red kayak on a calm lake at dawn,2,16:9
blank,A red kayak on a calm lake [sim:blank],1,16:9
off,A red kayak on a calm lake [sim:off-aspect],1,16:9
tall,A red kayak on a calm lake [sim:off-aspect],1,9:21
twins,A red kayak on a calm lake [sim:duplicate],2,1:1
tiny,A red kayak on a calm lake [sim:tiny],1,4:3
";

#[tokio::test]
async fn each_kind_of_bad_image_the_simulator_makes_is_flagged_and_nothing_else_is() {
    let h = harness().await;
    let (job, outcome, _) = run(&h, "qc", BAD_AND_GOOD).await;
    assert_eq!(outcome.counts.done, 8, "{:?}", outcome.counts);
    let expected: BTreeMap<String, Vec<QcKind>> = [
        ("blank", vec![QcKind::Blank]),
        ("off", vec![QcKind::Dimensions]),
        ("tall", vec![QcKind::Dimensions]),
        // The later variant of the identical pair carries the flag; the first does not.
        ("twins-2", vec![QcKind::Duplicate]),
        ("tiny", vec![QcKind::SmallFile]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(flags(&h, job).await, expected);

    let all = h.ledger.qc_flags(job, Pass::Preview, 0, i64::MAX).await.unwrap();
    let duplicate = all.iter().find(|f| f.kind == QcKind::Duplicate).unwrap();
    assert_eq!(duplicate.duplicate_of.as_deref(), Some("twins-1"));
    assert_eq!(duplicate.measured, 0.0, "identical pictures: no bit differs");
    let off = all.iter().find(|f| f.kind == QcKind::Dimensions).unwrap();
    assert!(off.measured > 0.4 && off.measured <= 1.0, "{off:?}");
    let counts = h.ledger.qc_counts(job, Pass::Preview).await.unwrap();
    assert_eq!((counts.checked, counts.flagged), (8, 5), "{counts:?}");
    assert_eq!(
        (
            counts.blank,
            counts.dimensions,
            counts.duplicate,
            counts.small_file
        ),
        (1, 2, 1, 1)
    );
}

#[tokio::test]
async fn the_flags_are_in_results_jsonl_and_the_manifest_qc_column() {
    let h = harness().await;
    run(&h, "qc", BAD_AND_GOOD).await;
    let job_dir = h.dir.path().join("out").join("qc");
    let results: BTreeMap<String, serde_json::Value> = std::fs::read_to_string(job_dir.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["id"].as_str().unwrap().to_string(), v))
        .collect();
    assert_eq!(results["good-1"]["qc"], serde_json::json!([]));
    let blank = &results["blank"]["qc"][0];
    assert_eq!(blank["kind"], "blank");
    assert!(blank["measured"].as_f64().unwrap() <= 3.0);
    assert_eq!(blank["threshold"], 3.0);
    assert!(blank["detail"].as_str().unwrap().contains("flat colour"));
    assert_eq!(results["twins-2"]["qc"][0]["duplicate_of"], "twins-1");
    assert_eq!(results["tiny"]["qc"][0]["kind"], "small_file");

    let mut manifest = csv::Reader::from_path(job_dir.join("manifest.csv")).unwrap();
    let headers = manifest.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (id, qc) = (column("id"), column("qc"));
    let cells: BTreeMap<String, String> = manifest
        .records()
        .map(|r| r.unwrap())
        .map(|r| (r[id].to_string(), r[qc].to_string()))
        .collect();
    assert_eq!(cells["good-1"], "");
    assert_eq!(cells["good-2"], "");
    assert_eq!(cells["blank"], "blank");
    assert_eq!(cells["off"], "dimensions");
    assert_eq!(cells["twins-1"], "");
    assert_eq!(cells["twins-2"], "duplicate");
    assert_eq!(cells["tiny"], "small_file");
}

#[tokio::test]
async fn the_simulators_ordinary_pictures_in_every_shape_and_format_raise_no_flag() {
    let h = harness().await;
    let mut text = String::from("id,prompt,variants,aspect_ratio,format\n");
    let aspects = ["1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21"];
    for (i, aspect) in aspects.iter().enumerate() {
        for format in ["jpg", "png"] {
            text.push_str(&format!(
                "r{i}-{format},A product photo number {i} of a walking boot on {format} paper,3,{aspect},{format}\n"
            ));
        }
    }
    let (job, outcome, _) = run(&h, "clean", &text).await;
    assert_eq!(outcome.counts.done, 42, "{:?}", outcome.counts);
    assert_eq!(flags(&h, job).await, BTreeMap::new());
    assert_eq!(h.ledger.qc_counts(job, Pass::Preview).await.unwrap().checked, 42);
}

#[tokio::test]
async fn flags_survive_a_resumed_run_and_no_image_is_measured_twice() {
    let h = harness().await;
    let (job, _, settings) = run(&h, "qc", BAD_AND_GOOD).await;
    let before = flags(&h, job).await;
    let downloads = |h: &Harness| {
        h.sim
            .stats()
            .requests
            .iter()
            .filter(|(k, _)| k.starts_with("GET /sim/assets"))
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    let downloaded = downloads(&h);
    let (outcome, _) = h.run_collecting(job, &settings).await;
    assert_eq!(outcome.counts.done, 8);
    assert_eq!(
        downloads(&h),
        downloaded,
        "nothing downloaded (or measured) again"
    );
    assert_eq!(flags(&h, job).await, before);
}

#[tokio::test]
async fn with_quality_checks_off_images_are_kept_unmeasured() {
    let h = harness().await;
    let file = darkroom_testkit::jobs::write(h.dir.path(), "off.csv", BAD_AND_GOOD);
    let mut settings = h.settings("off");
    settings.qc.enabled = false;
    let job = h.load(&file, &settings, Money::parse_usd("5").unwrap()).await;
    let (outcome, _) = h.run_collecting(job, &settings).await;
    assert_eq!(outcome.counts.done, 8);
    let counts = h.ledger.qc_counts(job, Pass::Preview).await.unwrap();
    assert_eq!((counts.checked, counts.flagged), (0, 0));
}
