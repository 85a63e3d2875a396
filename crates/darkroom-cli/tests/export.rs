//! `darkroom export` and the metadata inside images as users meet them: the real binary with
//! `--sim` (one simulated account across commands), a real ledger, previews, a promotion, the
//! deliverable as a folder and as a zip, read back with the zip crate and exiftool (readers no one
//! here wrote).

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use darkroom_testkit::exiftool::{tags, text as tag};
use support::{code, darkroom, text, write, SimProcess};

const FLASH: i64 = 4_000;
const PHOTON: i64 = 15_000;

const JOB: &str = "\
id,prompt,aspect_ratio,variants,arm
run-a,\"A runner at dawn on a coastal path, orange trail shoes\",16:9,2,A
run-b,Orange trail shoes splashing through a puddle,1:1,1,B
";

fn run(dir: &Path, args: &[&str]) -> Output {
    let output = darkroom(dir).args(args).output().unwrap();
    assert_eq!(code(&output), 0, "{args:?}: {}", text(&output.stderr));
    output
}

/// Previews of the job `ads` (3 images), then finals of `run-a-2` and `run-b`.
fn previews_and_two_finals(dir: &Path) {
    write(dir, "ads.csv", JOB);
    run(dir, &["run", "ads.csv", "--sim", "--budget", "1"]);
    write(dir, "chosen.csv", "id\nrun-a-2\nrun-b\n");
    run(
        dir,
        &[
            "promote",
            "ads",
            "--select",
            "chosen.csv",
            "--sim",
            "--budget",
            "1",
        ],
    );
}

/// results.jsonl by pass and id.
fn results(dir: &Path) -> BTreeMap<(String, String), serde_json::Value> {
    std::fs::read_to_string(dir.join("out/ads/results.jsonl"))
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

/// Every file under `dir`, relative, with its bytes.
fn folder(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                files.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Every entry of a zip file, with its bytes.
fn zip_entries(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut entry = archive.by_index(i).unwrap();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            (entry.name().unwrap().to_string(), bytes)
        })
        .collect()
}

/// manifest.csv's rows as column → value maps.
fn manifest(bytes: &[u8]) -> Vec<BTreeMap<String, String>> {
    let mut reader = csv::Reader::from_reader(bytes);
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            headers
                .iter()
                .map(String::from)
                .zip(r.iter().map(String::from))
                .collect()
        })
        .collect()
}

/// Names left beside the export by a temporary (`.export.tmp-*`, `.ads.zip.tmp-*`).
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".tmp-"))
        .collect()
}

#[test]
fn export_zip_holds_the_finals_a_manifest_of_each_file_and_the_report_and_the_bill_matches() {
    let dir = tempfile::tempdir().unwrap();
    previews_and_two_finals(dir.path());
    let out = run(dir.path(), &["export", "ads", "--zip", "ads.zip"]);
    assert_eq!(text(&out.stdout).trim(), "ads.zip");
    let entries = zip_entries(&dir.path().join("ads.zip"));
    let names: Vec<&str> = entries.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "ads/final/run-a-2.jpg",
            "ads/final/run-b.jpg",
            "ads/manifest.csv",
            "ads/report.html"
        ]
    );
    let results = results(dir.path());
    let rows = manifest(&entries["ads/manifest.csv"]);
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let id = row["file"].trim_start_matches("final/").trim_end_matches(".jpg");
        let made = &results[&("final".to_string(), id.to_string())];
        let preview = &results[&("preview".to_string(), id.to_string())];
        let bytes = &entries[&format!("ads/{}", row["file"])];
        assert_eq!(row["pass"], "final");
        assert_eq!(row["model"], "photon-1");
        assert_eq!(row["provider"], "luma");
        assert_eq!(row["provider"], made["provider"].as_str().unwrap());
        assert_eq!(row["row_id"], made["row_id"].as_str().unwrap());
        assert_eq!(row["prompt"], made["prompt"].as_str().unwrap());
        assert_eq!(row["generation_id"], made["generation_id"].as_str().unwrap());
        assert_eq!(row["source"], format!("preview/{id}.jpg"));
        assert_eq!(
            row["source_generation_id"],
            preview["generation_id"].as_str().unwrap()
        );
        assert_eq!(row["bytes"], bytes.len().to_string());
        assert_eq!(row["blake3"], blake3::hash(bytes).to_hex().to_string());
        assert_eq!(
            row["blake3"],
            made["content_hash"].as_str().unwrap(),
            "the file as the ledger recorded it"
        );
        assert_eq!(row["arm"], made["metadata"]["arm"].as_str().unwrap());

        // Inside the image: what made it, as exiftool reads it.
        let file = dir.path().join(format!("{id}.jpg"));
        std::fs::write(&file, bytes).unwrap();
        let found = tags(&file);
        assert_eq!(
            tag(&found, "XMP-darkroom:Prompt").as_deref(),
            made["prompt"].as_str()
        );
        assert_eq!(
            tag(&found, "XMP-darkroom:GenerationId").as_deref(),
            made["generation_id"].as_str()
        );
        assert_eq!(tag(&found, "XMP-darkroom:Pass").as_deref(), Some("final"));
        assert_eq!(tag(&found, "XMP-darkroom:Job").as_deref(), Some("ads"));
        assert_eq!(
            tag(&found, "XMP-darkroom:Source"),
            Some(format!("preview/{id}.jpg"))
        );
        assert_eq!(
            tag(&found, "XMP-darkroom:SourceGenerationId").as_deref(),
            preview["generation_id"].as_str()
        );
    }
    let report = String::from_utf8(entries["ads/report.html"].clone()).unwrap();
    assert!(report.contains("<html") && report.contains("ads"));

    // The simulated account's bill is the ledger's spend: 3 previews, 2 finals.
    let account = SimProcess::start(dir.path(), &["--state", ".darkroom/sim"]);
    assert_eq!(account.net_billing(), 3 * FLASH + 2 * PHOTON);
    let status = run(dir.path(), &["status", "ads", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let spent: Vec<&str> = status["jobs"][0]["passes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["spent"].as_str().unwrap())
        .collect();
    assert_eq!(spent, ["0.012", "0.03"], "{status:#}");
}

#[test]
fn export_again_gives_the_same_files_byte_for_byte_and_nothing_stale() {
    let dir = tempfile::tempdir().unwrap();
    previews_and_two_finals(dir.path());
    run(dir.path(), &["export", "ads"]);
    run(dir.path(), &["export", "ads", "--zip", "ads.zip"]);
    let export = dir.path().join("out/ads/export");
    let first = folder(&export);
    let names: Vec<&str> = first.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "final/run-a-2.jpg",
            "final/run-b.jpg",
            "manifest.csv",
            "report.html"
        ]
    );
    // The folder and the zip hold the same files.
    let zipped: BTreeMap<String, Vec<u8>> = zip_entries(&dir.path().join("ads.zip"))
        .into_iter()
        .map(|(name, bytes)| (name.trim_start_matches("ads/").to_string(), bytes))
        .collect();
    assert_eq!(zipped, first);
    let zip_bytes = std::fs::read(dir.path().join("ads.zip")).unwrap();

    std::fs::write(export.join("stale.txt"), b"left by hand").unwrap();
    std::fs::create_dir_all(export.join("preview")).unwrap();
    std::fs::write(export.join("preview/old.jpg"), b"from an older export").unwrap();
    run(dir.path(), &["export", "ads"]);
    run(dir.path(), &["export", "ads", "--zip", "ads.zip"]);
    assert_eq!(folder(&export), first, "the same files, and nothing stale");
    assert_eq!(std::fs::read(dir.path().join("ads.zip")).unwrap(), zip_bytes);
    assert!(temporaries(&dir.path().join("out/ads")).is_empty());
    assert!(temporaries(dir.path()).is_empty());
}

#[test]
fn export_kept_takes_each_kept_previews_final_else_the_preview_and_without_finals_the_previews() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ads.csv", JOB);
    run(dir.path(), &["run", "ads.csv", "--sim", "--budget", "1"]);
    // No final yet: the deliverable is every done preview.
    run(dir.path(), &["export", "ads"]);
    let names: Vec<String> = folder(&dir.path().join("out/ads/export")).into_keys().collect();
    assert_eq!(
        names,
        [
            "manifest.csv",
            "preview/run-a-1.jpg",
            "preview/run-a-2.jpg",
            "preview/run-b.jpg",
            "report.html"
        ]
    );

    write(dir.path(), "chosen.csv", "id\nrun-b\n");
    run(
        dir.path(),
        &[
            "promote",
            "ads",
            "--select",
            "chosen.csv",
            "--sim",
            "--budget",
            "1",
        ],
    );
    // Review's export: run-b (promoted) and run-a-1 (not), in the page's format.
    write(
        dir.path(),
        "out/ads/select.csv",
        "id,row_id,keep\nrun-a-1,run-a,yes\nrun-b,run-b,yes\nrun-a-2,run-a,\n",
    );
    run(dir.path(), &["export", "ads", "--kept", "--zip", "kept.zip"]);
    let entries = zip_entries(&dir.path().join("kept.zip"));
    let rows = manifest(&entries["ads/manifest.csv"]);
    let files: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["file"].as_str(), r["pass"].as_str()))
        .collect();
    assert_eq!(
        files,
        [("preview/run-a-1.jpg", "preview"), ("final/run-b.jpg", "final")]
    );
    assert!(entries.contains_key("ads/preview/run-a-1.jpg") && entries.contains_key("ads/final/run-b.jpg"));
    assert!(!entries.contains_key("ads/preview/run-a-2.jpg"), "not kept");

    // Without --kept, the job now has a final: the deliverable is its finals.
    run(dir.path(), &["export", "ads"]);
    let names: Vec<String> = folder(&dir.path().join("out/ads/export")).into_keys().collect();
    assert_eq!(names, ["final/run-b.jpg", "manifest.csv", "report.html"]);
}

#[test]
fn a_missing_or_changed_image_refuses_the_export_by_row_id_and_nothing_is_half_written() {
    let dir = tempfile::tempdir().unwrap();
    previews_and_two_finals(dir.path());
    run(dir.path(), &["export", "ads"]);
    let export = dir.path().join("out/ads/export");
    let before = folder(&export);

    std::fs::remove_file(dir.path().join("out/ads/final/run-b.jpg")).unwrap();
    let changed = dir.path().join("out/ads/final/run-a-2.jpg");
    let mut bytes = std::fs::read(&changed).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0xFF;
    std::fs::write(&changed, bytes).unwrap();
    for args in [&["export", "ads"][..], &["export", "ads", "--zip", "new.zip"]] {
        let refused = darkroom(dir.path()).args(args).output().unwrap();
        assert_eq!(code(&refused), 1, "{args:?}: {}", text(&refused.stderr));
        let stderr = text(&refused.stderr);
        assert!(
            stderr.contains("row run-b") && stderr.contains("run-b.jpg is missing"),
            "{stderr}"
        );
        assert!(
            stderr.contains("row run-a")
                && stderr.contains("run-a-2.jpg is not the image the ledger recorded"),
            "{stderr}"
        );
        assert!(stderr.contains("darkroom verify ads"), "{stderr}");
        assert!(text(&refused.stdout).is_empty());
    }
    assert_eq!(folder(&export), before, "the earlier export is as it was");
    assert!(!dir.path().join("new.zip").exists(), "no zip half-written");
    assert!(temporaries(&dir.path().join("out/ads")).is_empty());
    assert!(temporaries(dir.path()).is_empty());

    // A kept id that names no preview is refused by name, before anything is read.
    write(dir.path(), "out/ads/select.csv", "id\nrun-c\n");
    let refused = darkroom(dir.path())
        .args(["export", "ads", "--kept", "--zip", "new.zip"])
        .output()
        .unwrap();
    assert_eq!(code(&refused), 2, "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("\"run-c\": no preview of this job"),
        "{}",
        text(&refused.stderr)
    );
    assert!(!dir.path().join("new.zip").exists());
}

#[test]
fn no_metadata_and_the_config_key_keep_images_as_the_provider_sent_them() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ads.csv", JOB);
    run(
        dir.path(),
        &["run", "ads.csv", "--sim", "--budget", "1", "--no-metadata"],
    );
    let plain = tags(&dir.path().join("out/ads/preview/run-b.jpg"));
    assert!(!plain.keys().any(|k| k.contains("darkroom")), "{plain:#?}");

    write(dir.path(), "quiet.toml", "[outputs]\nmetadata = false\n");
    write(dir.path(), "other.csv", &JOB.replace("run-", "shot-"));
    run(
        dir.path(),
        &[
            "run",
            "other.csv",
            "--sim",
            "--budget",
            "1",
            "--no-cache",
            "--config",
            "quiet.toml",
        ],
    );
    let plain = tags(&dir.path().join("out/other/preview/shot-b.jpg"));
    assert!(!plain.keys().any(|k| k.contains("darkroom")), "{plain:#?}");

    // By default, every image carries it.
    write(dir.path(), "third.csv", &JOB.replace("run-", "take-"));
    run(
        dir.path(),
        &["run", "third.csv", "--sim", "--budget", "1", "--no-cache"],
    );
    let stamped = tags(&dir.path().join("out/third/preview/take-b.jpg"));
    assert_eq!(tag(&stamped, "XMP-darkroom:RowId").as_deref(), Some("take-b"));
}

#[test]
fn zip_onto_a_directory_an_image_or_the_ledger_is_refused_with_exit_2_and_nothing_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    previews_and_two_finals(dir.path());
    std::fs::create_dir(dir.path().join("deliver")).unwrap();
    std::fs::write(dir.path().join("deliver/keep.txt"), "mine").unwrap();
    let image = std::fs::read_dir(dir.path().join("out/ads/final"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jpg" || e == "png"))
        .unwrap();
    let image_bytes = std::fs::read(&image).unwrap();
    let ledger = dir.path().join("darkroom.db");
    let ledger_bytes = std::fs::read(&ledger).unwrap();
    for target in [dir.path().join("deliver"), image.clone(), ledger.clone()] {
        let out = darkroom(dir.path())
            .args(["export", "ads", "--zip", target.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{target:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("--zip"), "{}", text(&out.stderr));
        assert!(
            !text(&out.stderr).contains("ledger or the disk failed"),
            "{}",
            text(&out.stderr)
        );
    }
    assert_eq!(
        std::fs::read(&image).unwrap(),
        image_bytes,
        "the image is untouched"
    );
    assert_eq!(
        std::fs::read(&ledger).unwrap(),
        ledger_bytes,
        "the ledger is untouched"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("deliver/keep.txt")).unwrap(),
        "mine"
    );
    assert!(
        temporaries(dir.path()).is_empty(),
        "{:?}",
        temporaries(dir.path())
    );
    run(dir.path(), &["verify", "ads"]);
    // An earlier export's zip is still replaced.
    run(dir.path(), &["export", "ads", "--zip", "ads.zip"]);
    run(dir.path(), &["export", "ads", "--zip", "ads.zip"]);
}

#[test]
fn a_select_file_that_chooses_nothing_or_cant_be_read_is_named_as_such_with_the_reason_and_who_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    previews_and_two_finals(dir);
    let refused = |args: &[&str]| {
        let output = darkroom(dir).args(args).output().unwrap();
        assert_eq!(code(&output), 2, "{args:?}: {}", text(&output.stderr));
        text(&output.stderr)
    };
    // Chooses nothing: a header alone, or a manifest whose keep column is empty.
    write(dir, "only-header.csv", "id\n");
    let manifest = dir.join("out/ads/manifest.csv");
    for file in ["only-header.csv", manifest.to_str().unwrap()] {
        let stderr = refused(&["export", "ads", "--select", file]);
        assert!(stderr.contains("chooses no image"), "{stderr}");
        assert!(!stderr.contains("no done image"), "{stderr}");
    }
    // Missing: the OS's reason, and that the review page's Export writes it.
    for args in [
        &["export", "ads", "--kept"][..],
        &["promote", "ads", "--select", "out/ads/select.csv", "--sim"][..],
        &[
            "reframe",
            "ads",
            "--to",
            "1:1",
            "--select",
            "out/ads/select.csv",
            "--sim",
        ][..],
    ] {
        let stderr = refused(args);
        assert!(
            stderr.contains("could not read the select file"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("No such file or directory"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("Export button (`darkroom review ads`)"),
            "{args:?}: {stderr}"
        );
    }
    // Unknown ids: each named with its line in the select file.
    write(dir, "unknown.csv", "id\nrun-b\nno-such\n\nrun-z-9\n");
    let stderr = refused(&["export", "ads", "--select", "unknown.csv"]);
    assert!(
        stderr.contains("unknown.csv, line 3: id \"no-such\":"),
        "{stderr}"
    );
    assert!(
        stderr.contains("unknown.csv, line 5: id \"run-z-9\":"),
        "{stderr}"
    );
    let stderr = refused(&["promote", "ads", "--select", "unknown.csv", "--sim"]);
    assert!(
        stderr.contains("unknown.csv, line 3: no-such: no preview with this id"),
        "{stderr}"
    );
}
