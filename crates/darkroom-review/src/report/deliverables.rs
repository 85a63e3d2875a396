//! The report's parts beyond one pass of images: the reframes of chosen images (each under its
//! source, with its shape, state, cost and flags; thumbnails embedded in the HTML) and, for a
//! trial job, the trial's figures (`darkroom_engine::trial::figures`: per model, and what the
//! plans cost) as the HTML report's "Trial" section.
//!
//! A trial's projection is for the trialled job's size when that job is in the ledger (its
//! previews' tasks), else for 1,000 images: the report is built from the ledger alone, and the
//! job file's size is known only to `darkroom trial` itself, which prints the projection for it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use darkroom_engine::trial::figures::{self, TrialFigures, Volumes};
use darkroom_jobs::{Model, Money, Pass, PriceTable};
use darkroom_ledger::{Ledger, LedgerError, StoredFlag, TileRecord};
use serde::Serialize;

use super::html::escape;
use super::{JobReport, MAX_EMBEDDED_TILES};
use crate::thumbs;

/// Images a trial's projection is for when the trialled job is not in the ledger.
pub const TRIAL_PROJECTION_IMAGES: u64 = 1_000;

/// One reframe of a chosen image.
#[derive(Debug, Clone, Serialize)]
pub struct Reframe {
    /// Its task key (`KEY-W-H`, a preview's `KEY-preview-W-H`).
    pub key: String,
    /// Its source image, `PASS/KEY` (`final/jar`); `None` when the source is gone from the job.
    pub source: Option<String>,
    /// The target aspect ratio, as the API spells it.
    pub aspect_ratio: String,
    /// The task's state (`done`, `failed`, `skipped`, ...).
    pub state: String,
    /// Why it failed, was blocked or skipped.
    pub reason: Option<String>,
    /// What it cost, micro-dollars.
    pub cost_micros: i64,
    /// The image's path on disk, once done.
    pub path: Option<String>,
    /// Its quality-check flags.
    pub qc: Vec<StoredFlag>,
}

/// A trial's figures as the report shows them.
#[derive(Debug, Clone, Serialize)]
pub struct TrialSection {
    /// Per model, the keep rate and the projection (`projection` below is `job_projection`).
    pub figures: TrialFigures,
    /// Whether the projection is for the trialled job's own size (its previews in this ledger);
    /// `false`: for [`TRIAL_PROJECTION_IMAGES`] images.
    pub job_size_known: bool,
}

/// The reframes of the job, in task order, each naming its source.
pub(super) fn reframes(
    previews: &[TileRecord],
    finals: &[TileRecord],
    reframes: &[TileRecord],
    flags: &HashMap<i64, Vec<StoredFlag>>,
) -> Vec<Reframe> {
    let sources: HashMap<i64, String> = [(Pass::Preview, previews), (Pass::Final, finals)]
        .into_iter()
        .flat_map(|(pass, tiles)| {
            tiles
                .iter()
                .map(move |t| (t.id, format!("{}/{}", pass.as_str(), t.task_key)))
        })
        .collect();
    reframes
        .iter()
        .map(|r| Reframe {
            key: r.task_key.clone(),
            source: r.source_task_id.and_then(|id| sources.get(&id).cloned()),
            aspect_ratio: r.aspect_ratio.clone(),
            state: r.state.to_string(),
            reason: r.reason.clone(),
            cost_micros: r.cost_micros,
            path: r.output_path.clone(),
            qc: flags.get(&r.id).cloned().unwrap_or_default(),
        })
        .collect()
}

/// The trial's figures when the job is a trial, else `None`. Unit prices fall back to what the
/// trial's tasks were loaded at.
///
/// # Errors
/// A ledger read that fails.
pub(super) async fn trial(
    ledger: &Ledger,
    job_id: i64,
    job: &str,
    tiles: (&[TileRecord], &[TileRecord]),
) -> Result<Option<TrialSection>, LedgerError> {
    let Some(record) = ledger.trial(job_id).await? else {
        return Ok(None);
    };
    let job_images = match ledger.job(&record.of_job).await {
        Ok(trialled) => {
            let c = ledger.counts(trialled.id, Pass::Preview).await?;
            c.total - c.cancelled
        }
        Err(LedgerError::NoSuchJob(_)) => 0,
        Err(e) => return Err(e),
    };
    let loaded_at = |tiles: &[TileRecord], model: Model| {
        tiles
            .first()
            .map_or_else(|| PriceTable::default().price(model), TileRecord::price)
    };
    let prices = PriceTable {
        photon_flash_1: loaded_at(tiles.0, Model::PhotonFlash1),
        photon_1: loaded_at(tiles.1, Model::Photon1),
        ..PriceTable::default()
    };
    let figures = figures::figures(
        ledger,
        Volumes {
            job: &record.of_job,
            trial_job: job,
            trial_job_id: job_id,
            job_images: if job_images > 0 {
                job_images
            } else {
                TRIAL_PROJECTION_IMAGES
            },
            per_month: None,
            prices,
        },
    )
    .await?;
    Ok(Some(TrialSection {
        figures,
        job_size_known: job_images > 0,
    }))
}

fn usd(money: Money) -> String {
    money.to_string()
}

fn rate(share: Option<f64>) -> String {
    share.map_or_else(|| "&ndash;".to_string(), |s| format!("{:.1}%", s * 100.0))
}

fn seconds(ms: Option<i64>) -> String {
    ms.map_or_else(
        || "&ndash;".to_string(),
        |ms| format!("{:.1} s", ms as f64 / 1000.0),
    )
}

impl JobReport {
    /// The "Trial" section: the per-model table and the projection under each plan.
    pub(super) fn trial_html(&self, html: &mut String) {
        let Some(section) = &self.trial else {
            return;
        };
        let f = &section.figures;
        let _ = write!(
            html,
            "<h2>Trial</h2><p class=\"meta\">{} rows of {} made with each model</p>\
             <table class=\"trial\"><tr><th>model</th><th>images</th><th>cost per image</th><th>p50</th>\
             <th>p95</th><th>failure rate</th><th>moderation rate</th><th>QC flag rate</th></tr>",
            f.rows,
            escape(&f.job)
        );
        for m in &f.models {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                m.model.as_str(),
                m.images,
                usd(m.unit_cost()),
                seconds(m.latency_p50_ms),
                seconds(m.latency_p95_ms),
                rate(m.failure_rate),
                rate(m.moderation_rate),
                rate(m.qc_flag_rate)
            );
        }
        let p = &f.job_projection;
        let keep = match f.keep_rate.source {
            figures::KeepSource::Choices => format!(
                "{} of {} judged pairs need Photon 1",
                f.keep_rate.kept, f.keep_rate.of
            ),
            figures::KeepSource::Assumed => format!(
                "no pair judged yet: {} in {} assumed",
                f.keep_rate.kept, f.keep_rate.of
            ),
        };
        let size = if section.job_size_known {
            format!("{} images, the size of {}", p.images, escape(&f.job))
        } else {
            format!("{} images ({} is not in this ledger)", p.images, escape(&f.job))
        };
        let _ = write!(
            html,
            "</table><h3>Projection for {size}</h3><table class=\"projection\"><tr><th>plan</th><th>cost</th></tr>\
             <tr><td>all photon-flash-1</td><td>{}</td></tr><tr><td>all photon-1</td><td>{}</td></tr>\
             <tr><td>previews, then {} promoted to photon-1</td><td>{}</td></tr></table>\
             <p class=\"meta\">keep rate: {keep}</p>",
            usd(p.all_flash),
            usd(p.all_photon_1),
            p.promoted,
            usd(p.previews_then_promotion)
        );
    }

    /// The "Reframes" section: counts by shape, then each source's reframes with thumbnails (the
    /// contact sheet's embedding limit counts them too).
    pub(super) fn reframes_html(&self, html: &mut String, job_dir: &Path) {
        if self.reframes.is_empty() {
            return;
        }
        let mut by_shape: Vec<(&str, usize, usize, i64)> = Vec::new();
        for r in &self.reframes {
            let at = by_shape
                .iter()
                .position(|s| s.0 == r.aspect_ratio)
                .unwrap_or_else(|| {
                    by_shape.push((r.aspect_ratio.as_str(), 0, 0, 0));
                    by_shape.len() - 1
                });
            by_shape[at].1 += 1;
            by_shape[at].2 += usize::from(r.state == "done");
            by_shape[at].3 += r.cost_micros;
        }
        html.push_str("<h2>Reframes</h2><table class=\"reframes\"><tr><th>shape</th><th>reframes</th><th>done</th><th>spent</th></tr>");
        for (shape, all, done, micros) in by_shape {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{all}</td><td>{done}</td><td>{}</td></tr>",
                escape(shape),
                usd(Money::from_micros(micros))
            );
        }
        html.push_str("</table><div class=\"sheet\">");
        let shown: Vec<&Reframe> = self.reframes.iter().take(MAX_EMBEDDED_TILES).collect();
        let wanted: Vec<(&'static str, &str, &str)> = shown
            .iter()
            .filter(|r| r.state == "done")
            .filter_map(|r| Some(("reframe", r.key.as_str(), r.path.as_deref()?)))
            .collect();
        let thumbs = thumbs::make_many(job_dir, &wanted);
        for r in shown {
            let image = thumbs
                .get(&("reframe", r.key.as_str()))
                .and_then(Option::as_deref)
                .map(|bytes| {
                    use base64::Engine as _;
                    format!(
                        "<img alt=\"reframe {}\" src=\"data:image/jpeg;base64,{}\">",
                        escape(&r.key),
                        base64::engine::general_purpose::STANDARD.encode(bytes)
                    )
                })
                .unwrap_or_else(|| format!("<div class=\"empty\">{}</div>", escape(&r.state)));
            let flags: Vec<&str> = r.qc.iter().map(|f| f.kind.as_str()).collect();
            let _ = write!(
                html,
                "<figure class=\"pair reframe\"><figcaption>{} &rarr; {}</figcaption>{image}\
                 <span class=\"meta\">{} &middot; {}{}</span></figure>",
                escape(r.source.as_deref().unwrap_or("(source gone)")),
                escape(&r.aspect_ratio),
                escape(&r.state),
                usd(Money::from_micros(r.cost_micros)),
                if flags.is_empty() {
                    String::new()
                } else {
                    format!(" &middot; &#9873; {}", flags.join(", "))
                }
            );
        }
        html.push_str("</div>");
        if self.reframes.len() > MAX_EMBEDDED_TILES {
            let _ = write!(
                html,
                "<p class=\"meta\">{} more reframes are not shown here; see manifest.csv.</p>",
                self.reframes.len() - MAX_EMBEDDED_TILES
            );
        }
    }
}
