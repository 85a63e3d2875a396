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
        /// The job's name.
        job: String,
        /// The pass: `preview` or `final`.
        pass: String,
        /// The pass's tasks by state before anything runs.
        counts: Counts,
        /// The pass's budget.
        budget: Money,
        /// What the pass has spent so far, all runs together.
        spent: Money,
    },
    /// A task ended: done (maybe from cache), failed, blocked or skipped.
    TaskFinished {
        /// The task's key (its file stem).
        task: String,
        /// How it ended: `done`, `failed`, `blocked` or `skipped`.
        state: String,
        /// What it cost: its price when done by a create, zero from cache or when it failed.
        cost: Money,
        /// The image was copied from an earlier task with the same fingerprint.
        cached: bool,
        /// The image's path, when done.
        path: Option<String>,
        /// Why it failed, was blocked or skipped.
        reason: Option<String>,
        /// Creates sent for it in this run.
        attempts: u32,
    },
    /// A task will be tried again.
    Retry {
        /// The task's key.
        task: String,
        /// The attempt about to be made (the first create is attempt 1).
        attempt: u32,
        /// Why the last attempt failed.
        reason: String,
        /// The wait before it, in milliseconds (`RetryPolicy::create`).
        delay_ms: u64,
    },
    /// The upstream answered a create 429: every create not yet sent is paused until
    /// `paused_until` (RFC 3339, UTC; `paused_for_ms` from now). `answers` 429s have come since the
    /// last accepted create, the first `rate_limited_for_ms` ago; the run gives up at
    /// `give_up_after_ms` of that.
    RateLimited {
        /// The `Retry-After` the upstream sent, in milliseconds, when it sent one.
        retry_after_ms: Option<u64>,
        /// When creates may go again: RFC 3339, UTC, with milliseconds.
        paused_until: String,
        /// The pause from now, in milliseconds (the `Retry-After` clamped to one period..2 min).
        paused_for_ms: u64,
        /// 429s since the last accepted create, this one included.
        answers: u32,
        /// Milliseconds since the first of those 429s.
        rate_limited_for_ms: u64,
        /// Milliseconds of unbroken 429s after which the run stops as refused.
        give_up_after_ms: u64,
    },
    /// Spend reached 80% of the budget.
    BudgetWarning {
        /// What the pass has spent.
        spent: Money,
        /// The pass's budget.
        budget: Money,
    },
    /// The account's credits can't cover the job; the run goes on until they run out.
    CreditsLow {
        /// The account's credits when the run started.
        credits: Money,
        /// What the pass's pending tasks cost at the table's prices.
        needed: Money,
    },
    /// A create's outcome was unknown and the upstream's list settled it.
    Reconciled {
        /// The task's key.
        task: String,
        /// A generation matching the create was found and taken; `false`: none was made, and
        /// the task is sent again.
        adopted: bool,
    },
    /// The account was observed to charge a different price than the table says (once per model
    /// and run), per image or per megapixel (`per`) as the provider's table is. `applied`: it is
    /// higher, so reservations and charges use it from now on and earlier charges were corrected
    /// up to it; otherwise it is lower and the table stays. `config_line` is the line of the
    /// provider's price table (`[prices]`, `[replicate.prices]`, `[fal.prices]`) that would make
    /// it match.
    PriceObserved {
        /// The model, as the API names it.
        model: String,
        /// The price table's price per `per`.
        table: Money,
        /// The price per `per` the balance showed.
        observed: Money,
        /// The observed price is higher and is used from now on.
        applied: bool,
        /// What the two prices are the price of: `image`, or `megapixel` (fal).
        per: String,
        /// The `[prices]` line that would make the table match.
        config_line: String,
    },
    /// A routed pass (`routing = "cheapest"`, or failover) sends these tasks to this provider
    /// next, each reserved at its table's price.
    Routed {
        /// The provider: `luma`, `replicate` or `fal`.
        provider: String,
        /// How many tasks go there.
        tasks: u64,
        /// What they cost at that provider's prices, together.
        cost: Money,
    },
    /// A provider refused the run (its key refused, its account out of credit or over a limit,
    /// or its breaker tripped): its tasks never sent move to another provider. Creates it may
    /// have received stay with it and are settled there.
    Failover {
        /// The provider that refused.
        from: String,
        /// The provider the tasks move to.
        to: String,
        /// How many tasks move.
        tasks: u64,
        /// The refusal, in the provider's words.
        reason: String,
    },
    /// No new creates from here on, and why.
    Stopping {
        /// Why, in words for a person.
        reason: String,
    },
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
