//! The conventions of a Rust CLI, from the real binary: shell completions and manual pages made
//! from the same definitions as `--help`, `--version` with the commit, and `darkroom config`
//! showing where each setting came from without showing a secret.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use support::{code, darkroom, text, write};

#[test]
fn completions_for_bash_zsh_and_fish_know_every_command_and_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F _darkroom"),
        ("zsh", "#compdef darkroom"),
        ("fish", "complete -c darkroom"),
    ] {
        let output = darkroom(dir.path())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert_eq!(code(&output), 0, "{shell}: {}", text(&output.stderr));
        let script = text(&output.stdout);
        assert!(script.contains(marker), "{shell}: {marker}");
        for word in ["promote", "review", "completions", "--budget", "--sim"] {
            assert!(script.contains(word), "{shell} completes {word}");
        }
    }
}

#[test]
fn the_manual_page_is_roff_from_the_help_and_out_writes_one_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let output = darkroom(dir.path()).arg("man").output().unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let page = text(&output.stdout);
    assert!(page.contains(".TH darkroom 1"), "{page}");
    assert!(page.contains("promote"), "{page}");
    assert!(page.contains("Exit codes"), "the page has --help's exit codes");

    let output = darkroom(dir.path())
        .args(["man", "--out", "man/man1"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let run = std::fs::read_to_string(dir.path().join("man/man1/darkroom-run.1")).unwrap();
    assert!(run.contains(r"\-\-budget"), "{run}");
    for page in [
        "darkroom.1",
        "darkroom-promote.1",
        "darkroom-config.1",
        "darkroom-sim.1",
    ] {
        assert!(dir.path().join("man/man1").join(page).exists(), "{page}");
    }
}

#[test]
fn the_version_names_the_commit_it_was_built_from() {
    let dir = tempfile::tempdir().unwrap();
    let output = darkroom(dir.path()).arg("--version").output().unwrap();
    assert_eq!(code(&output), 0);
    let version = text(&output.stdout).trim().to_string();
    let commit = version
        .strip_prefix(&format!("darkroom {} (commit ", env!("CARGO_PKG_VERSION")))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{version}"));
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| text(&o.stdout).trim().to_string());
    match head {
        Some(head) => assert_eq!(commit, head),
        None => assert_eq!(commit, "unknown"),
    }
}

#[test]
fn config_shows_each_settings_origin_and_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "mine.toml", "[limits]\nmax_in_flight = 5\n");
    let output = darkroom(dir.path())
        .args([
            "--config",
            "mine.toml",
            "config",
            "--json",
            "--db",
            "ledgers/shop.db",
        ])
        .env("DARKROOM_BUDGET", "3")
        .env("DARKROOM_OUT", "renders")
        .env("LUMAAI_API_KEY", "luma-secret-key-123")
        .env("DARKROOM_NOTIFY_SECRET", "whsec_notify-secret-456")
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(!stdout.contains("luma-secret-key-123") && !stdout.contains("notify-secret-456"));
    let config: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(config["config_file"], "mine.toml (flag --config)");
    let settings = &config["settings"];
    let seen = |key: &str| (settings[key]["value"].clone(), settings[key]["origin"].clone());
    use serde_json::json;
    assert_eq!(seen("limits.max_in_flight"), (json!(5), json!("file mine.toml")));
    assert_eq!(
        seen("budget.default"),
        (json!("3"), json!("environment DARKROOM_BUDGET"))
    );
    assert_eq!(seen("limits.creates_per_minute"), (json!(80), json!("default")));
    assert_eq!(seen("db"), (json!("ledgers/shop.db"), json!("flag --db")));
    assert_eq!(seen("out"), (json!("renders"), json!("environment DARKROOM_OUT")));
    assert_eq!(seen("sim_state").0, json!("ledgers/.darkroom/sim"));
    assert_eq!(seen("api_key").0, json!("<redacted>"));
    assert_eq!(seen("notify_secret").0, json!("<redacted>"));

    // Without a file or variables, everything is a default, and the text form says so.
    let output = darkroom(dir.path()).arg("config").output().unwrap();
    assert_eq!(code(&output), 0);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("# config file: none"), "{stdout}");
    assert!(stdout.contains("api_key = \"<not set>\""), "{stdout}");
    assert!(
        stdout.contains("limits.max_in_flight = 40  # default"),
        "{stdout}"
    );

    // A bad file is the same error every command gives.
    write(dir.path(), "bad.toml", "[limits]\nno_such_key = 1\n");
    let output = darkroom(dir.path())
        .args(["--config", "bad.toml", "config"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 2);
    assert!(text(&output.stderr).contains("no_such_key"));
}
