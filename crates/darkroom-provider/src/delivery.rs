//! Signed webhook deliveries: what a provider whose deliveries carry a signature (Replicate's
//! Standard Webhooks HMAC, fal's ED25519) gives the engine's callback receiver to check them with.
//!
//! The receiver knows nothing of any provider's scheme: it hands each delivery ([`Delivery`]: its
//! headers and raw body) to the [`DeliveryCheck`] of the provider the delivery's URL was made for,
//! and refuses it when the check fails. A provider whose deliveries are unsigned (Luma) has no
//! check; its per-create URL token is the only proof a delivery is genuine.

use std::fmt;

/// One delivery as it arrived: its headers (names as sent; looked up without regard to case) and
/// its body, byte for byte (a signature covers the raw body, never a re-encoding of it).
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    headers: &'a [(String, String)],
    body: &'a [u8],
}

impl<'a> Delivery<'a> {
    /// A delivery of `body` with `headers` (name, value) pairs.
    pub fn new(headers: &'a [(String, String)], body: &'a [u8]) -> Delivery<'a> {
        Delivery { headers, body }
    }

    /// The first value of the header `name` (any case), trimmed; `None` when absent or empty.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The raw body.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
}

/// Why a delivery was refused: one sentence for the log, never holding a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryRefused {
    /// A signature header is missing or empty.
    #[error("unsigned: no {0} header")]
    Unsigned(String),
    /// The timestamp is not a number of Unix seconds, or is further from now than the provider's
    /// tolerance allows: a replay of an old delivery, or a clock far off.
    #[error("timestamp {timestamp:?} is not within {tolerance_s} s of now (a replay?)")]
    Stale {
        /// The timestamp as sent.
        timestamp: String,
        /// The tolerance, in seconds either way.
        tolerance_s: u64,
    },
    /// No signature verifies over the delivery under the provider's secret or keys.
    #[error("the signature does not verify")]
    BadSignature,
}

/// The check of one provider's signed deliveries, holding what it needs (a secret, a key set).
pub trait DeliveryCheck: fmt::Debug + Send + Sync {
    /// `Ok` when `delivery` is signed by the provider and its timestamp is within the provider's
    /// tolerance of `now_unix` (Unix seconds); otherwise why not.
    ///
    /// # Errors
    /// [`DeliveryRefused`]: unsigned, stale (replayed) or badly signed.
    fn verify(&self, delivery: &Delivery<'_>, now_unix: i64) -> Result<(), DeliveryRefused>;
}
