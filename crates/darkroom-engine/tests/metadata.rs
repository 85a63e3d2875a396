//! Metadata inside every image a run keeps, read back with exiftool (a reader no one here wrote)
//! against the real simulator and a real SQLite ledger: the fields of a download, of a cache copy
//! in another job (its own job and row, its source's generation), the recorded hash being the file's
//! as written (`verify` finds every file intact), and metadata turned off.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::collections::HashMap;
use std::path::PathBuf;

use darkroom_engine::content::{verify_job, Unverified};
use darkroom_engine::RunSettings;
use darkroom_jobs::Money;
use darkroom_testkit::exiftool::{tags, text};
use darkroom_testkit::Harness;

async fn harness() -> Harness {
    Harness::fast().await
}

const JOB: &str = "\
id,prompt,format,variants,arm
sofa,\"A velvet sofa, café au lait & cream <sunlit>\",jpg,2,a
lamp,Ein Messinglampe im Zürcher Abendlicht,png,1,b
";

/// Runs `text` as job `name`'s preview pass to its end and returns results.jsonl by image id.
async fn run(
    h: &Harness,
    name: &str,
    text: &str,
    settings: &RunSettings,
) -> HashMap<String, serde_json::Value> {
    let file = h.dir.path().join(format!("{name}.csv"));
    std::fs::write(&file, text).unwrap();
    let job = h.load(&file, settings, Money::parse_usd("1").unwrap()).await;
    let (outcome, _) = h.run_collecting(job, settings).await;
    assert_eq!(outcome.counts.done, 3, "{outcome:?}");
    let results = std::fs::read_to_string(h.dir.path().join(format!("out/{name}/results.jsonl"))).unwrap();
    results
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            (v["id"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

fn path_of(result: &serde_json::Value) -> PathBuf {
    PathBuf::from(result["path"].as_str().unwrap())
}

async fn assert_all_intact(h: &Harness, job: &str) {
    let record = h.ledger.job(job).await.unwrap();
    let report = verify_job(&h.ledger, &record, None, Unverified::Report)
        .await
        .unwrap();
    assert_eq!((report.checked, report.intact), (3, 3), "{:?}", report.findings);
}

#[tokio::test]
async fn every_image_a_run_keeps_carries_its_prompt_generation_job_row_pass_and_variant() {
    let h = harness().await;
    let s = h.settings("ads");
    let results = run(&h, "ads", JOB, &s).await;
    let expected = [
        (
            "sofa-1",
            "sofa",
            "1",
            "A velvet sofa, café au lait & cream <sunlit>",
        ),
        (
            "sofa-2",
            "sofa",
            "2",
            "A velvet sofa, café au lait & cream <sunlit>",
        ),
        ("lamp", "lamp", "1", "Ein Messinglampe im Zürcher Abendlicht"),
    ];
    for (id, row, variant, prompt) in expected {
        let result = &results[id];
        let generation = result["generation_id"].as_str().unwrap();
        let found = tags(&path_of(result));
        let field = |name: &str| text(&found, &format!("XMP-darkroom:{name}"));
        assert_eq!(field("Prompt").as_deref(), Some(prompt), "{id}: {found:#?}");
        assert_eq!(field("GenerationId").as_deref(), Some(generation), "{id}");
        assert_eq!(field("Model").as_deref(), Some("photon-flash-1"), "{id}");
        assert_eq!(field("Provider").as_deref(), Some("luma"), "{id}");
        assert_eq!(field("Job").as_deref(), Some("ads"), "{id}");
        assert_eq!(field("RowId").as_deref(), Some(row), "{id}");
        assert_eq!(field("Pass").as_deref(), Some("preview"), "{id}");
        assert_eq!(field("Variant").as_deref(), Some(variant), "{id}");
        assert_eq!(
            field("Version").as_deref(),
            Some(env!("CARGO_PKG_VERSION")),
            "{id}"
        );
        assert_eq!(field("Source"), None, "{id}: a preview has no source image");
        assert_eq!(
            text(&found, "XMP-dc:Description").as_deref(),
            Some(prompt),
            "{id}"
        );
        let tool = text(&found, "XMP-xmp:CreatorTool").unwrap();
        assert!(tool.starts_with("darkroom "), "{id}: {tool}");
    }
    // A PNG also carries the entry prompt-reading image tools display, and plain text chunks.
    let lamp = tags(&path_of(&results["lamp"]));
    let parameters = text(&lamp, "PNG:Parameters").unwrap();
    let generation = results["lamp"]["generation_id"].as_str().unwrap();
    assert!(
        parameters.starts_with("Ein Messinglampe im Zürcher Abendlicht\n"),
        "{parameters}"
    );
    assert!(
        parameters.contains(&format!("Generation id: {generation}")),
        "{parameters}"
    );
    assert_eq!(
        text(&lamp, "PNG:Description").as_deref(),
        Some("Ein Messinglampe im Zürcher Abendlicht")
    );
    // The ledger records the hash of each file as written, metadata included.
    for result in results.values() {
        let bytes = std::fs::read(path_of(result)).unwrap();
        assert_eq!(
            result["content_hash"].as_str().unwrap(),
            blake3::hash(&bytes).to_hex().to_string()
        );
    }
    assert_all_intact(&h, "ads").await;
}

#[tokio::test]
async fn a_cache_copy_in_another_job_carries_its_own_job_and_row_and_its_sources_generation() {
    let h = harness().await;
    let first = run(&h, "spring", JOB, &h.settings("spring")).await;
    let source_bytes = std::fs::read(path_of(&first["sofa-1"])).unwrap();
    // The same requests under other ids: every image is a cache hit.
    let renamed = JOB.replace("\nsofa,", "\ncouch,").replace("\nlamp,", "\nlight,");
    let second = run(&h, "summer", &renamed, &h.settings("summer")).await;
    for (copy, source) in [("couch-1", "sofa-1"), ("couch-2", "sofa-2"), ("light", "lamp")] {
        assert_eq!(second[copy]["status"], "cached", "{copy}");
        let found = tags(&path_of(&second[copy]));
        let field = |name: &str| text(&found, &format!("XMP-darkroom:{name}"));
        assert_eq!(field("Job").as_deref(), Some("summer"), "{copy}");
        assert_eq!(
            field("RowId").as_deref(),
            Some(&copy[..copy.find('-').unwrap_or(copy.len())])
        );
        assert_eq!(
            field("GenerationId").as_deref(),
            first[source]["generation_id"].as_str(),
            "{copy}: made by its source's generation"
        );
        // One packet: the source's fields are gone, not beside the copy's.
        let all = format!("{found:?}");
        assert!(
            !all.contains("spring"),
            "{copy} still names the source's job: {all}"
        );
    }
    // The source is untouched, and both jobs' files are what the ledger recorded.
    assert_eq!(std::fs::read(path_of(&first["sofa-1"])).unwrap(), source_bytes);
    assert_all_intact(&h, "spring").await;
    assert_all_intact(&h, "summer").await;
}

#[tokio::test]
async fn with_metadata_off_images_carry_none_of_darkrooms_not_even_a_cache_sources() {
    let h = harness().await;
    run(&h, "spring", JOB, &h.settings("spring")).await;
    let mut off = h.settings("plain");
    off.metadata = false;
    let renamed = JOB.replace("\nsofa,", "\ncouch,");
    let plain = run(&h, "plain", &renamed, &off).await;
    for (id, cached) in [("couch-1", true), ("lamp", true)] {
        assert_eq!(
            plain[id]["status"],
            if cached { "cached" } else { "done" },
            "{id}"
        );
        let found = tags(&path_of(&plain[id]));
        let darkroom: Vec<&String> = found
            .keys()
            .filter(|k| k.contains("darkroom") || k.as_str() == "PNG:Parameters")
            .collect();
        assert!(darkroom.is_empty(), "{id} carries {darkroom:?}");
    }
    assert_all_intact(&h, "plain").await;

    // A download kept with metadata off is the provider's bytes exactly.
    let h = harness().await;
    let mut off = h.settings("raw");
    off.metadata = false;
    let raw = run(&h, "raw", JOB, &off).await;
    let result = &raw["sofa-1"];
    let generation = h
        .client
        .get(result["generation_id"].as_str().unwrap())
        .await
        .unwrap();
    let served = reqwest::get(generation.image_url().unwrap())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(std::fs::read(path_of(result)).unwrap(), served.to_vec());
}
