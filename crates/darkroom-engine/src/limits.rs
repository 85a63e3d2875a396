//! The two limits every create passes: a create-rate gate and an in-flight cap.
//!
//! How the upstream counts its per-minute limit is not documented: a token bucket of N refilled N a
//! minute, N in any 60 s, or one create every 60/N s. The gate's `Pacing` says what it assumes.
//!
//! - `Pacing::Learn` (the default) starts with the burst a bucket or a window of N would allow and
//!   learns from the upstream's answers: its own token bucket (refilled 1% under the rate) starts
//!   full, and the first 429 of a burst empties it (the upstream just said it has nothing left) and
//!   shrinks its capacity to the burst the upstream showed it accepts beyond the rate since the
//!   last such 429 (so one create at a time under strict spacing). Tokens refill during the
//!   `Retry-After` pause, so a window that frees many creates at once is used at once. Only a 429
//!   that comes when the upstream accepted fewer creates than the rate allows widens the spacing.
//!   Once the capacity is 1 (strict spacing), each create also waits a spacing after the last
//!   create actually sent, as under `Pacing::Strict`.
//! - `Pacing::Strict` spaces creates evenly, 1% under the rate, each one at least a period after
//!   the last create actually sent (`CreateGate::on_sent`), never after a planned time: a create
//!   delayed on this side (a slow ledger write, a busy machine) pushes the next one back instead of
//!   letting it catch up, so an upstream that counts one create per 60/N s from the last one never
//!   sees two too close, and neither a bucket nor a window sees more than N. For accounts that must
//!   never see a 429. Every 429 widens the spacing.
//!
//! In both, a 429 to a create sent one at a time, a spacing after the last, with two or more
//! accepted since the last pause, is jitter (it arrived a hair early): it adds 1% to the spacing
//! for the rest of the run (3% at most), and widens nothing.
//! A 429 is information, not a failure: every create not yet sent pauses for the
//! `Retry-After` it carries (or a few periods when it has none), wherever it is waiting, and a
//! widened spacing recovers a little with each accepted create.
//! A run of 429s that never clears (no create accepted for `give_up_after`) ends in `GaveUp`. The
//! in-flight cap is a semaphore whose permit a task holds from its create until its generation ends.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use learned::Learned;

/// How the gate paces creates under the account's rate (`[limits] pacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pacing {
    /// Start with a burst as large as the rate and learn from each 429 what the upstream allows.
    #[default]
    Learn,
    /// Evenly spaced 1% under the rate, no burst, each create a period after the last one actually
    /// sent: no 429 under a token bucket, a sliding window or strict spacing.
    Strict,
}

/// Spaces creates under the account's rate, pauses them after a 429, and gives up when 429s
/// never clear.
#[derive(Debug)]
pub struct CreateGate {
    /// The rate's count of creates per window, when there is a rate.
    per_window: Option<u32>,
    /// The spacing between creates at the rate (1% under it).
    period: Duration,
    /// Under `Pacing::Strict` with a rate, the turn to wait for the next slot: creates take their
    /// slots one at a time, in order, rather than all waking for each.
    spacing_turn: Option<tokio::sync::Mutex<()>>,
    give_up_after: Duration,
    backoff: Mutex<Backoff>,
    /// Woken by every accepted create: a learning burst may grow.
    answered: tokio::sync::Notify,
}

#[derive(Debug)]
struct Backoff {
    paused_until: Option<Instant>,
    /// Multiplies the spacing between creates; 1.0 when all is well.
    slowdown: f64,
    next_slot: Instant,
    /// When the last create was let through or sent, whichever is later: the spacing counts from
    /// it (`Pacing::Strict`, and `Pacing::Learn` once the upstream has shown no burst).
    last_send: Option<Instant>,
    /// Extra spacing, as a fraction of the period, learned from 429s to creates sent a whole
    /// spacing after the last one: jitter between a create's send and its arrival upstream made
    /// it early. Grows by `JITTER_STEP` per such 429, at most to `MAX_JITTER_MARGIN`.
    margin: f64,
    /// Creates accepted since the last pause began (or the start).
    accepted_since_pause: u32,
    /// The 429s since the last accepted create.
    streak: Option<Streak>,
    /// `Pacing::Learn`'s bucket; `None` under `Pacing::Strict` or with no rate.
    learned: Option<Learned>,
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
/// The same under `Pacing::Learn`, where a widened spacing is what the upstream was found to
/// allow: back to normal only over about a hundred accepted creates.
const LEARNED_RECOVERY: f64 = 0.993;
/// What a 429 to a create sent a whole spacing after the last one adds to the spacing, as a
/// fraction of the period: 7.5 ms at 80 a minute.
const JITTER_STEP: f64 = 0.01;
/// The most such 429s add; past it a 429 is treated as any other.
const MAX_JITTER_MARGIN: f64 = 0.03;
/// The longest pause one 429 imposes, whatever its `Retry-After` says: a larger value (a bogus
/// header, a date far ahead) is honoured only this long; if the upstream still refuses, the next
/// 429 pauses again, and `give_up_after` ends the run.
pub const MAX_PAUSE: Duration = Duration::from_secs(120);
/// How long an unbroken run of 429s may last, with no create accepted, before the run ends.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(600);

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
        let per_window = limit.filter(|n| *n > 0);
        // 1% under the limit, so that timer lateness never adds up to a late schedule: spaced at
        // least a period apart, any window holds at most N / 1.01 + 1 creates, which is ≤ N.
        let period = per_window.map_or(Duration::from_millis(50), |rate| window.mul_f64(1.01) / rate);
        CreateGate {
            per_window,
            period,
            spacing_turn: per_window.map(|_| tokio::sync::Mutex::new(())),
            give_up_after: DEFAULT_GIVE_UP_AFTER,
            backoff: Mutex::new(Backoff {
                paused_until: None,
                slowdown: 1.0,
                next_slot: Instant::now(),
                last_send: None,
                margin: 0.0,
                accepted_since_pause: 0,
                streak: None,
                learned: None,
            }),
            answered: tokio::sync::Notify::new(),
        }
    }

    /// A gate fresh from `new` or `per_window` (which pace as `Pacing::Strict`), pacing creates as
    /// `pacing` says. Without a rate there is nothing to pace and this changes nothing.
    pub fn with_pacing(mut self, pacing: Pacing) -> CreateGate {
        if let (Pacing::Learn, Some(n)) = (pacing, self.per_window) {
            self.spacing_turn = None;
            let now = Instant::now();
            self.backoff().learned = Some(Learned {
                capacity: f64::from(n),
                tokens: f64::from(n),
                at: now,
                since: now,
                accepted: 0,
                sent: 0,
            });
        }
        self
    }

    /// How this gate paces creates.
    pub fn pacing(&self) -> Pacing {
        if self.backoff().learned.is_some() {
            Pacing::Learn
        } else {
            Pacing::Strict
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
                // Strict spacing widens its own spacing from the last send (`take_slot`).
                if b.slowdown > 1.0 && self.spacing_turn.is_none() {
                    slot = slot.max(b.next_slot);
                    b.next_slot = slot + self.period.mul_f64(b.slowdown);
                }
                (slot, b.streak.map(|s| s.since + self.give_up_after))
            };
            tokio::time::sleep_until(give_up_at.map_or(slot, |at| slot.min(at))).await;
            if self.paused_until().is_some() || give_up_at.is_some_and(|at| at <= Instant::now()) {
                continue 'wait;
            }
            loop {
                let answered = self.answered.notified();
                tokio::pin!(answered);
                answered.as_mut().enable();
                let wait = {
                    let mut b = self.backoff();
                    let now = Instant::now();
                    let spaced_until = b.last_send.map(|last| last + self.spacing(&b));
                    let wait = b
                        .learned
                        .as_mut()
                        .and_then(|l| l.take(now, self.period, spaced_until));
                    if wait.is_none() && b.learned.is_some() {
                        b.last_send = Some(b.last_send.map_or(now, |last| last.max(now)));
                    }
                    wait
                };
                let Some(wait) = wait else { break };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = &mut answered => {}
                }
                if self.paused_until().is_some() {
                    continue 'wait;
                }
            }
            if let Some(turn) = &self.spacing_turn {
                let _turn = turn.lock().await;
                while let Some(at) = self.take_slot() {
                    // A widened spacing may reach past the point of giving up: that comes first.
                    tokio::time::sleep_until(give_up_at.map_or(at, |g| at.min(g))).await;
                    if self.paused_until().is_some() || give_up_at.is_some_and(|g| g <= Instant::now()) {
                        continue 'wait;
                    }
                }
            }
            // The last check: a 429 may have arrived while the spacing let us through.
            if self.paused_until().is_none() {
                return Ok(());
            }
        }
    }

    /// `Pacing::Strict`: takes the next slot if a (widened) period has passed since the last
    /// create let through or sent; otherwise when that will be.
    fn take_slot(&self) -> Option<Instant> {
        let mut b = self.backoff();
        let now = Instant::now();
        let spacing = self.spacing(&b);
        match b.last_send {
            Some(last) if last + spacing > now => Some(last + spacing),
            _ => {
                b.last_send = Some(now);
                None
            }
        }
    }

    /// The spacing between creates sent one at a time: the period, widened by `slowdown` and by
    /// the margin learned from jitter.
    fn spacing(&self, b: &Backoff) -> Duration {
        self.period.mul_f64(b.slowdown * (1.0 + b.margin))
    }

    /// A create is leaving now (call it right before sending, after `ready`): under
    /// `Pacing::Strict` (and `Pacing::Learn` once the upstream has shown no burst) the next create
    /// is spaced from this instant, so one delayed between `ready`
    /// and its send delays the next one as much instead of letting it catch up.
    pub fn on_sent(&self) {
        let mut b = self.backoff();
        let now = Instant::now();
        b.last_send = Some(b.last_send.map_or(now, |last| last.max(now)));
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
            self.first_429_of_a_burst(&mut b, now, until);
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

    /// What the first 429 of a burst teaches. Creates sent one at a time, a spacing apart, that
    /// the upstream took at least twice since the last pause: this one reached it a hair early
    /// (jitter between send and arrival), so the spacing grows by `JITTER_STEP`, not twofold.
    /// Otherwise, learning: a 429 after the upstream accepted at least the rate is the burst's
    /// end, not a sign the rate is too high; one after fewer, or before any create was accepted
    /// since the last pause, widens the spacing. Strict pacing widens it at every other 429.
    fn first_429_of_a_burst(&self, b: &mut Backoff, now: Instant, until: Instant) {
        // What the spacing in force allowed, widened or not.
        let period = self.period.mul_f64(b.slowdown);
        let one_at_a_time = b.learned.is_none_or(|l| l.no_burst());
        let early_by_jitter =
            one_at_a_time && b.accepted_since_pause >= 2 && b.margin < MAX_JITTER_MARGIN - f64::EPSILON;
        b.accepted_since_pause = 0;
        let too_fast = b.learned.as_mut().is_none_or(|l| {
            let none_since = l.accepted == 0;
            l.refused(now, until, period) <= -1.0 || none_since
        });
        if early_by_jitter {
            b.margin = (b.margin + JITTER_STEP).min(MAX_JITTER_MARGIN);
        } else if too_fast {
            b.slowdown = (b.slowdown * 2.0).min(MAX_SLOWDOWN);
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
        b.accepted_since_pause += 1;
        if let Some(learned) = &mut b.learned {
            learned.accepted += 1;
            self.answered.notify_waiters();
        }
        if b.slowdown > 1.0 {
            let recovery = if b.learned.is_some() {
                LEARNED_RECOVERY
            } else {
                RECOVERY
            };
            b.slowdown = (b.slowdown * recovery).max(1.0);
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

mod learned;
#[cfg(test)]
mod tests;
