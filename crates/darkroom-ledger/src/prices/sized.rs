//! Prices that depend on an image's size (fal bills per megapixel): the pass's charges per model
//! and aspect ratio, re-pricing each size at its own observed price, and making sure a
//! reservation made before a price was raised still covers it before its create is sent.

use darkroom_jobs::{AspectRatio, Money, Pass};

use super::{correct_charges, top_up_reservations, Repriced};
use crate::money::PRICE_IN_FORCE;
use crate::{now_ms, Ledger, Result};

impl Ledger {
    /// The account was observed to charge, per image of `model`, the prices in `sizes` (one per
    /// aspect ratio: a price per megapixel times each size's megapixels, as fal bills). In one
    /// transaction, for each aspect ratio whose price is higher than the pass's: the tasks of that
    /// size are priced at it from now on (`price_micros`, never lowered: later reservations and
    /// charges use it), their charges below it are corrected up to it (unplanned spend, logged as
    /// a charge, even past the budget: it is real money), and reservations waiting to be charged
    /// are raised to it where the budget allows.
    pub async fn reprice_sizes(
        &self,
        job_id: i64,
        pass: Pass,
        model: &str,
        sizes: &[(AspectRatio, Money)],
    ) -> Result<Repriced> {
        let mut tx = self.begin_write().await?;
        let now = now_ms();
        let mut repriced = Repriced::default();
        for (ratio, price) in sizes {
            let (ratio, price) = (ratio.as_str(), price.micros());
            sqlx::query(
                "UPDATE tasks SET price_micros = ?5
                 WHERE job_id = ?1 AND pass = ?2 AND model = ?3 AND aspect_ratio = ?4 AND price_micros < ?5",
            )
            .bind(job_id)
            .bind(pass.as_str())
            .bind(model)
            .bind(ratio)
            .bind(price)
            .execute(&mut *tx)
            .await?;
            let scope = (model, Some(ratio));
            let corrected = correct_charges(&mut tx, job_id, pass, scope, price, now).await?;
            repriced.corrected_images += corrected.corrected_images;
            repriced.corrected += corrected.corrected;
            repriced.topped_up += top_up_reservations(&mut tx, job_id, pass, scope, price).await?;
        }
        tx.commit().await?;
        Ok(repriced)
    }

    /// Makes sure the task's reservation covers its price in force before its create is sent
    /// (the price may have been raised since it was reserved): it is raised to that price if
    /// spent + reserved stays within the pass's budget. `Err(price)`: it can't be, and the create
    /// must not be sent (the reservation is left as it is, for the caller to give back); `price`
    /// is the task's price in force, micro-dollars.
    pub async fn cover_reservation(&self, task_id: i64) -> Result<std::result::Result<(), Money>> {
        let mut tx = self.begin_write().await?;
        let (job_id, pass, reserved, price): (i64, String, i64, i64) = sqlx::query_as(&format!(
            "SELECT t.job_id, t.pass, t.reserved_micros, {PRICE_IN_FORCE} FROM tasks t WHERE t.id = ?1"
        ))
        .bind(task_id)
        .fetch_one(&mut *tx)
        .await?;
        if reserved >= price {
            return Ok(Ok(()));
        }
        let extra = price - reserved;
        let fits = sqlx::query(
            "UPDATE job_passes SET reserved_micros = reserved_micros + ?3
             WHERE job_id = ?1 AND pass = ?2 AND spent_micros + reserved_micros + ?3 <= budget_micros",
        )
        .bind(job_id)
        .bind(&pass)
        .bind(extra)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if fits == 0 {
            return Ok(Err(Money::from_micros(price)));
        }
        sqlx::query("UPDATE tasks SET reserved_micros = ?2 WHERE id = ?1")
            .bind(task_id)
            .bind(price)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// The pass's generations that still hold a charge, per model and aspect ratio, made after
    /// `after_generation` or recorded as charged since `since_ms` (as [`Ledger::charges_since`]):
    /// what a price per megapixel is learned from.
    pub async fn charges_by_size_since(
        &self,
        job_id: i64,
        pass: Pass,
        after_generation: i64,
        since_ms: i64,
    ) -> Result<Vec<SizedCharges>> {
        Ok(sqlx::query_as(
            "SELECT t.model AS model, t.aspect_ratio AS aspect_ratio, COUNT(*) AS images,
                    SUM(g.charge_micros) AS micros
             FROM generations g CROSS JOIN tasks t ON t.id = g.task_id
             WHERE t.job_id = ?1 AND t.pass = ?2 AND (g.id > ?3 OR g.submitted_at >= ?4)
               AND g.charge_micros > 0
             GROUP BY t.model, t.aspect_ratio ORDER BY t.model, t.aspect_ratio",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .bind(after_generation)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// A pass's own net charges of one model at one aspect ratio, counted from a generation watermark.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SizedCharges {
    /// The model charged for.
    pub model: String,
    /// The images' aspect ratio (`16:9`): their size, and so their price per megapixel.
    pub aspect_ratio: String,
    /// Generations still charged (a refunded one no longer counts).
    pub images: i64,
    /// What the ledger charged for them, in micro-dollars.
    pub micros: i64,
}
