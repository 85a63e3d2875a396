//! What a run shares between its phases (`scheduler`) and its tasks (`task`): the `RunContext`,
//! and `StopReason`, why dispatch stopped. Both sides import this file; neither imports the other.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use darkroom_ledger::{Charged, Ledger};
use darkroom_provider::Provider;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::account::SharedAccount;
use crate::events::Event;
use crate::limits::CreateGate;
use crate::poller::Poller;
use crate::reconcile::CreateLock;
use crate::{budget_warning_due, RunSettings};

/// Why a run stopped taking new work before every task was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The next task's price did not fit in the budget.
    BudgetExhausted,
    /// The next task's price did not fit in a daily or monthly limit of the job's account or
    /// label (`darkroom budget`); the text names the limit and what it has used.
    SpendingLimit(String),
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
    /// The stop's name, stable for scripts (`--json`): `BudgetExhausted`, `SpendingLimit`,
    /// `Interrupted`, `Deadline`, `Refused` or `Failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            StopReason::BudgetExhausted => "BudgetExhausted",
            StopReason::SpendingLimit(_) => "SpendingLimit",
            StopReason::Interrupted => "Interrupted",
            StopReason::Deadline => "Deadline",
            StopReason::Refused(_) => "Refused",
            StopReason::Failed(_) => "Failed",
        }
    }

    /// The upstream's or the system's words, for the stops that carry them.
    pub fn reason(&self) -> Option<&str> {
        match self {
            StopReason::Refused(reason) | StopReason::Failed(reason) | StopReason::SpendingLimit(reason) => {
                Some(reason)
            }
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

/// What every task of a run shares: the ledger, the upstream, the settings, the limits every create
/// passes, the poller, the run's signals and why dispatch stopped. One per `run_pass`, behind an
/// `Arc`; the scheduler's phases and each task's steps hold it.
#[derive(Debug)]
pub(crate) struct RunContext {
    pub(crate) ledger: Ledger,
    pub(crate) client: Arc<dyn Provider>,
    pub(crate) settings: RunSettings,
    pub(crate) job_id: i64,
    pub(crate) pass_dir: PathBuf,
    pub(crate) gate: CreateGate,
    pub(crate) in_flight: Arc<Semaphore>,
    pub(crate) downloads: Semaphore,
    /// Images verified and measured at once, one per core: the work is CPU, and a PNG is still
    /// decoded whole (about 7 MB at 2048×1152; a JPEG at thumbnail size, `images::small`), so
    /// with dozens of downloads in flight an unbounded number of decodes was most of a run's memory.
    pub(crate) decodes: Arc<Semaphore>,
    pub(crate) poller: Poller,
    /// The providers earlier runs sent this pass's creates to, other than `client`, each with its
    /// own poller: a resumed create is settled on the provider that received it.
    pub(crate) earlier: Vec<Upstream>,
    pub(crate) create_lock: CreateLock,
    pub(crate) events: mpsc::Sender<Event>,
    /// No new creates: Ctrl-C, budget, refusal, systemic failure.
    pub(crate) stop_dispatch: CancellationToken,
    /// Drop what is in flight now (its state stays in the ledger for the next run).
    pub(crate) abort: CancellationToken,
    /// Signalled each time a charge is recorded: the balance observer may read again (`prices`).
    pub(crate) charged: tokio::sync::Notify,
    /// The run's place in its account's shared limits (`account`), when it is on one.
    pub(crate) account: Option<SharedAccount>,
    /// Set once the balance observer raised a price this run: from then on each create first
    /// makes sure its reservation (perhaps made at the lower price) covers the new one.
    pub(crate) repriced: AtomicBool,
    stop_reason: Mutex<Option<StopReason>>,
    consecutive_failures: AtomicU32,
    budget_warned: AtomicBool,
}

impl RunContext {
    /// Stops dispatching, remembering the first reason given. An exhausted budget or spending
    /// limit stops only new tasks: those already holding a reservation still go out, since their
    /// price fits. Returns whether this was the first reason (the one to tell).
    pub(crate) fn stop(&self, reason: StopReason) -> bool {
        let cancel = !matches!(reason, StopReason::BudgetExhausted | StopReason::SpendingLimit(_));
        let mut slot = self.stop_reason.lock().unwrap_or_else(|e| e.into_inner());
        let first = slot.is_none();
        if first {
            tracing::info!(?reason, "stopping dispatch");
            *slot = Some(reason);
        }
        drop(slot);
        if cancel {
            self.stop_dispatch.cancel();
        }
        first
    }

    /// The first reason dispatch was stopped for, if it was.
    pub(crate) fn stop_reason(&self) -> Option<StopReason> {
        self.stop_reason.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends an event to the caller (dropped when the caller stopped listening).
    pub(crate) async fn emit(&self, event: Event) {
        let _ = self.events.send(event).await;
    }

    /// A create was accepted: the breaker's count of failures in a row starts again.
    pub(crate) fn create_succeeded(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// Counts a failed create; trips the breaker after too many in a row.
    pub(crate) fn create_failed(&self, error: &str) {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.settings.breaker_threshold {
            self.stop(StopReason::Refused(format!(
                "{failures} creates in a row failed; the upstream is not accepting work (last: {error})"
            )));
        }
    }

    /// Emits the budget warning once, when spend reaches 80%.
    pub(crate) async fn check_budget_warning(&self, charged: Charged) {
        if self.budget_warned.load(Ordering::Relaxed) {
            return;
        }
        if budget_warning_due(charged.spent, charged.budget)
            && !self.budget_warned.swap(true, Ordering::Relaxed)
        {
            self.emit(Event::BudgetWarning {
                spent: charged.spent,
                budget: charged.budget,
            })
            .await;
        }
    }
}

/// The parts of a `RunContext` that `prepare` builds; the counters start at zero.
pub(crate) struct RunParts {
    pub(crate) ledger: Ledger,
    pub(crate) client: Arc<dyn Provider>,
    pub(crate) settings: RunSettings,
    pub(crate) job_id: i64,
    pub(crate) pass_dir: PathBuf,
    pub(crate) poller: Poller,
    pub(crate) earlier: Vec<Upstream>,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) stop_dispatch: CancellationToken,
    pub(crate) abort: CancellationToken,
    pub(crate) account: Option<SharedAccount>,
}

/// A provider and the poller reading its generations.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    pub(crate) client: Arc<dyn Provider>,
    pub(crate) poller: Poller,
}

impl RunContext {
    /// A run's context: the limits from `settings`, no stop, no failure counted, no warning given.
    pub(crate) fn new(parts: RunParts) -> RunContext {
        let settings = parts.settings;
        RunContext {
            ledger: parts.ledger,
            client: parts.client,
            job_id: parts.job_id,
            pass_dir: parts.pass_dir,
            gate: CreateGate::per_window(settings.creates_per_minute, settings.rate_window)
                .with_pacing(settings.pacing)
                .with_give_up_after(settings.give_up_after),
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1) as usize)),
            downloads: Semaphore::new(settings.max_downloads.max(1) as usize),
            decodes: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            )),
            poller: parts.poller,
            earlier: parts.earlier,
            create_lock: CreateLock::new(()),
            events: parts.events,
            stop_dispatch: parts.stop_dispatch,
            abort: parts.abort,
            charged: tokio::sync::Notify::new(),
            account: parts.account,
            repriced: AtomicBool::new(false),
            stop_reason: Mutex::new(None),
            consecutive_failures: AtomicU32::new(0),
            budget_warned: AtomicBool::new(false),
            settings,
        }
    }

    /// The provider named `provider` (a task's recorded provider) with its poller: the run's own
    /// for `None` or its name, else the earlier provider of that name; `None` when it was not given.
    pub(crate) fn upstream(&self, provider: Option<&str>) -> Option<Upstream> {
        match provider {
            None => Some(self.own_upstream()),
            Some(name) if name == self.client.name() => Some(self.own_upstream()),
            Some(name) => self.earlier.iter().find(|u| u.client.name() == name).cloned(),
        }
    }

    /// The run's own provider and poller.
    pub(crate) fn own_upstream(&self) -> Upstream {
        Upstream {
            client: self.client.clone(),
            poller: self.poller.clone(),
        }
    }

    /// The budget warning was already due when the run started: don't give it again.
    pub(crate) fn budget_already_warned(&self) {
        self.budget_warned.store(true, Ordering::Relaxed);
    }

    /// Whether dispatch has stopped, for any reason (an exhausted budget included).
    pub(crate) fn dispatch_stopped(&self) -> bool {
        self.stop_dispatch.is_cancelled() || self.stop_reason().is_some()
    }
}
