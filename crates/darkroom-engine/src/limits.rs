//! The two limits every create passes: a create-rate gate and an in-flight cap.
//!
//! The gate spaces creates evenly (a `governor` limiter with a burst of one), 1% under the account's
//! rate, so the upstream sees no more than its limit in any 60-second window whether it counts with a
//! token bucket or a sliding window. A 429 is information, not a failure: every create pauses for the
//! `Retry-After` it carries (or a few periods when it has none) and creates are spaced wider for a
//! while, recovering a little with each accepted create. The in-flight cap is a semaphore whose permit a
//! task holds from its create until its generation ends.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

/// Spaces creates under the account's rate, and slows down after a 429.
#[derive(Debug)]
pub struct CreateGate {
    limiter: Option<DefaultDirectRateLimiter>,
    clock: DefaultClock,
    period: Duration,
    backoff: Mutex<Backoff>,
}

#[derive(Debug)]
struct Backoff {
    paused_until: Option<Instant>,
    /// Multiplies the spacing between creates; 1.0 when all is well.
    slowdown: f64,
    next_slot: Instant,
}

/// The most the spacing widens after repeated 429s.
const MAX_SLOWDOWN: f64 = 8.0;
/// Each accepted create brings the spacing this much closer to normal.
const RECOVERY: f64 = 0.9;

/// The burst a gate at `per_minute` may allow without exceeding the limit in any 60 s window.
fn burst_for(per_minute: u32) -> NonZeroU32 {
    NonZeroU32::new(per_minute.saturating_mul(99) / 10_000).unwrap_or(NonZeroU32::MIN)
}

impl CreateGate {
    /// A gate at `per_minute` creates a minute, or only the 429 back-off when `None`.
    pub fn new(per_minute: Option<u32>) -> CreateGate {
        CreateGate::per_window(per_minute, Duration::from_secs(60))
    }

    /// A gate at `limit` creates per `window` (a minute for a real account; shorter against a
    /// time-scaled simulator).
    pub fn per_window(limit: Option<u32>, window: Duration) -> CreateGate {
        let (limiter, period) = match limit.and_then(NonZeroU32::new) {
            Some(rate) => {
                // 1% under the limit, so that timer lateness never adds up to a late schedule, a
                // small burst is allowed where the 1% margin absorbs it: in any window at most
                // N / 1.01 + burst creates, which stays ≤ N while burst ≤ 0.0099 N. At 80 a minute
                // that is no burst at all; at 3,000 it is 29.
                let period = window.mul_f64(1.01) / rate.get();
                let quota = Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN));
                (
                    Some(RateLimiter::direct(quota.allow_burst(burst_for(rate.get())))),
                    period,
                )
            }
            None => (None, Duration::from_millis(50)),
        };
        CreateGate {
            limiter,
            clock: DefaultClock::default(),
            period,
            backoff: Mutex::new(Backoff {
                paused_until: None,
                slowdown: 1.0,
                next_slot: Instant::now(),
            }),
        }
    }

    /// Waits until a create may be sent.
    pub async fn ready(&self) {
        // A pause after a 429, then the widened spacing while slowed down.
        let slot = {
            let mut b = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let mut slot = now.max(b.paused_until.unwrap_or(now));
            if b.slowdown > 1.0 {
                slot = slot.max(b.next_slot);
                b.next_slot = slot + self.period.mul_f64(b.slowdown);
            }
            slot
        };
        tokio::time::sleep_until(slot).await;
        if let Some(limiter) = &self.limiter {
            loop {
                match limiter.check() {
                    Ok(()) => break,
                    Err(not_until) => tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await,
                }
            }
        }
    }

    /// The upstream answered 429: pause every create and widen the spacing.
    /// Several creates in flight at once often hear the same 429: only the first of a burst widens
    /// the spacing; the others, sent before the pause began, only extend it.
    pub fn on_rate_limited(&self, retry_after: Option<Duration>) {
        let mut b = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let pause = retry_after
            .unwrap_or(self.period * 4)
            .min(Duration::from_secs(120));
        let until = now + pause;
        let already_paused = b.paused_until.is_some_and(|p| p > now);
        b.paused_until = Some(b.paused_until.map_or(until, |p| p.max(until)));
        if !already_paused {
            b.slowdown = (b.slowdown * 2.0).min(MAX_SLOWDOWN);
        }
        b.next_slot = b.next_slot.max(until);
    }

    /// A create was accepted: the spacing recovers a step.
    pub fn on_accepted(&self) {
        let mut b = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        if b.slowdown > 1.0 {
            b.slowdown = (b.slowdown * RECOVERY).max(1.0);
            if b.slowdown < 1.01 {
                b.slowdown = 1.0;
            }
        }
    }

    /// The current spacing factor (1.0 when not slowed down).
    pub fn slowdown(&self) -> f64 {
        self.backoff.lock().unwrap_or_else(|e| e.into_inner()).slowdown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_only_where_the_margin_absorbs_it() {
        assert_eq!(burst_for(80).get(), 1);
        assert_eq!(burst_for(200).get(), 1);
        assert_eq!(burst_for(3000).get(), 29);
        for n in [80u32, 101, 1000, 3000, 100_000] {
            // At most floor(60 s / period) spaced creates plus the burst fit in any 60 s window.
            assert!(
                (f64::from(n) / 1.01).floor() + f64::from(burst_for(n).get()) <= f64::from(n),
                "{n}"
            );
        }
    }

    #[tokio::test]
    async fn creates_beyond_the_burst_are_spaced_at_the_rate() {
        let gate = CreateGate::new(Some(6000)); // one every 10.1 ms, a burst of 59
        let start = std::time::Instant::now();
        for _ in 0..69 {
            gate.ready().await;
        }
        // The 69th create can't go before (69 - 59) periods have passed.
        assert!(
            start.elapsed() >= Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
    }
}
