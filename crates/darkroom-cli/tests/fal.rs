//! `--provider fal`: a run made by fal.ai's queue API (the simulator's, in a `darkroom sim`
//! process), reserved and charged per megapixel, with the ledger equal to fal's bill, under the
//! flaky fault profile too; no key is bad input with nothing spent.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::path::Path;
use std::process::Command;

use darkroom_jobs::Money;
use support::{code, darkroom, get_json, text, write, SimProcess};

fn job(dir: &Path) {
    write(
        dir,
        "stools.csv",
        "id,prompt,aspect_ratio,variants\n\
         oak,An oak bar stool in a bright kitchen,1:1,2\n\
         steel,A steel counter stool against a brick wall,21:9,1\n\
         cane,A cane stool on a terrace,9:16,1\n",
    );
}

/// `darkroom` pointed at the simulator process's fal API with a fal key.
fn on_fal(dir: &Path, sim: &SimProcess) -> Command {
    let origin = sim.base_url.trim_end_matches("/dream-machine/v1").to_string();
    let mut command = darkroom(dir);
    command
        .env("FAL_KEY", "fal-test-key-0001")
        .env("DARKROOM_FAL_QUEUE_URL", format!("{origin}/fal/queue"))
        .env("DARKROOM_FAL_API_URL", format!("{origin}/fal/api/v1"))
        // A submit answered 5xx is searched for this long before it is sent again.
        .env("DARKROOM_SETTLE_WINDOW_SECONDS", "3");
    command
}

fn fal_bill(sim: &SimProcess) -> i64 {
    get_json(&sim.base_url, "/sim/fal/billing")["net_micros"]
        .as_i64()
        .unwrap()
}

fn summary(stdout: &[u8]) -> serde_json::Value {
    serde_json::from_str(text(stdout).lines().last().unwrap()).unwrap()
}

#[test]
fn a_run_on_fal_makes_every_image_at_its_per_megapixel_price_and_the_ledger_equals_fals_bill() {
    let dir = tempfile::tempdir().unwrap();
    job(dir.path());
    let sim = SimProcess::start(dir.path(), &[]);
    let output = on_fal(dir.path(), &sim)
        .args([
            "run",
            "stools.csv",
            "--provider",
            "fal",
            "--json",
            "--budget",
            "5",
            // The images as fal sent them, so two variants are compared by their pictures.
            "--no-metadata",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", text(&output.stderr));
    let summary = summary(&output.stdout);
    assert_eq!(summary["counts"]["done"], 4);
    // flash per megapixel ($0.005): 1:1 and 9:16 are 2.359296 MP (11,797 µ$), 21:9 2.490368 MP.
    let expected = 3 * 11_797 + 12_452;
    assert_eq!(fal_bill(&sim), expected);
    let spent = Money::parse_usd(summary["spent"].as_str().unwrap()).unwrap();
    assert_eq!(spent.micros(), expected, "the ledger is fal's bill");
    assert_eq!(sim.net_billing(), 0, "nothing was bought from Luma");
    for name in ["oak-1.jpg", "oak-2.jpg", "steel.jpg", "cane.jpg"] {
        assert!(
            dir.path().join("out/stools/preview").join(name).is_file(),
            "{name}"
        );
    }
    // Each fal generation draws its own picture, as Luma's do: a row's variants differ.
    let preview = dir.path().join("out/stools/preview");
    let (first, second) = (
        std::fs::read(preview.join("oak-1.jpg")).unwrap(),
        std::fs::read(preview.join("oak-2.jpg")).unwrap(),
    );
    assert!(first != second, "the two variants of a row are different images");
}

#[test]
fn a_run_on_fal_under_the_flaky_profile_keeps_the_ledger_equal_to_fals_bill() {
    let dir = tempfile::tempdir().unwrap();
    job(dir.path());
    let sim = SimProcess::start(dir.path(), &["--faults", "flaky"]);
    let output = on_fal(dir.path(), &sim)
        .args([
            "run",
            "stools.csv",
            "--provider",
            "fal",
            "--json",
            "--budget",
            "5",
        ])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert!(matches!(code(&output), 0 | 1), "exit {}: {stderr}", code(&output));
    let summary = summary(&output.stdout);
    let spent = Money::parse_usd(summary["spent"].as_str().unwrap()).unwrap();
    assert_eq!(
        spent.micros(),
        fal_bill(&sim),
        "the ledger is fal's bill: {summary}"
    );
    assert!(summary["counts"]["done"].as_u64().unwrap() >= 1, "{summary}");
}

#[test]
fn submits_whose_connection_dropped_after_fal_queued_them_are_found_in_its_list_and_not_paid_twice() {
    let dir = tempfile::tempdir().unwrap();
    job(dir.path());
    let sim = SimProcess::start(dir.path(), &["--create-dropped", "0.9"]);
    let output = on_fal(dir.path(), &sim)
        .args([
            "run",
            "stools.csv",
            "--provider",
            "fal",
            "--json",
            "--budget",
            "5",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", text(&output.stderr));
    let stats = get_json(&sim.base_url, "/sim/fal/stats");
    assert!(
        stats["faults"]["create_dropped"].as_u64().unwrap_or(0) >= 1,
        "{stats}"
    );
    let summary = summary(&output.stdout);
    assert_eq!(summary["counts"]["done"], 4);
    let spent = Money::parse_usd(summary["spent"].as_str().unwrap()).unwrap();
    assert_eq!(spent.micros(), 3 * 11_797 + 12_452);
    assert_eq!(fal_bill(&sim), spent.micros(), "each image bought once");
}

#[test]
fn a_run_on_fal_without_a_key_is_bad_input_naming_fal_key_and_spends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    job(dir.path());
    let sim = SimProcess::start(dir.path(), &[]);
    let mut command = on_fal(dir.path(), &sim);
    command.env_remove("FAL_KEY");
    let output = command
        .args(["run", "stools.csv", "--provider", "fal"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 2, "stderr: {}", text(&output.stderr));
    assert!(text(&output.stderr).contains("FAL_KEY"));
    assert_eq!(fal_bill(&sim), 0);
}

#[test]
fn a_job_with_a_row_fal_cannot_make_whole_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "chairs.csv",
        "id,prompt,aspect_ratio,style_ref\n\
         plain,A plain birch chair,1:1,\n\
         styled,A birch chair in this style,1:1,https://cdn.example.com/style.jpg\n",
    );
    let sim = SimProcess::start(dir.path(), &[]);
    let output = on_fal(dir.path(), &sim)
        .args([
            "run",
            "chairs.csv",
            "--provider",
            "fal",
            "--json",
            "--budget",
            "5",
        ])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 2, "refused up front: {stderr}");
    assert!(
        stderr.contains("line 3 (id \"styled\")") && stderr.contains("style reference"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was sent"), "{stderr}");
    assert_eq!(fal_bill(&sim), 0, "nothing is paid for a refused job");
    let stats = get_json(&sim.base_url, "/sim/stats").to_string();
    assert!(!stats.contains("style.jpg"), "{stats}");
}

/// Each task's reserved price and the pass's net spend, micro-dollars, from the ledger file.
fn ledger_prices(db: &Path) -> (Vec<i64>, i64) {
    use sqlx::Connection as _;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = format!("sqlite://{}?mode=ro", db.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let prices: Vec<i64> = sqlx::query_scalar("SELECT price_micros FROM tasks ORDER BY line, variant")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let spent: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(CASE kind WHEN 'charge' THEN micros ELSE -micros END), 0) FROM spend",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        (prices, spent)
    })
}

#[test]
fn a_fal_run_reserves_at_the_configured_fal_prices_not_the_published_ones() {
    let dir = tempfile::tempdir().unwrap();
    job(dir.path());
    // Twice fal's published flash rate: $0.01 per megapixel.
    write(
        dir.path(),
        "darkroom.toml",
        "[fal.prices]\n\"photon-1\" = \"0.019\"\n\"photon-flash-1\" = \"0.01\"\n",
    );
    let sim = SimProcess::start(dir.path(), &[]);
    // 1:1 and 9:16 are 2.359296 MP ($0.023593 each), 21:9 2.490368 MP ($0.024904); at the
    // published rate the four would cost $0.047843 and all fit.
    let (square, wide) = (23_593, 24_904);
    let output = on_fal(dir.path(), &sim)
        .args(["run", "stools.csv", "--provider", "fal", "--json"])
        .args(["--budget", "0.06", "--config", "darkroom.toml"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 3, "stderr: {}", text(&output.stderr));
    let summary = summary(&output.stdout);
    assert_eq!(summary["counts"]["done"], 2, "{summary}");

    let (prices, spent) = ledger_prices(&dir.path().join("darkroom.db"));
    assert_eq!(prices, [square, square, wide, square]);
    assert_eq!(spent, 2 * square, "each image is charged at the configured price");

    // Without the file, the same job is priced at fal's published rates and fits the budget.
    let dir = tempfile::tempdir().unwrap();
    job(dir.path());
    let output = on_fal(dir.path(), &sim)
        .args([
            "run",
            "stools.csv",
            "--provider",
            "fal",
            "--json",
            "--budget",
            "0.06",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", text(&output.stderr));
    let (prices, _) = ledger_prices(&dir.path().join("darkroom.db"));
    assert_eq!(prices, [11_797, 11_797, 12_452, 11_797]);
}
