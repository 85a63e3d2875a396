//! What a run reports as it goes: the CLI turns these into a progress bar or JSON lines.

use serde::Serialize;

use darkroom_jobs::Money;
use darkroom_ledger::Counts;

/// One thing that happened during a run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The pass starts (or resumes) with these counts.
    Started {
        job: String,
        pass: String,
        counts: Counts,
        budget: Money,
        spent: Money,
    },
    /// A task ended: done (maybe from cache), failed, blocked or skipped.
    TaskFinished {
        task: String,
        state: String,
        cost: Money,
        cached: bool,
        path: Option<String>,
        reason: Option<String>,
        attempts: u32,
    },
    /// A task will be tried again.
    Retry {
        task: String,
        attempt: u32,
        reason: String,
        delay_ms: u64,
    },
    /// The upstream said slow down.
    RateLimited { retry_after_ms: Option<u64> },
    /// Spend reached 80% of the budget.
    BudgetWarning { spent: Money, budget: Money },
    /// The account's credits can't cover the job; the run goes on until they run out.
    CreditsLow { credits: Money, needed: Money },
    /// A create's outcome was unknown and the upstream's list settled it.
    Reconciled { task: String, adopted: bool },
    /// The account was observed to charge a different price per image than the table says (once
    /// per model and run). `applied`: it is higher, so reservations and charges use it from now on
    /// and earlier charges were corrected up to it; otherwise it is lower and the table stays.
    /// `config_line` is the `[prices]` line that would make the table match.
    PriceObserved {
        model: String,
        table: Money,
        observed: Money,
        applied: bool,
        config_line: String,
    },
    /// No new creates from here on, and why.
    Stopping { reason: String },
}
