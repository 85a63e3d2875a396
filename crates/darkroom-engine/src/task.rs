//! One task's life from its reservation to its end: create, reconcile, poll, download, settle, and
//! retry when the failure allows it. Every step is recorded in the ledger before the next one starts,
//! so a run stopped at any instant resumes from the last recorded step.
//!
//! This file holds the state machine (`Step`, `drive`) and what every step uses; the steps
//! themselves are in `task/`: `create`, `reconcile` (a create whose outcome is unknown), `poll` and
//! `download`.

mod basis;
mod create;
mod download;
mod poll;
mod reconcile;

use std::sync::Arc;

use darkroom_jobs::{AspectRatio, Format, Model};
use darkroom_ledger::{TaskRecord, TaskState};
use darkroom_provider::CreateRequest;
use tokio::sync::OwnedSemaphorePermit;

use crate::events::Event;
use crate::requests::body_fingerprint;
use crate::run_context::{RunContext, StopReason, Upstream};
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
        /// When the generation counts as stuck: `stuck_after` from its submission.
        stuck_at: tokio::time::Instant,
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
    shared: Arc<RunContext>,
    /// The provider the task's last create went to (and its poller): the run's own for a task
    /// never sent; an earlier run's provider for a create resumed from it, until the task must be
    /// sent again, which it then is on the run's provider.
    upstream: Upstream,
    task: TaskRecord,
    request: CreateRequest,
    request_fingerprint: String,
    model: Model,
    aspect: AspectRatio,
    format: Format,
    attempts: u32,
    holds_reservation: bool,
    /// The waits between this task's attempts (`RetryPolicy::create`).
    backoff: crate::retry::Backoff,
    /// The callback token of the last create sent, when callbacks are on.
    callback_token: Option<(crate::callbacks::CallbackReceiver, String)>,
}

/// Drives a task from whatever state the ledger has it in to an end (or to a state the next run
/// resumes from, when the run stops first).
pub(crate) async fn drive(shared: Arc<RunContext>, task: TaskRecord, permit: Option<OwnedSemaphorePermit>) {
    let key = task.task_key.clone();
    if let Err(error) = drive_inner(shared.clone(), task, permit).await {
        tracing::error!(task = %key, error = %error, "task stopped by a systemic failure");
        shared.stop(StopReason::Failed(format!("{error:#}")));
    }
}

async fn drive_inner(
    shared: Arc<RunContext>,
    task: TaskRecord,
    permit: Option<OwnedSemaphorePermit>,
) -> Result<(), EngineError> {
    let request: CreateRequest =
        serde_json::from_str(&task.request_json).map_err(|source| EngineError::CorruptRequest {
            task_key: task.task_key.clone(),
            source,
        })?;
    let upstream = upstream_of(&shared, &task, permit.is_some()).await?;
    let mut first = match task.state {
        TaskState::Reserved | TaskState::Pending => Step::Create(permit),
        _ => resume_step(&shared, &task).await?,
    };
    let backoff = shared.settings.retry.create.start();
    let mut run = TaskRun {
        request_fingerprint: body_fingerprint(&task.request_json),
        model: stored(Model::parse, &task.model, "tasks.model")?,
        aspect: stored(AspectRatio::parse, &task.aspect_ratio, "tasks.aspect_ratio")?,
        format: stored(Format::parse, &task.format, "tasks.format")?,
        attempts: u32::try_from(task.attempts).unwrap_or(u32::MAX),
        // A task in `reserved` holds its reservation whatever its amount (even $0); one further
        // on holds it while an amount is kept for it (an unknown outcome keeps it).
        holds_reservation: task.state == TaskState::Reserved || task.reserved_micros > 0,
        upstream,
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
                stuck_at,
            } => run.poll(generation, upstream_id, permit, stuck_at).await?,
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

/// A task's stored model, aspect ratio or format, read as its enum: a text this release does not
/// know (a ledger edited by hand) stops the run naming the column and the value, rather than
/// sending or checking the task as some other model or shape.
fn stored<T>(parse: fn(&str) -> Option<T>, text: &str, column: &'static str) -> Result<T, EngineError> {
    parse(text).ok_or_else(|| {
        EngineError::Ledger(darkroom_ledger::LedgerError::BadValue {
            column,
            value: text.to_string(),
        })
    })
}

/// The provider a task's steps use: the one its last create went to while that create may be
/// open; the run's own for a task holding no create (one `dispatched` from `pending`, or a
/// reserved one with no open generation), wherever its last create went (settled there as never
/// made), at the run's price (`Ledger::price_unsent`). A task with an open create on a provider
/// not given is [`EngineError::ProviderMissing`].
async fn upstream_of(
    shared: &RunContext,
    task: &TaskRecord,
    dispatched: bool,
) -> Result<Upstream, EngineError> {
    if dispatched {
        return Ok(shared.own_upstream());
    }
    if let Some(upstream) = shared.upstream(task.provider.as_deref()) {
        return Ok(upstream);
    }
    if task.state == TaskState::Reserved && shared.ledger.open_generations(task.id).await?.is_empty() {
        return Ok(shared.own_upstream());
    }
    Err(EngineError::ProviderMissing {
        provider: task.provider.clone().unwrap_or_default(),
        tasks: vec![task.task_key.clone()],
    })
}

/// Where a task left mid-flight by an earlier run picks up.
async fn resume_step(shared: &RunContext, task: &TaskRecord) -> Result<Step, EngineError> {
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
        // The stuck clock counts from the submission the ledger recorded, not from this resume.
        (Stored::Submitted | Stored::Completed, Some(id), _) => Step::Poll {
            generation: last.id,
            upstream_id: id.clone(),
            permit: None,
            stuck_at: shared.settings.wall_clock.instant_after(
                last.submitted_at.unwrap_or(last.intent_at),
                shared.settings.stuck_after,
            ),
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

    async fn retry(&mut self, reason: String) -> Result<Step, EngineError> {
        if self.attempts >= self.shared.settings.max_attempts {
            let reason = format!("{reason} (after {} attempts)", self.attempts);
            return self.release(TaskState::Failed, Some(&reason)).await;
        }
        if self.shared.stop_dispatch.is_cancelled() {
            return self.release(TaskState::Pending, None).await;
        }
        let delay = self
            .backoff
            .next_delay()
            .unwrap_or(self.shared.settings.retry.create.max);
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
}
