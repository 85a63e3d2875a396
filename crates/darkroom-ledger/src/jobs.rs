//! Jobs and their passes: the job row, each pass's budget, deadline and status.

use darkroom_jobs::{Money, Pass};
use sqlx::Row as _;

use crate::{now_ms, JobRecord, Ledger, LedgerError, PassRecord, PassStatus, Result};

impl Ledger {
    /// Creates the job, or updates its file path; returns its id.
    ///
    /// `file_fingerprint` is the job file's BLAKE3 hash (hex) when the caller has it; an empty one
    /// keeps what is recorded. Loading records the hash of the file it read
    /// ([`Ledger::record_file_fingerprint`]), so callers that load pass `""` here.
    pub async fn upsert_job(&self, name: &str, file_path: &str, file_fingerprint: &str) -> Result<i64> {
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO jobs (name, file_path, file_fingerprint, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (name) DO UPDATE SET file_path = ?2, updated_at = ?4,
                file_fingerprint = CASE WHEN ?3 = '' THEN file_fingerprint ELSE ?3 END
             RETURNING id",
        )
        .bind(name)
        .bind(file_path)
        .bind(file_fingerprint)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.get(0))
    }

    /// Removes a job that has never had a task: its row, its passes' budgets and their prices. A
    /// job whose file could not be read, or had an invalid row, on its first run is forgotten this
    /// way, so it does not stay listed by `darkroom status` as a job that exists. A job with any
    /// task (in any pass) is left as it is. Returns whether the job was removed.
    pub async fn forget_job_without_tasks(&self, job_id: i64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let has_tasks: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tasks WHERE job_id = ?1)")
            .bind(job_id)
            .fetch_one(&mut *tx)
            .await?;
        if has_tasks {
            return Ok(false);
        }
        for sql in [
            "DELETE FROM pass_prices WHERE job_id = ?1",
            "DELETE FROM job_passes WHERE job_id = ?1",
            "DELETE FROM jobs WHERE id = ?1",
        ] {
            sqlx::query(sql).bind(job_id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Records the BLAKE3 hash (hex) of the job file last read for the job.
    pub async fn record_file_fingerprint(&self, job_id: i64, file_fingerprint: &str) -> Result<()> {
        sqlx::query("UPDATE jobs SET file_fingerprint = ?2 WHERE id = ?1")
            .bind(job_id)
            .bind(file_fingerprint)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The job named `name`.
    ///
    /// Errors: [`LedgerError::NoSuchJob`] when the ledger never recorded it.
    pub async fn job(&self, name: &str) -> Result<JobRecord> {
        sqlx::query_as::<_, JobRecord>(
            "SELECT id, name, file_path, file_fingerprint FROM jobs WHERE name = ?1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| LedgerError::NoSuchJob(name.to_string()))
    }

    /// Every job of the ledger, the most recently updated first.
    pub async fn jobs(&self) -> Result<Vec<JobRecord>> {
        Ok(sqlx::query_as::<_, JobRecord>(
            "SELECT id, name, file_path, file_fingerprint FROM jobs ORDER BY updated_at DESC",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The pass's budget record, if the pass was ever started.
    pub async fn pass(&self, job_id: i64, pass: Pass) -> Result<Option<PassRecord>> {
        Ok(sqlx::query_as::<_, PassRecord>(
            "SELECT job_id, pass, budget_micros, spent_micros, reserved_micros, status, loaded_fingerprint,
                    started_at, finished_at, deadline_at, unplanned_micros
             FROM job_passes WHERE job_id = ?1 AND pass = ?2",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Sets the pass's budget (creating the pass). Lowering a budget below what is already spent
    /// or reserved is refused.
    pub async fn set_budget(&self, job_id: i64, pass: Pass, budget: Money) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let current: Option<(i64, i64)> = sqlx::query_as(
            "SELECT spent_micros + reserved_micros, budget_micros FROM job_passes WHERE job_id = ?1 AND pass = ?2",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((committed, old_budget)) = current {
            // Unplanned charges may already have taken spend past the budget: keeping or raising the
            // budget is always allowed; lowering it below what is spent or reserved is not.
            if committed > budget.micros() && budget.micros() < old_budget {
                return Err(LedgerError::BudgetBelowSpend {
                    budget,
                    committed: Money::from_micros(committed),
                });
            }
        }
        sqlx::query(
            "INSERT INTO job_passes (job_id, pass, budget_micros, started_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (job_id, pass) DO UPDATE SET budget_micros = ?3",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .bind(budget.micros())
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets (or clears) the pass's deadline, in Unix milliseconds.
    pub async fn set_deadline(&self, job_id: i64, pass: Pass, deadline_ms: Option<i64>) -> Result<()> {
        sqlx::query("UPDATE job_passes SET deadline_at = ?3 WHERE job_id = ?1 AND pass = ?2")
            .bind(job_id)
            .bind(pass.as_str())
            .bind(deadline_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records how the pass's last run ended; a status that finishes the pass
    /// ([`PassStatus::is_finished`]) also stamps its `finished_at`.
    pub async fn set_pass_status(&self, job_id: i64, pass: Pass, status: PassStatus) -> Result<()> {
        let finished = status.is_finished().then(now_ms);
        sqlx::query("UPDATE job_passes SET status = ?3, finished_at = ?4 WHERE job_id = ?1 AND pass = ?2")
            .bind(job_id)
            .bind(pass.as_str())
            .bind(status.as_str())
            .bind(finished)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
