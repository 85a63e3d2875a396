//! The retry policy's own tests: what each error class leads to, and the delays of each schedule.

use std::time::Duration;

use super::*;

fn delays(schedule: Schedule, n: usize) -> Vec<Duration> {
    let mut backoff = schedule.start();
    (0..n).map_while(|_| backoff.next_delay()).collect()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn a_create_schedule_doubles_from_half_a_second_to_its_cap_and_jitter_only_adds() {
    let policy = RetryPolicy::default();
    let plain = Schedule {
        jitter: false,
        ..policy.create
    };
    assert_eq!(
        delays(plain, 9),
        [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0].map(secs)
    );
    for _ in 0..20 {
        for (jittered, base) in delays(policy.create, 9).into_iter().zip(delays(plain, 9)) {
            assert!(
                jittered >= base && jittered <= base * 2,
                "{jittered:?} vs {base:?}"
            );
        }
    }
}

#[test]
fn a_schedule_with_a_cap_on_tries_is_spent_after_that_many_delays() {
    let mut backoff = RetryPolicy::default().unreadable_list.start();
    for _ in 0..7 {
        assert!(backoff.next_delay().is_some());
    }
    assert_eq!(backoff.next_delay(), None);
    assert_eq!(backoff.tries(), 7);
}

#[test]
fn the_audit_reads_a_page_four_times_at_most_and_a_probe_every_quarter_second() {
    assert_eq!(delays(AUDIT_LIST, 10), [0.5, 1.0, 2.0].map(secs));
    assert_eq!(delays(PROBE_POLL, 3), [0.25, 0.25, 0.25].map(secs));
}

#[test]
fn a_notification_is_tried_six_times_at_one_two_four_eight_and_sixteen_seconds() {
    assert_eq!(delays(NOTIFY_DELIVERY, 10), [1.0, 2.0, 4.0, 8.0, 16.0].map(secs));
}

#[test]
fn a_download_is_tried_again_at_doubling_delays_up_to_thirty_seconds() {
    let policy = RetryPolicy::default();
    assert_eq!(
        delays(policy.download, 8),
        [0.6, 1.2, 2.4, 4.8, 9.6, 19.2, 30.0, 30.0].map(secs)
    );
    assert_eq!(policy.download_patience, Duration::from_secs(600));
}

#[test]
fn the_poller_reads_a_quarter_of_the_latency_later_then_half_as_long_again_up_to_its_cap() {
    let schedule = poll_schedule(secs(4.0), Duration::from_millis(250), secs(5.0));
    assert_eq!(delays(schedule, 5), [1.0, 1.5, 2.25, 3.375, 5.0].map(secs));
    // A fast model's quarter is below the floor; a slow one's above the cap.
    assert_eq!(
        poll_schedule(Duration::from_millis(300), Duration::from_millis(250), secs(5.0)).first,
        Duration::from_millis(250)
    );
    assert_eq!(
        poll_schedule(secs(60.0), Duration::from_millis(250), secs(5.0)).first,
        secs(5.0)
    );
}

#[test]
fn a_settlement_window_is_read_at_a_sixteenth_of_it_doubling_to_a_quarter() {
    let schedule = settle_schedule(Duration::from_secs(240));
    assert_eq!(delays(schedule, 5), [15.0, 30.0, 60.0, 60.0, 60.0].map(secs));
}

#[test]
fn errors_are_classified_by_what_trying_again_can_do() {
    use darkroom_provider::{ErrorClass, ProviderError, Refusal};
    let permanent = |status: u16| ProviderError::new("create", ErrorClass::Permanent { status }, "refused");
    assert_eq!(
        classify(&ProviderError::new(
            "create",
            ErrorClass::NeverSent,
            "connection refused"
        )),
        Decision::RetryAfterBackoff
    );
    assert_eq!(
        classify(&ProviderError::new("get", ErrorClass::Transient, "reset")),
        Decision::RetryAfterBackoff
    );
    assert_eq!(
        classify(&ProviderError::new(
            "create",
            ErrorClass::OutcomeUnknown,
            "timed out"
        )),
        Decision::Reconcile
    );
    assert_eq!(
        classify(&ProviderError::new(
            "create",
            ErrorClass::RateLimited {
                retry_after: Some(Duration::from_secs(10))
            },
            "too many requests"
        )),
        Decision::RetryNow {
            retry_after: Some(Duration::from_secs(10))
        }
    );
    assert_eq!(
        classify(&permanent(429).with_refusal(Refusal::Quota)),
        Decision::GiveUp { refusal: true }
    );
    assert_eq!(classify(&permanent(400)), Decision::GiveUp { refusal: false });
    assert_eq!(
        classify(&permanent(401).with_refusal(Refusal::Credentials)),
        Decision::GiveUp { refusal: true }
    );
}
