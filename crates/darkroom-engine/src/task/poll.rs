//! The poll step: the poller reports the generation's end; one still unfinished `stuck_after`
//! after its submission (as the ledger records it, across resumes; confirmed by a fresh read) is
//! abandoned and the task tried again.

use darkroom_ledger::TaskState;
use darkroom_provider::{FailureKind, GenerationState};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::{Step, TaskRun};
use crate::poller::Polled;
use crate::EngineError;

/// What a fresh read says about a generation the poller did not see end within `stuck_after`.
enum Confirmed {
    /// It has ended after all.
    Ended(Polled),
    /// It is still unfinished: stuck.
    Stuck,
    /// The read failed: not known to be stuck, so keep watching it and read again shortly.
    Unknown,
}

/// How the wait for a generation's end came out.
enum Watched {
    /// It ended (or is gone).
    Ended(Polled),
    /// A fresh read at its stuck limit found it still unfinished.
    Stuck,
    /// The run was aborted (second Ctrl-C): the next run picks it up.
    Aborted,
}

impl TaskRun {
    /// Waits for the generation's end (the poller), until `stuck_at`; then goes on by how it
    /// ended. A generation resumed from an earlier run takes an in-flight permit first.
    ///
    /// At `stuck_at` one fresh read confirms it is stuck. When that read fails, the generation is
    /// not known to be stuck: it stays watched by the poller at its usual cadence (the watch is
    /// never dropped) and the confirming read is tried again one poll interval later, so the wait
    /// stays bounded by `stuck_at` plus the time the upstream takes to answer a read.
    pub(super) async fn poll(
        &mut self,
        generation: i64,
        upstream_id: String,
        permit: Option<OwnedSemaphorePermit>,
        stuck_at: Instant,
    ) -> Result<Step, EngineError> {
        // A generation resumed from an earlier run counts against the in-flight limit too.
        let permit = match permit {
            Some(p) => Some(p),
            None => self.shared.in_flight.clone().acquire_owned().await.ok(),
        };
        let first_read = self.shared.settings.first_read_after(self.model);
        let poller = self.upstream.poller.clone();
        let watch = poller.wait(&upstream_id, first_read);
        let watched = self.watch_until_stuck(watch, &upstream_id, stuck_at).await;
        drop(permit);
        match watched {
            Watched::Ended(polled) => self.ended(generation, upstream_id, polled).await,
            Watched::Stuck => self.stuck(generation, &upstream_id).await,
            Watched::Aborted => Ok(Step::End),
        }
    }

    /// Waits for the poller's answer; at `stuck_at` (and, while the confirming read fails, every
    /// poll interval after it) reads the generation once more to confirm it is stuck.
    async fn watch_until_stuck(
        &self,
        watch: impl std::future::Future<Output = Polled>,
        upstream_id: &str,
        stuck_at: Instant,
    ) -> Watched {
        tokio::pin!(watch);
        let mut confirm_at = stuck_at;
        loop {
            tokio::select! {
                polled = &mut watch => return Watched::Ended(polled),
                () = tokio::time::sleep_until(confirm_at) => match self.confirm_stuck(upstream_id).await {
                    Confirmed::Ended(polled) => return Watched::Ended(polled),
                    Confirmed::Stuck => return Watched::Stuck,
                    Confirmed::Unknown => confirm_at = Instant::now() + self.upstream.poller.max_interval(),
                },
                () = self.shared.abort.cancelled() => return Watched::Aborted,
            }
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
                tracing::warn!(task = self.key(), %error, "could not confirm a slow generation; still polling it, confirming again shortly");
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
            "generation {upstream_id} was not finished {:?} after it was submitted",
            self.shared.settings.stuck_after
        );
        if self.attempts >= self.shared.settings.max_attempts {
            return self.release(TaskState::Failed, Some(&reason)).await;
        }
        Ok(Step::Retry { reason })
    }
}
