//! The trial's figures on stdout: a per-model table and the projections as text, or one JSON
//! object (`--json`: the engine's `TrialFigures` with the sample's seed, size and strata; fields
//! are only ever added).

use darkroom_engine::trial::figures::{KeepRate, KeepSource, ModelFigures, Projection, TrialFigures};
use darkroom_engine::trial::sample::{Sample, SampleSpec, Stratum};
use serde::Serialize;

/// The JSON `--json` prints.
#[derive(Serialize)]
struct TrialJson<'a> {
    #[serde(flatten)]
    figures: &'a TrialFigures,
    seed: u64,
    sample_asked: u32,
    job_rows: u64,
    strata: &'a [Stratum],
}

/// Prints the figures as one JSON object.
pub(super) fn json(figures: &TrialFigures, sample: &Sample, spec: SampleSpec) -> anyhow::Result<()> {
    let json = TrialJson {
        figures,
        seed: spec.seed,
        sample_asked: spec.size,
        job_rows: sample.job_rows,
        strata: &sample.strata,
    };
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

/// Prints the figures as a table and the projections.
pub(super) fn text(
    figures: &TrialFigures,
    sample: &Sample,
    spec: SampleSpec,
    trial_job: &str,
    situation: &str,
) {
    println!(
        "trial of {}: {} row(s) of {} on each model (seed {}, {})",
        figures.job,
        figures.rows,
        sample.job_rows,
        spec.seed,
        super::strata_line(sample)
    );
    println!(
        "  {:<15} {:>6} {:>7} {:>8} {:>10} {:>8} {:>8} {:>10}",
        "model", "images", "failed", "blocked", "cost/image", "p50", "p95", "QC flagged"
    );
    for model in &figures.models {
        print_model(model);
    }
    print_keep_rate(figures.keep_rate, trial_job, situation);
    println!(
        "  {:<24} {:>10} {:>12} {:>14} {:>26}",
        "projection", "images", "all Flash", "all Photon 1", "previews then promotion"
    );
    print_projection("the whole job", &figures.job_projection);
    if let Some(month) = &figures.per_month {
        print_projection("a month", month);
    }
    println!("  (at each model's measured cost per image; the table price where none was made)");
}

fn print_model(m: &ModelFigures) {
    let money = |v: Option<darkroom_jobs::Money>| v.map_or_else(|| "-".to_string(), |m| m.to_string());
    let rate = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |r| format!("{:.1}%", r * 100.0));
    let seconds =
        |v: Option<i64>| v.map_or_else(|| "-".to_string(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
    println!(
        "  {:<15} {:>6} {:>7} {:>8} {:>10} {:>8} {:>8} {:>10}",
        m.model.as_str(),
        m.images,
        rate(m.failure_rate),
        rate(m.moderation_rate),
        money(m.cost_per_image),
        seconds(m.latency_p50_ms),
        seconds(m.latency_p95_ms),
        rate(m.qc_flag_rate),
    );
    if m.unfinished > 0 {
        println!(
            "  {:<15} {} not made yet (run the same command again)",
            "", m.unfinished
        );
    }
}

fn print_keep_rate(keep: KeepRate, trial_job: &str, situation: &str) {
    match keep.source {
        KeepSource::Choices => println!(
            "keep rate {:.0}%: {} of {} pairs judged on the side-by-side page need Photon 1",
            keep.share() * 100.0,
            keep.kept,
            keep.of
        ),
        KeepSource::Assumed => println!(
            "keep rate {:.0}% assumed: no pair judged yet (compare them: darkroom review {trial_job}{situation})",
            keep.share() * 100.0
        ),
    }
}

fn print_projection(label: &str, p: &Projection) {
    println!(
        "  {:<24} {:>10} {:>12} {:>14} {:>26}",
        label,
        p.images,
        p.all_flash.to_string(),
        p.all_photon_1.to_string(),
        format!("{} ({} promoted)", p.previews_then_promotion, p.promoted)
    );
}
