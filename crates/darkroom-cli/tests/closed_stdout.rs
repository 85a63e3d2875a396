//! Output piped into a reader that went away (`darkroom status | head`): every command that prints
//! ends quietly with 141, as a shell reports `SIGPIPE`, never with a panic or a false claim that
//! the ledger or the disk failed.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::path::Path;
use std::process::Stdio;

use support::{code, darkroom, text, write};

/// Runs `darkroom ARGS` in `dir` with stdout a pipe whose read end is already closed.
fn with_stdout_closed(dir: &Path, args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    darkroom(dir)
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn every_printing_command_ends_quietly_when_its_reader_has_gone() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "chairs.csv",
        "id,prompt\noak,an oak chair in a sunlit studio\npine,a pine chair on a porch\n",
    );
    let made = darkroom(dir.path())
        .args(["run", "chairs.csv", "--sim", "--budget", "1"])
        .output()
        .unwrap();
    assert_eq!(code(&made), 0, "{}", text(&made.stderr));
    for args in [
        &["man"][..],
        &["completions", "zsh"],
        &["config"],
        &["validate", "chairs.csv"],
        &["estimate", "chairs.csv"],
        &["status"],
        &["status", "chairs", "--json"],
        &["report", "chairs"],
        &["report", "chairs", "--json"],
        &["prices"],
        &["verify", "chairs"],
    ] {
        let output = with_stdout_closed(dir.path(), args);
        let stderr = text(&output.stderr);
        assert_eq!(code(&output), 141, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("error"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_run_whose_reader_has_gone_resumes_with_the_same_command() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "lamps.csv",
        "id,prompt\nbrass,a brass lamp on a desk\nglass,a glass lamp by a window\n",
    );
    let run = ["run", "lamps.csv", "--sim", "--budget", "1", "--json"];
    let first = with_stdout_closed(dir.path(), &run);
    assert!(
        [0, 141].contains(&code(&first)),
        "ends done or quietly: {}",
        text(&first.stderr)
    );
    assert!(
        !text(&first.stderr).contains("panicked"),
        "{}",
        text(&first.stderr)
    );
    let again = darkroom(dir.path()).args(&run[..5]).output().unwrap();
    assert_eq!(code(&again), 0, "{}", text(&again.stderr));
    let status = darkroom(dir.path())
        .args(["status", "lamps", "--json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let counts = &status["jobs"][0]["passes"][0]["counts"];
    assert_eq!(counts["done"], 2, "{status}");
    assert_eq!(counts["attempts"], 2, "each image paid once: {status}");
}
