//! What the chosen provider can make, said before anything is sent: a pass whose tasks ask for
//! what the provider can't do whole is refused (exit 2), each task named with its line and row.

use darkroom_jobs::Pass;
use darkroom_ledger::Ledger;

use crate::commands::{Connection, MAX_ERRORS_SHOWN};
use crate::exit::{Exit, Failure};

/// What a pass says about its provider before anything is sent: without a balance API, that the
/// ledger is the only truth. (Whether the provider can make every task is checked by the engine
/// as the pass starts: [`refusal`] turns its refusal into the exit code.)
pub fn before_sending(connection: &Connection) {
    say_budget_truth(connection);
}

/// The engine's refusals of a pass before anything was sent, as exit 2 (5 when a provider's webhook
/// secret or keys can't be read) with what to do: tasks the
/// provider can't make (each printed on stderr: `line N (id "ID"): PROVIDER can't make REASON;
/// REASON`), or creates unsettled on a provider not given. Other errors pass through.
pub fn refusal(error: darkroom_engine::EngineError) -> anyhow::Error {
    use darkroom_engine::EngineError;
    match &error {
        EngineError::Incapable { provider, tasks } => {
            for task in tasks.iter().take(MAX_ERRORS_SHOWN) {
                eprintln!(
                    "{}: {provider} can't make {}",
                    row_place(task.line, &task.row_id, &task.task_key),
                    task.reasons.join("; ")
                );
            }
            if tasks.len() > MAX_ERRORS_SHOWN {
                eprintln!("... and {} more", tasks.len() - MAX_ERRORS_SHOWN);
            }
            Failure::new(Exit::BadInput, error.to_string())
                .with_hint("run them on a provider that can (`darkroom estimate FILE` lists which), or change those rows")
                .into()
        }
        EngineError::ProviderMissing { provider, .. } => Failure::new(Exit::BadInput, error.to_string())
            .with_hint(format!(
                "resume with --provider {provider}, or with {provider}'s key set"
            ))
            .into(),
        EngineError::WebhookKeys { source, .. } => Failure::new(Exit::Refused, format!("{error}: {source}"))
            .with_hint("check the provider's key and that its API is reachable, or leave out --callbacks-listen to poll instead")
            .into(),
        _ => error.into(),
    }
}

/// The providers other than the connection's that hold unsettled creates of this pass (a job
/// resumed with another `--provider`), each built as the connection is: the engine settles every
/// such create on the provider that received it. A provider whose key is not set refuses the pass
/// (exit 2, nothing sent), naming the provider and each of its unsettled tasks.
pub async fn earlier_providers(
    ledger: &Ledger,
    connection: &Connection,
    settings: &crate::config::Settings,
    job_id: i64,
    pass: Pass,
) -> anyhow::Result<Vec<std::sync::Arc<dyn darkroom_provider::Provider>>> {
    use crate::config::provider::ProviderName;
    let unsettled = ledger.unsettled_by_provider(job_id, pass).await?;
    let mut providers = Vec::new();
    for name in ProviderName::ALL {
        let creates: Vec<_> = unsettled.iter().filter(|c| c.provider == name.as_str()).collect();
        if creates.is_empty() || name.as_str() == connection.client.name() {
            continue;
        }
        match connection.client_for(name, settings) {
            Ok(client) => {
                eprintln!(
                    "{} task(s) of this pass were sent to {} and are not settled: settling them there (nothing is sent again)",
                    creates.len(),
                    name.as_str()
                );
                providers.push(client);
            }
            Err(error) => {
                for create in creates.iter().take(MAX_ERRORS_SHOWN) {
                    eprintln!(
                        "{}: sent to {}, not settled",
                        row_place(create.line, &create.row_id, &create.task_key),
                        name.as_str()
                    );
                }
                if creates.len() > MAX_ERRORS_SHOWN {
                    eprintln!("... and {} more", creates.len() - MAX_ERRORS_SHOWN);
                }
                let why = error
                    .downcast_ref::<Failure>()
                    .map_or_else(|| format!("{error:#}"), |f| f.message.clone());
                return Err(Failure::new(
                    Exit::BadInput,
                    format!(
                        "{} task(s) of this pass were sent to {} and are not settled, and {why}; nothing was sent",
                        creates.len(),
                        name.as_str()
                    ),
                )
                .with_hint(format!(
                    "only {0} can say whether they were made: give darkroom {0}'s key so it settles them there \
                     (nothing is paid twice), or resume with --provider {0}",
                    name.as_str()
                ))
                .into());
            }
        }
    }
    Ok(providers)
}

/// Says, for a provider with no balance API (Replicate), that the ledger is the only account of
/// spend: no balance reading can reveal a price above the table or someone else's spend.
pub fn say_budget_truth(connection: &Connection) {
    let provider = connection.client.as_ref();
    if !provider.capabilities().balance {
        eprintln!(
            "{} has no balance API: the ledger is the only account of this run's spend (at the table's prices)",
            provider.name()
        );
    }
}

/// What one provider would make of a job file: the tasks it can make whole and their cost at its
/// price table, and the rows it can't, with why (for `estimate` and `validate`).
#[derive(Debug)]
pub struct Fit {
    /// The provider.
    pub name: crate::config::provider::ProviderName,
    capabilities: darkroom_provider::Capabilities,
    prices: darkroom_jobs::PriceTable,
    /// Tasks it can make.
    pub tasks: u64,
    /// What those cost at its price table.
    pub cost: darkroom_jobs::Money,
    /// Rows it can't make whole: (line, row id, reasons).
    pub refused: Vec<(u64, String, Vec<String>)>,
}

impl Fit {
    /// One `Fit` per provider, in `ProviderName::ALL` order, priced by the settings' tables.
    pub fn every(settings: &crate::config::Settings) -> Vec<Fit> {
        use crate::config::provider::ProviderName;
        ProviderName::ALL
            .into_iter()
            .map(|name| {
                let capabilities = match name {
                    ProviderName::Luma => darkroom_luma::luma_capabilities(),
                    ProviderName::Replicate => darkroom_replicate::replicate_capabilities(),
                    ProviderName::Fal => darkroom_fal::fal_capabilities(),
                };
                // The table a pass on this provider reserves at: one source, `for_provider`.
                let prices = settings.clone().for_provider(name).prices;
                Fit {
                    name,
                    capabilities,
                    prices,
                    tasks: 0,
                    cost: darkroom_jobs::Money::ZERO,
                    refused: Vec::new(),
                }
            })
            .collect()
    }

    /// Counts a row made with `model` (its variants are its tasks).
    pub fn add(&mut self, row: &darkroom_jobs::Row, model: darkroom_jobs::Model) {
        let request = darkroom_engine::capable::request_for_row(row, model);
        let reasons = self.capabilities.refusals(&request);
        if reasons.is_empty() {
            self.tasks += u64::from(row.variants);
            self.cost += self
                .prices
                .price_of(model, row.aspect_ratio)
                .times(u64::from(row.variants));
        } else {
            self.refused.push((row.line, row.id.clone(), reasons));
        }
    }

    /// The fit as JSON: `{provider, tasks, cost, cost_micros, refused: [{line, row, reasons}]}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "provider": self.name.as_str(),
            "tasks": self.tasks,
            "cost": self.cost.to_decimal_string(),
            "cost_micros": self.cost.micros(),
            "refused": self.refused.iter().map(|(line, row, reasons)| serde_json::json!({
                "line": line, "row": row, "reasons": reasons,
            })).collect::<Vec<_>>(),
        })
    }

    /// Prints the rows this provider can't make, one line each on stderr (at most 50).
    pub fn print_refused(&self, file: &std::path::Path) {
        for (line, row, reasons) in self.refused.iter().take(MAX_ERRORS_SHOWN) {
            // The file first, as every other row error of `validate` and `run` is printed.
            eprintln!(
                "{}: {}: {} can't make {}",
                file.display(),
                row_place(*line, row, row),
                self.name.as_str(),
                reasons.join("; ")
            );
        }
        if self.refused.len() > MAX_ERRORS_SHOWN {
            eprintln!("... and {} more", self.refused.len() - MAX_ERRORS_SHOWN);
        }
    }
}

/// The cheapest mix of a job file (`estimate`): each row on the cheapest provider that can make it
/// and has a key (as `--routing cheapest` routes it; over every provider when none has a key), and
/// the rows none of them can make.
#[derive(Debug)]
pub struct Mix {
    /// The providers the mix may use, in order of preference.
    pub providers: Vec<crate::config::provider::ProviderName>,
    /// Tasks and cost on each provider used, in `providers` order.
    pub by_provider: Vec<(u64, darkroom_jobs::Money)>,
    /// What the whole mix costs.
    pub cost: darkroom_jobs::Money,
    /// Rows none of `providers` can make: (line, row id).
    pub nowhere: Vec<(u64, String)>,
    /// Whether `providers` are those with a key (else every provider: no key is set).
    pub keyed: bool,
}

impl Mix {
    /// An empty mix over the providers with a key (every provider when none has one).
    pub fn new() -> Mix {
        use crate::config::provider::ProviderName;
        let keyed: Vec<_> = ProviderName::ALL
            .into_iter()
            .filter(|n| crate::commands::route::has_key(*n))
            .collect();
        let (providers, keyed) = if keyed.is_empty() {
            (ProviderName::ALL.to_vec(), false)
        } else {
            (keyed, true)
        };
        Mix {
            by_provider: vec![(0, darkroom_jobs::Money::ZERO); providers.len()],
            providers,
            cost: darkroom_jobs::Money::ZERO,
            nowhere: Vec::new(),
            keyed,
        }
    }

    /// Routes a row made with `model` to the cheapest of the mix's providers that can make it,
    /// at each one's table in `fits` (`Fit::every`).
    pub fn add(&mut self, fits: &[Fit], row: &darkroom_jobs::Row, model: darkroom_jobs::Model) {
        let request = darkroom_engine::capable::request_for_row(row, model);
        let candidates = self.providers.iter().enumerate().filter_map(|(i, name)| {
            let fit = fits.iter().find(|f| f.name == *name)?;
            fit.capabilities
                .refusals(&request)
                .is_empty()
                .then(|| (i, fit.prices.price_of(model, row.aspect_ratio)))
        });
        match darkroom_engine::routing::cheapest(candidates) {
            Some(i) => {
                let fit = fits.iter().find(|f| f.name == self.providers[i]);
                let price = fit.map_or(darkroom_jobs::Money::ZERO, |f| {
                    f.prices.price_of(model, row.aspect_ratio)
                });
                let cost = price.times(u64::from(row.variants));
                self.by_provider[i].0 += u64::from(row.variants);
                self.by_provider[i].1 += cost;
                self.cost += cost;
            }
            None => self.nowhere.push((row.line, row.id.clone())),
        }
    }

    /// The mix as JSON: `{cost, cost_micros, with_key, providers: [{provider, tasks, cost,
    /// cost_micros}], none: [{line, row}]}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "cost": self.cost.to_decimal_string(),
            "cost_micros": self.cost.micros(),
            "with_key": self.keyed,
            "providers": self.providers.iter().zip(&self.by_provider).map(|(name, (tasks, cost))| serde_json::json!({
                "provider": name.as_str(), "tasks": tasks, "cost": cost.to_decimal_string(), "cost_micros": cost.micros(),
            })).collect::<Vec<_>>(),
            "none": self.nowhere.iter().map(|(line, row)| serde_json::json!({"line": line, "row": row})).collect::<Vec<_>>(),
        })
    }

    /// The mix on stdout under the providers' totals, and on stderr the rows none can make.
    pub fn print(&self, file: &std::path::Path) {
        let over = if self.keyed {
            "the providers with a key"
        } else {
            "every provider (no key is set)"
        };
        println!(
            "    {:<10} {:>10}  each row on the cheapest of {over} that can make it (--routing cheapest)",
            "cheapest",
            self.cost.to_string()
        );
        for (name, (tasks, cost)) in self.providers.iter().zip(&self.by_provider) {
            if *tasks > 0 {
                println!(
                    "      {:<8} {:>10}  {tasks} task(s)",
                    name.as_str(),
                    cost.to_string()
                );
            }
        }
        for (line, row) in self.nowhere.iter().take(MAX_ERRORS_SHOWN) {
            eprintln!(
                "{}: {}: no provider of the cheapest mix can make it",
                file.display(),
                row_place(*line, row, row)
            );
        }
        if self.nowhere.len() > MAX_ERRORS_SHOWN {
            eprintln!("... and {} more", self.nowhere.len() - MAX_ERRORS_SHOWN);
        }
    }
}

/// Where a row is, as the job readers' errors say it: `line 4 (id "ambassador")`, with the image's
/// key for one of several variants (`line 4 (id "ambassador", image ambassador-2)`).
fn row_place(line: impl std::fmt::Display, row: &str, key: &str) -> String {
    if key == row {
        format!("line {line} (id {row:?})")
    } else {
        format!("line {line} (id {row:?}, image {key})")
    }
}
