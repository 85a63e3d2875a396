//! What the benchmark programs share: a simulator with ample credit, a client for it, and a fresh
//! ledger in a temporary directory with a job of N one-image rows loaded under a $100 preview budget.

use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{run_pass, Outcome, RunSettings};
use darkroom_jobs::{Money, Pass};
use darkroom_ledger::Ledger;
use darkroom_provider::Provider;
use darkroom_sim::{SimConfig, SimHandle};
use std::sync::Arc;

/// A loaded job beside its simulator. Dropping it removes the directory; shut the simulator down
/// with [`SimHandle::shutdown`].
#[derive(Debug)]
pub struct Bench {
    /// The job's name.
    pub name: String,
    /// The temporary directory: the ledger, the job file and `out/`.
    pub dir: tempfile::TempDir,
    /// The simulator (credit: $1,000).
    pub sim: SimHandle,
    /// A client for it.
    pub client: Arc<dyn Provider>,
    /// The ledger, open, with the job loaded.
    pub ledger: Ledger,
    /// The job's id.
    pub job: i64,
}

/// Starts the simulator with `sim` (its credit raised to $1,000) and loads job `name`: `tasks` rows
/// `tI,A product photo of item I,ASPECT_RATIO` with a $100 preview budget.
///
/// # Panics
/// If any part cannot be made (see [`crate::sim`] and [`crate::ledger`]).
pub async fn setup(name: &str, sim: SimConfig, tasks: usize, aspect_ratio: &str) -> Bench {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sim = crate::sim::spawn(SimConfig {
        credits_micros: 1_000_000_000,
        ..sim
    })
    .await;
    let client = crate::sim::client(&sim, crate::sim::REQUEST_TIMEOUT);
    let ledger = crate::ledger::open_in(dir.path()).await;
    let file = crate::jobs::write_csv(dir.path(), &format!("{name}.csv"), tasks, |i| {
        format!("t{i},A product photo of item {i},{aspect_ratio}")
    });
    let budget = Money::parse_usd("100").expect("a valid amount");
    let job = crate::ledger::load_job(&ledger, name, &file, Pass::Preview, budget).await;
    Bench {
        name: name.to_string(),
        dir,
        sim,
        client,
        ledger,
        job,
    }
}

impl Bench {
    /// The preview pass's default settings for this job, writing under `DIR/out`.
    pub fn settings(&self) -> RunSettings {
        RunSettings::new(&self.name, Pass::Preview, self.dir.path().join("out"))
    }

    /// Runs the preview pass with `settings` to its end, its events dropped.
    ///
    /// # Panics
    /// If the pass fails systemically (a ledger error).
    pub async fn run(&self, settings: &RunSettings) -> Outcome {
        let events = crate::events::discard();
        run_pass(
            &self.ledger,
            &self.client,
            settings,
            self.job,
            events,
            Shutdown::default(),
        )
        .await
        .expect("the pass runs to its end")
    }
}
