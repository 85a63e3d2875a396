//! Price probes (`darkroom prices --check`): one cheapest image per model, the balance read
//! before and after each, so the account's real price is measured rather than assumed.

use std::sync::Arc;
use std::time::Duration;

use darkroom_jobs::{AspectRatio, Model, Money, PriceBasis};
use darkroom_ledger::{BalanceReading, PriceObservation};

/// How long a probe waits for its generation to end.
const PROBE_TIMEOUT: Duration = Duration::from_secs(180);

/// The cheapest request there is: the shortest sensible prompt, the smallest picture.
const PROBE_PROMPT: &str = "A single grey pebble on white";

/// What one probe (`darkroom prices --check`) found for a model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Probe {
    /// The model, as the API names it.
    pub model: String,
    /// The price table's price per image.
    pub table: Money,
    /// The balance drop across the probe.
    pub charged: Money,
    /// The balance's resolution in the readings.
    pub resolution: Money,
    /// What the account charges per image, when the drop tells it: it differs from the table by
    /// more than the resolution, or the resolution is fine enough (a tenth of the price or less).
    /// `None`: consistent with the table within the resolution.
    pub observed: Option<Money>,
    /// The generation's end: `completed` or `failed` (a failed one is refunded: nothing observed).
    pub state: String,
}

/// Why probing could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The budget can't cover every probe at twice the table's price; nothing was sent.
    #[error("a probe of {models} needs up to {needed} (twice the table's price of each, in case the account charges more); the budget is {budget}")]
    BudgetTooSmall {
        /// The models to probe, joined with "and".
        models: String,
        /// Twice the table's price of each.
        needed: Money,
        /// The budget given.
        budget: Money,
    },
    /// The balance could not be read (the upstream's error).
    #[error("the account's balance could not be read, so no price can be observed on it")]
    NoBalance(#[source] darkroom_provider::ProviderError),
    /// The provider has no balance API, so no price can be observed on it.
    #[error("the provider exposes no balance, so no price can be observed on it")]
    NoBalanceApi,
    /// The probe's create failed.
    #[error("the probe's create for {model} failed")]
    Create {
        /// The model probed.
        model: String,
        /// The upstream's error.
        #[source]
        source: darkroom_provider::ProviderError,
    },
    /// The probe's generation did not end in time (its charge may still come).
    #[error("the probe's generation for {model} did not end within {seconds} s")]
    Timeout {
        /// The model probed.
        model: String,
        /// The wait, in seconds.
        seconds: u64,
    },
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] darkroom_ledger::LedgerError),
}

/// The headroom a probe needs per model: twice the table's price of its image (1:1).
pub fn probe_cost(prices: &darkroom_jobs::PriceTable, models: &[Model]) -> Money {
    models.iter().fold(Money::ZERO, |sum, &m| {
        sum + Money::from_micros(prices.price_of(m, AspectRatio::Square).micros() * 2)
    })
}

/// The cheapest request for `model`: one square image of `PROBE_PROMPT`.
fn probe_request(model: Model) -> darkroom_provider::CreateRequest {
    darkroom_provider::CreateRequest {
        model: model.as_str().to_string(),
        prompt: PROBE_PROMPT.to_string(),
        aspect_ratio: Some("1:1".to_string()),
        format: None,
        image_ref: None,
        style_ref: None,
        character_ref: None,
        modify_image_ref: None,
        reframe: None,
        callback_url: None,
    }
}

/// Makes one image per model (the cheapest request), reading the balance before and after each,
/// and records the readings and what they tell. Refuses before anything is sent when `budget`
/// can't cover every probe at twice the table's price; stops early if real spend leaves too little
/// for the next one.
pub async fn probe_prices(
    client: &Arc<dyn darkroom_provider::Provider>,
    ledger: &darkroom_ledger::Ledger,
    prices: &darkroom_jobs::PriceTable,
    models: &[Model],
    budget: Money,
) -> Result<Vec<Probe>, ProbeError> {
    let needed = probe_cost(prices, models);
    if needed > budget {
        let models = models
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(" and ");
        return Err(ProbeError::BudgetTooSmall {
            models,
            needed,
            budget,
        });
    }
    let base_url = client.base_url().to_string();
    let mut spent = Money::ZERO;
    let mut probes = Vec::new();
    for &model in models {
        // The price of the probe's own image (1:1), per image whatever the table's unit.
        let table = prices.price_of(model, AspectRatio::Square);
        if spent + Money::from_micros(table.micros() * 2) > budget {
            break;
        }
        let before = read(client).await?;
        ledger.record_balance(&base_url, None, before).await?;
        let request = probe_request(model);
        let created = client
            .create(&request)
            .await
            .map_err(|source| ProbeError::Create {
                model: model.as_str().to_string(),
                source,
            })?;
        let state = wait_for_end(client, &created.id)
            .await
            .ok_or(ProbeError::Timeout {
                model: model.as_str().to_string(),
                seconds: PROBE_TIMEOUT.as_secs(),
            })?;
        let after = read(client).await?;
        ledger.record_balance(&base_url, None, after).await?;
        let resolution = before.resolution_micros.min(after.resolution_micros);
        let charged = (before.balance_micros - after.balance_micros).max(0);
        spent += Money::from_micros(charged);
        let telling = (charged - table.micros()).abs() > resolution || resolution * 10 <= table.micros();
        let observed = (state == "completed" && telling && charged > 0).then(|| Money::from_micros(charged));
        if let Some(observed) = observed {
            let (table_micros, observed_micros) = in_table_unit(prices, model, table, observed);
            ledger
                .record_observation(&PriceObservation {
                    base_url: base_url.clone(),
                    job_id: None,
                    pass: None,
                    run_started_at: before.at,
                    model: model.as_str().to_string(),
                    table_micros,
                    observed_micros,
                    images: 1,
                    drop_micros: charged,
                    observed_at: after.at,
                    per: super::per_unit(prices.basis).to_string(),
                })
                .await?;
        }
        probes.push(Probe {
            model: model.as_str().to_string(),
            table,
            charged: Money::from_micros(charged),
            resolution: Money::from_micros(resolution),
            observed,
            state,
        });
    }
    Ok(probes)
}

/// A probe's table price and observed price for one 1:1 image, in the table's unit: as they are
/// per image, or per megapixel the table's rate and the rate the drop shows for that image.
fn in_table_unit(
    prices: &darkroom_jobs::PriceTable,
    model: Model,
    table: Money,
    observed: Money,
) -> (i64, i64) {
    match prices.basis {
        PriceBasis::PerImage => (table.micros(), observed.micros()),
        PriceBasis::PerMegapixel => {
            let one = darkroom_ledger::SizedCharges {
                model: model.as_str().to_string(),
                aspect_ratio: AspectRatio::Square.as_str().to_string(),
                images: 1,
                micros: table.micros(),
            };
            let rate = super::per_megapixel::smallest_rate(prices, model, &[&one], observed.micros());
            (prices.rate(model).micros(), rate.micros())
        }
    }
}

async fn read(client: &Arc<dyn darkroom_provider::Provider>) -> Result<BalanceReading, ProbeError> {
    let balance = client.balance().await.map_err(ProbeError::NoBalance)?;
    let balance = balance.ok_or(ProbeError::NoBalanceApi)?;
    Ok(BalanceReading {
        at: darkroom_ledger::now_ms(),
        balance_micros: balance.reading_micros,
        resolution_micros: balance.resolution_micros,
    })
}

/// Polls a generation until it ends: `completed` or `failed`; `None` after `PROBE_TIMEOUT`.
async fn wait_for_end(client: &Arc<dyn darkroom_provider::Provider>, id: &str) -> Option<String> {
    let deadline = tokio::time::Instant::now() + PROBE_TIMEOUT;
    let mut waits = crate::retry::PROBE_POLL.start();
    while tokio::time::Instant::now() < deadline {
        if let Ok(generation) = client.get(id).await {
            match generation.state {
                darkroom_provider::GenerationState::Completed => return Some("completed".into()),
                darkroom_provider::GenerationState::Failed => return Some("failed".into()),
                _ => {}
            }
        }
        tokio::time::sleep(waits.next_delay().unwrap_or(crate::retry::PROBE_POLL.max)).await;
    }
    None
}
