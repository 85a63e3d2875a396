//! darkroom-review: what a person looks at after a run.
//!
//! - `report`: the job report ([`report::JobReport`], built from the ledger) rendered as text,
//!   stable JSON, and one self-contained HTML file with an SVG chart and the contact sheet.
//! - `thumbs`: thumbnails made from the images on disk and cached under `OUT/JOB/.thumbs/`.
//! - `server`: the review page as an axum [`Router`](axum::Router) ([`router`]): the contact sheet,
//!   the export of a selection and promotion, guarded by a per-server token and a `Host` check.
//!   [`serve`] serves it on a listener the caller bound.
//!
//! It holds no SQL (that is `darkroom-ledger`) and no rule of a run (that is `darkroom-engine`:
//! the budget policy, promotion and `run_pass` are called from here as `darkroom promote` calls
//! them).

#![warn(missing_docs, unreachable_pub, clippy::too_many_lines)]

pub mod report;
pub mod server;
pub mod thumbs;

pub use server::{router, serve, Callbacks, ReviewConfig, ReviewState};
