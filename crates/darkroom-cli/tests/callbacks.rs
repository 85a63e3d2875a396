//! `darkroom run --callbacks-listen` with the real binary and a `darkroom sim` process: the
//! simulator's deliveries reach the receiver and the run finishes with every image.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use support::{against, code, http, text, write, SimProcess};

#[test]
fn a_run_with_callbacks_receives_them_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(dir.path(), &["--time-scale", "0.2"]);
    let mut rows = String::from("id,prompt\n");
    for i in 0..12 {
        rows.push_str(&format!("lamp-{i},A brass desk lamp number {i} on an oak desk\n"));
    }
    write(dir.path(), "lamps.csv", &rows);
    let run = against(dir.path(), &sim)
        .args(["run", "lamps.csv", "--callbacks-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = text(&run.stderr);
    assert_eq!(code(&run), 0, "{stderr}");
    assert!(stderr.contains("callbacks: listening on 127.0.0.1:"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("out/lamps/preview"))
            .unwrap()
            .count(),
        12
    );
    // The simulator delivered to the receiver (two deliveries per generation), none refused.
    let (_, stats) = http(&sim.base_url, "GET", "/sim/stats", &[], "");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["requests"]["callback delivered"], 24, "{stats}");
    assert!(stats["requests"]["callback failed"].is_null(), "{stats}");
    assert_eq!(sim.net_billing(), 12 * 4_000);

    // --callbacks-url without --callbacks-listen is a usage error, and nothing is sent.
    let bad = against(dir.path(), &sim)
        .args([
            "run",
            "lamps.csv",
            "--callbacks-url",
            "https://hooks.example.com/darkroom",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&bad), 2, "{}", text(&bad.stderr));
}

#[test]
fn finals_promoted_from_the_review_page_use_callbacks_too() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(dir.path(), &["--time-scale", "0.2"]);
    assert_eq!(code(&support::previews(dir.path(), &sim)), 0);
    let mut child = against(dir.path(), &sim)
        .args([
            "review",
            "vases",
            "--port",
            "0",
            "--callbacks-listen",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = support::first_url(child.stdout.take().unwrap());
    let _server = support::Killed(child);
    let url = url.trim_end_matches('/');
    let (_, page) = http(url, "GET", "/", &[], "");
    let token = page.split("name=\"darkroom-token\" content=\"").nth(1).unwrap()[..32].to_string();
    let (status, answer) = http(
        url,
        "POST",
        "/api/promote",
        &[("Content-Type", "application/json"), ("X-Darkroom-Token", &token)],
        r#"{"ids":["jar","bowl"]}"#,
    );
    assert_eq!(status, 202, "{answer}");
    let finished = (0..600).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let (_, state) = http(url, "GET", "/api/state", &[], "");
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        state["running"] == false
            && state["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("finals: 2 done"))
    });
    assert!(finished, "the two finals were made");
    let (_, stats) = http(&sim.base_url, "GET", "/sim/stats", &[], "");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    // Previews were made without callbacks; the two finals with them (dreaming, then completed).
    assert_eq!(stats["requests"]["callback delivered"], 4, "{stats}");
}
