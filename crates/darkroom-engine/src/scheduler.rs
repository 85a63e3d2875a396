//! The scheduler: takes pending tasks in file order and starts each under the limits, with its
//! reservation made first; resumes whatever an earlier run left in flight; stops dispatching on
//! Ctrl-C, on an exhausted budget or when the upstream refuses us; and lets in-flight work finish
//! and be recorded before it returns.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use darkroom_jobs::Money;
use darkroom_ledger::{Counts, Ledger, PassStatus, Reservation, TaskRecord, TaskState};
use darkroom_luma::Client;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::Event;
use crate::images;
use crate::limits::CreateGate;
use crate::outputs::{write_outputs, OutputFiles};
use crate::poller::Poller;
use crate::reconcile::CreateLock;
use crate::task::drive;
use crate::{budget_warning_due, EngineError, RunSettings};

/// Why a run stopped taking new work before every task was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The next task's price did not fit in the budget.
    BudgetExhausted,
    /// Ctrl-C (or the caller's token).
    Interrupted,
    /// The run's deadline passed.
    Deadline,
    /// The upstream refused us: a rejected key, no credits, or a long run of failed creates.
    Refused(String),
    /// Something systemic: the output directory can't be written, the ledger failed.
    Failed(String),
}

impl StopReason {
    /// The stop's name, stable for scripts (`--json`): `BudgetExhausted`, `Interrupted`,
    /// `Deadline`, `Refused` or `Failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            StopReason::BudgetExhausted => "BudgetExhausted",
            StopReason::Interrupted => "Interrupted",
            StopReason::Deadline => "Deadline",
            StopReason::Refused(_) => "Refused",
            StopReason::Failed(_) => "Failed",
        }
    }

    /// The upstream's or the system's words, for the stops that carry them.
    pub fn reason(&self) -> Option<&str> {
        match self {
            StopReason::Refused(reason) | StopReason::Failed(reason) => Some(reason),
            _ => None,
        }
    }
}

impl std::fmt::Display for StopReason {
    /// `Refused: the upstream's words`, or the bare name.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.reason() {
            Some(reason) => write!(f, "{}: {reason}", self.kind()),
            None => f.write_str(self.kind()),
        }
    }
}

/// How a pass ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub counts: Counts,
    pub stop: Option<StopReason>,
    pub spent: Money,
    pub budget: Money,
    pub outputs: Option<OutputFiles>,
    /// What the end-of-run audit found (`None` when the run was aborted before it).
    pub audit: Option<crate::audit::Audit>,
}

/// The two signals a caller controls: stop taking work (first Ctrl-C), and abort (second Ctrl-C).
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    pub stop: CancellationToken,
    pub abort: CancellationToken,
}

/// What every task of a run shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub ledger: Ledger,
    pub client: Client,
    pub settings: RunSettings,
    pub job_id: i64,
    pub pass_dir: PathBuf,
    pub gate: CreateGate,
    pub in_flight: Arc<Semaphore>,
    pub downloads: Semaphore,
    pub poller: Poller,
    pub create_lock: CreateLock,
    pub events: mpsc::Sender<Event>,
    /// No new creates: Ctrl-C, budget, refusal, systemic failure.
    pub stop_dispatch: CancellationToken,
    /// Drop what is in flight now (its state stays in the ledger for the next run).
    pub abort: CancellationToken,
    /// Signalled each time a charge is recorded: the balance observer may read again (`prices`).
    pub charged: tokio::sync::Notify,
    stop_reason: Mutex<Option<StopReason>>,
    consecutive_failures: AtomicU32,
    budget_warned: AtomicBool,
}

impl Shared {
    /// Stops dispatching, remembering the first reason given. An exhausted budget stops only new
    /// tasks: those already holding a reservation still go out, since their price fits.
    pub fn stop(&self, reason: StopReason) {
        let cancel = reason != StopReason::BudgetExhausted;
        let mut slot = self.stop_reason.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            tracing::info!(?reason, "stopping dispatch");
            *slot = Some(reason);
        }
        drop(slot);
        if cancel {
            self.stop_dispatch.cancel();
        }
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop_reason.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub async fn emit(&self, event: Event) {
        let _ = self.events.send(event).await;
    }

    pub fn create_succeeded(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// Counts a failed create; trips the breaker after too many in a row.
    pub fn create_failed(&self, error: &str) {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.settings.breaker_threshold {
            self.stop(StopReason::Refused(format!(
                "{failures} creates in a row failed; the upstream is not accepting work (last: {error})"
            )));
        }
    }

    /// Emits the budget warning once, when spend reaches 80%.
    pub async fn check_budget_warning(&self) -> Result<(), EngineError> {
        if self.budget_warned.load(Ordering::Relaxed) {
            return Ok(());
        }
        if let Some(pass) = self.ledger.pass(self.job_id, self.settings.pass).await? {
            if budget_warning_due(pass.spent(), pass.budget())
                && !self.budget_warned.swap(true, Ordering::Relaxed)
            {
                self.emit(Event::BudgetWarning {
                    spent: pass.spent(),
                    budget: pass.budget(),
                })
                .await;
            }
        }
        Ok(())
    }
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

/// Pending tasks read from the ledger at a time.
const PAGE: i64 = 500;

/// Runs the pass of a job until every task has ended or the run stops; returns how it ended.
///
/// The job's tasks must already be loaded and its budget set.
pub async fn run_pass(
    ledger: &Ledger,
    client: &Client,
    settings: &RunSettings,
    job_id: i64,
    events: mpsc::Sender<Event>,
    shutdown: Shutdown,
) -> Result<Outcome, EngineError> {
    let pass = settings.pass;
    // The end-of-run audit reads the account's generations created since this moment.
    let run_started_ms = darkroom_ledger::now_ms();
    let job_dir = settings.out_dir.join(&settings.job_name);
    let pass_dir = job_dir.join(pass.as_str());
    std::fs::create_dir_all(&pass_dir).map_err(|source| EngineError::Output {
        path: pass_dir.clone(),
        source,
    })?;
    // The caller holds the job's lock, so temporary files here are a killed run's leftovers.
    images::remove_stale_temporaries(&pass_dir).map_err(|source| EngineError::Output {
        path: pass_dir.clone(),
        source,
    })?;
    // Done tasks whose file is missing or has the wrong size (or was found damaged since) are
    // reopened: this run downloads them again, or makes them again when the upstream lost them.
    let restoring = crate::content::check_kept_images(ledger, job_id, pass, &pass_dir).await?;
    if restoring > 0 {
        tracing::warn!(
            count = restoring,
            "images missing or changed on disk; restoring them"
        );
    }
    // Whatever the last run skipped for budget gets another chance (the budget may have been raised).
    ledger.reopen_skipped(job_id, pass).await?;
    ledger.reopen_failed(job_id, pass).await?;
    // Generations an earlier run gave up on as stuck may have ended since: settle their charges.
    crate::reconcile::settle_abandoned(ledger, client, job_id, pass).await?;

    let tracker = TaskTracker::new();
    let poll_tracker = TaskTracker::new();
    let poll_stop = CancellationToken::new();
    // If this future is dropped mid-run (its caller gave up on it), every task it started stops at
    // its next await, as a killed process would: nothing keeps running behind the caller's back.
    let kill = CancellationToken::new();
    let _kill_on_drop = KillOnDrop(vec![kill.clone(), poll_stop.clone()]);
    let max_interval = match settings.callbacks {
        Some(_) => crate::callbacks::SAFETY_MAX_INTERVAL,
        None => crate::poller::MAX_INTERVAL,
    };
    let poller = Poller::spawn(
        client.clone(),
        settings.polls_per_second,
        max_interval,
        &poll_tracker,
        poll_stop.clone(),
    );
    if let Some(receiver) = &settings.callbacks {
        receiver
            .serve(poller.clone(), &poll_tracker, poll_stop.clone())
            .map_err(|source| EngineError::Callbacks {
                addr: receiver.local_addr().to_string(),
                source,
            })?;
    }
    let shared = Arc::new(Shared {
        ledger: ledger.clone(),
        client: client.clone(),
        settings: settings.clone(),
        job_id,
        pass_dir,
        gate: CreateGate::per_window(settings.creates_per_minute, settings.rate_window)
            .with_give_up_after(settings.give_up_after),
        in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1) as usize)),
        downloads: Semaphore::new(settings.max_downloads.max(1) as usize),
        poller,
        create_lock: CreateLock::new(()),
        events,
        stop_dispatch: shutdown.stop.child_token(),
        abort: shutdown.abort.clone(),
        charged: tokio::sync::Notify::new(),
        stop_reason: Mutex::new(None),
        consecutive_failures: AtomicU32::new(0),
        budget_warned: AtomicBool::new(false),
    });

    let pass_record = ledger.pass(job_id, pass).await?;
    let (budget, spent) = pass_record
        .as_ref()
        .map_or((Money::ZERO, Money::ZERO), |p| (p.budget(), p.spent()));
    shared
        .emit(Event::Started {
            job: settings.job_name.clone(),
            pass: pass.as_str().to_string(),
            counts: ledger.counts(job_id, pass).await?,
            budget,
            spent,
        })
        .await;
    if budget_warning_due(spent, budget) {
        shared.budget_warned.store(true, Ordering::Relaxed);
    }

    check_credits(&shared).await?;
    // The balance before the first create (and before resumed work goes on), then as charges settle.
    let observer_stop = CancellationToken::new();
    let observer = crate::prices::Observer::start(&shared).await?.map(|observer| {
        tokio::spawn(crate::prices::watch(
            shared.clone(),
            observer,
            settings.balance_every,
            observer_stop.clone(),
        ))
    });
    let mut deadline_timer = None;
    if let Some(deadline) = settings.deadline_ms {
        let remaining = deadline - darkroom_ledger::now_ms();
        if remaining <= 0 {
            shared.stop(StopReason::Deadline);
        } else {
            let shared = shared.clone();
            let wait = std::time::Duration::from_millis(u64::try_from(remaining).unwrap_or(u64::MAX));
            deadline_timer = Some(tokio::spawn(async move {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {
                        shared.emit(Event::Stopping { reason: "the deadline has passed".into() }).await;
                        shared.stop(StopReason::Deadline);
                    }
                    () = shared.stop_dispatch.cancelled() => {}
                }
            }));
        }
    }

    // Work an earlier run left in flight: reconcile, poll or download it, never create it again.
    let workers = Arc::new(Semaphore::new(worker_limit(settings)));
    for task in ledger.unfinished_tasks(job_id, pass).await? {
        let Ok(worker) = workers.clone().acquire_owned().await else {
            break;
        };
        let shared = shared.clone();
        let kill = kill.clone();
        tracker.spawn(async move {
            tokio::select! {
                () = drive(shared, task, None) => {}
                () = kill.cancelled() => {}
            }
            drop(worker);
        });
    }

    if !shared.stop_dispatch.is_cancelled() && shared.stop_reason().is_none() {
        dispatch(&shared, &tracker, &workers, &kill).await?;
    }

    // Let in-flight work finish and be recorded; bounded after a stop, cut short by an abort.
    tracker.close();
    let mut aborted = false;
    tokio::select! {
        () = tracker.wait() => {}
        () = shared.abort.cancelled() => aborted = true,
        () = async {
            shared.stop_dispatch.cancelled().await;
            if shutdown.stop.is_cancelled() {
                tokio::time::sleep(settings.drain_timeout).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!("in-flight work did not finish within the drain timeout; it resumes on the next run");
            shared.abort.cancel();
            aborted = true;
        }
    }
    if let Some(timer) = deadline_timer {
        timer.abort();
    }
    // The upstream may have committed creates after we stopped waiting for them: match the
    // account's generations since the run began against the ledger (not after an abort: work may
    // still be in flight, and the next run audits again).
    let audit = if shutdown.abort.is_cancelled() {
        None
    } else {
        let audit = crate::audit::audit(ledger, client, job_id, pass, run_started_ms).await?;
        if !audit.adopted_tasks.is_empty() && !shutdown.stop.is_cancelled() {
            finish_adopted(&shared, &audit.adopted_tasks, &kill).await?;
        }
        Some(audit)
    };
    poll_stop.cancel();
    poll_tracker.close();
    poll_tracker.wait().await;
    if aborted {
        // Give the tasks a moment to observe the abort; their ledger state is already consistent.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), tracker.wait()).await;
    }

    // A last reading once everything in flight has settled: the run's charges at the observed price.
    observer_stop.cancel();
    if let Some(observer) = observer {
        if let Ok(mut observer) = observer.await {
            if !shutdown.abort.is_cancelled() {
                observer.observe(&shared).await?;
            }
        }
    }

    let mut stop = shared.stop_reason();
    if shutdown.stop.is_cancelled() {
        stop = Some(StopReason::Interrupted);
    }
    match stop {
        Some(StopReason::BudgetExhausted) => {
            ledger
                .end_pending(job_id, pass, TaskState::Skipped, "budget")
                .await?;
        }
        Some(StopReason::Deadline) => {
            ledger
                .end_pending(job_id, pass, TaskState::Skipped, "deadline")
                .await?;
        }
        _ => {}
    }
    let status = match &stop {
        None => PassStatus::Finished,
        Some(StopReason::BudgetExhausted) => PassStatus::BudgetExhausted,
        Some(StopReason::Interrupted) => PassStatus::Interrupted,
        Some(StopReason::Deadline) => PassStatus::Deadline,
        Some(StopReason::Refused(_)) => PassStatus::Refused,
        Some(StopReason::Failed(_)) => PassStatus::Failed,
    };
    ledger.set_pass_status(job_id, pass, status).await?;
    if !shutdown.abort.is_cancelled() {
        crate::reconcile::settle_abandoned(ledger, client, job_id, pass).await?;
    }
    let outputs = write_outputs(ledger, job_id, &job_dir).await?;
    let pass_record = ledger.pass(job_id, pass).await?;
    Ok(Outcome {
        counts: ledger.counts(job_id, pass).await?,
        stop,
        spent: pass_record.as_ref().map_or(Money::ZERO, |p| p.spent()),
        budget: pass_record.as_ref().map_or(Money::ZERO, |p| p.budget()),
        outputs: Some(outputs),
        audit,
    })
}

/// Polls and downloads the tasks that adopted a generation the audit found (they need no create),
/// until they end or the run is aborted; what is left is resumed by the next run.
async fn finish_adopted(
    shared: &Arc<Shared>,
    tasks: &[i64],
    kill: &CancellationToken,
) -> Result<(), EngineError> {
    let tracker = TaskTracker::new();
    for task_id in tasks {
        let task = shared.ledger.task(*task_id).await?;
        let (shared, kill) = (shared.clone(), kill.clone());
        tracker.spawn(async move {
            tokio::select! {
                () = drive(shared, task, None) => {}
                () = kill.cancelled() => {}
            }
        });
    }
    tracker.close();
    tokio::select! {
        () = tracker.wait() => {}
        () = shared.abort.cancelled() => {}
    }
    Ok(())
}

/// Tasks alive at once: those in flight upstream, plus those downloading, with room to spare.
fn worker_limit(settings: &RunSettings) -> usize {
    (settings.max_in_flight as usize).max(1) * 2 + settings.max_downloads as usize
}

/// Takes pending tasks in file order: cache, then reservation, then the in-flight permit.
async fn dispatch(
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    workers: &Arc<Semaphore>,
    kill: &CancellationToken,
) -> Result<(), EngineError> {
    let (ledger, settings) = (&shared.ledger, &shared.settings);
    let mut after = 0;
    loop {
        let page = ledger
            .pending_tasks(shared.job_id, settings.pass, after, PAGE)
            .await?;
        let Some(last) = page.last() else { return Ok(()) };
        after = last.id;
        for task in page {
            if shared.stop_dispatch.is_cancelled() || shared.stop_reason().is_some() {
                return Ok(());
            }
            if settings.use_cache && take_from_cache(shared, &task).await? {
                continue;
            }
            let worker = tokio::select! {
                w = workers.clone().acquire_owned() => w.ok(),
                () = shared.stop_dispatch.cancelled() => None,
            };
            let Some(worker) = worker else { return Ok(()) };
            let permit = tokio::select! {
                p = shared.in_flight.clone().acquire_owned() => p.ok(),
                () = shared.stop_dispatch.cancelled() => None,
            };
            let Some(permit) = permit else { return Ok(()) };
            match ledger.reserve(task.id).await? {
                Reservation::Reserved => {}
                Reservation::NotPending => continue,
                Reservation::OverBudget => {
                    shared.stop(StopReason::BudgetExhausted);
                    let observed = ledger
                        .pass_price(shared.job_id, settings.pass, &task.model)
                        .await?;
                    let reason = match observed.filter(|&price| price > task.price()) {
                        Some(price) => format!(
                            "the budget cannot cover {} at the observed price of {} {} (the table says {})",
                            task.task_key,
                            task.model,
                            price,
                            task.price()
                        ),
                        None => format!("the budget cannot cover {}", task.task_key),
                    };
                    shared.emit(Event::Stopping { reason }).await;
                    return Ok(());
                }
            }
            let mut task = task;
            task.state = TaskState::Reserved;
            task.reserved_micros = task.price_micros;
            let shared = shared.clone();
            let kill = kill.clone();
            tracker.spawn(async move {
                tokio::select! {
                    () = drive(shared, task, Some(permit)) => {}
                    () = kill.cancelled() => {}
                }
                drop(worker);
            });
        }
    }
}

/// A verified image with the same fingerprint already on disk whose bytes still hash to what the
/// ledger recorded: reuse it at no cost (`content::take_from_cache`).
async fn take_from_cache(shared: &Shared, task: &TaskRecord) -> Result<bool, EngineError> {
    let format = darkroom_jobs::Format::parse(&task.format).unwrap_or_default();
    let target = shared
        .pass_dir
        .join(format!("{}.{}", task.task_key, format.extension()));
    let Some((source, content)) =
        crate::content::take_from_cache(&shared.ledger, task.id, &task.fingerprint, &target).await?
    else {
        return Ok(false);
    };
    let path = target.display().to_string();
    shared
        .ledger
        .record_cached(task.id, &path, source.generation_id.as_deref(), &content)
        .await?;
    shared
        .emit(Event::TaskFinished {
            task: task.task_key.clone(),
            state: "done".into(),
            cost: Money::ZERO,
            cached: true,
            path: Some(path),
            reason: None,
            attempts: 0,
        })
        .await;
    Ok(true)
}

/// Refuses to start when the account's credits can't cover even the first task; warns when they
/// can't cover the whole pass.
async fn check_credits(shared: &Shared) -> Result<(), EngineError> {
    let credits = match shared.client.credits().await {
        Ok(credits) => credits.micro_dollars(),
        Err(error) if error.is_refusal() => {
            shared.stop(StopReason::Refused(error.to_string()));
            return Ok(());
        }
        Err(error) => {
            tracing::warn!(%error, "could not read the account's credits; going on");
            return Ok(());
        }
    };
    let credits = Money::from_micros(credits);
    let pending = shared
        .ledger
        .pending_tasks(shared.job_id, shared.settings.pass, 0, 1)
        .await?;
    let Some(first) = pending.first() else {
        return Ok(());
    };
    if credits < first.price() {
        shared.stop(StopReason::Refused(format!(
            "the account has {credits} of credit, less than one image ({})",
            first.price()
        )));
        return Ok(());
    }
    let needed = shared
        .ledger
        .pending_cost(shared.job_id, shared.settings.pass)
        .await?;
    if credits < needed {
        shared.emit(Event::CreditsLow { credits, needed }).await;
    }
    Ok(())
}
