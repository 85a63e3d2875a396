//! The rows the ledger hands out, as plain values. Times are Unix milliseconds; money is integer
//! micro-dollars (`*_micros`, with [`Money`] accessors); states are the enums of `states`.

use darkroom_jobs::Money;
use serde::Serialize;

use crate::{GenerationState, PassStatus, TaskState};

/// A job: a name and the job file its tasks were last loaded from.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRecord {
    /// The job's row id.
    pub id: i64,
    /// Its name, unique in the ledger.
    pub name: String,
    /// The job file's path, as given on the command line when last run.
    pub file_path: String,
    /// The BLAKE3 hash (hex) of the job file last loaded; empty until a file was loaded.
    pub file_fingerprint: String,
}

/// One pass of a job: its budget, the running totals the budget check reads, and its status.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PassRecord {
    /// The job's row id.
    pub job_id: i64,
    /// The pass (`preview` or `final`).
    pub pass: String,
    /// The budget, micro-dollars.
    pub budget_micros: i64,
    /// Charges less refunds, micro-dollars.
    pub spent_micros: i64,
    /// Prices held by tasks that have not been charged yet, micro-dollars.
    pub reserved_micros: i64,
    /// How the pass's last run ended.
    pub status: PassStatus,
    /// The load key (file hash, pass, routing and prices) the pass's tasks were last loaded under.
    pub loaded_fingerprint: Option<String>,
    /// Unix milliseconds when the pass was first given a budget.
    pub started_at: Option<i64>,
    /// Unix milliseconds when a run last finished it (see [`PassStatus::is_finished`]).
    pub finished_at: Option<i64>,
    /// Unix milliseconds after which no new create is sent.
    pub deadline_at: Option<i64>,
    /// The part of `spent_micros` no reservation covered: charges found after the fact (a late
    /// commit found by an audit) or corrected to the price the account was observed to charge.
    /// They are real money, so they may take `spent` past the budget; nothing is reserved then.
    pub unplanned_micros: i64,
}

impl PassRecord {
    /// The budget.
    pub fn budget(&self) -> Money {
        Money::from_micros(self.budget_micros)
    }
    /// Charges less refunds.
    pub fn spent(&self) -> Money {
        Money::from_micros(self.spent_micros)
    }
    /// Prices held and not yet charged.
    pub fn reserved(&self) -> Money {
        Money::from_micros(self.reserved_micros)
    }
    /// What is left to reserve: the budget less spend and reservations (never below zero).
    pub fn remaining(&self) -> Money {
        Money::from_micros((self.budget_micros - self.spent_micros - self.reserved_micros).max(0))
    }
}

/// One task: the one row type every task query hands out (the scheduler's work lists, the outputs'
/// result pages, the contact sheet's tiles). Queries select every column of `tasks` (see
/// `SELECT_TASKS`); the two joined fields are filled only by the queries that join them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaskRow {
    /// The task's row id.
    pub id: i64,
    /// Its job's row id.
    pub job_id: i64,
    /// Its pass (`preview` or `final`).
    pub pass: String,
    /// Its key: the row id and, for several variants, the variant (its image's file stem).
    pub task_key: String,
    /// The row id from the job file.
    pub row_id: String,
    /// The job file line its row starts on.
    pub line: i64,
    /// Which variant of its row, from 1.
    pub variant: i64,
    /// How many variants its row asks for.
    pub variants: i64,
    /// The model's API name.
    pub model: String,
    /// What makes the task what it is (prompt, model, references...): equal fingerprints make
    /// the same image, which the cache relies on.
    pub fingerprint: String,
    /// The create request body, JSON (without `callback_url`).
    pub request_json: String,
    /// The prompt.
    pub prompt: String,
    /// The aspect ratio, as the API spells it (`16:9`).
    pub aspect_ratio: String,
    /// The image format (`jpg`, `png`).
    pub format: String,
    /// The row's metadata columns, a JSON object.
    pub metadata_json: String,
    /// Where the task stands.
    pub state: TaskState,
    /// Why it ended or was last sent back, in words, for people.
    pub reason: Option<String>,
    /// Its price per image, micro-dollars: the table's of the provider it is made on, set when it
    /// is loaded and again when a pass moves it, unsent, to another provider.
    pub price_micros: i64,
    /// What it holds against the budget now, micro-dollars.
    pub reserved_micros: i64,
    /// What the ledger counted for it, net of refunds, micro-dollars: the observed price when the
    /// account was seen to charge more than the table.
    pub cost_micros: i64,
    /// Creates sent for it that count against its cap.
    pub attempts: i64,
    /// 1 when its image was copied from the cache (no create), else 0.
    pub cached: i64,
    /// Milliseconds from its first create to its image kept.
    pub latency_ms: Option<i64>,
    /// Where its image is kept, once done.
    pub output_path: Option<String>,
    /// The upstream id of the generation it kept, once done.
    pub generation_id: Option<String>,
    /// For a final made by promotion: its preview's row id.
    pub preview_task_id: Option<i64>,
    /// For a final made by promotion: how its preview was used as its reference, in words, for
    /// people.
    pub reference_note: Option<String>,
    /// For a final made by promotion: its preview's URL no longer resolved, so it was made from the
    /// prompt alone (the note says so in words; this is the flag to branch on).
    pub reference_lost: bool,
    /// The kept image's BLAKE3 hash (hex), when recorded (not by releases before hashes were kept).
    pub content_hash: Option<String>,
    /// The kept image's size in bytes, beside its hash.
    pub content_bytes: Option<i64>,
    /// For a reframe: the row id of the task whose image it extends (migration 0009).
    pub source_task_id: Option<i64>,
    /// The provider its last create was sent to (`luma`, `replicate`, `fal`; migration 0012), set
    /// with the create's intent; `None` while it was never sent (or was copied from the cache).
    pub provider: Option<String>,
    /// For a reframe: its source's pass and task key, `PASS/KEY` (`final/jar`). Filled by
    /// [`crate::Ledger::results`] only.
    #[sqlx(default)]
    pub source_key: Option<String>,
    /// For a final made by promotion: the task key of its preview. Filled by
    /// [`crate::Ledger::results`] only.
    #[sqlx(default)]
    pub preview_key: Option<String>,
    /// The upstream URL of the image the task kept (its last completed generation). Filled by
    /// [`crate::Ledger::tiles`] only.
    #[sqlx(default)]
    pub image_url: Option<String>,
}

impl TaskRow {
    /// The table's price per image when the task was loaded.
    pub fn price(&self) -> Money {
        Money::from_micros(self.price_micros)
    }
}

/// A task as the scheduler works it: the one task row.
pub type TaskRecord = TaskRow;

/// A task as the outputs (results.jsonl, errors.jsonl, manifest.csv) show it: the one task row,
/// with `preview_key`.
pub type ResultRecord = TaskRow;

/// A task as a tile of the contact sheet: the one task row, with `image_url`.
pub type TileRecord = TaskRow;

/// One create sent (or about to be sent) for a task.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GenerationRecord {
    /// The generation's row id.
    pub id: i64,
    /// Its task's row id.
    pub task_id: i64,
    /// Which attempt of its task, from 1.
    pub attempt: i64,
    /// The upstream's id for it, once accepted.
    pub upstream_id: Option<String>,
    /// Unix milliseconds when the intent to send it was recorded.
    pub intent_at: i64,
    /// The fingerprint of the request body sent, matched against the upstream's list when the
    /// outcome of a create is unknown.
    pub request_fingerprint: String,
    /// Where it stands.
    pub state: GenerationState,
    /// Why it failed upstream, in words.
    pub failure_reason: Option<String>,
    /// What it was charged and not refunded, micro-dollars.
    pub charge_micros: i64,
    /// The upstream URL of its image, once completed.
    pub image_url: Option<String>,
    /// The provider it was sent to (migration 0012).
    pub provider: Option<String>,
    /// Unix milliseconds when the upstream's acceptance was recorded (`submitted`, or adopted
    /// from the list); `None` while its outcome is unknown. The stuck clock counts from it.
    pub submitted_at: Option<i64>,
}

/// Tasks of a pass by state (superseded tasks are not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Every task of the pass.
    pub total: u64,
    /// Waiting for a reservation.
    pub pending: u64,
    /// Reserved, submitting, submitted or downloading.
    pub in_flight: u64,
    /// Done, cached ones included.
    pub done: u64,
    /// Done from the cache (part of `done`).
    pub cached: u64,
    /// Ended after their attempts ran out.
    pub failed: u64,
    /// Ended by a refusal no retry changes.
    pub blocked: u64,
    /// Ended unmade for the budget or the deadline.
    pub skipped: u64,
    /// Ended unmade: cancelled or no longer in the job file.
    pub cancelled: u64,
    /// Creates sent over all tasks, counted against their caps.
    pub attempts: u64,
}
