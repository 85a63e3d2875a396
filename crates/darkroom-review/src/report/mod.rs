//! The job report: spend by pass, provider and model, estimate against actual, counts, attempts, latency
//! percentiles, quality-check flags, spend over time, the prompts that need work (`trouble`), the
//! contact sheet of previews beside their finals, the reframes under their sources and, for a
//! trial, its figures (`deliverables`).
//!
//! This module owns the model ([`JobReport`], built from the ledger by [`build`]); the renderers
//! live beside it: `text` for a terminal, JSON through `serde` (stable: fields are only added),
//! `html` for one self-contained file (thumbnails embedded) that works offline from `file://`, with
//! its chart in `chart` and its style sheet in `report.css`.

mod chart;
mod deliverables;
mod html;
mod needs_work;
mod text;
mod trouble;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use darkroom_jobs::Pass;
use darkroom_ledger::{Counts, Ledger, LedgerError, ModelSpend, QcCounts, StoredFlag, TaskState, TileRecord};
use serde::Serialize;

pub use html::escape;
pub use trouble::{Slice, Trouble, TroubleRow, TroubleTotals, MAX_LISTED};

/// Tiles embedded in the HTML contact sheet at most; the rest are counted, not shown.
pub const MAX_EMBEDDED_TILES: usize = 2_000;
/// The provider of an image made before the ledger named providers (migration 0012): only Luma
/// was spoken then.
const LEGACY_PROVIDER: &str = "luma";
/// Points of the spend-over-time series at most.
const MAX_POINTS: usize = 240;

/// Everything the report says about one job, as read from the ledger at `generated_at`.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// Bumped when a field changes meaning; fields are only ever added.
    pub version: u32,
    /// The job's name.
    pub job: String,
    /// When the report was built, RFC 3339 in UTC to the second.
    pub generated_at: String,
    /// The job's net spend over every pass (charges less refunds), in micro-dollars.
    pub spent_micros: i64,
    /// One entry per pass the job has run (preview first), absent passes left out.
    pub passes: Vec<PassReport>,
    /// Charges and refunds per pass, provider and model, from the ledger's money log (each
    /// entry names its `provider`).
    pub spend_by_model: Vec<ModelSpend>,
    /// `(unix ms, cumulative net spend in micro-dollars)`, at most 240 points.
    pub spend_over_time: Vec<(i64, i64)>,
    /// Previews and their finals, by group (the `group` metadata, else the row).
    pub groups: Vec<Group>,
    /// The latest account audits of the job (newest first, at most 10): generations the upstream
    /// committed that the ledger did not know, adopted or charged as extras.
    pub audits: Vec<darkroom_ledger::AuditRecord>,
    /// The prompts that need work: rows by trouble, and the tables per `arm` and `group`.
    pub trouble: Trouble,
    /// The reframes of the job's chosen images (`darkroom reframe`), in task order, each naming
    /// its source image; their counts and spend are the `reframe` entry of `passes`.
    pub reframes: Vec<Reframe>,
    /// For a trial job (`darkroom trial`): what it measured per model and what the plans cost.
    pub trial: Option<TrialSection>,
    /// Every charge of the job, oldest first, with what it was computed from: its `basis`
    /// (`per-image`, `per-megapixel`), `rate_micros` per unit, the `units` charged and, where the
    /// provider said, its own `billed_units` (fal). Charges recorded before the ledger kept bases
    /// are left out.
    pub charges: Vec<darkroom_ledger::ChargeRecord>,
}

pub use deliverables::{Reframe, TrialSection, TRIAL_PROJECTION_IMAGES};

/// One pass of the job: its budget, spend, estimate, counts, retries, latencies and prices.
#[derive(Debug, Clone, Serialize)]
pub struct PassReport {
    /// `preview` or `final`.
    pub pass: String,
    /// The pass's budget, in micro-dollars.
    pub budget_micros: i64,
    /// What the pass has been charged, net of refunds, in micro-dollars.
    pub spent_micros: i64,
    /// What the pass's tasks cost if each is made once (the estimate).
    pub estimate_micros: i64,
    /// Tasks per state and the attempts made.
    pub counts: Counts,
    /// Attempts beyond the first, over every task.
    pub retries: u64,
    /// Create-to-download latency percentiles per provider and model, over images made (not
    /// cached).
    pub latency: Vec<Latency>,
    /// What the account was observed to charge per image, per run and model (newest run first),
    /// beside the table's price. A higher one was counted (reservations and charges re-priced);
    /// a lower one only noted. Empty when the provider exposes no balance.
    pub prices: Vec<darkroom_ledger::PriceObservation>,
    /// The part of `spent_micros` no reservation covered (charges corrected up to an observed
    /// price, late commits found by an audit).
    pub unplanned_micros: i64,
    /// Kept images measured by the quality checks, and how many carry each flag.
    pub qc: QcCounts,
}

/// Latency percentiles of one model's images on one provider (nearest rank).
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// The provider that made the images (`luma`, `replicate`, `fal`).
    pub provider: String,
    /// The model's name, e.g. `photon-1`.
    pub model: String,
    /// How many images the percentiles are over.
    pub images: usize,
    /// The median latency, in milliseconds.
    pub p50_ms: i64,
    /// The 95th percentile latency, in milliseconds.
    pub p95_ms: i64,
}

/// A group of the contact sheet.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// The `group` metadata of its rows, else the row id.
    pub name: String,
    /// Its previews beside their finals, in file order.
    pub tiles: Vec<Pair>,
}

/// A preview and the final made from it (either may be missing).
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    /// The task key (row id, with its variant) the pair is shown under.
    pub id: String,
    /// The prompt sent.
    pub prompt: String,
    /// The preview, absent for a final made directly.
    pub preview: Option<Tile>,
    /// The final made from the preview, if any (`final` in JSON).
    #[serde(rename = "final")]
    pub final_: Option<Tile>,
}

/// One task's image, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tile {
    /// The task's row id in the ledger (the review page asks for its thumbnail by it).
    pub task: i64,
    /// The task's state (`done`, `failed`, `blocked`, ...).
    pub state: String,
    /// Whether the image was copied from an earlier job's identical request.
    pub cached: bool,
    /// The model's name.
    pub model: String,
    /// The provider its last create was sent to (`luma`, `replicate`, `fal`); absent for a
    /// task never sent, such as a cache copy.
    pub provider: Option<String>,
    /// What the task cost, in micro-dollars.
    pub cost_micros: i64,
    /// Why a task failed, was blocked or skipped.
    pub reason: Option<String>,
    /// The image's path on disk, once done.
    pub path: Option<String>,
    /// For a promoted final: how its preview was used (text for people).
    pub reference: Option<String>,
    /// For a promoted final: made from the prompt alone, its preview's URL having expired (the
    /// ledger's `reference_lost` flag; the note above is never searched for it).
    pub reference_lost: bool,
    /// The image's quality-check flags (empty when none, or not checked).
    pub qc: Vec<StoredFlag>,
}

impl Tile {
    /// Whether this final was made from the prompt alone because its preview's URL had expired.
    pub fn made_without_reference(&self) -> bool {
        self.reference_lost
    }

    pub(crate) fn of(t: &TileRecord, flags: &Flags) -> Tile {
        Tile {
            qc: flags.get(&t.id).cloned().unwrap_or_default(),
            task: t.id,
            state: t.state.to_string(),
            cached: t.cached != 0,
            model: t.model.clone(),
            provider: t.provider.clone(),
            cost_micros: t.cost_micros,
            reason: t.reason.clone(),
            path: t.output_path.clone(),
            reference: t.reference_note.clone(),
            reference_lost: t.reference_lost,
        }
    }
}

/// The group a task is shown in: its `group` metadata, else its row.
pub fn group_of(metadata_json: &str, row_id: &str) -> String {
    serde_json::from_str::<BTreeMap<String, String>>(metadata_json)
        .ok()
        .and_then(|m| m.get("group").cloned())
        .filter(|g| !g.trim().is_empty())
        .unwrap_or_else(|| row_id.to_string())
}

/// Builds the report of a job from the ledger.
///
/// # Errors
/// A ledger read that fails.
pub async fn build(ledger: &Ledger, job_id: i64, job: &str) -> Result<JobReport, LedgerError> {
    let previews = ledger.tiles(job_id, Pass::Preview).await?;
    let finals = ledger.tiles(job_id, Pass::Final).await?;
    let reframes = ledger.tiles(job_id, Pass::Reframe).await?;
    let mut flags = ledger.qc_flags(job_id, Pass::Preview, 0, i64::MAX).await?;
    flags.extend(ledger.qc_flags(job_id, Pass::Final, 0, i64::MAX).await?);
    let reframe_flags = by_task(&ledger.qc_flags(job_id, Pass::Reframe, 0, i64::MAX).await?);
    let mut passes = Vec::new();
    for (pass, tiles) in [
        (Pass::Preview, &previews),
        (Pass::Final, &finals),
        (Pass::Reframe, &reframes),
    ] {
        let Some(record) = ledger.pass(job_id, pass).await? else {
            continue;
        };
        passes.push(PassReport {
            pass: pass.as_str().to_string(),
            budget_micros: record.budget_micros,
            spent_micros: record.spent_micros,
            estimate_micros: ledger.planned_cost(job_id, pass).await?.micros(),
            counts: ledger.counts(job_id, pass).await?,
            retries: tiles
                .iter()
                .map(|t| u64::try_from(t.attempts - 1).unwrap_or(0))
                .sum(),
            latency: latencies(tiles),
            prices: ledger.observations(job_id, pass).await?,
            unplanned_micros: record.unplanned_micros,
            qc: ledger.qc_counts(job_id, pass).await?,
        });
    }
    let mut running = 0i64;
    let series: Vec<(i64, i64)> = ledger
        .spend_points(job_id)
        .await?
        .into_iter()
        .map(|p| {
            running += p.micros;
            (p.at, running)
        })
        .collect();
    Ok(JobReport {
        version: 1,
        job: job.to_string(),
        generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        spent_micros: running,
        passes,
        spend_by_model: ledger.spend_by_model(job_id).await?,
        spend_over_time: downsample(series),
        groups: pair_up(&previews, &finals, &by_task(&flags)),
        audits: ledger.audits(job_id, 10).await?,
        trouble: trouble::build(&previews, &finals, &flags),
        reframes: deliverables::reframes(&previews, &finals, &reframes, &reframe_flags),
        trial: deliverables::trial(ledger, job_id, job, (&previews, &finals)).await?,
        charges: ledger.charge_bases(job_id).await?,
    })
}

impl JobReport {
    /// Dates the report at the job's last charge or refund instead of now (when it has one), so
    /// two exports of a job that has not changed meanwhile carry the same report, byte for byte.
    pub fn pin_to_last_change(&mut self) {
        let last = self.spend_over_time.last().map(|(ms, _)| *ms);
        if let Some(at) = last.and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis) {
            self.generated_at = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        }
    }
}

fn latencies(tiles: &[TileRecord]) -> Vec<Latency> {
    let mut by_model: BTreeMap<(&str, &str), Vec<i64>> = BTreeMap::new();
    for t in tiles
        .iter()
        .filter(|t| t.state == TaskState::Done && t.cached == 0)
    {
        if let Some(ms) = t.latency_ms {
            let provider = t.provider.as_deref().unwrap_or(LEGACY_PROVIDER);
            by_model.entry((provider, t.model.as_str())).or_default().push(ms);
        }
    }
    by_model
        .into_iter()
        .map(|((provider, model), mut values)| {
            values.sort_unstable();
            Latency {
                provider: provider.to_string(),
                model: model.to_string(),
                images: values.len(),
                p50_ms: percentile(&values, 50),
                p95_ms: percentile(&values, 95),
            }
        })
        .collect()
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: usize) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// Keeps at most [`MAX_POINTS`] points, always the last (the total).
fn downsample(series: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    if series.len() <= MAX_POINTS {
        return series;
    }
    let step = series.len().div_ceil(MAX_POINTS);
    let last = series[series.len() - 1];
    let mut kept: Vec<(i64, i64)> = series.into_iter().step_by(step).collect();
    if kept.last() != Some(&last) {
        kept.push(last);
    }
    kept
}

/// Quality-check flags by task id.
type Flags = HashMap<i64, Vec<StoredFlag>>;

fn by_task(flags: &[StoredFlag]) -> Flags {
    let mut by_task = Flags::new();
    for flag in flags {
        by_task.entry(flag.task_id).or_default().push(flag.clone());
    }
    by_task
}

fn pair_up(previews: &[TileRecord], finals: &[TileRecord], flags: &Flags) -> Vec<Group> {
    let mut final_of_preview: HashMap<i64, &TileRecord> = HashMap::new();
    let mut final_by_key: HashMap<&str, &TileRecord> = HashMap::new();
    for f in finals {
        match f.preview_task_id {
            Some(preview) => final_of_preview.insert(preview, f),
            None => final_by_key.insert(f.task_key.as_str(), f),
        };
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut push = |name: String, pair: Pair| {
        let at = *index.entry(name.clone()).or_insert_with(|| {
            groups.push(Group {
                name,
                tiles: Vec::new(),
            });
            groups.len() - 1
        });
        groups[at].tiles.push(pair);
    };
    for p in previews {
        let final_ = final_of_preview
            .remove(&p.id)
            .or_else(|| final_by_key.remove(p.task_key.as_str()));
        push(
            group_of(&p.metadata_json, &p.row_id),
            Pair {
                id: p.task_key.clone(),
                prompt: p.prompt.clone(),
                preview: Some(Tile::of(p, flags)),
                final_: final_.map(|f| Tile::of(f, flags)),
            },
        );
    }
    // Finals made directly (`run --pass final`), or whose preview is gone from the sheet.
    let mut leftovers: Vec<&TileRecord> = final_by_key
        .into_values()
        .chain(final_of_preview.into_values())
        .collect();
    leftovers.sort_by_key(|f| f.id);
    for f in leftovers {
        push(
            group_of(&f.metadata_json, &f.row_id),
            Pair {
                id: f.task_key.clone(),
                prompt: f.prompt.clone(),
                preview: None,
                final_: Some(Tile::of(f, flags)),
            },
        );
    }
    groups
}

/// Builds the job's report and writes it as `JOB_DIR/report.html` (thumbnails from the images
/// under `job_dir`), returning the path. A report that can't be built or written is a warning, not
/// a failure: the run it follows has its own outcome.
pub async fn refresh(ledger: &Ledger, job_id: i64, job: &str, job_dir: &Path) -> Option<PathBuf> {
    let path = job_dir.join("report.html");
    let report = match build(ledger, job_id, job).await {
        Ok(report) => report,
        Err(error) => {
            tracing::warn!(%error, "could not build the report");
            return None;
        }
    };
    let (dir, target) = (job_dir.to_path_buf(), path.clone());
    let written = tokio::task::spawn_blocking(move || {
        let html = report.to_html(&dir);
        darkroom_engine::files::write_atomically(&target, html.as_bytes())
    })
    .await;
    match written {
        Ok(Ok(())) => Some(path),
        Ok(Err(error)) => {
            tracing::warn!(%error, path = %path.display(), "could not write the report");
            None
        }
        Err(error) => {
            tracing::warn!(%error, "could not write the report");
            None
        }
    }
}

#[cfg(test)]
mod tests;
