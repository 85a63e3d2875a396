//! darkroom-fal: fal.ai's queue API for Luma Photon as a `darkroom_provider::Provider`.
//!
//! fal sells Photon as `fal-ai/luma-photon` (photon-1) and `fal-ai/luma-photon/flash`
//! (photon-flash-1), behind a queue: a submit (`POST queue.fal.run/{endpoint}`) answers with a
//! request id, the status (`IN_QUEUE`, `IN_PROGRESS`, `COMPLETED`, a failure being `COMPLETED`
//! with an `error`) and the result are read by that id, and a submit whose answer was lost is
//! found again in the platform's by-endpoint request list (`api.fal.ai/v1`), matched on its
//! prompt and aspect ratio. The facts, with their sources and what is unconfirmed, are in the
//! shared `providers-api.md` §2.
//!
//! This crate owns the wire types (`wire`, private) and their conversion (`convert`); the secret
//! [`FalKey`] (`FAL_KEY`, sent as `Authorization: Key ...`); both hosts and every timeout
//! ([`FalConfig`]); the error classes (`error`); the per-megapixel prices ([`FalPrices`]); and the
//! check of fal's signed webhook deliveries. It keeps no state between calls and retries nothing:
//! fal has no idempotency key, so a submit sent twice is paid twice.

#![warn(missing_docs, unreachable_pub, clippy::too_many_lines)]

mod client;
mod convert;
mod error;
mod price;
mod provider;
pub mod webhook;
mod wire;

pub use client::{FalConfig, FalKey};
pub use error::SetupError;
pub use price::{FalPrices, PIXELS_PER_MEGAPIXEL};
pub use provider::{fal_capabilities, FalProvider};
pub use webhook::{WebhookError, WebhookVerifier};
