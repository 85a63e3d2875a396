//! 429s end to end against the real simulator on a loopback port and a real SQLite ledger: a
//! `Retry-After` pause holds every create not yet sent, a quota refusal ends the run at once, and
//! 429s that never clear end it after `give_up_after`.
//!
//! These run on real time: the ledger's SQLite connection works on its own thread, and paused tokio
//! time would leap ahead while it works (its pool's timeouts fire). Nothing here asserts a timing;
//! the simulator counts what arrived inside a pause. The same rules on paused time, with ten-minute
//! waits, are the gate's unit tests (`limits.rs`).

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::time::Duration;

use darkroom_engine::{Event, Outcome, RunSettings, StopReason};
use darkroom_jobs::{Money, Pass};
use darkroom_sim::{RateLimitOnce, RefuseCreates, SimConfig};
use darkroom_testkit::Harness;

async fn harness(sim_config: SimConfig) -> Harness {
    Harness::start_with_timeout(sim_config, Duration::from_secs(30)).await
}

/// The simulator at the account's real rate (80 a minute), fast generations.
fn sim_at_80_a_minute() -> SimConfig {
    SimConfig {
        time_scale: 0.02,
        creates_per_minute: Some(80),
        max_concurrent: Some(40),
        ..SimConfig::default()
    }
}

/// The run at 80 creates a minute, as a real account, strictly spaced: one create on its way at a
/// time, so none can be on its way when another is answered 429 (a learning burst may have several
/// in flight then; `limits::tests` covers it).
fn settings(h: &Harness) -> RunSettings {
    let mut s = RunSettings::new("pauses", Pass::Preview, h.dir.path().join("out"));
    s.creates_per_minute = Some(80);
    s.pacing = darkroom_engine::limits::Pacing::Strict;
    s.latency_photon_flash_1 = Duration::from_millis(10);
    s.polls_per_second = 200;
    s.drain_timeout = Duration::from_secs(30);
    s
}

async fn load_and_run(h: &Harness, rows: usize, settings: &RunSettings) -> (Outcome, Vec<Event>) {
    let mut text = String::from("id,prompt,aspect_ratio\n");
    for i in 0..rows {
        text.push_str(&format!(
            "row-{i},A ceramic vase number {i} on a walnut table,1:1\n"
        ));
    }
    let file = h.dir.path().join("pauses.csv");
    std::fs::write(&file, text).unwrap();
    let job = h.load(&file, settings, Money::from_micros(10_000_000)).await;
    h.run_collecting(job, settings).await
}

fn creates_sent(h: &Harness) -> u64 {
    h.sim
        .stats()
        .requests
        .iter()
        .filter(|(key, _)| key.starts_with("POST /generations/image"))
        .map(|(_, n)| n)
        .sum()
}

/// The example: 20 tasks at 80 a minute, the fourth create answered 429 with a 10 s
/// `Retry-After`; not one create may reach the upstream inside those 10 s.
async fn twenty_creates_around_one_ten_second_pause(as_http_date: bool) {
    let h = harness(SimConfig {
        rate_limit_once: Some(RateLimitOnce {
            after_creates: 3,
            retry_after: Duration::from_secs(10),
            as_http_date,
        }),
        ..sim_at_80_a_minute()
    })
    .await;
    let (outcome, events) = load_and_run(&h, 20, &settings(&h)).await;
    let stats = h.sim.stats();
    assert_eq!(
        stats.creates_inside_pause, 0,
        "creates sent inside the pause: {stats:?}"
    );
    assert_eq!(stats.rate_limited, 1, "{stats:?}");
    assert_eq!(outcome.counts.done, 20, "{:?}", outcome.counts);
    assert_eq!(outcome.stop, None);
    assert_eq!(
        h.ledger.net_charges().await.unwrap().micros(),
        h.sim.billing().net_micros
    );
    let paused = events
        .iter()
        .find_map(|e| match e {
            Event::RateLimited {
                retry_after_ms,
                paused_until,
                paused_for_ms,
                answers,
                ..
            } => Some((*retry_after_ms, paused_until.clone(), *paused_for_ms, *answers)),
            _ => None,
        })
        .expect("a RateLimited event");
    assert!(paused.0.is_some_and(|ms| ms >= 9_000), "{paused:?}");
    assert!(paused.1.ends_with('Z'), "{paused:?}");
    assert!(paused.2 >= 9_000, "{paused:?}");
    assert_eq!(paused.3, 1);
}

#[tokio::test]
async fn no_create_reaches_the_upstream_inside_a_retry_after_of_ten_seconds() {
    twenty_creates_around_one_ten_second_pause(false).await;
}

#[tokio::test]
async fn no_create_reaches_the_upstream_inside_a_retry_after_given_as_an_http_date() {
    twenty_creates_around_one_ten_second_pause(true).await;
}

#[tokio::test]
async fn a_429_over_the_monthly_usage_limit_ends_the_run_at_once_with_the_upstream_words() {
    let h = harness(SimConfig {
        refuse_creates: Some(RefuseCreates::monthly_usage_limit()),
        ..sim_at_80_a_minute()
    })
    .await;
    let (outcome, _) = load_and_run(&h, 20, &settings(&h)).await;
    match &outcome.stop {
        Some(StopReason::Refused(reason)) => {
            assert!(reason.contains("Monthly usage limit exceeded"), "{reason}");
            assert!(reason.contains("429"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(creates_sent(&h), 1, "one answer is enough: {:?}", h.sim.stats());
    // Nothing failed, nothing paid: every task waits for a later run.
    assert_eq!(outcome.counts.pending, 20, "{:?}", outcome.counts);
    assert_eq!(outcome.counts.failed, 0);
    assert_eq!(outcome.spent, Money::ZERO);
    assert_eq!(h.sim.billing().charged_micros, 0);
}

#[tokio::test]
async fn an_unbroken_run_of_429s_ends_the_run_after_give_up_after_and_says_why() {
    let h = harness(SimConfig {
        refuse_creates: Some(RefuseCreates::rate_limited(Duration::from_secs(1))),
        ..sim_at_80_a_minute()
    })
    .await;
    let mut settings = settings(&h);
    settings.give_up_after = Duration::from_secs(3);
    let (outcome, events) = load_and_run(&h, 5, &settings).await;
    match &outcome.stop {
        Some(StopReason::Refused(reason)) => {
            // It never gives up before `give_up_after`; how much later it notices is the
            // machine's timing, which tests do not assert.
            let waited = seconds_after(reason, "429 to every create for ");
            assert!(waited >= 3.0, "gave up after {waited}s, before 3s: {reason}");
            assert!(reason.contains("with Retry-After 1s"), "{reason}");
            assert!(reason.contains("give_up_after = 3s"), "{reason}");
        }
        other => panic!("expected giving up, got {other:?}"),
    }
    assert_eq!(outcome.counts.pending, 5, "{:?}", outcome.counts);
    assert_eq!(outcome.counts.failed, 0, "{:?}", outcome.counts);
    assert_eq!(h.sim.stats().creates_inside_pause, 0, "{:?}", h.sim.stats());
    let waits: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::RateLimited {
                answers,
                paused_for_ms,
                give_up_after_ms,
                ..
            } => Some((*answers, *paused_for_ms, *give_up_after_ms)),
            _ => None,
        })
        .collect();
    assert!(waits.len() >= 2, "{waits:?}");
    let last = waits.last().unwrap();
    assert_eq!(last.0 as usize, waits.len(), "{waits:?}");
    assert!(last.1 >= 900, "a pause of about the Retry-After: {waits:?}");
    assert_eq!(last.2, 3_000);
}

/// The seconds written right after `prefix` in `text` (`"3s"`, `"4.5s"`; under a minute).
fn seconds_after(text: &str, prefix: &str) -> f64 {
    let rest = &text[text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix:?} in {text}"))
        + prefix.len()..];
    let number: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    assert!(rest[number.len()..].starts_with('s'), "{text}");
    number.parse().unwrap()
}
