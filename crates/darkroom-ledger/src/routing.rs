//! What a routed pass reads and resets between its runs on different providers (`routing =
//! "cheapest"`, failover): the tasks still to be sent, a page at a time, and reservations a run
//! took but sent nothing for, given back so the next provider's run prices and reserves them anew.

use darkroom_jobs::Pass;

use crate::money::release_in;
use crate::scope::{bound, in_scope};
use crate::tasks::SELECT_TASKS;
use crate::{Ledger, Result, TaskRecord, TaskScope};

impl Ledger {
    /// A page of the pass's tasks that hold no create and may be sent by a run of `scope`:
    /// `pending`, `skipped` and `failed` tasks (the last two are reopened by the next run), not
    /// superseded, with an id above `after`, in id (file) order, at most `limit`.
    pub async fn unsent_tasks(
        &self,
        job_id: i64,
        pass: Pass,
        scope: Option<&TaskScope>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<TaskRecord>> {
        Ok(sqlx::query_as::<_, TaskRecord>(&format!(
            "{SELECT_TASKS} WHERE job_id = ?1 AND pass = ?2 AND state IN ('pending', 'skipped', 'failed')
               AND superseded = 0 AND id > ?3 AND {} ORDER BY id LIMIT ?4",
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

    /// Gives back the reservation of every task of the pass that is `reserved` with no create
    /// out (no generation in `intent`, `unknown`, `submitted` or `completed`): a run that stopped
    /// (a refusal, a kill) before sending it. The task is `pending` again, to be priced and
    /// reserved by the provider that will send it. Returns how many.
    pub async fn release_unsent(&self, job_id: i64, pass: Pass) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let stale: Vec<i64> = sqlx::query_scalar(
            "SELECT t.id FROM tasks t WHERE t.job_id = ?1 AND t.pass = ?2 AND t.state = 'reserved'
               AND NOT EXISTS (SELECT 1 FROM generations g WHERE g.task_id = t.id
                               AND g.state IN ('intent', 'unknown', 'submitted', 'completed'))",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .fetch_all(&mut *tx)
        .await?;
        for task in &stale {
            release_in(&mut tx, *task).await?;
            sqlx::query("UPDATE tasks SET state = 'pending' WHERE id = ?1")
                .bind(task)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(stale.len() as u64)
    }
}
