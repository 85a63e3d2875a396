//! What review, promotion and the report read and write: the contact sheet's tiles, finals made
//! from chosen previews (linked to them), and the report's figures.

use darkroom_jobs::{Money, Pass};
use serde::Serialize;

use crate::load::{NewRow, INSERT_TASKS, NEW_ROW_COLUMNS};
use crate::{Ledger, Result, TileRecord};

/// A final to add for a chosen preview.
#[derive(Debug, Clone)]
pub struct NewFinal {
    /// The chosen preview's row id: a preview gets at most one final.
    pub preview_task_id: i64,
    /// The final's key (the preview's).
    pub task_key: String,
    /// The row id from the job file.
    pub row_id: String,
    /// The job file line its row starts on.
    pub line: i64,
    /// Which variant of its row, from 1.
    pub variant: i64,
    /// How many variants its row asks for.
    pub variants: i64,
    /// The final model's API name.
    pub model: String,
    /// The final's fingerprint (its request body and variant).
    pub fingerprint: String,
    /// The create request body, JSON (without `callback_url`).
    pub request_json: String,
    /// The prompt.
    pub prompt: String,
    /// The aspect ratio, as the API spells it.
    pub aspect_ratio: String,
    /// The image format.
    pub format: String,
    /// The row's metadata columns, a JSON object.
    pub metadata_json: String,
    /// The final model's price per image.
    pub price: Money,
    /// How the preview was used as the final's reference, in words, for people.
    pub reference_note: String,
    /// The preview's URL no longer resolved: the final is made from the prompt alone.
    pub reference_lost: bool,
}

/// Net spend of one model on one provider in one pass.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct ModelSpend {
    /// The pass (`preview`, `final` or `reframe`).
    pub pass: String,
    /// The provider that charged (`luma`, `replicate`, `fal`): the one each charge or refund
    /// names (migration 0012), else the task's; charges recorded before providers were tracked
    /// were Luma's.
    pub provider: String,
    /// The model's API name.
    pub model: String,
    /// Charges, micro-dollars.
    pub charged_micros: i64,
    /// Refunds, micro-dollars.
    pub refunded_micros: i64,
    /// Generations charged.
    pub charges: i64,
}

/// One entry of the money log, signed: charges positive, refunds negative.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct SpendPoint {
    /// Unix milliseconds.
    pub at: i64,
    /// Micro-dollars: positive for a charge, negative for a refund.
    pub micros: i64,
}

const SELECT_TILES: &str = concat!(
    "SELECT ",
    task_columns!(),
    // A cache copy made no generation of its own: its URL is the one of the generation it copies
    // (`generation_id`, the upstream id it recorded), while the upstream keeps it.
    ", COALESCE(
         (SELECT g.image_url FROM generations g WHERE g.task_id = t.id AND g.image_url IS NOT NULL
            AND g.state IN ('kept', 'completed') ORDER BY g.id DESC LIMIT 1),
         (SELECT g.image_url FROM generations g WHERE t.cached = 1 AND g.upstream_id = t.generation_id
            AND g.image_url IS NOT NULL AND g.state IN ('kept', 'completed'))
       ) AS image_url
    FROM tasks t"
);

impl Ledger {
    /// The tasks of a pass that are not superseded or cancelled, in file order, as tiles.
    pub async fn tiles(&self, job_id: i64, pass: Pass) -> Result<Vec<TileRecord>> {
        Ok(sqlx::query_as::<_, TileRecord>(&format!(
            "{SELECT_TILES} WHERE t.job_id = ?1 AND t.pass = ?2 AND t.superseded = 0 AND t.state != 'cancelled'
             ORDER BY t.line, t.row_id, t.variant, t.id"
        ))
        .bind(job_id)
        .bind(pass.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Adds finals for chosen previews, pending, in one transaction. A preview that already has a
    /// final keeps it (promoting again resumes, it never adds a second one). Returns how many
    /// were added.
    pub async fn add_finals(&self, job_id: i64, finals: &[NewFinal]) -> Result<u64> {
        // Guarded: a preview that already has a final (or a final of the same key) keeps it.
        let values = vec!["?"; NEW_ROW_COLUMNS].join(", ");
        let insert = format!(
            "{INSERT_TASKS} SELECT {values}
             WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE job_id = ? AND pass = 'final' AND superseded = 0
                               AND (preview_task_id = ? OR task_key = ?))"
        );
        let mut tx = self.begin_write().await?;
        let mut added = 0;
        for f in finals {
            let row = NewRow {
                job_id,
                pass: Pass::Final,
                task_key: &f.task_key,
                row_id: &f.row_id,
                line: f.line,
                variant: f.variant,
                variants: f.variants,
                model: &f.model,
                fingerprint: &f.fingerprint,
                request_json: &f.request_json,
                prompt: &f.prompt,
                aspect_ratio: &f.aspect_ratio,
                format: &f.format,
                metadata_json: f.metadata_json.clone(),
                price: f.price,
                preview_task_id: Some(f.preview_task_id),
                reference_note: Some(&f.reference_note),
                reference_lost: f.reference_lost,
            };
            let inserted = row
                .bind_to(sqlx::query(&insert))
                .bind(job_id)
                .bind(f.preview_task_id)
                .bind(&f.task_key)
                .execute(&mut *tx)
                .await?;
            added += inserted.rows_affected();
        }
        tx.commit().await?;
        Ok(added)
    }

    /// Charges and refunds by pass, provider and model: preview first, then by provider and model.
    pub async fn spend_by_model(&self, job_id: i64) -> Result<Vec<ModelSpend>> {
        Ok(sqlx::query_as::<_, ModelSpend>(
            "SELECT s.pass, COALESCE(s.provider, t.provider, 'luma') AS provider, t.model,
                    SUM(CASE s.kind WHEN 'charge' THEN s.micros ELSE 0 END) AS charged_micros,
                    SUM(CASE s.kind WHEN 'refund' THEN s.micros ELSE 0 END) AS refunded_micros,
                    COUNT(DISTINCT CASE s.kind WHEN 'charge' THEN COALESCE(s.generation_id, -s.id) END) AS charges
             FROM spend s JOIN tasks t ON t.id = s.task_id
             WHERE s.job_id = ?1
             GROUP BY s.pass, COALESCE(s.provider, t.provider, 'luma'), t.model
             ORDER BY s.pass DESC, provider, t.model",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The job's money log in time order, signed.
    pub async fn spend_points(&self, job_id: i64) -> Result<Vec<SpendPoint>> {
        Ok(sqlx::query_as::<_, SpendPoint>(
            "SELECT at, CASE kind WHEN 'charge' THEN micros ELSE -micros END AS micros
             FROM spend WHERE job_id = ?1 ORDER BY at, id",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The cost of every task of the pass that is not superseded or cancelled: what the pass
    /// costs when every task is made once, as estimated when the tasks were created.
    pub async fn planned_cost(&self, job_id: i64, pass: Pass) -> Result<Money> {
        let sum: Option<i64> = sqlx::query_scalar(
            "SELECT SUM(price_micros) FROM tasks
             WHERE job_id = ?1 AND pass = ?2 AND superseded = 0 AND state != 'cancelled'",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(Money::from_micros(sum.unwrap_or(0)))
    }
}
