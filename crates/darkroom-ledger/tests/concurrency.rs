//! Several processes on one ledger file: opening and migrating a new or existing file at the same
//! moment, and different jobs writing side by side, with nothing failing and every cent in place.
//!
//! Concurrent `Ledger::open` calls in one test process are separate SQLite connections and separate
//! OS lock descriptions, as separate processes would be; one test also starts real child processes
//! (this test binary again, told by an environment variable to be a writer).

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.
use std::path::Path;

use darkroom_jobs::{AspectRatio, Format, Metadata, Model, Money, Pass, References, Task};
use darkroom_ledger::{Ledger, NewTask, Reservation};

const TASKS_PER_JOB: usize = 12;
const PRICE: i64 = 4_000;

fn new_task(job: &str, i: usize) -> NewTask {
    let key = format!("{job}-{i}");
    NewTask {
        task: Task {
            row_id: key.clone(),
            pass: Pass::Preview,
            variant: 1,
            variants: 1,
            model: Model::PhotonFlash1,
            prompt: format!("a prompt for {key}"),
            aspect_ratio: AspectRatio::Square,
            format: Format::Jpg,
            refs: References::default(),
            metadata: Metadata::new(),
            fingerprint: format!("fp-{key}"),
        },
        line: i as u64 + 2,
        price: Money::from_micros(PRICE),
        request_json: "{}".into(),
    }
}

/// What one darkroom run does to the ledger, in the same transactions: open, create the job and its
/// budget, load its tasks, then reserve, create, complete and finish every task.
async fn run_job(db: &Path, job: &str) {
    let ledger = Ledger::open(db)
        .await
        .unwrap_or_else(|e| panic!("job {job}: opening failed: {e:?}"));
    let job_id = ledger.upsert_job(job, &format!("{job}.csv"), "").await.unwrap();
    ledger
        .set_budget(job_id, Pass::Preview, Money::from_micros(PRICE * 100))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..TASKS_PER_JOB).map(|i| new_task(job, i)).collect();
    let mut loader = ledger.begin_load(job_id, Pass::Preview).await.unwrap();
    loader.load_page(&tasks).await.unwrap();
    loader.finish("file-fp").await.unwrap();
    for task in ledger
        .pending_tasks(job_id, Pass::Preview, 0, 1_000)
        .await
        .unwrap()
    {
        assert_eq!(
            ledger
                .reserve(task.id)
                .await
                .unwrap_or_else(|e| fail(job, "reserve", e)),
            Reservation::Reserved
        );
        let generation = ledger
            .record_intent(task.id, "req", "luma")
            .await
            .unwrap_or_else(|e| fail(job, "intent", e));
        ledger
            .record_submitted(generation, &format!("up-{job}-{}", task.id))
            .await
            .unwrap_or_else(|e| fail(job, "submitted", e));
        ledger
            .record_completed(generation, "https://cdn.example.com/i.jpg")
            .await
            .unwrap_or_else(|e| fail(job, "completed", e));
        ledger
            .record_done(
                generation,
                &format!("out/{job}/{}.jpg", task.id),
                &darkroom_ledger::ImageContent {
                    hash: format!("hash-{job}-{}", task.id),
                    bytes: 1_000,
                },
            )
            .await
            .unwrap_or_else(|e| fail(job, "done", e));
    }
    ledger.close().await;
}

fn fail<T>(job: &str, what: &str, error: darkroom_ledger::LedgerError) -> T {
    panic!("job {job}: {what} failed: {error:?}")
}

/// Every job is whole: all its tasks done, its spend one charge per task, and the ledger's total
/// the sum of them.
async fn assert_jobs_complete(db: &Path, jobs: &[String]) {
    let ledger = Ledger::open(db).await.unwrap();
    for job in jobs {
        let record = ledger.job(job).await.unwrap();
        let counts = ledger.counts(record.id, Pass::Preview).await.unwrap();
        assert_eq!(counts.done, TASKS_PER_JOB as u64, "job {job}: {counts:?}");
        let pass = ledger.pass(record.id, Pass::Preview).await.unwrap().unwrap();
        assert_eq!(
            (pass.spent_micros, pass.reserved_micros),
            (PRICE * TASKS_PER_JOB as i64, 0),
            "job {job}"
        );
    }
    assert_eq!(
        ledger.net_charges().await.unwrap(),
        Money::from_micros(PRICE * (TASKS_PER_JOB * jobs.len()) as i64)
    );
    ledger.close().await;
}

async fn run_jobs_at_once(db: &Path, jobs: &[String]) {
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(jobs.len()));
    let handles: Vec<_> = jobs
        .iter()
        .map(|job| {
            let (db, job, start) = (db.to_path_buf(), job.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                run_job(&db, &job).await;
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_openers_of_a_new_ledger_at_the_same_moment_all_migrate_and_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("darkroom.db");
    let jobs: Vec<String> = (0..8).map(|i| format!("job{i}")).collect();
    run_jobs_at_once(&db, &jobs).await;
    assert_jobs_complete(&db, &jobs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_openers_of_an_existing_ledger_at_the_same_moment_all_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("darkroom.db");
    run_job(&db, "first").await;
    let mut jobs: Vec<String> = (0..8).map(|i| format!("job{i}")).collect();
    run_jobs_at_once(&db, &jobs).await;
    jobs.push("first".into());
    assert_jobs_complete(&db, &jobs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_keeps_reading_while_other_openers_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("darkroom.db");
    run_job(&db, "first").await;
    let reader = Ledger::open(&db).await.unwrap();
    let jobs: Vec<String> = (0..4).map(|i| format!("job{i}")).collect();
    let writers = {
        let (db, jobs) = (db.clone(), jobs.clone());
        tokio::spawn(async move { run_jobs_at_once(&db, &jobs).await })
    };
    while !writers.is_finished() {
        let first = reader.job("first").await.unwrap();
        assert_eq!(
            reader.counts(first.id, Pass::Preview).await.unwrap().done,
            TASKS_PER_JOB as u64
        );
        reader.jobs().await.unwrap();
        tokio::task::yield_now().await;
    }
    writers.await.unwrap();
    reader.close().await;
}

/// Set in a child process: the ledger path and job it writes.
const CHILD_DB: &str = "DARKROOM_TEST_CHILD_DB";
const CHILD_JOB: &str = "DARKROOM_TEST_CHILD_JOB";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_started_at_once_on_a_new_ledger_each_finish_their_job() {
    if let (Ok(db), Ok(job)) = (std::env::var(CHILD_DB), std::env::var(CHILD_JOB)) {
        // This process is one of the writers the test started.
        run_job(Path::new(&db), &job).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("darkroom.db");
    let jobs: Vec<String> = (0..4).map(|i| format!("proc{i}")).collect();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = jobs
        .iter()
        .map(|job| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "four_processes_started_at_once_on_a_new_ledger_each_finish_their_job",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_DB, &db)
                .env(CHILD_JOB, job)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (child, job) in children.into_iter().zip(&jobs) {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "writer {job} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_jobs_complete(&db, &jobs).await;
}

#[test]
fn every_write_transaction_in_the_ledger_begins_as_a_writer() {
    // A deferred `BEGIN` that reads and then writes gets SQLITE_BUSY_SNAPSHOT when another process
    // wrote in between, and no busy timeout waits that out: transactions start with `begin_write`.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            assert!(
                !code.contains(".begin()") && !code.contains("\"BEGIN\"") && !code.contains("BEGIN DEFERRED"),
                "{}:{}: a deferred transaction; use `self.begin_write()` (BEGIN IMMEDIATE)",
                path.display(),
                n + 1
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 2,
        "the ledger's sources were not found in {}",
        src.display()
    );
}
