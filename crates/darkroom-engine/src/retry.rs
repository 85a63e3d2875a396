//! The engine's one retry policy, in two halves: *whether* to try again after an error
//! (`classify`: retry now, after a back-off, reconcile first, or give up) and *when* (`Schedule`:
//! exponential delays from a first delay up to a cap, with optional jitter and a cap on tries).
//!
//! Every wait between two tries of the same thing is a `Schedule` from `RetryPolicy` (part of
//! `RunSettings`): a create tried again, a download tried again, the reads of a settlement window,
//! a reconciliation whose list can't be read, the poller's reads of a generation not finished yet,
//! the audit's reads of the account's list (`AUDIT_LIST`), a price probe's reads (`PROBE_POLL`) and
//! a notification's deliveries (`NOTIFY_DELIVERY`). The pause a 429 imposes on every create is the
//! create gate's (`limits`), not a schedule: the upstream said how long.

use std::time::Duration;

use darkroom_provider::ErrorClass;

/// What to do after a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again as soon as the create gate lets it go: the upstream asked us to slow down (429),
    /// and the gate holds its pause (`retry_after`, when given) for every create. Not an attempt.
    RetryNow {
        /// The upstream's `Retry-After`, if it gave one.
        retry_after: Option<Duration>,
    },
    /// Try again after the schedule's next delay: nothing reached the upstream, or what failed
    /// may pass. A new attempt.
    RetryAfterBackoff,
    /// Whether the upstream acted is unknown: search for what it made (reconcile) before anything
    /// is sent again. Sending blindly could pay twice.
    Reconcile,
    /// The same request would fail the same way. `refusal`: the account is refused (a rejected
    /// key, no credits, a usage limit), so the whole run stops rather than the one task.
    GiveUp {
        /// The refusal is the account's, not the request's.
        refusal: bool,
    },
}

/// Classifies an upstream error: see `Decision`. A 4xx that is not a 429 gives up; a 429 or a 400
/// naming a quota or billing limit is a refusal (`darkroom_provider::ProviderError::is_refusal`), never a
/// rate limit.
pub fn classify(error: &darkroom_provider::ProviderError) -> Decision {
    match error.class() {
        ErrorClass::RateLimited { retry_after } => Decision::RetryNow { retry_after },
        ErrorClass::NeverSent | ErrorClass::Transient => Decision::RetryAfterBackoff,
        ErrorClass::OutcomeUnknown => Decision::Reconcile,
        ErrorClass::Permanent { .. } => Decision::GiveUp {
            refusal: error.is_refusal(),
        },
    }
}

/// When to try again: `first`, then each delay `factor` times the last, never above `max`; with
/// `jitter`, a random share of up to the delay itself is added (so tasks that failed together
/// don't all retry together); after `max_tries` delays (when set) the schedule is spent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// The first delay.
    pub first: Duration,
    /// Each delay is the last one times this (2.0: doubling).
    pub factor: f64,
    /// The longest delay, before jitter.
    pub max: Duration,
    /// Add a random 0..100% of the delay.
    pub jitter: bool,
    /// Delays given before the schedule is spent; `None`: never spent.
    pub max_tries: Option<u32>,
}

impl Schedule {
    /// Doubling from `first` to `max`, no jitter, never spent.
    pub const fn doubling(first: Duration, max: Duration) -> Schedule {
        Schedule {
            first,
            factor: 2.0,
            max,
            jitter: false,
            max_tries: None,
        }
    }

    /// The same schedule with jitter.
    pub const fn with_jitter(mut self) -> Schedule {
        self.jitter = true;
        self
    }

    /// The same schedule, spent after `tries` delays.
    pub const fn with_max_tries(mut self, tries: u32) -> Schedule {
        self.max_tries = Some(tries);
        self
    }

    /// The same schedule growing by `factor` each time.
    pub const fn with_factor(mut self, factor: f64) -> Schedule {
        self.factor = factor;
        self
    }

    /// A fresh run of delays on this schedule.
    pub fn start(&self) -> Backoff {
        Backoff {
            schedule: *self,
            next: self.first.min(self.max),
            given: 0,
        }
    }
}

/// One run of delays on a `Schedule`: each `next_delay` is the next wait.
#[derive(Debug, Clone)]
pub struct Backoff {
    schedule: Schedule,
    next: Duration,
    given: u32,
}

impl Backoff {
    /// The next wait, or `None` once `max_tries` delays have been given.
    pub fn next_delay(&mut self) -> Option<Duration> {
        let schedule = &self.schedule;
        if schedule.max_tries.is_some_and(|max| self.given >= max) {
            return None;
        }
        self.given += 1;
        let delay = self.next;
        self.next = delay.mul_f64(schedule.factor.max(1.0)).min(schedule.max);
        Some(match schedule.jitter {
            true => delay + delay.mul_f64(rand::random::<f64>()),
            false => delay,
        })
    }

    /// Delays given so far.
    pub fn tries(&self) -> u32 {
        self.given
    }
}

/// The waits of a run, resolved with its settings. `RunSettings::new` gives the defaults below.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Between a failed create (never sent, transient, or unknown and not found in its window) and
    /// the next attempt: 0.5 s doubling to 30 s, jittered. `RunSettings::max_attempts` caps the
    /// attempts.
    pub create: Schedule,
    /// Between two tries of a paid image's download: 0.6 s doubling to 30 s.
    pub download: Schedule,
    /// How long a paid image's download is tried before the task is left to the next run.
    pub download_patience: Duration,
    /// A download that can't reach its URL at all asks the upstream for a fresh URL every this
    /// many tries (a URL refused outright asks at once).
    pub fresh_url_every: u32,
    /// Between two reads of a reconciliation whose list can't be read: 0.5 s doubling to 30 s,
    /// jittered, spent after 7 waits, so the list is read at most 8 times in a row without an
    /// answer; then the task is left `unknown` for the next run (nothing is re-sent blindly).
    pub unreadable_list: Schedule,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        let create = Schedule::doubling(Duration::from_millis(500), Duration::from_secs(30)).with_jitter();
        RetryPolicy {
            create,
            download: Schedule::doubling(Duration::from_millis(600), Duration::from_secs(30)),
            download_patience: Duration::from_secs(600),
            fresh_url_every: 4,
            unreadable_list: create.with_max_tries(7),
        }
    }
}

/// Between two reads of one page of the account's list in the end-of-run audit: 0.5 s, 1 s, 2 s;
/// a page read 4 times without an answer ends the audit incomplete (the next run audits again).
pub const AUDIT_LIST: Schedule =
    Schedule::doubling(Duration::from_millis(500), Duration::from_secs(2)).with_max_tries(3);

/// Between two reads of a probe's generation (`darkroom prices --check`): every 250 ms.
pub const PROBE_POLL: Schedule = Schedule::doubling(Duration::from_millis(250), Duration::from_millis(250));

/// Between two tries of a notification's delivery to one URL: 1 s, 2 s, 4 s, 8 s, 16 s, then the
/// delivery is given up (six tries over about 31 s, in the background; see `notify`).
pub const NOTIFY_DELIVERY: Schedule =
    Schedule::doubling(Duration::from_secs(1), Duration::from_secs(16)).with_max_tries(5);

/// The reads of a settlement window of `window`: a sixteenth of it first, doubling to a quarter
/// (15 s to 60 s of the default 4 minutes), so a window is searched about six times.
pub fn settle_schedule(window: Duration) -> Schedule {
    Schedule::doubling(
        (window / 16).max(Duration::from_millis(10)),
        (window / 4).max(Duration::from_millis(10)),
    )
}

/// The poller's reads of one generation after the first: a quarter of the model's usual latency
/// (`first_after`), at least `min`, growing by half each read up to `max`.
pub fn poll_schedule(first_after: Duration, min: Duration, max: Duration) -> Schedule {
    Schedule::doubling((first_after / 4).clamp(min, max), max).with_factor(1.5)
}

#[cfg(test)]
mod tests;
