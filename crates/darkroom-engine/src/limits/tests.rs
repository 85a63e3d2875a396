//! The create gate's unit tests, on paused tokio time.

use super::*;

#[tokio::test(start_paused = true)]
async fn strict_creates_are_spaced_a_period_apart_with_no_burst() {
    let gate = CreateGate::new(Some(6000)); // one every 10.1 ms
    let start = Instant::now();
    for _ in 0..69 {
        gate.ready().await.unwrap();
    }
    // The 69th create can't go before 68 periods have passed: no burst at all.
    assert!(
        start.elapsed() >= Duration::from_secs(60).mul_f64(1.01) / 6000 * 68,
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn strict_spacing_counts_from_the_last_create_actually_sent_not_from_its_planned_time() {
    // 80 a minute: one every 757.5 ms.
    let gate = Arc::new(CreateGate::new(Some(80)));
    let period = Duration::from_secs(60).mul_f64(1.01) / 80;
    let start = Instant::now();
    gate.ready().await.unwrap();
    gate.on_sent();
    // The second create is let through on time, then held up on this side for 600 ms (a slow
    // ledger write, a busy machine) before it leaves.
    gate.ready().await.unwrap();
    let second_planned = start.elapsed();
    assert!(second_planned >= period, "{second_planned:?}");
    // The third is already waiting meanwhile.
    let third = {
        let gate = gate.clone();
        tokio::spawn(async move {
            gate.ready().await.unwrap();
            Instant::now()
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    gate.on_sent();
    let second_sent = Instant::now();
    // It goes a whole period after the second left, not a period after the second's slot
    // (which would put them 157.5 ms apart: a 429 from an upstream counting strict spacing).
    let third = third.await.unwrap();
    assert!(
        third >= second_sent + period,
        "{:?} after the second left",
        third - second_sent
    );
    assert!(
        third <= second_sent + period + Duration::from_millis(2),
        "{:?}",
        third - second_sent
    );
}

#[tokio::test(start_paused = true)]
async fn strict_spacing_hands_slots_to_waiting_creates_one_a_period_from_each_send() {
    let gate = Arc::new(CreateGate::new(Some(80)));
    let period = Duration::from_secs(60).mul_f64(1.01) / 80;
    let sent = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..8u64 {
        let (gate, sent) = (gate.clone(), sent.clone());
        waiters.push(tokio::spawn(async move {
            gate.ready().await.unwrap();
            // Each create takes a different time between its slot and its send.
            tokio::time::sleep(Duration::from_millis(37 * (i % 3))).await;
            gate.on_sent();
            sent.lock().unwrap().push(Instant::now());
        }));
    }
    for waiter in waiters {
        waiter.await.unwrap();
    }
    let mut sent = sent.lock().unwrap().clone();
    sent.sort();
    assert_eq!(sent.len(), 8);
    for pair in sent.windows(2) {
        assert!(pair[1] - pair[0] >= period, "{:?} apart", pair[1] - pair[0]);
    }
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
        let (gate, sent, paused, pause_end) = (gate.clone(), sent.clone(), paused.clone(), pause_end.clone());
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

/// How a simulated upstream counts its limit of `n` creates a minute.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Semantics {
    Bucket,
    Sliding,
    Spacing,
}

/// An upstream that counts creates as `Semantics` says and answers a refusal with a whole-second
/// `Retry-After`, as Luma's HTTP header does.
struct Upstream {
    semantics: Semantics,
    n: u32,
    accepted: Vec<Instant>,
    tokens: (f64, Instant),
    refused: u32,
    /// When each refusal was answered, from the start.
    refusals: Vec<Instant>,
}

impl Upstream {
    fn new(semantics: Semantics, n: u32) -> Upstream {
        Upstream {
            semantics,
            n,
            accepted: Vec::new(),
            tokens: (f64::from(n), Instant::now()),
            refused: 0,
            refusals: Vec::new(),
        }
    }

    /// A create arriving now: accepted, or refused with how long to wait.
    fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        let minute = Duration::from_secs(60);
        let n = f64::from(self.n);
        let wait = match self.semantics {
            Semantics::Bucket => {
                let (tokens, at) = self.tokens;
                let tokens = (tokens + (now - at).as_secs_f64() * n / 60.0).min(n);
                self.tokens = (tokens, now);
                (tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - tokens) * 60.0 / n))
            }
            Semantics::Sliding => {
                let inside: Vec<_> = self.accepted.iter().filter(|at| now - **at < minute).collect();
                (inside.len() >= self.n as usize).then(|| *inside[0] + minute - now)
            }
            Semantics::Spacing => self
                .accepted
                .last()
                .map(|last| *last + minute / self.n)
                .filter(|next| *next > now)
                .map(|next| next - now),
        };
        match wait {
            Some(wait) => {
                self.refused += 1;
                self.refusals.push(now);
                Err(Duration::from_secs_f64(wait.as_secs_f64().ceil().max(1.0)))
            }
            None => {
                if self.semantics == Semantics::Bucket {
                    self.tokens.0 -= 1.0;
                }
                self.accepted.push(now);
                Ok(())
            }
        }
    }
}

/// `creates` creates through a gate at 80 a minute paced as `pacing`, `concurrent` at once, each
/// taking 100 ms to reach the upstream and 100 ms for its answer to come back. Returns when the
/// last create was accepted (from the start) and the upstream's refusals.
async fn run_against(semantics: Semantics, pacing: Pacing, creates: u32, concurrent: u32) -> (Duration, u32) {
    run_against_upstream(Upstream::new(semantics, 80), pacing, creates, concurrent).await
}

/// The same against `upstream`, whatever its rate.
async fn run_against_upstream(
    upstream: Upstream,
    pacing: Pacing,
    creates: u32,
    concurrent: u32,
) -> (Duration, u32) {
    let (last, refusals) = run_collecting_refusals(upstream, pacing, creates, concurrent, Jitter::NONE).await;
    (last, u32::try_from(refusals.len()).unwrap())
}

/// How unevenly creates travel, in milliseconds: held up on this side between the gate and their
/// send by 0 to `held_up_ms` (a ledger write, a loaded machine), and on their way to the upstream
/// by 0 to `arrival_ms` beyond the 100 ms every create takes (scheduling and network jitter).
#[derive(Debug, Clone, Copy)]
struct Jitter {
    held_up_ms: u64,
    arrival_ms: u64,
}

impl Jitter {
    const NONE: Jitter = Jitter {
        held_up_ms: 0,
        arrival_ms: 0,
    };

    /// The `k`th of a fixed, even-looking sequence of values from 0 to `max` (a multiplicative
    /// hash, so runs are repeatable).
    fn nth(k: u64, max: u64) -> Duration {
        Duration::from_millis(k.wrapping_mul(2_654_435_761) % 1_000_003 % (max + 1))
    }
}

/// The same, with when each refusal came, from the start, creates travelling as `jitter` says.
async fn run_collecting_refusals(
    upstream: Upstream,
    pacing: Pacing,
    creates: u32,
    concurrent: u32,
    jitter: Jitter,
) -> (Duration, Vec<Duration>) {
    let gate = Arc::new(CreateGate::new(Some(80)).with_pacing(pacing));
    let upstream = Arc::new(Mutex::new(upstream));
    let left = Arc::new(AtomicU32::new(creates));
    let sends = Arc::new(AtomicU32::new(0));
    // When each create left, and each pause a 429 asked for (from its answer to its end).
    let timeline = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrent {
        let (gate, upstream, left, sends) = (gate.clone(), upstream.clone(), left.clone(), sends.clone());
        let timeline = timeline.clone();
        workers.push(tokio::spawn(async move {
            while left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                loop {
                    gate.ready().await.unwrap();
                    if jitter.held_up_ms > 0 {
                        let turn = u64::from(left.load(Ordering::SeqCst));
                        tokio::time::sleep(Duration::from_millis(turn * 37 % (jitter.held_up_ms + 1))).await;
                    }
                    gate.on_sent();
                    timeline.lock().unwrap().0.push(Instant::now());
                    let k = u64::from(sends.fetch_add(1, Ordering::SeqCst));
                    let on_the_way = Duration::from_millis(100) + Jitter::nth(k, jitter.arrival_ms);
                    tokio::time::sleep(on_the_way).await;
                    let answer = upstream.lock().unwrap().admit(Instant::now());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    match answer {
                        Ok(()) => {
                            gate.on_accepted();
                            break;
                        }
                        Err(retry_after) => {
                            gate.on_rate_limited(Some(retry_after));
                            let now = Instant::now();
                            timeline.lock().unwrap().1.push((now, now + retry_after));
                        }
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let (sent, pauses) = timeline.lock().unwrap().clone();
    for (from, until) in pauses {
        let inside: Vec<_> = sent.iter().filter(|at| **at >= from && **at < until).collect();
        assert!(inside.is_empty(), "sent inside a Retry-After: {inside:?}");
    }
    let upstream = upstream.lock().unwrap();
    assert_eq!(upstream.accepted.len(), creates as usize);
    let refusals = upstream.refusals.iter().map(|at| *at - start).collect();
    (*upstream.accepted.last().unwrap() - start, refusals)
}

/// When the last of 100 creates at 80 a minute can be accepted at the earliest: a bucket of 80
/// refills the other 20 in 15 s, a window frees them after 60 s, spacing takes 99 slots of 0.75 s
/// (each plus the 100 ms a create takes to arrive).
fn floor_of_100(semantics: Semantics) -> Duration {
    let arrive = Duration::from_millis(100);
    arrive
        + match semantics {
            Semantics::Bucket => Duration::from_secs(15),
            Semantics::Sliding => Duration::from_secs(60),
            Semantics::Spacing => Duration::from_millis(750) * 99,
        }
}

#[tokio::test(start_paused = true)]
async fn learning_finishes_100_creates_within_5_percent_of_the_floor_under_each_semantics() {
    for semantics in [Semantics::Bucket, Semantics::Sliding, Semantics::Spacing] {
        let (last, refused) = run_against(semantics, Pacing::Learn, 100, 40).await;
        let floor = floor_of_100(semantics);
        assert!(
            last.as_secs_f64() <= floor.as_secs_f64() * 1.05,
            "{semantics:?}: last create at {last:?}, floor {floor:?}"
        );
        // The burst grows as answers confirm it, so a surprise costs a couple of 429s.
        assert!(refused <= 3, "{semantics:?}: {refused} refused");
    }
}

#[tokio::test(start_paused = true)]
async fn strict_pacing_draws_no_429_under_any_semantics() {
    for semantics in [Semantics::Bucket, Semantics::Sliding, Semantics::Spacing] {
        let (last, refused) = run_against(semantics, Pacing::Strict, 100, 40).await;
        assert_eq!(refused, 0, "{semantics:?}");
        // Evenly spaced 1% under the rate: 99 periods of 757.5 ms.
        let period = Duration::from_secs(60).mul_f64(1.01) / 80;
        assert!(last >= period * 99, "{semantics:?}: {last:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn strict_pacing_draws_no_429_from_a_strict_spacing_upstream_when_creates_are_held_up_before_sending() {
    for semantics in [Semantics::Spacing, Semantics::Sliding, Semantics::Bucket] {
        let (_, refusals) = run_collecting_refusals(
            Upstream::new(semantics, 80),
            Pacing::Strict,
            60,
            40,
            Jitter {
                held_up_ms: 300,
                arrival_ms: 0,
            },
        )
        .await;
        assert!(refusals.is_empty(), "{semantics:?}: refused at {refusals:?}");
    }
}

#[tokio::test(start_paused = true)]
#[ignore = "open: against an account slower than configured, learning draws a 429 every few seconds \
            (each paused as asked, the run at the account's rate); widening only on those 429s also \
            widened it on a strict-spacing upstream's jitter 429s (BENCHMARKS.md)"]
async fn learning_settles_under_an_upstream_slower_than_configured_with_a_handful_of_429s_a_minute() {
    // Configured for 80 a minute; the account allows 40 (a bucket of 40 refilled 40 a minute).
    let (last, refusals) = run_collecting_refusals(
        Upstream::new(Semantics::Bucket, 40),
        Pacing::Learn,
        200,
        40,
        Jitter::NONE,
    )
    .await;
    // 40 at once, then 160 at 1.5 s: 240 s at the floor.
    let floor = Duration::from_secs(240);
    assert!(last.as_secs_f64() <= floor.as_secs_f64() * 1.10, "{last:?}");
    // The first surprise: the creates the slow start had on their way when the burst ended.
    let (first, settled): (Vec<Duration>, Vec<Duration>) =
        refusals.iter().partition(|at| **at < Duration::from_secs(5));
    assert!(first.len() <= 40, "{refusals:?}");
    // Then the rate settles under the account's, with a handful of 429s a minute at most.
    let per_minute = settled.len() as f64 / ((last - Duration::from_secs(5)).as_secs_f64() / 60.0);
    assert!(per_minute <= 5.0, "{refusals:?} in {last:?}");
}

#[tokio::test(start_paused = true)]
async fn a_429_at_the_end_of_a_burst_leaves_the_spacing_and_one_after_too_few_creates_widens_it() {
    let gate = CreateGate::new(Some(80)).with_pacing(Pacing::Learn);
    assert_eq!(gate.pacing(), Pacing::Learn);
    for _ in 0..10 {
        gate.ready().await.unwrap();
        gate.on_accepted();
    }
    // Ten accepted at once: more than the rate allows, so the 429 is the burst's end.
    gate.on_rate_limited(Some(Duration::from_secs(1)));
    assert_eq!(gate.slowdown(), 1.0);
    // After the pause, a 429 to the first create: the upstream allows less than the rate.
    gate.ready().await.unwrap();
    tokio::time::advance(Duration::from_secs(3)).await;
    gate.on_rate_limited(Some(Duration::from_secs(1)));
    assert_eq!(gate.slowdown(), 2.0);
    // Strict pacing widens the spacing at every first 429 of a burst.
    let strict = CreateGate::new(Some(80)).with_pacing(Pacing::Strict);
    assert_eq!(strict.pacing(), Pacing::Strict);
    strict.on_rate_limited(Some(Duration::from_secs(1)));
    assert_eq!(strict.slowdown(), 2.0);
}

/// 100 creates against `semantics` paced as `pacing`, held up 0–10 ms before sending (the intent's
/// ledger write) and 0–12 ms on their way, as on a loaded machine: when the last was accepted and
/// the 429s drawn.
async fn jittery_100(semantics: Semantics, pacing: Pacing) -> (Duration, Vec<Duration>) {
    let jitter = Jitter {
        held_up_ms: 10,
        arrival_ms: 12,
    };
    run_collecting_refusals(Upstream::new(semantics, 80), pacing, 100, 40, jitter).await
}

#[tokio::test(start_paused = true)]
async fn learning_with_jitter_finishes_within_5_percent_of_the_floor_under_each_semantics_with_a_handful_of_429s(
) {
    for semantics in [Semantics::Bucket, Semantics::Sliding, Semantics::Spacing] {
        let (last, refusals) = jittery_100(semantics, Pacing::Learn).await;
        let floor = floor_of_100(semantics);
        assert!(
            last.as_secs_f64() <= floor.as_secs_f64() * 1.05,
            "{semantics:?}: last create at {last:?}, floor {floor:?}, refused at {refusals:?}"
        );
        // The slow start's surprise, then at most a couple of creates that jitter made early.
        assert!(refusals.len() <= 4, "{semantics:?}: refused at {refusals:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn strict_pacing_with_jitter_draws_a_few_429s_from_strict_spacing_and_keeps_its_pace() {
    let (last, refusals) = jittery_100(Semantics::Spacing, Pacing::Strict).await;
    let floor = floor_of_100(Semantics::Spacing);
    // A create that jitter made early costs its pause and a step of margin, not a doubled
    // spacing that takes many creates to recover.
    assert!(
        last.as_secs_f64() <= floor.as_secs_f64() * 1.05,
        "last create at {last:?}, floor {floor:?}, refused at {refusals:?}"
    );
    assert!(refusals.len() <= 2, "refused at {refusals:?}");
}

#[tokio::test(start_paused = true)]
async fn a_429_to_a_create_sent_a_spacing_after_two_accepted_adds_a_step_of_margin_not_a_doubling() {
    for pacing in [Pacing::Strict, Pacing::Learn] {
        let gate = CreateGate::new(Some(80)).with_pacing(pacing);
        if pacing == Pacing::Learn {
            // Teach it that the upstream allows no burst: one accepted, then a 429.
            gate.ready().await.unwrap();
            gate.on_sent();
            gate.on_accepted();
            gate.ready().await.unwrap();
            gate.on_sent();
            gate.on_rate_limited(Some(Duration::from_secs(1)));
        }
        let spacing = |gate: &CreateGate| gate.spacing(&gate.backoff());
        let period = Duration::from_secs(60).mul_f64(1.01) / 80;
        assert_eq!(spacing(&gate), period, "{pacing:?}");
        let mut margins = Vec::new();
        for _ in 0..5 {
            for _ in 0..3 {
                gate.ready().await.unwrap();
                gate.on_sent();
                gate.on_accepted();
            }
            gate.ready().await.unwrap();
            gate.on_sent();
            gate.on_rate_limited(Some(Duration::from_secs(1)));
            margins.push((spacing(&gate).as_secs_f64() / period.as_secs_f64() * 100.0).round() / 100.0);
        }
        // Three steps of 1%, then a 429 like any other: strict pacing doubles the spacing (which
        // recovered to 1.5 over three accepted creates before the fifth), learning does not (it
        // already sends one at a time; the pause is what the upstream asked).
        let expected = if pacing == Pacing::Strict {
            [1.01, 1.02, 1.03, 2.06, 3.0]
        } else {
            [1.01, 1.02, 1.03, 1.03, 1.03]
        };
        assert_eq!(margins, expected, "{pacing:?}");
    }
}
