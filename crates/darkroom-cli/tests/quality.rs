//! Quality checks and the prompts that need work, with the real binary: the A/B ad set of
//! `jobs/ab-ads.csv` (with two rows whose prompts ask the simulator for a blank and a duplicate
//! picture) run with `--sim`, one preview promoted, then `darkroom report` (text, `--json`, the
//! HTML file), `manifest.csv` and `darkroom export` read back; and a run against a `darkroom sim`
//! process that blocks and fails some generations, whose report lists those rows by trouble.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use support::{against, code, darkroom, text, write, SimProcess};

/// `jobs/ab-ads.csv` and two rows more, in the same arms and groups, whose prompts ask the
/// simulator for a blank picture and for identical variants.
fn ab_ads_with_bad_rows(dir: &Path) {
    let ab =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../jobs/ab-ads.csv")).unwrap();
    let text = format!(
        "{}\nblank-ad,Bright orange trail shoes on a white floor [sim:blank],16:9,1,trail-shoes,A,display\n\
         twin-ad,Bright orange trail shoes on a red floor [sim:duplicate],1:1,2,coffee,B,stories\n",
        ab.trim_end()
    );
    write(dir, "ab-ads.csv", &text);
}

fn report_json(dir: &Path) -> Value {
    let output = darkroom(dir)
        .args(["report", "ab-ads", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A slice of the arm or group table by name: (rows, images, kept, flagged, spent).
fn slices(table: &Value) -> BTreeMap<String, (u64, u64, u64, u64, i64)> {
    table
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let n = |k: &str| s[k].as_u64().unwrap();
            (
                s["name"].as_str().unwrap().to_string(),
                (
                    n("rows"),
                    n("images"),
                    n("kept"),
                    n("flagged"),
                    s["spent_micros"].as_i64().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn an_ab_run_reports_its_flags_and_the_rows_that_need_work_by_arm_and_group() {
    let dir = tempfile::tempdir().unwrap();
    ab_ads_with_bad_rows(dir.path());
    let run = darkroom(dir.path())
        .args(["run", "ab-ads.csv", "--sim"])
        .output()
        .unwrap();
    assert_eq!(code(&run), 0, "{}", text(&run.stderr));
    write(dir.path(), "keep.csv", "id\nrun-a-1\n");
    let promote = darkroom(dir.path())
        .args(["promote", "ab-ads", "--select", "keep.csv", "--sim"])
        .output()
        .unwrap();
    assert_eq!(code(&promote), 0, "{}", text(&promote.stderr));

    let report = report_json(dir.path());
    let qc = &report["passes"][0]["qc"];
    // 6 rows × 2 variants, a blank row and a pair of identical variants: 15 previews checked.
    assert_eq!(qc["checked"], 15, "{qc}");
    assert_eq!(
        (
            qc["flagged"].as_u64(),
            qc["blank"].as_u64(),
            qc["duplicate"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{qc}"
    );
    assert_eq!(
        (qc["dimensions"].as_u64(), qc["small_file"].as_u64()),
        (Some(0), Some(0)),
        "{qc}"
    );

    let trouble = &report["trouble"];
    let flagged: BTreeMap<&str, &str> = trouble["flagged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["row_id"].as_str().unwrap(), r["detail"].as_str().unwrap()))
        .collect();
    assert_eq!(
        flagged,
        BTreeMap::from([("blank-ad", "blank"), ("twin-ad", "duplicate")])
    );
    // One preview was kept, so the rows with previews and none kept are listed: all but run-a.
    let never: Vec<&str> = trouble["never_kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["row_id"].as_str().unwrap())
        .collect();
    assert_eq!(never.len(), 7, "{never:?}");
    assert!(!never.contains(&"run-a"));
    assert_eq!(trouble["totals"]["never_kept"], 7);

    // Per arm: A has run-a, run-story-a, coffee-a and blank-ad; B the others and twin-ad.
    // Images are previews and the one final; spend is what each row's tasks cost.
    let arms = slices(&trouble["by_arm"]);
    assert_eq!(arms.keys().collect::<Vec<_>>(), ["A", "B"]);
    assert_eq!(
        (arms["A"].0, arms["A"].1, arms["A"].2, arms["A"].3),
        (4, 8, 1, 1),
        "{arms:?}"
    );
    assert_eq!(
        (arms["B"].0, arms["B"].1, arms["B"].2, arms["B"].3),
        (4, 8, 0, 1),
        "{arms:?}"
    );
    let spent: i64 = report["spent_micros"].as_i64().unwrap();
    assert_eq!(arms["A"].4 + arms["B"].4, spent, "the arms' spend is the job's");
    assert_eq!(arms["A"].4, 7 * 4_000 + 15_000, "A: 7 previews and one final");
    let groups = slices(&trouble["by_group"]);
    assert_eq!(groups.keys().collect::<Vec<_>>(), ["coffee", "trail-shoes"]);
    assert_eq!(groups["coffee"].0, 3);

    // The same in the text report and the HTML file.
    let output = darkroom(dir.path()).args(["report", "ab-ads"]).output().unwrap();
    let report_text = text(&output.stdout);
    assert!(
        report_text.contains("2 of 15 images flagged by quality checks: 1 blank, 1 duplicate"),
        "{report_text}"
    );
    assert!(
        report_text.contains("prompts that need work, flagged by quality checks (2 rows):"),
        "{report_text}"
    );
    assert!(report_text.contains("by arm:"), "{report_text}");
    let html = std::fs::read_to_string(dir.path().join("out/ab-ads/report.html")).unwrap();
    assert!(html.contains("<h2>Prompts that need work</h2>"));
    assert!(html.contains("<h3>by arm</h3>"));

    // The manifest's qc column, from the run's outputs and from an export.
    let qc_cells = |path: &Path, id: &str| -> BTreeMap<String, String> {
        let mut reader = csv::Reader::from_path(path).unwrap();
        let headers = reader.headers().unwrap().clone();
        let at = |name: &str| headers.iter().position(|h| h == name).unwrap();
        let (i, q) = (at(id), at("qc"));
        reader
            .records()
            .map(|r| r.unwrap())
            .map(|r| (r[i].to_string(), r[q].to_string()))
            .collect()
    };
    let outputs = qc_cells(&dir.path().join("out/ab-ads/manifest.csv"), "id");
    assert_eq!(outputs["blank-ad"], "blank");
    assert_eq!(outputs["twin-ad-2"], "duplicate");
    assert_eq!(outputs["run-b-2"], "");
    write(dir.path(), "flagged.csv", "id\nblank-ad\ntwin-ad-2\nrun-b-1\n");
    let export = darkroom(dir.path())
        .args(["export", "ab-ads", "--select", "flagged.csv"])
        .output()
        .unwrap();
    assert_eq!(code(&export), 0, "{}", text(&export.stderr));
    let exported = qc_cells(&dir.path().join("out/ab-ads/export/manifest.csv"), "row_id");
    assert_eq!(
        exported,
        BTreeMap::from([
            ("blank-ad".to_string(), "blank".to_string()),
            ("twin-ad".to_string(), "duplicate".to_string()),
            ("run-b".to_string(), String::new()),
        ])
    );
}

#[test]
fn rows_blocked_or_retried_are_listed_with_the_upstreams_reason_and_their_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(
        dir.path(),
        &[
            "--time-scale",
            "0.01",
            "--moderation",
            "0.3",
            "--generation-failed",
            "0.3",
            "--seed",
            "7",
        ],
    );
    ab_ads_with_bad_rows(dir.path());
    let run = against(dir.path(), &sim)
        .args(["run", "ab-ads.csv"])
        .output()
        .unwrap();
    assert!(matches!(code(&run), 0 | 1), "{}", text(&run.stderr));
    let report = report_json(dir.path());
    let trouble = &report["trouble"];
    let blocked = trouble["blocked"].as_array().unwrap();
    // The rows errors.jsonl says were blocked are the rows listed, each with the upstream's reason.
    let errors = std::fs::read_to_string(dir.path().join("out/ab-ads/errors.jsonl")).unwrap();
    let rows_blocked: std::collections::BTreeSet<String> = errors
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["status"] == "blocked")
        .map(|e| e["row_id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !rows_blocked.is_empty(),
        "seed 7 blocks some generation: {errors}"
    );
    let listed: std::collections::BTreeSet<String> = blocked
        .iter()
        .map(|r| r["row_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, rows_blocked);
    assert_eq!(
        trouble["totals"]["blocked"].as_u64().unwrap(),
        blocked.len() as u64
    );
    for row in blocked {
        let reason = row["detail"].as_str().unwrap();
        assert!(
            darkroom_sim::MODERATION_REASONS
                .iter()
                .any(|r| reason.contains(r)),
            "the upstream's reason: {reason}"
        );
    }
    let retried = trouble["most_attempts"].as_array().unwrap();
    assert!(!retried.is_empty(), "seed 7 fails some generation: {report}");
    let attempts: Vec<u64> = retried.iter().map(|r| r["attempts"].as_u64().unwrap()).collect();
    assert!(
        attempts.windows(2).all(|w| w[0] >= w[1]),
        "most attempts first: {attempts:?}"
    );
    assert!(attempts.iter().all(|a| *a > 1), "{attempts:?}");
    let output = darkroom(dir.path()).args(["report", "ab-ads"]).output().unwrap();
    assert!(text(&output.stdout).contains("prompts that need work, blocked by moderation"));
    assert!(text(&output.stdout).contains("prompts that need work, most attempts"));
}
