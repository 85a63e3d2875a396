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
