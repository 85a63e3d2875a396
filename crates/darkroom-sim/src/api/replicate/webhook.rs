//! Replicate's webhooks: a create whose body names `webhook` gets the prediction POSTed when it
//! ends (the `completed` event; with `webhook_events_filter` naming `start`, also when it starts),
//! signed the Standard Webhooks way as Replicate signs: `webhook-id` (`msg_` and the prediction's
//! id, the same on every retry), `webhook-timestamp` (Unix seconds) and `webhook-signature`
//! (`v1,` and the base64 HMAC-SHA256 of `"{id}.{timestamp}.{body}"`) under the account's secret,
//! which `GET /replicate/v1/webhooks/default/secret` returns as `{"key": "whsec_..."}`. The
//! terminal delivery is retried up to 3 times 100 ms apart on anything but 2xx (Replicate retries
//! for about a minute). The callback faults (lost, duplicated) and the signature faults (unsigned,
//! forged, replayed: `tamper.rs`) apply. Stats count `replicate webhook delivered`, `... refused`
//! (401) and `... failed`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::prediction;
use crate::api::tamper::Tamper;
use crate::state::Outcome;
use crate::Sim;

/// The account's signing key: fixed by the simulator's seed, so a test may sign as it does.
fn secret_bytes(sim: &Sim, purpose: &str) -> [u8; 32] {
    *blake3::hash(format!("replicate {purpose} {}", sim.config.seed).as_bytes()).as_bytes()
}

/// `GET /replicate/v1/webhooks/default/secret`: `{"key": "whsec_<base64>"}`.
pub(super) async fn secret(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    let response = match crate::api::authorize(&sim, &headers) {
        Ok(()) => {
            let key = base64::engine::general_purpose::STANDARD.encode(secret_bytes(&sim, "webhook secret"));
            Json(json!({"key": format!("whsec_{key}")})).into_response()
        }
        Err(response) => response,
    };
    crate::api::counted(&sim, "GET /replicate/webhooks/default/secret", response)
}

/// What a create's body asks to be told: the URL, and whether the `start` event too.
pub(super) fn requested(body: &Value) -> Option<(String, bool)> {
    let url = body.get("webhook")?.as_str()?.to_string();
    let start = body
        .get("webhook_events_filter")
        .and_then(Value::as_array)
        .is_some_and(|events| events.iter().any(|e| e == "start"));
    Some((url, start))
}

/// Delivers `id`'s start (when asked) and completed events to `url`, each when it happens.
pub(super) fn schedule(sim: Arc<Sim>, id: String, url: String, start: bool) {
    let tracker = sim.tracker.clone();
    tracker.spawn(async move {
        let times = {
            let account = sim.lock();
            account
                .generations
                .get(&id)
                .filter(|g| !matches!(g.outcome, Outcome::Stuck))
                .map(|g| (g.dreaming_at, g.done_at))
        };
        let Some((started_at, done_at)) = times else {
            return;
        };
        tokio::select! {
            () = sim.stop.cancelled() => {}
            () = async {
                if start {
                    tokio::time::sleep_until(started_at.max(Instant::now())).await;
                    deliver(&sim, &id, &url, false).await;
                }
                tokio::time::sleep_until(done_at.max(Instant::now())).await;
                deliver(&sim, &id, &url, true).await;
            } => {}
        }
    });
}

async fn deliver(sim: &Sim, id: &str, url: &str, terminal: bool) {
    let (body, lost, twice, tamper) = {
        let now = Instant::now();
        let mut account = sim.lock();
        account.settle(now);
        let Some(generation) = account.generations.get(id) else {
            return;
        };
        let body = prediction(generation, now, sim).to_string();
        let faults = sim.config.faults;
        let lost = account.chance(faults.callback_lost);
        let twice = !lost && account.chance(faults.callback_duplicated);
        if lost {
            account.fault("callback_lost");
        }
        if twice {
            account.fault("callback_duplicated");
        }
        let tamper = if lost {
            Tamper::Genuine
        } else {
            Tamper::draw(&mut account, &faults)
        };
        (body, lost, twice, tamper)
    };
    if lost {
        return;
    }
    let tries = if terminal { 4 } else { 1 };
    if twice {
        post(sim, id, url, &body, tamper, tries).await;
    }
    post(sim, id, url, &body, tamper, tries).await;
}

/// One delivery, signed as Replicate signs (or as `tamper` spoils it), tried `tries` times 100 ms
/// apart until one is answered 2xx.
async fn post(sim: &Sim, id: &str, url: &str, body: &str, tamper: Tamper, tries: u32) {
    let secret = secret_bytes(
        sim,
        if tamper == Tamper::Forged {
            "forger"
        } else {
            "webhook secret"
        },
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let message_id = format!("msg_{id}");
    for attempt in 0..tries {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let timestamp = tamper.timestamp();
        let tag = ring::hmac::sign(&key, format!("{message_id}.{timestamp}.{body}").as_bytes());
        let signature = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
        );
        let mut request = sim
            .http
            .post(url)
            .timeout(Duration::from_secs(5))
            .header("content-type", "application/json")
            .body(body.to_string());
        if tamper != Tamper::Unsigned {
            request = request
                .header("webhook-id", &message_id)
                .header("webhook-timestamp", &timestamp)
                .header("webhook-signature", signature);
        }
        let status = request.send().await.ok().map(|r| r.status().as_u16());
        sim.lock()
            .count(format!("replicate webhook {}", Tamper::outcome(status)));
        if status.is_some_and(|s| (200..300).contains(&s)) {
            return;
        }
    }
}
