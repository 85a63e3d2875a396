//! Job files that used to lose rows or refuse names darkroom made, as users meet them: the real
//! binary validating and running them against a `darkroom sim` process, checking the exit code, the
//! line in the message, and that nothing was created, billed or loaded into the ledger.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::path::Path;

use support::{against, code, darkroom, http, text, write, SimProcess};

const UNCLOSED: &str = "id,prompt\n\
vinyl,\"A 12 inch vinyl record on a turntable, warm light\n\
trumpet,A jazz trumpet resting on a wooden stool\n\
piano,An upright piano in an empty hall\n";

const TEMPLATE: &str = "id,prompt,aspect_ratio\n\
scene,\"A living room in {mid-century modern style with walnut furniture|mid-century modern style with teak furniture}\",16:9\n";

/// How many creates the simulator was sent, by status.
fn creates(sim: &SimProcess) -> u64 {
    let (_, stats) = http(&sim.base_url, "GET", "/sim/stats", &[], "");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    stats["requests"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(key, _)| key.starts_with("POST /generations"))
        .map(|(_, n)| n.as_u64().unwrap())
        .sum()
}

fn images(dir: &Path, job: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join("out").join(job).join("preview")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

#[test]
fn validate_refuses_an_unclosed_quote_naming_the_line_it_opened_on() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "vinyl.csv", UNCLOSED);
    let output = darkroom(dir.path())
        .args(["validate", "vinyl.csv"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 2, "{}", text(&output.stdout));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("vinyl.csv: line 2 (id \"vinyl\"): a quote opened on line 2 is never closed"),
        "{stderr}"
    );
    let stdout = text(&output.stdout);
    assert!(stdout.contains("1 error(s); 0 rows"), "{stdout}");
    assert!(stdout.contains("3 lines read as 1 records"), "{stdout}");
}

#[test]
fn run_refuses_an_unclosed_quote_and_sends_bills_and_loads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "vinyl.csv", UNCLOSED);
    let sim = SimProcess::start(dir.path(), &[]);
    let output = against(dir.path(), &sim)
        .args(["run", "vinyl.csv", "--budget", "1"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 2, "stderr: {}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("line 2 (id \"vinyl\"): a quote opened on line 2"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was sent"), "{stderr}");
    assert_eq!(creates(&sim), 0);
    assert_eq!(sim.net_billing(), 0);
    assert!(images(dir.path(), "vinyl").is_empty());
    // No task, no spend, no reservation, not even the job: a first run that refused its file
    // leaves no ledger at all (the file is checked before one is created).
    assert!(!dir.path().join("darkroom.db").exists());

    // The in-process simulator is refused the same way.
    let output = darkroom(dir.path())
        .args(["run", "vinyl.csv", "--sim"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 2, "stderr: {}", text(&output.stderr));
    assert!(text(&output.stderr).contains("line 2"));

    // Closed where it belongs, the file is three rows and three images.
    write(
        dir.path(),
        "vinyl.csv",
        &UNCLOSED.replace("warm light\n", "warm light\"\n"),
    );
    let output = against(dir.path(), &sim)
        .args(["run", "vinyl.csv", "--budget", "1"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", text(&output.stderr));
    assert_eq!(
        images(dir.path(), "vinyl"),
        ["piano.jpg", "trumpet.jpg", "vinyl.jpg"]
    );
    assert_eq!(creates(&sim), 3);
}

#[test]
fn a_quote_closed_over_later_rows_is_refused_with_the_span() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "merged.csv",
        "id,prompt\nvinyl,\"A vinyl record, warm light\ntrumpet,A jazz trumpet\npiano,An upright piano\"\n",
    );
    let output = darkroom(dir.path())
        .args(["validate", "merged.csv"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("line 2 (id \"vinyl\"): lines 2 to 4 are one quoted field"),
        "{stderr}"
    );
    let output = darkroom(dir.path())
        .args(["run", "merged.csv", "--sim"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 2, "stderr: {}", text(&output.stderr));
    assert!(images(dir.path(), "merged").is_empty());
}

#[test]
fn template_alternatives_with_one_slug_validate_and_run_as_two_images() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "scene.csv", TEMPLATE);
    let output = darkroom(dir.path())
        .args(["validate", "scene.csv", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", text(&output.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (summary["rows"].as_u64(), summary["renamed"].as_u64()),
        (Some(2), Some(1))
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("scene.csv: note: line 2 (id \"scene-mid-century-modern-style-"),
        "the new name is shown: {stderr}"
    );

    let output = darkroom(dir.path())
        .args(["run", "scene.csv", "--sim"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", text(&output.stderr));
    let names = images(dir.path(), "scene");
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[1], "scene-mid-century-modern-style.jpg", "{names:?}");
    assert!(
        names[0].starts_with("scene-mid-century-modern-style-") && names[0].ends_with(".jpg"),
        "{names:?}"
    );
}

#[test]
fn ids_differing_only_in_case_are_refused_naming_both_lines() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "case.csv",
        "id,prompt\nSofa,A red sofa\nsofa,A blue sofa\n",
    );
    let output = darkroom(dir.path())
        .args(["validate", "case.csv"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("line 3 (id \"sofa\"): id \"sofa\" and the id on line 2 differ only in letter case"),
        "{stderr}"
    );
}

/// The names in `dir`, sorted, but for the test's own home directory (`.home`).
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != ".home")
        .collect();
    names.sort();
    names
}

#[test]
fn a_refused_job_file_leaves_no_ledger_or_lock_file_behind_and_an_existing_ledger_stays() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "bad.jsonl",
        "{\"id\": \"a\", \"prompt\": \"A red sofa\", \"id\": \"b\"}\n",
    );
    write(dir.path(), "empty.csv", "");
    write(dir.path(), "invalid.csv", "id,prompt\nsofa,ab\n");
    let files = names_in(dir.path());
    for (file, says) in [
        ("bad.jsonl", "gives the key \"id\" twice"),
        ("empty.csv", "empty.csv"),
        ("invalid.csv", "too short"),
        ("missing.csv", "missing.csv"),
    ] {
        let output = darkroom(dir.path())
            .args(["run", file, "--sim"])
            .output()
            .unwrap();
        assert_eq!(code(&output), 2, "{file}: {}", text(&output.stderr));
        assert!(
            text(&output.stderr).contains(says),
            "{file}: {}",
            text(&output.stderr)
        );
        // No darkroom.db, no darkroom.db-lock, no darkroom.db.JOB.lock.
        assert_eq!(names_in(dir.path()), files, "{file}");
    }

    // A ledger that exists is used as it is: refused input never removes it.
    write(
        dir.path(),
        "good.csv",
        "id,prompt\nsofa,A linen sofa in morning light\n",
    );
    let output = darkroom(dir.path())
        .args(["run", "good.csv", "--sim"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    assert!(dir.path().join("darkroom.db").exists());
    let output = darkroom(dir.path())
        .args(["run", "invalid.csv", "--sim"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 2, "{}", text(&output.stderr));
    assert!(dir.path().join("darkroom.db").exists());
    let status = darkroom(dir.path()).args(["status", "--json"]).output().unwrap();
    assert_eq!(code(&status), 0, "{}", text(&status.stderr));
}
