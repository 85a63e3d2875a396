//! `darkroom estimate FILE`: what the job will cost (per model, in total, all-photon-1, and the
//! preview-then-promote plan) and the shortest time the account limits allow, before spending anything.

use std::path::{Path, PathBuf};

use darkroom_jobs::{Assumptions, Estimate, EstimateBuilder, Money, Pass};

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
    let routing = settings.routing;
    let report = darkroom_jobs::read_job(&args.file, &options, |row| {
        let model = row.model.unwrap_or_else(|| routing.model_for(pass));
        let shapes = match &args.to {
            // Each final in each target shape it doesn't already have.
            Some(Targets(targets)) => targets.iter().filter(|t| **t != row.aspect_ratio).count() as u64,
            None => 1,
        };
        builder.add(model, u64::from(row.variants) * shapes);
    })
    .map_err(|e| Failure::new(Exit::BadInput, e.to_string()))?;
    if !report.is_valid() {
        print_row_errors(&args.file, &report);
        return Err(Failure::new(
            Exit::BadInput,
            format!(
                "{} has {} invalid row(s)",
                args.file.display(),
                report.error_count
            ),
        )
        .with_hint(format!(
            "darkroom validate {} lists them all",
            args.file.display()
        ))
        .into());
    }
    let assumptions = Assumptions {
        creates_per_minute: settings.limits.creates_per_minute,
        max_in_flight: settings.limits.max_in_flight,
        latency_seconds_photon_1: settings.latency.photon_1,
        latency_seconds_photon_flash_1: settings.latency.photon_flash_1,
    };
    let estimate = builder.finish(pass, assumptions, args.promote_fraction);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&estimate)?);
        return Ok(Exit::Done);
    }
    print_estimate(&args.file, pass, &estimate, &assumptions);
    Ok(Exit::Done)
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
