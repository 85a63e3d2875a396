//! Notifications: a signed JSON summary POSTed to each `--notify` URL when a run ends, when its
//! budget runs out, when the 80% budget warning fires and when the circuit breaker stops it.
//!
//! Deliveries are signed the Standard Webhooks way: headers `webhook-id`, `webhook-timestamp` (Unix
//! seconds) and `webhook-signature` (`v1,` + base64 of HMAC-SHA256 over `id.timestamp.body`), with the
//! secret from `DARKROOM_NOTIFY_SECRET` (`whsec_` + base64, or raw text). Each logical event keeps one id
//! across retries so a receiver can deduplicate. Failed deliveries retry with backoff in the background;
//! they never block the run, and the run waits for them only briefly at its end.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio_util::task::TaskTracker;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    RunFinished,
    BudgetExhausted,
    BudgetWarning,
    BreakerTripped,
}

/// The secret deliveries are signed with. It never prints.
#[derive(Clone)]
pub struct SigningSecret(Vec<u8>);

impl SigningSecret {
    /// `whsec_` + base64 (the Standard Webhooks form), or any other text taken as raw bytes.
    pub fn parse(text: &str) -> SigningSecret {
        if let Some(encoded) = text.strip_prefix("whsec_") {
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(encoded) {
                return SigningSecret(bytes);
            }
        }
        SigningSecret(text.as_bytes().to_vec())
    }
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// The `webhook-signature` value for a delivery.
pub fn sign(secret: &SigningSecret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&secret.0).unwrap_or_else(|_| {
        // HMAC takes keys of any length; this branch is unreachable.
        <Hmac<Sha256> as Mac>::new_from_slice(b"").unwrap_or_else(|_| unreachable!())
    });
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Sends notifications in the background.
#[derive(Debug, Clone)]
pub struct Notifier {
    http: reqwest::Client,
    urls: Vec<String>,
    secret: Option<SigningSecret>,
    tracker: TaskTracker,
    retry_delays: Vec<Duration>,
}

impl Notifier {
    pub fn new(urls: Vec<String>, secret: Option<SigningSecret>) -> Notifier {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        let retry_delays = [1, 2, 4, 8, 16].map(Duration::from_secs).to_vec();
        Notifier {
            http,
            urls,
            secret,
            tracker: TaskTracker::new(),
            retry_delays,
        }
    }

    /// Shorter retry delays (for tests).
    pub fn with_retry_delays(mut self, delays: Vec<Duration>) -> Notifier {
        self.retry_delays = delays;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// Queues `payload` for every URL under one event id; returns at once.
    pub fn send(&self, kind: NotificationKind, job: &str, payload: serde_json::Value) {
        if self.urls.is_empty() {
            return;
        }
        let id = format!("msg_{}", uuid_like(job, kind));
        let body = serde_json::json!({ "type": kind, "job": job, "data": payload }).to_string();
        for url in &self.urls {
            let (http, url, secret, id, body, delays) = (
                self.http.clone(),
                url.clone(),
                self.secret.clone(),
                id.clone(),
                body.clone(),
                self.retry_delays.clone(),
            );
            self.tracker.spawn(async move {
                deliver(&http, &url, secret.as_ref(), &id, &body, &delays).await;
            });
        }
    }

    /// Waits up to `timeout` for deliveries still under way.
    pub async fn flush(&self, timeout: Duration) {
        self.tracker.close();
        let _ = tokio::time::timeout(timeout, self.tracker.wait()).await;
    }
}

async fn deliver(
    http: &reqwest::Client,
    url: &str,
    secret: Option<&SigningSecret>,
    id: &str,
    body: &str,
    delays: &[Duration],
) {
    for attempt in 0..=delays.len() {
        let timestamp = chrono::Utc::now().timestamp();
        let mut request = http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(secret) = secret {
            request = request.header("webhook-signature", sign(secret, id, timestamp, body.as_bytes()));
        }
        match request.body(body.to_string()).send().await {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => tracing::warn!(url, status = %response.status(), attempt, "notification refused"),
            Err(error) => tracing::warn!(url, %error, attempt, "notification not delivered"),
        }
        if let Some(delay) = delays.get(attempt) {
            tokio::time::sleep(*delay).await;
        }
    }
    tracing::error!(url, id, "notification given up after retries");
}

/// A unique id for one logical event: the job, the kind, the time and a random part.
fn uuid_like(job: &str, kind: NotificationKind) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let random: u64 = rand::random();
    let text = format!("{job}:{kind:?}:{nanos}:{random}");
    blake3::hash(text.as_bytes()).to_hex()[..26].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_follows_the_standard_webhooks_example() {
        // The example from the Standard Webhooks specification.
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = br#"{"test": 2432232314}"#;
        let signature = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn the_secret_never_prints() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert!(!format!("{secret:?}").contains("MfKQ"));
    }
}
