//! The reconcile step: a create whose outcome is unknown is searched for in the upstream's list
//! over its settlement window before the task may be sent again.

use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::{Step, TaskRun};
use crate::events::Event;
use crate::reconcile::{reconcile, Reconciled};
use crate::EngineError;

/// What is left of a settlement window at `now_ms` for a create intended at `intent_at_ms` (both
/// Unix milliseconds): the window counts from the intent, so a run resuming a task an earlier run
/// left `unknown` goes on with that window rather than starting a new one.
fn settle_time_left(intent_at_ms: i64, now_ms: i64, window: Duration) -> Duration {
    let closes_ms = intent_at_ms.saturating_add(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
    Duration::from_millis(u64::try_from(closes_ms.saturating_sub(now_ms)).unwrap_or(0))
}

impl TaskRun {
    /// Settles a create whose outcome is unknown over the settlement window
    /// (`RunSettings::settle_window`, counted from the intent, so a resumed run goes on with the
    /// window an earlier run began): the list is searched at once, then again at growing intervals,
    /// and only when the window has closed with nothing found may the task be sent again. The list is
    /// read while creates go on; creates stop only while the matches found are checked and one is
    /// claimed (the create lock), never during a read or while the task waits between searches.
    pub(super) async fn reconcile(
        &mut self,
        generation: i64,
        intent_at: i64,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<Step, EngineError> {
        let window = self.shared.settings.settle_window;
        let closes_at =
            tokio::time::Instant::now() + settle_time_left(intent_at, darkroom_ledger::now_ms(), window);
        let mut reads = crate::retry::settle_schedule(window).start();
        let mut unreadable = self.shared.settings.retry.unreadable_list.start();
        loop {
            let found = reconcile(
                &self.upstream.client,
                &self.shared.ledger,
                &self.shared.create_lock,
                &self.request,
                generation,
                intent_at,
            )
            .await;
            match found {
                Reconciled::Adopted(found) => {
                    // The adopted generation was created with our last callback URL.
                    if let Some((receiver, token)) = &self.callback_token {
                        receiver.bind_generation(token, &found.id);
                    }
                    self.holds_reservation = false;
                    self.record_basis(generation).await?;
                    self.shared
                        .emit(Event::Reconciled {
                            task: self.key().to_string(),
                            adopted: true,
                        })
                        .await;
                    return Ok(Step::Poll {
                        generation,
                        upstream_id: found.id,
                        permit,
                        stuck_at: tokio::time::Instant::now() + self.shared.settings.stuck_after,
                    });
                }
                Reconciled::NotFound if tokio::time::Instant::now() >= closes_at => {
                    self.shared.ledger.record_not_created(generation, true).await?;
                    self.holds_reservation = true;
                    self.shared
                        .emit(Event::Reconciled {
                            task: self.key().to_string(),
                            adopted: false,
                        })
                        .await;
                    return Ok(Step::Retry {
                        reason: "the create's outcome was unknown and no generation was made".into(),
                    });
                }
                // The upstream may still commit it: look again later, sending nothing meanwhile.
                Reconciled::NotFound => {
                    let now = tokio::time::Instant::now();
                    let interval = reads.next_delay().unwrap_or(window);
                    let delay = interval.min(closes_at.saturating_duration_since(now));
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        // Stopped: the task stays `unknown`; the next run resumes its window.
                        () = self.shared.stop_dispatch.cancelled() => return Ok(Step::End),
                        () = self.shared.abort.cancelled() => return Ok(Step::End),
                    }
                }
                // Not knowing whether a match is ours must never turn into a re-send.
                Reconciled::LedgerFailed(error) => return Err(error.into()),
                Reconciled::Unreadable(error) => {
                    let delay = unreadable.next_delay();
                    let Some(delay) = delay.filter(|_| !self.shared.abort.is_cancelled()) else {
                        // Leave it for the next run to reconcile; nothing is re-sent blindly.
                        tracing::warn!(task = self.key(), %error, "could not reconcile; leaving it to the next run");
                        return Ok(Step::End);
                    };
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.shared.abort.cancelled() => return Ok(Step::End),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_window_counts_from_the_intent_not_from_the_resume() {
        let window = Duration::from_secs(240);
        let intent = 1_000_000;
        assert_eq!(settle_time_left(intent, intent, window), window);
        assert_eq!(
            settle_time_left(intent, intent + 180_000, window),
            Duration::from_secs(60)
        );
        assert_eq!(settle_time_left(intent, intent + 300_000, window), Duration::ZERO);
    }

    #[test]
    fn the_default_window_is_searched_about_six_times_at_growing_intervals() {
        let window = crate::DEFAULT_SETTLE_WINDOW;
        let schedule = crate::retry::settle_schedule(window);
        let (mut at, mut intervals, mut reads) = (Duration::ZERO, schedule.start(), 1);
        while at < window {
            at += intervals.next_delay().unwrap().min(window - at);
            reads += 1;
        }
        assert_eq!(schedule.first, Duration::from_secs(15));
        assert_eq!(schedule.max, Duration::from_secs(60));
        assert!((5..=8).contains(&reads), "{reads} reads");
    }
}
