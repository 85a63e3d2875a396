//! The kit's command runs a program with nothing of the caller's configuration: checked by running
//! `env` in its place and reading what it was given.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::collections::HashMap;
use std::path::Path;

fn environment_seen_by_a_child(dir: &Path) -> HashMap<String, String> {
    let output = darkroom_testkit::cli::darkroom("env", dir).output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_callers_key_base_url_and_darkroom_settings_never_reach_the_child_and_its_home_is_the_test_dir() {
    // This test binary sets them for itself only; no other test here reads them.
    std::env::set_var("LUMAAI_API_KEY", "luma-caller-key");
    std::env::set_var("LUMAAI_BASE_URL", "https://api.example.invalid/");
    std::env::set_var("DARKROOM_BUDGET", "1000");
    std::env::set_var("DARKROOM_CONFIG", "/nonexistent/darkroom.toml");
    let dir = tempfile::tempdir().unwrap();
    let seen = environment_seen_by_a_child(dir.path());
    for key in seen.keys() {
        assert!(
            !key.starts_with("DARKROOM_") && !key.starts_with("LUMAAI_"),
            "{key} reached the child"
        );
    }
    let home = dir.path().join(".home");
    assert_eq!(seen["HOME"], home.display().to_string());
    for (key, sub) in [
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_STATE_HOME", ".local/state"),
    ] {
        assert_eq!(seen[key], home.join(sub).display().to_string());
        assert!(home.join(sub).is_dir(), "{key} exists");
    }
    assert_eq!(seen["NO_COLOR"], "1");
}
