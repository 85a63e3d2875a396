//! Callbacks: a create with `callback_url` gets the generation POSTed when it starts dreaming and
//! when it ends, each delivery retried up to 3 times 100 ms apart on anything but 200, with a 5 s
//! timeout, as Luma documents. Deliveries are unsigned, as Luma's are.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::Sim;

pub(crate) fn schedule(sim: Arc<Sim>, id: String, url: String) {
    let tracker = sim.tracker.clone();
    tracker.spawn(async move {
        let times = {
            let account = sim.lock();
            account.generations.get(&id).map(|g| {
                (
                    g.dreaming_at,
                    g.done_at,
                    matches!(g.outcome, crate::state::Outcome::Stuck),
                )
            })
        };
        let Some((dreaming_at, done_at, stuck)) = times else {
            return;
        };
        tokio::select! {
            () = sim.stop.cancelled() => {}
            () = async {
                tokio::time::sleep_until(dreaming_at).await;
                deliver(&sim, &id, &url).await;
                if !stuck {
                    tokio::time::sleep_until(done_at.max(Instant::now())).await;
                    deliver(&sim, &id, &url).await;
                }
            } => {}
        }
    });
}

async fn deliver(sim: &Sim, id: &str, url: &str) {
    let body = {
        let now = Instant::now();
        let mut account = sim.lock();
        account.settle(now);
        match account.generations.get(id) {
            Some(generation) => generation.to_json(now, &sim.asset_base()),
            None => return,
        }
    };
    let (lost, twice) = {
        let mut account = sim.lock();
        let faults = sim.config.faults;
        let lost = account.chance(faults.callback_lost);
        let twice = !lost && account.chance(faults.callback_duplicated);
        if lost {
            account.fault("callback_lost");
        }
        if twice {
            account.fault("callback_duplicated");
        }
        (lost, twice)
    };
    if lost {
        return;
    }
    if twice {
        post(sim, url, &body).await;
    }
    post(sim, url, &body).await;
}

/// One delivery: POSTed, then retried up to 3 times 100 ms apart on anything but 200.
async fn post(sim: &Sim, url: &str, body: &serde_json::Value) {
    for attempt in 0..4 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let sent = sim
            .http
            .post(url)
            .timeout(Duration::from_secs(5))
            .json(body)
            .send()
            .await;
        let ok = matches!(&sent, Ok(r) if r.status().as_u16() == 200);
        sim.lock()
            .count(format!("callback {}", if ok { "delivered" } else { "failed" }));
        if ok {
            return;
        }
    }
}
