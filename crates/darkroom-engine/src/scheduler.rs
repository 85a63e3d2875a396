//! The scheduler: runs one pass of a job in named phases over one `RunContext`.
//!
//! - `prepare`: the pass directory, images restored, skipped and failed tasks reopened, the
//!   poller (and callback receiver) started, the credit check, the balance observer, the deadline.
//! - `resume`: whatever an earlier run left in flight is reconciled, polled or downloaded, never
//!   created again.
//! - `dispatch`: pending tasks in file order, each through the cache or a reservation and the
//!   limits; stops on Ctrl-C, an exhausted budget, a refusal, the deadline or a systemic failure.
//! - `drain`: in-flight work finishes and is recorded (bounded after a stop, cut short by an
//!   abort), the account is audited, the balance read a last time.
//! - `finish`: the pass's status, what dispatch never reached ended (`skipped`), the output files
//!   written, the `Outcome`.
//!
//! One task's steps are in `task`; what both share is in `run_context`.

mod dispatch;
pub(crate) use dispatch::{over_budget_repriced, over_limit};
mod drain;
mod finish;
mod prepare;
mod resume;

use std::path::PathBuf;
use std::sync::Arc;

use darkroom_jobs::Money;
use darkroom_ledger::{Counts, Ledger, TaskRecord};
use darkroom_provider::Provider;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::Event;
use crate::outputs::OutputFiles;
use crate::prices::Observer;
use crate::run_context::RunContext;
use crate::task::drive;
use crate::{EngineError, RunSettings};

pub use crate::run_context::StopReason;

/// How a pass ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The pass's tasks by state, once the run ended.
    pub counts: Counts,
    /// Why dispatch stopped before every task ended; `None` when the pass ran to its end.
    pub stop: Option<StopReason>,
    /// What the pass has spent, all runs together.
    pub spent: Money,
    /// The pass's budget.
    pub budget: Money,
    /// The output files written at the end of the run.
    pub outputs: Option<OutputFiles>,
    /// What the end-of-run audit found (`None` when the run was aborted before it).
    pub audit: Option<crate::audit::Audit>,
}

/// The two signals a caller controls: stop taking work (first Ctrl-C), and abort (second Ctrl-C).
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Stop taking new work; in-flight work drains for `RunSettings::drain_timeout`.
    pub stop: CancellationToken,
    /// Drop what is in flight now; its state stays in the ledger for the next run.
    pub abort: CancellationToken,
}

/// Cancels its tokens when dropped.
struct KillOnDrop(Vec<CancellationToken>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for token in &self.0 {
            token.cancel();
        }
    }
}

/// One run's machinery, built by `prepare` and handed from phase to phase: the context every task
/// shares, the spawned work and the tokens that stop it.
struct Run {
    ctx: Arc<RunContext>,
    shutdown: Shutdown,
    /// Unix milliseconds when the run began: the end-of-run audit reads the account from here.
    started_ms: i64,
    /// `OUT/JOB`: where the output files go.
    job_dir: PathBuf,
    /// The tasks the run started (resumed, dispatched).
    tracker: TaskTracker,
    /// The poller and the callback receiver.
    poll_tracker: TaskTracker,
    poll_stop: CancellationToken,
    /// Cancelled when the run's future is dropped: every task stops at its next await.
    kill: CancellationToken,
    _kill_on_drop: KillOnDrop,
    /// Tasks alive at once (`worker_limit`).
    workers: Arc<Semaphore>,
    /// The balance observer beside the run, and its stop.
    observer: Option<JoinHandle<Observer>>,
    observer_stop: CancellationToken,
    /// Stops dispatch when the pass's deadline passes.
    deadline_timer: Option<JoinHandle<()>>,
}

impl Run {
    /// Spawns a task's drive on the run's tracker; it stops when the run's future is dropped, and
    /// gives its worker slot back when it ends.
    fn spawn_task(
        &self,
        task: TaskRecord,
        permit: Option<OwnedSemaphorePermit>,
        worker: OwnedSemaphorePermit,
    ) {
        let (ctx, kill) = (self.ctx.clone(), self.kill.clone());
        self.tracker.spawn(async move {
            tokio::select! {
                () = drive(ctx, task, permit) => {}
                () = kill.cancelled() => {}
            }
            drop(worker);
        });
    }
}

/// Runs the pass of a job until every task has ended or the run stops; returns how it ended.
///
/// The job's tasks must already be loaded and its budget set. Errors are systemic (the ledger
/// failed, the output directory can't be written, the callback receiver can't start); a failed
/// task is not an error but a count in the `Outcome`.
pub async fn run_pass(
    ledger: &Ledger,
    client: &Arc<dyn Provider>,
    settings: &RunSettings,
    job_id: i64,
    events: mpsc::Sender<Event>,
    shutdown: Shutdown,
) -> Result<Outcome, EngineError> {
    let mut run = prepare::prepare(ledger, client, settings, job_id, events, shutdown).await?;
    resume::resume(&run).await?;
    if !run.ctx.dispatch_stopped() {
        dispatch::dispatch(&run).await?;
    }
    let audit = drain::drain(&mut run).await?;
    finish::finish(&run, audit).await
}

/// Tasks alive at once: those in flight upstream, plus those downloading, with room to spare.
fn worker_limit(settings: &RunSettings) -> usize {
    (settings.max_in_flight as usize).max(1) * 2 + settings.max_downloads as usize
}
