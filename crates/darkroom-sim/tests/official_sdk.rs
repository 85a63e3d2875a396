//! Conformance with a client we did not write: the official `lumaai` Python SDK (pinned, from PyPI)
//! drives the simulator over HTTP on a loopback port. The virtual environment is made once under the target
//! directory and kept.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::path::{Path, PathBuf};
use std::process::Command;

const SDK: &str = "lumaai==1.21.0";

fn venv() -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/sdk-venv");
    let python = target.join("bin/python");
    let marker = target.join(format!(".installed-{SDK}"));
    if !marker.exists() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&target)
            .status()
            .unwrap();
        assert!(status.success(), "python3 -m venv failed");
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", SDK])
            .status()
            .unwrap();
        assert!(status.success(), "pip install {SDK} failed");
        std::fs::write(&marker, "").unwrap();
    }
    python
}

#[test]
fn the_official_python_sdk_parses_every_response_of_the_simulator() {
    let python = venv();
    // The simulator runs on this runtime's worker threads while the SDK script runs.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = darkroom_sim::SimConfig {
        api_key: Some("sdk-test-key".into()),
        creates_per_minute: Some(1000),
        max_concurrent: Some(3),
        time_scale: 0.05,
        ..darkroom_sim::SimConfig::default()
    };
    let sim = runtime.block_on(darkroom_sim::spawn(config)).unwrap();
    let url = sim.base_url();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/conformance.py");
    let output = Command::new(python).arg(script).arg(&url).output().unwrap();
    runtime.block_on(sim.shutdown());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("passed, 0 failed"), "{stdout}");
}
