//! darkroom-luma: Luma's image API (`/dream-machine/v1`) as a `darkroom_provider::Provider`.
//!
//! It owns the wire types (`wire`, private), tolerant of every shape the API has been documented or
//! seen to return, and their conversion to the neutral types (`convert`); the secret `ApiKey`; a
//! timeout on every call (`ClientConfig`); and the classification of errors the engine branches
//! on (`error`). It keeps no state between calls and retries nothing: retry policy, the ledger and
//! files belong to `darkroom-engine`.

#![warn(missing_docs, unreachable_pub, clippy::too_many_lines)]

mod client;
mod convert;
mod error;
mod provider;
mod wire;

pub use client::{ApiKey, ClientConfig};
pub use error::SetupError;
pub use provider::{luma_capabilities, LumaProvider};
