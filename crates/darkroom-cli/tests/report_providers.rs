//! The report by provider, with the real binary and its built-in simulator (`--sim`): a job whose
//! previews were made on Luma and finals on Replicate reports each provider's spend, counts and
//! latency apart, in JSON, text and HTML, and the JSON's spend per provider is the ledger's.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use support::{code, darkroom, text, write};

const ROWS: &str = "id,prompt,aspect_ratio\n\
                    oak,An oak dining chair in a bright room,1:1\n\
                    teak,A teak lounge chair on a terrace,16:9\n\
                    pine,A pine stool in a workshop,4:3\n";

/// Replicate's photon-1, per image, in micro-dollars.
const REPLICATE_PHOTON: i64 = 30_000;

/// Net spend (charges less refunds) per provider, read from the ledger file itself.
fn ledger_spend_by_provider(db: &Path) -> BTreeMap<String, i64> {
    use sqlx::Connection as _;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = format!("sqlite://{}?mode=ro", db.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT provider, SUM(CASE kind WHEN 'charge' THEN micros ELSE -micros END)
             FROM spend GROUP BY provider",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        rows.into_iter().collect()
    })
}

/// Runs the previews on Luma and promotes them all on Replicate, in `dir`.
fn previews_on_luma_finals_on_replicate(dir: &Path) {
    write(dir, "chairs.csv", ROWS);
    // Replicate takes one image reference, not `modify_image_ref`.
    write(dir, "darkroom.toml", "[promote]\nreference = \"image_ref\"\n");
    let previews = darkroom(dir)
        .args(["run", "chairs.csv", "--sim", "--budget", "1"])
        .output()
        .unwrap();
    assert_eq!(code(&previews), 0, "{}", text(&previews.stderr));
    let finals = darkroom(dir)
        .args(["promote", "chairs", "--all", "--sim", "--provider", "replicate"])
        .args(["--budget", "1", "--config", "darkroom.toml"])
        .output()
        .unwrap();
    assert_eq!(code(&finals), 0, "{}", text(&finals.stderr));
}

#[test]
fn a_job_with_previews_on_luma_and_finals_on_replicate_reports_each_providers_spend_as_the_ledger_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    previews_on_luma_finals_on_replicate(dir);

    let json = darkroom(dir)
        .args(["report", "chairs", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&json), 0, "{}", text(&json.stderr));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let by_model = report["spend_by_model"].as_array().unwrap();
    let entry = |pass: &str, provider: &str| {
        by_model
            .iter()
            .find(|m| m["pass"] == pass && m["provider"] == provider)
            .unwrap_or_else(|| panic!("no {pass} entry on {provider}: {by_model:?}"))
    };
    let (preview, final_) = (entry("preview", "luma"), entry("final", "replicate"));
    assert_eq!(preview["model"], "photon-flash-1");
    assert_eq!(preview["charges"], 3);
    assert_eq!(final_["model"], "photon-1");
    assert_eq!(final_["charges"], 3);
    assert_eq!(final_["charged_micros"], 3 * REPLICATE_PHOTON);
    // Nothing of either pass was put down to the other provider.
    assert_eq!(by_model.len(), 2, "{by_model:?}");

    let mut reported: BTreeMap<String, i64> = BTreeMap::new();
    for m in by_model {
        let net = m["charged_micros"].as_i64().unwrap() - m["refunded_micros"].as_i64().unwrap();
        *reported
            .entry(m["provider"].as_str().unwrap().to_string())
            .or_default() += net;
    }
    let db = dir.join("darkroom.db");
    assert!(db.is_file(), "the ledger is {}", db.display());
    assert_eq!(reported, ledger_spend_by_provider(&db));
    assert_eq!(report["spent_micros"], reported.values().sum::<i64>());

    // Latency and tiles name the provider that made the images.
    let passes = report["passes"].as_array().unwrap();
    assert_eq!(passes[0]["latency"][0]["provider"], "luma");
    assert_eq!(passes[1]["latency"][0]["provider"], "replicate");
    assert_eq!(passes[1]["latency"][0]["images"], 3);
    let pair = &report["groups"][0]["tiles"][0];
    assert_eq!(pair["preview"]["provider"], "luma");
    assert_eq!(pair["final"]["provider"], "replicate");
}

#[test]
fn the_text_and_html_reports_name_the_provider_of_each_models_spend_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    previews_on_luma_finals_on_replicate(dir);

    let report = darkroom(dir).args(["report", "chairs"]).output().unwrap();
    let said = text(&report.stdout);
    assert_eq!(code(&report), 0, "{}", text(&report.stderr));
    assert!(said.contains("spend by provider and model:"), "{said}");
    let line = |pass: &str, provider: &str| {
        said.lines()
            .find(|l| l.split_whitespace().take(2).eq([pass, provider]))
            .unwrap_or_else(|| panic!("no {pass} line on {provider}: {said}"))
            .to_string()
    };
    assert!(line("preview", "luma").contains("photon-flash-1"), "{said}");
    assert!(line("final", "replicate").contains("$0.09 net"), "{said}");
    assert!(
        said.contains("photon-1 on replicate: 3 images, latency p50"),
        "{said}"
    );
    assert!(
        said.contains("photon-flash-1 on luma: 3 images, latency p50"),
        "{said}"
    );

    let html = darkroom(dir)
        .args(["report", "chairs", "--html", "report.html"])
        .output()
        .unwrap();
    assert_eq!(code(&html), 0, "{}", text(&html.stderr));
    let page = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(page.contains("<h2>Spend by provider and model</h2>"), "{page}");
    assert!(page.contains("<td>final</td><td>replicate</td><td>photon-1</td>"));
    assert!(page.contains("<td>preview</td><td>luma</td><td>photon-flash-1</td>"));
}
