//! Replicate's signed webhook deliveries, checked the Standard Webhooks way (`providers-api.md`
//! §1.3): the headers `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature` (a
//! space-separated list of `v1,<base64>`), each signature an HMAC-SHA256 of
//! `"{id}.{timestamp}.{raw body}"` under the account's signing secret (`whsec_<base64>`, read
//! from `GET /v1/webhooks/default/secret`). A delivery is accepted when its timestamp is within
//! [`TOLERANCE`] of now (an older one is a replay) and one of its `v1` signatures matches,
//! compared in constant time. A delivery is only a hint: the engine reads the prediction itself.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use darkroom_provider::{Delivery, DeliveryCheck, DeliveryRefused};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a delivery's timestamp may be from now, either way: 5 minutes, the standard's default.
pub const TOLERANCE: Duration = Duration::from_secs(300);

/// The account's webhook signing secret: the key bytes of its `whsec_<base64>` form. Never printed.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// The secret is not `whsec_` followed by standard base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the webhook signing secret is not whsec_ followed by base64")]
pub struct BadSecret;

impl WebhookSecret {
    /// The secret of its `whsec_<base64>` form, as Replicate returns it.
    ///
    /// # Errors
    /// [`BadSecret`] when the text is not `whsec_` and standard base64 of at least one byte.
    pub fn parse(text: &str) -> Result<WebhookSecret, BadSecret> {
        let encoded = text.trim().strip_prefix("whsec_").ok_or(BadSecret)?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| BadSecret)?;
        if key.is_empty() {
            return Err(BadSecret);
        }
        Ok(WebhookSecret(key))
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` value for a delivery: `v1,<base64 HMAC-SHA256>` of
    /// `"{id}.{timestamp}.{body}"`. For signing test deliveries; [`WebhookSecret::verify`] checks.
    pub fn sign(&self, id: &str, timestamp: &str, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(tag))
    }

    /// Checks `delivery` at `now_unix` (Unix seconds): its three headers, its timestamp within
    /// [`TOLERANCE`], and one of its `v1` signatures.
    ///
    /// # Errors
    /// [`DeliveryRefused::Unsigned`], [`DeliveryRefused::Stale`] or [`DeliveryRefused::BadSignature`].
    pub fn verify(&self, delivery: &Delivery<'_>, now_unix: i64) -> Result<(), DeliveryRefused> {
        let header = |name: &str| {
            delivery
                .header(name)
                .ok_or_else(|| DeliveryRefused::Unsigned(name.to_string()))
        };
        let id = header("webhook-id")?;
        let timestamp = header("webhook-timestamp")?;
        let signatures = header("webhook-signature")?;
        let stale = || DeliveryRefused::Stale {
            timestamp: timestamp.to_string(),
            tolerance_s: TOLERANCE.as_secs(),
        };
        let at: i64 = timestamp.parse().map_err(|_| stale())?;
        if now_unix.abs_diff(at) > TOLERANCE.as_secs() {
            return Err(stale());
        }
        let matches = signatures
            .split_whitespace()
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .any(|tag| {
                self.mac(id, timestamp, delivery.body())
                    .verify_slice(&tag)
                    .is_ok()
            });
        if matches {
            Ok(())
        } else {
            Err(DeliveryRefused::BadSignature)
        }
    }
}

/// [`WebhookSecret::verify`] as the engine's check of Replicate's deliveries.
impl DeliveryCheck for WebhookSecret {
    fn verify(&self, delivery: &Delivery<'_>, now_unix: i64) -> Result<(), DeliveryRefused> {
        WebhookSecret::verify(self, delivery, now_unix)
    }
}

#[cfg(test)]
mod tests;
