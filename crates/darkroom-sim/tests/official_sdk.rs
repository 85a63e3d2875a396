//! Conformance with clients we did not write: the official `lumaai` and `replicate` Python SDKs
//! (pinned, from PyPI) drive the simulator over HTTP on a loopback port. The virtual environment is
//! made once under the target directory and kept.
//!
//! fal's official `fal-client` is not run: its hosts can be renamed (`FAL_RUN_HOST`,
//! `FAL_QUEUE_RUN_HOST`) but its URLs are always `https://` (fal-client 1.0.3, `client.py`:
//! `QUEUE_URL_FORMAT = f"https://{FAL_QUEUE_RUN_HOST}/"`), and the simulator serves plain HTTP on
//! loopback; making it talk to the simulator would mean replacing its transport, which would test
//! our replacement rather than the client.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::path::{Path, PathBuf};
use std::process::Command;

const SDK: &str = "lumaai==1.21.0";
const REPLICATE_SDK: &str = "replicate==1.0.7";

fn venv() -> PathBuf {
    venv_with(SDK)
}

/// The kept virtual environment with `package` installed (each pinned package once; the tests of
/// this file make and fill it one at a time).
fn venv_with(package: &str) -> PathBuf {
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/sdk-venv");
    let python = target.join("bin/python");
    let marker = target.join(format!(".installed-{package}"));
    if !marker.exists() {
        if !python.exists() {
            let status = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&target)
                .status()
                .unwrap();
            assert!(status.success(), "python3 -m venv failed");
        }
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", package])
            .status()
            .unwrap();
        assert!(status.success(), "pip install {package} failed");
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

#[test]
fn the_official_replicate_client_creates_polls_downloads_lists_cancels_and_validates_a_webhook() {
    let python = venv_with(REPLICATE_SDK);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = darkroom_sim::SimConfig {
        api_key: Some("sdk-test-key".into()),
        // Slow enough that a prediction is still running when the script cancels it.
        time_scale: 0.3,
        ..darkroom_sim::SimConfig::unlimited()
    };
    let sim = runtime.block_on(darkroom_sim::spawn(config)).unwrap();
    let root = format!("http://{}/replicate", sim.addr());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/replicate_conformance.py");
    let output = Command::new(python)
        .arg(script)
        .arg(&root)
        .env_remove("REPLICATE_API_TOKEN")
        .env_remove("REPLICATE_BASE_URL")
        .output()
        .unwrap();
    runtime.block_on(sim.shutdown());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("passed, 0 failed"), "{stdout}");
}
