//! The poll step: the poller reports the generation's end; one still unfinished after
//! `stuck_after` (confirmed by a fresh read) is abandoned and the task tried again.

use darkroom_ledger::TaskState;
use darkroom_provider::{FailureKind, GenerationState};
use tokio::sync::OwnedSemaphorePermit;

use super::{Step, TaskRun};
use crate::poller::Polled;
use crate::EngineError;

/// What a fresh read says about a generation the poller did not see end within `stuck_after`.
enum Confirmed {
    /// It has ended after all.
    Ended(Polled),
    /// It is still unfinished: stuck.
    Stuck,
    /// The read failed: not known to be stuck, so keep waiting.
    Unknown,
}

impl TaskRun {
    /// Waits for the generation's end (the poller, bounded by `stuck_after`), then goes on by how
    /// it ended. A generation resumed from an earlier run takes an in-flight permit first.
    pub(super) async fn poll(
        &mut self,
        generation: i64,
        upstream_id: String,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<Step, EngineError> {
        // A generation resumed from an earlier run counts against the in-flight limit too.
        let permit = match permit {
            Some(p) => Some(p),
            None => self.shared.in_flight.clone().acquire_owned().await.ok(),
        };
        let first_read = self.shared.settings.first_read_after(self.model);
        let polled = tokio::select! {
            polled = tokio::time::timeout(self.shared.settings.stuck_after, self.upstream.poller.wait(&upstream_id, first_read)) => polled,
            () = self.shared.abort.cancelled() => return Ok(Step::End),
        };
        let polled = match polled {
            Ok(polled) => Some(polled),
            Err(_elapsed) => match self.confirm_stuck(&upstream_id).await {
                Confirmed::Ended(polled) => Some(polled),
                Confirmed::Stuck => None,
                Confirmed::Unknown => {
                    return Ok(Step::Poll {
                        generation,
                        upstream_id,
                        permit,
                    })
                }
            },
        };
        drop(permit);
        match polled {
            Some(polled) => self.ended(generation, upstream_id, polled).await,
            None => self.stuck(generation, &upstream_id).await,
        }
    }

    /// A generation is stuck only if it is still unfinished when read once more now: the poller
    /// may have been slow to learn its end, and abandoning a finished generation would pay for the
    /// task twice.
    async fn confirm_stuck(&self, upstream_id: &str) -> Confirmed {
        match self.upstream.client.get(upstream_id).await {
            Ok(generation) => match generation.state {
                GenerationState::Completed => Confirmed::Ended(match generation.image_url() {
                    Some(url) => Polled::Completed {
                        image_url: url.to_string(),
                    },
                    None => Polled::Unusable {
                        reason: crate::poller::COMPLETED_WITHOUT_IMAGE.into(),
                    },
                }),
                GenerationState::Failed => Confirmed::Ended(Polled::Failed {
                    reason: generation
                        .failure_reason
                        .unwrap_or_else(|| "failed without a reason".into()),
                }),
                _ => Confirmed::Stuck,
            },
            Err(error) if error.is_not_found() => Confirmed::Ended(Polled::Gone),
            Err(error) => {
                // Unknown is not stuck: keep the generation and keep waiting.
                tracing::warn!(task = self.key(), %error, "could not confirm a slow generation; still waiting");
                Confirmed::Unknown
            }
        }
    }

    /// The generation ended: download it, or record why not and go on.
    async fn ended(
        &mut self,
        generation: i64,
        upstream_id: String,
        polled: Polled,
    ) -> Result<Step, EngineError> {
        match polled {
            Polled::Completed { image_url } => {
                self.shared
                    .ledger
                    .record_completed(generation, &image_url)
                    .await?;
                self.record_billed(generation, &upstream_id).await?;
                Ok(Step::Download {
                    generation,
                    upstream_id,
                    url: image_url,
                })
            }
            Polled::Failed { reason } => self.generation_failed(generation, reason).await,
            Polled::Gone => {
                self.shared.ledger.abandon_generation(generation).await?;
                self.shared
                    .ledger
                    .release(self.task.id, TaskState::Pending, None)
                    .await?;
                Ok(Step::Retry {
                    reason: "the generation disappeared upstream".into(),
                })
            }
            Polled::Unusable { reason } => self.unusable(generation, reason).await,
            Polled::Stopped => Ok(Step::End),
        }
    }

    /// The upstream failed the generation: moderation blocks the task; anything else is a failed
    /// attempt, retried within the attempt cap.
    async fn generation_failed(&mut self, generation: i64, reason: String) -> Result<Step, EngineError> {
        let next = match FailureKind::classify(&reason) {
            FailureKind::Blocked => TaskState::Blocked,
            FailureKind::Retryable if self.attempts >= self.shared.settings.max_attempts => TaskState::Failed,
            FailureKind::Retryable => TaskState::Pending,
        };
        self.shared
            .ledger
            .record_generation_failed(generation, &reason, next)
            .await?;
        match next {
            TaskState::Pending => Ok(Step::Retry { reason }),
            _ => {
                self.finished(next.as_str(), None, Some(&reason)).await;
                Ok(Step::End)
            }
        }
    }

    /// Stuck: the upstream keeps the charge; we stop waiting and try again (within the cap).
    async fn stuck(&mut self, generation: i64, upstream_id: &str) -> Result<Step, EngineError> {
        self.shared.ledger.abandon_generation(generation).await?;
        self.shared
            .ledger
            .release(self.task.id, TaskState::Pending, None)
            .await?;
        let reason = format!(
            "generation {upstream_id} was not finished after {:?}",
            self.shared.settings.stuck_after
        );
        if self.attempts >= self.shared.settings.max_attempts {
            return self.release(TaskState::Failed, Some(&reason)).await;
        }
        Ok(Step::Retry { reason })
    }
}
