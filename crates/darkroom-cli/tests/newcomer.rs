//! The newcomer's path, as README tells it, with `--sim` and no key: previews, the review page's
//! promotion and `promote --sim` against one simulated account (so each final is made from its
//! preview and the bill accumulates), commands that only read working without a key, and every
//! `next:` or "run `...`" hint darkroom prints run exactly as printed.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use support::{code, darkroom, first_url, http, text, Killed, SimProcess};

const FLASH: i64 = 4_000;
const PHOTON: i64 = 15_000;

/// `jobs/example.csv` of this repository, copied into `dir/jobs/`.
fn example_job(dir: &Path) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../jobs/example.csv");
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    std::fs::copy(example, dir.join("jobs/example.csv")).unwrap();
}

fn run(dir: &Path, args: &[&str]) -> Output {
    let output = darkroom(dir).args(args).output().unwrap();
    assert_eq!(code(&output), 0, "{args:?}: {}", text(&output.stderr));
    output
}

/// A `darkroom review` started with `args` (and `--port 0`), and the page's URL.
fn start_review(dir: &Path, args: &[&str]) -> (Killed, String) {
    let mut child = darkroom(dir)
        .args(args)
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = first_url(child.stdout.take().unwrap());
    (Killed(child), url.trim_end_matches('/').to_string())
}

fn token_of(page: &str) -> String {
    page.split("name=\"darkroom-token\" content=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string()
}

fn review_state(url: &str) -> serde_json::Value {
    let (status, body) = http(url, "GET", "/api/state", &[], "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The commands a run's stderr tells the user to run: `next: CMD   (why)`, and each `CMD` quoted
/// in backticks that starts with `darkroom ` (a `--budget USD` placeholder filled in with 1).
fn hints(stderr: &str) -> Vec<String> {
    let mut commands = Vec::new();
    for line in stderr.lines() {
        if let Some(next) = line.strip_prefix("next: ") {
            commands.push(next.split("   (").next().unwrap().trim().to_string());
        }
        for (i, quoted) in line.split('`').enumerate() {
            if i % 2 == 1 && quoted.starts_with("darkroom ") {
                commands.push(quoted.replace("--budget USD", "--budget 1"));
            }
        }
    }
    commands
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".jpg"))
        .collect();
    names.sort();
    names
}

#[test]
fn readmes_previews_to_finals_path_with_sim_only_makes_each_final_from_its_preview() {
    let dir = tempfile::tempdir().unwrap();
    example_job(dir.path());

    let previews = run(dir.path(), &["run", "jobs/example.csv", "--sim"]);
    let stderr = text(&previews.stderr);
    assert!(
        stderr.contains("next: darkroom review example --sim"),
        "the hint keeps --sim: {stderr}"
    );
    let preview_files = files_in(&dir.path().join("out/example/preview"));
    assert_eq!(preview_files.len(), 8, "{preview_files:?}");

    // The review page, with --sim and no key, promotes two previews.
    let (server, url) = start_review(dir.path(), &["review", "example", "--sim"]);
    let (status, page) = http(&url, "GET", "/", &[], "");
    assert_eq!(status, 200);
    let token = token_of(&page);
    let (status, body) = http(
        &url,
        "POST",
        "/api/promote",
        &[("Content-Type", "application/json"), ("X-Darkroom-Token", &token)],
        r#"{"ids":["mug-slate","chair-linen"]}"#,
    );
    assert_eq!(status, 202, "{body}");
    let started = Instant::now();
    let message = loop {
        let state = review_state(&url);
        if state["running"] == false {
            break state["message"].as_str().unwrap_or_default().to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the page's finals never finished"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(message.starts_with("finals: 2 done"), "{message}");
    assert!(!message.contains("prompt alone"), "{message}");
    drop(server);

    // `promote --all --sim` makes the rest from the same account.
    let finals = run(dir.path(), &["promote", "example", "--all", "--sim"]);
    let stderr = text(&finals.stderr);
    assert!(!stderr.contains("no longer resolves"), "{stderr}");
    assert!(stderr.contains("promoting: 6 final(s) to make"), "{stderr}");
    assert!(stderr.contains("2 already made"), "{stderr}");

    // Each final redoes its preview's picture: the simulator made it from the preview's URL.
    let final_files = files_in(&dir.path().join("out/example/final"));
    assert_eq!(final_files, preview_files);
    for name in &final_files {
        // Compared without the metadata inside each file (a final names its own pass and source).
        let picture = |pass: &str| {
            let bytes = std::fs::read(dir.path().join("out/example").join(pass).join(name)).unwrap();
            darkroom_engine::metadata::embed(&bytes, None).unwrap()
        };
        assert!(
            picture("preview") == picture("final"),
            "final {name} is not its preview's composition"
        );
    }

    // One account across the three commands: its bill is the ledger's spend.
    let account = SimProcess::start(dir.path(), &["--state", ".darkroom/sim"]);
    assert_eq!(account.net_billing(), 8 * FLASH + 8 * PHOTON);
    let status = run(dir.path(), &["status", "example", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let spent: Vec<String> = status["jobs"][0]["passes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["spent"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(spent, ["0.032", "0.12"], "{status:#}");
}

#[test]
fn commands_that_only_read_need_no_key_and_review_says_promotion_needs_one() {
    let dir = tempfile::tempdir().unwrap();
    example_job(dir.path());
    run(dir.path(), &["run", "jobs/example.csv", "--sim"]);

    for args in [
        &["validate", "jobs/example.csv"][..],
        &["estimate", "jobs/example.csv"],
        &["status"],
        &["status", "example"],
        &["report", "example"],
        &["verify", "example"],
    ] {
        run(dir.path(), args);
    }

    let mut child = darkroom(dir.path())
        .args(["review", "example", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = first_url(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let _server = Killed(child);
    let url = url.trim_end_matches('/');
    let (status, page) = http(url, "GET", "/", &[], "");
    assert_eq!(status, 200);
    let state = review_state(url);
    assert!(
        state["message"]
            .as_str()
            .unwrap()
            .contains("promotion needs a key"),
        "{state:#}"
    );
    let (status, body) = http(
        url,
        "POST",
        "/api/promote",
        &[
            ("Content-Type", "application/json"),
            ("X-Darkroom-Token", &token_of(&page)),
        ],
        r#"{"ids":["mug-slate"]}"#,
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("LUMAAI_API_KEY"), "{body}");
    drop(_server);
    let mut said = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut said).unwrap();
    assert!(said.contains("promotion needs a key"), "{said}");
    assert!(!dir.path().join("out/example/final").exists());
}

#[test]
fn every_hint_a_run_prints_runs_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    example_job(dir.path());
    // Off the defaults, so a hint that forgets a flag would act on another ledger or upstream.
    let situation = ["--sim", "--db", "ledgers/shop.db", "--out", "renders"];
    std::fs::create_dir_all(dir.path().join("ledgers")).unwrap();

    let mut printed = Vec::new();
    // A budget for three previews: the run stops and says how to finish.
    let stopped = darkroom(dir.path())
        .args(["run", "jobs/example.csv", "--job", "shop", "--budget", "0.012"])
        .args(situation)
        .output()
        .unwrap();
    assert_eq!(code(&stopped), 3, "{}", text(&stopped.stderr));
    printed.extend(hints(&text(&stopped.stderr)));
    let finished = run(
        dir.path(),
        &[
            &["run", "jobs/example.csv", "--job", "shop", "--budget", "1"][..],
            &situation[..],
        ]
        .concat(),
    );
    printed.extend(hints(&text(&finished.stderr)));
    assert!(
        printed.iter().any(|h| h.starts_with("darkroom run "))
            && printed.iter().any(|h| h.starts_with("darkroom review ")),
        "{printed:?}"
    );

    for hint in &printed {
        let words: Vec<&str> = hint.split_whitespace().collect();
        assert_eq!(words[0], "darkroom", "{hint}");
        for flag in situation.iter().filter(|f| f.starts_with("--")) {
            assert!(words.contains(flag), "`{hint}` keeps {flag}");
        }
        if words[1] == "review" {
            let (_server, url) = start_review(dir.path(), &words[1..]);
            let state = review_state(&url);
            assert_eq!(state["job"], "shop", "`{hint}`");
            let tiles: usize = state["groups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g["tiles"].as_array().unwrap().len())
                .sum();
            assert_eq!(tiles, 8, "`{hint}` shows the job's previews");
        } else {
            let output = darkroom(dir.path()).args(&words[1..]).output().unwrap();
            assert_eq!(code(&output), 0, "`{hint}`: {}", text(&output.stderr));
        }
    }
    assert_eq!(files_in(&dir.path().join("renders/shop/preview")).len(), 8);

    // An error's hint names the ledger the command was given, so it finds the jobs listed there.
    let unknown = darkroom(dir.path())
        .args(["promote", "shops", "--all"])
        .args(situation)
        .output()
        .unwrap();
    assert_eq!(code(&unknown), 2, "{}", text(&unknown.stderr));
    let hinted = hints(&text(&unknown.stderr));
    assert_eq!(
        hinted,
        ["darkroom status --db ledgers/shop.db"],
        "{}",
        text(&unknown.stderr)
    );
    let words: Vec<&str> = hinted[0].split_whitespace().collect();
    let listed = darkroom(dir.path()).args(&words[1..]).output().unwrap();
    assert_eq!(code(&listed), 0, "{}", text(&listed.stderr));
    assert!(text(&listed.stdout).contains("shop"), "{}", text(&listed.stdout));
}

#[test]
fn a_damaged_simulated_account_says_to_start_a_fresh_one_and_the_ledger_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    example_job(dir.path());
    run(dir.path(), &["run", "jobs/example.csv", "--sim"]);
    let account = dir.path().join(".darkroom/sim/account.json");
    std::fs::write(&account, "{ not json").unwrap();

    let again = darkroom(dir.path())
        .args(["run", "jobs/example.csv", "--sim"])
        .output()
        .unwrap();
    let said = text(&again.stderr);
    assert_eq!(code(&again), 7, "{said}");
    assert!(said.contains("delete"), "{said}");
    assert!(said.contains(".darkroom/sim"), "{said}");
    assert!(!said.contains("the ledger or the disk failed"), "{said}");

    std::fs::remove_dir_all(dir.path().join(".darkroom/sim")).unwrap();
    let status = run(dir.path(), &["status", "example", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["jobs"][0]["passes"][0]["counts"]["done"], 8, "{status}");
}

#[test]
fn status_of_a_ledger_with_no_job_yet_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.csv"), "id,prompt\nx,\"never closed\n").unwrap();
    let failed = darkroom(dir.path())
        .args(["run", "bad.csv", "--sim", "--db", "shop.db"])
        .output()
        .unwrap();
    assert_eq!(code(&failed), 2, "{}", text(&failed.stderr));
    // A refused first run makes no ledger, and status says there is none.
    let status = darkroom(dir.path())
        .args(["status", "--db", "shop.db"])
        .output()
        .unwrap();
    assert_eq!(code(&status), 2, "{}", text(&status.stderr));
    assert!(
        text(&status.stderr).contains("no ledger at shop.db"),
        "{}",
        text(&status.stderr)
    );
    // A ledger made before any job (a spending limit set first) has no job yet.
    let budget = darkroom(dir.path())
        .args(["budget", "--db", "shop.db", "--label", "team", "--monthly", "10"])
        .output()
        .unwrap();
    assert_eq!(code(&budget), 0, "{}", text(&budget.stderr));
    let status = darkroom(dir.path())
        .args(["status", "--db", "shop.db"])
        .output()
        .unwrap();
    assert_eq!(code(&status), 0, "{}", text(&status.stderr));
    let said = text(&status.stderr);
    assert!(said.contains("no jobs in shop.db yet"), "{said}");
    assert!(said.contains("darkroom run FILE --db shop.db"), "{said}");
    let json = darkroom(dir.path())
        .args(["status", "--db", "shop.db", "--json"])
        .output()
        .unwrap();
    assert_eq!(text(&json.stdout).trim(), r#"{"jobs":[]}"#);
}
