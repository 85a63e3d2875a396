//! Reframes (migration 0009): tasks of the `reframe` pass, each one chosen image (a done final or
//! preview) extended to another aspect ratio, linked to that image's task by `source_task_id`.

use darkroom_jobs::{Money, Pass};

use crate::load::{NewRow, INSERT_TASKS, NEW_ROW_COLUMNS};
use crate::{Ledger, Result};

/// A reframe to add: one source image in one target aspect ratio.
#[derive(Debug, Clone)]
pub struct NewReframe {
    /// The row id of the task whose image is the source.
    pub source_task_id: i64,
    /// The reframe's key and file stem: the source's key and the target, `jar-9-16`.
    pub task_key: String,
    /// The row id from the job file (the source's).
    pub row_id: String,
    /// The job file line its row starts on (the source's).
    pub line: i64,
    /// The source's variant, from 1.
    pub variant: i64,
    /// How many variants the source's row asks for.
    pub variants: i64,
    /// The model's API name (the source's model).
    pub model: String,
    /// The reframe's fingerprint (its request body).
    pub fingerprint: String,
    /// The request body, JSON (without `callback_url`), naming the source's upstream URL.
    pub request_json: String,
    /// The prompt sent with it (the source's).
    pub prompt: String,
    /// The target aspect ratio, as the API spells it.
    pub aspect_ratio: String,
    /// The image format (the source's).
    pub format: String,
    /// The row's metadata columns, a JSON object (the source's).
    pub metadata_json: String,
    /// The model's price per image, reserved against the reframe budget.
    pub price: Money,
}

impl Ledger {
    /// Adds pending reframes in one transaction. A key the pass already has (not superseded)
    /// keeps its task: asking again resumes it and never adds a second. Returns how many were added.
    pub async fn add_reframes(&self, job_id: i64, reframes: &[NewReframe]) -> Result<u64> {
        let values = vec!["?"; NEW_ROW_COLUMNS].join(", ");
        let insert = format!(
            "{INSERT_TASKS} SELECT {values}
             WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE job_id = ? AND pass = 'reframe'
                               AND superseded = 0 AND task_key = ?)"
        );
        let mut tx = self.begin_write().await?;
        let mut added = 0;
        for r in reframes {
            let row = NewRow {
                job_id,
                pass: Pass::Reframe,
                task_key: &r.task_key,
                row_id: &r.row_id,
                line: r.line,
                variant: r.variant,
                variants: r.variants,
                model: &r.model,
                fingerprint: &r.fingerprint,
                request_json: &r.request_json,
                prompt: &r.prompt,
                aspect_ratio: &r.aspect_ratio,
                format: &r.format,
                metadata_json: r.metadata_json.clone(),
                price: r.price,
                preview_task_id: None,
                reference_note: None,
                reference_lost: false,
            };
            let inserted = row
                .bind_to(sqlx::query(&insert))
                .bind(job_id)
                .bind(&r.task_key)
                .execute(&mut *tx)
                .await?;
            if inserted.rows_affected() == 1 {
                sqlx::query("UPDATE tasks SET source_task_id = ?1 WHERE id = ?2")
                    .bind(r.source_task_id)
                    .bind(inserted.last_insert_rowid())
                    .execute(&mut *tx)
                    .await?;
                added += 1;
            }
        }
        tx.commit().await?;
        Ok(added)
    }
}
