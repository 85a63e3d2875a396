//! fal's signed webhook deliveries, checked against fal's published keys (`providers-api.md` §2.4).
//!
//! fal signs each delivery with ED25519. The headers `X-Fal-Webhook-Request-Id`,
//! `X-Fal-Webhook-User-Id`, `X-Fal-Webhook-Timestamp` (Unix seconds) and
//! `X-Fal-Webhook-Signature` (hex) carry it; the signed message is
//! `request_id \n user_id \n timestamp \n hex(sha256(raw body))`. A delivery is accepted when its
//! timestamp is within ±300 s of now and the signature verifies under any key of fal's JWKS
//! (`{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": base64url}]}`, cached for up to 24 h by its
//! reader). Which of fal's two published JWKS addresses is canonical is unconfirmed; [`JWKS_URL`]
//! is the newer. A delivery is only a hint: the engine reads the request's status itself.

use std::time::Duration;

use base64::Engine as _;
use darkroom_provider::{Delivery, DeliveryCheck, DeliveryRefused};
use reqwest::header::HeaderMap;
use ring::signature::{UnparsedPublicKey, ED25519};
use serde::Deserialize;

/// fal's published webhook keys.
pub const JWKS_URL: &str = "https://rest.fal.ai/.well-known/jwks.json";
/// How far a delivery's timestamp may be from now: 300 s either way.
pub const TOLERANCE: Duration = Duration::from_secs(300);
/// How long a fetched key set may be used: 24 h.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// A signature header is missing or empty: an unsigned delivery.
    #[error("the delivery is not signed (no {0} header)")]
    Unsigned(&'static str),
    /// The timestamp is not a number of seconds, or more than 300 s from now.
    #[error("the delivery's timestamp {0:?} is not within 300 s of now")]
    Stale(String),
    /// The signature is not hex of 64 bytes, or verifies under none of the keys.
    #[error("the delivery's signature does not verify under fal's published keys")]
    BadSignature,
    /// The key set is no JWKS with an Ed25519 key.
    #[error("fal's key set could not be read: {0}")]
    BadKeys(String),
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    #[serde(default)]
    kty: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
}

/// The keys fal signs deliveries with, and the check of a delivery against them.
#[derive(Debug, Clone)]
pub struct WebhookVerifier {
    keys: Vec<[u8; 32]>,
}

impl WebhookVerifier {
    /// The verifier for a JWKS document's Ed25519 keys (other keys are skipped).
    ///
    /// # Errors
    /// [`WebhookError::BadKeys`] when the text is no JWKS or holds no Ed25519 key.
    pub fn from_jwks(text: &[u8]) -> Result<WebhookVerifier, WebhookError> {
        let jwks: Jwks = serde_json::from_slice(text).map_err(|e| WebhookError::BadKeys(e.to_string()))?;
        let keys: Vec<[u8; 32]> = jwks
            .keys
            .iter()
            .filter(|k| k.kty.as_deref() == Some("OKP") && k.crv.as_deref() == Some("Ed25519"))
            .filter_map(|k| {
                let x = k.x.as_deref()?.trim_end_matches('=');
                let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(x).ok()?;
                <[u8; 32]>::try_from(bytes.as_slice()).ok()
            })
            .collect();
        if keys.is_empty() {
            return Err(WebhookError::BadKeys("no Ed25519 key".into()));
        }
        Ok(WebhookVerifier { keys })
    }

    /// Fetches the JWKS at `url` (fal's [`JWKS_URL`], or a simulator's) and reads its keys.
    ///
    /// # Errors
    /// [`WebhookError::BadKeys`] when it can't be fetched within `timeout` or read.
    pub async fn fetch(url: &str, timeout: Duration) -> Result<WebhookVerifier, WebhookError> {
        let bad = |e: reqwest::Error| WebhookError::BadKeys(e.without_url().to_string());
        let client = reqwest::Client::builder().timeout(timeout).build().map_err(bad)?;
        let response = client
            .get(url)
            .send()
            .await
            .map_err(bad)?
            .error_for_status()
            .map_err(bad)?;
        WebhookVerifier::from_jwks(&response.bytes().await.map_err(bad)?)
    }

    /// Checks a delivery: its four signature headers, its timestamp against `now_unix` (Unix
    /// seconds) within [`TOLERANCE`], and its signature over the message fal signs.
    ///
    /// # Errors
    /// [`WebhookError::Unsigned`], [`WebhookError::Stale`] or [`WebhookError::BadSignature`].
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now_unix: i64) -> Result<(), WebhookError> {
        let header = |name: &'static str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        self.verify_with(header, body, now_unix)
    }

    /// [`WebhookVerifier::verify`] with the headers looked up by `header` (by lowercase name).
    fn verify_with<'h>(
        &self,
        header: impl Fn(&'static str) -> Option<&'h str>,
        body: &[u8],
        now_unix: i64,
    ) -> Result<(), WebhookError> {
        let header = |name: &'static str| header(name).ok_or(WebhookError::Unsigned(name));
        let request_id = header("x-fal-webhook-request-id")?;
        let user_id = header("x-fal-webhook-user-id")?;
        let timestamp = header("x-fal-webhook-timestamp")?;
        let signature = header("x-fal-webhook-signature")?;
        let at: i64 = timestamp
            .parse()
            .map_err(|_| WebhookError::Stale(timestamp.to_string()))?;
        let tolerance = i64::try_from(TOLERANCE.as_secs()).unwrap_or(i64::MAX);
        if now_unix.abs_diff(at) > tolerance.unsigned_abs() {
            return Err(WebhookError::Stale(timestamp.to_string()));
        }
        let signature = hex_decode(signature).ok_or(WebhookError::BadSignature)?;
        let message = signed_message(request_id, user_id, timestamp, body);
        let verifies = self.keys.iter().any(|key| {
            UnparsedPublicKey::new(&ED25519, key)
                .verify(message.as_bytes(), &signature)
                .is_ok()
        });
        if verifies {
            Ok(())
        } else {
            Err(WebhookError::BadSignature)
        }
    }
}

/// [`WebhookVerifier::verify`] as the engine's check of fal's deliveries.
impl DeliveryCheck for WebhookVerifier {
    fn verify(&self, delivery: &Delivery<'_>, now_unix: i64) -> Result<(), DeliveryRefused> {
        self.verify_with(|name| delivery.header(name), delivery.body(), now_unix)
            .map_err(|error| match error {
                WebhookError::Unsigned(name) => DeliveryRefused::Unsigned(name.to_string()),
                WebhookError::Stale(timestamp) => DeliveryRefused::Stale {
                    timestamp,
                    tolerance_s: TOLERANCE.as_secs(),
                },
                WebhookError::BadSignature | WebhookError::BadKeys(_) => DeliveryRefused::BadSignature,
            })
    }
}

/// The message fal signs: `request_id\nuser_id\ntimestamp\nhex(sha256(body))`.
pub fn signed_message(request_id: &str, user_id: &str, timestamp: &str, body: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    format!(
        "{request_id}\n{user_id}\n{timestamp}\n{}",
        hex_encode(digest.as_ref())
    )
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests;
