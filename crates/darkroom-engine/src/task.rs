//! One task's life from its reservation to its end: create, reconcile, poll, download, settle, and
//! retry when the failure allows it. Every step is recorded in the ledger before the next one starts,
//! so a run stopped at any instant resumes from the last recorded step.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use darkroom_jobs::{AspectRatio, Format, Model};
use darkroom_ledger::{Reservation, TaskRecord, TaskState};
use darkroom_luma::{CreateRequest, FailureKind, GenerationState};
use tokio::sync::OwnedSemaphorePermit;

use crate::events::Event;
use crate::images;
use crate::poller::Polled;
use crate::reconcile::{reconcile, Reconciled};
use crate::requests::body_fingerprint;
use crate::scheduler::{Shared, StopReason};
use crate::EngineError;

/// Where a task goes next.
enum Step {
    Create(Option<OwnedSemaphorePermit>),
    Reconcile {
        generation: i64,
        intent_at: i64,
        permit: Option<OwnedSemaphorePermit>,
    },
    Poll {
        generation: i64,
        upstream_id: String,
        permit: Option<OwnedSemaphorePermit>,
    },
    Download {
        generation: i64,
        upstream_id: String,
        url: String,
    },
    Retry {
        reason: String,
    },
    End,
}

struct TaskRun {
    shared: Arc<Shared>,
    task: TaskRecord,
    request: CreateRequest,
    request_fingerprint: String,
    model: Model,
    aspect: AspectRatio,
    format: Format,
    attempts: u32,
    holds_reservation: bool,
    backoff: backon::ExponentialBackoff,
    /// The callback token of the last create sent, when callbacks are on.
    callback_token: Option<(crate::callbacks::CallbackReceiver, String)>,
}

/// How long a paid image's download is retried before the task is left for the next run.
const DOWNLOAD_PATIENCE: Duration = Duration::from_secs(600);
/// Whole answers in a row that cannot become an image (a 404 even at a fresh URL, a body that is not
/// an image) after which a completed generation counts as unusable.
const UNUSABLE_AFTER: u32 = 4;

/// The first pause between two searches of a settlement window, and the longest: a sixteenth and a
/// quarter of the window (15 s and 60 s of the default 4 minutes), so a window is about six reads.
fn settle_first_interval(window: Duration) -> Duration {
    (window / 16).max(Duration::from_millis(10))
}

fn settle_max_interval(window: Duration) -> Duration {
    (window / 4).max(Duration::from_millis(10))
}

/// What is left of a settlement window at `now_ms` for a create intended at `intent_at_ms` (both
/// Unix milliseconds): the window counts from the intent, so a run resuming a task an earlier run
/// left `unknown` goes on with that window rather than starting a new one.
fn settle_time_left(intent_at_ms: i64, now_ms: i64, window: Duration) -> Duration {
    let closes_ms = intent_at_ms.saturating_add(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
    Duration::from_millis(u64::try_from(closes_ms.saturating_sub(now_ms)).unwrap_or(0))
}

/// Drives a task from whatever state the ledger has it in to an end (or to a state the next run
/// resumes from, when the run stops first).
pub(crate) async fn drive(shared: Arc<Shared>, task: TaskRecord, permit: Option<OwnedSemaphorePermit>) {
    let key = task.task_key.clone();
    if let Err(error) = drive_inner(shared.clone(), task, permit).await {
        tracing::error!(task = %key, error = %error, "task stopped by a systemic failure");
        shared.stop(StopReason::Failed(format!("{error:#}")));
    }
}

async fn drive_inner(
    shared: Arc<Shared>,
    task: TaskRecord,
    permit: Option<OwnedSemaphorePermit>,
) -> Result<(), EngineError> {
    let request: CreateRequest =
        serde_json::from_str(&task.request_json).map_err(|source| EngineError::CorruptRequest {
            task_key: task.task_key.clone(),
            source,
        })?;
    let mut first = match task.state {
        TaskState::Reserved | TaskState::Pending => Step::Create(permit),
        _ => resume_step(&shared, &task).await?,
    };
    let backoff = backon::ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .without_max_times()
        .build();
    let mut run = TaskRun {
        request_fingerprint: body_fingerprint(&task.request_json),
        model: Model::parse(&task.model).unwrap_or(Model::Photon1),
        aspect: AspectRatio::parse(&task.aspect_ratio).unwrap_or(AspectRatio::Landscape16x9),
        format: Format::parse(&task.format).unwrap_or_default(),
        attempts: u32::try_from(task.attempts).unwrap_or(u32::MAX),
        holds_reservation: task.reserved_micros > 0,
        shared,
        task,
        request,
        backoff,
        callback_token: None,
    };
    loop {
        first = match first {
            Step::Create(permit) => run.create(permit).await?,
            Step::Reconcile {
                generation,
                intent_at,
                permit,
            } => run.reconcile(generation, intent_at, permit).await?,
            Step::Poll {
                generation,
                upstream_id,
                permit,
            } => run.poll(generation, upstream_id, permit).await?,
            Step::Download {
                generation,
                upstream_id,
                url,
            } => run.download(generation, upstream_id, url).await?,
            Step::Retry { reason } => run.retry(reason).await?,
            Step::End => return Ok(()),
        };
    }
}

/// Where a task left mid-flight by an earlier run picks up.
async fn resume_step(shared: &Shared, task: &TaskRecord) -> Result<Step, EngineError> {
    let generations = shared.ledger.open_generations(task.id).await?;
    // Generations superseded by a later one of the same task are not ours to keep.
    let Some(last) = generations.last() else {
        // In flight with nothing open upstream: an earlier run ended its generation (abandoned,
        // failed) and was stopped before it put the task back. Without a reservation the task
        // must be pending again to reserve one; with it, it may be sent as it is.
        if task.reserved_micros == 0 {
            shared.ledger.release(task.id, TaskState::Pending, None).await?;
        }
        return Ok(Step::Create(None));
    };
    for older in &generations[..generations.len() - 1] {
        shared.ledger.abandon_generation(older.id).await?;
    }
    use darkroom_ledger::GenerationState as Stored;
    Ok(match (last.state, &last.upstream_id, &last.image_url) {
        (Stored::Completed, Some(id), Some(url)) => Step::Download {
            generation: last.id,
            upstream_id: id.clone(),
            url: url.clone(),
        },
        (Stored::Submitted | Stored::Completed, Some(id), _) => Step::Poll {
            generation: last.id,
            upstream_id: id.clone(),
            permit: None,
        },
        _ => Step::Reconcile {
            generation: last.id,
            intent_at: last.intent_at,
            permit: None,
        },
    })
}

impl TaskRun {
    fn key(&self) -> &str {
        &self.task.task_key
    }

    async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            permit = self.shared.in_flight.clone().acquire_owned() => permit.ok(),
            () = self.shared.stop_dispatch.cancelled() => None,
        }
    }

    /// Ends the task without sending anything more: back to pending (resumable) or to an end.
    async fn release(&mut self, state: TaskState, reason: Option<&str>) -> Result<Step, EngineError> {
        self.shared.ledger.release(self.task.id, state, reason).await?;
        self.holds_reservation = false;
        if state.is_terminal() {
            self.finished(state.as_str(), None, reason).await;
        }
        Ok(Step::End)
    }

    async fn finished(&self, state: &str, path: Option<String>, reason: Option<&str>) {
        let cost = match state {
            "done" => self.task.price(),
            _ => darkroom_jobs::Money::ZERO,
        };
        self.shared
            .emit(Event::TaskFinished {
                task: self.task.task_key.clone(),
                state: state.to_string(),
                cost,
                cached: false,
                path,
                reason: reason.map(str::to_string),
                attempts: self.attempts,
            })
            .await;
    }

    async fn create(&mut self, permit: Option<OwnedSemaphorePermit>) -> Result<Step, EngineError> {
        if !self.holds_reservation {
            match self.shared.ledger.reserve(self.task.id).await? {
                Reservation::Reserved => self.holds_reservation = true,
                Reservation::OverBudget => {
                    self.shared.stop(StopReason::BudgetExhausted);
                    return Ok(Step::End);
                }
                Reservation::NotPending => return Ok(Step::End),
            }
        }
        let permit = match permit {
            Some(p) => p,
            None => match self.permit().await {
                Some(p) => p,
                None => return self.release(TaskState::Pending, None).await,
            },
        };
        let (guard, generation) = loop {
            tokio::select! {
                ready = self.shared.gate.ready() => {
                    if let Err(gave_up) = ready {
                        self.shared.stop(StopReason::Refused(gave_up.to_string()));
                        return self.release(TaskState::Pending, None).await;
                    }
                }
                () = self.shared.stop_dispatch.cancelled() => return self.release(TaskState::Pending, None).await,
            }
            let guard = self.shared.create_lock.read().await;
            // A 429 to another create while this one waited for the lock pauses this one too:
            // wait again, writing nothing.
            if self.shared.gate.paused_until().is_some() {
                drop(guard);
                continue;
            }
            let generation = self
                .shared
                .ledger
                .record_intent(self.task.id, &self.request_fingerprint)
                .await?;
            // The last instant before sending: a 429 that came while the intent was written.
            if self.shared.gate.paused_until().is_none() {
                break (guard, generation);
            }
            drop(guard);
            self.shared.ledger.record_not_created(generation, false).await?;
        };
        let intent_at = darkroom_ledger::now_ms();
        self.attempts += 1;
        // With callbacks on, each create names its own URL (the stored body never has one).
        let callback = self.shared.settings.callbacks.as_ref().map(|receiver| {
            let (token, url) = receiver.new_token();
            (receiver.clone(), token, url)
        });
        let result = match &callback {
            Some((_, _, url)) => {
                let mut request = self.request.clone();
                request.callback_url = Some(url.clone());
                self.shared.client.create(&request).await
            }
            None => self.shared.client.create(&self.request).await,
        };
        self.callback_token = callback.map(|(receiver, token, _)| (receiver, token));
        // The charge is recorded before the create lock is let go, so a balance reading (taken
        // holding it alone) never sees a charge the ledger does not have yet.
        if let (Ok(created), Some((receiver, token))) = (&result, &self.callback_token) {
            receiver.bind_generation(token, &created.id);
        }
        let recorded = match &result {
            Ok(created) => Some(self.shared.ledger.record_submitted(generation, &created.id).await),
            Err(_) => None,
        };
        drop(guard);
        match result {
            Ok(created) => {
                if let Some(Err(error)) = recorded {
                    // Another task adopted this id while our answer was on its way: settle ours by
                    // reconciliation like any other unknown outcome.
                    tracing::warn!(task = self.key(), %error, "recording the create failed; reconciling");
                    self.shared.ledger.record_outcome_unknown(generation).await?;
                    return Ok(Step::Reconcile {
                        generation,
                        intent_at,
                        permit: Some(permit),
                    });
                }
                self.holds_reservation = false;
                self.shared.charged.notify_one();
                self.shared.gate.on_accepted();
                self.shared.create_succeeded();
                self.shared.check_budget_warning().await?;
                Ok(Step::Poll {
                    generation,
                    upstream_id: created.id,
                    permit: Some(permit),
                })
            }
            Err(error) => self.create_failed(generation, intent_at, error, permit).await,
        }
    }

    async fn create_failed(
        &mut self,
        generation: i64,
        intent_at: i64,
        error: darkroom_luma::Error,
        permit: OwnedSemaphorePermit,
    ) -> Result<Step, EngineError> {
        use darkroom_luma::ErrorClass;
        match error.class() {
            ErrorClass::RateLimited { retry_after } => {
                self.shared.ledger.record_not_created(generation, false).await?;
                self.attempts -= 1;
                let pause = self.shared.gate.on_rate_limited(retry_after);
                self.shared.emit(Event::rate_limited(retry_after, &pause)).await;
                if let Some(gave_up) = self.shared.gate.given_up() {
                    self.shared.stop(StopReason::Refused(gave_up.to_string()));
                    return self.release(TaskState::Pending, None).await;
                }
                Ok(Step::Create(Some(permit)))
            }
            ErrorClass::NeverSent | ErrorClass::Transient => {
                self.shared.ledger.record_not_created(generation, true).await?;
                self.shared.create_failed(&error.to_string());
                drop(permit);
                Ok(Step::Retry {
                    reason: error.to_string(),
                })
            }
            ErrorClass::OutcomeUnknown => {
                self.shared.ledger.record_outcome_unknown(generation).await?;
                self.shared.create_failed(&error.to_string());
                Ok(Step::Reconcile {
                    generation,
                    intent_at,
                    permit: Some(permit),
                })
            }
            ErrorClass::Permanent { .. } => {
                self.shared.ledger.record_not_created(generation, true).await?;
                let reason = error.to_string();
                if error.is_refusal() {
                    self.shared.stop(StopReason::Refused(reason));
                    self.release(TaskState::Pending, None).await
                } else {
                    self.release(TaskState::Failed, Some(&reason)).await
                }
            }
        }
    }

    /// Settles a create whose outcome is unknown over the settlement window
    /// (`RunSettings::settle_window`, counted from the intent, so a resumed run goes on with the
    /// window an earlier run began): the list is searched at once, then again at growing intervals,
    /// and only when the window has closed with nothing found may the task be sent again. Creates
    /// stop only while a search and its claim run (the create lock), never while the task waits
    /// between searches.
    async fn reconcile(
        &mut self,
        generation: i64,
        intent_at: i64,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<Step, EngineError> {
        let window = self.shared.settings.settle_window;
        let closes_at =
            tokio::time::Instant::now() + settle_time_left(intent_at, darkroom_ledger::now_ms(), window);
        let mut interval = settle_first_interval(window);
        let mut unreadable = 0;
        loop {
            let found = {
                let _alone = self.shared.create_lock.write().await;
                match reconcile(&self.shared.client, &self.shared.ledger, &self.request, intent_at).await {
                    // Claimed before any other search or create may run, so no two tasks with
                    // identical requests can both take it.
                    Reconciled::Adopted(found) => {
                        self.shared.ledger.record_submitted(generation, &found.id).await?;
                        Reconciled::Adopted(found)
                    }
                    other => other,
                }
            };
            match found {
                Reconciled::Adopted(found) => {
                    // The adopted generation was created with our last callback URL.
                    if let Some((receiver, token)) = &self.callback_token {
                        receiver.bind_generation(token, &found.id);
                    }
                    self.holds_reservation = false;
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
                    let delay = interval.min(closes_at.saturating_duration_since(now));
                    interval = (interval * 2).min(settle_max_interval(window));
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
                    unreadable += 1;
                    if unreadable >= 8 || self.shared.abort.is_cancelled() {
                        // Leave it for the next run to reconcile; nothing is re-sent blindly.
                        tracing::warn!(task = self.key(), %error, "could not reconcile; leaving it to the next run");
                        return Ok(Step::End);
                    }
                    let delay = self.backoff.next().unwrap_or(Duration::from_secs(5));
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.shared.abort.cancelled() => return Ok(Step::End),
                    }
                }
            }
        }
    }

    /// A generation ended with an answer that cannot be used: a failed attempt at once, its charge
    /// kept as the upstream keeps it, retried within the attempt cap.
    async fn unusable(&mut self, generation: i64, reason: String) -> Result<Step, EngineError> {
        let next = if self.attempts >= self.shared.settings.max_attempts {
            TaskState::Failed
        } else {
            TaskState::Pending
        };
        tracing::warn!(task = self.key(), %reason, "a generation's answer cannot be used");
        self.shared
            .ledger
            .record_unusable(generation, &reason, next)
            .await?;
        if next == TaskState::Failed {
            self.finished("failed", None, Some(&reason)).await;
            return Ok(Step::End);
        }
        Ok(Step::Retry { reason })
    }

    async fn poll(
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

    async fn retry(&mut self, reason: String) -> Result<Step, EngineError> {
        if self.attempts >= self.shared.settings.max_attempts {
            let reason = format!("{reason} (after {} attempts)", self.attempts);
            return self.release(TaskState::Failed, Some(&reason)).await;
        }
        if self.shared.stop_dispatch.is_cancelled() {
            return self.release(TaskState::Pending, None).await;
        }
        let delay = self.backoff.next().unwrap_or(Duration::from_secs(30));
        self.shared
            .emit(Event::Retry {
                task: self.key().to_string(),
                attempt: self.attempts + 1,
                reason,
                delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            })
            .await;
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(Step::Create(None)),
            () = self.shared.stop_dispatch.cancelled() => self.release(TaskState::Pending, None).await,
        }
    }

    async fn download(
        &mut self,
        generation: i64,
        upstream_id: String,
        mut url: String,
    ) -> Result<Step, EngineError> {
        let shared = self.shared.clone();
        let _slot = shared.downloads.acquire().await;
        let mut last_error = String::new();
        // Whole answers that cannot become an image, in a row: after a few, the generation is
        // unusable (a failed attempt), not something to wait out.
        let (mut missing, mut undecodable) = (0u32, 0u32);
        // The image is paid for: keep trying for a while (a CDN's URL stays valid for hours), with
        // growing pauses, before leaving it to the next run.
        let give_up_at = tokio::time::Instant::now() + DOWNLOAD_PATIENCE;
        for try_number in 0u32.. {
            if try_number > 0 {
                if tokio::time::Instant::now() >= give_up_at {
                    break;
                }
                let delay =
                    (Duration::from_millis(300) * 2u32.pow(try_number.min(7))).min(Duration::from_secs(30));
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = self.shared.abort.cancelled() => return Ok(Step::End),
                }
            }
            let bytes = match self
                .shared
                .client
                .download(&url, self.shared.settings.max_image_bytes)
                .await
            {
                Ok(bytes) => bytes,
                Err(error) => {
                    last_error = error.to_string();
                    // A URL answering 404 (or another 4xx, as an expired signed URL does) may only
                    // have expired; one that can't be reached at all is asked about now and then too
                    // (a file restored long after its generation: its old URL's host may be gone).
                    let refused = error.is_not_found()
                        || matches!(error.class(), darkroom_luma::ErrorClass::Permanent { .. });
                    if refused {
                        missing += 1;
                    } else {
                        missing = 0;
                        if try_number % 4 != 3 {
                            continue;
                        }
                    }
                    // Ask the upstream for a fresh URL.
                    match self.shared.client.get(&upstream_id).await {
                        Ok(fresh) => match fresh.image_url() {
                            Some(fresh_url) => url = fresh_url.to_string(),
                            None if fresh.state == GenerationState::Completed => {
                                return self
                                    .unusable(generation, crate::poller::COMPLETED_WITHOUT_IMAGE.into())
                                    .await;
                            }
                            None => {}
                        },
                        // Restoring a lost file whose generation the upstream no longer has:
                        // make it again, under the budget.
                        Err(gone)
                            if gone.is_not_found()
                                && self.shared.ledger.is_restoring(self.task.id).await? =>
                        {
                            self.shared.ledger.remake_lost(generation).await?;
                            return Ok(Step::Create(None));
                        }
                        Err(_) => {}
                    }
                    if missing >= UNUSABLE_AFTER {
                        let reason = format!("completed, but its image is not at its URL ({last_error})");
                        return self.unusable(generation, reason).await;
                    }
                    continue;
                }
            };
            let (format, aspect) = (self.format, self.aspect);
            let verified =
                tokio::task::spawn_blocking(move || images::verify(&bytes, format, aspect).map(|_| bytes))
                    .await
                    .unwrap_or_else(|e| Err(images::VerifyError::Undecodable(e.to_string())));
            let bytes = match verified {
                Ok(bytes) => bytes,
                Err(error @ images::VerifyError::Undecodable(_)) => {
                    missing = 0;
                    undecodable += 1;
                    last_error = error.to_string();
                    if undecodable >= UNUSABLE_AFTER {
                        let reason = format!("completed, but its URL does not serve an image ({last_error})");
                        return self.unusable(generation, reason).await;
                    }
                    continue;
                }
                Err(error) => {
                    // A whole image of the wrong kind: downloading again won't change it; a new
                    // create may (within the attempt cap).
                    return self.unusable(generation, error.to_string()).await;
                }
            };
            let path = self.output_path();
            // Bytes another task still records at this path are moved aside first.
            let content =
                match crate::content::put_image(&self.shared.ledger, self.task.id, &path, Vec::from(bytes))
                    .await
                {
                    Ok(content) => content,
                    Err(error @ EngineError::Output { .. }) => {
                        // Disk trouble is systemic: stop the run; the task stays downloading and the next run
                        // downloads it again while its URL is valid. Nothing paid is lost.
                        self.shared.stop(StopReason::Failed(format!(
                            "{error}: {}",
                            std::error::Error::source(&error)
                                .map(ToString::to_string)
                                .unwrap_or_default()
                        )));
                        return Ok(Step::End);
                    }
                    Err(other) => return Err(other),
                };
            let path_text = path.display().to_string();
            self.shared
                .ledger
                .record_done(generation, &path_text, &content)
                .await?;
            self.finished("done", Some(path_text), None).await;
            return Ok(Step::End);
        }
        tracing::warn!(task = self.key(), error = %last_error, "download failed; the next run tries again");
        Ok(Step::End)
    }

    fn output_path(&self) -> PathBuf {
        self.shared
            .pass_dir
            .join(format!("{}.{}", self.task.task_key, self.format.extension()))
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
        let (mut at, mut interval, mut reads) = (Duration::ZERO, settle_first_interval(window), 1);
        while at < window {
            at += interval.min(window - at);
            interval = (interval * 2).min(settle_max_interval(window));
            reads += 1;
        }
        assert_eq!(settle_first_interval(window), Duration::from_secs(15));
        assert_eq!(settle_max_interval(window), Duration::from_secs(60));
        assert!((5..=8).contains(&reads), "{reads} reads");
    }
}
