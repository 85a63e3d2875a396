//! Price truth on every provider, through the real binary and its built-in simulator (`--sim`):
//! a table far below what the account charges is caught within the first images and the run stops
//! at its budget with the ledger equal to the bill; fal's observed price is a rate per megapixel;
//! advice and `darkroom prices` speak each provider's own table; a price of $0, an unquoted TOML
//! number and a price above the budget are each told plainly.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::path::Path;
use std::process::Output;

use darkroom_jobs::Money;
use support::{code, darkroom, text, write};

/// 40 rows × {matte|gloss} × 2 variants: 160 preview tasks over every aspect ratio.
fn big_job(dir: &Path) {
    let ratios = ["1:1", "16:9", "21:9", "3:4", "9:16", "4:3", "9:21"];
    let mut job = String::from("id,prompt,aspect_ratio,variants\n");
    for i in 0..40 {
        job.push_str(&format!(
            "r{i},A {{matte|gloss}} vase number {i},{},2\n",
            ratios[i % ratios.len()]
        ));
    }
    write(dir, "big.csv", &job);
}

/// fal's price per megapixel of both models set to `flash` in `tiny.toml`.
fn fal_table(dir: &Path, photon: &str, flash: &str) {
    write(
        dir,
        "tiny.toml",
        &format!("[fal.prices]\n\"photon-1\" = \"{photon}\"\n\"photon-flash-1\" = \"{flash}\"\n"),
    );
}

/// `darkroom run big.csv --config tiny.toml --sim --provider fal --budget BUDGET --no-cache --json`
/// with `extra` flags.
fn run_on_fal(dir: &Path, budget: &str, extra: &[&str]) -> Output {
    darkroom(dir)
        .args([
            "run",
            "big.csv",
            "--config",
            "tiny.toml",
            "--sim",
            "--provider",
            "fal",
        ])
        .args(["--budget", budget, "--no-cache", "--json"])
        .args(extra)
        .output()
        .unwrap()
}

/// What the simulated fal account billed, net, micro-dollars, and its number of charges.
fn fal_bill(dir: &Path) -> (i64, usize) {
    bill(dir, "fal-account.json")
}

/// What the simulated account kept in `file` (`account.json`: Luma's) billed, net, and its charges.
fn bill(dir: &Path, file: &str) -> (i64, usize) {
    let Ok(account) = std::fs::read_to_string(dir.join(".darkroom/sim").join(file)) else {
        return (0, 0); // the simulated account was never opened: nothing billed
    };
    let account: serde_json::Value = serde_json::from_str(&account).unwrap();
    let lines = account["billing"].as_array().unwrap();
    let signed = |l: &serde_json::Value| {
        let micros = l["micros"].as_i64().unwrap();
        if l["kind"] == "charge" {
            micros
        } else {
            -micros
        }
    };
    let charges = lines.iter().filter(|l| l["kind"] == "charge").count();
    (lines.iter().map(signed).sum(), charges)
}

/// The run's spend as its `--json` summary (the last line) says, micro-dollars.
fn spent(output: &Output) -> i64 {
    let summary: serde_json::Value =
        serde_json::from_str(text(&output.stdout).lines().last().unwrap()).unwrap();
    Money::parse_usd(summary["spent"].as_str().unwrap())
        .unwrap()
        .micros()
}

/// The largest flash image at fal's real $0.005 per megapixel: 21:9, 2.490368 MP.
const LARGEST_FLASH: i64 = 12_452;

#[test]
fn a_fal_table_ten_thousand_times_too_low_stops_the_run_at_its_budget_and_the_ledger_is_the_bill() {
    let dir = tempfile::tempdir().unwrap();
    big_job(dir.path());
    fal_table(dir.path(), "0.000001", "0.000001");
    let output = run_on_fal(dir.path(), "0.10", &["--max-in-flight", "4"]);
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 3, "the budget stops the run: {stderr}");
    let (bill, charges) = fal_bill(dir.path());
    assert_eq!(
        spent(&output),
        bill,
        "the ledger is fal's bill to the micro-dollar"
    );
    // The overshoot bound (README): the images already under way when the price was learned, at
    // most --max-in-flight of them.
    assert!(
        bill <= 100_000 + 4 * LARGEST_FLASH,
        "the account paid {bill} µ$ of a $0.10 budget over {charges} images: {stderr}"
    );
    assert!(charges < 20, "caught within a few images, not {charges}");
    assert!(
        stderr.contains("the account is charging $0.005 per megapixel of photon-flash-1"),
        "{stderr}"
    );
    assert!(
        stderr.contains(r#"Set `[fal.prices] "photon-flash-1" = "0.005"`"#),
        "the advice names fal's own table, per megapixel: {stderr}"
    );
    assert!(!stderr.contains(r#"`[prices] "#), "{stderr}");
    let stopping = text(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "stopping")
        .unwrap_or_else(|| panic!("a stopping event: {}", text(&output.stdout)));
    assert!(
        stopping["reason"]
            .as_str()
            .unwrap()
            .contains("the account charges more than the price table"),
        "{stopping}"
    );
}

#[test]
fn the_same_table_at_fals_default_concurrency_never_ends_with_exit_0_over_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    big_job(dir.path());
    fal_table(dir.path(), "0.000001", "0.000001");
    let output = run_on_fal(dir.path(), "0.10", &[]);
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 3, "{stderr}");
    let (bill, charges) = fal_bill(dir.path());
    assert_eq!(spent(&output), bill, "the ledger is fal's bill");
    // --max-in-flight is 40 by default: the bound is 40 images past the budget, and in practice
    // the first reading comes long before that.
    assert!(
        bill <= 100_000 + 40 * LARGEST_FLASH,
        "{bill} over {charges} images"
    );
    assert!(charges < 40, "caught within a few images, not {charges}");
}

#[test]
fn a_luma_table_thousands_of_times_too_low_is_caught_within_a_few_images_and_stops_at_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    big_job(dir.path());
    // Luma bills Flash $0.004 an image; the table says $0.000001, 4,000 times too low.
    write(
        dir.path(),
        "tiny.toml",
        "[prices]\n\"photon-1\" = \"0.000002\"\n\"photon-flash-1\" = \"0.000001\"\n",
    );
    let output = darkroom(dir.path())
        .args([
            "run",
            "big.csv",
            "--config",
            "tiny.toml",
            "--sim",
            "--budget",
            "0.10",
        ])
        .args(["--no-cache", "--json", "--max-in-flight", "4"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 3, "{stderr}");
    let (bill, charges) = bill(dir.path(), "account.json");
    assert_eq!(spent(&output), bill, "the ledger is Luma's bill");
    assert!(
        bill <= 100_000 + 4 * 4_000,
        "{bill} over {charges} images: {stderr}"
    );
    assert!(
        stderr.contains(r#"Set `[prices] "photon-flash-1" = "0.004"`"#),
        "Luma's own table, per image: {stderr}"
    );
}

#[test]
fn after_a_per_megapixel_correction_each_image_is_charged_at_its_own_size_and_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    big_job(dir.path());
    // Flash ten times too low: each image's charge is raised to its own size's price.
    fal_table(dir.path(), "0.000001", "0.0005");
    let output = run_on_fal(dir.path(), "0.10", &["--max-in-flight", "4"]);
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 3, "{stderr}");
    let (bill, charges) = fal_bill(dir.path());
    assert_eq!(
        spent(&output),
        bill,
        "the ledger is fal's bill to the micro-dollar"
    );
    assert!(bill <= 100_000 + 4 * LARGEST_FLASH, "{bill}");

    let report = darkroom(dir.path()).args(["report", "big"]).output().unwrap();
    let report = text(&report.stdout);
    assert!(
        report.contains("photon-flash-1: table $0.0005 per megapixel, observed $0.005 per megapixel"),
        "the observed price is a rate per megapixel: {report}"
    );
    let status = darkroom(dir.path()).args(["status", "big"]).output().unwrap();
    assert!(
        text(&status.stdout)
            .contains("photon-flash-1: the account charged $0.005 per megapixel, the table says $0.0005"),
        "{}",
        text(&status.stdout)
    );
    let line = report
        .lines()
        .find(|l| l.contains("fal") && l.contains("charged"))
        .unwrap_or_else(|| panic!("a spend line for fal: {report}"));
    assert!(
        line.contains(&format!("{charges} charged")),
        "a corrected charge is not another image: {line} (fal billed {charges})"
    );
}

#[test]
fn prices_shows_and_checks_each_providers_own_table() {
    let dir = tempfile::tempdir().unwrap();
    fal_table(dir.path(), "0.000001", "0.000001");
    let fal = darkroom(dir.path())
        .args(["prices", "--provider", "fal", "--config", "tiny.toml"])
        .output()
        .unwrap();
    let listing = text(&fal.stdout);
    assert_eq!(code(&fal), 0, "{}", text(&fal.stderr));
    let flash = listing.lines().find(|l| l.starts_with("photon-flash-1")).unwrap();
    assert!(
        flash.contains("$0.000001 per megapixel") && flash.contains("config file tiny.toml"),
        "{listing}"
    );
    let builtin = darkroom(dir.path())
        .args(["prices", "--provider", "fal"])
        .output()
        .unwrap();
    let listing = text(&builtin.stdout);
    let photon = listing.lines().find(|l| l.starts_with("photon-1")).unwrap();
    assert!(
        photon.contains("$0.019 per megapixel") && photon.contains("built-in default"),
        "{listing}"
    );
    let replicate = darkroom(dir.path())
        .args(["prices", "--provider", "replicate"])
        .output()
        .unwrap();
    let listing = text(&replicate.stdout);
    let photon = listing.lines().find(|l| l.starts_with("photon-1")).unwrap();
    let flash = listing.lines().find(|l| l.starts_with("photon-flash-1")).unwrap();
    assert!(photon.contains("$0.03 per image"), "{listing}");
    assert!(flash.contains("$0.01 per image"), "{listing}");

    // A probe on fal is compared with fal's table: the 1:1 flash image costs $0.011797 there.
    let check = darkroom(dir.path())
        .args([
            "prices",
            "--check",
            "--provider",
            "fal",
            "--sim",
            "--budget",
            "0.10",
        ])
        .args(["--model", "photon-flash-1"])
        .output()
        .unwrap();
    let listing = text(&check.stdout);
    assert_eq!(code(&check), 0, "{}", text(&check.stderr));
    assert!(listing.contains("consistent with the table"), "{listing}");
    let probed = darkroom(dir.path())
        .args([
            "prices",
            "--check",
            "--provider",
            "fal",
            "--sim",
            "--budget",
            "0.10",
        ])
        .args(["--model", "photon-flash-1", "--config", "tiny.toml"])
        .output()
        .unwrap();
    let listing = text(&probed.stdout);
    assert_eq!(code(&probed), 0, "{}", text(&probed.stderr));
    assert!(
        listing.contains("the account charged $0.011797 for one image"),
        "{listing}"
    );
    assert!(
        listing.contains(r#"[fal.prices] "photon-flash-1" = "0.005""#),
        "the hint is fal's rate per megapixel: {listing}"
    );
}

#[test]
fn a_price_of_zero_in_any_providers_table_is_refused_at_config_load_naming_the_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "example.csv", "id,prompt\nmug,A mug on a table\n");
    for (section, key, per) in [
        ("fal.prices", "photon-1", "per megapixel"),
        ("prices", "photon-flash-1", "per image"),
        ("replicate.prices", "photon-flash-1", "per image"),
    ] {
        write(
            dir.path(),
            "zero.toml",
            &format!("[{section}]\n\"{key}\" = \"0\"\n"),
        );
        let output = darkroom(dir.path())
            .args([
                "run",
                "example.csv",
                "--config",
                "zero.toml",
                "--sim",
                "--provider",
                "fal",
            ])
            .args(["--budget", "0.02"])
            .output()
            .unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(code(&output), 2, "{stderr}");
        assert!(
            stderr.contains(&format!("zero.toml: [{section}] \"{key}\" is $0.00")) && stderr.contains(per),
            "{stderr}"
        );
        assert!(!dir.path().join("darkroom.db").exists(), "nothing was started");
    }
    let output = darkroom(dir.path())
        .args(["estimate", "example.csv"])
        .env("DARKROOM_PRICE_PHOTON_1", "0")
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 2, "{stderr}");
    assert!(
        stderr.contains("config from the environment: [prices] \"photon-1\" is $0.00"),
        "{stderr}"
    );
}

#[test]
fn an_unquoted_toml_price_is_read_as_written_and_a_value_of_another_kind_says_to_write_text() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "float.toml",
        "[prices]\n\"photon-1\" = 0.019\n\"photon-flash-1\" = 1\n",
    );
    let output = darkroom(dir.path())
        .args(["prices", "--config", "float.toml", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let prices: serde_json::Value = serde_json::from_str(text(&output.stdout).trim()).unwrap();
    assert_eq!(prices["prices"][0]["table"], "0.019", "exactly $0.019: {prices}");
    assert_eq!(prices["prices"][1]["table"], "1.00", "whole dollars: {prices}");

    write(dir.path(), "bool.toml", "[prices]\n\"photon-1\" = true\n");
    let output = darkroom(dir.path())
        .args(["prices", "--config", "bool.toml"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 2, "{stderr}");
    assert!(
        stderr.contains(r#"expected an amount in USD written as text, e.g. "0.015""#)
            && stderr.contains("photon-1"),
        "{stderr}"
    );
    assert!(!stderr.contains("untagged"), "{stderr}");

    write(
        dir.path(),
        "fine.toml",
        "[fal.prices]\n\"photon-1\" = 0.0190001\n",
    );
    let output = darkroom(dir.path())
        .args(["prices", "--config", "fine.toml"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 2, "{stderr}");
    assert!(stderr.contains("more precision than a micro-dollar"), "{stderr}");
}

#[test]
fn a_price_above_the_budget_is_darkrooms_refusal_naming_the_budget_and_the_price_per_image() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "example.csv",
        "id,prompt,aspect_ratio\nmug,A mug on a table,1:1\n",
    );
    fal_table(dir.path(), "1000", "1000");
    let output = darkroom(dir.path())
        .args([
            "run",
            "example.csv",
            "--config",
            "tiny.toml",
            "--sim",
            "--provider",
            "fal",
        ])
        .args(["--budget", "10"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 3, "{stderr}");
    assert!(!stderr.contains("upstream refused"), "{stderr}");
    // 1536 × 1536 = 2.359296 MP at $1000 per megapixel.
    assert!(
        stderr.contains("the budget of $10.00") && stderr.contains("$2359.296 an image"),
        "{stderr}"
    );
    assert_eq!(fal_bill(dir.path()), (0, 0), "nothing was spent");
}

#[test]
fn a_replicate_table_far_below_the_published_prices_is_warned_about_as_the_run_starts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("low.toml"),
        "[replicate.prices]\n\"photon-flash-1\" = \"0.0001\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("job.csv"),
        "id,prompt,aspect_ratio\noak,An oak stool,1:1\n",
    )
    .unwrap();
    let output = darkroom(dir.path())
        .args([
            "run",
            "job.csv",
            "--sim",
            "--provider",
            "replicate",
            "--config",
            "low.toml",
        ])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(
            "warning: [replicate.prices] \"photon-flash-1\" is $0.0001 per image, under half of Replicate's published $0.01"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("Replicate has no balance API, so nothing corrects it"),
        "{stderr}"
    );
    // The published table itself draws no such warning.
    let output = darkroom(dir.path())
        .args([
            "run",
            "job.csv",
            "--sim",
            "--provider",
            "replicate",
            "--job",
            "again",
        ])
        .output()
        .unwrap();
    assert!(
        !text(&output.stderr).contains("published"),
        "{}",
        text(&output.stderr)
    );
}
