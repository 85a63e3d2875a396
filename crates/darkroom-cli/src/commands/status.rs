//! `darkroom status [JOB]`: counts per state, spend, reservations, budget and throughput, read from
//! the ledger (safe while a run is going on).

use std::path::{Path, PathBuf};

use darkroom_jobs::Pass;
use serde_json::json;

use crate::exit::Exit;

/// Show a job's progress and spend (every job when none is named).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job's name.
    pub job: Option<String>,
    /// The ledger file.
    #[arg(long, value_name = "PATH", env = crate::config::env::DB, default_value = "darkroom.db")]
    pub db: PathBuf,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_config: Option<&Path>, args: Args) -> anyhow::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (ledger, jobs) = crate::commands::find_jobs(&args.db, args.job.as_deref()).await?;
        if jobs.is_empty() && !args.json {
            eprintln!(
                "no jobs in {} yet: `darkroom run FILE{}` makes one",
                args.db.display(),
                crate::commands::hints::db_flag(&args.db)
            );
        }
        let mut report = Vec::new();
        for job in jobs {
            let mut passes = Vec::new();
            for pass in Pass::ALL {
                if let Some(status) = pass_status(&ledger, &job, pass, args.json).await? {
                    passes.push(status);
                }
            }
            report.push(json!({ "job": job.name, "file": job.file_path, "passes": passes }));
        }
        if args.json {
            println!("{}", json!({ "jobs": report }));
        }
        ledger.close().await;
        Ok(Exit::Done)
    })
}

/// One pass's status as JSON, printed as text too unless `json_only`; `None` when the job has no
/// such pass.
async fn pass_status(
    ledger: &darkroom_ledger::Ledger,
    job: &darkroom_ledger::JobRecord,
    pass: Pass,
    json_only: bool,
) -> anyhow::Result<Option<serde_json::Value>> {
    let Some(record) = ledger.pass(job.id, pass).await? else {
        return Ok(None);
    };
    let counts = ledger.counts(job.id, pass).await?;
    let elapsed_min = match (record.started_at, record.finished_at) {
        (Some(start), Some(end)) => (end - start) as f64 / 60_000.0,
        (Some(start), None) => (darkroom_ledger::now_ms() - start) as f64 / 60_000.0,
        _ => 0.0,
    };
    let per_minute = if elapsed_min > 0.0 {
        counts.done as f64 / elapsed_min
    } else {
        0.0
    };
    // The latest run's observation of each model, where the account's price differs.
    let observed: Vec<_> = latest_per_model(ledger.observations(job.id, pass).await?)
        .into_iter()
        .filter(|o| o.observed_micros != o.table_micros)
        .collect();
    let status = json!({
        "pass": pass.as_str(), "status": record.status, "counts": counts,
        "budget": record.budget(), "spent": record.spent(), "reserved": record.reserved(),
        "images_per_minute": (per_minute * 10.0).round() / 10.0,
        "prices": observed.iter().map(|o| json!({
            "model": o.model, "table": o.table(), "observed": o.observed(),
            "applied": o.observed_micros > o.table_micros, "per": o.per,
        })).collect::<Vec<_>>(),
    });
    if !json_only {
        println!(
            "{} {}: {} ({} of {} done, {} cached, {} in flight, {} pending, {} failed, {} blocked, {} skipped)",
            job.name,
            pass,
            record.status,
            counts.done,
            counts.total,
            counts.cached,
            counts.in_flight,
            counts.pending,
            counts.failed,
            counts.blocked,
            counts.skipped
        );
        println!(
            "  spent {} + reserved {} of {} budget; {:.1} images/min",
            record.spent(),
            record.reserved(),
            record.budget(),
            per_minute
        );
        for o in &observed {
            let counted = if o.observed_micros > o.table_micros {
                "counted at the observed price"
            } else {
                "the table's price is kept"
            };
            let per = if o.per == "megapixel" {
                "per megapixel"
            } else {
                "an image"
            };
            println!(
                "  {}: the account charged {} {per}, the table says {} ({counted})",
                o.model,
                o.observed(),
                o.table()
            );
        }
    }
    Ok(Some(status))
}

/// The newest run's observation of each model (observations come newest run first).
pub fn latest_per_model(
    observations: Vec<darkroom_ledger::PriceObservation>,
) -> Vec<darkroom_ledger::PriceObservation> {
    let mut latest: Vec<darkroom_ledger::PriceObservation> = Vec::new();
    for o in observations {
        if !latest.iter().any(|l| l.model == o.model) {
            latest.push(o);
        }
    }
    latest
}
