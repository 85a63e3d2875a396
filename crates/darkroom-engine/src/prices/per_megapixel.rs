//! The balance observer for a provider that bills per megapixel of output (fal): what the account
//! charges is learned as a *rate per megapixel* (the drop ÷ the megapixels billed), and a higher
//! rate re-prices each charge and each later reservation at its own size
//! (`PriceTable::price_of`), rounded up to the micro-dollar per image as fal is assumed to bill
//! (fal does not publish its rounding; the simulator bills this way).

use darkroom_jobs::{AspectRatio, Model, Money, PriceBasis, PriceTable};
use darkroom_ledger::{BalanceReading, PriceObservation, SizedCharges};

use super::{BalanceDrop, Observer};
use crate::run_context::RunContext;
use crate::EngineError;

impl Observer {
    /// [`Observer::observe`] for a table per megapixel, with the create lock held alone and
    /// `reading` just taken.
    pub(super) async fn observe_per_megapixel(
        &mut self,
        shared: &RunContext,
        reading: BalanceReading,
    ) -> Result<(), EngineError> {
        let (job_id, pass) = (shared.job_id, shared.settings.pass);
        let base_url = shared.client.base_url().to_string();
        shared
            .ledger
            .record_balance(&base_url, Some((job_id, pass)), reading)
            .await?;
        let sized = shared
            .ledger
            .charges_by_size_since(job_id, pass, self.baseline.watermark, self.baseline.reading.at)
            .await?;
        let explained: i64 = sized.iter().map(|c| c.micros).sum();
        let Some(BalanceDrop {
            dropped,
            unexplained,
            differs,
        }) = self.compare(&reading, explained, sized.iter().map(|c| c.images).sum())
        else {
            return Ok(()); // too little spent yet to tell anything
        };
        let table = shared.settings.prices;
        for model in Model::ALL {
            let of_model: Vec<&SizedCharges> = sized.iter().filter(|c| c.model == model.as_str()).collect();
            let images: i64 = of_model.iter().map(|c| c.images).sum();
            if images <= 0 {
                continue;
            }
            let micros: i64 = of_model.iter().map(|c| c.micros).sum();
            let table_rate = table.rate(model);
            let in_force = self.rates.get(&model).copied().unwrap_or(table_rate);
            let observed = if differs {
                // The whole unexplained drop is this model's: the most careful reading.
                let attributed = (dropped - (explained - micros)).max(0);
                smallest_rate(&table, model, &of_model, attributed)
            } else {
                in_force
            };
            shared
                .ledger
                .record_observation(&PriceObservation {
                    base_url: base_url.clone(),
                    job_id: Some(job_id),
                    pass: Some(pass.as_str().to_string()),
                    run_started_at: self.run_started_at,
                    model: model.as_str().to_string(),
                    table_micros: table_rate.micros(),
                    observed_micros: observed.micros(),
                    images,
                    drop_micros: micros + unexplained,
                    observed_at: reading.at,
                    per: "megapixel".to_string(),
                })
                .await?;
            if differs && observed > in_force && observed > table_rate {
                let at_rate = with_rate(&table, model, observed);
                let sizes: Vec<(AspectRatio, Money)> = AspectRatio::ALL
                    .into_iter()
                    .map(|ratio| (ratio, at_rate.price_of(model, ratio)))
                    .collect();
                let repriced = shared
                    .ledger
                    .reprice_sizes(job_id, pass, model.as_str(), &sizes)
                    .await?;
                self.rates.insert(model, observed);
                shared.repriced.store(true, std::sync::atomic::Ordering::Release);
                tracing::info!(model = model.as_str(), %observed, table = %table_rate, ?repriced, "re-priced to the observed price per megapixel");
                self.announce(shared, model, table_rate, observed, true).await;
            } else if differs && observed < table_rate {
                self.announce(shared, model, table_rate, observed, false).await;
            }
        }
        Ok(())
    }
}

/// `table` with `model`'s amount per megapixel set to `rate`.
fn with_rate(table: &PriceTable, model: Model, rate: Money) -> PriceTable {
    let mut table = *table;
    table.basis = PriceBasis::PerMegapixel;
    match model {
        Model::Photon1 => table.photon_1 = rate,
        Model::PhotonFlash1 => table.photon_flash_1 = rate,
    }
    table
}

/// What `charges` (of `model`) cost at `rate` per megapixel, each image at its own size.
fn cost_at(table: &PriceTable, model: Model, charges: &[&SizedCharges], rate: Money) -> i64 {
    let table = with_rate(table, model, rate);
    charges
        .iter()
        .map(|c| {
            let price = AspectRatio::parse(&c.aspect_ratio).map_or(0, |r| table.price_of(model, r).micros());
            price.saturating_mul(c.images)
        })
        .sum()
}

/// The smallest whole rate per megapixel (micro-dollars) at which `charges` cost at least
/// `dropped`, each image billed at its size rounded up: the rate the account charges when the
/// drop is exactly its bill, and never one that understates it.
pub(super) fn smallest_rate(
    table: &PriceTable,
    model: Model,
    charges: &[&SizedCharges],
    dropped: i64,
) -> Money {
    let pixels: i128 = charges
        .iter()
        .map(|c| {
            let (w, h) = AspectRatio::parse(&c.aspect_ratio).map_or((0, 0), AspectRatio::pixels);
            i128::from(w) * i128::from(h) * i128::from(c.images)
        })
        .sum();
    if pixels <= 0 || dropped <= 0 {
        return Money::ZERO;
    }
    // Rounding each image up adds under a micro-dollar an image, so the rate is at or just below
    // this first guess.
    let guess = i128::from(dropped) * 1_000_000 / pixels;
    let mut rate = i64::try_from(guess).unwrap_or(i64::MAX).saturating_sub(1).max(0);
    while cost_at(table, model, charges, Money::from_micros(rate)) < dropped {
        rate += 1;
    }
    Money::from_micros(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charges(ratio: AspectRatio, images: i64) -> SizedCharges {
        SizedCharges {
            model: Model::PhotonFlash1.as_str().to_string(),
            aspect_ratio: ratio.as_str().to_string(),
            images,
            micros: images, // what the ledger charged does not enter the rate
        }
    }

    fn fal_table(flash_micros: i64) -> PriceTable {
        PriceTable {
            photon_1: Money::from_micros(19_000),
            photon_flash_1: Money::from_micros(flash_micros),
            basis: PriceBasis::PerMegapixel,
        }
    }

    #[test]
    fn the_rate_learned_from_a_bill_of_mixed_sizes_is_the_rate_that_billed_it() {
        let low = fal_table(1);
        let sized = [
            charges(AspectRatio::Square, 3),
            charges(AspectRatio::Landscape21x9, 2),
            charges(AspectRatio::Portrait9x16, 1),
        ];
        let refs: Vec<&SizedCharges> = sized.iter().collect();
        for true_rate in [5_000, 5_001, 19_000, 123_457] {
            let billed = cost_at(&low, Model::PhotonFlash1, &refs, Money::from_micros(true_rate));
            assert_eq!(
                smallest_rate(&low, Model::PhotonFlash1, &refs, billed),
                Money::from_micros(true_rate),
                "a bill of {billed} µ$"
            );
        }
        // $0.005 per megapixel: 3 × 11,797 + 2 × 12,452 + 11,797, each image rounded up.
        assert_eq!(
            cost_at(&low, Model::PhotonFlash1, &refs, Money::from_micros(5_000)),
            4 * 11_797 + 2 * 12_452
        );
    }

    #[test]
    fn a_drop_a_little_above_a_bill_never_gives_a_rate_that_understates_it() {
        let low = fal_table(1);
        let sized = [charges(AspectRatio::Square, 2)];
        let refs: Vec<&SizedCharges> = sized.iter().collect();
        let rate = smallest_rate(&low, Model::PhotonFlash1, &refs, 2 * 11_797 + 1);
        assert!(cost_at(&low, Model::PhotonFlash1, &refs, rate) > 2 * 11_797);
        assert_eq!(smallest_rate(&low, Model::PhotonFlash1, &refs, 0), Money::ZERO);
    }

    #[test]
    fn the_advice_names_the_section_of_the_provider_that_charged_in_its_unit() {
        let price = Money::from_micros(5_000);
        assert_eq!(
            super::super::config_line("fal", Model::PhotonFlash1, price),
            r#"[fal.prices] "photon-flash-1" = "0.005""#
        );
        assert_eq!(
            super::super::config_line("replicate", Model::Photon1, price),
            r#"[replicate.prices] "photon-1" = "0.005""#
        );
        assert_eq!(
            super::super::config_line("luma", Model::Photon1, price),
            r#"[prices] "photon-1" = "0.005""#
        );
    }
}
