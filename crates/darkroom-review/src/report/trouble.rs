//! Prompts that need work: the job's rows by trouble (the most attempts, blocked by moderation
//! with the upstream's reason, flagged by a quality check, never kept in review), and, when rows
//! carry `arm` or `group` metadata, a table per arm and per group (images, spend, kept, flagged).
//!
//! Built from the tiles the report already reads and the pass's quality-check flags; a row is its
//! `row_id` over both passes and every variant. "Kept" is a preview a final was made from
//! (promotion, from the review page or `darkroom promote`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use darkroom_ledger::{StoredFlag, TaskState, TileRecord};
use serde::Serialize;

/// Rows listed under each kind of trouble at most; `Trouble`'s totals count them all.
pub const MAX_LISTED: usize = 50;

/// The rows that need work, and the A/B tables.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Trouble {
    /// Rows that took more than one attempt for some image, the most attempts first.
    pub most_attempts: Vec<TroubleRow>,
    /// Rows with an image blocked by moderation, with the upstream's reason.
    pub blocked: Vec<TroubleRow>,
    /// Rows with an image a quality check flagged, with the flags' kinds.
    pub flagged: Vec<TroubleRow>,
    /// Rows whose previews were made but none was kept, once the job has kept any (before the
    /// first promotion every row would be listed).
    pub never_kept: Vec<TroubleRow>,
    /// How many rows each list has in all (each list shows at most [`MAX_LISTED`]).
    pub totals: TroubleTotals,
    /// One line per value of the rows' `arm` metadata (empty when no row has one).
    pub by_arm: Vec<Slice>,
    /// One line per value of the rows' `group` metadata (empty when no row has one).
    pub by_group: Vec<Slice>,
}

/// How many rows are in each list of [`Trouble`], before the lists are cut to [`MAX_LISTED`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TroubleTotals {
    /// Rows with more than one attempt for some image.
    pub most_attempts: usize,
    /// Rows with a blocked image.
    pub blocked: usize,
    /// Rows with a flagged image.
    pub flagged: usize,
    /// Rows never kept.
    pub never_kept: usize,
}

/// One row in a list of trouble.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TroubleRow {
    /// The row's id.
    pub row_id: String,
    /// Its prompt (the first task's: variants share it).
    pub prompt: String,
    /// Creates sent for the row's images, over both passes.
    pub attempts: u64,
    /// Why it is listed: the upstream's reason for a block, the flags' kinds (`blank, duplicate`),
    /// or how many previews were made for a row never kept.
    pub detail: String,
}

/// One arm's or group's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Slice {
    /// The metadata value.
    pub name: String,
    /// Rows with this value.
    pub rows: usize,
    /// Images made (done tasks, both passes).
    pub images: u64,
    /// What its tasks cost, micro-dollars.
    pub spent_micros: i64,
    /// Previews kept (a final was made from them).
    pub kept: u64,
    /// Images with at least one quality-check flag.
    pub flagged: u64,
}

/// What is known of one row while the lists are built.
#[derive(Default)]
struct RowFacts {
    prompt: String,
    attempts: u64,
    max_attempts: u64,
    blocked: Option<String>,
    flags: BTreeSet<&'static str>,
    previews_done: u64,
    kept: u64,
    images: u64,
    flagged: u64,
    spent_micros: i64,
    arm: Option<String>,
    group: Option<String>,
}

/// Builds the lists from both passes' tiles and their flags.
pub(crate) fn build(previews: &[TileRecord], finals: &[TileRecord], flags: &[StoredFlag]) -> Trouble {
    let mut flags_of: HashMap<i64, Vec<&StoredFlag>> = HashMap::new();
    for flag in flags {
        flags_of.entry(flag.task_id).or_default().push(flag);
    }
    let kept: HashSet<i64> = finals.iter().filter_map(|f| f.preview_task_id).collect();
    let mut rows: BTreeMap<(i64, String), RowFacts> = BTreeMap::new();
    let mut line_of: HashMap<String, i64> = HashMap::new();
    for task in previews.iter().chain(finals) {
        let line = *line_of.entry(task.row_id.clone()).or_insert(task.line);
        let facts = rows.entry((line, task.row_id.clone())).or_default();
        add_task(facts, task, flags_of.get(&task.id), kept.contains(&task.id));
    }
    let any_kept = !kept.is_empty();
    let listed = |keep: &dyn Fn(&RowFacts) -> Option<(u64, String)>| -> (Vec<TroubleRow>, usize) {
        let mut found: Vec<(u64, TroubleRow)> = rows
            .iter()
            .filter_map(|((_, row_id), f)| {
                keep(f).map(|(rank, detail)| {
                    let row = TroubleRow {
                        row_id: row_id.clone(),
                        prompt: f.prompt.clone(),
                        attempts: f.attempts,
                        detail,
                    };
                    (rank, row)
                })
            })
            .collect();
        // The highest rank first; file order among equals (the sort is stable).
        found.sort_by_key(|f| std::cmp::Reverse(f.0));
        let total = found.len();
        (
            found.into_iter().take(MAX_LISTED).map(|(_, r)| r).collect(),
            total,
        )
    };
    let (most_attempts, most_total) = listed(&|f| {
        (f.max_attempts > 1).then(|| {
            (
                f.attempts,
                format!("{} attempts for one image at most", f.max_attempts),
            )
        })
    });
    let (blocked, blocked_total) = listed(&|f| f.blocked.clone().map(|reason| (0, reason)));
    let (flagged, flagged_total) = listed(&|f| {
        (!f.flags.is_empty()).then(|| (0, f.flags.iter().copied().collect::<Vec<_>>().join(", ")))
    });
    let (never_kept, never_total) = listed(&|f| {
        (any_kept && f.previews_done > 0 && f.kept == 0)
            .then(|| (0, format!("{} preview(s) made, none kept", f.previews_done)))
    });
    Trouble {
        most_attempts,
        blocked,
        flagged,
        never_kept,
        totals: TroubleTotals {
            most_attempts: most_total,
            blocked: blocked_total,
            flagged: flagged_total,
            never_kept: never_total,
        },
        by_arm: slices(&rows, |f| f.arm.clone()),
        by_group: slices(&rows, |f| f.group.clone()),
    }
}

/// Adds one task's figures to its row's.
fn add_task(facts: &mut RowFacts, task: &TileRecord, flags: Option<&Vec<&StoredFlag>>, kept: bool) {
    if facts.prompt.is_empty() {
        facts.prompt.clone_from(&task.prompt);
        let metadata: BTreeMap<String, String> =
            serde_json::from_str(&task.metadata_json).unwrap_or_default();
        let value = |key: &str| metadata.get(key).filter(|v| !v.trim().is_empty()).cloned();
        facts.arm = value("arm");
        facts.group = value("group");
    }
    let attempts = u64::try_from(task.attempts).unwrap_or(0);
    facts.attempts += attempts;
    facts.max_attempts = facts.max_attempts.max(attempts);
    facts.spent_micros += task.cost_micros;
    if task.state == TaskState::Blocked && facts.blocked.is_none() {
        facts.blocked = Some(task.reason.clone().unwrap_or_else(|| "blocked".into()));
    }
    if task.state == TaskState::Done {
        facts.images += 1;
        if task.pass == "preview" {
            facts.previews_done += 1;
        }
        if let Some(flags) = flags.filter(|f| !f.is_empty()) {
            facts.flagged += 1;
            facts.flags.extend(flags.iter().map(|f| f.kind.as_str()));
        }
    }
    if kept {
        facts.kept += 1;
    }
}

/// One slice per value of `key` over the rows that have one, in name order; empty when none has.
fn slices(rows: &BTreeMap<(i64, String), RowFacts>, key: impl Fn(&RowFacts) -> Option<String>) -> Vec<Slice> {
    let mut by_name: BTreeMap<String, Slice> = BTreeMap::new();
    for facts in rows.values() {
        let Some(name) = key(facts) else { continue };
        let slice = by_name.entry(name.clone()).or_insert_with(|| Slice {
            name,
            rows: 0,
            images: 0,
            spent_micros: 0,
            kept: 0,
            flagged: 0,
        });
        slice.rows += 1;
        slice.images += facts.images;
        slice.spent_micros += facts.spent_micros;
        slice.kept += facts.kept;
        slice.flagged += facts.flagged;
    }
    by_name.into_values().collect()
}
