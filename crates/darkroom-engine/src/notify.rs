//! Notifications: a signed JSON summary POSTed to each `--notify` URL when a run ends, when its
//! budget runs out, when the 80% budget warning fires and when the circuit breaker stops it.
//!
//! Deliveries are signed the Standard Webhooks way: headers `webhook-id`, `webhook-timestamp` (Unix
//! seconds) and `webhook-signature` (`v1,` + base64 of HMAC-SHA256 over `id.timestamp.body`), with the
//! secret from `DARKROOM_NOTIFY_SECRET` (`whsec_` + base64, or raw text). Each logical event keeps one id
//! across retries so a receiver can deduplicate. A delivery that fails (no answer, or a status other
//! than 2xx) is tried again in the background on the engine's retry policy
//! (`retry::NOTIFY_DELIVERY`: 1, 2, 4, 8 and 16 s, then given up and logged); deliveries never
//! block the run, and the run waits for them only briefly at its end (`Notifier::flush`).

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio_util::task::TaskTracker;

use crate::retry::{Schedule, NOTIFY_DELIVERY};

/// What a notification is about: its `type` in the delivered JSON, in snake case
/// (`run_finished`, `budget_exhausted`, `budget_warning`, `breaker_tripped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// The run ended (done, or stopped for a reason other than those below).
    RunFinished,
    /// The pass's budget ran out: the rest of its tasks were skipped.
    BudgetExhausted,
    /// Spend reached the warning share of the budget (`crate::BUDGET_WARNING_PERCENT`).
    BudgetWarning,
    /// The run stopped as refused: the circuit breaker tripped or the account refused creates.
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

/// The `webhook-signature` value for a delivery: `v1,` + base64 of HMAC-SHA256 over
/// `id.timestamp.body`, `timestamp` in Unix seconds.
fn sign(secret: &SigningSecret, id: &str, timestamp: i64, body: &[u8]) -> String {
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

/// Sends notifications in the background: each `send` is one task per URL, tracked so `flush`
/// can wait for them. Cloning shares the tracker.
#[derive(Debug, Clone)]
pub struct Notifier {
    http: reqwest::Client,
    urls: Vec<String>,
    secret: Option<SigningSecret>,
    tracker: TaskTracker,
    retry: Schedule,
}

impl Notifier {
    /// A notifier for `urls` (none: `send` does nothing), signing with `secret` when given (no
    /// `webhook-signature` header otherwise). Each delivery attempt has a 10 s timeout (5 s to
    /// connect); failed deliveries are tried again on `retry::NOTIFY_DELIVERY`.
    pub fn new(urls: Vec<String>, secret: Option<SigningSecret>) -> Notifier {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Notifier {
            http,
            urls,
            secret,
            tracker: TaskTracker::new(),
            retry: NOTIFY_DELIVERY,
        }
    }

    /// The same notifier with other waits between the tries of a delivery (its `max_tries` caps
    /// the tries after the first).
    pub fn with_retry(mut self, retry: Schedule) -> Notifier {
        self.retry = retry;
        self
    }

    /// Whether there is no URL to notify.
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
            let (http, url, secret, id, body, retry) = (
                self.http.clone(),
                url.clone(),
                self.secret.clone(),
                id.clone(),
                body.clone(),
                self.retry,
            );
            self.tracker.spawn(async move {
                deliver(&http, &url, secret.as_ref(), &id, &body, retry).await;
            });
        }
    }

    /// Waits up to `timeout` for deliveries still under way; those still trying after it go on
    /// only as long as the runtime does. No `send` is delivered after this.
    pub async fn flush(&self, timeout: Duration) {
        self.tracker.close();
        let _ = tokio::time::timeout(timeout, self.tracker.wait()).await;
    }
}

/// Posts `body` to `url` until it is accepted (2xx) or `retry` is spent, then logs the give-up.
async fn deliver(
    http: &reqwest::Client,
    url: &str,
    secret: Option<&SigningSecret>,
    id: &str,
    body: &str,
    retry: Schedule,
) {
    let mut backoff = retry.start();
    loop {
        let attempt = backoff.tries();
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
        match backoff.next_delay() {
            Some(delay) => tokio::time::sleep(delay).await,
            None => break,
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

    /// A receiver on a loopback port that refuses its first `refusals` deliveries (503) and
    /// accepts the rest; it records each delivery's `webhook-id`.
    async fn receiver(refusals: usize) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use axum::http::{HeaderMap, StatusCode};
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap| {
                let log = log.clone();
                async move {
                    let id = headers
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let mut log = log.lock().unwrap();
                    log.push(id);
                    match log.len() <= refusals {
                        true => StatusCode::SERVICE_UNAVAILABLE,
                        false => StatusCode::NO_CONTENT,
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    /// The delivery schedule's number of tries, with millisecond waits.
    fn quick() -> Schedule {
        Schedule {
            first: Duration::from_millis(1),
            max: Duration::from_millis(1),
            ..NOTIFY_DELIVERY
        }
    }

    #[tokio::test]
    async fn a_refused_delivery_is_tried_again_under_the_same_id_until_accepted() {
        let (url, seen) = receiver(2).await;
        let notifier = Notifier::new(vec![url], None).with_retry(quick());
        notifier.send(NotificationKind::RunFinished, "lamps", serde_json::json!({}));
        notifier.flush(Duration::from_secs(30)).await;
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "two refusals, then accepted: {seen:?}");
        assert!(seen[0].starts_with("msg_"), "{seen:?}");
        assert!(
            seen.iter().all(|id| id == &seen[0]),
            "one id across retries: {seen:?}"
        );
    }

    #[tokio::test]
    async fn a_delivery_always_refused_is_given_up_after_the_schedule_s_tries() {
        let (url, seen) = receiver(usize::MAX).await;
        let notifier = Notifier::new(vec![url], None).with_retry(quick());
        notifier.send(NotificationKind::BudgetWarning, "lamps", serde_json::json!({}));
        notifier.flush(Duration::from_secs(30)).await;
        assert_eq!(seen.lock().unwrap().len(), 6, "the first try and five more");
    }

    #[test]
    fn the_secret_never_prints() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert!(!format!("{secret:?}").contains("MfKQ"));
    }
}
