//! `darkroom promote`: finals with Photon 1 for the previews chosen in a select file (the review
//! page's export, or `manifest.csv` with its `keep` column filled) or for all of them. The finals
//! are made at once, under the final pass's own budget; the same command again resumes them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use darkroom_engine::promote::{self, PromoteOptions, Selection};
use darkroom_jobs::{Money, Pass};
use darkroom_ledger::Ledger;

use crate::commands::pass::{PassRun, RunFlags};
use crate::commands::{connect, Upstream, MAX_ERRORS_SHOWN};
use crate::config::{self, Settings};
use crate::exit::{Exit, Failure};

/// Make finals with photon-1 from chosen previews (the same command again resumes them).
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["select", "all"]))]
pub struct Args {
    /// The job's name (as `darkroom status` lists it).
    pub job: String,
    /// The previews to promote: a CSV with an `id` column (the review page's export), or
    /// manifest.csv with `keep` filled (y, yes, x, 1 or true).
    #[arg(long, value_name = "FILE")]
    pub select: Option<PathBuf>,
    /// Promote every done preview.
    #[arg(long)]
    pub all: bool,
    /// The final pass's budget in USD, separate from the previews' [default: config budget.default].
    #[arg(long, value_name = "USD", value_parser = crate::commands::parse_usd)]
    pub budget: Option<Money>,
    /// Where images and outputs go: finals in OUT/JOB/final/.
    #[arg(long, value_name = "DIR", env = crate::config::env::OUT, default_value = "out")]
    pub out: PathBuf,
    #[command(flatten)]
    pub upstream: Upstream,
    #[command(flatten)]
    pub flags: RunFlags,
}

pub fn run(config_file: Option<&Path>, args: Args) -> anyhow::Result<Exit> {
    let settings = config::resolve(config_file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run_async(settings, args))
}

/// The options promotion takes from config.
pub fn options(settings: &Settings) -> anyhow::Result<PromoteOptions> {
    let weight = settings.promote.weight;
    if !(0.0..=1.0).contains(&weight) {
        return Err(Failure::new(
            Exit::BadInput,
            format!("promote.weight = {weight} is outside 0 to 1"),
        )
        .into());
    }
    let model = settings.routing.final_;
    Ok(PromoteOptions {
        reference: settings.promote.reference,
        weight,
        model,
        price: settings.prices.price(model),
    })
}

/// Opens the ledger and finds the job, with a clear error when it isn't there.
pub async fn open_job(db: &Path, job: &str) -> anyhow::Result<(Ledger, i64)> {
    let (ledger, jobs) = crate::commands::find_jobs(db, Some(job)).await?;
    let id = jobs
        .first()
        .map(|record| record.id)
        .context("the job was just found")?;
    Ok((ledger, id))
}

/// Prints why a selection can't be promoted. Returns the error to exit with.
pub fn selection_errors(plan: &promote::Plan) -> Vec<String> {
    let mut lines: Vec<String> = plan
        .unknown
        .iter()
        .map(|id| format!("{id}: no preview with this id in the job"))
        .collect();
    lines.extend(
        plan.not_done
            .iter()
            .map(|(id, state)| format!("{id}: the preview is {state}, so there is no image to promote")),
    );
    lines
}

async fn run_async(settings: Settings, args: Args) -> anyhow::Result<Exit> {
    let options = options(&settings)?;
    let db = args.upstream.db.clone();
    let _lock = crate::commands::lock_job(&db, &args.job)?;
    let (ledger, job_id) = open_job(&db, &args.job).await?;

    let selection = match &args.select {
        Some(path) => Selection::Ids(
            promote::read_selection(path).map_err(|e| Failure::new(Exit::BadInput, e.to_string()))?,
        ),
        None => Selection::All,
    };
    if matches!(&selection, Selection::Ids(ids) if ids.is_empty()) {
        return Err(Failure::new(
            Exit::BadInput,
            "the select file chooses no preview; nothing was spent",
        )
        .with_hint("mark previews with y in the keep column, or export a selection from `darkroom review`")
        .into());
    }
    let plan = promote::plan(&ledger, job_id, &selection).await?;
    if plan.has_errors() {
        let errors = selection_errors(&plan);
        for line in errors.iter().take(MAX_ERRORS_SHOWN) {
            eprintln!("{line}");
        }
        if errors.len() > MAX_ERRORS_SHOWN {
            eprintln!("... and {} more", errors.len() - MAX_ERRORS_SHOWN);
        }
        return Err(Failure::new(
            Exit::BadInput,
            format!(
                "{} chosen id(s) can't be promoted; nothing was spent",
                errors.len()
            ),
        )
        .with_hint("`darkroom status` and manifest.csv list the job's previews")
        .into());
    }
    if plan.chosen.is_empty() && plan.already.is_empty() {
        return Err(Failure::new(Exit::BadInput, "no done preview to promote; nothing was spent").into());
    }

    let existing = ledger.pass(job_id, Pass::Final).await?;
    match (args.budget, &existing) {
        (Some(budget), _) => crate::commands::set_budget_flag(&ledger, job_id, Pass::Final, budget).await?,
        (None, None) => {
            ledger
                .set_budget(job_id, Pass::Final, settings.budget.default)
                .await?
        }
        (None, Some(_)) => {}
    }
    let pass = ledger
        .pass(job_id, Pass::Final)
        .await?
        .context("the final pass was just created")?;
    let cost = plan.cost(options.price);
    let left = pass.remaining();
    eprintln!(
        "promoting {} preview(s) to {} for {cost} ({} already promoted); final budget {} with {left} left",
        plan.chosen.len(),
        options.model.as_str(),
        plan.already.len(),
        pass.budget(),
    );
    if cost > left {
        eprintln!("the selection costs more than the budget has left: the run stops when it runs out");
    }

    let connection = connect(&args.upstream).await?;
    let without = promote::add_finals(&ledger, &connection.client, job_id, &plan, &options).await?;
    for key in &without {
        eprintln!("{key}: the preview's URL no longer resolves; its final is made from the prompt alone");
    }
    let situation = crate::commands::hints::same_situation(&args.upstream, &args.out);
    let resume = match &args.select {
        Some(path) => format!(
            "darkroom promote {} --select {}{situation}",
            args.job,
            path.display()
        ),
        None => format!("darkroom promote {} --all{situation}", args.job),
    };
    crate::commands::pass::execute(
        &settings,
        PassRun {
            ledger,
            connection,
            job: args.job.clone(),
            job_id,
            pass: Pass::Final,
            out: args.out.clone(),
            flags: args.flags.clone(),
            start_at: None,
            deadline_ms: pass.deadline_at,
            resume,
            situation,
        },
    )
    .await
}
