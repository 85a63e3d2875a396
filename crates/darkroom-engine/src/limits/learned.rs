//! What `Pacing::Learn` knows of the upstream: a token bucket whose capacity is the burst the
//! upstream has shown it allows, refilled one token a period.

use std::time::Duration;

use tokio::time::Instant;

/// What `Pacing::Learn` knows of the upstream: a token bucket refilled one token a period.
#[derive(Debug, Clone, Copy)]
pub(super) struct Learned {
    /// The burst the upstream is believed to allow, in creates (at least 1).
    pub(super) capacity: f64,
    /// Creates that may go at once now.
    pub(super) tokens: f64,
    /// When `tokens` was last brought up to date.
    pub(super) at: Instant,
    /// The end of the last pause (or the gate's start).
    pub(super) since: Instant,
    /// Creates accepted since `since`.
    pub(super) accepted: u32,
    /// Creates let through since `since`.
    pub(super) sent: u32,
}

impl Learned {
    /// Takes a token if one is there and the burst has room; otherwise how long until the rate
    /// alone allows one (an accepted create may allow one sooner).
    ///
    /// A burst grows as answers confirm it (slow start): since `since`, at most one create, two
    /// more for each accepted one, and whatever the rate alone allows, so an upstream that allows
    /// no burst refuses a couple of creates rather than every one on its way at once.
    ///
    /// Once the upstream has shown it allows no burst (capacity 1: one create per interval from
    /// the last one it accepted), a create also waits until `spaced_until` (a spacing after the
    /// last create actually sent), not only for its token: a token counts from when it was taken,
    /// and a create held up between the gate and its send would otherwise let the next one reach
    /// the upstream early.
    pub(super) fn take(
        &mut self,
        now: Instant,
        period: Duration,
        spaced_until: Option<Instant>,
    ) -> Option<Duration> {
        let periods = |d: Duration| d.as_secs_f64() / period.as_secs_f64();
        self.tokens = (self.tokens + periods(now.saturating_duration_since(self.at))).min(self.capacity);
        self.at = now;
        let room = 1.0 + 2.0 * f64::from(self.accepted) + periods(now.saturating_duration_since(self.since))
            - f64::from(self.sent);
        let spacing = spaced_until
            .filter(|_| self.no_burst())
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(now));
        if self.tokens >= 1.0 && room >= 1.0 && spacing.is_zero() {
            self.tokens -= 1.0;
            self.sent += 1;
            return None;
        }
        let short = (1.0 - self.tokens).max(1.0 - room).max(0.0);
        // At least a millisecond (tokio's timer step), so a token a hair short still comes.
        Some(period.mul_f64(short).max(spacing).max(Duration::from_millis(1)))
    }

    /// Whether the upstream has shown it allows no burst at all: creates go one at a time, each a
    /// spacing after the last one sent.
    pub(super) fn no_burst(&self) -> bool {
        self.capacity < 2.0
    }

    /// The first 429 of a burst, pausing creates until `resume`: the upstream has nothing left
    /// now, and it accepted `shown` creates beyond what the rate allows since the end of the last
    /// pause (or the start). Counting starts again when this pause ends. Returns `shown`.
    pub(super) fn refused(&mut self, now: Instant, resume: Instant, period: Duration) -> f64 {
        let sustained = now.saturating_duration_since(self.since).as_secs_f64() / period.as_secs_f64();
        let shown = f64::from(self.accepted) - sustained;
        self.capacity = shown.floor().clamp(1.0, self.capacity);
        self.tokens = 0.0;
        self.at = now;
        self.since = resume;
        self.accepted = 0;
        self.sent = 0;
        shown
    }
}
