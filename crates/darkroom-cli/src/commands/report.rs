//! `darkroom report`: a job's spend, counts, latencies and contact sheet, as text, JSON or HTML.

use std::path::{Path, PathBuf};

use crate::commands::promote::open_job;
use crate::exit::{Exit, Failure};

/// A job's spend by pass, provider and model, estimate vs actual, counts, latencies, quality-check flags,
/// the prompts that need work (by trouble, and per `arm` and `group`) and contact sheet.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job's name (as `darkroom status` lists it).
    pub job: String,
    /// Print the report as JSON (stable field names, for scripts).
    #[arg(long, conflicts_with = "html")]
    pub json: bool,
    /// Write the report as one self-contained HTML file (works offline) [default: text on stdout].
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Where the job's images are (thumbnails for the HTML contact sheet are made from them).
    #[arg(long, value_name = "DIR", env = crate::config::env::OUT, default_value = "out")]
    pub out: PathBuf,
    /// The ledger (`--db`); the connection flags are accepted, and unused: a report reads only
    /// the ledger and the images on disk.
    #[command(flatten)]
    pub upstream: crate::commands::Upstream,
}

pub fn run(_config_file: Option<&Path>, args: Args) -> anyhow::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (ledger, job_id) = open_job(&args.upstream.db, &args.job).await?;
        let report = darkroom_review::report::build(&ledger, job_id, &args.job).await?;
        ledger.close().await;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else if let Some(path) = &args.html {
            let job_dir = args.out.join(&args.job);
            let html = tokio::task::spawn_blocking(move || report.to_html(&job_dir)).await?;
            darkroom_engine::files::write_atomically(path, html.as_bytes()).map_err(|e| {
                Failure::new(Exit::BadInput, format!("could not write {}: {e}", path.display()))
            })?;
            eprintln!("report: {}", path.display());
        } else {
            print!("{}", report.to_text());
        }
        Ok(Exit::Done)
    })
}
