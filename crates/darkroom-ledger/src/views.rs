//! Read views: counts of a pass by state, the outputs' result pages, the manifest's metadata keys.

use darkroom_jobs::Pass;

use crate::{Counts, Ledger, Result, ResultRecord, TaskState};

impl Ledger {
    /// Counts per state, spend and reservations of the pass.
    pub async fn counts(&self, job_id: i64, pass: Pass) -> Result<Counts> {
        let rows: Vec<(TaskState, i64, i64)> = sqlx::query_as(
            "SELECT state, COUNT(*), SUM(cached) FROM tasks WHERE job_id = ?1 AND pass = ?2 AND superseded = 0
             GROUP BY state",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut counts = Counts::default();
        for (state, n, cached) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            counts.total += n;
            match state {
                TaskState::Done => {
                    counts.done += n;
                    counts.cached += u64::try_from(cached).unwrap_or(0);
                }
                TaskState::Failed => counts.failed += n,
                TaskState::Blocked => counts.blocked += n,
                TaskState::Skipped => counts.skipped += n,
                TaskState::Cancelled => counts.cancelled += n,
                TaskState::Pending => counts.pending += n,
                TaskState::Reserved
                | TaskState::Submitting
                | TaskState::Submitted
                | TaskState::Downloading => counts.in_flight += n,
            }
        }
        let attempts: Option<i64> = sqlx::query_scalar(
            "SELECT SUM(attempts) FROM tasks WHERE job_id = ?1 AND pass = ?2 AND superseded = 0",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .fetch_one(&self.pool)
        .await?;
        counts.attempts = u64::try_from(attempts.unwrap_or(0)).unwrap_or(0);
        Ok(counts)
    }

    /// The metadata keys used by any task of the job (both passes): the manifest's extra columns.
    pub async fn metadata_keys(&self, job_id: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT m.key FROM tasks t, json_each(t.metadata_json) m
             WHERE t.job_id = ?1 AND t.superseded = 0 ORDER BY m.key",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Finished or ended tasks of the pass, a page at a time, for the outputs.
    pub async fn results(
        &self,
        job_id: i64,
        pass: Pass,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ResultRecord>> {
        Ok(sqlx::query_as::<_, ResultRecord>(&format!(
            "{SELECT_RESULTS} WHERE job_id = ?1 AND pass = ?2 AND superseded = 0 AND id > ?3
                 ORDER BY id LIMIT ?4"
        ))
        .bind(job_id)
        .bind(pass.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

const SELECT_RESULTS: &str = concat!(
    "SELECT ",
    task_columns!(),
    ", (SELECT p.task_key FROM tasks p WHERE p.id = t.preview_task_id) AS preview_key,
       (SELECT s.pass || '/' || s.task_key FROM tasks s WHERE s.id = t.source_task_id) AS source_key
     FROM tasks t"
);
