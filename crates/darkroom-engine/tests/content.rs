//! Images identified by their content, end to end against the real simulator and a real SQLite
//! ledger: prompts swapped between ids, rows inserted above others, cache sources deleted or edited,
//! `verify` and the start-of-run check finding lost files, and the next run restoring them with the
//! right bytes without paying twice. The simulator draws the same picture for identical requests and
//! different pictures for different prompts, so a file's picture (its bytes without the metadata
//! darkroom writes into each image, `picture_of`) says which picture it holds, while the hash the
//! ledger records is of the file as written, metadata included.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use darkroom_engine::content::{verify_job, Problem, Unverified};
use darkroom_engine::{Outcome, RunSettings};
use darkroom_jobs::Money;
use darkroom_testkit::Harness;

async fn harness() -> Harness {
    Harness::fast().await
}

fn settings(h: &Harness, job: &str) -> RunSettings {
    let mut s = h.settings(job);
    s.stuck_after = Duration::from_secs(5);
    s
}

/// Loads `text` as the job file `NAME.csv` and runs its preview pass to the end.
async fn run_job(h: &Harness, name: &str, text: &str, settings: &RunSettings) -> Outcome {
    let file = h.dir.path().join(format!("{name}.csv"));
    std::fs::write(&file, text).unwrap();
    let job = h.load(&file, settings, Money::parse_usd("1").unwrap()).await;
    h.run_collecting(job, settings).await.0
}

fn hash_of(path: &Path) -> String {
    blake3::hash(&std::fs::read(path).unwrap()).to_hex().to_string()
}

/// Which picture a file holds: the hash of its bytes with darkroom's metadata taken out (each
/// copy carries its own task's fields, so whole files of one picture differ).
fn picture_of(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let picture = darkroom_engine::metadata::embed(&bytes, None).unwrap();
    assert_ne!(picture, bytes, "{} carries darkroom's metadata", path.display());
    blake3::hash(&picture).to_hex().to_string()
}

fn image(h: &Harness, job: &str, id: &str) -> PathBuf {
    h.dir.path().join(format!("out/{job}/preview/{id}.jpg"))
}

/// results.jsonl of a job: id → (prompt, content_hash, path).
fn results(h: &Harness, job: &str) -> HashMap<String, (String, String, String)> {
    let text = std::fs::read_to_string(h.dir.path().join(format!("out/{job}/results.jsonl"))).unwrap();
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let field = |k: &str| v[k].as_str().unwrap().to_string();
            (
                field("id"),
                (field("prompt"), field("content_hash"), field("path")),
            )
        })
        .collect()
}

/// manifest.csv of a job: id → (prompt, path, content_hash, status).
fn manifest(h: &Harness, job: &str) -> HashMap<String, (String, String, String, String)> {
    let mut reader = csv::Reader::from_path(h.dir.path().join(format!("out/{job}/manifest.csv"))).unwrap();
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (id, prompt, path, hash, status) = (
        column("id"),
        column("prompt"),
        column("path"),
        column("content_hash"),
        column("status"),
    );
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (
                r[id].to_string(),
                (
                    r[prompt].to_string(),
                    r[path].to_string(),
                    r[hash].to_string(),
                    r[status].to_string(),
                ),
            )
        })
        .collect()
}

/// Each done image of the job holds the picture its prompt was first generated as (`by_prompt`),
/// and results.jsonl and the manifest say so.
fn assert_pictures(h: &Harness, job: &str, by_prompt: &HashMap<String, String>) {
    let results = results(h, job);
    let manifest = manifest(h, job);
    assert!(!results.is_empty());
    for (id, (prompt, hash, path)) in &results {
        let expected = &by_prompt[prompt];
        assert_eq!(
            &picture_of(Path::new(path)),
            expected,
            "{id} ({prompt}) holds another picture"
        );
        assert_eq!(&picture_of(&image(h, job, id)), expected, "{id} ({prompt})");
        assert_eq!(
            hash,
            &hash_of(Path::new(path)),
            "results.jsonl records {id}'s file"
        );
        let (m_prompt, m_path, m_hash, _) = &manifest[id];
        assert_eq!(
            (m_prompt, m_path, m_hash),
            (prompt, path, hash),
            "manifest row {id}"
        );
    }
}

/// Prompt → the picture a job's results point at for it (`picture_of`).
fn hashes_by_prompt(h: &Harness, job: &str) -> HashMap<String, String> {
    results(h, job)
        .into_values()
        .map(|(prompt, _, path)| (prompt, picture_of(Path::new(&path))))
        .collect()
}

async fn assert_bill_matches(h: &Harness) {
    assert_eq!(
        h.ledger.net_charges().await.unwrap().micros(),
        h.sim.billing().net_micros,
        "ledger charges equal the simulator's bill"
    );
}

const BICYCLE: &str = "A red bicycle leaning on a brick wall";
const KAYAK: &str = "A blue kayak on a calm lake";
const TENT: &str = "A green tent under pine trees";

#[tokio::test]
async fn prompts_swapped_between_ids_leave_each_id_with_its_own_picture() {
    let h = harness().await;
    let s = settings(&h, "skus");
    let first = run_job(
        &h,
        "skus",
        &format!("id,prompt\nsku-a,{BICYCLE}\nsku-b,{KAYAK}\n"),
        &s,
    )
    .await;
    assert_eq!(first.counts.done, 2);
    let pictures = hashes_by_prompt(&h, "skus");
    assert_ne!(
        pictures[BICYCLE], pictures[KAYAK],
        "different prompts, different pictures"
    );
    assert_pictures(&h, "skus", &pictures);
    let billed = h.sim.billing().net_micros;

    // Swapped: each id's new picture is the other id's old one, which the cache copies.
    let second = run_job(
        &h,
        "skus",
        &format!("id,prompt\nsku-a,{KAYAK}\nsku-b,{BICYCLE}\n"),
        &s,
    )
    .await;
    assert_eq!(
        (second.counts.done, second.counts.cached),
        (2, 2),
        "{:?}",
        second.counts
    );
    assert_eq!(h.sim.billing().net_micros, billed, "both came from the cache");
    assert_eq!(picture_of(&image(&h, "skus", "sku-a")), pictures[KAYAK]);
    assert_eq!(picture_of(&image(&h, "skus", "sku-b")), pictures[BICYCLE]);
    assert_pictures(&h, "skus", &pictures);
    assert_eq!(manifest(&h, "skus")["sku-b"].0, BICYCLE);
    // The superseded tasks' bytes were kept aside, named by content.
    let aside = h.dir.path().join("out/skus/preview/.superseded");
    for (id, prompt) in [("sku-a", BICYCLE), ("sku-b", KAYAK)] {
        let kept: Vec<PathBuf> = std::fs::read_dir(&aside)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{id}-"))
            })
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        let kept = &kept[0];
        assert_eq!(
            kept.file_name().unwrap().to_string_lossy(),
            format!("{id}-{}.jpg", &hash_of(kept)[..8]),
            "named by its content"
        );
        assert_eq!(picture_of(kept), pictures[prompt], "{}", kept.display());
    }

    // And back again: the first run's tasks are current again, and their kept-aside images are
    // put back at their ids' paths.
    let third = run_job(
        &h,
        "skus",
        &format!("id,prompt\nsku-a,{BICYCLE}\nsku-b,{KAYAK}\n"),
        &s,
    )
    .await;
    assert_eq!(third.counts.done, 2);
    assert_eq!(h.sim.billing().net_micros, billed);
    assert_pictures(&h, "skus", &pictures);
    assert_bill_matches(&h).await;
}

#[tokio::test]
async fn prompts_rotated_among_three_ids_in_any_file_order_leave_each_id_with_its_own_picture() {
    let h = harness().await;
    let s = settings(&h, "rot");
    run_job(
        &h,
        "rot",
        &format!("id,prompt\na,{BICYCLE}\nb,{KAYAK}\nc,{TENT}\n"),
        &s,
    )
    .await;
    let pictures = hashes_by_prompt(&h, "rot");
    let billed = h.sim.billing().net_micros;
    // Rotated, and listed in another order: whichever id is copied first, no source is lost.
    for text in [
        format!("id,prompt\nc,{BICYCLE}\nb,{TENT}\na,{KAYAK}\n"),
        format!("id,prompt\nb,{BICYCLE}\na,{TENT}\nc,{KAYAK}\n"),
        format!("id,prompt\na,{BICYCLE}\nb,{KAYAK}\nc,{TENT}\n"),
    ] {
        let outcome = run_job(&h, "rot", &text, &s).await;
        assert_eq!(outcome.counts.done, 3, "{text}");
        assert_pictures(&h, "rot", &pictures);
    }
    assert_eq!(h.sim.billing().net_micros, billed, "nothing was bought again");
}

#[tokio::test]
async fn a_row_inserted_above_others_without_an_id_column_leaves_each_row_with_its_picture() {
    let h = harness().await;
    let s = settings(&h, "lines");
    run_job(&h, "lines", &format!("prompt\n{BICYCLE}\n{KAYAK}\n"), &s).await;
    let mut pictures = hashes_by_prompt(&h, "lines");
    assert_eq!(results(&h, "lines")["row-2"].0, BICYCLE);
    let billed = h.sim.billing().net_micros;

    // A row inserted at the top: every row id (`row-LINE`) shifts down by one.
    let outcome = run_job(&h, "lines", &format!("prompt\n{TENT}\n{BICYCLE}\n{KAYAK}\n"), &s).await;
    assert_eq!(
        (outcome.counts.done, outcome.counts.cached),
        (3, 2),
        "{:?}",
        outcome.counts
    );
    assert_eq!(
        h.sim.billing().net_micros,
        billed + 4_000,
        "only the new row was bought"
    );
    let results = results(&h, "lines");
    assert_eq!(
        (
            results["row-2"].0.as_str(),
            results["row-3"].0.as_str(),
            results["row-4"].0.as_str()
        ),
        (TENT, BICYCLE, KAYAK)
    );
    pictures.insert(TENT.to_string(), picture_of(Path::new(&results["row-2"].2)));
    assert_ne!(pictures[TENT], pictures[BICYCLE]);
    assert_pictures(&h, "lines", &pictures);
    assert_bill_matches(&h).await;
}

#[tokio::test]
async fn a_cache_source_deleted_or_edited_before_the_hit_is_not_reused_and_the_image_is_generated() {
    let h = harness().await;
    let text = format!("id,prompt\nbike,{BICYCLE}\nboat,{KAYAK}\n");
    run_job(&h, "one", &text, &settings(&h, "one")).await;
    let pictures = hashes_by_prompt(&h, "one");
    std::fs::remove_file(image(&h, "one", "bike")).unwrap();
    // Edited in place, same size: only its hash tells.
    let boat = image(&h, "one", "boat");
    let mut bytes = std::fs::read(&boat).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&boat, &bytes).unwrap();
    let billed = h.sim.billing().net_micros;

    let two = run_job(&h, "two", &text, &settings(&h, "two")).await;
    assert_eq!((two.counts.done, two.counts.cached), (2, 0), "{:?}", two.counts);
    assert_eq!(
        h.sim.billing().net_micros,
        billed + 2 * 4_000,
        "both were generated"
    );
    assert_pictures(&h, "two", &pictures);

    // The stale sources are not offered again: the next copies come from job two's good bytes.
    let three = run_job(&h, "three", &text, &settings(&h, "three")).await;
    assert_eq!((three.counts.done, three.counts.cached), (2, 2));
    assert_eq!(h.sim.billing().net_micros, billed + 2 * 4_000);
    assert_pictures(&h, "three", &pictures);
    assert_bill_matches(&h).await;
}

#[tokio::test]
async fn the_cache_copies_the_recorded_bytes_of_another_job() {
    let h = harness().await;
    let text = format!("id,prompt\nbike,{BICYCLE}\nboat,{KAYAK}\n");
    run_job(&h, "one", &text, &settings(&h, "one")).await;
    let pictures = hashes_by_prompt(&h, "one");
    let two = run_job(&h, "two", &text, &settings(&h, "two")).await;
    assert_eq!((two.counts.done, two.counts.cached), (2, 2));
    assert_pictures(&h, "two", &pictures);
    // The same picture, each copy with its own job's fields.
    assert_eq!(
        picture_of(&image(&h, "two", "boat")),
        picture_of(&image(&h, "one", "boat"))
    );
    let two_boat = String::from_utf8_lossy(&std::fs::read(image(&h, "two", "boat")).unwrap()).into_owned();
    assert!(two_boat.contains("<darkroom:Job>two</darkroom:Job>"));
    assert!(!two_boat.contains("<darkroom:Job>one</darkroom:Job>"));
}

#[tokio::test]
async fn verify_finds_a_missing_and_an_edited_file_and_the_next_run_downloads_both_again_at_no_cost() {
    let h = harness().await;
    let s = settings(&h, "shop");
    let text = format!("id,prompt\nbike,{BICYCLE}\nboat,{KAYAK}\ntent,{TENT}\n");
    run_job(&h, "shop", &text, &s).await;
    let pictures = hashes_by_prompt(&h, "shop");
    let job = h.ledger.job("shop").await.unwrap();
    let clean = verify_job(&h.ledger, &job, None, Unverified::Report)
        .await
        .unwrap();
    assert_eq!((clean.checked, clean.intact, clean.findings.len()), (3, 3, 0));

    std::fs::remove_file(image(&h, "shop", "bike")).unwrap();
    let boat = image(&h, "shop", "boat");
    let boat_as_written = hash_of(&boat);
    let mut bytes = std::fs::read(&boat).unwrap();
    bytes[100] ^= 0xFF;
    std::fs::write(&boat, &bytes).unwrap();

    let report = verify_job(&h.ledger, &job, None, Unverified::Report)
        .await
        .unwrap();
    assert!(report.has_damage());
    assert_eq!((report.checked, report.intact, report.marked), (3, 1, 2));
    let problems: Vec<(&str, Problem)> = report
        .findings
        .iter()
        .map(|f| (f.id.as_str(), f.problem))
        .collect();
    assert_eq!(problems, [("bike", Problem::Missing), ("boat", Problem::Changed)]);
    let boat_finding = &report.findings[1];
    assert_eq!(boat_finding.expected.as_ref().unwrap().hash, boat_as_written);
    assert_eq!(boat_finding.found.as_ref().unwrap().hash, hash_of(&boat));
    assert_eq!(boat_finding.path, boat.display().to_string());

    let billed = h.sim.billing().net_micros;
    let outcome = run_job(&h, "shop", &text, &s).await;
    assert_eq!(outcome.counts.done, 3, "{:?}", outcome.counts);
    assert_eq!(
        h.sim.billing().net_micros,
        billed,
        "downloaded again, not bought again"
    );
    assert_pictures(&h, "shop", &pictures);
    let after = verify_job(&h.ledger, &job, None, Unverified::Report)
        .await
        .unwrap();
    assert_eq!((after.intact, after.findings.len()), (3, 0));
    assert_bill_matches(&h).await;
}

#[tokio::test]
async fn a_run_restores_a_missing_and_a_cut_short_file_without_verify() {
    let h = harness().await;
    let s = settings(&h, "shop");
    let text = format!("id,prompt\nbike,{BICYCLE}\nboat,{KAYAK}\n");
    run_job(&h, "shop", &text, &s).await;
    let pictures = hashes_by_prompt(&h, "shop");
    std::fs::remove_file(image(&h, "shop", "bike")).unwrap();
    let boat = image(&h, "shop", "boat");
    let bytes = std::fs::read(&boat).unwrap();
    std::fs::write(&boat, &bytes[..bytes.len() / 2]).unwrap();
    let billed = h.sim.billing().net_micros;

    let outcome = run_job(&h, "shop", &text, &s).await;
    assert_eq!(outcome.counts.done, 2, "{:?}", outcome.counts);
    assert_eq!(h.sim.billing().net_micros, billed);
    assert_pictures(&h, "shop", &pictures);
}

#[tokio::test]
async fn a_lost_file_whose_generation_the_upstream_deleted_is_made_again_under_the_budget() {
    let h = harness().await;
    let s = settings(&h, "gone");
    let text = format!("id,prompt\nbike,{BICYCLE}\n");
    run_job(&h, "gone", &text, &s).await;
    let pictures = hashes_by_prompt(&h, "gone");
    let job = h.ledger.job("gone").await.unwrap();
    let task = &h.ledger.kept_images(job.id, None, 0, 10).await.unwrap()[0];
    let upstream = h.ledger.task(task.task_id).await.unwrap().generation_id.unwrap();
    h.delete_generation(&upstream).await;
    std::fs::remove_file(image(&h, "gone", "bike")).unwrap();
    let billed = h.sim.billing().net_micros;

    let outcome = run_job(&h, "gone", &text, &s).await;
    assert_eq!(outcome.counts.done, 1, "{:?}", outcome.counts);
    assert_eq!(h.sim.billing().net_micros, billed + 4_000, "made once more");
    assert_eq!(outcome.spent, Money::from_micros(2 * 4_000));
    assert_pictures(&h, "gone", &pictures);
    assert_bill_matches(&h).await;
}
