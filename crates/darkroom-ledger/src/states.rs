//! The states the ledger stores as text, as enums on both sides of its boundary: a task's state, a
//! generation's state, a pass's status, a done task's damage, a money-log entry's kind.
//!
//! Each is written as its `as_str` text and read back through `TryFrom<&str>`: a value the enum
//! does not know (a ledger written by a newer release, or edited by hand) is
//! [`LedgerError::BadValue`] naming the column and the value, never a silent default.

use std::fmt;

use serde::Serialize;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{Sqlite, SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef};

use crate::LedgerError;

/// Defines a text-stored enum: `as_str`, `Display`, `TryFrom<&str>` (naming `$column` on an
/// unknown value) and its SQLite encoding as that text.
macro_rules! stored_enum {
    ($name:ident, $column:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text stored in the ledger (and shown in outputs).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl TryFrom<&str> for $name {
            type Error = LedgerError;

            /// Errors: [`LedgerError::BadValue`] naming the column and the text when it is not
            /// one of the values.
            fn try_from(text: &str) -> Result<$name, LedgerError> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(LedgerError::BadValue {
                        column: $column,
                        value: text.to_string(),
                    }),
                }
            }
        }

        impl sqlx::Type<Sqlite> for $name {
            fn type_info() -> SqliteTypeInfo {
                <&str as sqlx::Type<Sqlite>>::type_info()
            }

            fn compatible(ty: &SqliteTypeInfo) -> bool {
                <&str as sqlx::Type<Sqlite>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, Sqlite> for $name {
            fn decode(value: SqliteValueRef<'r>) -> Result<$name, BoxDynError> {
                let text = <&str as sqlx::Decode<Sqlite>>::decode(value)?;
                Ok($name::try_from(text)?)
            }
        }

        impl<'q> sqlx::Encode<'q, Sqlite> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut Vec<SqliteArgumentValue<'q>>,
            ) -> Result<IsNull, BoxDynError> {
                <&str as sqlx::Encode<Sqlite>>::encode(self.as_str(), buf)
            }
        }
    };
}

/// A task's place in its life: `pending → reserved → submitting → submitted → downloading → done`,
/// or one of the ends `failed`, `blocked`, `skipped`, `cancelled`. Stored in `tasks.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Waiting for a reservation.
    Pending,
    /// Holds its price against the pass's budget; no create sent yet.
    Reserved,
    /// A create is being sent (its intent is recorded).
    Submitting,
    /// The upstream accepted the create and charged it.
    Submitted,
    /// The upstream completed it; its image is being downloaded.
    Downloading,
    /// Its image is on disk.
    Done,
    /// Ended after its attempts ran out.
    Failed,
    /// Ended by a refusal no retry can change (moderation, a bad request).
    Blocked,
    /// Ended unmade for the budget or the deadline; a later run may take it up again.
    Skipped,
    /// Ended unmade by the user or because the job file no longer has it.
    Cancelled,
}

stored_enum!(TaskState, "tasks.state", {
    Pending => "pending",
    Reserved => "reserved",
    Submitting => "submitting",
    Submitted => "submitted",
    Downloading => "downloading",
    Done => "done",
    Failed => "failed",
    Blocked => "blocked",
    Skipped => "skipped",
    Cancelled => "cancelled",
});

impl TaskState {
    /// The state named by `text`, or `None` for a text that names none.
    pub fn parse(text: &str) -> Option<TaskState> {
        TaskState::try_from(text).ok()
    }

    /// Whether the task has ended (done or one of the ends).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Done
                | TaskState::Failed
                | TaskState::Blocked
                | TaskState::Skipped
                | TaskState::Cancelled
        )
    }

    /// Whether the task is between reserving and finishing: the work a resumed run picks up.
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            TaskState::Reserved | TaskState::Submitting | TaskState::Submitted | TaskState::Downloading
        )
    }
}

/// One create's place in its life, stored in `generations.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GenerationState {
    /// Recorded before the create left; its outcome is not known yet.
    Intent,
    /// The create may or may not have been accepted (timeout, reset, 5xx): reconciled before any
    /// re-send.
    Unknown,
    /// Certainly not accepted: no charge.
    NotCreated,
    /// Accepted and charged.
    Submitted,
    /// Completed upstream; its image is being downloaded.
    Completed,
    /// Failed upstream: its charge was refunded.
    Failed,
    /// The generation its task kept.
    Kept,
    /// Not kept (its task ended another way): the charge stays.
    Abandoned,
    /// Completed upstream after being abandoned, or found by an audit and not kept: charged.
    Extra,
    /// Was kept, but its image was lost on this side and the upstream no longer has it.
    Lost,
    /// A terminal answer that could not be used: the charge stays, the task goes on.
    Unusable,
}

stored_enum!(GenerationState, "generations.state", {
    Intent => "intent",
    Unknown => "unknown",
    NotCreated => "not_created",
    Submitted => "submitted",
    Completed => "completed",
    Failed => "failed",
    Kept => "kept",
    Abandoned => "abandoned",
    Extra => "extra",
    Lost => "lost",
    Unusable => "unusable",
});

/// How a pass last stood, stored in `job_passes.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PassStatus {
    /// Created (a budget was set), no run has ended yet.
    New,
    /// The last run ended with every task ended.
    Finished,
    /// The last run stopped because the budget could not pay for the next task.
    BudgetExhausted,
    /// The last run was interrupted (a signal).
    Interrupted,
    /// The last run stopped at its deadline.
    Deadline,
    /// The last run stopped because the account refused work (credit, billing).
    Refused,
    /// The last run stopped on a systemic failure.
    Failed,
}

stored_enum!(PassStatus, "job_passes.status", {
    New => "new",
    Finished => "finished",
    BudgetExhausted => "budget_exhausted",
    Interrupted => "interrupted",
    Deadline => "deadline",
    Refused => "refused",
    Failed => "failed",
});

impl PassStatus {
    /// Whether the status records the pass's run as finished (its `finished_at` is set): a run that
    /// ended its tasks, ran out of budget or was refused. An interrupted, failed or deadline-stopped
    /// run has more to do.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            PassStatus::Finished | PassStatus::BudgetExhausted | PassStatus::Refused
        )
    }
}

/// What is wrong with a done task's file, stored in `tasks.damage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Damage {
    /// No file at the recorded path.
    Missing,
    /// A file whose size or hash is not the recorded one.
    Changed,
}

stored_enum!(Damage, "tasks.damage", {
    Missing => "missing",
    Changed => "changed",
});

/// A money-log entry's kind, stored in `spend.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpendKind {
    /// The upstream took the money (an accepted create).
    Charge,
    /// The upstream gave it back (a failed generation).
    Refund,
}

stored_enum!(SpendKind, "spend.kind", {
    Charge => "charge",
    Refund => "refund",
});

/// What a quality-check flag says of a kept image, stored in `qc_flags.kind` (migration 0010).
/// Each kind's measured value and threshold have their own unit, named on the variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QcKind {
    /// Nearly one flat colour (a blank or failed render). Measured: the spread (standard
    /// deviation) of the brightness, 0 to 255; flagged at or below the threshold.
    Blank,
    /// Its shape is off the aspect ratio asked for (by less than the 1% past which an image is
    /// not kept at all). Measured: how far width ÷ height is from the ratio, in percent; flagged
    /// above the threshold.
    Dimensions,
    /// Nearly identical to another variant of the same row. Measured: the distance between the
    /// two perceptual hashes, in bits of 64; flagged at or below the threshold.
    Duplicate,
    /// A suspiciously small file. Measured: its size in bytes; flagged below the threshold.
    SmallFile,
}

stored_enum!(QcKind, "qc_flags.kind", {
    Blank => "blank",
    Dimensions => "dimensions",
    Duplicate => "duplicate",
    SmallFile => "small_file",
});
