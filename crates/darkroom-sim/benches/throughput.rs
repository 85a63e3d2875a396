//! How fast the simulator answers, so it is never the bottleneck of a darkroom benchmark:
//! create+get pairs per second and image downloads per second (first render and cached), with limits
//! off, over real HTTP on loopback. Run: `cargo bench -p darkroom-sim --bench throughput`.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use darkroom_sim::SimConfig;
use serde_json::{json, Value};

const CLIENTS: usize = 32;

#[tokio::main]
async fn main() {
    let sim = darkroom_sim::spawn(SimConfig {
        credits_micros: i64::MAX / 4,
        ..SimConfig::unlimited()
    })
    .await
    .unwrap();
    let base = sim.base_url();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();

    // create + get, for a fixed time.
    let run_for = Duration::from_secs(5);
    let pairs = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for c in 0..CLIENTS {
        let (http, base, pairs) = (http.clone(), base.clone(), pairs.clone());
        handles.push(tokio::spawn(async move {
            let mut i = 0u64;
            while start.elapsed() < run_for {
                let body = json!({"model": "photon-flash-1", "prompt": format!("Bench prompt {c}-{i}"), "aspect_ratio": "1:1"});
                let created: Value = http.post(format!("{base}/generations/image")).bearer_auth("k").json(&body).send().await.unwrap().json().await.unwrap();
                let id = created["id"].as_str().unwrap();
                let got = http.get(format!("{base}/generations/{id}")).bearer_auth("k").send().await.unwrap();
                assert_eq!(got.status(), 200);
                pairs.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let pair_rate = pairs.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();

    // Downloads of 400 distinct completed generations (first render), then again (cached).
    let mut urls = Vec::new();
    for i in 0..400 {
        let body = json!({"model": "photon-flash-1", "prompt": format!("Download bench {i}"), "aspect_ratio": "16:9"});
        let created: Value = http
            .post(format!("{base}/generations/image"))
            .bearer_auth("k")
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = created["id"].as_str().unwrap().to_string();
        let got: Value = http
            .get(format!("{base}/generations/{id}"))
            .bearer_auth("k")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        urls.push(got["assets"]["image"].as_str().unwrap().to_string());
    }
    let mut rates = Vec::new();
    for _ in 0..2 {
        let urls = Arc::new(urls.clone());
        let next = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..CLIENTS {
            let (http, urls, next, bytes) = (http.clone(), urls.clone(), next.clone(), bytes.clone());
            handles.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(url) = urls.get(i) else { break };
                    let body = http.get(url).send().await.unwrap().bytes().await.unwrap();
                    bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let seconds = start.elapsed().as_secs_f64();
        rates.push((
            urls.len() as f64 / seconds,
            bytes.load(Ordering::Relaxed) as f64 / urls.len() as f64,
        ));
    }
    println!("| measure | result | goal |");
    println!("|---|---|---|");
    println!("| create + get pairs per second ({CLIENTS} clients) | {pair_rate:.0} | ≥ 2,000 |");
    println!(
        "| 2048×1152 JPEG downloads per second, first render | {:.0} (avg {:.0} KB) | ≥ 200 |",
        rates[0].0,
        rates[0].1 / 1024.0
    );
    println!(
        "| 2048×1152 JPEG downloads per second, cached | {:.0} | ≥ 200 |",
        rates[1].0
    );
    sim.shutdown().await;
}
