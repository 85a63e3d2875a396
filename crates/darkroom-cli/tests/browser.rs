//! The review page and the HTML report in a real browser: Debian's Chromium, driven headless by
//! `playwright-core` (tests/browser/review.mjs). A preview job runs against a `darkroom sim`
//! process; the browser selects two previews, exports, promotes, and waits for both finals; then
//! it opens the report from `file://` and checks its chart and images.
//!
//! Needs `node` and `/usr/bin/chromium` (or `DARKROOM_CHROMIUM`); `scripts/test` installs them.
//! The test installs the pinned `playwright-core` itself (`npm ci`) when it is missing.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::{against, code, first_url, previews, text, Killed, SimProcess};

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
fn a_user_selects_two_previews_promotes_them_and_sees_the_finals_and_the_report() {
    let chromium = std::env::var("DARKROOM_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "the browser test needs Chromium at {chromium}: run scripts/test, or `apt-get install chromium`"
    );
    ensure_playwright();

    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(dir.path(), &[]);
    let run = previews(dir.path(), &sim);
    assert_eq!(code(&run), 0, "{}", text(&run.stderr));
    let billed = sim.net_billing();

    let mut server = against(dir.path(), &sim)
        .args(["review", "vases", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = first_url(server.stdout.take().unwrap());
    let server = Killed(server);

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

    assert_eq!(seen["previews"], 4, "{seen}");
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

    // The report the final pass refreshed: its chart, and previews and finals side by side, offline.
    assert_eq!(seen["chart"], 1, "{seen}");
    assert_eq!(seen["reportImages"], 6, "{seen}");
    assert_eq!(seen["reportBroken"], 0, "{seen}");
    assert!(shots.join("review.png").is_file());
    assert!(shots.join("report.png").is_file());
}
