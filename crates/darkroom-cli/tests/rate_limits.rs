//! 429s as users meet them: the real binary against a `darkroom sim` process. An account over its
//! monthly limit ends the run with exit 5 and the upstream's words; 429s that never clear end it
//! after `[limits] give_up_after`, and `--json` shows the pause while it lasts.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use support::{against, code, text, write, SimProcess};

fn job(dir: &std::path::Path) {
    write(
        dir,
        "chairs.csv",
        "id,prompt,aspect_ratio\n\
         oak,An oak dining chair in a bright room,1:1\n\
         teak,A teak lounge chair on a terrace,1:1\n",
    );
}

#[test]
fn an_account_over_its_monthly_limit_exits_5_at_once_with_the_upstreams_words() {
    let dir = tempfile::tempdir().unwrap();
    job(dir.path());
    let sim = SimProcess::start(dir.path(), &["--monthly-limit-exceeded"]);
    let output = against(dir.path(), &sim)
        .args(["run", "chairs.csv"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 5, "stderr: {stderr}");
    assert!(stderr.contains("the upstream refused the run"), "{stderr}");
    assert!(stderr.contains("HTTP 429"), "{stderr}");
    assert!(stderr.contains("Monthly usage limit exceeded"), "{stderr}");
    assert_eq!(sim.net_billing(), 0);

    // Nothing was lost: the tasks wait, and `status` shows them pending for a later run.
    let status = against(dir.path(), &sim)
        .args(["status", "chairs", "--json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let text = status.to_string();
    assert!(text.contains("\"pending\":2"), "{text}");
    assert!(text.contains("\"failed\":0"), "{text}");
}

#[test]
fn rate_limiting_that_never_lets_up_exits_5_after_give_up_after_and_json_shows_the_pause() {
    let dir = tempfile::tempdir().unwrap();
    job(dir.path());
    write(dir.path(), "darkroom.toml", "[limits]\ngive_up_after = \"3s\"\n");
    let sim = SimProcess::start(dir.path(), &["--rate-limited-forever", "1s"]);
    let output = against(dir.path(), &sim)
        .args(["--config", "darkroom.toml", "run", "chairs.csv", "--json"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 5, "stderr: {stderr}");
    assert!(stderr.contains("429 to every create for 3"), "{stderr}");
    assert!(stderr.contains("with Retry-After 1s"), "{stderr}");
    assert!(stderr.contains("give_up_after = 3s"), "{stderr}");
    let pauses: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["event"] == "rate_limited")
        .collect();
    assert!(!pauses.is_empty(), "stdout: {}", text(&output.stdout));
    let first = &pauses[0];
    assert_eq!(first["retry_after_ms"], 1000, "{first}");
    assert!(first["paused_until"].as_str().unwrap().ends_with('Z'), "{first}");
    assert_eq!(first["answers"], 1, "{first}");
    assert_eq!(first["give_up_after_ms"], 3000, "{first}");
    assert_eq!(sim.net_billing(), 0);
}

#[test]
fn a_give_up_after_that_is_not_a_duration_is_bad_config_and_nothing_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    job(dir.path());
    write(dir.path(), "darkroom.toml", "[limits]\ngive_up_after = 600\n");
    let sim = SimProcess::start(dir.path(), &[]);
    let output = against(dir.path(), &sim)
        .args(["--config", "darkroom.toml", "run", "chairs.csv"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 2, "stderr: {stderr}");
    assert!(stderr.contains("darkroom.toml"), "{stderr}");
    assert!(stderr.contains("give_up_after"), "{stderr}");
    assert_eq!(sim.net_billing(), 0);
}
