//! The engine's test harness: a ledger in a temporary directory, the simulator, a client for it,
//! loading a job as `darkroom run` does and running a pass to its end.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{run_pass, Event, Outcome, RunSettings};
use darkroom_jobs::{Money, Pass};
use darkroom_ledger::Ledger;
use darkroom_provider::Provider;
use darkroom_sim::{SimConfig, SimHandle};

/// A ledger, a simulator and a client for it; the temporary directory holds the ledger and is
/// where tests put job files and outputs. Everything is removed when dropped.
#[derive(Debug)]
pub struct Harness {
    /// The temporary directory (the ledger is `darkroom.db` in it).
    pub dir: tempfile::TempDir,
    /// The ledger, open.
    pub ledger: Ledger,
    /// The simulator on a loopback port.
    pub sim: SimHandle,
    /// A client for the simulator.
    pub client: Arc<dyn Provider>,
}

impl Harness {
    /// A harness whose simulator runs 50 times faster than the API (`time_scale` 0.02), with no
    /// create-rate limit and 40 generations in flight at most: what most engine tests run against.
    pub async fn fast() -> Harness {
        Harness::start(SimConfig {
            time_scale: 0.02,
            creates_per_minute: None,
            max_concurrent: Some(40),
            ..SimConfig::default()
        })
        .await
    }

    /// Run settings for a preview pass of `job` writing under this harness's `out/`, paced for the
    /// fast simulator: no create-rate limit, a 10 ms expected latency for `photon-flash-1`, 200
    /// status reads a second. Tests change the fields their case is about.
    pub fn settings(&self, job: &str) -> RunSettings {
        let mut s = RunSettings::new(job, Pass::Preview, self.dir.path().join("out"));
        s.creates_per_minute = None;
        s.latency_photon_flash_1 = Duration::from_millis(10);
        s.polls_per_second = 200;
        s
    }

    /// A ledger in a new temporary directory and a simulator with `sim_config`; the client waits
    /// [`crate::sim::REQUEST_TIMEOUT`] for an answer.
    pub async fn start(sim_config: SimConfig) -> Harness {
        Harness::start_with_timeout(sim_config, crate::sim::REQUEST_TIMEOUT).await
    }

    /// The same, with a client that gives up on a request after `request_timeout`.
    ///
    /// # Panics
    /// If the directory, the ledger, the simulator or the client cannot be made.
    pub async fn start_with_timeout(sim_config: SimConfig, request_timeout: Duration) -> Harness {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ledger = crate::ledger::open_in(dir.path()).await;
        let sim = crate::sim::spawn(sim_config).await;
        let client = crate::sim::client(&sim, request_timeout);
        Harness {
            dir,
            ledger,
            sim,
            client,
        }
    }

    /// Deletes a generation upstream, as a person might in the web app: the simulator then no
    /// longer serves it.
    ///
    /// # Panics
    /// If the simulator does not answer with success.
    pub async fn delete_generation(&self, id: &str) {
        reqwest::Client::new()
            .delete(format!("{}/generations/{id}", self.sim.base_url()))
            .bearer_auth(crate::sim::TEST_KEY)
            .send()
            .await
            .expect("the simulator answers")
            .error_for_status()
            .expect("the simulator deletes the generation");
    }

    /// Creates the job, sets its budget and loads the file: what `darkroom run` does before
    /// running. Returns the job's id.
    pub async fn load(&self, file: &Path, settings: &RunSettings, budget: Money) -> i64 {
        crate::ledger::load_job(&self.ledger, &settings.job_name, file, settings.pass, budget).await
    }

    /// Runs the loaded pass to its end, collecting every event it emitted.
    ///
    /// # Panics
    /// If the pass fails systemically (a ledger error).
    pub async fn run_collecting(&self, job: i64, settings: &RunSettings) -> (Outcome, Vec<Event>) {
        let (tx, collector) = crate::events::collect();
        let outcome = run_pass(&self.ledger, &self.client, settings, job, tx, Shutdown::default())
            .await
            .expect("the pass runs to its end");
        let events = collector.await.expect("the event collector ends");
        (outcome, events)
    }
}

/// The JPEG images (`*.jpg`) in `dir`; 0 if it does not exist.
pub fn images_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.expect("a directory entry reads").path())
                .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
                .count()
        })
        .unwrap_or(0)
}
