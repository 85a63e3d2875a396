//! The ledger as scripts meet it: several different jobs started at the same instant on one
//! `--db`, a ledger that can't be opened (exit 7, never the "bad job file" code 2), genuine bad
//! input still exiting 2, and a ledger made by the previous release opened by this one.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

mod support;

use std::path::Path;
use std::process::Stdio;

use support::{code, darkroom, text, write};

/// A preview's price (photon-flash-1) in micro-dollars.
const PREVIEW_MICROS: u64 = 4_000;

/// Writes job `name` with `rows` rows of `variants` images each; returns its image count.
fn job_file(dir: &Path, name: &str, rows: usize, variants: usize) -> u64 {
    let mut csv = String::from("id,prompt,aspect_ratio,variants\n");
    for row in 0..rows {
        csv.push_str(&format!(
            "r{row},A {name} product photo number {row} on a white table,1:1,{variants}\n"
        ));
    }
    write(dir, &format!("{name}.csv"), &csv);
    (rows * variants) as u64
}

/// Starts `darkroom run` for every job at the same instant on one ledger and checks that each one
/// finished with every image on disk and its spend equal to its images at the preview price.
fn run_jobs_side_by_side(dir: &Path, jobs: &[(&str, u64)]) {
    let children: Vec<_> = jobs
        .iter()
        .map(|(name, _)| {
            darkroom(dir)
                .args([
                    "run",
                    &format!("{name}.csv"),
                    "--sim",
                    "--json",
                    "--db",
                    "shared.db",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (child, (name, images)) in children.into_iter().zip(jobs) {
        let output = child.wait_with_output().unwrap();
        assert_eq!(code(&output), 0, "job {name}: {}", text(&output.stderr));
        let summary: serde_json::Value =
            serde_json::from_str(text(&output.stdout).lines().last().unwrap()).unwrap();
        assert_eq!(summary["counts"]["done"], *images, "job {name}");
        let preview = dir.join("out").join(name).join("preview");
        let on_disk = std::fs::read_dir(&preview)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "jpg"))
            .count() as u64;
        assert_eq!(on_disk, *images, "images of job {name} in {}", preview.display());
        let results = std::fs::read_to_string(dir.join("out").join(name).join("results.jsonl")).unwrap();
        assert_eq!(
            results.lines().count() as u64,
            *images,
            "results.jsonl of job {name}"
        );
        assert!(
            results
                .lines()
                .all(|l| l.contains(&format!("{name} product photo"))),
            "job {name}'s results hold another job's rows:\n{results}"
        );
    }
}

/// Each job's spend from `darkroom status --json`, in micro-dollars, by job name.
fn spend_by_job(dir: &Path, db: &str) -> std::collections::BTreeMap<String, u64> {
    let status = darkroom(dir)
        .args(["status", "--json", "--db", db])
        .output()
        .unwrap();
    assert_eq!(code(&status), 0, "{}", text(&status.stderr));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    status["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| {
            let spent: u64 = job["passes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let spent = darkroom_jobs::Money::parse_usd(p["spent"].as_str().unwrap()).unwrap();
                    u64::try_from(spent.micros()).unwrap()
                })
                .sum();
            (job["job"].as_str().unwrap().to_string(), spent)
        })
        .collect()
}

#[test]
fn four_different_jobs_started_at_once_on_a_new_ledger_all_finish_and_each_pays_its_own_images() {
    let dir = tempfile::tempdir().unwrap();
    let jobs: Vec<(&str, u64)> = [("sofas", 3, 1), ("lamps", 2, 2), ("rugs", 1, 3), ("vases", 4, 1)]
        .into_iter()
        .map(|(name, rows, variants)| (name, job_file(dir.path(), name, rows, variants)))
        .collect();
    run_jobs_side_by_side(dir.path(), &jobs);

    let spend = spend_by_job(dir.path(), "shared.db");
    assert_eq!(spend.len(), jobs.len(), "{spend:?}");
    for (name, images) in &jobs {
        assert_eq!(spend[*name], images * PREVIEW_MICROS, "job {name}: {spend:?}");
    }
}

#[test]
fn four_different_jobs_started_at_once_on_an_existing_ledger_all_finish_beside_its_old_job() {
    let dir = tempfile::tempdir().unwrap();
    let first = job_file(dir.path(), "first", 2, 1);
    run_jobs_side_by_side(dir.path(), &[("first", first)]);
    let jobs: Vec<(&str, u64)> = [("chairs", 2, 1), ("mugs", 1, 2), ("bags", 3, 1), ("hats", 2, 2)]
        .into_iter()
        .map(|(name, rows, variants)| (name, job_file(dir.path(), name, rows, variants)))
        .collect();
    run_jobs_side_by_side(dir.path(), &jobs);

    let spend = spend_by_job(dir.path(), "shared.db");
    assert_eq!(spend["first"], first * PREVIEW_MICROS, "the old job is untouched");
    for (name, images) in &jobs {
        assert_eq!(spend[*name], images * PREVIEW_MICROS, "job {name}: {spend:?}");
    }
    assert_eq!(spend.len(), jobs.len() + 1);
}

/// Runs `args` and checks it exits 7 with an error naming `db` and the exit-7 hint, never 2.
fn assert_records_failure(dir: &Path, args: &[&str], db: &str) {
    let output = darkroom(dir).args(args).output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 7, "{args:?}: {stderr}");
    assert!(stderr.contains(db), "{args:?}: the error names {db}: {stderr}");
    assert!(
        stderr.contains("could not keep its records"),
        "{args:?}: the hint says what exit 7 means: {stderr}"
    );
}

#[test]
fn a_ledger_that_cannot_be_opened_exits_7_naming_the_file_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    job_file(dir.path(), "sofas", 1, 1);

    // A directory where the ledger should be.
    std::fs::create_dir(dir.path().join("a-directory.db")).unwrap();
    // A file that is not SQLite.
    write(
        dir.path(),
        "corrupt.db",
        &"this is not a SQLite database\n".repeat(200),
    );
    // A location that can't hold a file: its parent is a plain file (fails even for root).
    write(dir.path(), "plain-file", "x");

    for db in ["a-directory.db", "corrupt.db", "plain-file/darkroom.db"] {
        assert_records_failure(dir.path(), &["run", "sofas.csv", "--sim", "--db", db], db);
    }
    for db in ["a-directory.db", "corrupt.db"] {
        assert_records_failure(dir.path(), &["status", "--db", db], db);
        assert_records_failure(dir.path(), &["report", "sofas", "--db", db], db);
        assert_records_failure(
            dir.path(),
            &["promote", "sofas", "--all", "--sim", "--db", db],
            db,
        );
    }
    assert!(!dir.path().join("out/sofas/preview").exists(), "nothing was made");
}

#[test]
fn genuine_bad_input_still_exits_2_with_a_ledger_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let images = job_file(dir.path(), "sofas", 2, 1);
    run_jobs_side_by_side(dir.path(), &[("sofas", images)]);
    write(dir.path(), "bad.csv", "id,prompt,aspect_ratio\nx,A sofa,5:4\n");
    write(dir.path(), "bad-config.toml", "[limits]\nno_such_key = 1\n");
    let cases: &[&[&str]] = &[
        &["run", "bad.csv", "--sim", "--db", "shared.db"],
        &["run", "missing.csv", "--sim", "--db", "shared.db"],
        &[
            "run",
            "sofas.csv",
            "--sim",
            "--db",
            "shared.db",
            "--budget",
            "0.001",
        ],
        &[
            "run",
            "sofas.csv",
            "--sim",
            "--db",
            "shared.db",
            "--budget",
            "lots",
        ],
        &["run", "sofas.csv", "--sim", "--db", "shared.db", "--no-such-flag"],
        &[
            "run",
            "sofas.csv",
            "--sim",
            "--db",
            "shared.db",
            "--deadline",
            "25:99",
        ],
        &[
            "--config",
            "bad-config.toml",
            "run",
            "sofas.csv",
            "--sim",
            "--db",
            "shared.db",
        ],
        &["status", "nobody", "--db", "shared.db"],
        &["status", "--db", "no-ledger-here.db"],
        &["report", "nobody", "--db", "shared.db"],
        &["promote", "nobody", "--all", "--sim", "--db", "shared.db"],
    ];
    for args in cases {
        let output = darkroom(dir.path()).args(*args).output().unwrap();
        assert_eq!(code(&output), 2, "{args:?}: {}", text(&output.stderr));
    }
    // `--base-url` is ignored with --sim; without it a bad URL is bad input too.
    let output = darkroom(dir.path())
        .env("LUMAAI_API_KEY", "any")
        .args([
            "run",
            "sofas.csv",
            "--db",
            "shared.db",
            "--base-url",
            "ftp://example.com",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&output), 2, "{}", text(&output.stderr));
}

/// The job file the previous release's ledger fixture was made from (see the fixture's README).
const CHAIRS_CSV: &str = "id,prompt,aspect_ratio\n\
oak,An oak dining chair in a bright room,1:1\n\
steel,A steel bar stool against a brick wall,3:4\n\
wicker,A wicker armchair on a sunny porch,4:3\n";

#[test]
fn a_ledger_made_by_the_previous_release_is_read_reported_and_resumed_without_paying_again() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../darkroom-ledger/tests/fixtures/ledger-0.1.0.db");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&fixture, dir.path().join("darkroom.db")).unwrap();
    write(dir.path(), "chairs.csv", CHAIRS_CSV);

    let status = darkroom(dir.path())
        .args(["status", "chairs", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&status), 0, "{}", text(&status.stderr));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let passes = &status["jobs"][0]["passes"];
    assert_eq!(
        (passes[0]["pass"].as_str(), passes[0]["counts"]["done"].as_u64()),
        (Some("preview"), Some(3))
    );
    assert_eq!(passes[0]["spent"], "0.012");
    assert_eq!(
        (passes[1]["pass"].as_str(), passes[1]["counts"]["done"].as_u64()),
        (Some("final"), Some(1))
    );
    assert_eq!(passes[1]["spent"], "0.015");

    let report = darkroom(dir.path())
        .args(["report", "chairs", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&report), 0, "{}", text(&report.stderr));
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["job"], "chairs", "{report:#}");

    // Upgrading keeps the images the previous release wrote: they are where its ledger says. (Their
    // hashes were never recorded, so only their presence is checked; a missing one would be
    // downloaded or made again.)
    for path in [
        "out/chairs/preview/oak.jpg",
        "out/chairs/preview/steel.jpg",
        "out/chairs/preview/wicker.jpg",
        "out/chairs/final/oak.jpg",
    ] {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"an image the previous release wrote").unwrap();
    }
    let again = darkroom(dir.path())
        .args(["run", "chairs.csv", "--sim", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&again), 0, "{}", text(&again.stderr));
    let summary: serde_json::Value =
        serde_json::from_str(text(&again.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(summary["counts"]["done"], 3);
    assert_eq!(summary["spent"], "0.012", "the resumed run bought nothing more");
    assert_eq!(spend_by_job(dir.path(), "darkroom.db")["chairs"], 12_000 + 15_000);
}

#[test]
fn a_previous_release_ledger_whose_images_are_gone_makes_them_again_instead_of_waiting_on_dead_urls() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../darkroom-ledger/tests/fixtures/ledger-0.1.0.db");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&fixture, dir.path().join("darkroom.db")).unwrap();
    write(dir.path(), "chairs.csv", CHAIRS_CSV);
    // The images are gone and so is the simulator that made them (its URLs lead nowhere, and the new
    // one never heard of their generations): each is made again, under the budget, at once.
    // (Were the dead URLs waited on, the downloads would give up after their patience and leave
    // the images to a later run: fewer than three done.)
    let again = darkroom(dir.path())
        .args(["run", "chairs.csv", "--sim", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&again), 0, "{}", text(&again.stderr));
    let summary: serde_json::Value =
        serde_json::from_str(text(&again.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(summary["counts"]["done"], 3, "{summary:#}");
    assert_eq!(
        summary["spent"], "0.024",
        "three previews made again: {summary:#}"
    );
    for key in ["oak", "steel", "wicker"] {
        let path = dir.path().join(format!("out/chairs/preview/{key}.jpg"));
        assert!(
            std::fs::metadata(&path).is_ok_and(|m| m.len() > 0),
            "{key} is back"
        );
    }
}

/// Runs one SQL statement on the ledger file behind darkroom's back, as a hand edit would.
fn edit_by_hand(db: &Path, sql: &str) {
    use sqlx::Connection as _;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = format!("sqlite://{}", db.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    });
}

#[test]
fn a_value_written_by_hand_that_no_release_knows_exits_7_naming_it_in_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let images = job_file(dir.path(), "sofas", 2, 1);
    run_jobs_side_by_side(dir.path(), &[("sofas", images)]);
    let db = dir.path().join("shared.db");
    // A done task's state: every query that selects done tasks used to pass over it, so
    // `verify` exited 0 with the task unchecked.
    for (sql, column, value) in [
        (
            "UPDATE tasks SET state = 'teleported' WHERE id = (SELECT min(id) FROM tasks)",
            "tasks.state",
            "teleported",
        ),
        (
            "UPDATE generations SET state = 'rendering' WHERE id = (SELECT min(id) FROM generations)",
            "generations.state",
            "rendering",
        ),
    ] {
        let copy = format!("edited-{}.db", column.replace('.', "-"));
        std::fs::copy(&db, dir.path().join(&copy)).unwrap();
        edit_by_hand(&dir.path().join(&copy), sql);
        let commands: &[&[&str]] = &[
            &["verify", "--db", &copy],
            &["status", "--db", &copy],
            &["report", "sofas", "--db", &copy],
            &["audit", "sofas", "--sim", "--db", &copy],
            &["run", "sofas.csv", "--sim", "--db", &copy],
            &["promote", "sofas", "--all", "--sim", "--db", &copy],
        ];
        for args in commands {
            let output = darkroom(dir.path()).args(*args).output().unwrap();
            let stderr = text(&output.stderr);
            assert_eq!(code(&output), 7, "{args:?}: {stderr}");
            assert!(
                stderr.contains(column) && stderr.contains(&format!("\"{value}\"")),
                "{args:?}: the error names {column} and {value:?}: {stderr}"
            );
        }
    }
}

#[test]
fn a_job_file_that_fails_on_its_first_run_leaves_no_job_in_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let images = job_file(dir.path(), "sofas", 1, 1);
    run_jobs_side_by_side(dir.path(), &[("sofas", images)]);
    write(dir.path(), "invalid.csv", "id,prompt\nCON,A sofa by a window\n");
    write(dir.path(), "unclosed.csv", "id,prompt\na,\"A sofa by a window\n");
    std::fs::create_dir(dir.path().join("folder.csv")).unwrap();
    for file in ["invalid.csv", "unclosed.csv", "folder.csv"] {
        let output = darkroom(dir.path())
            .args(["run", file, "--sim", "--db", "shared.db", "--budget", "3"])
            .output()
            .unwrap();
        assert_eq!(code(&output), 2, "{file}: {}", text(&output.stderr));
        let job = file.trim_end_matches(".csv");
        let status = darkroom(dir.path())
            .args(["status", job, "--db", "shared.db"])
            .output()
            .unwrap();
        assert_eq!(
            code(&status),
            2,
            "{file}: no job {job:?} was recorded: {}",
            text(&status.stdout)
        );
    }
    let status = darkroom(dir.path())
        .args(["status", "--db", "shared.db"])
        .output()
        .unwrap();
    let listed = text(&status.stdout);
    assert!(listed.starts_with("sofas preview:"), "{listed}");
    assert_eq!(
        listed.matches(" preview:").count(),
        1,
        "only the job that loaded: {listed}"
    );
}

#[test]
fn every_command_that_reads_a_job_refuses_a_db_that_does_not_exist_with_exit_2_and_creates_no_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
    let db = "elsewhere/typo.db";
    let commands: &[&[&str]] = &[
        &["status"],
        &["status", "shop", "--json"],
        &["report", "shop"],
        &["report", "shop", "--json"],
        &["report", "shop", "--html", "report.html"],
        &["verify"],
        &["verify", "shop"],
        &["export", "shop"],
        &["export", "shop", "--zip", "shop.zip"],
        &["audit", "--sim"],
        &["audit", "shop", "--sim"],
        &["review", "shop", "--sim", "--port", "0"],
        &["promote", "shop", "--all", "--sim"],
    ];
    for args in commands {
        let output = darkroom(dir.path())
            .args(*args)
            .args(["--db", db])
            .output()
            .unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(code(&output), 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains("no ledger at elsewhere/typo.db"),
            "{args:?}: {stderr}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path().join("elsewhere"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert!(
            left.is_empty(),
            "{args:?} left {left:?} beside the missing ledger"
        );
        assert!(!dir.path().join("report.html").exists(), "{args:?}");
        assert!(!dir.path().join("shop.zip").exists(), "{args:?}");
    }
}
