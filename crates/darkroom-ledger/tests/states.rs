//! States cross the ledger's boundary as enums: every value reads back as itself, and a text the
//! enums don't know (written by hand or by a newer release) is an error naming the column and the
//! value, never a silent default.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.
use std::path::Path;

use darkroom_jobs::{AspectRatio, Format, Metadata, Model, Money, Pass, References, Task};
use darkroom_ledger::{
    Damage, GenerationState, Ledger, LedgerError, NewTask, PassStatus, SpendKind, TaskState,
};
use sqlx::{Connection as _, SqliteConnection};

fn new_task(key: &str) -> NewTask {
    NewTask {
        task: Task {
            row_id: key.to_string(),
            pass: Pass::Preview,
            variant: 1,
            variants: 1,
            model: Model::PhotonFlash1,
            prompt: format!("a {key}"),
            aspect_ratio: AspectRatio::Square,
            format: Format::Jpg,
            refs: References::default(),
            metadata: Metadata::new(),
            fingerprint: format!("fp-{key}"),
        },
        line: 2,
        price: Money::from_micros(4_000),
        request_json: "{}".into(),
    }
}

/// A ledger with one job, a preview pass and two tasks; returns the first task's id.
async fn ledger_with_tasks(db: &Path) -> (Ledger, i64, i64) {
    let ledger = Ledger::open(db).await.unwrap();
    let job = ledger.upsert_job("job", "job.csv", "file-fp").await.unwrap();
    ledger
        .set_budget(job, Pass::Preview, Money::from_micros(100_000))
        .await
        .unwrap();
    let mut loader = ledger.begin_load(job, Pass::Preview).await.unwrap();
    loader
        .load_page(&[new_task("chair"), new_task("table")])
        .await
        .unwrap();
    loader.finish("file-fp").await.unwrap();
    let task = ledger.pending_tasks(job, Pass::Preview, 0, 10).await.unwrap()[0].id;
    (ledger, job, task)
}

/// Writes to the ledger file behind the ledger's back, as a hand edit or another release would.
async fn write_raw(db: &Path, sql: &str) {
    let url = format!("sqlite://{}", db.display());
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

fn assert_bad_value<T: std::fmt::Debug>(result: Result<T, LedgerError>, column: &str, value: &str) {
    match result {
        Err(LedgerError::BadValue { column: c, value: v }) => {
            assert_eq!((c, v.as_str()), (column, value));
        }
        other => panic!("expected a bad value in {column}, got {other:?}"),
    }
}

#[test]
fn every_stored_value_reads_back_as_itself() {
    for state in TaskState::ALL {
        assert_eq!(TaskState::try_from(state.as_str()).unwrap(), *state);
    }
    for state in GenerationState::ALL {
        assert_eq!(GenerationState::try_from(state.as_str()).unwrap(), *state);
    }
    for status in PassStatus::ALL {
        assert_eq!(PassStatus::try_from(status.as_str()).unwrap(), *status);
    }
    for damage in Damage::ALL {
        assert_eq!(Damage::try_from(damage.as_str()).unwrap(), *damage);
    }
    for kind in SpendKind::ALL {
        assert_eq!(SpendKind::try_from(kind.as_str()).unwrap(), *kind);
    }
}

#[test]
fn an_unknown_text_is_an_error_naming_its_column_and_value() {
    assert_bad_value(TaskState::try_from("Done"), "tasks.state", "Done");
    assert_bad_value(GenerationState::try_from(""), "generations.state", "");
    assert_bad_value(PassStatus::try_from("paused"), "job_passes.status", "paused");
    assert_bad_value(Damage::try_from("gone"), "tasks.damage", "gone");
    assert_bad_value(SpendKind::try_from("tip"), "spend.kind", "tip");
    let message = TaskState::try_from("exploded").unwrap_err().to_string();
    assert!(
        message.contains("tasks.state") && message.contains("\"exploded\""),
        "{message}"
    );
}

#[tokio::test]
async fn a_task_state_the_ledger_does_not_know_is_an_error_not_a_default() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("darkroom.db");
    let (ledger, job, task) = ledger_with_tasks(&db).await;
    write_raw(
        &db,
        &format!("UPDATE tasks SET state = 'exploded' WHERE id = {task}"),
    )
    .await;

    assert_bad_value(ledger.task(task).await, "tasks.state", "exploded");
    // Counting used to file any state it did not know under "in flight".
    assert_bad_value(ledger.counts(job, Pass::Preview).await, "tasks.state", "exploded");
    assert_bad_value(
        ledger.results(job, Pass::Preview, 0, 10).await,
        "tasks.state",
        "exploded",
    );
    assert_bad_value(ledger.tiles(job, Pass::Preview).await, "tasks.state", "exploded");
    // A reservation reads the state too: it must not take the task as "not pending" and go on.
    assert_bad_value(ledger.reserve(task).await, "tasks.state", "exploded");
}

#[tokio::test]
async fn a_generation_state_or_pass_status_the_ledger_does_not_know_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("darkroom.db");
    let (ledger, job, task) = ledger_with_tasks(&db).await;
    assert_eq!(
        ledger.reserve(task).await.unwrap(),
        darkroom_ledger::Reservation::Reserved
    );
    let generation = ledger.record_intent(task, "req-fp", "luma").await.unwrap();
    ledger.record_submitted(generation, "up-1").await.unwrap();
    assert_eq!(
        ledger.upstream_generations().await.unwrap(),
        [("up-1".to_string(), GenerationState::Submitted, 4_000)]
    );
    ledger
        .set_pass_status(job, Pass::Preview, PassStatus::BudgetExhausted)
        .await
        .unwrap();
    let pass = ledger.pass(job, Pass::Preview).await.unwrap().unwrap();
    assert_eq!(pass.status, PassStatus::BudgetExhausted);
    assert!(pass.finished_at.is_some(), "a pass out of budget is finished");

    write_raw(
        &db,
        &format!("UPDATE generations SET state = 'halfway' WHERE id = {generation}"),
    )
    .await;
    assert_bad_value(
        ledger.upstream_generations().await,
        "generations.state",
        "halfway",
    );
    assert_bad_value(
        ledger
            .record_generation_failed(generation, "moderated", TaskState::Blocked)
            .await,
        "generations.state",
        "halfway",
    );

    write_raw(
        &db,
        &format!("UPDATE job_passes SET status = 'paused' WHERE job_id = {job}"),
    )
    .await;
    assert_bad_value(
        ledger.pass(job, Pass::Preview).await,
        "job_passes.status",
        "paused",
    );
}

#[tokio::test]
async fn an_interrupted_pass_is_not_recorded_as_finished() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, job, _task) = ledger_with_tasks(&dir.path().join("darkroom.db")).await;
    for status in PassStatus::ALL {
        ledger.set_pass_status(job, Pass::Preview, *status).await.unwrap();
        let pass = ledger.pass(job, Pass::Preview).await.unwrap().unwrap();
        assert_eq!(pass.status, *status);
        assert_eq!(
            pass.finished_at.is_some(),
            matches!(
                status,
                PassStatus::Finished | PassStatus::BudgetExhausted | PassStatus::Refused
            ),
            "{status}"
        );
    }
}

#[tokio::test]
async fn opening_a_ledger_with_a_value_it_does_not_know_in_any_checked_column_fails_naming_it() {
    // Each edit hides its row from the queries that filter on the column (`WHERE state =
    // 'done'`, `WHERE pass = 'preview'`): only a check on opening sees it.
    let edits = [
        (
            "UPDATE tasks SET state = 'teleported' WHERE id = {task}",
            "tasks.state",
            "teleported",
        ),
        (
            "UPDATE tasks SET pass = 'draft' WHERE id = {task}",
            "tasks.pass",
            "draft",
        ),
        (
            "UPDATE generations SET state = 'halfway'",
            "generations.state",
            "halfway",
        ),
        (
            "UPDATE job_passes SET status = 'paused'",
            "job_passes.status",
            "paused",
        ),
    ];
    for (sql, column, value) in edits {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("darkroom.db");
        let (ledger, _job, task) = ledger_with_tasks(&db).await;
        assert_eq!(
            ledger.reserve(task).await.unwrap(),
            darkroom_ledger::Reservation::Reserved
        );
        ledger.record_intent(task, "req-fp", "luma").await.unwrap();
        ledger.close().await;
        // Opening the untouched ledger again is fine.
        Ledger::open(&db).await.unwrap().close().await;

        write_raw(&db, &sql.replace("{task}", &task.to_string())).await;
        assert_bad_value(Ledger::open(&db).await, column, value);
    }
}

#[tokio::test]
async fn opening_a_ledger_with_a_model_it_does_not_know_in_a_price_record_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("darkroom.db");
    let (ledger, job, _task) = ledger_with_tasks(&db).await;
    ledger.close().await;
    write_raw(
        &db,
        &format!(
            "INSERT INTO pass_prices (job_id, pass, model, price_micros, set_at) \
             VALUES ({job}, 'preview', 'photon-9', 4000, 0)"
        ),
    )
    .await;
    assert_bad_value(Ledger::open(&db).await, "pass_prices.model", "photon-9");
}

#[tokio::test]
async fn a_job_that_never_had_a_task_is_forgotten_and_one_with_tasks_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("darkroom.db");
    let (ledger, job, _task) = ledger_with_tasks(&db).await;
    let empty = ledger.upsert_job("empty", "empty.csv", "").await.unwrap();
    ledger
        .set_budget(empty, Pass::Preview, Money::from_micros(1_000))
        .await
        .unwrap();

    assert!(!ledger.forget_job_without_tasks(job).await.unwrap());
    assert!(ledger.forget_job_without_tasks(empty).await.unwrap());
    let names: Vec<String> = ledger.jobs().await.unwrap().into_iter().map(|j| j.name).collect();
    assert_eq!(names, ["job"]);
    assert!(ledger.pass(job, Pass::Preview).await.unwrap().is_some());
}
