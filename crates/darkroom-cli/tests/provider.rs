//! How the binary reaches the provider: the `[luma]` timeouts of the config file, taken by every
//! command that talks to the upstream, and refused before anything is sent when they make no sense.

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
fn a_luma_timeout_that_is_zero_or_not_a_duration_is_bad_config_and_nothing_is_sent() {
    for (key, bad) in [
        ("request_timeout", "\"0s\""),
        ("download_timeout", "120"),
        ("connect_timeout", "\"soon\""),
    ] {
        let dir = tempfile::tempdir().unwrap();
        job(dir.path());
        write(dir.path(), "darkroom.toml", &format!("[luma]\n{key} = {bad}\n"));
        let sim = SimProcess::start(dir.path(), &[]);
        for command in [&["run", "chairs.csv"][..], &["audit", "chairs"][..]] {
            let output = against(dir.path(), &sim)
                .args(["--config", "darkroom.toml"])
                .args(command)
                .output()
                .unwrap();
            let stderr = text(&output.stderr);
            assert_eq!(code(&output), 2, "{command:?} with {key} = {bad}: {stderr}");
            assert!(stderr.contains("darkroom.toml"), "{stderr}");
            assert!(stderr.contains(key), "{stderr}");
        }
        assert_eq!(sim.net_billing(), 0);
    }
}

#[test]
fn a_run_with_its_own_luma_timeouts_makes_every_image() {
    let dir = tempfile::tempdir().unwrap();
    job(dir.path());
    write(
        dir.path(),
        "darkroom.toml",
        "[luma]\nconnect_timeout = \"3s\"\nrequest_timeout = \"30s\"\ndownload_timeout = \"1m\"\n",
    );
    let sim = SimProcess::start(dir.path(), &[]);
    let output = against(dir.path(), &sim)
        .args(["--config", "darkroom.toml", "run", "chairs.csv"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", text(&output.stderr));
    assert_eq!(
        sim.net_billing(),
        2 * 4_000,
        "two flash previews at the table's price"
    );
}
