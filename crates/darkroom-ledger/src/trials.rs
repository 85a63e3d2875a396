//! Trials and the routing chosen after them (migration 0011): which job a trial samples, the
//! choices made on the side-by-side page, and the done images' latencies a trial's figures need.

use darkroom_jobs::{ChoiceScope, Model, Pass, RoutingChoice, RoutingChoices};

use crate::{now_ms, Ledger, LedgerError, Result};

/// A trial: the job holding the sampled rows, and what it samples.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TrialRecord {
    /// The trial job's row id.
    pub job_id: i64,
    /// The name of the job the trial samples (whose later runs honour its choices).
    pub of_job: String,
    /// How many rows the trial took.
    pub sample: i64,
    /// The seed the sample was drawn with.
    pub seed: i64,
}

impl Ledger {
    /// Records that the job `job_id` is a trial of `of_job` (replacing an earlier record).
    pub async fn record_trial(&self, job_id: i64, of_job: &str, sample: u32, seed: u64) -> Result<()> {
        // The seed is stored as the same 64 bits, read back with `as u64`.
        #[allow(clippy::cast_possible_wrap)]
        let seed = seed as i64;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO trials (job_id, of_job, sample, seed, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (job_id) DO UPDATE SET of_job = ?2, sample = ?3, seed = ?4",
        )
        .bind(job_id)
        .bind(of_job)
        .bind(i64::from(sample))
        .bind(seed)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The trial record of the job `job_id`, or `None` when the job is not a trial.
    pub async fn trial(&self, job_id: i64) -> Result<Option<TrialRecord>> {
        Ok(
            sqlx::query_as("SELECT job_id, of_job, sample, seed FROM trials WHERE job_id = ?1")
                .bind(job_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Sets the model the finals of a row or group of the job `job_name` are made with; `None`
    /// removes the choice (the job's routing applies again).
    pub async fn set_routing_choice(
        &self,
        job_name: &str,
        scope: ChoiceScope,
        key: &str,
        model: Option<Model>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        match model {
            Some(model) => sqlx::query(
                "INSERT INTO routing_choices (job_name, scope, key, model, chosen_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (job_name, scope, key) DO UPDATE SET model = ?4, chosen_at = ?5",
            )
            .bind(job_name)
            .bind(scope.as_str())
            .bind(key)
            .bind(model.as_str())
            .bind(now_ms()),
            None => sqlx::query("DELETE FROM routing_choices WHERE job_name = ?1 AND scope = ?2 AND key = ?3")
                .bind(job_name)
                .bind(scope.as_str())
                .bind(key),
        }
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every routing choice made for the job `job_name`, by scope then key.
    ///
    /// # Errors
    /// [`LedgerError::BadValue`] when a stored scope or model is not one this release knows.
    pub async fn routing_choice_list(&self, job_name: &str) -> Result<Vec<RoutingChoice>> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT scope, key, model FROM routing_choices WHERE job_name = ?1 ORDER BY scope, key",
        )
        .bind(job_name)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(scope, key, model)| {
                let scope = ChoiceScope::parse(&scope).ok_or(LedgerError::BadValue {
                    column: "routing_choices.scope",
                    value: scope,
                })?;
                let model = Model::parse(&model).ok_or(LedgerError::BadValue {
                    column: "routing_choices.model",
                    value: model,
                })?;
                Ok(RoutingChoice { scope, key, model })
            })
            .collect()
    }

    /// The routing choices of the job `job_name`, as the loader and estimates read them.
    ///
    /// # Errors
    /// As [`Ledger::routing_choice_list`].
    pub async fn routing_choices(&self, job_name: &str) -> Result<RoutingChoices> {
        Ok(RoutingChoices::new(self.routing_choice_list(job_name).await?))
    }

    /// The latencies (first send to done, milliseconds) of the pass's done images that were made,
    /// not copied from the cache, shortest first.
    pub async fn latencies(&self, job_id: i64, pass: Pass) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT latency_ms FROM tasks
             WHERE job_id = ?1 AND pass = ?2 AND superseded = 0 AND state = 'done' AND cached = 0
               AND latency_ms IS NOT NULL
             ORDER BY latency_ms",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .fetch_all(&self.pool)
        .await?)
    }
}
