//! `darkroom verify [JOB]`: hashes every done image of a job (every job when none is named) and
//! compares it with the hash and size the ledger recorded. Prints what is missing or changed, marks
//! those tasks so the job's next `run` (or `promote`) restores them, and exits 1 when anything is
//! wrong. Needs no key: it reads only the ledger and the files.

use std::path::{Path, PathBuf};

use darkroom_engine::content::{verify_job, Finding, Problem, Unverified, VerifyReport};
use serde_json::json;

use crate::exit::Exit;

/// Check every done image's file against the hash the ledger recorded for it.
///
/// Exit codes: 0 every file holds its recorded bytes (files kept before hashes were recorded are
/// listed as unverified, not wrong); 1 some file is missing, changed or unreadable (the missing and
/// changed ones are restored by the job's next `run`); 2 bad usage (no ledger, no such job).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job's name [default: every job in the ledger].
    pub job: Option<String>,
    /// The ledger file.
    #[arg(long, value_name = "PATH", env = crate::config::env::DB, default_value = "darkroom.db")]
    pub db: PathBuf,
    /// Look for the images under this output directory (OUT/JOB/PASS/) instead of the paths the
    /// runs recorded (for a job whose output directory was moved).
    #[arg(long, value_name = "DIR", env = crate::config::env::OUT)]
    pub out: Option<PathBuf>,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Record the current hash of images kept before hashes were recorded ("unverified"), after
    /// you have looked at them: from then on they are checked, and the cache may reuse them.
    #[arg(long)]
    pub record_unverified: bool,
}

pub fn run(_config: Option<&Path>, args: Args) -> anyhow::Result<Exit> {
    crate::commands::require_ledger(&args.db)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (ledger, jobs) = crate::commands::find_jobs(&args.db, args.job.as_deref()).await?;
        let unverified = if args.record_unverified {
            Unverified::Record
        } else {
            Unverified::Report
        };
        let mut reports = Vec::new();
        for job in &jobs {
            let report = verify_job(&ledger, job, args.out.as_deref(), unverified).await?;
            if !args.json {
                print_text(&job.name, &report);
            }
            reports.push((job.name.clone(), report));
        }
        ledger.close().await;
        let damaged = reports.iter().any(|(_, r)| r.has_damage());
        if args.json {
            let jobs: Vec<_> = reports
                .iter()
                .map(|(name, r)| {
                    json!({
                        "job": name, "checked": r.checked, "intact": r.intact, "marked": r.marked,
                        "findings": r.findings,
                    })
                })
                .collect();
            println!("{}", json!({ "ok": !damaged, "jobs": jobs }));
        } else if reports.iter().any(|(_, r)| r.marked > 0) {
            eprintln!(
                "hint: run the job again (the same `darkroom run` or `darkroom promote`): it downloads \
                 the marked images again, or makes them again under the budget if the upstream no longer has them"
            );
        }
        Ok(if damaged { Exit::SomeFailed } else { Exit::Done })
    })
}

fn print_text(job: &str, report: &VerifyReport) {
    for finding in &report.findings {
        println!("{}", finding_line(finding));
    }
    let count = |p: Problem| report.findings.iter().filter(|f| f.problem == p).count();
    println!(
        "{job}: {} checked, {} intact, {} missing, {} changed, {} unreadable, {} unverified; {} marked to restore on the next run",
        report.checked,
        report.intact,
        count(Problem::Missing),
        count(Problem::Changed),
        count(Problem::Unreadable),
        count(Problem::Unverified),
        report.marked
    );
}

/// `JOB PASS row ROW (ID) PATH: PROBLEM, expected ..., found ...`
fn finding_line(f: &Finding) -> String {
    let describe = |c: &darkroom_ledger::ImageContent| format!("blake3 {} ({} bytes)", c.hash, c.bytes);
    let mut line = format!(
        "{} {} row {} ({}) {}: {}",
        f.job,
        f.pass,
        f.row_id,
        f.id,
        f.path,
        f.problem.as_str()
    );
    if let Some(expected) = &f.expected {
        line.push_str(&format!(", expected {}", describe(expected)));
    }
    match (&f.found, &f.error) {
        (Some(found), _) => line.push_str(&format!(", found {}", describe(found))),
        (None, Some(error)) => line.push_str(&format!(" ({error})")),
        (None, None) => line.push_str(", found no file"),
    }
    line
}
