//! What a task's charge was computed from, written to the ledger with the charge: per image at
//! the charge itself (Luma, Replicate; the charge may be an observed price above the table's), or
//! per megapixel at the run's rate for the image's pixels (fal), and, once the generation is done,
//! what the provider says it billed (fal's billed units), where it says.

use darkroom_jobs::{Money, PriceBasis};
use darkroom_ledger::ChargeBasis;

use super::TaskRun;
use crate::EngineError;

impl TaskRun {
    /// What the task's charge is computed from, by the run's prices (per image, the ledger takes
    /// the rate from the charge it records: the price in force).
    pub(super) fn charge_basis(&self) -> ChargeBasis {
        let prices = &self.shared.settings.prices;
        match prices.basis {
            PriceBasis::PerImage => ChargeBasis::per_image(Money::ZERO),
            PriceBasis::PerMegapixel => {
                let (width, height) = self.aspect.pixels();
                ChargeBasis::per_megapixel(prices.rate(self.model), i64::from(width) * i64::from(height))
            }
        }
    }

    /// Records what the charge of an adopted `generation` was computed from.
    pub(super) async fn record_basis(&self, generation: i64) -> Result<(), EngineError> {
        let basis = self.charge_basis();
        self.shared.ledger.record_charge_basis(generation, &basis).await?;
        Ok(())
    }

    /// Asks the provider what it billed for the completed `upstream_id` and records it; a provider
    /// that says nothing costs no request, and a failed read is only logged (the charge stands).
    pub(super) async fn record_billed(&self, generation: i64, upstream_id: &str) -> Result<(), EngineError> {
        match self.upstream.client.billed_units(upstream_id).await {
            Ok(Some(units)) => self.shared.ledger.record_billed_units(generation, &units).await?,
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(task = self.key(), %error, "could not read what the provider billed");
            }
        }
        Ok(())
    }
}
