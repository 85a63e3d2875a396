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
    /// The upstream answered a create 429: every create not yet sent is paused until
    /// `paused_until` (RFC 3339, UTC; `paused_for_ms` from now). `answers` 429s have come since the
    /// last accepted create, the first `rate_limited_for_ms` ago; the run gives up at
    /// `give_up_after_ms` of that.
    RateLimited {
        /// The `Retry-After` the upstream sent, in milliseconds, when it sent one.
        retry_after_ms: Option<u64>,
        paused_until: String,
        paused_for_ms: u64,
        answers: u32,
        rate_limited_for_ms: u64,
        give_up_after_ms: u64,
    },
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

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Event {
    /// The event for a 429 that paused creates as `pause` says.
    pub(crate) fn rate_limited(
        retry_after: Option<std::time::Duration>,
        pause: &crate::limits::Pause,
    ) -> Event {
        let paused_for = pause.until.saturating_duration_since(tokio::time::Instant::now());
        let now = chrono::Utc::now();
        let paused_until = chrono::Duration::from_std(paused_for)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(now);
        Event::RateLimited {
            retry_after_ms: retry_after.map(millis),
            paused_until: paused_until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            paused_for_ms: millis(paused_for),
            answers: pause.answers,
            rate_limited_for_ms: millis(pause.for_how_long),
            give_up_after_ms: millis(pause.give_up_after),
        }
    }
}
