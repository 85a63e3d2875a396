//! fal's per-megapixel prices for Photon, and the price of one request from its pixel count.
//!
//! fal bills Photon by the megapixel of output (`providers-api.md` §2.1, sources F1–F4):
//! `fal-ai/luma-photon` $0.019 per megapixel (the rate is first-party on the reframe page; for
//! text-to-image it rests on fal's code registries), `fal-ai/luma-photon/flash` $0.005 per
//! megapixel. A request's price is its aspect ratio's pixel count (Luma's standard sizes,
//! `AspectRatio::pixels`: fal's own output size is not published) in megapixels of 1,000,000
//! pixels, times the rate, rounded up to the next micro-dollar so a reservation never
//! understates a charge. A 1:1 photon-1 image (1536 × 1536, 2.359296 MP) is $0.044827.

use darkroom_jobs::{AspectRatio, Model, Money};

/// Pixels in one megapixel, as fal counts billable units.
pub const PIXELS_PER_MEGAPIXEL: u64 = 1_000_000;

/// What fal charges per megapixel of output, per model, in integer micro-dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FalPrices {
    /// `fal-ai/luma-photon` (photon-1): $0.019 per megapixel by default.
    pub photon_1_per_megapixel: Money,
    /// `fal-ai/luma-photon/flash` (photon-flash-1): $0.005 per megapixel by default.
    pub photon_flash_1_per_megapixel: Money,
}

impl Default for FalPrices {
    /// fal's published rates: $0.019 and $0.005 per megapixel.
    fn default() -> FalPrices {
        FalPrices {
            photon_1_per_megapixel: Money::from_micros(19_000),
            photon_flash_1_per_megapixel: Money::from_micros(5_000),
        }
    }
}

impl FalPrices {
    /// The same rates as a price table per megapixel, which is how the engine prices a task
    /// (`PriceTable::price_of`): the same amount as [`FalPrices::price`] for every image.
    pub fn table(&self) -> darkroom_jobs::PriceTable {
        darkroom_jobs::PriceTable {
            photon_1: self.photon_1_per_megapixel,
            photon_flash_1: self.photon_flash_1_per_megapixel,
            basis: darkroom_jobs::PriceBasis::PerMegapixel,
        }
    }

    /// The rate of `model`, micro-dollars per megapixel.
    pub fn per_megapixel(&self, model: Model) -> Money {
        match model {
            Model::Photon1 => self.photon_1_per_megapixel,
            Model::PhotonFlash1 => self.photon_flash_1_per_megapixel,
        }
    }

    /// The price of one image of `model` at `aspect_ratio`: its pixels in megapixels times the
    /// rate, rounded up to the micro-dollar.
    pub fn price(&self, model: Model, aspect_ratio: AspectRatio) -> Money {
        let (width, height) = aspect_ratio.pixels();
        let pixels = u128::from(width) * u128::from(height);
        cost(
            pixels,
            u128::from(PIXELS_PER_MEGAPIXEL),
            self.per_megapixel(model),
        )
    }

    /// What `units` billable units (megapixels, as fal's `x-fal-billable-units` header writes
    /// them: a decimal of at most six places) of `model` cost, rounded up to the micro-dollar;
    /// `None` for text that is no such number.
    pub fn cost_of_units(&self, model: Model, units: &str) -> Option<Money> {
        if units.contains('$') {
            return None;
        }
        // A decimal of at most six places read exactly, as millionths of a unit.
        let millionths = Money::parse_usd(units.trim()).ok()?.micros();
        let millionths = u128::try_from(millionths).ok()?;
        Some(cost(millionths, 1_000_000, self.per_megapixel(model)))
    }
}

/// `amount / per_unit × rate`, rounded up, saturating at the largest amount.
fn cost(amount: u128, per_unit: u128, rate: Money) -> Money {
    let rate = u128::try_from(rate.micros()).unwrap_or(0);
    let micros = (amount * rate).div_ceil(per_unit);
    Money::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_price_is_the_pixel_count_in_megapixels_times_the_rate_rounded_up() {
        let prices = FalPrices::default();
        // 1536 × 1536 = 2,359,296 px; × $0.019 = $0.044826624 → 44,827 µ$.
        assert_eq!(prices.price(Model::Photon1, AspectRatio::Square).micros(), 44_827);
        // × $0.005 = $0.01179648 → 11,797 µ$.
        assert_eq!(
            prices.price(Model::PhotonFlash1, AspectRatio::Square).micros(),
            11_797
        );
        // 2048 × 1152 = 2,359,296 px as well; 2432 × 1024 = 2,490,368 px.
        assert_eq!(
            prices.price(Model::Photon1, AspectRatio::Landscape16x9).micros(),
            44_827
        );
        assert_eq!(
            prices.price(Model::Photon1, AspectRatio::Landscape21x9).micros(),
            47_317
        );
    }

    #[test]
    fn the_engines_per_megapixel_table_prices_every_image_as_fal_does() {
        let prices = FalPrices::default();
        for model in Model::ALL {
            for ratio in AspectRatio::ALL {
                assert_eq!(prices.table().price_of(model, ratio), prices.price(model, ratio));
            }
        }
    }

    #[test]
    fn billed_units_cost_the_same_as_the_table_for_the_same_pixels_and_bad_text_is_none() {
        let prices = FalPrices::default();
        assert_eq!(
            prices.cost_of_units(Model::Photon1, "2.359296"),
            Some(prices.price(Model::Photon1, AspectRatio::Square))
        );
        assert_eq!(
            prices.cost_of_units(Model::PhotonFlash1, "1"),
            Some(Money::from_micros(5_000))
        );
        assert_eq!(prices.cost_of_units(Model::Photon1, "two"), None);
        assert_eq!(prices.cost_of_units(Model::Photon1, "$1"), None);
        assert_eq!(prices.cost_of_units(Model::Photon1, "-1"), None);
        assert_eq!(prices.cost_of_units(Model::Photon1, "0.0000001"), None);
    }
}
