//! What the engine's integration tests share: a real ledger file in a temporary directory, the
//! simulator on a loopback port, a client pointed at it, and loading a job file as `darkroom run`
//! does before it runs.

#![allow(dead_code)] // Each test file uses its own part of this.

use std::path::Path;
use std::time::Duration;

use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{load, run_pass, Event, Outcome, RunSettings};
use darkroom_jobs::{Money, PriceTable, ReadOptions, Routing};
use darkroom_ledger::Ledger;
use darkroom_luma::{ApiKey, Client, ClientConfig};
use darkroom_sim::{SimConfig, SimHandle};
use tokio::sync::mpsc;

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub ledger: Ledger,
    pub sim: SimHandle,
    pub client: Client,
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
        let client = Client::new(ClientConfig {
            base_url: sim.base_url(),
            api_key: ApiKey::new("test-key-do-not-leak".to_string()),
            connect_timeout: Duration::from_secs(5),
            request_timeout,
            download_timeout: Duration::from_secs(30),
            user_agent: "darkroom-tests".into(),
        })
        .unwrap();
        Harness {
            dir,
            ledger,
            sim,
            client,
        }
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
