//! `darkroom run`: validate and load the job file, then run its pass against the upstream (or the
//! built-in simulator with `--sim`), showing progress, and exit with the code that says how it ended.

use std::path::{Path, PathBuf};

use darkroom_jobs::{Money, Pass};

use crate::commands::pass::{PassRun, RunFlags};
use darkroom_engine::load::LoadError;
use darkroom_engine::prepare::{prepare_job, JobFile};
use darkroom_engine::schedule_times;

use crate::commands::{
    budget_error, connect, job_name_for, lock_job, open_ledger, print_renamed, print_row_errors, PassArg,
    Upstream,
};
use crate::config::{self, Settings};
use crate::exit::{Exit, Failure};

/// Run a job file's pass: budgeted, rate-limited, resumable. Running it again resumes it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job file (.csv or .jsonl).
    pub file: PathBuf,
    /// Which pass: previews with photon-flash-1, or finals with photon-1.
    #[arg(long, value_enum, default_value_t = PassArg::Preview)]
    pub pass: PassArg,
    /// The pass's budget in USD (stored with the job; a later run may raise it).
    #[arg(long, value_name = "USD", value_parser = crate::commands::parse_usd)]
    pub budget: Option<Money>,
    /// The job's name [default: the file's stem].
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
    /// Where images and outputs go: OUT/JOB/PASS/ROWID[-VARIANT].EXT.
    #[arg(long, value_name = "DIR", env = crate::config::env::OUT, default_value = "out")]
    pub out: PathBuf,
    #[command(flatten)]
    pub upstream: Upstream,
    #[command(flatten)]
    pub flags: RunFlags,
    /// Wait until this time before the first create: HH:MM (local, next occurrence) or RFC 3339.
    #[arg(long, value_name = "TIME")]
    pub start_at: Option<String>,
    /// Send no new create after this time (HH:MM or RFC 3339); in-flight work finishes, the rest is
    /// skipped (deadline) and the exit code is 6. A resumed run keeps its deadline unless given a new one.
    #[arg(long, value_name = "TIME", conflicts_with = "max_duration")]
    pub deadline: Option<String>,
    /// The deadline as a duration from now: 90m, 8h, 1h30m.
    #[arg(long, value_name = "DURATION")]
    pub max_duration: Option<String>,
    /// Drop a deadline an earlier run of this job set.
    #[arg(long, conflicts_with_all = ["deadline", "max_duration"])]
    pub no_deadline: bool,
}

pub fn run(config_file: Option<&Path>, args: Args) -> anyhow::Result<Exit> {
    let settings = config::resolve(config_file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run_async(settings, args))
}

async fn run_async(settings: Settings, args: Args) -> anyhow::Result<Exit> {
    let mut settings = settings;
    settings.provider.default =
        crate::commands::route::home_provider(&settings, &args.upstream, &args.flags.route);
    let provider = settings.provider_name(args.upstream.provider);
    let settings = settings.for_provider(provider);
    let pass: Pass = args.pass.into();
    let job = job_name_for(args.job.as_deref(), &args.file)?;
    let (start_at, new_deadline) = times(&args)?;

    let db = args.upstream.db.clone();
    let read = darkroom_jobs::ReadOptions {
        default_aspect_ratio: settings.defaults.aspect_ratio,
        ..Default::default()
    };
    // With no ledger yet, the file is checked before one (and its lock files) is created: input
    // refused leaves nothing behind. An existing ledger is never removed, whoever made it.
    if !db.exists() {
        darkroom_engine::load::check_file(&args.file, read)
            .await
            .map_err(|e| load_error(&args.file, e))?;
    }
    let _lock = lock_job(&db, &job)?;
    let ledger = open_ledger(&db).await?;
    let prepared = prepare_job(
        &ledger,
        JobFile {
            name: &job,
            file: &args.file,
            pass,
            budget: args.budget,
            default_budget: settings.budget.default,
            routing: settings.routing,
            prices: settings.prices,
            read,
        },
    )
    .await
    .map_err(|e| load_error(&args.file, e))?;
    if let Some(report) = &prepared.loaded.report {
        tracing::info!(rows = report.rows, tasks = report.tasks, "job file loaded");
        print_renamed(&args.file, report);
    }
    let job_id = prepared.job_id;
    if let Some(deadline) = new_deadline {
        ledger
            .set_deadline(job_id, pass, Some(deadline.timestamp_millis()))
            .await?;
    } else if args.no_deadline {
        ledger.set_deadline(job_id, pass, None).await?;
    }
    let deadline_ms = ledger.pass(job_id, pass).await?.and_then(|p| p.deadline_at);

    let connection = connect(&args.upstream, &settings).await?;
    let situation = crate::commands::hints::same_situation(&args.upstream, &args.out);
    crate::commands::pass::execute(
        &settings,
        PassRun {
            ledger,
            connection,
            job,
            job_id,
            pass,
            out: args.out.clone(),
            flags: args.flags.clone(),
            start_at,
            deadline_ms,
            resume: crate::commands::hints::resume_run(&args.file, args.job.as_deref(), pass, &situation)
                + &crate::commands::route::flags_again(&args.flags.route),
            situation,
            scope: None,
            next: None,
        },
    )
    .await
}

type Time = chrono::DateTime<chrono::Utc>;

/// `--start-at` and the new deadline (`--deadline` or `--max-duration` from the start), read
/// before anything is recorded: a time that doesn't parse is bad input (exit 2).
fn times(args: &Args) -> anyhow::Result<(Option<Time>, Option<Time>)> {
    let now = chrono::Local::now();
    let time_error = |e: schedule_times::TimeError| Failure::new(Exit::BadInput, e.to_string());
    let start_at = args
        .start_at
        .as_deref()
        .map(|t| schedule_times::parse_time(t, now).map_err(time_error))
        .transpose()?;
    let new_deadline = match (&args.deadline, &args.max_duration) {
        (Some(text), _) => Some(schedule_times::parse_time(text, now).map_err(time_error)?),
        (None, Some(text)) => {
            let duration = schedule_times::parse_duration(text).map_err(time_error)?;
            Some(start_at.unwrap_or_else(chrono::Utc::now) + duration)
        }
        (None, None) => None,
    };
    Ok((start_at, new_deadline))
}

/// The exit a job that could not be prepared takes: an invalid file, one that can't be read, or a
/// budget below spend is bad input (exit 2, row errors printed); a ledger failure is exit 7.
fn load_error(file: &Path, error: LoadError) -> anyhow::Error {
    match error {
        LoadError::Invalid(report) => {
            print_row_errors(file, &report);
            Failure::new(
                Exit::BadInput,
                format!(
                    "{}; nothing was sent",
                    crate::commands::invalid_file(file, &report)
                ),
            )
            .into()
        }
        LoadError::File(e) => Failure::new(Exit::BadInput, e.to_string()).into(),
        // The job file itself could not be read (missing, a directory, no permission).
        e @ LoadError::Io { .. } => Failure::new(
            Exit::BadInput,
            format!(
                "{e}: {}",
                std::error::Error::source(&e).map_or_else(String::new, ToString::to_string)
            ),
        )
        .into(),
        LoadError::Ledger(e) => budget_error(e),
    }
}
