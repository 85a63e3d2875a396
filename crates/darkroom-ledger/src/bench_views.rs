//! What benchmark programs ask of the ledger beyond what a run does: fabricating the state a long
//! run leaves, so a measurement of resuming need not run the whole job first. Built only with the
//! `bench` feature (enabled by the dev-only test kit); darkroom itself never calls it.

use crate::{Ledger, Result};

impl Ledger {
    /// Marks the first `n` tasks of the ledger (by id, every job) `done`, as a run that got that
    /// far leaves them: no reservation, one attempt, an output path `out/TASK_KEY.jpg`, a
    /// generation id `g-ID` and a latency of 300 ms. No file is written and no money recorded.
    /// Returns how many tasks were changed.
    ///
    /// # Errors
    /// A database error.
    pub async fn mark_first_tasks_done(&self, n: u64) -> Result<u64> {
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let done = sqlx::query(
            "UPDATE tasks SET state = 'done', reserved_micros = 0, output_path = 'out/' || task_key || '.jpg',
                    generation_id = 'g-' || id, attempts = 1, finished_at = 0, latency_ms = 300
             WHERE id IN (SELECT id FROM tasks ORDER BY id LIMIT ?1)",
        )
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
