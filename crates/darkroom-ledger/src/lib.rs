//! darkroom-ledger: the SQLite ledger. Every SQL statement of darkroom lives in this crate.
//!
//! It owns the schema (migrations in the top-level `migrations/`, embedded with `migrate!`), the budget
//! reservation (spent + reserved ≤ budget, checked in the transaction that reserves), the task state
//! machine's transitions (each one a transaction), the money log, and the queries a resumed run needs.
//! It never speaks HTTP and never touches image files: the engine tells it what happened.
//!
//! One connection does all the writing, so transactions never contend inside a process. Other
//! processes share the file safely: opening and migrating are serialised by an OS lock beside the
//! ledger, every write transaction begins as a writer (`BEGIN IMMEDIATE`) and waits up to
//! two minutes for another's, and readers (`darkroom status` while a run goes on) read through WAL.

#![warn(missing_docs, unreachable_pub, clippy::too_many_lines)]

/// Every column of `tasks` as [`TaskRow`] reads it, over the alias `t`: the one place the task
/// row's columns are listed for reading.
macro_rules! task_columns {
    () => {
        "t.id, t.job_id, t.pass, t.task_key, t.row_id, t.line, t.variant, t.variants, t.model,
        t.fingerprint, t.request_json, t.prompt, t.aspect_ratio, t.format, t.metadata_json, t.state,
        t.reason, t.price_micros, t.reserved_micros, t.cost_micros, t.attempts, t.cached, t.latency_ms,
        t.output_path, t.generation_id, t.preview_task_id, t.reference_note, t.reference_lost,
        t.content_hash, t.content_bytes, t.source_task_id, t.provider"
    };
}

mod accounts;
mod audit;
#[cfg(feature = "bench")]
mod bench_views;
mod charge_bases;
mod content;
mod error;
mod generations;
mod jobs;
mod load;
mod money;
mod open;
mod prices;
mod providers;
mod qc;
mod records;
mod reframes;
mod review;
mod routing;
mod scope;
mod sheet;
mod spending;
mod states;
mod stored_values;
mod tasks;
mod trials;
mod views;

#[cfg(test)]
mod tests;

pub use accounts::{
    AccountHolder, AccountRecord, AccountSpec, Permit, PermitWait, HOLDER_LEASE_MS, IN_FLIGHT_RETRY_MS,
    MAX_PERMIT_WAIT_MS, SLOT_HORIZON_MS,
};
pub use audit::{AuditRecord, FoundState};
pub use charge_bases::{ChargeBasis, ChargeRecord};
pub use content::{CachedImage, ImageContent, KeptImage};
pub use error::{BackendError, LedgerError, Result};
pub use load::{Loader, NewTask};
pub use money::{Charged, Reservation};
pub use open::{Ledger, TRANSACTION_TARGET};
pub use prices::{BalanceReading, ModelCharges, PriceObservation, Repriced, SizedCharges};
pub use providers::UnsettledCreate;
pub use qc::{CheckedSibling, DuplicateFlag, ImageCheck, QcCounts, QcFlag, StoredFlag};
pub use records::{
    Counts, GenerationRecord, JobRecord, PassRecord, ResultRecord, TaskRecord, TaskRow, TileRecord,
};
pub use reframes::NewReframe;
pub use review::{ModelSpend, NewFinal, SpendPoint};
pub use scope::TaskScope;
pub use sheet::TaskVersion;
pub use spending::{LimitPeriod, LimitScope, LimitUsage};
pub use states::{Damage, GenerationState, PassStatus, QcKind, SpendKind, TaskState};
pub use trials::TrialRecord;

/// The current time as Unix milliseconds.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
