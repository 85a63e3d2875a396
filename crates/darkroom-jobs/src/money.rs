//! Money as integer micro-dollars, parsed exactly from decimal text, and the price table.
//!
//! There is no `f64` anywhere on the path from a price in a config file to a charge in the ledger.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::Model;

/// An amount of US dollars in micro-dollars (1 USD = 1,000,000).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(i64);

/// Why a decimal text is not an amount of money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not digits with an optional decimal point.
    #[error("{0:?} is not an amount in USD (expected digits with an optional decimal point, e.g. 12.50)")]
    NotANumber(String),
    /// Finer than a micro-dollar.
    #[error("{0:?} has more precision than a micro-dollar (at most 6 decimal places)")]
    TooPrecise(String),
    /// Beyond what an `i64` of micro-dollars holds.
    #[error("{0:?} is too large")]
    TooLarge(String),
    /// Below zero.
    #[error("{0:?} is negative")]
    Negative(String),
}

impl Money {
    /// No money.
    pub const ZERO: Money = Money(0);
    /// Micro-dollars in one US dollar.
    pub const MICROS_PER_USD: i64 = 1_000_000;

    /// The amount of `micros` micro-dollars.
    pub const fn from_micros(micros: i64) -> Money {
        Money(micros)
    }

    /// The amount in micro-dollars.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// Whole US cents, rounded down (for display of account credits).
    pub const fn from_cents(cents: i64) -> Money {
        Money(cents * 10_000)
    }

    /// Parses a non-negative decimal amount of USD ("0.004", "200", "12.5", "$3"), exactly.
    pub fn parse_usd(text: &str) -> Result<Money, MoneyError> {
        let trimmed = text.trim();
        let body = trimmed.strip_prefix('$').unwrap_or(trimmed);
        if body.starts_with('-') {
            return Err(MoneyError::Negative(text.to_string()));
        }
        let (whole, frac) = match body.split_once('.') {
            Some((w, f)) => (w, f),
            None => (body, ""),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
            return Err(MoneyError::NotANumber(text.to_string()));
        }
        let significant_frac = frac.trim_end_matches('0');
        if significant_frac.len() > 6 {
            return Err(MoneyError::TooPrecise(text.to_string()));
        }
        let whole_value: i64 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| MoneyError::TooLarge(text.to_string()))?
        };
        let mut frac_value: i64 = 0;
        for (i, b) in significant_frac.bytes().enumerate() {
            let place = 10_i64.pow(5 - u32::try_from(i).unwrap_or(5));
            frac_value += i64::from(b - b'0') * place;
        }
        whole_value
            .checked_mul(Money::MICROS_PER_USD)
            .and_then(|m| m.checked_add(frac_value))
            .map(Money)
            .ok_or_else(|| MoneyError::TooLarge(text.to_string()))
    }

    /// Multiplies by a count (images), saturating at the largest amount.
    pub fn times(self, count: u64) -> Money {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        Money(self.0.saturating_mul(count))
    }

    /// `self − other`; `None` if it overflows.
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).map(Money)
    }

    /// `self − other`, clamped at the `i64` bounds.
    pub fn saturating_sub(self, other: Money) -> Money {
        Money(self.0.saturating_sub(other.0))
    }

    /// The exact decimal text without a currency sign and without trailing zeros beyond cents:
    /// "0.004", "12.50", "200.00".
    pub fn to_decimal_string(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / 1_000_000;
        let frac = abs % 1_000_000;
        let mut frac_text = format!("{frac:06}");
        while frac_text.len() > 2 && frac_text.ends_with('0') {
            frac_text.pop();
        }
        format!("{sign}{whole}.{frac_text}")
    }
}

impl fmt::Display for Money {
    /// `$12.50`, `$0.004`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.to_decimal_string();
        match text.strip_prefix('-') {
            Some(abs) => write!(f, "-${abs}"),
            None => write!(f, "${text}"),
        }
    }
}

impl FromStr for Money {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Money, MoneyError> {
        Money::parse_usd(s)
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, rhs: Money) -> Money {
        Money(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Money {
    fn add_assign(&mut self, rhs: Money) {
        *self = *self + rhs;
    }
}

impl Sub for Money {
    type Output = Money;
    fn sub(self, rhs: Money) -> Money {
        Money(self.0.saturating_sub(rhs.0))
    }
}

impl std::iter::Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, Add::add)
    }
}

/// Serialized as the decimal text ("0.004"), so config files and JSON never carry a float.
impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_decimal_string())
    }
}

/// Accepts decimal text ("0.015", "$0.015"), and a TOML or JSON number: an integer as whole
/// dollars, a float through its shortest decimal text (`0.019` reads as "0.019", exactly what was
/// written, never the binary value nearest it), so `"photon-1" = 0.019` means $0.019. Anything
/// else is refused with a message saying to write the amount as text.
impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Money, D::Error> {
        deserializer.deserialize_any(MoneyVisitor)
    }
}

/// Reads an amount in USD from text or a number (see `Deserialize for Money`).
struct MoneyVisitor;

impl serde::de::Visitor<'_> for MoneyVisitor {
    type Value = Money;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an amount in USD written as text, e.g. \"0.015\"")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Money, E> {
        Money::parse_usd(text).map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, dollars: u64) -> Result<Money, E> {
        self.visit_str(&dollars.to_string())
    }

    fn visit_i64<E: serde::de::Error>(self, dollars: i64) -> Result<Money, E> {
        self.visit_str(&dollars.to_string())
    }

    fn visit_f64<E: serde::de::Error>(self, dollars: f64) -> Result<Money, E> {
        if !dollars.is_finite() {
            return Err(E::custom(format!(
                "{dollars} is not an amount: write the amount in USD as text, e.g. \"0.015\""
            )));
        }
        // `Display` writes the shortest decimal that reads back as the same float, without an
        // exponent: the number as it was written in the file.
        self.visit_str(&dollars.to_string())
    }
}

/// What a [`PriceTable`]'s amounts are the price of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PriceBasis {
    /// One image, whatever its size (Luma, Replicate).
    #[default]
    PerImage,
    /// One megapixel (1,000,000 pixels) of output (fal.ai): an image costs its aspect ratio's
    /// pixel count (`AspectRatio::pixels`) in megapixels times the amount, rounded up to the
    /// micro-dollar.
    PerMegapixel,
}

/// The price of one image (or one megapixel, per `basis`) of each model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// The price of a photon-1 image (`photon-1` in configuration files).
    #[serde(rename = "photon-1")]
    pub photon_1: Money,
    /// The price of a photon-flash-1 image (`photon-flash-1` in configuration files).
    #[serde(rename = "photon-flash-1")]
    pub photon_flash_1: Money,
    /// What the two amounts are the price of: an image (the default) or a megapixel.
    #[serde(default, skip_serializing_if = "is_per_image")]
    pub basis: PriceBasis,
}

fn is_per_image(basis: &PriceBasis) -> bool {
    *basis == PriceBasis::PerImage
}

impl PriceTable {
    /// The price of one image of `model`. Per megapixel, that of the largest image any aspect
    /// ratio makes (21:9 and 9:21, 2.49 MP), so a price per model never understates one.
    pub fn price(&self, model: Model) -> Money {
        match self.basis {
            PriceBasis::PerImage => self.rate(model),
            PriceBasis::PerMegapixel => crate::model::AspectRatio::ALL
                .into_iter()
                .map(|ratio| self.price_of(model, ratio))
                .max()
                .unwrap_or(Money::ZERO),
        }
    }

    /// The price of one image of `model` at `aspect_ratio`: the table's amount per image, or
    /// its amount per megapixel times the image's megapixels, rounded up to the micro-dollar.
    pub fn price_of(&self, model: Model, aspect_ratio: crate::model::AspectRatio) -> Money {
        match self.basis {
            PriceBasis::PerImage => self.rate(model),
            PriceBasis::PerMegapixel => {
                let (width, height) = aspect_ratio.pixels();
                let pixels = i128::from(width) * i128::from(height);
                let micros = (pixels * i128::from(self.rate(model).0) + 999_999) / 1_000_000;
                Money(i64::try_from(micros).unwrap_or(i64::MAX))
            }
        }
    }

    /// The table's amount for `model`, per image or per megapixel as `basis` says.
    pub fn rate(&self, model: Model) -> Money {
        match model {
            Model::Photon1 => self.photon_1,
            Model::PhotonFlash1 => self.photon_flash_1,
        }
    }
}

impl Default for PriceTable {
    /// Luma's published prices: $0.015 and $0.004 an image.
    fn default() -> Self {
        PriceTable {
            photon_1: Money(15_000),
            photon_flash_1: Money(4_000),
            basis: PriceBasis::PerImage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_per_megapixel_table_prices_an_image_by_its_pixels_rounded_up_and_a_model_by_its_largest() {
        use crate::model::AspectRatio;
        let table = PriceTable {
            photon_1: Money(19_000),
            photon_flash_1: Money(5_000),
            basis: PriceBasis::PerMegapixel,
        };
        // 1536 × 1536 = 2.359296 MP × $0.019 = $0.044826624 → 44,827 µ$.
        assert_eq!(table.price_of(Model::Photon1, AspectRatio::Square), Money(44_827));
        assert_eq!(
            table.price_of(Model::PhotonFlash1, AspectRatio::Square),
            Money(11_797)
        );
        // 2432 × 1024 = 2.490368 MP, the largest.
        assert_eq!(table.price(Model::Photon1), Money(47_317));
        let per_image = PriceTable::default();
        assert_eq!(
            per_image.price_of(Model::Photon1, AspectRatio::Landscape21x9),
            Money(15_000)
        );
        assert_eq!(per_image.price(Model::Photon1), Money(15_000));
    }

    #[test]
    fn decimal_text_parses_exactly_to_micro_dollars() {
        for (text, micros) in [
            ("0.004", 4_000),
            ("0.015", 15_000),
            ("200", 200_000_000),
            ("$12.5", 12_500_000),
            (".5", 500_000),
            ("3.", 3_000_000),
            ("0.000001", 1),
            ("1.2300000", 1_230_000),
        ] {
            assert_eq!(Money::parse_usd(text), Ok(Money(micros)), "{text}");
        }
    }

    #[test]
    fn more_precision_than_a_micro_dollar_is_an_error_not_a_rounding() {
        assert!(matches!(
            Money::parse_usd("0.0000001"),
            Err(MoneyError::TooPrecise(_))
        ));
        assert!(matches!(
            Money::parse_usd("0.0040001"),
            Err(MoneyError::TooPrecise(_))
        ));
    }

    #[test]
    fn garbage_and_negative_amounts_are_rejected() {
        for text in ["", ".", "abc", "1e3", "1,5", "1.2.3", " $ "] {
            assert!(
                matches!(Money::parse_usd(text), Err(MoneyError::NotANumber(_))),
                "{text:?}"
            );
        }
        assert!(matches!(Money::parse_usd("-1"), Err(MoneyError::Negative(_))));
        assert!(matches!(
            Money::parse_usd("99999999999999999999"),
            Err(MoneyError::TooLarge(_))
        ));
    }

    #[test]
    fn display_round_trips_through_parse() {
        for micros in [0, 1, 4_000, 15_000, 12_500_000, 200_000_000, 123_456_789] {
            let money = Money(micros);
            assert_eq!(Money::parse_usd(&money.to_string()), Ok(money));
        }
        assert_eq!(Money(4_000).to_string(), "$0.004");
        assert_eq!(Money(12_500_000).to_string(), "$12.50");
    }

    #[test]
    fn a_number_reads_as_the_decimal_written_and_anything_else_is_told_to_be_text() {
        let read = |json: &str| serde_json::from_str::<Money>(json);
        // 0.019 and 0.1 are not exact binary floats; their shortest decimal text is.
        assert_eq!(read("0.019").unwrap(), Money(19_000));
        assert_eq!(read("0.1").unwrap(), Money(100_000));
        assert_eq!(read("0.000001").unwrap(), Money(1));
        assert_eq!(read("2").unwrap(), Money(2_000_000));
        assert_eq!(read("\"0.015\"").unwrap(), Money(15_000));
        assert!(read("0.0000001")
            .unwrap_err()
            .to_string()
            .contains("more precision"));
        assert!(read("-0.5").unwrap_err().to_string().contains("negative"));
        let other = read("true").unwrap_err().to_string();
        assert!(
            other.contains(r#"an amount in USD written as text, e.g. "0.015""#),
            "{other}"
        );
    }
}
