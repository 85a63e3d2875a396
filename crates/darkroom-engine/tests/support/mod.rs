//! What the engine's integration tests share: a real ledger file in a temporary directory, the
//! simulator on a loopback port, a client pointed at it, and loading a job file as `darkroom run`
//! does before it runs.

#![allow(dead_code)] // Each test file uses its own part of this.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{load, run_pass, Event, Outcome, RunSettings};
use darkroom_jobs::{Money, PriceTable, ReadOptions, Routing};
use darkroom_ledger::Ledger;
use darkroom_luma::{ApiKey, ClientConfig, LumaProvider};
use darkroom_provider::Provider;
use darkroom_sim::{SimConfig, SimHandle};
use tokio::sync::mpsc;

/// The key the tests' provider sends; no test output may contain it.
pub const TEST_KEY: &str = "test-key-do-not-leak";

/// The Luma provider pointed at `base_url` (the simulator), as the engine holds it, giving up on a
/// request after `request_timeout`.
pub fn provider(base_url: &str, request_timeout: Duration) -> Arc<dyn Provider> {
    Arc::new(
        LumaProvider::new(ClientConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout,
            download_timeout: Duration::from_secs(30),
            user_agent: "darkroom-tests".into(),
            ..ClientConfig::new(base_url, ApiKey::new(TEST_KEY.to_string()))
        })
        .unwrap(),
    )
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub ledger: Ledger,
    pub sim: SimHandle,
    pub client: Arc<dyn Provider>,
}

impl Harness {
    /// A ledger in a new temporary directory and a simulator with `sim_config`; the client waits
    /// 10 s for an answer.
    pub async fn start(sim_config: SimConfig) -> Harness {
        Harness::start_with_timeout(sim_config, Duration::from_secs(10)).await
    }

    /// The same, with a client that gives up on a request after `request_timeout`.
    pub async fn start_with_timeout(sim_config: SimConfig, request_timeout: Duration) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("darkroom.db")).await.unwrap();
        let sim = darkroom_sim::spawn(sim_config).await.unwrap();
        let client = provider(&sim.base_url(), request_timeout);
        Harness {
            dir,
            ledger,
            sim,
            client,
        }
    }

    /// Deletes a generation upstream, as a person might in the web app: the simulator then no
    /// longer serves it.
    pub async fn delete_generation(&self, id: &str) {
        reqwest::Client::new()
            .delete(format!("{}/generations/{id}", self.sim.base_url()))
            .bearer_auth(TEST_KEY)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }

    /// Creates the job, sets its budget and loads the file: what `darkroom run` does before running.
    pub async fn load(&self, file: &Path, settings: &RunSettings, budget: Money) -> i64 {
        let job = self
            .ledger
            .upsert_job(&settings.job_name, &file.display().to_string(), "")
            .await
            .unwrap();
        self.ledger.set_budget(job, settings.pass, budget).await.unwrap();
        load::load_job(
            &self.ledger,
            job,
            file,
            settings.pass,
            Routing::default(),
            PriceTable::default(),
            ReadOptions::default(),
        )
        .await
        .unwrap();
        job
    }

    /// Runs the loaded pass to its end, collecting every event it emitted.
    pub async fn run_collecting(&self, job: i64, settings: &RunSettings) -> (Outcome, Vec<Event>) {
        let (tx, mut rx) = mpsc::channel(100_000);
        let collector = tokio::spawn(async move {
            let mut events = Vec::new();
            while let Some(e) = rx.recv().await {
                events.push(e);
            }
            events
        });
        let outcome = run_pass(&self.ledger, &self.client, settings, job, tx, Shutdown::default())
            .await
            .unwrap();
        (outcome, collector.await.unwrap())
    }
}

/// The JPEG images in `dir`.
pub fn images_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "jpg"))
                .count()
        })
        .unwrap_or(0)
}
