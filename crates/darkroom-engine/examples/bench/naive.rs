//! The client a user would otherwise script, beside darkroom.

use std::path::Path;
use std::time::{Duration, Instant};

use darkroom_sim::{Faults, RateWindow, SimConfig};
use futures::StreamExt;
use tokio::runtime::Handle;

use crate::setup::{run_darkroom, start_sim, stop_sim, FLASH_MICROS};

/// What a user would otherwise script: every row fired with bounded concurrency and no create-rate
/// limiter, each failed call retried up to twice (as the official SDKs do: 0.5 s doubling, or the
/// `Retry-After` given), each generation polled with GET every 250 ms, then its image downloaded.
pub(crate) async fn naive_run(base_url: &str, tasks: usize, concurrent: usize, dir: &Path) -> (f64, u64) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let started = Instant::now();
    let done = futures::stream::iter(0..tasks)
        .map(|i| {
            let http = http.clone();
            let base_url = base_url.to_string();
            let path = dir.join(format!("t{i}.jpg"));
            async move {
                let body = serde_json::json!({
                    "prompt": format!("A product photo of item {i}"),
                    "model": "photon-flash-1",
                    "aspect_ratio": "16:9",
                });
                let created: serde_json::Value = call(|| {
                    http.post(format!("{base_url}/generations/image"))
                        .bearer_auth("naive")
                        .json(&body)
                })
                .await?;
                let id = created["id"].as_str()?.to_string();
                let url = loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let generation: serde_json::Value = call(|| {
                        http.get(format!("{base_url}/generations/{id}"))
                            .bearer_auth("naive")
                    })
                    .await?;
                    match generation["state"].as_str() {
                        Some("completed") => break generation["assets"]["image"].as_str()?.to_string(),
                        Some("failed") => return None,
                        _ => {}
                    }
                };
                let bytes = http.get(url).send().await.ok()?.bytes().await.ok()?;
                tokio::fs::write(&path, &bytes).await.ok()?;
                Some(())
            }
        })
        .buffer_unordered(concurrent)
        .filter(|r| std::future::ready(r.is_some()))
        .count()
        .await;
    (started.elapsed().as_secs_f64(), done as u64)
}

/// One API call with up to two retries on 408, 409, 429, 5xx and connection errors.
pub(crate) async fn call(request: impl Fn() -> reqwest::RequestBuilder) -> Option<serde_json::Value> {
    let mut delay = Duration::from_millis(500);
    for attempt in 0..3 {
        let last = attempt == 2;
        match request().send().await {
            Ok(response) if response.status().is_success() => return response.json().await.ok(),
            Ok(response) => {
                let status = response.status().as_u16();
                if last || !(status == 408 || status == 409 || status == 429 || status >= 500) {
                    return None;
                }
                let wait = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|s| *s <= 60.0)
                    .map_or(delay, Duration::from_secs_f64);
                tokio::time::sleep(wait).await;
            }
            Err(_) if !last => tokio::time::sleep(delay).await,
            Err(_) => return None,
        }
        delay *= 2;
    }
    None
}

/// darkroom beside the naive client, on the same simulated account.
pub(crate) async fn naive(sims: &Handle) -> String {
    let tasks = 1000;
    let dropped = Faults {
        create_dropped: 0.02,
        ..Faults::default()
    };
    let cases = [
        ("3,000/min, 40 concurrent", 3000, 1.0, Faults::default()),
        (
            "80/min, 40 concurrent (time scale 0.01)",
            80,
            0.01,
            Faults::default(),
        ),
        (
            "3,000/min, 40 concurrent, 2% accepted-then-dropped",
            3000,
            1.0,
            dropped,
        ),
    ];
    let mut out = String::from(
        "### darkroom beside a naive client (1,000 previews)\n\n\
         | scenario | client | wall | 429s | rows lost | paid twice |\n|---|---|---|---|---|---|\n",
    );
    for (name, per_minute, time_scale, faults) in cases {
        let config = SimConfig {
            creates_per_minute: Some(per_minute),
            max_concurrent: Some(40),
            rate_window: RateWindow::Sliding,
            time_scale,
            faults,
            seed: 7,
            ..SimConfig::default()
        };
        let sim = start_sim(sims, config.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let (wall, done) = naive_run(&sim.base_url(), tasks, 40, dir.path()).await;
        let stats = sim.stats();
        let naive_paid_twice = sim.billing().net_micros / FLASH_MICROS - done as i64;
        stop_sim(sims, sim).await;
        let ours = run_darkroom(sims, config, tasks, Some(per_minute), 40).await;
        let rows = [
            format!(
                "| {name} | naive | {wall:.1} s | {} | {} | {naive_paid_twice} |\n",
                stats.rate_limited,
                tasks as u64 - done
            ),
            format!(
                "| | darkroom | {:.1} s ({:.2}× naive) | {} | {} | {} |\n",
                ours.wall,
                ours.wall / wall,
                ours.rate_limited,
                ours.not_done,
                ours.paid_twice
            ),
        ];
        for row in rows {
            eprint!("{row}");
            out.push_str(&row);
        }
    }
    out
}
