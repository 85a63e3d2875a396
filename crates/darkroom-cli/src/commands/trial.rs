//! `darkroom trial FILE`: a seeded sample of the job's rows made on photon-flash-1 and photon-1,
//! then what each model cost, how fast and how reliably it worked, and what the whole job (and a
//! month's volume) would cost under each plan. The sample, the trial job and the figures are the
//! engine's (`darkroom_engine::trial`); this is the glue: parse, prepare, run both passes through
//! `commands::pass`, print.

mod print;

use std::path::{Path, PathBuf};

use darkroom_engine::trial::sample::{self, Sample, SampleError, SampleSpec};
use darkroom_engine::trial::{self as engine_trial, figures, TrialJob};
use darkroom_jobs::{Money, Pass};

use crate::commands::pass::{PassRun, RunFlags};
use crate::commands::{
    budget_error, connect, hints, job_name_for, lock_job, open_ledger, print_row_errors, Upstream,
};
use crate::config::{self, Settings};
use crate::exit::{Exit, Failure};

/// Make a sample of a job's rows on both models, and compare cost, speed and reliability.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job file (.csv or .jsonl).
    pub file: PathBuf,
    /// Rows to sample (one image of each on each model); a job with fewer rows is tried whole.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub sample: u32,
    /// Project the cost of this many images a month under each plan.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub per_month: Option<u64>,
    /// The sample's seed: the same file, --sample and --seed take the same rows.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// The trial's budget in USD across both models, split in proportion to their prices
    /// [default: config budget.default, split the same way].
    #[arg(long, value_name = "USD", value_parser = crate::commands::parse_usd)]
    pub budget: Option<Money>,
    /// The job's name [default: the file's stem]; the trial is the job JOB-trial.
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
    /// Where images and outputs go: OUT/JOB-trial/{preview,final}/ROWID.EXT.
    #[arg(long, value_name = "DIR", env = crate::config::env::OUT, default_value = "out")]
    pub out: PathBuf,
    #[command(flatten)]
    pub upstream: Upstream,
    /// Creates per minute (0 turns the limit off) [default: config limits.creates_per_minute].
    #[arg(long, value_name = "N")]
    pub rate_per_minute: Option<u32>,
    /// Generations in flight at once [default: config limits.max_in_flight].
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<u32>,
    /// Print the figures as one JSON object on stdout (progress and summaries stay on stderr).
    #[arg(long)]
    pub json: bool,
}

pub fn run(config_file: Option<&Path>, args: Args) -> anyhow::Result<Exit> {
    let settings = config::resolve(config_file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run_async(settings, args))
}

async fn run_async(settings: Settings, args: Args) -> anyhow::Result<Exit> {
    let job = job_name_for(args.job.as_deref(), &args.file)?;
    let trial_job = engine_trial::trial_name(&job);
    darkroom_jobs::check_id(&trial_job).map_err(|e| {
        Failure::new(Exit::BadInput, format!("the trial's job name: {e}"))
            .with_hint("use --job with a shorter name")
    })?;
    let read = darkroom_jobs::ReadOptions {
        default_aspect_ratio: settings.defaults.aspect_ratio,
        ..Default::default()
    };
    let spec = SampleSpec {
        size: args.sample,
        seed: args.seed,
    };
    let drawn = draw(&args.file, read, spec).await?;

    let db = args.upstream.db.clone();
    let _lock = lock_job(&db, &trial_job)?;
    let ledger = open_ledger(&db).await?;
    let prepared = engine_trial::prepare_trial(
        &ledger,
        TrialJob {
            of_job: &job,
            name: &trial_job,
            sample: &drawn,
            spec,
            dir: &args.out.join(&trial_job),
            budget: args.budget,
            default_budget: settings.budget.default,
            prices: settings.prices,
            read,
        },
    )
    .await
    .map_err(|e| match e {
        darkroom_engine::load::LoadError::Ledger(e) => budget_error(e),
        e => anyhow::Error::new(e),
    })?;
    ledger.close().await;

    let situation = hints::same_situation(&args.upstream, &args.out);
    let resume = resume_command(&args, &situation);
    let mut exit = Exit::Done;
    for pass in [Pass::Preview, Pass::Final] {
        let passed = run_one(&settings, &args, &trial_job, prepared.job_id, pass, &resume).await?;
        if passed == Exit::Interrupted {
            return Ok(passed);
        }
        if passed != Exit::Done {
            exit = passed;
        }
    }

    let ledger = open_ledger(&db).await?;
    let figures = figures::figures(
        &ledger,
        figures::Volumes {
            job: &job,
            trial_job: &trial_job,
            trial_job_id: prepared.job_id,
            job_images: drawn.job_images,
            per_month: args.per_month,
            prices: settings.prices,
        },
    )
    .await?;
    ledger.close().await;
    if args.json {
        print::json(&figures, &drawn, spec)?;
    } else {
        print::text(&figures, &drawn, spec, &trial_job, &situation);
    }
    Ok(exit)
}

/// Draws the sample on a blocking thread; a job smaller than the sample is tried whole, and said so.
async fn draw(file: &Path, read: darkroom_jobs::ReadOptions, spec: SampleSpec) -> anyhow::Result<Sample> {
    let owned = file.to_path_buf();
    let drawn = tokio::task::spawn_blocking(move || sample::draw(&owned, &read, spec))
        .await?
        .map_err(|e| sample_error(file, e))?;
    if drawn.capped {
        eprintln!(
            "{} has {} row(s), fewer than --sample {}: the trial takes every row",
            file.display(),
            drawn.job_rows,
            spec.size
        );
    }
    Ok(drawn)
}

/// Runs one pass of the trial job, as `darkroom run` runs a pass.
async fn run_one(
    settings: &Settings,
    args: &Args,
    trial_job: &str,
    job_id: i64,
    pass: Pass,
    resume: &str,
) -> anyhow::Result<Exit> {
    let ledger = open_ledger(&args.upstream.db).await?;
    let deadline_ms = ledger.pass(job_id, pass).await?.and_then(|p| p.deadline_at);
    let situation = hints::same_situation(&args.upstream, &args.out);
    let connection = connect(&args.upstream, settings).await?;
    crate::commands::pass::execute(
        settings,
        PassRun {
            ledger,
            connection,
            job: trial_job.to_string(),
            job_id,
            pass,
            out: args.out.clone(),
            flags: RunFlags {
                rate_per_minute: args.rate_per_minute,
                max_in_flight: args.max_in_flight,
                no_cache: false,
                no_metadata: false,
                json: false,
                drain_timeout: 60,
                notify: Vec::new(),
                callbacks_listen: None,
                callbacks_url: None,
                account: None,
                label: None,
                route: crate::commands::route::RouteFlags::default(),
            },
            start_at: None,
            deadline_ms,
            resume: resume.to_string(),
            situation: situation.clone(),
            scope: None,
            // The trial's previews are not chosen from: its pairs are judged once both passes ran.
            next: Some(match pass {
                Pass::Preview => String::new(),
                _ => format!(
                    "next: darkroom review {}{situation}, page /trial: judge each pair (Flash is enough, or \
                     needs Photon 1); the choices route the finals of the job, none is made there",
                    hints::quoted(trial_job)
                ),
            }),
        },
    )
    .await
}

/// The command that resumes this trial: the same file, sample, seed and job.
fn resume_command(args: &Args, situation: &str) -> String {
    let mut command = format!(
        "darkroom trial {}",
        hints::quoted(&args.file.display().to_string())
    );
    command.push_str(&format!(" --sample {} --seed {}", args.sample, args.seed));
    if let Some(job) = &args.job {
        command.push_str(&format!(" --job {}", hints::quoted(job)));
    }
    command.push_str(situation);
    command
}

/// A sample that can't be drawn is bad input (exit 2): nothing was recorded or sent.
fn sample_error(file: &Path, error: SampleError) -> anyhow::Error {
    match error {
        SampleError::Invalid(report) => {
            print_row_errors(file, &report);
            Failure::new(
                Exit::BadInput,
                if report.records == 0 {
                    format!("{} has no row to sample; nothing was sent", file.display())
                } else {
                    format!(
                        "{}; nothing was sent",
                        crate::commands::invalid_file(file, &report)
                    )
                },
            )
            .with_hint(format!("darkroom validate {} lists them all", file.display()))
            .into()
        }
        SampleError::File(e) => Failure::new(Exit::BadInput, format!("{e}; nothing was sent")).into(),
        SampleError::Empty => Failure::new(
            Exit::BadInput,
            format!("{} has no row to sample; nothing was sent", file.display()),
        )
        .into(),
    }
}

/// What the sample was drawn from, for the text and the JSON.
fn strata_line(sample: &Sample) -> String {
    if let [only] = sample.strata.as_slice() {
        if only.key == "all rows" {
            return format!("spread over all {} rows", sample.job_rows);
        }
    }
    let parts: Vec<String> = sample
        .strata
        .iter()
        .map(|s| format!("{} {}/{}", s.key, s.taken, s.rows))
        .collect();
    format!("stratified: {}", parts.join(", "))
}
