//! The ledger's errors and its `Result`. They name no type of the storage behind the ledger: the
//! database driver's own error is carried as an opaque [`BackendError`] source, so callers branch on
//! the variants here and a second backend reports through the same ones.

use std::fmt;

use darkroom_jobs::Money;

/// What can go wrong with the ledger. The engine stops the run on any of these: a ledger that
/// can't be written is a systemic failure.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The ledger file (or its open lock) could not be created or opened, or is not a ledger.
    #[error("the ledger {path} could not be opened")]
    Open {
        /// The ledger file, as given to [`crate::Ledger::open`].
        path: String,
        /// What the storage reported.
        #[source]
        source: BackendError,
    },
    /// The schema could not be brought up to date (a failed or changed migration).
    #[error("the ledger {path}'s schema could not be brought up to date")]
    Migrate {
        /// The ledger file.
        path: String,
        /// What the migrator reported.
        #[source]
        source: BackendError,
    },
    /// A statement failed (the file is locked past the busy timeout, the disk is full, a row
    /// expected is missing).
    #[error("ledger query failed")]
    Query(#[source] BackendError),
    /// No job of that name was ever recorded in this ledger.
    #[error("no job named {0:?} in this ledger")]
    NoSuchJob(String),
    /// A budget was lowered below what its pass has already spent or reserved: nothing changed.
    #[error("the budget {budget} is below what this pass has already spent or reserved ({committed})")]
    BudgetBelowSpend {
        /// The budget asked for.
        budget: Money,
        /// What the pass has spent plus what it holds reserved.
        committed: Money,
    },
    /// A stored value is not one this release knows (a ledger written by a newer release, or
    /// edited by hand): a state, status or kind column holds an unknown text.
    #[error("the ledger's {column} holds {value:?}, which is not a value this release knows")]
    BadValue {
        /// The column, as `table.column`.
        column: &'static str,
        /// The text found in it.
        value: String,
    },
}

/// The ledger's result type.
pub type Result<T> = std::result::Result<T, LedgerError>;

/// An error of the storage behind the ledger, opaque: its text and its sources are the driver's
/// own, but its type is not part of the ledger's interface.
#[derive(Debug)]
pub struct BackendError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl BackendError {
    pub(crate) fn new(error: impl std::error::Error + Send + Sync + 'static) -> BackendError {
        BackendError(Box::new(error))
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<sqlx::Error> for LedgerError {
    /// A stored value the enums don't know comes back from the driver as a column decode error
    /// carrying [`LedgerError::BadValue`]: it is handed on as that, not as a failed query.
    fn from(error: sqlx::Error) -> LedgerError {
        match error {
            sqlx::Error::ColumnDecode { index, source } => match source.downcast::<LedgerError>() {
                Ok(bad) => *bad,
                Err(source) => {
                    LedgerError::Query(BackendError::new(sqlx::Error::ColumnDecode { index, source }))
                }
            },
            error => LedgerError::Query(BackendError::new(error)),
        }
    }
}
