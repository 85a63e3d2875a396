//! What each charge was computed from (migration 0015): its basis (per image, per megapixel), the
//! amount per unit and the units charged, and, where the provider says what it billed (fal's
//! `x-fal-billable-units`), its count, in columns of the generation charged. The engine writes a
//! charge's basis with the charge ([`Ledger::record_submitted_with_basis`], no statement of its
//! own), an adopted create's right after its adoption, and the provider's count when it reads the
//! generation done; the report shows them.

use darkroom_jobs::{Money, PriceBasis};
use serde::Serialize;

use crate::{Ledger, Result};

/// How one charge was computed: `rate` per unit times `units_millionths` / 1,000,000 units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChargeBasis {
    /// Per image (Luma, Replicate) or per megapixel of output (fal).
    pub basis: PriceBasis,
    /// The amount per unit (per image, or per megapixel).
    pub rate: Money,
    /// Units charged, in millionths: 1,000,000 for one image; per megapixel, the image's pixels.
    pub units_millionths: i64,
}

impl ChargeBasis {
    /// One image at `charge`.
    pub fn per_image(charge: Money) -> ChargeBasis {
        ChargeBasis {
            basis: PriceBasis::PerImage,
            rate: charge,
            units_millionths: 1_000_000,
        }
    }

    /// An image of `pixels` pixels at `rate` per megapixel.
    pub fn per_megapixel(rate: Money, pixels: i64) -> ChargeBasis {
        ChargeBasis {
            basis: PriceBasis::PerMegapixel,
            rate,
            units_millionths: pixels,
        }
    }

    /// The basis as stored: `per-image` or `per-megapixel`.
    pub fn name(&self) -> &'static str {
        match self.basis {
            PriceBasis::PerImage => "per-image",
            PriceBasis::PerMegapixel => "per-megapixel",
        }
    }

    /// `rate × units`, rounded up to the micro-dollar: what the charge comes to by this basis.
    pub fn amount(&self) -> Money {
        let micros =
            (i128::from(self.units_millionths) * i128::from(self.rate.micros()) + 999_999) / 1_000_000;
        Money::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
    }
}

/// One charge of a job and what it was computed from, as `darkroom report --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargeRecord {
    /// The pass (`preview`, `final`, `reframe`).
    pub pass: String,
    /// The task's key (`ROWID` or `ROWID-VARIANT`).
    pub task_key: String,
    /// The provider's id for the generation charged.
    pub generation_id: Option<String>,
    /// The provider that charged it (`luma`, `replicate`, `fal`).
    pub provider: Option<String>,
    /// The model.
    pub model: String,
    /// The charge, micro-dollars.
    pub charge_micros: i64,
    /// `per-image` or `per-megapixel`.
    pub basis: String,
    /// The amount per unit, micro-dollars.
    pub rate_micros: i64,
    /// Units charged, as a decimal (`1` image; `2.359296` megapixels).
    pub units: String,
    /// What the provider says it billed for the request (fal's `x-fal-billable-units`), as it wrote
    /// it; `None` where it says nothing (Luma, Replicate) or has not said yet.
    pub billed_units: Option<String>,
}

/// A charge's row as the ledger keeps it.
#[derive(sqlx::FromRow)]
struct StoredCharge {
    pass: String,
    task_key: String,
    upstream_id: Option<String>,
    provider: Option<String>,
    model: String,
    charge_micros: i64,
    charge_basis: String,
    charge_rate_micros: Option<i64>,
    charge_units_millionths: Option<i64>,
    billed_units: Option<String>,
}

/// `millionths` / 1,000,000 as a decimal without trailing zeros (`2359296` → `2.359296`).
fn decimal(millionths: i64) -> String {
    let (whole, part) = (millionths / 1_000_000, millionths % 1_000_000);
    if part == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{part:06}").trim_end_matches('0').to_string()
    }
}

impl Ledger {
    /// Records what `generation`'s charge was computed from (again: the later record wins; the
    /// provider's billed count is kept). Per image, the rate is the charge recorded.
    pub async fn record_charge_basis(&self, generation: i64, basis: &ChargeBasis) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE generations SET charge_basis = ?2, charge_units_millionths = ?3,
                 charge_rate_micros = CASE ?2 WHEN 'per-image' THEN charge_micros ELSE ?4 END
             WHERE id = ?1",
        )
        .bind(generation)
        .bind(basis.name())
        .bind(basis.units_millionths)
        .bind(basis.rate.micros())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records the provider's own count of what it billed for `generation` (fal's
    /// `x-fal-billable-units`, as it wrote it), beside the charge's basis.
    pub async fn record_billed_units(&self, generation: i64, units: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE generations SET billed_units = ?2 WHERE id = ?1")
            .bind(generation)
            .bind(units)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The job's charges with what each was computed from, oldest first. Charges recorded before
    /// bases were kept are left out.
    pub async fn charge_bases(&self, job_id: i64) -> Result<Vec<ChargeRecord>> {
        let rows: Vec<StoredCharge> = sqlx::query_as(
            "SELECT t.pass, t.task_key, g.upstream_id, g.provider, t.model, g.charge_micros,
                    g.charge_basis, g.charge_rate_micros, g.charge_units_millionths, g.billed_units
             FROM generations g JOIN tasks t ON t.id = g.task_id
             WHERE t.job_id = ?1 AND g.charge_basis IS NOT NULL ORDER BY g.id",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| ChargeRecord {
                pass: row.pass,
                task_key: row.task_key,
                generation_id: row.upstream_id,
                provider: row.provider,
                model: row.model,
                charge_micros: row.charge_micros,
                basis: row.charge_basis,
                rate_micros: row.charge_rate_micros.unwrap_or(0),
                units: decimal(row.charge_units_millionths.unwrap_or(0)),
                billed_units: row.billed_units,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_read_as_decimals_and_a_basis_comes_to_its_rate_times_its_units_rounded_up() {
        assert_eq!(decimal(1_000_000), "1");
        assert_eq!(decimal(2_359_296), "2.359296");
        assert_eq!(decimal(2_500_000), "2.5");
        let fal = ChargeBasis::per_megapixel(Money::from_micros(19_000), 1536 * 1536);
        assert_eq!(fal.amount(), Money::from_micros(44_827));
        let flash = ChargeBasis::per_megapixel(Money::from_micros(5_000), 2432 * 1024);
        assert_eq!(flash.amount(), Money::from_micros(12_452));
        assert_eq!(
            ChargeBasis::per_image(Money::from_micros(30_000)).amount(),
            Money::from_micros(30_000)
        );
    }
}
