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

/// Where a row is, as the job readers' errors say it: `line 4 (id "ambassador")`, with the image's
/// key for one of several variants (`line 4 (id "ambassador", image ambassador-2)`).
fn row_place(line: impl std::fmt::Display, row: &str, key: &str) -> String {
    if key == row {
        format!("line {line} (id {row:?})")
    } else {
        format!("line {line} (id {row:?}, image {key})")
    }
}
