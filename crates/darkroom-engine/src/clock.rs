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
