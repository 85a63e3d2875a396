//! Tokio's clock for `governor` rate limiters: the create gate (`limits`) and the poller's read
//! rate measure time on it, so spacing, pauses and sleeps are on one clock and a test on paused
//! tokio time (`#[tokio::test(start_paused = true)]`) controls all of them.

use governor::clock::Clock;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};
use tokio::time::Instant;

/// Nanoseconds since the clock was made, on tokio's clock.
#[derive(Debug, Clone)]
pub(crate) struct TokioClock {
    start: Instant,
}

impl TokioClock {
    /// A clock starting now.
    pub(crate) fn new() -> TokioClock {
        TokioClock {
            start: Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.start.elapsed())
    }
}

/// A direct (unkeyed) limiter on tokio's clock.
pub(crate) type TokioLimiter =
    RateLimiter<NotKeyed, InMemoryState, TokioClock, governor::middleware::NoOpMiddleware<Nanos>>;

/// A limiter at `quota` on its own `TokioClock`.
pub(crate) fn limiter(quota: Quota, clock: TokioClock) -> TokioLimiter {
    RateLimiter::direct_with_clock(quota, clock)
}

/// Waits until `limiter` lets one more through, on tokio's clock.
pub(crate) async fn until_ready(limiter: &TokioLimiter, clock: &TokioClock) {
    while let Err(not_until) = limiter.check() {
        tokio::time::sleep(wait_time(&not_until, clock)).await;
    }
}

/// How long until a refused check would pass.
pub(crate) fn wait_time(not_until: &NotUntil<Nanos>, clock: &TokioClock) -> std::time::Duration {
    not_until.wait_time_from(clock.now())
}

/// The wall clock a resumed run measures the ledger's times against (Unix milliseconds): how long
/// ago an earlier run's generation was submitted, so its stuck limit counts from its submission
/// and not from the resume.
#[derive(Debug, Clone, Copy, Default)]
pub enum WallClock {
    /// The system's clock, as the ledger records times ([`darkroom_ledger::now_ms`]).
    #[default]
    System,
    /// `at_ms` at tokio's instant `at`, then moving with tokio's clock: for a test on paused
    /// time, where minutes pass on tokio's clock and not on the system's.
    Tokio {
        /// Unix milliseconds at `at`.
        at_ms: i64,
        /// The tokio instant `at_ms` was read at.
        at: Instant,
    },
}

impl WallClock {
    /// A clock reading the system's time now and moving with tokio's clock from here.
    pub fn on_tokio_time() -> WallClock {
        WallClock::Tokio {
            at_ms: darkroom_ledger::now_ms(),
            at: Instant::now(),
        }
    }

    /// The time now, Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        match self {
            WallClock::System => darkroom_ledger::now_ms(),
            WallClock::Tokio { at_ms, at } => {
                let moved = i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX);
                at_ms.saturating_add(moved)
            }
        }
    }

    /// The tokio instant at which `limit` will have passed since `since_ms` (Unix milliseconds):
    /// now when it already has. A `since_ms` in the future counts as now (the
    /// whole `limit` is left).
    pub fn instant_after(&self, since_ms: i64, limit: std::time::Duration) -> Instant {
        let ago = self.now_ms().saturating_sub(since_ms).max(0);
        let ago = std::time::Duration::from_millis(u64::try_from(ago).unwrap_or(0));
        Instant::now() + limit.saturating_sub(ago)
    }
}
