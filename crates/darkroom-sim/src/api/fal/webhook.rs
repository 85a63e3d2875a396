//! fal's webhook deliveries: a submit with `?fal_webhook=URL` gets `{request_id,
//! gateway_request_id, status: "OK"|"ERROR", payload, error?}` POSTed when it ends, signed with
//! ED25519 as fal signs (`X-Fal-Webhook-*` headers over `request_id\nuser_id\ntimestamp\n
//! hex(sha256(body))`) by a key published at `/fal/rest/.well-known/jwks.json`. A delivery is
//! retried up to 3 times 100 ms apart on anything but 2xx (fal retries 10 times over ~2 h); the
//! callback faults (lost, duplicated) and the signature faults (unsigned, forged, replayed:
//! `tamper.rs`) apply. Stats count `webhook delivered`, `webhook refused` (401) and `webhook failed`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{failed_result, output};
use crate::api::tamper::Tamper;
use crate::state::Outcome;
use crate::Sim;

/// The user id the simulated account's deliveries carry.
const USER_ID: &str = "darkroom-sim";

/// The simulator's signing key: fixed by its seed, so a test may sign as it does.
fn signing_key(sim: &Sim) -> Option<Ed25519KeyPair> {
    let seed = *blake3::hash(format!("fal webhook key {}", sim.config.seed).as_bytes()).as_bytes();
    Ed25519KeyPair::from_seed_unchecked(&seed).ok()
}

/// `GET /fal/rest/.well-known/jwks.json`: the key deliveries are signed with.
pub(super) async fn jwks(State(sim): State<Arc<Sim>>) -> Response {
    let keys: Vec<Value> = signing_key(&sim)
        .map(|key| {
            json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "kid": "darkroom-sim",
                "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.public_key().as_ref())})
        })
        .into_iter()
        .collect();
    Json(json!({ "keys": keys })).into_response()
}

pub(super) fn schedule(sim: Arc<Sim>, id: String, url: String) {
    let tracker = sim.tracker.clone();
    tracker.spawn(async move {
        let done_at = {
            let account = sim.fal();
            account
                .generations
                .get(&id)
                .filter(|g| !matches!(g.outcome, Outcome::Stuck))
                .map(|g| g.done_at)
        };
        let Some(done_at) = done_at else { return };
        tokio::select! {
            () = sim.stop.cancelled() => {}
            () = async {
                tokio::time::sleep_until(done_at.max(Instant::now())).await;
                deliver(&sim, &id, &url).await;
            } => {}
        }
    });
}

/// The delivery body of an ended request.
fn body(sim: &Sim, id: &str) -> Option<Value> {
    let mut account = sim.fal();
    account.settle(Instant::now());
    let generation = account.generations.get(id)?;
    Some(match failed_result(generation) {
        Some((_, error)) => json!({"request_id": id, "gateway_request_id": id, "status": "ERROR",
            "payload": null, "error": error.get("detail").cloned().unwrap_or(Value::Null)}),
        None => json!({"request_id": id, "gateway_request_id": id, "status": "OK",
            "payload": output(sim, generation)}),
    })
}

async fn deliver(sim: &Sim, id: &str, url: &str) {
    let Some(body) = body(sim, id) else { return };
    let (lost, twice, tamper) = {
        let mut account = sim.fal();
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
        (lost, twice, tamper)
    };
    if lost {
        return;
    }
    let raw = body.to_string();
    if twice {
        post(sim, id, url, &raw, tamper).await;
    }
    post(sim, id, url, &raw, tamper).await;
}

/// One delivery, signed as fal signs (or as `tamper` spoils it); retried up to 3 times 100 ms
/// apart on anything but 2xx.
async fn post(sim: &Sim, id: &str, url: &str, raw: &str, tamper: Tamper) {
    let Some(key) = signing_key(sim) else { return };
    // A forger's key: one fal never published.
    let Ok(forger) = Ed25519KeyPair::from_seed_unchecked(blake3::hash(b"not fal").as_bytes()) else {
        return;
    };
    for attempt in 0..4 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let timestamp = tamper.timestamp();
        let digest = ring::digest::digest(&ring::digest::SHA256, raw.as_bytes());
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let message = format!("{id}\n{USER_ID}\n{timestamp}\n{}", hex(digest.as_ref()));
        let signer = if tamper == Tamper::Forged { &forger } else { &key };
        let signature = hex(signer.sign(message.as_bytes()).as_ref());
        let mut request = sim
            .http
            .post(url)
            .timeout(Duration::from_secs(5))
            .header("content-type", "application/json")
            .body(raw.to_string());
        if tamper != Tamper::Unsigned {
            request = request
                .header("x-fal-webhook-request-id", id)
                .header("x-fal-webhook-user-id", USER_ID)
                .header("x-fal-webhook-timestamp", &timestamp)
                .header("x-fal-webhook-signature", signature);
        }
        let status = request.send().await.ok().map(|r| r.status().as_u16());
        sim.fal().count(format!("webhook {}", Tamper::outcome(status)));
        if status.is_some_and(|s| (200..300).contains(&s)) {
            return;
        }
    }
}
