//! What the chosen provider can make, said before anything is sent: a pass whose tasks ask for
//! what the provider can't do whole is refused (exit 2), each task named with its line and row.

use darkroom_jobs::Pass;
use darkroom_ledger::Ledger;

use crate::commands::{Connection, MAX_ERRORS_SHOWN};
use crate::exit::{Exit, Failure};

/// What a pass checks and says about its provider before anything is sent: the tasks it can't
/// make ([`refuse_incapable`]) and, without a balance API, that the ledger is the only truth.
pub async fn before_sending(
    ledger: &Ledger,
    connection: &Connection,
    job_id: i64,
    pass: Pass,
) -> anyhow::Result<()> {
    refuse_incapable(ledger, connection, job_id, pass).await?;
    say_budget_truth(connection);
    Ok(())
}

/// Refuses the pass (exit 2, nothing sent) when the provider can't make some of its tasks as
/// asked, printing each on stderr: `line N, row ID: PROVIDER can't make REASON; REASON`.
pub async fn refuse_incapable(
    ledger: &Ledger,
    connection: &Connection,
    job_id: i64,
    pass: Pass,
) -> anyhow::Result<()> {
    let provider = connection.client.as_ref();
    let incapable = darkroom_engine::capable::check_pass(ledger, provider, job_id, pass).await?;
    if incapable.is_empty() {
        return Ok(());
    }
    for task in incapable.iter().take(MAX_ERRORS_SHOWN) {
        eprintln!(
            "{}: {} can't make {}",
            row_place(task.line, &task.row_id, &task.task_key),
            provider.name(),
            task.reasons.join("; ")
        );
    }
    if incapable.len() > MAX_ERRORS_SHOWN {
        eprintln!("... and {} more", incapable.len() - MAX_ERRORS_SHOWN);
    }
    Err(Failure::new(
        Exit::BadInput,
        format!(
            "{} task(s) ask for what {} can't make; nothing was sent",
            incapable.len(),
            provider.name()
        ),
    )
    .with_hint("run them on a provider that can (`darkroom estimate FILE` lists which), or change those rows")
    .into())
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
