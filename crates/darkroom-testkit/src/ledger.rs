//! A real ledger file in a temporary directory, and a job loaded into it as `darkroom run` loads
//! one: the job row, the pass's budget, then the file's tasks.

use std::path::Path;

use darkroom_jobs::{Money, Pass, PriceTable, ReadOptions, Routing};
use darkroom_ledger::Ledger;

/// Opens (creating and migrating) the ledger `darkroom.db` in `dir`.
///
/// # Panics
/// If the file cannot be created or migrated.
pub async fn open_in(dir: &Path) -> Ledger {
    Ledger::open(&dir.join("darkroom.db"))
        .await
        .expect("a ledger opens in the temporary directory")
}

/// Creates (or finds) job `name` for `file`, sets `pass`'s budget to `budget` and loads the file's
/// tasks with the default routing, price table and read options. Returns the job's id.
///
/// # Panics
/// If the ledger refuses a write or the file does not load (a test's job files are valid).
pub async fn load_job(ledger: &Ledger, name: &str, file: &Path, pass: Pass, budget: Money) -> i64 {
    let job = ledger
        .upsert_job(name, &file.display().to_string(), "")
        .await
        .expect("the job row is written");
    ledger
        .set_budget(job, pass, budget)
        .await
        .expect("the pass's budget is set");
    darkroom_engine::load::load_job(
        ledger,
        job,
        file,
        pass,
        Routing::default(),
        PriceTable::default(),
        ReadOptions::default(),
    )
    .await
    .expect("the job file loads");
    job
}

/// A preview job of `rows` rows in the ledger of `dir`, as a long run leaves it, without running
/// it: rows `row-1`.. with a `group` of 500 rows each (`g-1`, `g-2`, ...), loaded as `darkroom
/// run` loads them, the first `done` of them marked done (`Ledger::mark_first_tasks_done`: an
/// output path `out/KEY.jpg`, no file written). What the review page is measured on at 50,000
/// images. Returns the ledger and the job's id.
///
/// # Panics
/// As [`load_job`]; `done` counts tasks of every job of the ledger (use a fresh one).
pub async fn many_previews(dir: &Path, name: &str, rows: usize, done: u64) -> (Ledger, i64) {
    use std::fmt::Write as _;
    let mut text = String::from("id,prompt,group\n");
    for i in 1..=rows {
        let _ = writeln!(
            text,
            "row-{i},a product photo number {i} on a plain background,g-{}",
            (i - 1) / 500 + 1
        );
    }
    let file = crate::jobs::write(dir, &format!("{name}.csv"), &text);
    let ledger = open_in(dir).await;
    let job = load_job(
        &ledger,
        name,
        &file,
        Pass::Preview,
        Money::parse_usd("1000").expect("a budget"),
    )
    .await;
    ledger
        .mark_first_tasks_done(done)
        .await
        .expect("the first tasks are marked done");
    (ledger, job)
}
