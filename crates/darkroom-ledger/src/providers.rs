//! Which provider made what (migration 0012): the creates of a pass still unsettled on each
//! provider, the re-pricing of tasks never sent when a pass runs on another provider, and moving a
//! task whose create never reached its first provider over to the pass's provider.

use darkroom_jobs::{AspectRatio, Model, Money, Pass, PriceTable};

use crate::money::release_in;
use crate::{Ledger, Result};

/// A task of a pass whose create went to a provider and is not settled yet: its outcome unknown,
/// its generation unfinished or not downloaded, or an abandoned generation's charge still open.
/// Only the provider that received the create can settle it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UnsettledCreate {
    /// The provider that received the create (`luma`, `replicate`, `fal`).
    pub provider: String,
    /// The task's key (`ROWID` or `ROWID-VARIANT`).
    pub task_key: String,
    /// The task's row id.
    pub row_id: String,
    /// The row's line in the job file.
    pub line: i64,
}

impl Ledger {
    /// The pass's creates that only the provider that received them can settle, by provider then
    /// task, one entry per task and provider: a task in flight (`submitting`, `submitted`,
    /// `downloading`, or `reserved` with an open generation) whose open generation went to that
    /// provider, and abandoned generations still holding a charge.
    pub async fn unsettled_by_provider(&self, job_id: i64, pass: Pass) -> Result<Vec<UnsettledCreate>> {
        Ok(sqlx::query_as::<_, UnsettledCreate>(
            "SELECT DISTINCT g.provider, t.task_key, t.row_id, t.line
             FROM tasks t JOIN generations g ON g.task_id = t.id
             WHERE t.job_id = ?1 AND t.pass = ?2 AND g.provider IS NOT NULL
               AND ((t.superseded = 0 AND t.state IN ('reserved', 'submitting', 'submitted', 'downloading')
                     AND g.state IN ('intent', 'unknown', 'submitted', 'completed'))
                 OR (g.state = 'abandoned' AND g.charge_micros > 0 AND g.upstream_id IS NOT NULL))
             ORDER BY g.provider, t.id",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    /// The providers the pass's creates were sent to (`luma`, `replicate`, `fal`), in name order.
    pub async fn providers_used(&self, job_id: i64, pass: Pass) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT g.provider FROM generations g JOIN tasks t ON t.id = g.task_id
             WHERE t.job_id = ?1 AND t.pass = ?2 AND g.provider IS NOT NULL ORDER BY g.provider",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Prices the pass's tasks that hold no create at `table` (the price table of the provider the
    /// pass runs on): pending, skipped and failed tasks, and tasks an earlier run reserved but sent
    /// nothing for (their reservation given back, so they are reserved again at the new price).
    /// Tasks already at the table's price are untouched. Returns how many changed.
    pub async fn price_unsent(&self, job_id: i64, pass: Pass, table: &PriceTable) -> Result<u64> {
        // `?1` job, `?2` pass, then a (model/aspect ratio, price) pair per cell of the table.
        let mut price = String::from("CASE t.model || '/' || t.aspect_ratio");
        let mut cells = Vec::new();
        for model in Model::ALL {
            for ratio in AspectRatio::ALL {
                let n = 3 + 2 * cells.len();
                price.push_str(&format!(" WHEN ?{n} THEN ?{}", n + 1));
                cells.push((
                    format!("{}/{}", model.as_str(), ratio.as_str()),
                    table.price_of(model, ratio),
                ));
            }
        }
        price.push_str(" ELSE t.price_micros END");
        let mut tx = self.begin_write().await?;
        let reserved = format!(
            "SELECT t.id FROM tasks t WHERE t.job_id = ?1 AND t.pass = ?2 AND t.state = 'reserved'
               AND t.reserved_micros != ({price})
               AND NOT EXISTS (SELECT 1 FROM generations g WHERE g.task_id = t.id
                               AND g.state IN ('intent', 'unknown', 'submitted', 'completed'))"
        );
        let stale: Vec<i64> = bind_cells(&reserved, job_id, pass, &cells)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| sqlx::Row::get(row, 0))
            .collect();
        for task in &stale {
            release_in(&mut tx, *task).await?;
            sqlx::query("UPDATE tasks SET state = 'pending' WHERE id = ?1")
                .bind(task)
                .execute(&mut *tx)
                .await?;
        }
        let update = format!(
            "UPDATE tasks AS t SET price_micros = ({price})
             WHERE t.job_id = ?1 AND t.pass = ?2 AND t.state IN ('pending', 'skipped', 'failed')
               AND t.price_micros != ({price})"
        );
        let changed = bind_cells(&update, job_id, pass, &cells)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(changed)
    }

    /// A task whose last create never reached `its` provider (its outcome settled as not created)
    /// moves to the provider the pass runs on: its reservation given back, `pending` again at
    /// `price` (the new provider's table price), to be reserved and sent like any task never sent.
    pub async fn move_unsent(&self, task_id: i64, price: Money) -> Result<()> {
        let mut tx = self.begin_write().await?;
        release_in(&mut tx, task_id).await?;
        sqlx::query("UPDATE tasks SET state = 'pending', price_micros = ?2 WHERE id = ?1")
            .bind(task_id)
            .bind(price.micros())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// `sql` with `?1` the job, `?2` the pass and then each cell's (model/aspect ratio, price) bound.
fn bind_cells<'q>(
    sql: &'q str,
    job_id: i64,
    pass: Pass,
    cells: &[(String, Money)],
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    let mut query = sqlx::query(sql).bind(job_id).bind(pass.as_str());
    for (cell, money) in cells {
        query = query.bind(cell.clone()).bind(money.micros());
    }
    query
}
