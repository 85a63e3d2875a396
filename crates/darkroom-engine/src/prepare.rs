//! Preparing a job for a run: the job's record, its pass's budget (the `budget` policy) and the
//! job file's tasks loaded into the ledger (`load`), in that order, as every run of a job file
//! starts.

use std::path::Path;

use darkroom_jobs::{Money, Pass, PriceTable, ReadOptions, Routing};
use darkroom_ledger::{Ledger, LedgerError, PassRecord};

use crate::budget::apply_budget;
use crate::load::{load_job_routed, LoadError, Loaded, Routed};

/// A job file to prepare for one pass.
#[derive(Debug, Clone)]
pub struct JobFile<'a> {
    /// The job's name (a valid id: `darkroom_jobs::valid_id`).
    pub name: &'a str,
    /// The job file (.csv or .jsonl).
    pub file: &'a Path,
    /// The pass to load its tasks for.
    pub pass: Pass,
    /// The budget given for this run, if any, and the configured default (see `budget`).
    pub budget: Option<Money>,
    /// The budget a pass gets when it has none yet and none is given.
    pub default_budget: Money,
    /// Which model each pass uses when a row names none.
    pub routing: Routing,
    /// Prices per model, in micro-dollars per image.
    pub prices: PriceTable,
    /// How rows are read (default aspect ratio, ...).
    pub read: ReadOptions,
}

/// A job ready to run: its id, its pass as it stands after the budget policy, and what loading did.
#[derive(Debug)]
pub struct Prepared {
    /// The job's id in the ledger.
    pub job_id: i64,
    /// The pass's record (budget, spend, deadline) after the budget policy.
    pub pass: PassRecord,
    /// What loading the file did (its reader's report, unless the file was unchanged).
    pub loaded: Loaded,
}

/// Records the job, applies the budget policy to its pass and loads the file's tasks (the final
/// pass's rows routed by the choices made after a trial of the job, `Ledger::routing_choices`). A file with
/// any invalid row loads nothing and spends nothing; on a job's first run it leaves no job in the
/// ledger either (a file that can't be read, an invalid row, a bad budget).
///
/// # Errors
/// [`LoadError::Ledger`] for a ledger failure (a given budget below spend is
/// `LedgerError::BudgetBelowSpend` inside it), the other [`LoadError`]s for a file that can't be
/// read or has invalid rows.
pub async fn prepare_job(ledger: &Ledger, job: JobFile<'_>) -> Result<Prepared, LoadError> {
    let file_path = job.file.display().to_string();
    let is_new = match ledger.job(job.name).await {
        Ok(_) => false,
        Err(LedgerError::NoSuchJob(_)) => true,
        Err(e) => return Err(e.into()),
    };
    let job_id = ledger.upsert_job(job.name, &file_path, "").await?;
    let prepared = async {
        let pass = apply_budget(ledger, job_id, job.pass, job.budget, job.default_budget).await?;
        let routed = Routed {
            routing: job.routing,
            choices: ledger.routing_choices(job.name).await?,
        };
        let loaded =
            load_job_routed(ledger, job_id, job.file, job.pass, routed, job.prices, job.read).await?;
        Ok(Prepared { job_id, pass, loaded })
    }
    .await;
    if prepared.is_err() && is_new {
        // A first run that loaded nothing leaves no job behind (`darkroom status` would list it).
        // The error that stopped the load is the one to report, not a failure to tidy after it.
        if let Err(e) = ledger.forget_job_without_tasks(job_id).await {
            tracing::warn!(error = %e, job = job.name, "could not remove a job that loaded nothing");
        }
    }
    prepared
}
