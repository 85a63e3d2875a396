//! darkroom-jobs: job files and the job model.
//!
//! Owns the model (rows, tasks, models, aspect ratios), money and the price table, reading CSV and
//! JSONL job files with validation that reports every problem with its line, prompt-variable
//! expansion, variant expansion, task fingerprints and estimates. It never touches the network or SQL.

#![warn(missing_docs, unreachable_pub, clippy::too_many_lines)]

pub mod choices;
pub mod csv_reader;
pub mod estimate;
mod expand;
mod ids;
mod jsonl_reader;
pub mod model;
pub mod money;
mod read;
pub mod variables;

pub use choices::{ChoiceScope, RoutingChoice, RoutingChoices};
pub use estimate::{Assumptions, Estimate, EstimateBuilder};
pub use expand::{expand, fingerprint};
pub use ids::{check_id, valid_id, IdError, MAX_ID_LEN};
pub use model::{AspectRatio, Format, Metadata, Model, Pass, References, Routing, Row, Task, WeightedUrl};
pub use money::{Money, MoneyError, PriceBasis, PriceTable};
pub use read::{read_from, read_job, FileError, FileFormat, ReadOptions, Report, RowError, MAX_RECORD_BYTES};
