//! What the benchmark programs share: a simulator, a client for it, a fresh ledger in a temporary
//! directory, and a job of `tasks` rows loaded into it.

use std::sync::Arc;
use std::time::Duration;

use darkroom_jobs::{Money, Pass, PriceTable, ReadOptions, Routing};
use darkroom_ledger::Ledger;
use darkroom_luma::{ApiKey, ClientConfig, LumaProvider};
use darkroom_provider::Provider;
use darkroom_sim::{SimConfig, SimHandle};

/// The Luma provider pointed at the simulator at `base_url`, sending `user_agent`.
pub fn provider(base_url: &str, user_agent: &str) -> Arc<dyn Provider> {
    Arc::new(
        LumaProvider::new(ClientConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            download_timeout: Duration::from_secs(30),
            user_agent: user_agent.to_string(),
            ..ClientConfig::new(base_url, ApiKey::new("bench".into()))
        })
        .unwrap(),
    )
}

pub struct Bench {
    pub dir: tempfile::TempDir,
    pub sim: SimHandle,
    pub client: Arc<dyn Provider>,
    pub ledger: Ledger,
    pub job: i64,
}

/// Starts the simulator and loads a `tasks`-row job named `name` with a $100 preview budget.
pub async fn setup(name: &str, sim: SimConfig, tasks: usize, aspect_ratio: &str) -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let sim = darkroom_sim::spawn(SimConfig {
        credits_micros: 1_000_000_000,
        ..sim
    })
    .await
    .unwrap();
    let client = provider(&sim.base_url(), &format!("darkroom-{name}"));
    let ledger = Ledger::open(&dir.path().join("darkroom.db")).await.unwrap();
    let file = dir.path().join(format!("{name}.csv"));
    let mut text = String::from("id,prompt,aspect_ratio\n");
    for i in 0..tasks {
        text.push_str(&format!("t{i},A product photo of item {i},{aspect_ratio}\n"));
    }
    std::fs::write(&file, text).unwrap();
    let job = ledger
        .upsert_job(name, &file.display().to_string(), "")
        .await
        .unwrap();
    ledger
        .set_budget(job, Pass::Preview, Money::parse_usd("100").unwrap())
        .await
        .unwrap();
    darkroom_engine::load::load_job(
        &ledger,
        job,
        &file,
        Pass::Preview,
        Routing::default(),
        PriceTable::default(),
        ReadOptions::default(),
    )
    .await
    .unwrap();
    Bench {
        dir,
        sim,
        client,
        ledger,
        job,
    }
}

/// A sender whose events are read and dropped.
pub fn discard_events() -> tokio::sync::mpsc::Sender<darkroom_engine::Event> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(100_000);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    tx
}
