//! What a provider can do with a request, and what it charges for one per its published table.
//!
//! The engine checks a job against these before anything is spent; each provider declares its own
//! (Luma takes four image references, Replicate one, fal.ai's text-to-image endpoints none).

use darkroom_jobs::{AspectRatio, Format, Model};

/// What a provider accepts in a [`CreateRequest`](crate::CreateRequest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// The models it can make images with.
    pub models: Vec<Model>,
    /// Image references per request (0: none accepted).
    pub max_image_refs: usize,
    /// Style references per request.
    pub max_style_refs: usize,
    /// Images of the one character reference per request.
    pub max_character_images: usize,
    /// Whether a request may carry a weight on its references.
    pub reference_weights: bool,
    /// Whether a request may modify an image (`modify_image_ref`).
    pub modify: bool,
    /// The output formats a request may ask for; a provider with one fixed format lists that one.
    pub formats: Vec<Format>,
    /// The aspect ratios a request may ask for.
    pub aspect_ratios: Vec<AspectRatio>,
    /// Whether a create may name a URL to call back with its progress.
    pub callbacks: bool,
    /// Whether the account's balance can be read (`Provider::balance` returns `Some`).
    pub balance: bool,
}
