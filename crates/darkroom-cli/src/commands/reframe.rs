//! `darkroom reframe`: chosen images (the job's done finals, or previews) extended by the upstream
//! to other aspect ratios, under the reframe pass's own budget; the same command again resumes
//! them and makes nothing new. Images go to OUT/JOB/reframe/KEY-W-H.EXT.

use std::path::{Path, PathBuf};

use darkroom_engine::reframe::{self, From, Plan, ReframesAdded};
use darkroom_engine::EngineError;
use darkroom_jobs::{AspectRatio, Money, Pass};
use darkroom_ledger::Ledger;

use crate::commands::pass::{PassRun, RunFlags};
use crate::commands::select::SelectFile;
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
    announce(&plan, &settings, &added);
    let situation = crate::commands::hints::same_situation(&args.upstream, &args.out);
    for line in others_waiting(&plan, &args.job, &situation) {
        eprintln!("{line}");
    }
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
            deadline_ms: added.pass.deadline_at,
            resume: resume_command(&args, &situation),
            situation,
            scope: Some(darkroom_ledger::TaskScope::of_keys(plan.keys())),
            next: None,
        },
    )
    .await?;
    // A source the upstream can't fetch was asked for and not made.
    Ok(match exit {
        Exit::Done if !added.unreachable.is_empty() => Exit::SomeFailed,
        exit => exit,
    })
}

/// What this command makes, announced before anything is sent: the new and resent reframes and
/// their cost, what an earlier run left in flight (finished, not sent again), what is made.
fn announce(plan: &Plan, settings: &Settings, added: &ReframesAdded) {
    let (count, cost) = plan.to_make(&settings.prices, &added.unreachable_sources);
    let pass = &added.pass;
    let left = pass.remaining();
    eprintln!(
        "reframing: {count} image(s) to make for {cost}, {} in flight from an earlier run, {} already made, \
         {} skipped (already that shape); reframe budget {} with {left} left",
        plan.in_flight().count(),
        plan.made().count(),
        plan.same_shape.len(),
        pass.budget(),
    );
    if cost > left {
        eprintln!("the reframes cost more than the budget has left: the run stops when it runs out");
    }
    for line in &added.unreachable {
        eprintln!("{line}");
    }
}

/// The pass's reframes another `--to` asked for and this command leaves unmade, named with the
/// command that makes them: one line per set of shapes, or nothing.
fn others_waiting(plan: &Plan, job: &str, situation: &str) -> Vec<String> {
    let quoted = crate::commands::hints::quoted;
    // Finals' reframes and previews' reframes (`--from preview`) are made by different commands.
    let mut groups: std::collections::BTreeMap<bool, (Vec<&str>, Vec<&str>)> = Default::default();
    for task in &plan.others_waiting {
        let (to, keys) = groups.entry(task.task_key.contains("-preview-")).or_default();
        if !to.contains(&task.aspect_ratio.as_str()) {
            to.push(&task.aspect_ratio);
        }
        keys.push(&task.task_key);
    }
    groups
        .into_iter()
        .map(|(preview, (mut to, keys))| {
            // In `--to`'s usual order (1:1, 16:9, 9:16, 4:3, ...), however the tasks lie.
            to.sort_by_key(|shape| AspectRatio::ALL.iter().position(|a| a.as_str() == *shape));
            let from = if preview { " --from preview" } else { "" };
            let shown: Vec<&str> = keys.iter().take(MAX_ERRORS_SHOWN).copied().collect();
            let more = keys.len().saturating_sub(shown.len());
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            format!(
                "{} reframe(s) asked for by another --to wait, not made by this command: {}{more}; \
                 `darkroom reframe {} --to {}{from}{situation}` makes them (with its --select, if it had one)",
                keys.len(),
                shown.join(", "),
                quoted(job),
                to.join(","),
            )
        })
        .collect()
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
    let file = match &args.select {
        Some(path) => Some(SelectFile::read(
            path,
            &args.out.join(&args.job),
            "image",
            "nothing was spent",
        )?),
        None => None,
    };
    let ids = file.as_ref().map(SelectFile::ids);
    let from = match args.from {
        None => From::Default,
        Some(FromArg::Final) => From::Final,
        Some(FromArg::Preview) => From::Preview,
    };
    let plan = reframe::plan(ledger, job_id, from, ids.as_deref(), &args.to.ratios).await?;
    if !plan.problems.is_empty() {
        for line in plan.problems.iter().take(MAX_ERRORS_SHOWN) {
            match &file {
                Some(file) => eprintln!("{}", file.locate(line)),
                None => eprintln!("{line}"),
            }
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
