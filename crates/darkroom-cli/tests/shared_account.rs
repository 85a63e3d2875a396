//! One account shared by concurrent runs, as a team meets it: two `darkroom run` processes of two
//! jobs on one ledger against one `darkroom sim` share the account's in-flight cap and create rate
//! through the ledger, and `darkroom budget` limits hold across both jobs. Checked against the
//! simulator's own counters and bill, never against timings.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::path::Path;
use std::process::{Child, Output, Stdio};

use support::{against, code, darkroom, get_json, text, write, SimProcess};

/// A job file `name.csv` of `rows` distinct flash previews.
fn job(dir: &Path, name: &str, rows: usize) {
    let mut csv = String::from("id,prompt,aspect_ratio\n");
    for i in 0..rows {
        csv.push_str(&format!(
            "{name}-{i},A {name} chair number {i} in a bright room,1:1\n"
        ));
    }
    write(dir, &format!("{name}.csv"), &csv);
}

/// Starts `darkroom run FILE ARGS...` on the shared ledger against `sim`.
fn start(dir: &Path, sim: &SimProcess, file: &str, args: &[&str]) -> Child {
    against(dir, sim)
        .args(["run", file, "--db", "team.db", "--budget", "5"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

/// The ledger's net charges over every job, read from its money log with plain SQL.
fn ledger_net(db: &Path) -> i64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use sqlx::Connection as _;
        let url = format!("sqlite://{}?mode=ro", db.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let net: Option<i64> =
            sqlx::query_scalar("SELECT SUM(CASE kind WHEN 'refund' THEN -micros ELSE micros END) FROM spend")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        conn.close().await.unwrap();
        net.unwrap_or(0)
    })
}

fn stats(sim: &SimProcess) -> serde_json::Value {
    get_json(&sim.base_url, "/sim/stats")
}

#[test]
fn two_concurrent_runs_on_one_account_keep_to_its_in_flight_cap_together() {
    let dir = tempfile::tempdir().unwrap();
    job(dir.path(), "oak", 8);
    job(dir.path(), "teak", 8);
    // Three generations at once on the account, each taking a second or more: two runs that each
    // allowed themselves three would put six at the simulator and draw 429s.
    let sim = SimProcess::start(
        dir.path(),
        &[
            "--max-concurrent",
            "3",
            "--rate-per-minute",
            "0",
            "--flash-latency",
            "1-1.5",
        ],
    );
    let limits = ["--max-in-flight", "3", "--rate-per-minute", "0"];
    let a = start(dir.path(), &sim, "oak.csv", &limits);
    let b = start(dir.path(), &sim, "teak.csv", &limits);
    let (a, b) = (finish(a), finish(b));
    assert_eq!(code(&a), 0, "oak: {}", text(&a.stderr));
    assert_eq!(code(&b), 0, "teak: {}", text(&b.stderr));

    let stats = stats(&sim);
    assert_eq!(stats["rate_limited"], 0, "{stats}");
    assert!(stats["peak_concurrent"].as_u64().unwrap() <= 3, "{stats}");
    assert_eq!(stats["creates_accepted"], 16, "{stats}");
    assert_eq!(ledger_net(&dir.path().join("team.db")), sim.net_billing());
}

/// The 429s the simulator answered (its own count: a run could miss one whose answer it lost).
fn rate_limited(sim: &SimProcess) -> u64 {
    stats(sim)["rate_limited"].as_u64().unwrap()
}

#[test]
fn two_concurrent_runs_share_the_accounts_create_rate_and_draw_no_more_429s_than_one_run_of_both() {
    // 10 creates in any 6 s window (the simulator's minute scaled by 0.1), which darkroom is told
    // as 100 a minute.
    let sim_args = [
        "--rate-per-minute",
        "10",
        "--rate-window",
        "sliding",
        "--time-scale",
        "0.1",
    ];
    let run_args = ["--rate-per-minute", "100"];

    // One run of both jobs' rows.
    let one = tempfile::tempdir().unwrap();
    job(one.path(), "both", 16);
    let sim = SimProcess::start(one.path(), &sim_args);
    let output = finish(start(one.path(), &sim, "both.csv", &run_args));
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let alone = rate_limited(&sim);
    drop(sim);

    // Two runs of half as many at once, on one ledger and one account.
    let dir = tempfile::tempdir().unwrap();
    job(dir.path(), "oak", 8);
    job(dir.path(), "teak", 8);
    let sim = SimProcess::start(dir.path(), &sim_args);
    let a = start(dir.path(), &sim, "oak.csv", &run_args);
    let b = start(dir.path(), &sim, "teak.csv", &run_args);
    let (a, b) = (finish(a), finish(b));
    assert_eq!(code(&a), 0, "oak: {}", text(&a.stderr));
    assert_eq!(code(&b), 0, "teak: {}", text(&b.stderr));
    let together = rate_limited(&sim);
    assert!(
        together <= alone,
        "two runs drew {together} 429s, one run of both {alone}"
    );
    assert_eq!(stats(&sim)["creates_accepted"], 16);
    assert_eq!(ledger_net(&dir.path().join("team.db")), sim.net_billing());
}

#[test]
fn two_concurrent_runs_under_one_monthly_limit_never_pass_it_together_and_say_which_limit_stopped_them() {
    let dir = tempfile::tempdir().unwrap();
    job(dir.path(), "oak", 10);
    job(dir.path(), "teak", 10);
    let sim = SimProcess::start(dir.path(), &[]);
    // Flash previews at $0.004: $0.05 covers 12 of the 20 images.
    let set = darkroom(dir.path())
        .args([
            "budget",
            "--db",
            "team.db",
            "--label",
            "acme",
            "--monthly",
            "0.05",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&set), 0, "{}", text(&set.stderr));

    let label = ["--label", "acme"];
    let a = start(dir.path(), &sim, "oak.csv", &label);
    let b = start(dir.path(), &sim, "teak.csv", &label);
    let (a, b) = (finish(a), finish(b));
    let billed = sim.net_billing();
    assert!(billed <= 50_000, "billed {billed}");
    assert_eq!(billed, 12 * 4_000);
    assert_eq!(ledger_net(&dir.path().join("team.db")), billed);
    // At least one run was stopped by the limit, exits as a budget stop does, and names it.
    let stopped: Vec<_> = [&a, &b].into_iter().filter(|o| code(o) == 3).collect();
    assert!(
        !stopped.is_empty(),
        "oak: {}\nteak: {}",
        text(&a.stderr),
        text(&b.stderr)
    );
    for output in stopped {
        let stderr = text(&output.stderr);
        assert!(stderr.contains("monthly limit of label \"acme\""), "{stderr}");
    }

    let shown = darkroom(dir.path())
        .args(["budget", "--db", "team.db", "--json"])
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let limit = &shown["limits"][0];
    assert_eq!(limit["name"], "acme", "{shown}");
    assert_eq!(limit["spent_micros"], 12 * 4_000, "{shown}");
    assert_eq!(limit["reserved_micros"], 0, "{shown}");
}

#[test]
fn bad_budget_input_is_refused_with_what_was_expected_and_nothing_is_set() {
    let dir = tempfile::tempdir().unwrap();
    for (args, expected) in [
        (
            vec!["--account", "team", "--monthly", "lots"],
            "--monthly \"lots\"",
        ),
        (vec!["--label", "acme", "--daily=-5"], "--daily \"-5\""),
        // Written with a space, as people type it: our message, not the argument parser's.
        (vec!["--label", "acme", "--daily", "-5"], "--daily \"-5\""),
        (
            vec!["--account", "team", "--monthly", "-0.01"],
            "--monthly \"-0.01\"",
        ),
        (vec!["--monthly", "50"], "give --account NAME or --label NAME"),
        (vec!["--label", " ", "--daily", "5"], "--label needs a name"),
    ] {
        let output = darkroom(dir.path())
            .args(["budget", "--db", "team.db"])
            .args(&args)
            .output()
            .unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(code(&output), 2, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let both = darkroom(dir.path())
        .args([
            "budget",
            "--db",
            "team.db",
            "--account",
            "a",
            "--label",
            "b",
            "--daily",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&both), 2, "{}", text(&both.stderr));
    // Nothing was set, and no ledger was made for a refused command.
    assert!(!dir.path().join("team.db").exists());
    let show = darkroom(dir.path())
        .args(["budget", "--db", "team.db"])
        .output()
        .unwrap();
    assert_eq!(code(&show), 2, "{}", text(&show.stderr));
    assert!(
        text(&show.stderr).contains("no ledger at"),
        "{}",
        text(&show.stderr)
    );
}

#[test]
fn a_daily_limit_above_the_monthly_one_and_an_account_no_run_has_used_are_set_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let set = |args: &[&str]| {
        let output = darkroom(dir.path())
            .args(["budget", "--db", "team.db"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(code(&output), 0, "{args:?}: {}", text(&output.stderr));
        text(&output.stderr)
    };
    let stderr = set(&["--label", "acme", "--monthly", "100", "--daily", "150"]);
    assert!(
        stderr.contains("the daily limit of label \"acme\" ($150.00) is above its monthly limit ($100.00)"),
        "{stderr}"
    );
    let stderr = set(&["--label", "acme", "--daily", "50"]);
    assert!(!stderr.contains("warning"), "{stderr}");
    let stderr = set(&["--account", "tema", "--monthly", "200"]);
    assert!(
        stderr.contains("no run on this ledger has used an account named \"tema\" yet"),
        "{stderr}"
    );
    // The limits were kept all the same.
    let show = darkroom(dir.path())
        .args(["budget", "--db", "team.db", "--json"])
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["limits"].as_array().unwrap().len(), 3, "{shown}");
}

#[test]
fn two_concurrent_runs_on_one_fal_account_keep_to_its_in_flight_cap_together() {
    let dir = tempfile::tempdir().unwrap();
    job(dir.path(), "oak", 8);
    job(dir.path(), "teak", 8);
    // fal queues what is over its concurrency limit instead of refusing it: only the ledger's
    // account keeps two runs to their shared cap of two requests at fal at once.
    let sim = SimProcess::start(dir.path(), &["--flash-latency", "1-1.5"]);
    let origin = sim.base_url.trim_end_matches("/dream-machine/v1").to_string();
    let start_fal = |file: &str| {
        darkroom(dir.path())
            .env("FAL_KEY", "fal-test-key-0001")
            .env("DARKROOM_FAL_QUEUE_URL", format!("{origin}/fal/queue"))
            .env("DARKROOM_FAL_API_URL", format!("{origin}/fal/api/v1"))
            .args([
                "run",
                file,
                "--db",
                "team.db",
                "--budget",
                "5",
                "--provider",
                "fal",
            ])
            .args(["--max-in-flight", "2", "--rate-per-minute", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (start_fal("oak.csv"), start_fal("teak.csv"));
    let (a, b) = (finish(a), finish(b));
    assert_eq!(code(&a), 0, "oak: {}", text(&a.stderr));
    assert_eq!(code(&b), 0, "teak: {}", text(&b.stderr));
    let stats = get_json(&sim.base_url, "/sim/fal/stats");
    assert_eq!(stats["creates_accepted"], 16, "{stats}");
    assert!(stats["peak_concurrent"].as_u64().unwrap() <= 2, "{stats}");
    let bill = get_json(&sim.base_url, "/sim/fal/billing")["net_micros"]
        .as_i64()
        .unwrap();
    assert_eq!(ledger_net(&dir.path().join("team.db")), bill);
}
