//! What a trial measured, read back from the ledger: per model, what an image cost, how long it
//! took (p50/p95 of the ledger's first-send-to-done times), how often it failed or was blocked by
//! moderation; and what the whole job, and a month's volume, would cost under each plan: all
//! Flash, all Photon 1, and Flash previews with the kept share promoted to Photon 1.
//!
//! The keep rate comes from the side-by-side choices when any pair of the trial was judged (the
//! share of judged pairs that "need Photon 1"); before any choice it is [`ASSUMED_KEEP`], and the
//! figures say so. Money is integer micro-dollars throughout; rates are shares for display only.

use darkroom_jobs::{Metadata, Model, Money, Pass, PriceTable, RoutingChoices};
use darkroom_ledger::{Ledger, Result};
use serde::Serialize;

/// The keep rate a projection assumes before any pair was judged: one preview in four promoted
/// (the same share `darkroom estimate --promote-fraction` assumes by default).
pub const ASSUMED_KEEP: (u64, u64) = (1, 4);

/// One model's figures in a trial.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelFigures {
    /// The model.
    pub model: Model,
    /// The trial's tasks on this model (one per sampled row).
    pub tasks: u64,
    /// Images made (cached copies included).
    pub images: u64,
    /// Of `images`, copied from an earlier identical request (no create, no latency).
    pub cached: u64,
    /// Tasks that failed after their attempts ran out.
    pub failed: u64,
    /// Tasks blocked by moderation.
    pub blocked: u64,
    /// Tasks not ended yet (pending, in flight, or skipped for the budget or a deadline).
    pub unfinished: u64,
    /// What this model's pass spent (charges less refunds), micro-dollars.
    pub spent: Money,
    /// `spent` per image made (failed attempts' charges included); `None` before any image.
    pub cost_per_image: Option<Money>,
    /// The table price per image, micro-dollars.
    pub table_price: Money,
    /// Median milliseconds from first send to the image kept, over images made (not cached).
    pub latency_p50_ms: Option<i64>,
    /// 95th percentile of the same.
    pub latency_p95_ms: Option<i64>,
    /// `failed` over ended tasks (images, failed, blocked); `None` before any ended.
    pub failure_rate: Option<f64>,
    /// `blocked` over ended tasks; `None` before any ended.
    pub moderation_rate: Option<f64>,
    /// Share of the images the quality checks measured that carry a flag (`Ledger::qc_counts`);
    /// `None` before any was measured (cached copies are not), never a guess.
    pub qc_flag_rate: Option<f64>,
}

impl ModelFigures {
    /// The price a projection uses for this model: the measured cost per image, else the table's.
    pub fn unit_cost(&self) -> Money {
        self.cost_per_image.unwrap_or(self.table_price)
    }
}

/// Where a projection's keep rate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepSource {
    /// The side-by-side choices: `kept` of `judged` pairs need Photon 1.
    Choices,
    /// No pair judged yet: [`ASSUMED_KEEP`].
    Assumed,
}

/// The share of previews promoted to Photon 1 in the previews-then-promotion plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeepRate {
    /// Pairs (or assumed parts) kept for Photon 1.
    pub kept: u64,
    /// Pairs judged (or the assumed whole).
    pub of: u64,
    /// Where it came from.
    pub source: KeepSource,
}

impl KeepRate {
    /// The number promoted out of `images`, rounded up (a part image is still an image).
    pub fn promoted(&self, images: u64) -> u64 {
        if self.of == 0 {
            return 0;
        }
        let product = u128::from(images) * u128::from(self.kept);
        u64::try_from(product.div_ceil(u128::from(self.of))).unwrap_or(u64::MAX)
    }

    /// The rate as a share, for display.
    #[allow(clippy::cast_precision_loss)] // A display share, not money.
    pub fn share(&self) -> f64 {
        if self.of == 0 {
            0.0
        } else {
            self.kept as f64 / self.of as f64
        }
    }
}

/// What a volume of images costs under each plan, at the trial's unit costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Projection {
    /// Images.
    pub images: u64,
    /// Every image with photon-flash-1.
    pub all_flash: Money,
    /// Every image with photon-1.
    pub all_photon_1: Money,
    /// Previews promoted at the keep rate.
    pub promoted: u64,
    /// Every image as a Flash preview, then `promoted` of them again with photon-1.
    pub previews_then_promotion: Money,
}

/// A trial's figures: per model, and the projections.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrialFigures {
    /// The job the trial samples.
    pub job: String,
    /// The trial job.
    pub trial_job: String,
    /// Rows the trial made on each model.
    pub rows: u64,
    /// Per model: photon-flash-1, then photon-1.
    pub models: Vec<ModelFigures>,
    /// Pairs judged on the side-by-side page, and how many need Photon 1.
    pub keep_rate: KeepRate,
    /// The whole job (one pass of its images).
    pub job_projection: Projection,
    /// `--per-month` images, when asked.
    pub per_month: Option<Projection>,
}

/// What the figures are asked about: the trial, the job's size and the month's volume.
#[derive(Debug, Clone, Copy)]
pub struct Volumes<'a> {
    /// The job the trial samples.
    pub job: &'a str,
    /// The trial job's name.
    pub trial_job: &'a str,
    /// The trial job's id.
    pub trial_job_id: i64,
    /// Images in one pass of the whole job.
    pub job_images: u64,
    /// Images a month, if asked.
    pub per_month: Option<u64>,
    /// The price table in force.
    pub prices: PriceTable,
}

/// Reads the trial's outcome from the ledger.
///
/// # Errors
/// A ledger failure.
pub async fn figures(ledger: &Ledger, volumes: Volumes<'_>) -> Result<TrialFigures> {
    let id = volumes.trial_job_id;
    let flash = model_figures(ledger, id, Pass::Preview, Model::PhotonFlash1, volumes.prices).await?;
    let photon = model_figures(ledger, id, Pass::Final, Model::Photon1, volumes.prices).await?;
    let keep_rate = keep_rate(ledger, volumes.job, id).await?;
    let project = |images| project(images, flash.unit_cost(), photon.unit_cost(), keep_rate);
    Ok(TrialFigures {
        job: volumes.job.to_string(),
        trial_job: volumes.trial_job.to_string(),
        rows: flash.tasks.max(photon.tasks),
        job_projection: project(volumes.job_images),
        per_month: volumes.per_month.map(project),
        keep_rate,
        models: vec![flash, photon],
    })
}

/// `images` under each plan at these unit costs.
pub fn project(images: u64, flash: Money, photon: Money, keep: KeepRate) -> Projection {
    let promoted = keep.promoted(images);
    Projection {
        images,
        all_flash: flash.times(images),
        all_photon_1: photon.times(images),
        promoted,
        previews_then_promotion: flash.times(images) + photon.times(promoted),
    }
}

async fn model_figures(
    ledger: &Ledger,
    job_id: i64,
    pass: Pass,
    model: Model,
    prices: PriceTable,
) -> Result<ModelFigures> {
    let counts = ledger.counts(job_id, pass).await?;
    let spent = ledger
        .pass(job_id, pass)
        .await?
        .map_or(Money::ZERO, |p| p.spent());
    let latencies = ledger.latencies(job_id, pass).await?;
    let qc = ledger.qc_counts(job_id, pass).await?;
    let ended = counts.done + counts.failed + counts.blocked;
    let rate = |n: u64| share(n, ended);
    let made = counts.done - counts.cached;
    Ok(ModelFigures {
        model,
        tasks: counts.total - counts.cancelled,
        images: counts.done,
        cached: counts.cached,
        failed: counts.failed,
        blocked: counts.blocked,
        unfinished: counts.pending + counts.in_flight + counts.skipped,
        spent,
        cost_per_image: (made > 0)
            .then(|| Money::from_micros(spent.micros() / i64::try_from(made).unwrap_or(i64::MAX))),
        table_price: prices.price(model),
        latency_p50_ms: percentile(&latencies, 50),
        latency_p95_ms: percentile(&latencies, 95),
        failure_rate: rate(counts.failed),
        moderation_rate: rate(counts.blocked),
        qc_flag_rate: share(qc.flagged, qc.checked),
    })
}

#[allow(clippy::cast_precision_loss)] // A display share, not money.
fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// The nearest-rank percentile of sorted values: the smallest value with at least `p`% at or below.
pub fn percentile(sorted: &[i64], p: u64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len() as u64;
    let rank = (p * n).div_ceil(100).max(1);
    sorted.get(usize::try_from(rank - 1).unwrap_or(0)).copied()
}

/// The keep rate from the choices the job `job` has for the trial's rows: each row's own choice,
/// else its group's; [`ASSUMED_KEEP`] when none of them is judged.
async fn keep_rate(ledger: &Ledger, job: &str, trial_job_id: i64) -> Result<KeepRate> {
    let choices = ledger.routing_choices(job).await?;
    let rows = ledger.tiles(trial_job_id, Pass::Preview).await?;
    let judged = judged_pairs(
        &choices,
        rows.iter()
            .map(|t| (t.row_id.as_str(), metadata(&t.metadata_json))),
    );
    Ok(match judged {
        (_, 0) => KeepRate {
            kept: ASSUMED_KEEP.0,
            of: ASSUMED_KEEP.1,
            source: KeepSource::Assumed,
        },
        (kept, of) => KeepRate {
            kept,
            of,
            source: KeepSource::Choices,
        },
    })
}

/// (pairs that need Photon 1, pairs judged) among the rows given.
pub fn judged_pairs<'a>(
    choices: &RoutingChoices,
    rows: impl Iterator<Item = (&'a str, Metadata)>,
) -> (u64, u64) {
    let mut kept = 0;
    let mut judged = 0;
    for (row_id, metadata) in rows {
        if let Some((model, _)) = choices.chosen(Pass::Final, row_id, &metadata) {
            judged += 1;
            kept += u64::from(model == Model::Photon1);
        }
    }
    (kept, judged)
}

/// A task's metadata, from its stored JSON object (an unreadable one is empty).
pub fn metadata(json: &str) -> Metadata {
    serde_json::from_str(json).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<i64> = (1..=20).collect();
        assert_eq!(percentile(&values, 50), Some(10));
        assert_eq!(percentile(&values, 95), Some(19));
        assert_eq!(percentile(&[7], 95), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn the_promotion_plan_pays_flash_for_all_and_photon_for_the_kept_share_rounded_up() {
        let keep = KeepRate {
            kept: 1,
            of: 3,
            source: KeepSource::Choices,
        };
        let p = project(10, Money::from_micros(4_000), Money::from_micros(15_000), keep);
        assert_eq!(p.promoted, 4);
        assert_eq!(p.all_flash, Money::from_micros(40_000));
        assert_eq!(p.all_photon_1, Money::from_micros(150_000));
        assert_eq!(p.previews_then_promotion, Money::from_micros(40_000 + 4 * 15_000));
    }
}
