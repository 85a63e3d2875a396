//! The rows the ledger hands out, as plain values (`FromRow`), and the task states.

use darkroom_jobs::Money;
use serde::Serialize;

use crate::{GenerationState, PassStatus, TaskState};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRecord {
    pub id: i64,
    pub name: String,
    pub file_path: String,
    pub file_fingerprint: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PassRecord {
    pub job_id: i64,
    pub pass: String,
    pub budget_micros: i64,
    pub spent_micros: i64,
    pub reserved_micros: i64,
    pub status: PassStatus,
    pub loaded_fingerprint: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Unix milliseconds after which no new create is sent.
    pub deadline_at: Option<i64>,
    /// The part of `spent_micros` no reservation covered: charges found after the fact (a late
    /// commit found by an audit) or corrected to the price the account was observed to charge.
    /// They are real money, so they may take `spent` past the budget; nothing is reserved then.
    pub unplanned_micros: i64,
}

impl PassRecord {
    pub fn budget(&self) -> Money {
        Money::from_micros(self.budget_micros)
    }
    pub fn spent(&self) -> Money {
        Money::from_micros(self.spent_micros)
    }
    pub fn reserved(&self) -> Money {
        Money::from_micros(self.reserved_micros)
    }
    /// What is left to reserve: the budget less spend and reservations (never below zero).
    pub fn remaining(&self) -> Money {
        Money::from_micros((self.budget_micros - self.spent_micros - self.reserved_micros).max(0))
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaskRecord {
    pub id: i64,
    pub job_id: i64,
    pub pass: String,
    pub task_key: String,
    pub row_id: String,
    pub variant: i64,
    pub variants: i64,
    pub model: String,
    pub fingerprint: String,
    pub request_json: String,
    pub prompt: String,
    pub aspect_ratio: String,
    pub format: String,
    pub metadata_json: String,
    pub state: TaskState,
    pub reason: Option<String>,
    pub price_micros: i64,
    pub reserved_micros: i64,
    pub cost_micros: i64,
    pub attempts: i64,
    pub output_path: Option<String>,
    pub generation_id: Option<String>,
}

impl TaskRecord {
    pub fn price(&self) -> Money {
        Money::from_micros(self.price_micros)
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GenerationRecord {
    pub id: i64,
    pub task_id: i64,
    pub attempt: i64,
    pub upstream_id: Option<String>,
    pub intent_at: i64,
    pub request_fingerprint: String,
    pub state: GenerationState,
    pub failure_reason: Option<String>,
    pub charge_micros: i64,
    pub image_url: Option<String>,
}

/// One task as the outputs (results.jsonl, errors.jsonl, manifest.csv) show it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ResultRecord {
    pub id: i64,
    pub task_key: String,
    pub row_id: String,
    pub pass: String,
    pub model: String,
    pub state: TaskState,
    pub reason: Option<String>,
    pub output_path: Option<String>,
    /// The price table's price when the task was loaded, micro-dollars (never re-priced).
    pub price_micros: i64,
    /// What the ledger counted for it, micro-dollars: the observed price when the account was seen
    /// to charge more than the table.
    pub cost_micros: i64,
    pub generation_id: Option<String>,
    pub attempts: i64,
    pub cached: i64,
    pub latency_ms: Option<i64>,
    pub prompt: String,
    pub aspect_ratio: String,
    pub metadata_json: String,
    pub variant: i64,
    /// For a final made by promotion: how its preview was used as its reference.
    pub reference_note: Option<String>,
    /// For a final made by promotion: its preview's URL no longer resolved, so it was made from the
    /// prompt alone (the note says so in words; this is the flag to branch on).
    pub reference_lost: bool,
    /// For a final made by promotion: the task key of its preview.
    pub preview_key: Option<String>,
    /// The kept image's BLAKE3 hash (hex), when recorded (not by releases before hashes were kept).
    pub content_hash: Option<String>,
    /// The kept image's size in bytes, beside its hash.
    pub content_bytes: Option<i64>,
}

/// Tasks of a pass by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub total: u64,
    pub pending: u64,
    pub in_flight: u64,
    pub done: u64,
    pub cached: u64,
    pub failed: u64,
    pub blocked: u64,
    pub skipped: u64,
    pub cancelled: u64,
    pub attempts: u64,
}
