//! What the review page reads at scale: a narrow version of every task (enough to tell that a
//! tile changed without reading it whole), the tiles of chosen tasks, their quality-check flags,
//! and the one image a thumbnail or the large view asks for. A page of 50,000 images polls
//! [`Ledger::task_versions`] and reads only the tiles whose version moved.

use darkroom_jobs::Pass;

use crate::{Ledger, Result, StoredFlag, TaskState, TileRecord};

/// What tells the review page that a task's tile changed: its state, what it cost, its attempts
/// and how many quality-check flags it carries. A tile whose version is unchanged shows the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct TaskVersion {
    /// The task's row id.
    pub id: i64,
    /// Where the task stands.
    pub state: TaskState,
    /// What the ledger counted for it, net of refunds, micro-dollars.
    pub cost_micros: i64,
    /// Creates sent for it that count against its cap.
    pub attempts: i64,
    /// Quality-check flags on its kept image (a duplicate may be flagged after the task is done).
    pub flags: i64,
}

/// The tiles' query: every task column and the kept generation's URL (as `Ledger::tiles`).
const SELECT_TILES: &str = concat!(
    "SELECT ",
    task_columns!(),
    ", (SELECT g.image_url FROM generations g WHERE g.task_id = t.id AND g.image_url IS NOT NULL
       AND g.state IN ('kept', 'completed') ORDER BY g.id DESC LIMIT 1) AS image_url
    FROM tasks t"
);

/// Ids bound as one JSON array (`json_each`), so a statement takes any number of them.
fn id_list(ids: &[i64]) -> String {
    let listed: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!("[{}]", listed.join(","))
}

impl Ledger {
    /// The version of every current task of the job (every pass; superseded and cancelled tasks
    /// left out), by id. One pass over the tasks and the flags' primary key, no join of
    /// generations: what a poll of the review page costs.
    ///
    /// # Errors
    /// A database error; a stored state this release does not know (`LedgerError::BadValue`).
    pub async fn task_versions(&self, job_id: i64) -> Result<Vec<TaskVersion>> {
        Ok(sqlx::query_as::<_, TaskVersion>(
            "SELECT t.id, t.state, t.cost_micros, t.attempts,
                    (SELECT COUNT(*) FROM qc_flags f WHERE f.task_id = t.id) AS flags
             FROM tasks t WHERE t.job_id = ?1 AND t.superseded = 0 AND t.state != 'cancelled'
             ORDER BY t.id",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The tiles of the job's tasks with these ids (any pass), in id order; ids of other jobs are
    /// left out.
    ///
    /// # Errors
    /// A database error.
    pub async fn tiles_by_id(&self, job_id: i64, ids: &[i64]) -> Result<Vec<TileRecord>> {
        Ok(sqlx::query_as::<_, TileRecord>(&format!(
            "{SELECT_TILES} WHERE t.job_id = ?1 AND t.id IN (SELECT value FROM json_each(?2)) ORDER BY t.id"
        ))
        .bind(job_id)
        .bind(id_list(ids))
        .fetch_all(&self.pool)
        .await?)
    }

    /// The quality-check flags on the job's done tasks with these ids, in task then kind order.
    ///
    /// # Errors
    /// A database error.
    pub async fn qc_flags_by_id(&self, job_id: i64, ids: &[i64]) -> Result<Vec<StoredFlag>> {
        Ok(sqlx::query_as::<_, StoredFlag>(
            "SELECT f.task_id, f.kind, f.measured, f.threshold, f.detail, o.task_key AS duplicate_of
             FROM qc_flags f JOIN tasks t ON t.id = f.task_id LEFT JOIN tasks o ON o.id = f.other_task_id
             WHERE t.job_id = ?1 AND t.state = 'done' AND f.task_id IN (SELECT value FROM json_each(?2))
             ORDER BY f.task_id, f.kind",
        )
        .bind(job_id)
        .bind(id_list(ids))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Where the image of the job's done task `key` of `pass` is kept, through the tasks'
    /// `(job, pass, key)` index: `None` when the job has no such done task.
    ///
    /// # Errors
    /// A database error.
    pub async fn done_image(&self, job_id: i64, pass: Pass, key: &str) -> Result<Option<String>> {
        let path: Option<Option<String>> = sqlx::query_scalar(
            "SELECT output_path FROM tasks
             WHERE job_id = ?1 AND pass = ?2 AND task_key = ?3 AND superseded = 0 AND state = 'done'
             ORDER BY id DESC LIMIT 1",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(path.flatten())
    }
}
