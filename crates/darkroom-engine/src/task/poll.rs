//! The poll step: the poller reports the generation's end; one still unfinished after
//! `stuck_after` (confirmed by a fresh read) is abandoned and the task tried again.

use darkroom_ledger::TaskState;
use darkroom_luma::{FailureKind, GenerationState};
use tokio::sync::OwnedSemaphorePermit;

use super::{Step, TaskRun};
use crate::poller::Polled;
use crate::EngineError;

impl TaskRun {
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
            polled = tokio::time::timeout(self.shared.settings.stuck_after, self.shared.poller.wait(&upstream_id, first_read)) => polled,
            () = self.shared.abort.cancelled() => return Ok(Step::End),
        };
        let polled = match polled {
            Ok(polled) => Ok(polled),
            // A generation is stuck only if it is still unfinished when read once more now: the
            // poller may have been slow to learn its end, and abandoning a finished generation
            // would pay for the task twice.
            Err(elapsed) => match self.shared.client.get(&upstream_id).await {
                Ok(generation) => match generation.state {
                    GenerationState::Completed => Ok(match generation.image_url() {
                        Some(url) => Polled::Completed {
                            image_url: url.to_string(),
                        },
                        None => Polled::Unusable {
                            reason: crate::poller::COMPLETED_WITHOUT_IMAGE.into(),
                        },
                    }),
                    GenerationState::Failed => Ok(Polled::Failed {
                        reason: generation
                            .failure_reason
                            .unwrap_or_else(|| "failed without a reason".into()),
                    }),
                    _ => Err(elapsed),
                },
                Err(error) if error.is_not_found() => Ok(Polled::Gone),
                Err(error) => {
                    // Unknown is not stuck: keep the generation and keep waiting.
                    tracing::warn!(task = self.key(), %error, "could not confirm a slow generation; still waiting");
                    return Ok(Step::Poll {
                        generation,
                        upstream_id,
                        permit,
                    });
                }
            },
        };
        drop(permit);
        match polled {
            Ok(Polled::Completed { image_url }) => {
                self.shared
                    .ledger
                    .record_completed(generation, &image_url)
                    .await?;
                Ok(Step::Download {
                    generation,
                    upstream_id,
                    url: image_url,
                })
            }
            Ok(Polled::Failed { reason }) => match FailureKind::classify(&reason) {
                FailureKind::Blocked => {
                    self.shared
                        .ledger
                        .record_generation_failed(generation, &reason, TaskState::Blocked)
                        .await?;
                    self.finished("blocked", None, Some(&reason)).await;
                    Ok(Step::End)
                }
                FailureKind::Retryable => {
                    let next = if self.attempts >= self.shared.settings.max_attempts {
                        TaskState::Failed
                    } else {
                        TaskState::Pending
                    };
                    self.shared
                        .ledger
                        .record_generation_failed(generation, &reason, next)
                        .await?;
                    if next == TaskState::Failed {
                        self.finished("failed", None, Some(&reason)).await;
                        return Ok(Step::End);
                    }
                    Ok(Step::Retry { reason })
                }
            },
            Ok(Polled::Gone) => {
                self.shared.ledger.abandon_generation(generation).await?;
                self.shared
                    .ledger
                    .release(self.task.id, TaskState::Pending, None)
                    .await?;
                Ok(Step::Retry {
                    reason: "the generation disappeared upstream".into(),
                })
            }
            Ok(Polled::Unusable { reason }) => self.unusable(generation, reason).await,
            Ok(Polled::Stopped) => Ok(Step::End),
            Err(_elapsed) => {
                // Stuck: the upstream keeps the charge; we stop waiting and try again.
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
    }
}
