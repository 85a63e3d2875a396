//! darkroom-luma: the client for Luma's image API (`/dream-machine/v1`).
//!
//! It owns the wire types (`wire`), tolerant of every shape the API has been documented or seen to
//! return; the secret `ApiKey`; a timeout on every call; and the classification of errors the engine
//! branches on (`error`). It keeps no state between calls and retries nothing: retry policy, the
//! ledger and files belong to `darkroom-engine`.

mod client;
mod error;
mod wire;

pub use client::{ApiKey, Client, ClientConfig};
pub use error::{Error, ErrorClass};
pub use wire::{
    Assets, CharacterRef, CreateRequest, Credits, FailureKind, Generation, GenerationList, GenerationState,
    Identity, ImageRef,
};
