//! darkroom-replicate: Luma's Photon models through Replicate's predictions API (`/v1`) as a
//! `darkroom_provider::Provider`.
//!
//! It owns Replicate's wire types (`wire`, private: a prediction, its `input`, a list page), their
//! conversion to the neutral types (`convert`), the secret [`ApiToken`] (`REPLICATE_API_TOKEN`),
//! a timeout on every call ([`ClientConfig`]), and the classification of Replicate's errors onto
//! the neutral classes (`error`). It keeps no state between calls and retries nothing.
//!
//! What Replicate offers for Photon differs from Luma's own API (facts from Replicate's model
//! pages and API docs, `luma/photon` and `luma/photon-flash`): one image reference and one style
//! reference, each with a weight, one character image, no modify, no choice of format, no balance
//! API; a prediction's output is one URL, deleted with its input one hour after it finishes.

#![warn(missing_docs, unreachable_pub, clippy::too_many_lines)]

mod client;
mod convert;
mod error;
mod provider;
pub mod webhook;
mod wire;

pub use client::{ApiToken, ClientConfig};
pub use error::SetupError;
pub use provider::{replicate_capabilities, ReplicateProvider, REPLICATE_BASE_URL, REPLICATE_PRICES};
pub use webhook::WebhookSecret;
