//! `darkroom promote`: finals with Photon 1 for the previews chosen in a select file (the review
//! page's export, or `manifest.csv` with its `keep` column filled) or for all of them. The finals
//! are made at once, under the final pass's own budget; the same command again resumes them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use darkroom_engine::promote::{self, PromoteOptions, Selection};
use darkroom_engine::EngineError;
use darkroom_jobs::{Money, Pass};
use darkroom_ledger::Ledger;

use crate::commands::pass::{PassRun, RunFlags};
use crate::commands::select::SelectFile;
use crate::commands::{budget_error, connect, Upstream, MAX_ERRORS_SHOWN};
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
        prices: settings.prices,
        choices: Default::default(),
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

async fn run_async(settings: Settings, args: Args) -> anyhow::Result<Exit> {
    let mut settings = settings;
    settings.provider.default =
        crate::commands::route::home_provider(&settings, &args.upstream, &args.flags.route);
    let provider = settings.provider_name(args.upstream.provider);
    let settings = settings.for_provider(provider);
    let mut options = options(&settings)?;
    let db = args.upstream.db.clone();
    crate::commands::require_ledger(&db)?;
    let _lock = crate::commands::lock_job(&db, &args.job)?;
    let (ledger, job_id) = open_job(&db, &args.job).await?;

    let plan = checked_plan(&ledger, job_id, args.select.as_deref(), &args.out.join(&args.job)).await?;
    // The choices made after a trial of the job route its finals, as they route `run --pass final`.
    options.choices = ledger.routing_choices(&args.job).await?;

    let connection = connect(&args.upstream, &settings).await?;
    let added = promote::prepare_finals(
        &ledger,
        &connection.client,
        job_id,
        &plan,
        &options,
        (args.budget, settings.budget.default),
    )
    .await
    .map_err(|e| match e {
        EngineError::Ledger(e) => budget_error(e),
        e => e.into(),
    })?;
    let pass = added.pass;
    let (count, cost) = plan.to_make(&options);
    let left = pass.remaining();
    eprintln!(
        "promoting: {count} final(s) to make with {} for {cost}, {} in flight from an earlier run, \
         {} already made; final budget {} with {left} left",
        options.model.as_str(),
        plan.in_flight().count(),
        plan.made().count(),
        pass.budget(),
    );
    if cost > left {
        eprintln!("the selection costs more than the budget has left: the run stops when it runs out");
    }
    for (key, model) in plan.rerouted(&options) {
        eprintln!("{key}: made with {model}, as the trial's routing choice for its row or group says");
    }
    for line in &added.without_reference_why {
        eprintln!("{line}; its final is made from the prompt alone");
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
            scope: Some(darkroom_ledger::TaskScope::of_keys(plan.keys())),
            next: None,
        },
    )
    .await
}

/// Reads the selection (`--select FILE`, else every done preview) and checks it against the
/// ledger: an empty selection or ids that can't be promoted are bad input, listed with their
/// lines in the select file, and nothing is spent.
async fn checked_plan(
    ledger: &Ledger,
    job_id: i64,
    select: Option<&Path>,
    job_dir: &Path,
) -> anyhow::Result<promote::Plan> {
    let file = match select {
        Some(path) => Some(SelectFile::read(path, job_dir, "preview", "nothing was spent")?),
        None => None,
    };
    let selection = match &file {
        Some(file) => Selection::Ids(file.ids()),
        None => Selection::All,
    };
    let plan = promote::plan(ledger, job_id, &selection).await?;
    if plan.has_errors() {
        let errors = plan.problems();
        for line in errors.iter().take(MAX_ERRORS_SHOWN) {
            match &file {
                Some(file) => eprintln!("{}", file.locate(line)),
                None => eprintln!("{line}"),
            }
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
    Ok(plan)
}
