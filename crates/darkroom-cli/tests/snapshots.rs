//! What users read, pinned: `--help` of darkroom and of every command, and the main error
//! messages, from the real binary. A change to any of them shows up as a snapshot diff to review
//! (`cargo insta review`, or `INSTA_UPDATE=always` then `git diff`), not as a silent drift.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::path::Path;

use support::{code, darkroom, text, write};

/// Every command `darkroom --help` lists.
const COMMANDS: [&str; 18] = [
    "validate",
    "estimate",
    "run",
    "trial",
    "status",
    "budget",
    "review",
    "promote",
    "reframe",
    "report",
    "export",
    "prices",
    "verify",
    "audit",
    "sim",
    "config",
    "completions",
    "man",
];

/// The exit code and stderr of `darkroom ARGS` in `dir`, the directory's path written `[DIR]`.
fn failure(dir: &Path, args: &[&str]) -> String {
    let output = darkroom(dir).args(args).output().unwrap();
    let stderr = text(&output.stderr).replace(&dir.display().to_string(), "[DIR]");
    format!("$ darkroom {}\nexit {}\n{stderr}", args.join(" "), code(&output))
}

#[test]
fn the_help_of_darkroom_and_of_every_command_is_as_reviewed() {
    let dir = tempfile::tempdir().unwrap();
    let output = darkroom(dir.path()).arg("--help").output().unwrap();
    assert_eq!(code(&output), 0);
    let listed = text(&output.stdout);
    insta::assert_snapshot!("help", listed);
    for command in COMMANDS {
        assert!(
            listed.contains(&format!("  {command} ")),
            "--help lists {command}"
        );
        let output = darkroom(dir.path()).args([command, "--help"]).output().unwrap();
        assert_eq!(code(&output), 0, "{command} --help");
        insta::assert_snapshot!(format!("help_{command}"), text(&output.stdout));
    }
}

#[test]
fn the_main_error_messages_are_as_reviewed() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write(
        dir,
        "sofas.csv",
        "id,prompt,aspect_ratio\nsofa,A green velvet sofa in a bright room,1:1\n",
    );
    write(
        dir,
        "bad.csv",
        "id,prompt,aspect_ratio\nx,A sofa,5:4\ny,,1:1\nx,A lamp on a table,1:1\n",
    );
    write(dir, "bad-config.toml", "[limits]\nno_such_key = 1\n");
    std::fs::create_dir_all(dir.join("damaged")).unwrap();
    write(dir, "damaged/account.json", "not an account");
    let cases: &[(&str, &[&str])] = &[
        ("error_no_key", &["run", "sofas.csv"]),
        ("error_bad_rows", &["run", "bad.csv", "--sim"]),
        ("error_missing_file", &["run", "missing.csv", "--sim"]),
        (
            "error_bad_budget",
            &["run", "sofas.csv", "--sim", "--budget", "lots"],
        ),
        (
            "error_bad_config",
            &["--config", "bad-config.toml", "run", "sofas.csv", "--sim"],
        ),
        ("error_unknown_job", &["status", "nobody", "--db", "darkroom.db"]),
        ("error_no_ledger", &["status", "--db", "no-ledger-here.db"]),
        (
            "error_promote_unknown_job",
            &["promote", "nobody", "--all", "--sim"],
        ),
        ("error_bad_shell", &["completions", "tcsh"]),
        (
            "error_damaged_sim_state",
            &["sim", "--port", "0", "--state", "damaged"],
        ),
    ];
    for (name, args) in cases {
        insta::assert_snapshot!(*name, failure(dir, args));
    }
}
