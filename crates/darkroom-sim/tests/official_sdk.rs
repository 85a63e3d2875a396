//! Conformance with a client we did not write: the official `lumaai` Python SDK (pinned, from PyPI)
//! drives the real `darkroom sim` binary. The virtual environment is made once under the target
//! directory and kept.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

fn darkroom_binary() -> PathBuf {
    // The CLI crate builds the binary; tests of this crate find it beside their own executable.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let binary = dir.join("darkroom");
    if !binary.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "darkroom-cli"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    binary
}

#[test]
fn the_official_python_sdk_parses_every_response_of_the_simulator() {
    let python = venv();
    let mut sim = Command::new(darkroom_binary())
        .args([
            "sim",
            "--port",
            "0",
            "--api-key",
            "sdk-test-key",
            "--rate-per-minute",
            "1000",
            "--max-concurrent",
            "3",
            "--time-scale",
            "0.05",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(sim.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/conformance.py");
    let output = Command::new(python).arg(script).arg(&url).output().unwrap();
    sim.kill().unwrap();
    let _ = sim.wait();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("passed, 0 failed"), "{stdout}");
}
