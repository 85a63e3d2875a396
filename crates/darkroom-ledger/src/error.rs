//! The ledger's errors and its `Result`.

use darkroom_jobs::Money;

/// What can go wrong with the ledger. The engine stops the run on any of these: a ledger that
/// can't be written is a systemic failure.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the ledger {path} could not be opened")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("the ledger {path}'s schema could not be brought up to date")]
    Migrate {
        path: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("ledger query failed")]
    Sql(#[from] sqlx::Error),
    #[error("no job named {0:?} in this ledger")]
    NoSuchJob(String),
    #[error("the budget {budget} is below what this pass has already spent or reserved ({committed})")]
    BudgetBelowSpend { budget: Money, committed: Money },
}

pub type Result<T> = std::result::Result<T, LedgerError>;
