//! What the benchmark programs share: a simulator with ample credit, a client for it, and a fresh
//! ledger in a temporary directory with a job of N one-image rows loaded under a $100 preview budget.

use darkroom_jobs::{Money, Pass};
use darkroom_ledger::Ledger;
use darkroom_luma::Client;
use darkroom_sim::{SimConfig, SimHandle};

/// A loaded job beside its simulator. Dropping it removes the directory; shut the simulator down
/// with [`SimHandle::shutdown`].
#[derive(Debug)]
pub struct Bench {
    /// The temporary directory: the ledger, the job file and `out/`.
    pub dir: tempfile::TempDir,
    /// The simulator (credit: $1,000).
    pub sim: SimHandle,
    /// A client for it.
    pub client: Client,
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
        dir,
        sim,
        client,
        ledger,
        job,
    }
}
