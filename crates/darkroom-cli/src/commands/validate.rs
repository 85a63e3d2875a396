//! `darkroom validate FILE`: every problem of a job file with its line, every row whose derived
//! name was made unique, and with `--provider NAME` every row that provider can't make whole
//! (`FILE:LINE: row ID: replicate can't make ...`, an error), on stderr; the summary counts such
//! rows per provider; a one-line summary on stdout (saying how many physical lines
//! the records took when quoted fields span lines); exit 0 when valid, 2 otherwise. Nothing is sent
//! anywhere.

use std::path::{Path, PathBuf};

use crate::commands::{print_renamed, print_row_errors};
use crate::config;
use crate::exit::{Exit, Failure};

/// Check a job file: every problem with its line, and nothing spent.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job file (.csv or .jsonl).
    pub file: PathBuf,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also check every row against this provider: a row it can't make whole is an error with its
    /// line (exit 2). Without it, the summary only counts such rows per provider.
    #[arg(long, value_enum, value_name = "NAME")]
    pub provider: Option<crate::config::provider::ProviderName>,
}

pub fn run(config_file: Option<&Path>, args: Args) -> anyhow::Result<Exit> {
    let settings = config::resolve(config_file)?;
    let options = darkroom_jobs::ReadOptions {
        default_aspect_ratio: settings.defaults.aspect_ratio,
        ..Default::default()
    };
    let mut fits = crate::commands::providers::Fit::every(&settings);
    let routing = settings.routing;
    let report = darkroom_jobs::read_job(&args.file, &options, |row| {
        // Checked for the preview pass's model; the references decide, not the model.
        let model = row.model.unwrap_or(routing.preview);
        for fit in &mut fits {
            fit.add(&row, model);
        }
    })
    .map_err(|e| Failure::new(Exit::BadInput, e.to_string()))?;
    print_row_errors(&args.file, &report);
    print_renamed(&args.file, &report);
    let chosen = fits.iter().find(|f| Some(f.name) == args.provider);
    if let Some(fit) = chosen {
        fit.print_refused(&args.file);
    }
    let provider_ok = chosen.is_none_or(|f| f.refused.is_empty());
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "valid": report.is_valid(), "rows": report.rows, "tasks": report.tasks,
                "metadata_columns": report.metadata_columns, "errors": report.error_count,
                "records": report.records, "lines": report.lines, "renamed": report.renamed_count,
                "providers": fits.iter().map(|f| serde_json::json!({
                    "provider": f.name.as_str(), "tasks": f.tasks, "rows_refused": f.refused.len(),
                })).collect::<Vec<_>>(),
            })
        );
    } else {
        let columns = if report.metadata_columns.is_empty() {
            "none".to_string()
        } else {
            report.metadata_columns.join(", ")
        };
        let verdict = if report.is_valid() {
            "valid".to_string()
        } else {
            format!("{} error(s)", report.error_count)
        };
        let mut read = String::new();
        if report.lines != report.records {
            read.push_str(&format!(
                "; {} lines read as {} records (quoted fields span lines)",
                report.lines, report.records
            ));
        }
        if report.renamed_count > 0 {
            read.push_str(&format!("; {} derived name(s) made unique", report.renamed_count));
        }
        for fit in fits.iter().filter(|f| !f.refused.is_empty()) {
            let name = fit.name.as_str();
            read.push_str(&format!(
                "; {name} can't make {} row(s) (--provider {name} lists them)",
                fit.refused.len()
            ));
        }
        println!(
            "{}: {verdict}; {} rows, {} tasks{read}; metadata columns: {columns}",
            args.file.display(),
            report.rows,
            report.tasks
        );
    }
    Ok(if report.is_valid() && provider_ok {
        Exit::Done
    } else {
        Exit::BadInput
    })
}
