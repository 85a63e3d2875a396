//! darkroom-jobs: job files and the job model.
//!
//! Owns the model (rows, tasks, models, aspect ratios), money and the price table, reading CSV and
//! JSONL job files with validation that reports every problem with its line, prompt-variable
//! expansion, variant expansion and task fingerprints. It never touches the network or SQL.

pub mod model;
pub mod money;

pub use model::{AspectRatio, Format, Metadata, Model, Pass, References, Routing, Row, Task, WeightedUrl};
pub use money::{Money, MoneyError, PriceTable};
