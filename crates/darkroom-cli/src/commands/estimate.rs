//! `darkroom estimate FILE`: what the job will cost (per model, in total, all-photon-1, and the
//! preview-then-promote plan), the shortest time the account limits allow, and the job's cost on
//! each provider side by side with the rows each can't make, before spending anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use darkroom_jobs::{Assumptions, Estimate, EstimateBuilder, Model, Money, Pass, RoutingChoices};

use crate::commands::{print_row_errors, PassArg};
use crate::config;
use crate::exit::{Exit, Failure};

/// What a job file will cost and how long it will take, before spending anything.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job file (.csv or .jsonl).
    pub file: PathBuf,
    /// Which pass to price.
    #[arg(long, value_enum, default_value_t = PassArg::Preview)]
    pub pass: PassArg,
    /// Say whether this budget (USD) covers the job, and how many tasks it covers if not.
    #[arg(long, value_name = "USD", value_parser = crate::commands::parse_usd)]
    pub budget: Option<Money>,
    /// The share of previews promoted to finals in the preview-then-promote plan.
    #[arg(long, value_name = "F", default_value_t = 0.25)]
    pub promote_fraction: f64,
    /// Price reframing every row's finals to these aspect ratios (comma-separated, as `darkroom
    /// reframe --to`): each final in each shape it doesn't already have, at the final model's price.
    #[arg(long, value_name = "LIST", value_parser = parse_to)]
    pub to: Option<Targets>,
    /// Print one JSON object with stable names.
    #[arg(long)]
    pub json: bool,
    /// The ledger holding the choices made after a trial of the job (read only; never created):
    /// with --pass final, rows judged "Flash is enough" are priced at photon-flash-1.
    #[arg(long, value_name = "PATH", env = crate::config::env::DB, default_value = "darkroom.db")]
    pub db: PathBuf,
    /// The job's name, whose trial choices apply [default: the file's stem].
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
}

/// `--to`'s aspect ratios.
#[derive(Debug, Clone)]
pub struct Targets(Vec<darkroom_jobs::AspectRatio>);

fn parse_to(text: &str) -> Result<Targets, String> {
    darkroom_engine::reframe::parse_targets(text).map(Targets)
}

pub fn run(config_file: Option<&Path>, args: Args) -> anyhow::Result<Exit> {
    let settings = config::resolve(config_file)?;
    // With --to, the reframes of the finals are priced: the reframe pass.
    let pass: Pass = match args.to {
        Some(_) => Pass::Reframe,
        None => args.pass.into(),
    };
    let budget = args.budget;
    if !(0.0..=1.0).contains(&args.promote_fraction) {
        return Err(Failure::new(Exit::BadInput, "--promote-fraction is a share from 0 to 1").into());
    }
    let options = darkroom_jobs::ReadOptions {
        default_aspect_ratio: settings.defaults.aspect_ratio,
        ..Default::default()
    };
    let mut builder = EstimateBuilder::new(settings.prices, budget);
    let mut fits = crate::commands::providers::Fit::every(&settings);
    let mut mix = crate::commands::providers::Mix::new();
    let routing = settings.routing;
    let job = crate::commands::job_name_for(args.job.as_deref(), &args.file)?;
    let choices = trial_choices(&args.db, &job)?;
    let mut chosen = BTreeMap::<Model, u64>::new();
    let report = darkroom_jobs::read_job(&args.file, &options, |row| {
        let choice = row
            .model
            .is_none()
            .then(|| choices.chosen(pass, &row.id, &row.metadata))
            .flatten();
        if let Some((model, _)) = choice {
            *chosen.entry(model).or_default() += u64::from(row.variants);
        }
        let model = row
            .model
            .or(choice.map(|(model, _)| model))
            .unwrap_or_else(|| routing.model_for(pass));
        builder.add(model, u64::from(row.variants) * shapes(args.to.as_ref(), &row));
        for fit in &mut fits {
            fit.add(&row, model);
        }
        mix.add(&fits, &row, model);
    })
    .map_err(|e| Failure::new(Exit::BadInput, e.to_string()))?;
    if !report.is_valid() {
        print_row_errors(&args.file, &report);
        return Err(
            Failure::new(Exit::BadInput, crate::commands::invalid_file(&args.file, &report))
                .with_hint(format!(
                    "darkroom validate {} lists them all",
                    args.file.display()
                ))
                .into(),
        );
    }
    let assumptions = Assumptions {
        creates_per_minute: settings.limits.creates_per_minute,
        max_in_flight: settings.limits.max_in_flight,
        latency_seconds_photon_1: settings.latency.photon_1,
        latency_seconds_photon_flash_1: settings.latency.photon_flash_1,
    };
    let estimate = builder.finish(pass, assumptions, args.promote_fraction);
    if args.json {
        print_json(&estimate, &chosen, &fits, &mix)?;
        return Ok(Exit::Done);
    }
    print_estimate(&args.file, pass, &estimate, &assumptions);
    for (model, images) in &chosen {
        println!(
            "  {images} image(s) priced at {model}: chosen after the trial ({}; darkroom review {job}-trial)",
            if *model == Model::PhotonFlash1 {
                "Flash is enough"
            } else {
                "needs Photon 1"
            }
        );
    }
    print_providers(&args.file, &fits, estimate.tasks);
    mix.print(&args.file);
    Ok(Exit::Done)
}

/// How many images a row's each variant makes: with `--to`, one in each target shape it doesn't
/// already have (its reframes); else one.
fn shapes(to: Option<&Targets>, row: &darkroom_jobs::Row) -> u64 {
    match to {
        Some(Targets(targets)) => targets.iter().filter(|t| **t != row.aspect_ratio).count() as u64,
        None => 1,
    }
}

/// The estimate as JSON on stdout, with the images priced by a trial's choices
/// (`routed_by_trial`, by model), each provider's fit (`providers`) and the cheapest mix
/// (`cheapest_mix`).
fn print_json(
    estimate: &Estimate,
    chosen: &BTreeMap<Model, u64>,
    fits: &[crate::commands::providers::Fit],
    mix: &crate::commands::providers::Mix,
) -> anyhow::Result<()> {
    let mut json = serde_json::to_value(estimate)?;
    if let Some(object) = json.as_object_mut() {
        object.insert("routed_by_trial".into(), serde_json::json!(chosen));
    }
    json["providers"] = fits
        .iter()
        .map(crate::commands::providers::Fit::to_json)
        .collect();
    json["cheapest_mix"] = mix.to_json();
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

/// Each provider's cost of the tasks it can make, side by side on stdout (Luma's estimate above
/// is `[prices]`'), and on stderr the rows each can't make, with their lines.
fn print_providers(file: &Path, fits: &[crate::commands::providers::Fit], tasks: u64) {
    println!("  by provider, at each one's price table:");
    for fit in fits {
        let makes = if fit.tasks == tasks {
            "every task".to_string()
        } else {
            format!(
                "{} of {tasks} tasks ({} row(s) it can't make)",
                fit.tasks,
                fit.refused.len()
            )
        };
        println!(
            "    {:<10} {:>10}  {makes}",
            fit.name.as_str(),
            fit.cost.to_string()
        );
    }
    for fit in fits {
        fit.print_refused(file);
    }
}

/// The routing choices made after a trial of `job`, read from the ledger at `db` when it exists
/// (none otherwise: an estimate never creates a ledger). A ledger that can't be read exits 7.
fn trial_choices(db: &Path, job: &str) -> anyhow::Result<RoutingChoices> {
    if !db.exists() {
        return Ok(RoutingChoices::default());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let ledger = crate::commands::open_ledger(db).await?;
        let choices = ledger.routing_choices(job).await;
        ledger.close().await;
        Ok(choices?)
    })
}

/// The estimate as text on stdout.
fn print_estimate(file: &Path, pass: Pass, estimate: &Estimate, assumptions: &Assumptions) {
    println!(
        "{}: {} rows, {} tasks ({} pass)",
        file.display(),
        estimate.rows,
        estimate.tasks,
        pass
    );
    for line in &estimate.by_model {
        println!(
            "  {:<15} {:>8} images × {:<8} = {}",
            line.model.as_str(),
            line.images,
            line.price.to_string(),
            line.cost
        );
    }
    println!(
        "  total                                         {}",
        estimate.total
    );
    println!(
        "  the same images all with photon-1             {}",
        estimate.all_photon_1
    );
    let plan = &estimate.preview_then_promote;
    println!(
        "  previews, then {:.0}% promoted: {} previews ({}) + {} finals ({}) = {}",
        plan.promote_fraction * 100.0,
        plan.previews,
        plan.preview_cost,
        plan.finals,
        plan.final_cost,
        plan.total
    );
    println!(
        "  shortest time the account allows: {} ({} creates/min, {} in flight, latency {}s photon-1, {}s photon-flash-1)",
        human_duration(estimate.shortest_seconds),
        assumptions.creates_per_minute,
        assumptions.max_in_flight,
        assumptions.latency_seconds_photon_1,
        assumptions.latency_seconds_photon_flash_1
    );
    if let Some(check) = &estimate.budget {
        if check.covers_job {
            println!("  budget {} covers the job", check.budget);
        } else {
            println!(
                "  budget {} does not cover the job: it pays for {} of {} tasks",
                check.budget, check.tasks_covered, estimate.tasks
            );
        }
    }
}

fn human_duration(seconds: f64) -> String {
    let total = seconds.ceil();
    if total < 60.0 {
        return format!("{total:.0}s");
    }
    let (h, m, s) = (
        (total / 3600.0).floor(),
        ((total % 3600.0) / 60.0).floor(),
        total % 60.0,
    );
    if h > 0.0 {
        format!("{h:.0}h{m:02.0}m")
    } else {
        format!("{m:.0}m{s:02.0}s")
    }
}
