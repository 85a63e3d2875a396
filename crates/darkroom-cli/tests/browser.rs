//! The review page and the HTML report in a real browser: Debian's Chromium, driven headless by
//! `playwright-core` (tests/browser/review.mjs). A preview job runs against a `darkroom sim`
//! process, its previews are reframed and trialled; the browser judges a group on the trial's
//! pairs page (and `estimate --pass final` changes), sees the reframes under their sources,
//! selects two previews, exports, promotes, and waits for both finals; filters by a QC flag, walks
//! the large view with the arrow keys, selects all of a group; then it opens the report from
//! `file://` and checks its chart and images. A second test opens the page of a 50,000-image job
//! seeded through the ledger crate (tests/browser/scale.mjs) and records what it loads.
//!
//! Needs `node` and `/usr/bin/chromium` (or `DARKROOM_CHROMIUM`); `scripts/test` installs them.
//! The test installs the pinned `playwright-core` itself (`npm ci`) when it is missing.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::{against, code, darkroom, first_url, text, write, Killed, SimProcess};

/// The vases preview job of the CLI tests and a card the simulator draws blank (a QC flag).
const VASES: &str = "id,prompt,aspect_ratio,variants,group\n\
     tall,A tall ceramic vase with dried pampas grass,3:4,2,ceramics\n\
     bowl,A shallow stoneware bowl of lemons on linen,1:1,1,ceramics\n\
     jar,A glass storage jar of coffee beans on a shelf,4:3,1,glass\n\
     card,[sim:blank] A plain glass place card,1:1,1,glass\n";

fn chromium() -> String {
    let chromium = std::env::var("DARKROOM_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "the browser test needs Chromium at {chromium}: run scripts/test, or `apt-get install chromium`"
    );
    chromium
}

/// `darkroom review JOB --port 0` against the simulator (or with no key when `sim` is `None`),
/// and the URL it prints.
fn review(dir: &Path, sim: Option<&SimProcess>, job: &str) -> (Killed, String) {
    let mut command = match sim {
        Some(sim) => against(dir, sim),
        None => darkroom(dir),
    };
    let mut server = command
        .args(["review", job, "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = first_url(server.stdout.take().unwrap());
    (Killed(server), url)
}

fn ok(output: &std::process::Output, what: &str) -> String {
    assert_eq!(code(output), 0, "{what}: {}", text(&output.stderr));
    text(&output.stdout)
}

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Installs the pinned playwright-core from package-lock.json once.
fn ensure_playwright() {
    let dir = scripts_dir();
    if dir.join("node_modules/playwright-core/package.json").is_file() {
        return;
    }
    let npm = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .output()
        .expect("npm is needed for the browser test (scripts/test installs Node.js' npm)");
    assert!(npm.status.success(), "npm ci failed: {}", text(&npm.stderr));
}

#[test]
fn a_user_judges_a_trial_sees_reframes_promotes_two_previews_and_walks_the_large_view() {
    let chromium = chromium();
    ensure_playwright();

    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(dir.path(), &[]);
    write(dir.path(), "vases.csv", VASES);
    let run = against(dir.path(), &sim)
        .args(["run", "vases.csv"])
        .output()
        .unwrap();
    ok(&run, "previews");
    let reframe = against(dir.path(), &sim)
        .args(["reframe", "vases", "--to", "16:9", "--budget", "1"])
        .output()
        .unwrap();
    ok(&reframe, "reframe");
    let trial = against(dir.path(), &sim)
        .args(["trial", "vases.csv", "--sample", "4", "--budget", "1"])
        .output()
        .unwrap();
    ok(&trial, "trial");
    let estimate = |what: &str| {
        let output = darkroom(dir.path())
            .args(["estimate", "vases.csv", "--pass", "final", "--job", "vases"])
            .output()
            .unwrap();
        ok(&output, what)
    };
    let before = estimate("estimate before the choice");
    let billed = sim.net_billing();

    let (trial_server, trial_url) = review(dir.path(), Some(&sim), "vases-trial");
    let (server, url) = review(dir.path(), Some(&sim), "vases");
    let shots = std::env::var_os("DARKROOM_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().to_path_buf());
    std::fs::create_dir_all(&shots).unwrap();
    let report_file = dir.path().join("out/vases/report.html");
    let browser = Command::new("node")
        .arg(scripts_dir().join("review.mjs"))
        .arg(&url)
        .arg(&report_file)
        .arg(&shots)
        .arg(&trial_url)
        .env("DARKROOM_CHROMIUM", &chromium)
        .current_dir(scripts_dir())
        .output()
        .expect("node is needed for the browser test");
    drop(server);
    drop(trial_server);
    assert!(
        browser.status.success(),
        "the browser run failed:\n{}\n{}",
        text(&browser.stdout),
        text(&browser.stderr)
    );
    let seen: serde_json::Value =
        serde_json::from_str(text(&browser.stdout).lines().last().unwrap()).unwrap();

    // The trial's pairs, and the choice made on them: the final estimate moves glass to Flash.
    assert_eq!(seen["trialPairs"], 4, "one pair per row: {seen}");
    let after = estimate("estimate after the choice");
    assert_ne!(
        before, after,
        "a choice on the pairs page changes the final estimate"
    );
    assert!(after.contains("chosen after the trial"), "{after}");

    assert_eq!(seen["previews"], 5, "{seen}");
    assert_eq!(
        seen["reframes"], 5,
        "each preview's 16:9 reframe under it: {seen}"
    );
    assert_eq!(seen["reframeShapes"], 5, "{seen}");
    assert_eq!(seen["count"], "2 selected", "{seen}");
    assert_eq!(seen["checked"], 2, "one chosen by click, one by keyboard: {seen}");
    assert!(
        seen["cost"]
            .as_str()
            .unwrap()
            .starts_with("promoting costs $0.03"),
        "{seen}"
    );
    assert!(seen["confirm"].as_str().unwrap().contains("for $0.03"), "{seen}");
    assert!(
        seen["exported"].as_str().unwrap().contains("exported 2"),
        "{seen}"
    );
    assert_eq!(seen["finals"], 2, "{seen}");
    assert_eq!(seen["pairs"], 2, "each final appears beside its preview: {seen}");
    let export = std::fs::read_to_string(dir.path().join("out/vases/select.csv")).unwrap();
    assert_eq!(export.lines().count(), 3, "{export}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("out/vases/final"))
            .unwrap()
            .count(),
        2
    );
    assert_eq!(sim.net_billing(), billed + 2 * 15_000);

    // The QC filter, the large view, select-all in a group.
    assert_eq!(seen["blank"], serde_json::json!(["card"]), "{seen}");
    assert_eq!(
        seen["viewed"],
        serde_json::json!(["tall-1", "tall-2", "bowl", "tall-2", "bowl", "jar"]),
        "{seen}"
    );
    assert!(
        seen["largeWidth"].as_u64().unwrap() > 256,
        "the image itself, not a thumbnail: {seen}"
    );
    assert!(
        seen["jarFacts"]
            .as_str()
            .unwrap()
            .contains("promotes withphoton-flash-1"),
        "the glass group's routing choice: {seen}"
    );
    assert_eq!(seen["viewerClosed"], true, "{seen}");
    assert_eq!(seen["afterSelectAll"], "4 selected", "{seen}");

    // The report the final pass refreshed: its chart, previews and finals side by side, the
    // reframes, offline.
    assert_eq!(seen["chart"], 1, "{seen}");
    assert_eq!(seen["reportImages"], 5 + 2 + 5, "{seen}");
    assert_eq!(seen["reportBroken"], 0, "{seen}");
    assert!(shots.join("review.png").is_file());
    assert!(shots.join("report.png").is_file());
}

#[test]
fn the_review_page_of_50000_images_renders_a_first_page_and_polls_in_small_answers() {
    let chromium = chromium();
    ensure_playwright();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (ledger, _) = darkroom_testkit::ledger::many_previews(dir.path(), "big", 50_000, 50_000).await;
        ledger.close().await;
    });
    let (server, url) = review(dir.path(), None, "big");
    let browser = Command::new("node")
        .arg(scripts_dir().join("scale.mjs"))
        .arg(&url)
        .env("DARKROOM_CHROMIUM", &chromium)
        .current_dir(scripts_dir())
        .output()
        .expect("node is needed for the browser test");
    drop(server);
    assert!(
        browser.status.success(),
        "the browser run failed:\n{}\n{}",
        text(&browser.stdout),
        text(&browser.stderr)
    );
    let seen: serde_json::Value =
        serde_json::from_str(text(&browser.stdout).lines().last().unwrap()).unwrap();
    println!("review page at 50,000 images in Chromium: {seen}");
    assert_eq!(seen["pairs"], 200, "the first page, not the sheet: {seen}");
    assert_eq!(seen["shown"], "200 of 50000 shown", "{seen}");
    assert_eq!(
        seen["afterScroll"], 400,
        "the next page as the end comes into view: {seen}"
    );
    let first = seen["sheetBytes"][0].as_u64().unwrap();
    assert!(first < 400_000, "the first page's answer: {first} bytes");
    let polls: Vec<u64> = seen["pollBytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect();
    assert!(polls.len() >= 2, "{seen}");
    assert!(
        polls.iter().all(|&b| b < 2_000),
        "a poll with nothing changed: {polls:?} bytes"
    );
}
