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
