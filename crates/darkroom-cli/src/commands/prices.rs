//! `darkroom prices`: the price table in force on a provider (`--provider`: Luma's `[prices]` and
//! Replicate's `[replicate.prices]` per image, fal's `[fal.prices]` per megapixel), where each
//! price came from, and what the account was last observed to charge; `--check` observes it with
//! a one-image probe per model.

use std::path::Path;

use darkroom_engine::prices::Probe;
use darkroom_jobs::{Model, Money};
use darkroom_ledger::PriceObservation;
use serde_json::json;

use crate::commands::{connect, Upstream, LUMA_BASE_URL};
use crate::config::provider::ProviderName;
use crate::config::{self, Settings};
use crate::exit::{Exit, Failure};

/// Show the price table in force on `--provider` and what the account was observed to charge;
/// `--check` makes one image per model to observe it before a big run.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub upstream: Upstream,
    /// Make one image per model (the cheapest request) and read the account's balance before and
    /// after each, to observe what it really charges. Needs --budget.
    #[arg(long, requires = "budget")]
    pub check: bool,
    /// The most the probes of --check may spend, USD; each needs twice the table's price of its image
    /// (1:1) as headroom.
    #[arg(long, value_name = "USD", value_parser = crate::commands::parse_usd)]
    pub budget: Option<Money>,
    /// Probe only this model (repeatable) [default: both].
    #[arg(long, value_name = "MODEL", value_parser = ["photon-1", "photon-flash-1"])]
    pub model: Vec<String>,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(config_file: Option<&Path>, args: Args) -> anyhow::Result<Exit> {
    let settings = config::resolve(config_file)?;
    let provider = settings.provider_name(args.upstream.provider);
    // The provider's own table: what its runs reserve at and its probes are compared with.
    let settings = settings.for_provider(provider);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let (base_url, probes) = if args.check {
            check(&args, &settings).await?
        } else {
            let base_url = args
                .upstream
                .base_url
                .clone()
                .unwrap_or_else(|| match provider {
                    ProviderName::Luma => LUMA_BASE_URL.to_string(),
                    ProviderName::Replicate => crate::config::provider::replicate_base_url(),
                    ProviderName::Fal => crate::commands::fal::queue_url(),
                })
                .trim_end_matches('/')
                .to_string();
            (base_url, Vec::new())
        };
        let observed = observed_prices(&args.upstream.db, &base_url).await?;
        let mut rows = Vec::new();
        for model in Model::ALL {
            let last = observed.iter().find(|o| o.model == model.as_str());
            let probe = probes.iter().find(|p| p.model == model.as_str());
            rows.push(price_json(&settings, model, last, probe));
            if !args.json {
                print_price(&settings, provider, model, last, probe);
            }
        }
        if args.json {
            println!(
                "{}",
                json!({ "account": base_url, "provider": provider.as_str(), "prices": rows })
            );
        } else {
            println!("(observations on {base_url})");
        }
        Ok(Exit::Done)
    })
}

/// `--check`: refuses a budget that can't cover the probes before anything is sent, then makes one
/// probe per chosen model. Returns the account's base URL and the probes.
async fn check(args: &Args, settings: &Settings) -> anyhow::Result<(String, Vec<Probe>)> {
    let budget = args.budget.unwrap_or(Money::ZERO);
    let models: Vec<Model> = if args.model.is_empty() {
        Model::ALL.to_vec()
    } else {
        args.model.iter().filter_map(|m| Model::parse(m)).collect()
    };
    // Refused before anything is sent (no key or simulator needed to say so).
    let needed = darkroom_engine::prices::probe_cost(&settings.prices, &models);
    if needed > budget {
        return Err(Failure::new(
            Exit::BadInput,
            format!(
                "--budget {budget} cannot cover the probes: they need up to {needed} (twice the table's \
                 price of each model, in case the account charges more); nothing was spent"
            ),
        )
        .with_hint(format!(
            "darkroom prices --check --budget {}",
            needed.to_decimal_string()
        ))
        .into());
    }
    let connection = connect(&args.upstream, settings).await?;
    let base_url = connection.client.base_url().to_string();
    let ledger = crate::commands::open_ledger(&args.upstream.db).await?;
    let result =
        darkroom_engine::prices::probe_prices(&connection.client, &ledger, &settings.prices, &models, budget)
            .await;
    connection.stop().await;
    ledger.close().await;
    // The upstream's refusals exit 5; the ledger's failure is the ledger's (exit 7).
    let probes = result.map_err(|e| match e {
        darkroom_engine::prices::ProbeError::Ledger(_) => anyhow::Error::new(e),
        other => {
            let words = std::error::Error::source(&other)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            Failure::new(Exit::Refused, format!("{other}{words}")).into()
        }
    })?;
    Ok((base_url, probes))
}

/// The prices last observed on the account at `base_url`, from the ledger at `db` (none when there
/// is no ledger yet).
async fn observed_prices(db: &Path, base_url: &str) -> anyhow::Result<Vec<PriceObservation>> {
    if !db.exists() {
        return Ok(Vec::new());
    }
    let ledger = crate::commands::open_ledger(db).await?;
    let observed = ledger.last_observed(base_url).await?;
    ledger.close().await;
    Ok(observed)
}

/// One model's entry of `--json`: the table's price and its source, the last observation, the probe.
fn price_json(
    settings: &Settings,
    model: Model,
    last: Option<&PriceObservation>,
    probe: Option<&Probe>,
) -> serde_json::Value {
    json!({
        "model": model.as_str(), "table": settings.prices.rate(model), "per": per(settings),
        "source": settings.price_sources.of(model),
        "last_observed": last.map(|o| json!({
            "price": o.observed(), "at": timestamp(o.observed_at), "images": o.images,
            "job_id": o.job_id, "pass": o.pass,
        })),
        "probe": probe,
    })
}

/// One model's lines of the text output: the price, the probe's finding, and a hint when the
/// account charges more than the table.
fn print_price(
    settings: &Settings,
    provider: ProviderName,
    model: Model,
    last: Option<&PriceObservation>,
    probe: Option<&Probe>,
) {
    let table = settings.prices.rate(model);
    let source = settings.price_sources.of(model);
    let unit = per(settings);
    let seen = match last {
        Some(o) => format!(
            "observed {} per {unit} on {} ({} image(s))",
            o.observed(),
            timestamp(o.observed_at),
            o.images
        ),
        None => "not observed on this account".to_string(),
    };
    println!(
        "{:<15} {:>8} per {unit:<9}  {:<30} {seen}",
        model.as_str(),
        table.to_string(),
        source.to_string()
    );
    if let Some(p) = probe {
        match p.observed {
            Some(o) => println!(
                "  probe: the account charged {o} for one image (table {}, balance resolution {})",
                p.table, p.resolution
            ),
            None => println!(
                "  probe: the balance dropped {} ({}); within its resolution of {}, consistent with the table",
                p.charged, p.state, p.resolution
            ),
        }
    }
    if let Some(o) = last.filter(|o| o.observed_micros > table.micros()) {
        println!(
            "  hint: the account charges more than the table; a run re-prices once it observes this; to reserve it from the first image, set {}",
            darkroom_engine::prices::config_line(provider.as_str(), model, o.observed())
        );
    }
}

/// What the table's amounts are the price of: `image` or `megapixel`.
fn per(settings: &Settings) -> &'static str {
    darkroom_engine::prices::per_unit(settings.prices.basis)
}

fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}
