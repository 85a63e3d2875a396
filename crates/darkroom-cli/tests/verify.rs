//! `darkroom verify` and content-checked images as users meet them: the real binary, a real ledger
//! file, and the simulator (its own `darkroom sim` process, or in-process with `--sim`).

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::collections::HashMap;
use std::path::Path;

use support::{against, code, darkroom, text, write, SimProcess};

fn hash_of(path: &Path) -> String {
    blake3::hash(&std::fs::read(path).unwrap()).to_hex().to_string()
}

/// Which picture a file holds: the hash of its bytes without the metadata darkroom writes into
/// each image (each file carries its own row's fields, so two files of one picture differ).
fn picture_of(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let picture = darkroom_engine::metadata::embed(&bytes, None).unwrap();
    blake3::hash(&picture).to_hex().to_string()
}

/// results.jsonl of a job: id → (prompt, content_hash).
fn results(dir: &Path, job: &str) -> HashMap<String, (String, String)> {
    std::fs::read_to_string(dir.join(format!("out/{job}/results.jsonl")))
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let field = |k: &str| v[k].as_str().unwrap().to_string();
            (field("id"), (field("prompt"), field("content_hash")))
        })
        .collect()
}

#[test]
fn verify_lists_a_missing_and_an_edited_image_exits_1_and_the_next_run_restores_both_without_paying() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(dir.path(), &["--time-scale", "0.02"]);
    write(
        dir.path(),
        "shop.csv",
        "id,prompt\nbike,A red bicycle leaning on a brick wall\nboat,A blue kayak on a calm lake\n\
         tent,A green tent under pine trees\n",
    );
    let run = || {
        let output = against(dir.path(), &sim)
            .args(["run", "shop.csv", "--budget", "1"])
            .output()
            .unwrap();
        assert_eq!(code(&output), 0, "stderr: {}", text(&output.stderr));
    };
    let verify = |extra: &[&str]| {
        darkroom(dir.path())
            .args(["verify", "shop"])
            .args(extra)
            .output()
            .unwrap()
    };
    run();
    let image = |id: &str| dir.path().join(format!("out/shop/preview/{id}.jpg"));
    let originals: HashMap<&str, String> = ["bike", "boat", "tent"]
        .into_iter()
        .map(|id| (id, hash_of(&image(id))))
        .collect();
    let clean = verify(&[]);
    assert_eq!(code(&clean), 0, "stderr: {}", text(&clean.stderr));
    assert!(
        text(&clean.stdout).contains("shop: 3 checked, 3 intact, 0 missing, 0 changed"),
        "{}",
        text(&clean.stdout)
    );

    std::fs::remove_file(image("bike")).unwrap();
    let mut bytes = std::fs::read(image("boat")).unwrap();
    bytes[200] ^= 0x0F;
    std::fs::write(image("boat"), &bytes).unwrap();
    let edited = hash_of(&image("boat"));

    let found = verify(&[]);
    assert_eq!(code(&found), 1, "stderr: {}", text(&found.stderr));
    let stdout = text(&found.stdout);
    assert!(
        stdout.contains(&format!(
            "shop preview row bike (bike) out/shop/preview/bike.jpg: missing, expected blake3 {}",
            originals["bike"]
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "shop preview row boat (boat) out/shop/preview/boat.jpg: changed, expected blake3 {} ({} bytes), found blake3 {edited} ({} bytes)",
            originals["boat"],
            bytes.len(),
            bytes.len()
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("row tent"), "{stdout}");
    assert!(text(&found.stderr).contains("hint: run the job again"));

    let json = verify(&["--json"]);
    assert_eq!(code(&json), 1);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let findings = report["jobs"][0]["findings"].as_array().unwrap();
    let problems: Vec<(&str, &str)> = findings
        .iter()
        .map(|f| (f["id"].as_str().unwrap(), f["problem"].as_str().unwrap()))
        .collect();
    assert_eq!(problems, [("bike", "missing"), ("boat", "changed")]);
    assert_eq!(findings[1]["found"]["hash"], edited.as_str());

    let billed = sim.net_billing();
    run();
    assert_eq!(sim.net_billing(), billed, "downloaded again, not bought again");
    for (id, hash) in &originals {
        assert_eq!(&hash_of(&image(id)), hash, "{id} holds its own picture again");
    }
    let after = verify(&[]);
    assert_eq!(code(&after), 0, "{}", text(&after.stdout));
}

#[test]
fn swapping_two_prompts_between_ids_leaves_each_file_with_its_own_picture_and_the_manifest_right() {
    let dir = tempfile::tempdir().unwrap();
    let bicycle = "A red bicycle leaning on a brick wall";
    let kayak = "A blue kayak on a calm lake";
    write(
        dir.path(),
        "skus.csv",
        &format!("id,prompt\nsku-a,{bicycle}\nsku-b,{kayak}\n"),
    );
    let run = || {
        let output = darkroom(dir.path())
            .args(["run", "skus.csv", "--sim", "--budget", "1"])
            .output()
            .unwrap();
        assert_eq!(code(&output), 0, "stderr: {}", text(&output.stderr));
    };
    run();
    let image = |id: &str| dir.path().join(format!("out/skus/preview/{id}.jpg"));
    let first = results(dir.path(), "skus");
    let picture: HashMap<String, String> = first
        .iter()
        .map(|(id, (prompt, _))| (prompt.clone(), picture_of(&image(id))))
        .collect();
    assert_ne!(picture[bicycle], picture[kayak]);

    write(
        dir.path(),
        "skus.csv",
        &format!("id,prompt\nsku-a,{kayak}\nsku-b,{bicycle}\n"),
    );
    run();
    assert_eq!(
        picture_of(&image("sku-a")),
        picture[kayak],
        "sku-a is the kayak now"
    );
    assert_eq!(
        picture_of(&image("sku-b")),
        picture[bicycle],
        "sku-b is the bicycle now"
    );
    let now = results(dir.path(), "skus");
    assert_eq!(now["sku-b"], (bicycle.to_string(), hash_of(&image("sku-b"))));
    // No field of this manifest is quoted (no commas in these prompts or paths).
    let manifest = std::fs::read_to_string(dir.path().join("out/skus/manifest.csv")).unwrap();
    let mut lines = manifest.lines().map(|l| l.split(',').collect::<Vec<_>>());
    let headers = lines.next().unwrap();
    let column = |name: &str| headers.iter().position(|h| *h == name).unwrap();
    let rows: HashMap<&str, Vec<&str>> = lines.map(|r| (r[column("id")], r)).collect();
    assert_eq!(rows["sku-b"][column("prompt")], bicycle, "{manifest}");
    for row in rows.values() {
        let prompt = row[column("prompt")];
        let path = dir.path().join(row[column("path")]);
        assert_eq!(row[column("content_hash")], hash_of(&path), "{manifest}");
        assert_eq!(picture_of(&path), picture[prompt]);
    }
    let verify = darkroom(dir.path()).args(["verify"]).output().unwrap();
    assert_eq!(code(&verify), 0, "{}", text(&verify.stdout));
}

#[test]
fn verify_of_an_unknown_job_or_a_missing_ledger_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let no_ledger = darkroom(dir.path()).args(["verify"]).output().unwrap();
    assert_eq!(code(&no_ledger), 2);
    assert!(text(&no_ledger.stderr).contains("no ledger at darkroom.db"));
    write(
        dir.path(),
        "one.csv",
        "id,prompt\na,A red bicycle leaning on a brick wall\n",
    );
    let run = darkroom(dir.path())
        .args(["run", "one.csv", "--sim"])
        .output()
        .unwrap();
    assert_eq!(code(&run), 0, "stderr: {}", text(&run.stderr));
    let unknown = darkroom(dir.path()).args(["verify", "two"]).output().unwrap();
    assert_eq!(code(&unknown), 2);
    assert!(
        text(&unknown.stderr).contains("no job named \"two\""),
        "{}",
        text(&unknown.stderr)
    );
}
