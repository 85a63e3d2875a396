//! What the account audit and unusable answers write: generations the ledger did not know (adopted
//! by a task that still needs an image, or charged to their task as extras), terminal answers that
//! could not be used (charge kept, the task goes on), and the audits' findings for the report.
//!
//! The engine decides which generation belongs to which task (it reads the upstream); this module
//! only records what it decided, each decision one transaction.

use darkroom_jobs::{Money, Pass};
use serde::Serialize;

use crate::money::{fail_and_refund, insert_spend, PRICE_IN_FORCE};
use crate::tasks::SELECT_TASKS;
use crate::{now_ms, Ledger, Result, SpendKind, TaskRecord, TaskState};

/// How a generation the ledger did not know stood upstream when it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundState {
    /// Queued, dreaming or an unknown state: charged; re-read by the next run's settlement of
    /// abandoned generations (a later failure is refunded).
    Unfinished,
    /// Completed: charged, paid and not kept.
    Completed,
    /// Failed upstream (and refunded there): charged and refunded, net zero.
    Failed(String),
}

/// One audit's findings, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AuditRecord {
    /// Unix milliseconds.
    pub at: i64,
    /// The pass audited (`preview` or `final`).
    pub pass: String,
    /// Generations created at or after this instant (Unix milliseconds) were read.
    pub since_ms: i64,
    /// Generations read from the account.
    pub read_count: i64,
    /// Found generations adopted by a task that still needed an image.
    pub adopted: i64,
    /// Found generations charged as extras to tasks that needed no more images.
    pub extra: i64,
    /// What those extras cost, in micro-dollars.
    pub extra_micros: i64,
    /// Generations matching no task of this ledger (not charged).
    pub foreign_count: i64,
    /// A JSON array of the first few of their ids.
    pub foreign_ids: String,
    /// Generations matching a create another run still has open: left to that run.
    pub left_count: i64,
    /// False when the read stopped early (page bound, or the list could not be read).
    pub complete: bool,
}

impl AuditRecord {
    /// Whether the audit recorded anything (an adoption or an extra charge).
    pub fn recorded_anything(&self) -> bool {
        self.adopted > 0 || self.extra > 0
    }
}

/// Task states in which a task still needs an image and has nothing in flight.
const NEEDS_IMAGE: &str = "('pending', 'skipped', 'failed')";

impl Ledger {
    /// A generation ended with an answer that cannot be used (completed without an image, an image
    /// URL that never serves an image): it is `unusable` with `reason`, its charge stays (the
    /// upstream keeps it), and the task goes to `next` (`Pending` to retry, `Failed` to end) with
    /// the reason.
    pub async fn record_unusable(&self, generation: i64, reason: &str, next: TaskState) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let now = now_ms();
        let task_id: i64 = sqlx::query_scalar(
            "UPDATE generations SET state = 'unusable', failure_reason = ?2, completed_at = ?3 WHERE id = ?1
             RETURNING task_id",
        )
        .bind(generation)
        .bind(reason)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
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

    /// The pass's tasks (not superseded) whose prompt is `prompt`: the candidates for a generation
    /// found upstream (the caller compares the whole request).
    pub async fn tasks_with_prompt(&self, job_id: i64, pass: Pass, prompt: &str) -> Result<Vec<TaskRecord>> {
        Ok(sqlx::query_as::<_, TaskRecord>(&format!(
            "{SELECT_TASKS} WHERE job_id = ?1 AND pass = ?2 AND prompt = ?3 AND superseded = 0 ORDER BY id"
        ))
        .bind(job_id)
        .bind(pass.as_str())
        .bind(prompt)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether any task of any job in this ledger has a create with this request fingerprint sent
    /// to `provider` whose outcome is still open (`intent` or `unknown`): a generation of that
    /// provider matching it may be that create's, and is left for its run to reconcile.
    pub async fn has_open_create(&self, request_fingerprint: &str, provider: &str) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM generations WHERE state IN ('intent', 'unknown') AND request_fingerprint = ?1
             AND provider = ?2 LIMIT 1",
        )
        .bind(request_fingerprint)
        .bind(provider)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// How many creates of this ledger with this request fingerprint, sent to `provider` at or
    /// after `since_ms` (Unix milliseconds), ended `not_created` (no answer was ever seen, so the
    /// upstream may have committed them late) beyond the generations audits have already booked
    /// for that request since then. A found generation is this ledger's only while this is above
    /// zero; otherwise it is another ledger's or tool's on the same account.
    pub async fn unaccounted_creates(
        &self,
        request_fingerprint: &str,
        provider: &str,
        since_ms: i64,
    ) -> Result<i64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(CASE WHEN state = 'not_created' THEN 1 END) - COUNT(CASE WHEN found_by_audit = 1 THEN 1 END)
             FROM generations WHERE request_fingerprint = ?1 AND provider = ?2 AND intent_at >= ?3",
        )
        .bind(request_fingerprint)
        .bind(provider)
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(count)
    }

    /// Adopts a generation found upstream for a task that still needs an image and has nothing in
    /// flight: a new `submitted` generation with its charge (unplanned: no reservation covered it,
    /// so it is recorded even past the budget), the task `submitted`, so it is polled and downloaded
    /// like any other, on `provider` (whose list it was found on). The charge is `price` when given
    /// (that provider's table price, for a task priced for another provider), else the task's price
    /// in force. Returns false (and changes nothing) if the task no longer qualifies or the id is
    /// already claimed.
    pub async fn adopt_found(
        &self,
        task_id: i64,
        upstream_id: &str,
        request_fingerprint: &str,
        provider: &str,
        price: Option<Money>,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let claimed: Option<i64> = sqlx::query_scalar("SELECT 1 FROM generations WHERE upstream_id = ?1")
            .bind(upstream_id)
            .fetch_optional(&mut *tx)
            .await?;
        if claimed.is_some() {
            return Ok(false);
        }
        let task: Option<(i64, String, i64, i64)> = sqlx::query_as(&format!(
            "SELECT job_id, pass, COALESCE(?2, {PRICE_IN_FORCE}), attempts FROM tasks t
             WHERE id = ?1 AND superseded = 0 AND reserved_micros = 0 AND state IN {NEEDS_IMAGE}"
        ))
        .bind(task_id)
        .bind(price.map(Money::micros))
        .fetch_optional(&mut *tx)
        .await?;
        let Some((job_id, pass, price, attempts)) = task else {
            return Ok(false);
        };
        let now = now_ms();
        let generation: i64 = sqlx::query_scalar(
            "INSERT INTO generations (task_id, attempt, upstream_id, intent_at, request_fingerprint, state,
                                      charge_micros, submitted_at, provider, found_by_audit)
             VALUES (?1, ?2, ?3, ?4, ?5, 'submitted', ?6, ?4, ?7, 1) RETURNING id",
        )
        .bind(task_id)
        .bind(attempts.max(1))
        .bind(upstream_id)
        .bind(now)
        .bind(request_fingerprint)
        .bind(price)
        .bind(provider)
        .fetch_one(&mut *tx)
        .await?;
        add_unplanned(&mut tx, job_id, &pass, price).await?;
        sqlx::query(
            "UPDATE tasks SET state = 'submitted', reason = NULL, finished_at = NULL, cost_micros = cost_micros + ?2,
                              provider = ?3
             WHERE id = ?1",
        )
        .bind(task_id)
        .bind(price)
        .bind(provider)
        .execute(&mut *tx)
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
        Ok(true)
    }

    /// Records a generation found upstream as an extra on `task_id` (which needed no more images):
    /// its charge at `price` when given (the table price of `provider`, whose list it was found on),
    /// else at the task's price in force, added to the pass's spend and to its unplanned part (even
    /// past the budget: the upstream took the money). A failed one is charged and refunded at once.
    /// Returns the net charge recorded, or `None` if the id was already claimed.
    pub async fn record_extra(
        &self,
        task_id: i64,
        upstream_id: &str,
        request_fingerprint: &str,
        found: &FoundState,
        provider: &str,
        price: Option<Money>,
    ) -> Result<Option<Money>> {
        let mut tx = self.begin_write().await?;
        let claimed: Option<i64> = sqlx::query_scalar("SELECT 1 FROM generations WHERE upstream_id = ?1")
            .bind(upstream_id)
            .fetch_optional(&mut *tx)
            .await?;
        if claimed.is_some() {
            return Ok(None);
        }
        let (job_id, pass, price, attempts): (i64, String, i64, i64) = sqlx::query_as(&format!(
            "SELECT job_id, pass, COALESCE(?2, {PRICE_IN_FORCE}), attempts FROM tasks t WHERE id = ?1"
        ))
        .bind(task_id)
        .bind(price.map(Money::micros))
        .fetch_one(&mut *tx)
        .await?;
        let now = now_ms();
        let state = match found {
            FoundState::Unfinished => "abandoned",
            FoundState::Completed | FoundState::Failed(_) => "extra",
        };
        let generation: i64 = sqlx::query_scalar(
            "INSERT INTO generations (task_id, attempt, upstream_id, intent_at, request_fingerprint, state,
                                      charge_micros, submitted_at, completed_at, provider, found_by_audit)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?4, CASE WHEN ?6 = 'extra' THEN ?4 END, ?8, 1) RETURNING id",
        )
        .bind(task_id)
        .bind(attempts.max(1))
        .bind(upstream_id)
        .bind(now)
        .bind(request_fingerprint)
        .bind(state)
        .bind(price)
        .bind(provider)
        .fetch_one(&mut *tx)
        .await?;
        add_unplanned(&mut tx, job_id, &pass, price).await?;
        sqlx::query("UPDATE tasks SET cost_micros = cost_micros + ?2 WHERE id = ?1")
            .bind(task_id)
            .bind(price)
            .execute(&mut *tx)
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
        let mut net = price;
        if let FoundState::Failed(reason) = found {
            fail_and_refund(&mut tx, generation, reason, now).await?;
            sqlx::query(
                "UPDATE job_passes SET unplanned_micros = MAX(0, unplanned_micros - ?3) WHERE job_id = ?1 AND pass = ?2",
            )
            .bind(job_id)
            .bind(&pass)
            .bind(price)
            .execute(&mut *tx)
            .await?;
            net = 0;
        }
        tx.commit().await?;
        Ok(Some(Money::from_micros(net)))
    }

    /// Stores an audit's findings for the report.
    pub async fn record_audit(&self, job_id: i64, audit: &AuditRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO audits (job_id, pass, at, since_ms, read_count, adopted, extra, extra_micros,
                                 foreign_count, foreign_ids, left_count, complete)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .bind(job_id)
        .bind(&audit.pass)
        .bind(audit.at)
        .bind(audit.since_ms)
        .bind(audit.read_count)
        .bind(audit.adopted)
        .bind(audit.extra)
        .bind(audit.extra_micros)
        .bind(audit.foreign_count)
        .bind(&audit.foreign_ids)
        .bind(audit.left_count)
        .bind(audit.complete)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The job's audits, newest first, at most `limit`.
    pub async fn audits(&self, job_id: i64, limit: i64) -> Result<Vec<AuditRecord>> {
        Ok(sqlx::query_as::<_, AuditRecord>(
            "SELECT at, pass, since_ms, read_count, adopted, extra, extra_micros, foreign_count, foreign_ids,
                    left_count, complete
             FROM audits WHERE job_id = ?1 ORDER BY id DESC LIMIT ?2",
        )
        .bind(job_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// When the pass's first create was intended (Unix milliseconds), if it has sent any: where an
    /// on-demand audit starts reading by default.
    pub async fn first_intent_at(&self, job_id: i64, pass: Pass) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(g.intent_at) FROM generations g JOIN tasks t ON t.id = g.task_id
             WHERE t.job_id = ?1 AND t.pass = ?2",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .fetch_one(&self.pool)
        .await?)
    }
}

/// Adds a charge no reservation covered to the pass: to its spend and to the unplanned part of it.
async fn add_unplanned(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    job_id: i64,
    pass: &str,
    micros: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE job_passes SET spent_micros = spent_micros + ?3, unplanned_micros = unplanned_micros + ?3
         WHERE job_id = ?1 AND pass = ?2",
    )
    .bind(job_id)
    .bind(pass)
    .bind(micros)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
