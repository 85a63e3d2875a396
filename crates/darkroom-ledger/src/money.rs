//! Money: reserving a task's price against its pass's budget, releasing it, turning it into a
//! charge, refunding a failed generation, and the money log (`spend`) every charge and refund
//! is written to.

use darkroom_jobs::{Money, Pass};

use crate::{now_ms, GenerationState, Ledger, Result, SpendKind, TaskState};

/// Whether a reservation was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The price is held against the pass's budget.
    Reserved,
    /// spent + reserved + price would exceed the budget: nothing was reserved.
    OverBudget,
    /// The task was no longer pending (another path took it): nothing was reserved.
    NotPending,
    /// The price would take a daily or monthly limit of the job's account or label past it
    /// (`spending.rs`): nothing was reserved. Carries that limit and what it has used.
    OverLimit(crate::LimitUsage),
}

/// What recording an accepted create charged, and where its pass stands after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charged {
    /// The charge recorded for the generation (the price in force).
    pub charge: Money,
    /// The pass's spend after it, every charge of the pass included.
    pub spent: Money,
    /// The pass's budget.
    pub budget: Money,
}

impl Ledger {
    /// Reserves the task's price against its pass's budget, in one transaction:
    /// spent + reserved + price ≤ budget, or nothing changes. The price is the task's table price,
    /// or the higher price the account was observed to charge for its model (`reprice`). The
    /// spending limits of the job's account and label are checked in the same transaction
    /// ([`Reservation::OverLimit`]): a reservation that would pass one is rolled back.
    pub async fn reserve(&self, task_id: i64) -> Result<Reservation> {
        self.reserve_at(task_id, now_ms()).await
    }

    /// [`Ledger::reserve`] at the instant `now` (Unix ms): the day and month the spending limits
    /// count in.
    ///
    /// Two statements when it reserves (a task's hot path): the pass's reservation grows only if
    /// the task is pending and its price fits, then the task takes it; a third reads the spending
    /// limits, with this price counted, for a job on an account or under a label. Only when
    /// nothing was reserved does a further read say why.
    pub async fn reserve_at(&self, task_id: i64, now: i64) -> Result<Reservation> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(&format!(
            "UPDATE job_passes SET reserved_micros = reserved_micros + p.price
             FROM (SELECT t.job_id, t.pass, {PRICE_IN_FORCE} AS price FROM tasks t
                   WHERE t.id = ?1 AND t.state = 'pending') AS p
             WHERE job_passes.job_id = p.job_id AND job_passes.pass = p.pass
               AND spent_micros + reserved_micros + p.price <= budget_micros"
        ))
        .bind(task_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            let state: Option<TaskState> = sqlx::query_scalar("SELECT state FROM tasks WHERE id = ?1")
                .bind(task_id)
                .fetch_optional(&mut *tx)
                .await?;
            return Ok(match state {
                Some(TaskState::Pending) => Reservation::OverBudget,
                _ => Reservation::NotPending,
            });
        }
        let (job_id, price, scoped): (i64, i64, bool) = sqlx::query_as(&format!(
            "UPDATE tasks AS t SET state = 'reserved', reserved_micros = {PRICE_IN_FORCE} WHERE id = ?1
             RETURNING job_id, reserved_micros,
                       (SELECT j.account IS NOT NULL OR j.label IS NOT NULL FROM jobs j WHERE j.id = job_id)"
        ))
        .bind(task_id)
        .fetch_one(&mut *tx)
        .await?;
        // A job on no account and under no label has no spending limit to read. Otherwise the
        // pass's reservation already counts this price, so the limits are read with it in and
        // nothing more is added; returning without commit rolls the reservation back.
        if scoped {
            if let Some(mut limit) = crate::spending::limit_exceeded(&mut tx, job_id, 0, now).await? {
                // What the limit had used before this task: the refused price is not part of it.
                limit.reserved = Money::from_micros(limit.reserved.micros() - price);
                return Ok(Reservation::OverLimit(limit));
            }
        }
        tx.commit().await?;
        Ok(Reservation::Reserved)
    }

    /// Gives the task's reservation back and returns it to `pending` (or to `state` if given:
    /// failed, blocked, skipped, cancelled, with its reason).
    pub async fn release(&self, task_id: i64, state: TaskState, reason: Option<&str>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        release_in(&mut tx, task_id).await?;
        let finished = state.is_terminal().then(now_ms);
        sqlx::query(
            "UPDATE tasks SET state = ?2, reason = ?3, finished_at = COALESCE(?4, finished_at) WHERE id = ?1",
        )
        .bind(task_id)
        .bind(state.as_str())
        .bind(reason)
        .bind(finished)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The upstream accepted the create: the reservation becomes a charge, logged. The charge is
    /// the price in force (the table's, or the higher observed one); any part of it the reservation
    /// did not cover (reserved before the price was raised) is unplanned spend. Returns the
    /// charge and the pass's spend and budget after it, so the caller needs no read of its own.
    pub async fn record_submitted(&self, generation: i64, upstream_id: &str) -> Result<Charged> {
        self.record_charged(generation, upstream_id, None).await
    }

    /// [`Ledger::record_submitted`], with what the charge is computed from written in the same
    /// statement (per image, the rate is the charge recorded: the price in force).
    pub async fn record_submitted_with_basis(
        &self,
        generation: i64,
        upstream_id: &str,
        basis: &crate::ChargeBasis,
    ) -> Result<Charged> {
        self.record_charged(generation, upstream_id, Some(basis)).await
    }

    async fn record_charged(
        &self,
        generation: i64,
        upstream_id: &str,
        basis: Option<&crate::ChargeBasis>,
    ) -> Result<Charged> {
        let mut tx = self.begin_write().await?;
        let now = now_ms();
        let (task_id, price): (i64, i64) = sqlx::query_as(&format!(
            "UPDATE generations SET upstream_id = ?2, state = 'submitted', submitted_at = ?3,
                    charge_micros = (SELECT {PRICE_IN_FORCE} FROM tasks t WHERE t.id = generations.task_id),
                    charge_basis = ?4, charge_units_millionths = ?5,
                    charge_rate_micros = CASE ?4 WHEN 'per-image'
                        THEN (SELECT {PRICE_IN_FORCE} FROM tasks t WHERE t.id = generations.task_id) ELSE ?6 END
             WHERE id = ?1 RETURNING task_id, charge_micros"
        ))
        .bind(generation)
        .bind(upstream_id)
        .bind(now)
        .bind(basis.map(crate::ChargeBasis::name))
        .bind(basis.map(|b| b.units_millionths))
        .bind(basis.map(|b| b.rate.micros()))
        .fetch_one(&mut *tx)
        .await?;
        // The charge takes the reservation's place; if the task held none (adopted after a crash
        // that lost it), the charge is still recorded: the upstream took the money. Read before
        // the task's reservation is cleared below.
        let (spent, budget): (i64, i64) = sqlx::query_as(
            "UPDATE job_passes SET reserved_micros = job_passes.reserved_micros - t.reserved_micros,
                    spent_micros = job_passes.spent_micros + ?2,
                    unplanned_micros = job_passes.unplanned_micros
                        + CASE WHEN t.reserved_micros > 0 THEN MAX(?2 - t.reserved_micros, 0) ELSE 0 END
             FROM tasks t WHERE t.id = ?1 AND job_passes.job_id = t.job_id AND job_passes.pass = t.pass
             RETURNING job_passes.spent_micros, job_passes.budget_micros",
        )
        .bind(task_id)
        .bind(price)
        .fetch_one(&mut *tx)
        .await?;
        let (job_id, pass): (i64, String) = sqlx::query_as(
            "UPDATE tasks SET state = 'submitted', reserved_micros = 0, cost_micros = cost_micros + ?2
             WHERE id = ?1 RETURNING job_id, pass",
        )
        .bind(task_id)
        .bind(price)
        .fetch_one(&mut *tx)
        .await?;
        insert_spend(
            &mut tx,
            job_id,
            &pass,
            task_id,
            generation,
            SpendKind::Charge,
            price,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Charged {
            charge: Money::from_micros(price),
            spent: Money::from_micros(spent),
            budget: Money::from_micros(budget),
        })
    }

    /// The generation ended `failed` upstream: its charge is refunded. The task goes to `next`
    /// (`Pending` to retry, `Blocked`/`Failed` to end) with the reason.
    pub async fn record_generation_failed(
        &self,
        generation: i64,
        reason: &str,
        next: TaskState,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let (task_id, state): (i64, GenerationState) =
            sqlx::query_as("SELECT task_id, state FROM generations WHERE id = ?1")
                .bind(generation)
                .fetch_one(&mut *tx)
                .await?;
        if state == GenerationState::Failed {
            return Ok(()); // already settled (a duplicate report)
        }
        let now = now_ms();
        fail_and_refund(&mut tx, generation, reason, now).await?;
        let finished = next.is_terminal().then_some(now);
        sqlx::query("UPDATE tasks SET state = ?2, reason = ?3, finished_at = ?4 WHERE id = ?1")
            .bind(task_id)
            .bind(next.as_str())
            .bind(reason)
            .bind(finished)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The sum of prices of the pass's pending tasks within `scope` (`None`: all): what finishing
    /// it would cost.
    pub async fn pending_cost(
        &self,
        job_id: i64,
        pass: Pass,
        scope: Option<&crate::TaskScope>,
    ) -> Result<Money> {
        let sum: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT SUM(price_micros) FROM tasks WHERE job_id = ?1 AND pass = ?2 AND state = 'pending' AND superseded = 0
             AND {}",
            crate::scope::in_scope(3)
        ))
        .bind(job_id)
        .bind(pass.as_str())
        .bind(crate::scope::bound(scope))
        .fetch_one(&self.pool)
        .await?;
        Ok(Money::from_micros(sum.unwrap_or(0)))
    }

    /// The sum of charges minus refunds in the money log of the whole ledger: what the upstream
    /// billed. Equals the sum of `spent` over every pass.
    pub async fn net_charges(&self) -> Result<Money> {
        let net: Option<i64> =
            sqlx::query_scalar("SELECT SUM(CASE kind WHEN 'charge' THEN micros ELSE -micros END) FROM spend")
                .fetch_one(&self.pool)
                .await?;
        Ok(Money::from_micros(net.unwrap_or(0)))
    }
}

/// A task's price per image as an expression over `tasks t`: its table price, or the higher price
/// its pass was re-priced to for its model once the account was observed to charge more.
pub(crate) const PRICE_IN_FORCE: &str =
    "MAX(t.price_micros, COALESCE((SELECT p.price_micros FROM pass_prices p
    WHERE p.job_id = t.job_id AND p.pass = t.pass AND p.model = t.model), 0))";

/// Marks a generation failed and refunds its charge, if it held one: the pass's spend, the task's
/// cost and a refund in the money log.
pub(crate) async fn fail_and_refund(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    generation: i64,
    reason: &str,
    now: i64,
) -> Result<()> {
    let (task_id, job_id, pass, charge): (i64, i64, String, i64) = sqlx::query_as(
        "SELECT t.id, t.job_id, t.pass, g.charge_micros FROM generations g JOIN tasks t ON t.id = g.task_id
         WHERE g.id = ?1",
    )
    .bind(generation)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE generations SET state = 'failed', failure_reason = ?2, charge_micros = 0, completed_at = ?3
         WHERE id = ?1",
    )
    .bind(generation)
    .bind(reason)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    if charge > 0 {
        sqlx::query("UPDATE job_passes SET spent_micros = spent_micros - ?3 WHERE job_id = ?1 AND pass = ?2")
            .bind(job_id)
            .bind(&pass)
            .bind(charge)
            .execute(&mut **tx)
            .await?;
        sqlx::query("UPDATE tasks SET cost_micros = cost_micros - ?2 WHERE id = ?1")
            .bind(task_id)
            .bind(charge)
            .execute(&mut **tx)
            .await?;
        insert_spend(
            tx,
            job_id,
            &pass,
            task_id,
            generation,
            SpendKind::Refund,
            charge,
            now,
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn release_in(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, task_id: i64) -> Result<()> {
    let (job_id, pass, reserved): (i64, String, i64) =
        sqlx::query_as("SELECT job_id, pass, reserved_micros FROM tasks WHERE id = ?1")
            .bind(task_id)
            .fetch_one(&mut **tx)
            .await?;
    if reserved > 0 {
        sqlx::query(
            "UPDATE job_passes SET reserved_micros = reserved_micros - ?3 WHERE job_id = ?1 AND pass = ?2",
        )
        .bind(job_id)
        .bind(&pass)
        .bind(reserved)
        .execute(&mut **tx)
        .await?;
        sqlx::query("UPDATE tasks SET reserved_micros = 0 WHERE id = ?1")
            .bind(task_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_spend(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    job_id: i64,
    pass: &str,
    task_id: i64,
    generation: i64,
    kind: SpendKind,
    micros: i64,
    at: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO spend (job_id, pass, task_id, generation_id, kind, micros, at, provider)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, (SELECT provider FROM generations WHERE id = ?4))",
    )
    .bind(job_id)
    .bind(pass)
    .bind(task_id)
    .bind(generation)
    .bind(kind.as_str())
    .bind(micros)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
