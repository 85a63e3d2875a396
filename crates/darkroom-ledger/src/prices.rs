//! Observed prices: the account's balance readings, what each run observed the account to charge per
//! image beside what the price table said, and the price a pass reserves and charges once the
//! account was seen to charge more than the table (`pass_prices`, migration 0007).
//!
//! The engine measures (it reads the balance through the provider's client); this module only
//! records, and applies a higher price: later reservations and charges use it, and the pass's
//! earlier charges are corrected up to it as unplanned spend (real money, recorded even past the
//! budget), so the budget check counts them at what the account really charged.

use darkroom_jobs::{Money, Pass};

use crate::money::insert_spend;
use crate::SpendKind;
use crate::{now_ms, Ledger, Result};

mod sized;

pub use sized::SizedCharges;

/// One reading of the account's balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceReading {
    /// Unix milliseconds.
    pub at: i64,
    /// The balance in micro-dollars.
    pub balance_micros: i64,
    /// The smallest step the provider reports the balance in, in micro-dollars (Luma: a cent,
    /// 10,000, unless the value shows finer). Differences within it are noise.
    pub resolution_micros: i64,
}

/// A pass's own net charges of one model, counted from a generation watermark.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ModelCharges {
    /// The model charged for.
    pub model: String,
    /// Generations still charged (a refunded one no longer counts).
    pub images: i64,
    /// What the ledger charged for them, in micro-dollars.
    pub micros: i64,
}

/// What a run observed one model to cost on the account, per image (or per megapixel, `per`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct PriceObservation {
    /// The API's base URL: the account's provider (the key is never stored).
    pub base_url: String,
    /// `None` for a `prices --check` probe.
    pub job_id: Option<i64>,
    /// Its pass (`preview` or `final`), when the run had one.
    pub pass: Option<String>,
    /// When the run (or probe) began, Unix milliseconds: one row per run and model.
    pub run_started_at: i64,
    /// The model observed.
    pub model: String,
    /// The price table's price, micro-dollars.
    pub table_micros: i64,
    /// The price the account was observed to charge per image, micro-dollars.
    pub observed_micros: i64,
    /// How many of our images the observation rests on.
    pub images: i64,
    /// The balance drop attributed to them, micro-dollars.
    pub drop_micros: i64,
    /// Unix milliseconds of the latest observation.
    pub observed_at: i64,
    /// What `table_micros` and `observed_micros` are the price of: `image`, or `megapixel` when
    /// the images were charged by fal (read back from the ledger; not written by
    /// [`Ledger::record_observation`], which takes the unit of the table it was given).
    #[sqlx(default)]
    pub per: String,
}

impl PriceObservation {
    /// The price table's price per image.
    pub fn table(&self) -> Money {
        Money::from_micros(self.table_micros)
    }
    /// The price per image the account was observed to charge.
    pub fn observed(&self) -> Money {
        Money::from_micros(self.observed_micros)
    }
}

/// What applying a higher observed price changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Repriced {
    /// Earlier charges of the pass raised to the new price.
    pub corrected_images: i64,
    /// What those corrections added to the pass's spend (all of it unplanned).
    pub corrected: Money,
    /// Reservations still waiting to be charged that were raised to the new price (as far as the
    /// budget allowed; the rest are charged at the new price as unplanned spend).
    pub topped_up: i64,
}

/// The observations' columns, and what their prices are per: `megapixel` when the pass's images of
/// that model were charged by fal in that run (fal's table is per megapixel), else `image`.
const OBSERVATION_COLUMNS: &str = "SELECT o.base_url, o.job_id, o.pass, o.run_started_at, o.model,
    o.table_micros, o.observed_micros, o.images, o.drop_micros, o.observed_at,
    COALESCE((SELECT 'megapixel' FROM generations g JOIN tasks t ON t.id = g.task_id
              WHERE t.job_id = o.job_id AND t.pass = o.pass AND t.model = o.model AND g.provider = 'fal'
                AND g.submitted_at >= o.run_started_at LIMIT 1), 'image') AS per
    FROM price_observations o";

impl Ledger {
    /// Records a balance reading (`job` is `None` for a probe outside any job).
    pub async fn record_balance(
        &self,
        base_url: &str,
        job: Option<(i64, Pass)>,
        reading: BalanceReading,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO balance_readings (base_url, job_id, pass, at, balance_micros, resolution_micros)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(base_url)
        .bind(job.map(|(id, _)| id))
        .bind(job.map(|(_, pass)| pass.as_str()))
        .bind(reading.at)
        .bind(reading.balance_micros)
        .bind(reading.resolution_micros.max(1))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The highest generation row id so far: a watermark for "charges made after this point".
    pub async fn generation_watermark(&self) -> Result<i64> {
        let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM generations")
            .fetch_one(&self.pool)
            .await?;
        Ok(id.unwrap_or(0))
    }

    /// The pass's generations that still hold a charge, per model, made after `after_generation`
    /// or recorded as charged since `since_ms` (a create of an earlier run adopted in this one).
    pub async fn charges_since(
        &self,
        job_id: i64,
        pass: Pass,
        after_generation: i64,
        since_ms: i64,
    ) -> Result<Vec<ModelCharges>> {
        Ok(sqlx::query_as(
            // `CROSS JOIN` keeps SQLite reading the run's generations first (a rowid range and
            // `generations_by_submitted`, migration 0014), never every task of the pass.
            "SELECT t.model AS model, COUNT(*) AS images, SUM(g.charge_micros) AS micros
             FROM generations g CROSS JOIN tasks t ON t.id = g.task_id
             WHERE t.job_id = ?1 AND t.pass = ?2 AND (g.id > ?3 OR g.submitted_at >= ?4)
               AND g.charge_micros > 0
             GROUP BY t.model ORDER BY t.model",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .bind(after_generation)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Creates of the pass whose outcome is not yet known (`intent` or `unknown`): the upstream may
    /// have charged them while the ledger has no charge yet, so a balance reading can't be
    /// attributed until they are settled.
    pub async fn unsettled_creates(&self, job_id: i64, pass: Pass) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM generations g JOIN tasks t ON t.id = g.task_id
             WHERE t.job_id = ?1 AND t.pass = ?2 AND g.state IN ('intent', 'unknown')",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .fetch_one(&self.pool)
        .await?)
    }

    /// Refunds logged since `since_ms` for the pass's generations up to `up_to_generation`: money
    /// the account gave back for charges made before a watermark (they raise the balance).
    pub async fn refunds_before(
        &self,
        job_id: i64,
        pass: Pass,
        up_to_generation: i64,
        since_ms: i64,
    ) -> Result<Money> {
        let sum: Option<i64> = sqlx::query_scalar(
            "SELECT SUM(micros) FROM spend WHERE job_id = ?1 AND pass = ?2 AND kind = 'refund'
               AND generation_id <= ?3 AND at >= ?4",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .bind(up_to_generation)
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(Money::from_micros(sum.unwrap_or(0)))
    }

    /// Records (or updates) a run's observation of one model's price.
    pub async fn record_observation(&self, observation: &PriceObservation) -> Result<()> {
        sqlx::query(
            "INSERT INTO price_observations (base_url, job_id, pass, run_started_at, model, table_micros,
                                             observed_micros, images, drop_micros, observed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (base_url, job_id, pass, run_started_at, model) DO UPDATE SET
                 table_micros = excluded.table_micros, observed_micros = excluded.observed_micros,
                 images = excluded.images, drop_micros = excluded.drop_micros, observed_at = excluded.observed_at",
        )
        .bind(&observation.base_url)
        .bind(observation.job_id)
        .bind(&observation.pass)
        .bind(observation.run_started_at)
        .bind(&observation.model)
        .bind(observation.table_micros)
        .bind(observation.observed_micros)
        .bind(observation.images)
        .bind(observation.drop_micros)
        .bind(observation.observed_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The pass's observations, newest run first, then by model.
    pub async fn observations(&self, job_id: i64, pass: Pass) -> Result<Vec<PriceObservation>> {
        Ok(sqlx::query_as(&format!(
            "{OBSERVATION_COLUMNS} WHERE o.job_id = ?1 AND o.pass = ?2 ORDER BY o.run_started_at DESC, o.model"
        ))
        .bind(job_id)
        .bind(pass.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    /// The latest observation of each model on the account at `base_url` (runs and probes alike).
    pub async fn last_observed(&self, base_url: &str) -> Result<Vec<PriceObservation>> {
        Ok(sqlx::query_as(&format!(
            "{OBSERVATION_COLUMNS} WHERE o.base_url = ?1 AND o.observed_at = (
                 SELECT MAX(observed_at) FROM price_observations p WHERE p.base_url = o.base_url AND p.model = o.model)
             GROUP BY o.model ORDER BY o.model"
        ))
        .bind(base_url)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The price the pass reserves and charges per image of `model` when the account was observed
    /// to charge more than the table; `None` while the table's price holds.
    pub async fn pass_price(&self, job_id: i64, pass: Pass, model: &str) -> Result<Option<Money>> {
        let price: Option<i64> = sqlx::query_scalar(
            "SELECT price_micros FROM pass_prices WHERE job_id = ?1 AND pass = ?2 AND model = ?3",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .bind(model)
        .fetch_optional(&self.pool)
        .await?;
        Ok(price.map(Money::from_micros))
    }

    /// The account was observed to charge `price` per image of `model`, more than the pass has
    /// been charging: from now on the pass reserves and charges `price` (never lowered), and, in
    /// one transaction, every charge of the pass for that model below it is corrected up to it
    /// (recorded as unplanned spend and logged as a charge, even past the budget: it is real money),
    /// and reservations waiting to be charged are raised to it where the budget allows.
    pub async fn reprice(&self, job_id: i64, pass: Pass, model: &str, price: Money) -> Result<Repriced> {
        let mut tx = self.begin_write().await?;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO pass_prices (job_id, pass, model, price_micros, set_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (job_id, pass, model) DO UPDATE SET
                 price_micros = MAX(price_micros, excluded.price_micros), set_at = excluded.set_at",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .bind(model)
        .bind(price.micros())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let price: i64 = sqlx::query_scalar(
            "SELECT price_micros FROM pass_prices WHERE job_id = ?1 AND pass = ?2 AND model = ?3",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .bind(model)
        .fetch_one(&mut *tx)
        .await?;
        let mut repriced = correct_charges(&mut tx, job_id, pass, (model, None), price, now).await?;
        repriced.topped_up = top_up_reservations(&mut tx, job_id, pass, (model, None), price).await?;
        tx.commit().await?;
        Ok(repriced)
    }
}

/// The tasks a correction applies to: a model, and only one aspect ratio of it when given.
type Scope<'a> = (&'a str, Option<&'a str>);

/// Corrects every charge of the pass for `model` below `price` up to it: the generation's charge,
/// its task's cost, a charge in the money log for the difference, and the pass's spend as
/// unplanned (real money, recorded even past the budget). Returns what was corrected.
async fn correct_charges(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    job_id: i64,
    pass: Pass,
    (model, ratio): Scope<'_>,
    price: i64,
    now: i64,
) -> Result<Repriced> {
    let low: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT g.id, g.task_id, g.charge_micros FROM generations g JOIN tasks t ON t.id = g.task_id
         WHERE t.job_id = ?1 AND t.pass = ?2 AND t.model = ?3 AND g.charge_micros > 0 AND g.charge_micros < ?4
           AND (?5 IS NULL OR t.aspect_ratio = ?5)",
    )
    .bind(job_id)
    .bind(pass.as_str())
    .bind(model)
    .bind(price)
    .bind(ratio)
    .fetch_all(&mut **tx)
    .await?;
    let mut repriced = Repriced::default();
    for (generation, task_id, charge) in low {
        let extra = price - charge;
        sqlx::query("UPDATE generations SET charge_micros = ?2 WHERE id = ?1")
            .bind(generation)
            .bind(price)
            .execute(&mut **tx)
            .await?;
        sqlx::query("UPDATE tasks SET cost_micros = cost_micros + ?2 WHERE id = ?1")
            .bind(task_id)
            .bind(extra)
            .execute(&mut **tx)
            .await?;
        insert_spend(
            tx,
            job_id,
            pass.as_str(),
            task_id,
            generation,
            SpendKind::Charge,
            extra,
            now,
        )
        .await?;
        repriced.corrected_images += 1;
        repriced.corrected += Money::from_micros(extra);
    }
    if repriced.corrected > Money::ZERO {
        sqlx::query(
            "UPDATE job_passes SET spent_micros = spent_micros + ?3, unplanned_micros = unplanned_micros + ?3
             WHERE job_id = ?1 AND pass = ?2",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .bind(repriced.corrected.micros())
        .execute(&mut **tx)
        .await?;
    }
    Ok(repriced)
}

/// Raises the reservations of the pass's tasks of `model` waiting to be charged below `price` up
/// to it, each where the budget allows. Returns how many were raised.
async fn top_up_reservations(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    job_id: i64,
    pass: Pass,
    (model, ratio): Scope<'_>,
    price: i64,
) -> Result<i64> {
    let mut topped_up = 0;
    let waiting: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT id, reserved_micros FROM tasks
         WHERE job_id = ?1 AND pass = ?2 AND model = ?3 AND reserved_micros > 0 AND reserved_micros < ?4
           AND (?5 IS NULL OR aspect_ratio = ?5)",
    )
    .bind(job_id)
    .bind(pass.as_str())
    .bind(model)
    .bind(price)
    .bind(ratio)
    .fetch_all(&mut **tx)
    .await?;
    for (task_id, reserved) in waiting {
        let extra = price - reserved;
        let fits = sqlx::query(
            "UPDATE job_passes SET reserved_micros = reserved_micros + ?3
             WHERE job_id = ?1 AND pass = ?2 AND spent_micros + reserved_micros + ?3 <= budget_micros",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .bind(extra)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if fits == 0 {
            continue;
        }
        sqlx::query("UPDATE tasks SET reserved_micros = ?2 WHERE id = ?1")
            .bind(task_id)
            .bind(price)
            .execute(&mut **tx)
            .await?;
        topped_up += 1;
    }
    Ok(topped_up)
}
