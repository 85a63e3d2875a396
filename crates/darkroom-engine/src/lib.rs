//! darkroom-engine: runs a pass of a job to completion against the upstream.
//!
//! It owns the scheduler (`scheduler`: a run in phases, prepare, resume, dispatch, drain and
//! finish, over one run context), one task's steps (create, reconcile, poll, download), the one
//! retry policy (`retry`), the two limits every create passes (`limits`: a create-rate gate and an
//! in-flight cap), batched polling (`poller`), reconciliation of creates whose outcome is unknown
//! (`reconcile`), downloads and verification (`images`), the output files (`outputs`), loading a
//! job file into the ledger (`load`), the per-job run lock (`lock`) and shutdown, and what the CLI
//! and the review server share: the budget policy (`budget`), preparing a job (`prepare`),
//! promotion (`promote`) and atomic writes (`files`). It holds no SQL (that is `darkroom-ledger`)
//! and parses no command line (that is `darkroom-cli`).

#![warn(missing_docs, unreachable_pub, clippy::too_many_lines)]

pub mod account;
pub mod audit;
pub mod budget;
pub mod callbacks;
pub mod capable;
mod clock;
pub mod content;
pub mod events;
pub mod export;
pub mod files;
pub mod images;
pub mod limits;
pub mod load;
pub mod lock;
pub mod metadata;
pub mod notify;
pub mod outputs;
pub mod poller;
pub mod prepare;
pub mod prices;
pub mod promote;
pub mod qc;
pub mod reconcile;
pub mod reframe;
mod requests;
pub mod retry;
pub mod routing;
mod run_context;
pub mod schedule_times;
pub mod scheduler;
mod task;
pub mod trial;

use std::path::PathBuf;
use std::time::Duration;

use darkroom_jobs::{Model, Money, Pass, PriceTable};

pub use clock::WallClock;
pub use events::Event;
pub use run_context::StopReason;
pub use scheduler::{run_pass, Outcome};

/// Everything a pass needs to know, resolved by the caller from config and flags.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// The job's name: its directory under `out_dir`.
    pub job_name: String,
    /// The pass to run: previews or finals.
    pub pass: Pass,
    /// `OUT`: images go to `OUT/JOB/PASS/`, the output files to `OUT/JOB/`.
    pub out_dir: PathBuf,
    /// Prices per image by model (integer micro-dollars), for reservations and charges.
    pub prices: PriceTable,
    /// Creates per `rate_window`; `None` turns the create-rate limit off.
    pub creates_per_minute: Option<u32>,
    /// The window the create limit counts over: a minute for a real account (shorter only against a
    /// time-scaled simulator).
    pub rate_window: Duration,
    /// How creates are paced under that rate: learned from the upstream's 429s (a burst first), or
    /// strictly spaced for accounts that must never see a 429 (`[limits] pacing`).
    pub pacing: limits::Pacing,
    /// Generations in flight at once (the upstream's concurrency limit).
    pub max_in_flight: u32,
    /// Attempts per task: the first create and its retries.
    pub max_attempts: u32,
    /// Typical create-to-completed time per model: the first poll comes soon after it.
    pub latency_photon_1: Duration,
    /// The same for photon-flash-1.
    pub latency_photon_flash_1: Duration,
    /// Status reads (GET or list) per second.
    pub polls_per_second: u32,
    /// Reuse a verified image with the same fingerprint from any job of this ledger.
    pub use_cache: bool,
    /// Write darkroom's metadata (prompt, model, provider, generation, job, row, pass, variant,
    /// source, version) inside every image kept (`metadata`). Off: downloads are kept as the
    /// provider sent them, and a cache copy loses its source's metadata.
    pub metadata: bool,
    /// After the first Ctrl-C, how long in-flight generations get to finish and download.
    pub drain_timeout: Duration,
    /// A generation not terminal this long after its submission (as the ledger records it, so a
    /// resumed run counts the time before the resume too) is abandoned, its charge kept, and
    /// retried.
    pub stuck_after: Duration,
    /// The clock the ledger's times are read against ([`WallClock::System`]; a test on paused
    /// time passes one that moves with tokio's clock).
    pub wall_clock: WallClock,
    /// How long an unbroken run of 429s, with no create accepted, may last before the run stops as
    /// refused (`StopReason::Refused`).
    pub give_up_after: Duration,
    /// How long after its intent a create whose outcome is unknown is searched for in the
    /// upstream's list (at growing intervals) before the task may be sent again: long enough to
    /// cover an upstream that commits a create well after the client stopped waiting.
    pub settle_window: Duration,
    /// Consecutive failed creates after which the run stops (the upstream is clearly failing).
    pub breaker_threshold: u32,
    /// The largest image accepted, in bytes.
    pub max_image_bytes: u64,
    /// Images downloaded at once.
    pub max_downloads: u32,
    /// Unix milliseconds after which no new create is sent: in-flight work finishes and the rest
    /// is skipped (deadline).
    pub deadline_ms: Option<i64>,
    /// Callbacks: each create names its own URL on this receiver, and a callback makes the poller
    /// read that generation at once; polling slows to a safety net.
    pub callbacks: Option<callbacks::CallbackReceiver>,
    /// Providers other than the run's that received creates of this pass in earlier runs (a job
    /// resumed with another provider): each create still unsettled is reconciled, polled and
    /// downloaded on the provider that received it, never looked for in another's list. A pass with
    /// an unsettled create on a provider not given here is refused before anything is sent
    /// ([`EngineError::ProviderMissing`]). Empty by default.
    pub earlier_providers: Vec<std::sync::Arc<dyn darkroom_provider::Provider>>,
    /// The longest wait between two readings of the account's balance while charges are being
    /// recorded (a reading is also taken as soon as enough charges accumulate to tell a price
    /// apart): see `prices`.
    pub balance_every: Duration,
    /// The waits between tries of the same thing (a create, a download, a reconciliation's
    /// reads): see `retry`.
    pub retry: retry::RetryPolicy,
    /// The quality checks every kept image gets, and their thresholds: see `qc`.
    pub qc: qc::QcSettings,
    /// The upstream account the run is on: its create rate and in-flight cap are shared with
    /// every other run on it through the ledger (`account`). `None`: the run paces itself alone.
    pub account: Option<account::Account>,
    /// The label (a team, a client) the job's spend counts toward (`--label`); `None` keeps the
    /// job's label, an empty one removes it.
    pub label: Option<String>,
    /// The tasks this run may start, by key (`None`: every task of the pass). A command that
    /// adds tasks to a shared pass (`reframe`, `promote`) makes only its own: other pending or
    /// skipped tasks of the pass are neither reopened, sent nor skipped by it. Work already in
    /// flight is finished whatever the scope.
    pub scope: Option<darkroom_ledger::TaskScope>,
}

impl RunSettings {
    /// The usual create-to-completed time of `model` (`latency_photon_1` or
    /// `latency_photon_flash_1`).
    pub fn expected_latency(&self, model: Model) -> Duration {
        match model {
            Model::Photon1 => self.latency_photon_1,
            Model::PhotonFlash1 => self.latency_photon_flash_1,
        }
    }

    /// When the poller first reads a new generation: soon after its usual latency, or, with
    /// callbacks on, only as a safety net for a callback that never came.
    pub fn first_read_after(&self, model: Model) -> Duration {
        let expected = self.expected_latency(model);
        match self.callbacks {
            Some(_) => (expected * 4).max(callbacks::SAFETY_FIRST_READ),
            None => expected,
        }
    }

    /// Settings with the account's documented limits and sensible timeouts, for tests and as a base.
    pub fn new(job_name: impl Into<String>, pass: Pass, out_dir: impl Into<PathBuf>) -> RunSettings {
        RunSettings {
            job_name: job_name.into(),
            pass,
            out_dir: out_dir.into(),
            prices: PriceTable::default(),
            creates_per_minute: Some(80),
            rate_window: Duration::from_secs(60),
            pacing: limits::Pacing::Learn,
            max_in_flight: 40,
            max_attempts: 4,
            latency_photon_1: Duration::from_millis(3500),
            latency_photon_flash_1: Duration::from_millis(300),
            polls_per_second: 20,
            use_cache: true,
            metadata: true,
            drain_timeout: Duration::from_secs(60),
            stuck_after: Duration::from_secs(600),
            wall_clock: WallClock::System,
            give_up_after: limits::DEFAULT_GIVE_UP_AFTER,
            settle_window: DEFAULT_SETTLE_WINDOW,
            breaker_threshold: 20,
            max_image_bytes: 64 * 1024 * 1024,
            max_downloads: 8,
            deadline_ms: None,
            callbacks: None,
            earlier_providers: Vec::new(),
            balance_every: Duration::from_secs(2),
            retry: retry::RetryPolicy::default(),
            qc: qc::QcSettings::default(),
            account: None,
            label: None,
            scope: None,
        }
    }
}

/// The default settlement window: 4 minutes from the intent. The client gives up on a create
/// after 60 s; a create the upstream commits up to three minutes after that (the slowest commits
/// seen took 65 s) is still found before anything is sent again. Later commits are caught by the
/// end-of-run audit as extra charges.
pub const DEFAULT_SETTLE_WINDOW: Duration = Duration::from_secs(240);

/// A failure that stops the whole run (not a failed task, which is data).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The ledger failed (its own error says how).
    #[error(transparent)]
    Ledger(#[from] darkroom_ledger::LedgerError),
    /// The pass's provider can't make some of the tasks it is about to send as asked (each with
    /// its line, row and reasons, in file order): the pass is refused whole and nothing was sent.
    #[error("{} task(s) ask for what {provider} can't make; nothing was sent", tasks.len())]
    Incapable {
        /// The provider (`luma`, `replicate`, `fal`).
        provider: String,
        /// The tasks it can't make.
        tasks: Vec<capable::Incapable>,
    },
    /// Creates of the pass sent to another provider are not settled, and that provider was not
    /// given (`RunSettings::earlier_providers`): nothing was sent.
    #[error("{} create(s) of this pass were sent to {provider} and are not settled ({}); they can only be settled on {provider}", tasks.len(), tasks.join(", "))]
    ProviderMissing {
        /// The provider that received them (`luma`, `replicate`, `fal`).
        provider: String,
        /// Their task keys.
        tasks: Vec<String>,
    },
    /// An output file or directory could not be written.
    #[error("could not write {path}")]
    Output {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A task's request as stored in the ledger is not a request: the ledger was edited by hand
    /// or by another version.
    #[error("the task's stored request could not be read (task {task_key})")]
    CorruptRequest {
        /// The task's key.
        task_key: String,
        /// What the JSON parser said.
        #[source]
        source: serde_json::Error,
    },
    /// `--callbacks-listen` could not be served.
    #[error("the callback receiver on {addr} could not start")]
    Callbacks {
        /// The address it was to listen on.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// With callbacks on, what checks a provider's signed deliveries (Replicate's signing
    /// secret, fal's published keys) could not be read: nothing was sent.
    #[error("{provider}'s webhook signing secret or keys could not be read, so its callbacks could not be checked; nothing was sent")]
    WebhookKeys {
        /// The provider (`replicate`, `fal`).
        provider: String,
        /// What the provider said.
        #[source]
        source: darkroom_provider::ProviderError,
    },
}

/// The budget warning fires once when spend reaches this share of the budget (in percent).
pub const BUDGET_WARNING_PERCENT: i64 = 80;

/// Whether `spent` has reached the warning share of `budget`.
pub fn budget_warning_due(spent: Money, budget: Money) -> bool {
    budget.micros() > 0
        && spent.micros().saturating_mul(100) >= budget.micros().saturating_mul(BUDGET_WARNING_PERCENT)
}
