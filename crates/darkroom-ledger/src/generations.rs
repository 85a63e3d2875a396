//! Generations: the upstream creates a task made, the ones that may still hold money or an image,
//! and abandoned ones settled after the fact.

use darkroom_jobs::Pass;

use crate::money::fail_and_refund;
use crate::{now_ms, GenerationRecord, GenerationState, Ledger, Result};

impl Ledger {
    /// The task's generations that may still hold money or an image: the last intent and
    /// anything submitted or completed and not yet settled.
    pub async fn open_generations(&self, task_id: i64) -> Result<Vec<GenerationRecord>> {
        Ok(sqlx::query_as::<_, GenerationRecord>(&format!(
            "{GENERATION_COLUMNS} WHERE task_id = ?1 AND state IN ('intent', 'unknown', 'submitted', 'completed')
             ORDER BY id"
        ))
        .bind(task_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether this upstream id is already claimed by a generation in the ledger.
    pub async fn is_claimed(&self, upstream_id: &str) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM generations WHERE upstream_id = ?1")
            .bind(upstream_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// A generation that will not be kept (the task ended another way): abandoned, its charge
    /// stays (the upstream kept the money).
    pub async fn abandon_generation(&self, generation: i64) -> Result<()> {
        sqlx::query("UPDATE generations SET state = 'abandoned' WHERE id = ?1")
            .bind(generation)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Abandoned generations of the pass made by `provider` that still hold a charge: the upstream
    /// may yet fail them (and refund) or finish them. `(generation, upstream id)`, oldest first, at
    /// most `limit`.
    pub async fn charged_abandoned(
        &self,
        job_id: i64,
        pass: Pass,
        provider: &str,
        limit: i64,
    ) -> Result<Vec<(i64, String)>> {
        Ok(sqlx::query_as(
            "SELECT g.id, g.upstream_id FROM generations g JOIN tasks t ON t.id = g.task_id
             WHERE t.job_id = ?1 AND t.pass = ?2 AND g.state = 'abandoned' AND g.charge_micros > 0
               AND g.upstream_id IS NOT NULL AND g.provider = ?4
             ORDER BY g.id LIMIT ?3",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .bind(limit)
        .bind(provider)
        .fetch_all(&self.pool)
        .await?)
    }

    /// An abandoned generation ended upstream after all. `Some(reason)`: it failed and the upstream
    /// refunded it, so the ledger refunds it too (the task is not touched: it went on without it).
    /// `None`: it completed; its charge stays, and it is no longer checked (`extra`).
    pub async fn settle_abandoned(&self, generation: i64, failed: Option<&str>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let state: GenerationState = sqlx::query_scalar("SELECT state FROM generations WHERE id = ?1")
            .bind(generation)
            .fetch_one(&mut *tx)
            .await?;
        if state != GenerationState::Abandoned {
            return Ok(());
        }
        let now = now_ms();
        let Some(reason) = failed else {
            sqlx::query("UPDATE generations SET state = 'extra', completed_at = ?2 WHERE id = ?1")
                .bind(generation)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(());
        };
        fail_and_refund(&mut tx, generation, reason, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every upstream generation in the ledger: (upstream id, state, net charge in micro-dollars).
    /// For audits: a charge the upstream kept must belong to a kept (or abandoned) generation here.
    pub async fn upstream_generations(&self) -> Result<Vec<(String, GenerationState, i64)>> {
        Ok(sqlx::query_as(
            "SELECT upstream_id, state, charge_micros FROM generations WHERE upstream_id IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

const GENERATION_COLUMNS: &str = "SELECT id, task_id, attempt, upstream_id, intent_at, request_fingerprint,
    state, failure_reason, charge_micros, image_url, provider, submitted_at FROM generations";
