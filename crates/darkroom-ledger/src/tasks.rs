//! Task transitions: the scheduler's work lists and every change of a task's state that moves no
//! money (the ones that do are in `money`).

use darkroom_jobs::Pass;

use crate::scope::{bound, in_scope};
use crate::{now_ms, ImageContent, Ledger, Result, TaskRecord, TaskScope, TaskState};

impl Ledger {
    /// Up to `limit` pending tasks of the pass with an id above `after`, in file order.
    pub async fn pending_tasks(
        &self,
        job_id: i64,
        pass: Pass,
        after: i64,
        limit: i64,
    ) -> Result<Vec<TaskRecord>> {
        self.pending_tasks_in(job_id, pass, None, after, limit).await
    }

    /// [`Ledger::pending_tasks`] within `scope` (`None`: every pending task of the pass).
    pub async fn pending_tasks_in(
        &self,
        job_id: i64,
        pass: Pass,
        scope: Option<&TaskScope>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<TaskRecord>> {
        Ok(sqlx::query_as::<_, TaskRecord>(&format!(
            "{SELECT_TASKS} WHERE job_id = ?1 AND pass = ?2 AND state = 'pending' AND superseded = 0 AND id > ?3
             AND {} ORDER BY id LIMIT ?4",
            in_scope(5)
        ))
        .bind(job_id)
        .bind(pass.as_str())
        .bind(after)
        .bind(limit)
        .bind(bound(scope))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Tasks a previous run left between reserving and finishing: the resume work list.
    pub async fn unfinished_tasks(&self, job_id: i64, pass: Pass) -> Result<Vec<TaskRecord>> {
        Ok(sqlx::query_as::<_, TaskRecord>(&format!(
            "{SELECT_TASKS} WHERE job_id = ?1 AND pass = ?2 AND superseded = 0
             AND state IN ('reserved', 'submitting', 'submitted', 'downloading') ORDER BY id"
        ))
        .bind(job_id)
        .bind(pass.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    /// The task with this row id.
    ///
    /// Errors: [`LedgerError::Query`] when there is none.
    pub async fn task(&self, task_id: i64) -> Result<TaskRecord> {
        Ok(
            sqlx::query_as::<_, TaskRecord>(&format!("{SELECT_TASKS} WHERE id = ?1"))
                .bind(task_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Records the intent to send a create to `provider` (`luma`, `replicate`, `fal`) before it
    /// leaves: the task and the new generation name the provider, so whatever becomes of the create
    /// is settled against that provider. Returns the generation's row id. The task must hold its
    /// reservation.
    pub async fn record_intent(
        &self,
        task_id: i64,
        request_fingerprint: &str,
        provider: &str,
    ) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let id = insert_intent(&mut tx, task_id, request_fingerprint, provider, now_ms()).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The create's outcome is unknown (timeout after sending, reset, 5xx): the reservation stays,
    /// and the generation must be reconciled against the upstream's list before any re-send.
    pub async fn record_outcome_unknown(&self, generation: i64) -> Result<()> {
        sqlx::query(
            "UPDATE generations SET state = 'unknown' WHERE id = ?1 AND state IN ('intent', 'unknown')",
        )
        .bind(generation)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The create was certainly not accepted (refused before sending, 4xx, 429, or reconciliation
    /// found no match): the task keeps its reservation for the next attempt.
    /// `counts` says whether the attempt counts against the task's cap (a 429 does not).
    pub async fn record_not_created(&self, generation: i64, counts: bool) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE generations SET state = 'not_created' WHERE id = ?1")
            .bind(generation)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE tasks SET state = 'reserved', attempts = attempts - CASE WHEN ?2 THEN 0 ELSE 1 END
             WHERE id = (SELECT task_id FROM generations WHERE id = ?1)",
        )
        .bind(generation)
        .bind(counts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The generation completed upstream: its image is at `image_url`; the task is downloading.
    pub async fn record_completed(&self, generation: i64, image_url: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE generations SET state = 'completed', image_url = ?2, completed_at = ?3 WHERE id = ?1",
        )
        .bind(generation)
        .bind(image_url)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE tasks SET state = 'downloading' WHERE id = (SELECT task_id FROM generations WHERE id = ?1)",
        )
        .bind(generation)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The task's image is on disk (verified, synced, renamed): the task is done and this
    /// generation is the one it keeps. `content` is what was written (its hash and size); any
    /// damage recorded against the task's earlier file is cleared.
    pub async fn record_done(
        &self,
        generation: i64,
        output_path: &str,
        content: &ImageContent,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        mark_done(&mut tx, generation, output_path, content).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A task whose image came from the cache: done at no cost. `content` is what was copied (it
    /// hashed to the source's recorded hash).
    pub async fn record_cached(
        &self,
        task_id: i64,
        output_path: &str,
        from_generation: Option<&str>,
        content: &ImageContent,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE tasks SET state = 'done', cached = 1, reason = NULL, output_path = ?2, generation_id = ?3,
                    finished_at = ?4, latency_ms = 0, content_hash = ?5, content_bytes = ?6, damage = NULL
             WHERE id = ?1",
        )
        .bind(task_id)
        .bind(output_path)
        .bind(from_generation)
        .bind(now_ms())
        .bind(&content.hash)
        .bind(content.bytes)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every pending task of the pass within `scope` (`None`: all) ends as `state` (skipped for
    /// budget or deadline, cancelled).
    pub async fn end_pending(
        &self,
        job_id: i64,
        pass: Pass,
        scope: Option<&TaskScope>,
        state: TaskState,
        reason: &str,
    ) -> Result<u64> {
        Ok(sqlx::query(&format!(
            "UPDATE tasks SET state = ?3, reason = ?4, finished_at = ?5
             WHERE job_id = ?1 AND pass = ?2 AND state = 'pending' AND superseded = 0 AND {}",
            in_scope(6)
        ))
        .bind(job_id)
        .bind(pass.as_str())
        .bind(state.as_str())
        .bind(reason)
        .bind(now_ms())
        .bind(bound(scope))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Tasks within `scope` (`None`: all) that ended skipped (budget, deadline) go back to
    /// pending, so a resumed run with a raised budget takes them up again. Returns how many.
    pub async fn reopen_skipped(&self, job_id: i64, pass: Pass, scope: Option<&TaskScope>) -> Result<u64> {
        Ok(sqlx::query(&format!(
            "UPDATE tasks SET state = 'pending', reason = NULL, finished_at = NULL
             WHERE job_id = ?1 AND pass = ?2 AND state IN ('skipped', 'cancelled') AND superseded = 0 AND {}",
            in_scope(3)
        ))
        .bind(job_id)
        .bind(pass.as_str())
        .bind(bound(scope))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Failed (not blocked) tasks within `scope` (`None`: all) get another round of attempts on
    /// a new run.
    pub async fn reopen_failed(&self, job_id: i64, pass: Pass, scope: Option<&TaskScope>) -> Result<u64> {
        Ok(sqlx::query(&format!(
            "UPDATE tasks SET state = 'pending', reason = NULL, finished_at = NULL, attempts = 0
             WHERE job_id = ?1 AND pass = ?2 AND state = 'failed' AND superseded = 0 AND {}",
            in_scope(3)
        ))
        .bind(job_id)
        .bind(pass.as_str())
        .bind(bound(scope))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}

/// Every task column, over `tasks t`: what [`crate::TaskRow`] reads.
pub(crate) const SELECT_TASKS: &str = concat!("SELECT ", task_columns!(), " FROM tasks t");

/// `record_done` inside the caller's transaction (`record_done_checked` adds the image's quality
/// check to it). Returns the task's id.
pub(crate) async fn mark_done(
    tx: &mut sqlx::SqliteConnection,
    generation: i64,
    output_path: &str,
    content: &ImageContent,
) -> Result<i64> {
    let now = now_ms();
    let (task_id, upstream_id): (i64, Option<String>) =
        sqlx::query_as("UPDATE generations SET state = 'kept' WHERE id = ?1 RETURNING task_id, upstream_id")
            .bind(generation)
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query(
        "UPDATE tasks SET state = 'done', reason = NULL, output_path = ?2, generation_id = ?3, finished_at = ?4,
                latency_ms = ?4 - first_sent_at, content_hash = ?5, content_bytes = ?6, damage = NULL
         WHERE id = ?1",
    )
    .bind(task_id)
    .bind(output_path)
    .bind(upstream_id)
    .bind(now)
    .bind(&content.hash)
    .bind(content.bytes)
    .execute(&mut *tx)
    .await?;
    Ok(task_id)
}

/// Moves the task to `submitting` and inserts its intent row, both naming `provider`, inside the caller's transaction;
/// returns the generation's row id. `record_intent` and an account's permit (`accounts.rs`) share it.
pub(crate) async fn insert_intent(
    tx: &mut sqlx::SqliteConnection,
    task_id: i64,
    request_fingerprint: &str,
    provider: &str,
    now: i64,
) -> Result<i64> {
    let attempt: i64 = sqlx::query_scalar(
        "UPDATE tasks SET state = 'submitting', attempts = attempts + 1, provider = ?3,
                            first_sent_at = COALESCE(first_sent_at, ?2) WHERE id = ?1 RETURNING attempts",
    )
    .bind(task_id)
    .bind(now)
    .bind(provider)
    .fetch_one(&mut *tx)
    .await?;
    Ok(sqlx::query_scalar(
        "INSERT INTO generations (task_id, attempt, intent_at, request_fingerprint, provider)
         VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
    )
    .bind(task_id)
    .bind(attempt)
    .bind(now)
    .bind(request_fingerprint)
    .bind(provider)
    .fetch_one(&mut *tx)
    .await?)
}
