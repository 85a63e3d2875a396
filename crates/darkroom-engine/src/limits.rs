//! The two limits every create passes: a create-rate gate and an in-flight cap.
//!
//! The gate spaces creates evenly (a `governor` limiter with a burst of one), 1% under the account's
//! rate, so the upstream sees no more than its limit in any 60-second window whether it counts with a
//! token bucket or a sliding window. A 429 is information, not a failure: every create not yet sent
//! pauses for the `Retry-After` it carries (or a few periods when it has none), wherever it is
//! waiting, and creates are spaced wider for a while, recovering a little with each accepted create.
//! A run of 429s that never clears (no create accepted for `give_up_after`) ends in `GaveUp`. The
//! in-flight cap is a semaphore whose permit a task holds from its create until its generation ends.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::Quota;
use tokio::time::Instant;

use crate::clock::{TokioClock, TokioLimiter};

/// Spaces creates under the account's rate, pauses them after a 429, and gives up when 429s
/// never clear.
#[derive(Debug)]
pub struct CreateGate {
    limiter: Option<TokioLimiter>,
    clock: TokioClock,
    period: Duration,
    give_up_after: Duration,
    backoff: Mutex<Backoff>,
}

#[derive(Debug)]
struct Backoff {
    paused_until: Option<Instant>,
    /// Multiplies the spacing between creates; 1.0 when all is well.
    slowdown: f64,
    next_slot: Instant,
    /// The 429s since the last accepted create.
    streak: Option<Streak>,
}

/// An unbroken run of 429s: since when, how many, and the last `Retry-After`.
#[derive(Debug, Clone, Copy)]
struct Streak {
    since: Instant,
    answers: u32,
    last_retry_after: Option<Duration>,
}

/// The most the spacing widens after repeated 429s.
const MAX_SLOWDOWN: f64 = 8.0;
/// Each accepted create brings the spacing this much closer to normal.
const RECOVERY: f64 = 0.9;
/// The longest pause one 429 imposes, whatever its `Retry-After` says: a larger value (a bogus
/// header, a date far ahead) is honoured only this long; if the upstream still refuses, the next
/// 429 pauses again, and `give_up_after` ends the run.
pub const MAX_PAUSE: Duration = Duration::from_secs(120);
/// How long an unbroken run of 429s may last, with no create accepted, before the run ends.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(600);

/// The burst a gate at `per_minute` may allow without exceeding the limit in any 60 s window.
fn burst_for(per_minute: u32) -> NonZeroU32 {
    NonZeroU32::new(per_minute.saturating_mul(99) / 10_000).unwrap_or(NonZeroU32::MIN)
}

/// What a 429 did to the gate: creates are paused until `until`, after `answers` 429s in a row
/// over `for_how_long` with no create accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    /// No create is sent before this instant.
    pub until: Instant,
    /// 429s since the last accepted create (this one included).
    pub answers: u32,
    /// Since the first of those 429s.
    pub for_how_long: Duration,
    /// How long such a run may last before the gate gives up.
    pub give_up_after: Duration,
}

/// 429s never cleared: no create was accepted for `give_up_after`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the upstream answered 429 to every create for {} with none accepted ({answers} answers, the last {}); giving up after [limits] give_up_after = {}",
    human(*waited),
    last_retry_after.map_or_else(|| "without a Retry-After".to_string(), |d| format!("with Retry-After {}", human(d))),
    human(*give_up_after)
)]
pub struct GaveUp {
    /// From the first 429 of the run until giving up.
    pub waited: Duration,
    /// 429s in the run.
    pub answers: u32,
    /// The last `Retry-After` heard, if any.
    pub last_retry_after: Option<Duration>,
    /// The limit that was reached (`RunSettings::give_up_after`).
    pub give_up_after: Duration,
}

/// `1h2m3s`, `10m`, `1.5s`: a duration as a person reads it.
pub fn human(d: Duration) -> String {
    let total = d.as_secs();
    if total < 60 {
        let millis = d.subsec_millis();
        return if millis == 0 {
            format!("{total}s")
        } else {
            format!("{}s", (d.as_secs_f64() * 10.0).round() / 10.0)
        };
    }
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    let mut text = String::new();
    if h > 0 {
        text.push_str(&format!("{h}h"));
    }
    if m > 0 {
        text.push_str(&format!("{m}m"));
    }
    if s > 0 {
        text.push_str(&format!("{s}s"));
    }
    text
}

impl CreateGate {
    /// A gate at `per_minute` creates a minute, or only the 429 back-off when `None`.
    pub fn new(per_minute: Option<u32>) -> CreateGate {
        CreateGate::per_window(per_minute, Duration::from_secs(60))
    }

    /// A gate at `limit` creates per `window` (a minute for a real account; shorter against a
    /// time-scaled simulator), giving up after `DEFAULT_GIVE_UP_AFTER` of unbroken 429s.
    pub fn per_window(limit: Option<u32>, window: Duration) -> CreateGate {
        let clock = TokioClock::new();
        let (limiter, period) = match limit.and_then(NonZeroU32::new) {
            Some(rate) => {
                // 1% under the limit, so that timer lateness never adds up to a late schedule, a
                // small burst is allowed where the 1% margin absorbs it: in any window at most
                // N / 1.01 + burst creates, which stays ≤ N while burst ≤ 0.0099 N. At 80 a minute
                // that is no burst at all; at 3,000 it is 29.
                let period = window.mul_f64(1.01) / rate.get();
                let quota = Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN));
                (
                    Some(crate::clock::limiter(
                        quota.allow_burst(burst_for(rate.get())),
                        clock.clone(),
                    )),
                    period,
                )
            }
            None => (None, Duration::from_millis(50)),
        };
        CreateGate {
            limiter,
            clock,
            period,
            give_up_after: DEFAULT_GIVE_UP_AFTER,
            backoff: Mutex::new(Backoff {
                paused_until: None,
                slowdown: 1.0,
                next_slot: Instant::now(),
                streak: None,
            }),
        }
    }

    /// The same gate, giving up after `give_up_after` of unbroken 429s instead.
    pub fn with_give_up_after(mut self, give_up_after: Duration) -> CreateGate {
        self.give_up_after = give_up_after;
        self
    }

    fn backoff(&self) -> std::sync::MutexGuard<'_, Backoff> {
        self.backoff.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a create may be sent: after any pause, at the (widened) spacing, under the rate.
    /// A pause that begins while this waits (a 429 to another create) holds it too, at whichever
    /// point it is waiting. Errors with `GaveUp` once 429s have gone on for `give_up_after` with no
    /// create accepted. A caller should still check `paused_until` right before it sends.
    pub async fn ready(&self) -> Result<(), GaveUp> {
        'wait: loop {
            // A pause after a 429, then the widened spacing while slowed down.
            let (slot, give_up_at) = {
                let mut b = self.backoff();
                let now = Instant::now();
                if let Some(gave_up) = self.gave_up(&b, now) {
                    return Err(gave_up);
                }
                let mut slot = now.max(b.paused_until.unwrap_or(now));
                if b.slowdown > 1.0 {
                    slot = slot.max(b.next_slot);
                    b.next_slot = slot + self.period.mul_f64(b.slowdown);
                }
                (slot, b.streak.map(|s| s.since + self.give_up_after))
            };
            tokio::time::sleep_until(give_up_at.map_or(slot, |at| slot.min(at))).await;
            if self.paused_until().is_some() || give_up_at.is_some_and(|at| at <= Instant::now()) {
                continue 'wait;
            }
            if let Some(limiter) = &self.limiter {
                loop {
                    match limiter.check() {
                        Ok(()) => break,
                        Err(not_until) => {
                            tokio::time::sleep(crate::clock::wait_time(&not_until, &self.clock)).await;
                            if self.paused_until().is_some() {
                                continue 'wait;
                            }
                        }
                    }
                }
            }
            // The last check: a 429 may have arrived while the limiter let us through.
            if self.paused_until().is_none() {
                return Ok(());
            }
        }
    }

    fn gave_up(&self, b: &Backoff, now: Instant) -> Option<GaveUp> {
        let streak = b.streak?;
        let waited = now.saturating_duration_since(streak.since);
        (waited >= self.give_up_after).then_some(GaveUp {
            waited,
            answers: streak.answers,
            last_retry_after: streak.last_retry_after,
            give_up_after: self.give_up_after,
        })
    }

    /// When creates are paused now, until when; `None` when a create may go.
    pub fn paused_until(&self) -> Option<Instant> {
        let now = Instant::now();
        self.backoff().paused_until.filter(|until| *until > now)
    }

    /// The upstream answered 429: pause every create not yet sent and widen the spacing.
    ///
    /// The pause is `retry_after` (a few periods when absent), at least one period (a `Retry-After`
    /// of zero or a date in the past still pauses for one create's spacing) and at most
    /// `MAX_PAUSE`. A pause already running is only ever extended, never shortened. Several creates
    /// in flight at once often hear the same 429: only the first of a burst widens the spacing.
    pub fn on_rate_limited(&self, retry_after: Option<Duration>) -> Pause {
        let mut b = self.backoff();
        let now = Instant::now();
        let pause = retry_after
            .unwrap_or(self.period * 4)
            .clamp(self.period, MAX_PAUSE);
        let until = now + pause;
        let already_paused = b.paused_until.is_some_and(|p| p > now);
        let until = b.paused_until.map_or(until, |p| p.max(until));
        b.paused_until = Some(until);
        if !already_paused {
            b.slowdown = (b.slowdown * 2.0).min(MAX_SLOWDOWN);
        }
        b.next_slot = b.next_slot.max(until);
        let streak = b.streak.get_or_insert(Streak {
            since: now,
            answers: 0,
            last_retry_after: None,
        });
        streak.answers += 1;
        streak.last_retry_after = retry_after;
        Pause {
            until,
            answers: streak.answers,
            for_how_long: now.saturating_duration_since(streak.since),
            give_up_after: self.give_up_after,
        }
    }

    /// Whether 429s have gone on for `give_up_after` with no create accepted, and how.
    pub fn given_up(&self) -> Option<GaveUp> {
        self.gave_up(&self.backoff(), Instant::now())
    }

    /// A create was accepted: the run of 429s is broken and the spacing recovers a step.
    pub fn on_accepted(&self) {
        let mut b = self.backoff();
        b.streak = None;
        if b.slowdown > 1.0 {
            b.slowdown = (b.slowdown * RECOVERY).max(1.0);
            if b.slowdown < 1.01 {
                b.slowdown = 1.0;
            }
        }
    }

    /// The current spacing factor (1.0 when not slowed down).
    pub fn slowdown(&self) -> f64 {
        self.backoff().slowdown
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

    #[tokio::test(start_paused = true)]
    async fn creates_beyond_the_burst_are_spaced_at_the_rate() {
        let gate = CreateGate::new(Some(6000)); // one every 10.1 ms, a burst of 59
        let start = Instant::now();
        for _ in 0..69 {
            gate.ready().await.unwrap();
        }
        // The 69th create can't go before (69 - 59) periods have passed.
        assert!(
            start.elapsed() >= Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
    }

    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// `waiters` creates waiting on one gate at 80 a minute; after `first_429_after` of them went
    /// out, the upstream answers one 429 with `retry_after`. Returns the instants creates went out
    /// and when the pause ended.
    async fn creates_around_one_429(waiters: u32, retry_after: Duration) -> (Vec<Instant>, Instant) {
        let gate = Arc::new(CreateGate::new(Some(80)));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let paused = Arc::new(AtomicU32::new(0));
        let pause_end = Arc::new(Mutex::new(None));
        let mut handles = Vec::new();
        for _ in 0..waiters {
            let (gate, sent, paused, pause_end) =
                (gate.clone(), sent.clone(), paused.clone(), pause_end.clone());
            handles.push(tokio::spawn(async move {
                loop {
                    gate.ready().await.unwrap();
                    let n = {
                        let mut sent = sent.lock().unwrap();
                        sent.push(Instant::now());
                        sent.len()
                    };
                    // The third create is answered 429; it and every other create go again.
                    if n == 3 && paused.fetch_add(1, Ordering::SeqCst) == 0 {
                        let pause = gate.on_rate_limited(Some(retry_after));
                        *pause_end.lock().unwrap() = Some(pause.until);
                        continue;
                    }
                    gate.on_accepted();
                    break;
                }
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
        let sent = sent.lock().unwrap().clone();
        let end = pause_end.lock().unwrap().unwrap();
        (sent, end)
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_pause_holds_every_create_already_waiting_on_the_gate() {
        let start = Instant::now();
        let (sent, end) = creates_around_one_429(20, Duration::from_secs(10)).await;
        assert_eq!(sent.len(), 21, "20 creates and the one answered 429 sent again");
        let inside: Vec<_> = sent[3..].iter().filter(|at| **at < end).collect();
        assert!(inside.is_empty(), "creates sent inside the pause: {inside:?}");
        assert!(end >= sent[2] + Duration::from_secs(10));
        // Before the 429, creates went out at the rate: 3 in the first 1.6 s.
        assert!(sent[2] - start < Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_429_extends_a_pause_and_never_shortens_it() {
        let gate = CreateGate::new(Some(80));
        let first = gate.on_rate_limited(Some(Duration::from_secs(10)));
        let shorter = gate.on_rate_limited(Some(Duration::from_secs(2)));
        assert_eq!(shorter.until, first.until);
        tokio::time::advance(Duration::from_secs(1)).await;
        let longer = gate.on_rate_limited(Some(Duration::from_secs(30)));
        assert!(longer.until > first.until);
        assert_eq!(longer.answers, 3);
        assert_eq!(longer.for_how_long, Duration::from_secs(1));
        let start = Instant::now();
        gate.ready().await.unwrap();
        assert!(Instant::now() >= longer.until, "{:?}", Instant::now() - start);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_of_zero_or_in_the_past_pauses_one_period_and_an_absurd_one_at_most_two_minutes() {
        let gate = CreateGate::new(Some(80));
        let period = Duration::from_secs(60).mul_f64(1.01) / 80;
        let now = Instant::now();
        assert_eq!(gate.on_rate_limited(Some(Duration::ZERO)).until, now + period);
        let gate = CreateGate::new(Some(80));
        assert_eq!(gate.on_rate_limited(Some(Duration::MAX)).until, now + MAX_PAUSE);
        let gate = CreateGate::new(Some(80));
        assert_eq!(gate.on_rate_limited(None).until, now + period * 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_create_past_the_gate_sees_a_pause_that_began_after_it_got_through() {
        let gate = CreateGate::new(Some(80));
        gate.ready().await.unwrap();
        assert_eq!(gate.paused_until(), None);
        let pause = gate.on_rate_limited(Some(Duration::from_secs(10)));
        assert_eq!(gate.paused_until(), Some(pause.until));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(gate.paused_until(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn unbroken_429s_give_up_after_the_limit_and_an_accepted_create_starts_the_count_again() {
        let gate = CreateGate::new(Some(80)).with_give_up_after(Duration::from_secs(600));
        let start = Instant::now();
        gate.on_rate_limited(Some(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(300)).await;
        gate.on_accepted();
        // The run of 429s is broken: the count starts again at the next one.
        let mut last = Ok(());
        while last.is_ok() {
            gate.on_rate_limited(Some(Duration::from_secs(1)));
            last = gate.ready().await;
        }
        let gave_up = last.unwrap_err();
        assert_eq!(Instant::now() - start, Duration::from_secs(900));
        assert_eq!(gave_up.waited, Duration::from_secs(600));
        assert_eq!(gave_up.last_retry_after, Some(Duration::from_secs(1)));
        assert!(gave_up.answers > 50, "{}", gave_up.answers);
        let text = gave_up.to_string();
        assert!(text.contains("for 10m"), "{text}");
        assert!(text.contains("with Retry-After 1s"), "{text}");
        assert!(text.contains("give_up_after = 10m"), "{text}");
        assert_eq!(gate.given_up(), Some(gave_up));
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human(Duration::from_secs(600)), "10m");
        assert_eq!(human(Duration::from_secs(3723)), "1h2m3s");
        assert_eq!(human(Duration::from_millis(750)), "0.8s");
        assert_eq!(human(Duration::from_secs(1)), "1s");
    }
}
