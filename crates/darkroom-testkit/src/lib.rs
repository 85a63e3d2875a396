//! What darkroom's tests, examples and benchmarks share, so each of them says only what it is
//! about: the simulator on a loopback port with a client pointed at it ([`sim`]), a real ledger
//! file in a temporary directory with a job loaded as `darkroom run` loads it ([`ledger`],
//! [`Harness`]), job files ([`jobs`]), a pass's events ([`events`]) and the real binary run with a
//! clean environment beside a `darkroom sim` process ([`cli`]), and a loaded job for benchmark
//! programs ([`bench`]), and what `exiftool` reads inside an image ([`exiftool`]).
//!
//! A dev-only crate (`publish = false`): it is a dev-dependency of the crates whose tests use it and
//! never a dependency of the binary. Every part is real (a SQLite file, the simulator, the binary);
//! nothing here mocks a behaviour. Set-up failures panic with what failed: in a test or a benchmark
//! that is the failure to report.

#![warn(missing_docs, unreachable_pub, clippy::too_many_lines)]

pub mod bench;
pub mod cli;
pub mod clock;
pub mod events;
pub mod exiftool;
mod harness;
pub mod jobs;
pub mod ledger;
pub mod sim;

pub use harness::{images_in, Harness};
