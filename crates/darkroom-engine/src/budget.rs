//! The budget policy every command that spends follows, in one place: a budget given for the run
//! is set (raised or lowered, never below what is already spent); without one, a pass that has no
//! budget yet gets the configured default, and a pass that has one keeps it.

use darkroom_jobs::{Money, Pass};
use darkroom_ledger::{Ledger, LedgerError, PassRecord};

/// Applies the budget policy to `pass` of the job and returns the pass as it then stands.
///
/// `given` is the budget the user gave for this run (USD as [`Money`]); `default` the configured
/// one, used only when the pass has no budget yet.
///
/// # Errors
/// [`LedgerError::BudgetBelowSpend`] when `given` is below what the pass has already spent or
/// reserved (bad input: nothing is changed), any other ledger error otherwise.
pub async fn apply_budget(
    ledger: &Ledger,
    job_id: i64,
    pass: Pass,
    given: Option<Money>,
    default: Money,
) -> Result<PassRecord, LedgerError> {
    match given {
        Some(budget) => ledger.set_budget(job_id, pass, budget).await?,
        None => {
            if ledger.pass(job_id, pass).await?.is_none() {
                ledger.set_budget(job_id, pass, default).await?;
            }
        }
    }
    ledger
        .pass(job_id, pass)
        .await?
        // The pass was read or written just above; only a job deleted meanwhile has none.
        .ok_or_else(|| LedgerError::NoSuchJob(format!("#{job_id}")))
}
