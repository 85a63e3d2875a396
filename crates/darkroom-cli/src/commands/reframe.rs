//! `darkroom reframe`: chosen images (the job's done finals, or previews) extended by the upstream
//! to other aspect ratios, under the reframe pass's own budget; the same command again resumes
//! them and makes nothing new. Images go to OUT/JOB/reframe/KEY-W-H.EXT.

use std::path::{Path, PathBuf};

use darkroom_engine::reframe::{self, From, Plan};
use darkroom_engine::EngineError;
use darkroom_jobs::{AspectRatio, Money, Pass};
use darkroom_ledger::Ledger;

use crate::commands::pass::{PassRun, RunFlags};
use crate::commands::{budget_error, connect, Upstream, MAX_ERRORS_SHOWN};
use crate::config::{self, Settings};
use crate::exit::{Exit, Failure};

/// Which images `--from` chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FromArg {
    /// The job's done finals.
    Final,
    /// The job's done previews.
    Preview,
}

/// `darkroom reframe`'s arguments (its help text is the command's, in `main.rs`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job's name (as `darkroom status` lists it).
    pub job: String,
    /// The aspect ratios to make, comma-separated: 1:1, 16:9, 9:16, 4:3, 3:4, 21:9, 9:21.
    #[arg(long, value_name = "LIST", required = true, value_parser = parse_to)]
    pub to: Targets,
    /// Which images to reframe [default: the done finals, or the done previews when there is none].
    #[arg(long, value_enum, value_name = "PASS")]
    pub from: Option<FromArg>,
    /// Only these images: a CSV with an `id` column (the review page's export, or manifest.csv
    /// with `keep` filled: y, yes, x, 1 or true); each id names its row's final (or with
    /// --from preview, its preview).
    #[arg(long, value_name = "FILE")]
    pub select: Option<PathBuf>,
    /// The reframe pass's budget in USD, separate from the other passes' [default: config
    /// budget.default].
    #[arg(long, value_name = "USD", value_parser = crate::commands::parse_usd)]
    pub budget: Option<Money>,
    /// Where images and outputs go: reframes in OUT/JOB/reframe/.
    #[arg(long, value_name = "DIR", env = crate::config::env::OUT, default_value = "out")]
    pub out: PathBuf,
    #[command(flatten)]
    pub upstream: Upstream,
    #[command(flatten)]
    pub flags: RunFlags,
}

/// `--to` as given (for the resume command) and as read.
#[derive(Debug, Clone)]
pub struct Targets {
    text: String,
    ratios: Vec<AspectRatio>,
}

fn parse_to(text: &str) -> Result<Targets, String> {
    Ok(Targets {
        text: text.to_string(),
        ratios: reframe::parse_targets(text)?,
    })
}

pub fn run(config_file: Option<&Path>, args: Args) -> anyhow::Result<Exit> {
    let settings = config::resolve(config_file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run_async(settings, args))
}

async fn run_async(settings: Settings, args: Args) -> anyhow::Result<Exit> {
    let db = args.upstream.db.clone();
    crate::commands::require_ledger(&db)?;
    let _lock = crate::commands::lock_job(&db, &args.job)?;
    let (ledger, job_id) = crate::commands::promote::open_job(&db, &args.job).await?;
    let plan = checked_plan(&ledger, job_id, &args).await?;

    let connection = connect(&args.upstream, &settings).await?;
    if !connection.client.can_reframe() {
        return Err(Failure::new(
            Exit::BadInput,
            format!(
                "the provider {} can't reframe images; nothing was spent",
                connection.client.name()
            ),
        )
        .into());
    }
    let added = reframe::prepare_reframes(
        &ledger,
        &connection.client,
        job_id,
        &plan,
        &settings.prices,
        (args.budget, settings.budget.default),
    )
    .await
    .map_err(|e| match e {
        EngineError::Ledger(e) => budget_error(e),
        e => e.into(),
    })?;
    let pass = added.pass;
    let (cost, left) = (plan.cost(&settings.prices), pass.remaining());
    eprintln!(
        "reframing: {} new image(s) for {cost}, {} already made, {} skipped (already that shape); reframe budget {} with {left} left",
        plan.new.len(),
        plan.already.len(),
        plan.same_shape.len(),
        pass.budget(),
    );
    if cost > left {
        eprintln!("the reframes cost more than the budget has left: the run stops when it runs out");
    }
    for line in &added.unreachable {
        eprintln!("{line}");
    }
    let situation = crate::commands::hints::same_situation(&args.upstream, &args.out);
    let exit = crate::commands::pass::execute(
        &settings,
        PassRun {
            ledger,
            connection,
            job: args.job.clone(),
            job_id,
            pass: Pass::Reframe,
            out: args.out.clone(),
            flags: args.flags.clone(),
            start_at: None,
            deadline_ms: pass.deadline_at,
            resume: resume_command(&args, &situation),
            situation,
        },
    )
    .await?;
    // A source the upstream can't fetch was asked for and not made.
    Ok(match exit {
        Exit::Done if !added.unreachable.is_empty() => Exit::SomeFailed,
        exit => exit,
    })
}

/// The same command, to resume.
fn resume_command(args: &Args, situation: &str) -> String {
    let quoted = crate::commands::hints::quoted;
    let mut command = format!(
        "darkroom reframe {} --to {}",
        quoted(&args.job),
        quoted(&args.to.text)
    );
    if let Some(from) = args.from {
        command.push_str(match from {
            FromArg::Final => " --from final",
            FromArg::Preview => " --from preview",
        });
    }
    if let Some(select) = &args.select {
        command.push_str(&format!(" --select {}", quoted(&select.display().to_string())));
    }
    command.push_str(situation);
    command
}

/// Reads the selection and checks it and the sources against the ledger: ids that can't be used,
/// or nothing to reframe at all, are bad input, listed, and nothing is spent.
async fn checked_plan(ledger: &Ledger, job_id: i64, args: &Args) -> anyhow::Result<Plan> {
    let ids = match &args.select {
        Some(path) => Some(
            darkroom_engine::promote::read_selection(path)
                .map_err(|e| Failure::new(Exit::BadInput, e.to_string()))?,
        ),
        None => None,
    };
    if ids.as_ref().is_some_and(Vec::is_empty) {
        return Err(Failure::new(
            Exit::BadInput,
            "the select file chooses no image; nothing was spent",
        )
        .with_hint("mark images with y in the keep column, or export a selection from `darkroom review`")
        .into());
    }
    let from = match args.from {
        None => From::Default,
        Some(FromArg::Final) => From::Final,
        Some(FromArg::Preview) => From::Preview,
    };
    let plan = reframe::plan(ledger, job_id, from, ids.as_deref(), &args.to.ratios).await?;
    if !plan.problems.is_empty() {
        for line in plan.problems.iter().take(MAX_ERRORS_SHOWN) {
            eprintln!("{line}");
        }
        if plan.problems.len() > MAX_ERRORS_SHOWN {
            eprintln!("... and {} more", plan.problems.len() - MAX_ERRORS_SHOWN);
        }
        return Err(Failure::new(
            Exit::BadInput,
            format!(
                "{} chosen id(s) can't be reframed; nothing was spent",
                plan.problems.len()
            ),
        )
        .with_hint("`darkroom status` and manifest.csv list the job's images")
        .into());
    }
    if plan.new.is_empty() && plan.already.is_empty() {
        let why = if plan.same_shape.is_empty() {
            "no done image to reframe"
        } else {
            "every chosen image already has each --to aspect ratio"
        };
        return Err(Failure::new(Exit::BadInput, format!("{why}; nothing was spent")).into());
    }
    Ok(plan)
}
