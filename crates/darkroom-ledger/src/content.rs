//! Images by content: the hash and size recorded for every kept image, the content-checked cache,
//! the tasks that still record a path as their image (whose bytes must be moved aside before the
//! path is written), and damage: a done task whose file was found missing or changed, reopened by
//! the next run of its pass so its image is downloaded again (or, when the upstream no longer has
//! it, made again under the budget).
//!
//! The ledger never reads image files: the engine hashes and checks them and tells it what it found.

use darkroom_jobs::Pass;

use crate::{now_ms, Damage, Ledger, Result};

/// What a kept image is: its BLAKE3 hash (64 lowercase hex digits) and its size in bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageContent {
    /// The image's BLAKE3 hash, hex.
    pub hash: String,
    /// The image's size in bytes.
    pub bytes: i64,
}

/// A cache source: a done, undamaged task with a recorded hash, and where its image is.
#[derive(Debug, Clone)]
pub struct CachedImage {
    /// The source task's id (to mark it damaged when its file no longer holds its bytes).
    pub task_id: i64,
    /// Where the source image is kept, as recorded.
    pub output_path: String,
    /// The upstream generation that made the image (the cache hit records it too).
    pub generation_id: Option<String>,
    /// The source image's recorded hash and size.
    pub content: ImageContent,
}

/// A done task's image as the ledger records it: what `verify` and the start-of-run check compare
/// the file against, and what is moved aside before its path is written for another task.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeptImage {
    /// The task's row id in the ledger.
    pub task_id: i64,
    /// The name of its job.
    pub job_name: String,
    /// Its pass (`preview` or `final`).
    pub pass: String,
    /// The task's key: its row id and variant, as its file name has it.
    pub task_key: String,
    /// The row id from the job file.
    pub row_id: String,
    /// Where its image is kept, as recorded.
    pub output_path: String,
    /// `None` for an image kept by a release before hashes were recorded: unverified.
    pub content_hash: Option<String>,
    /// Its size in bytes, beside the hash.
    pub content_bytes: Option<i64>,
    /// Damage already recorded ('missing', 'changed'), if any.
    pub damage: Option<Damage>,
}

impl KeptImage {
    /// The recorded hash and size, when both are known.
    pub fn content(&self) -> Option<ImageContent> {
        Some(ImageContent {
            hash: self.content_hash.clone()?,
            bytes: self.content_bytes?,
        })
    }
}

const KEPT_COLUMNS: &str =
    "SELECT t.id AS task_id, j.name AS job_name, t.pass, t.task_key, t.row_id, t.output_path,
    t.content_hash, t.content_bytes, t.damage FROM tasks t JOIN jobs j ON j.id = t.job_id";

impl Ledger {
    /// A cache source for this fingerprint made on `provider` (`luma`, `replicate`, `fal`): a done
    /// task of any job whose image has a recorded hash and no recorded damage (originals before
    /// copies, oldest first). The provider is part of the cache's key: an image made on one
    /// provider is never served to a run on another. A copy from the cache counts as made by the
    /// provider of the generation it was copied from. The caller must check that the bytes it
    /// copies hash to `content.hash` and call [`Ledger::mark_damaged`] when they don't.
    pub async fn cached_image(&self, fingerprint: &str, provider: &str) -> Result<Option<CachedImage>> {
        let row: Option<(i64, String, Option<String>, String, i64)> = sqlx::query_as(
            "SELECT t.id, t.output_path, t.generation_id, t.content_hash, t.content_bytes FROM tasks t
             WHERE t.fingerprint = ?1 AND t.state = 'done' AND t.output_path IS NOT NULL
               AND t.content_hash IS NOT NULL AND t.content_bytes IS NOT NULL AND t.damage IS NULL
               AND COALESCE(t.provider, (SELECT g.provider FROM generations g
                                         WHERE g.upstream_id = t.generation_id)) = ?2
             ORDER BY t.cached, t.id LIMIT 1",
        )
        .bind(fingerprint)
        .bind(provider)
        .fetch_optional(&self.pool)
        .await?;
        Ok(
            row.map(|(task_id, output_path, generation_id, hash, bytes)| CachedImage {
                task_id,
                output_path,
                generation_id,
                content: ImageContent { hash, bytes },
            }),
        )
    }

    /// Records that a done task's file is missing or changed: it is no longer offered by the cache,
    /// and the next run of its pass restores it (if it is not superseded). A task not done is left
    /// alone. Returns whether the task was marked.
    pub async fn mark_damaged(&self, task_id: i64, damage: Damage) -> Result<bool> {
        Ok(
            sqlx::query("UPDATE tasks SET damage = ?2 WHERE id = ?1 AND state = 'done'")
                .bind(task_id)
                .bind(damage.as_str())
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    /// Clears recorded damage: the file was found holding its recorded bytes again.
    pub async fn clear_damage(&self, task_id: i64) -> Result<()> {
        sqlx::query("UPDATE tasks SET damage = NULL WHERE id = ?1")
            .bind(task_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the hash and size of a done task's image that had none (kept by an older release),
    /// when the user vouches for the file as it is. Does nothing to a task that already has a hash.
    pub async fn record_content(&self, task_id: i64, content: &ImageContent) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE tasks SET content_hash = ?2, content_bytes = ?3, damage = NULL
             WHERE id = ?1 AND state = 'done' AND content_hash IS NULL",
        )
        .bind(task_id)
        .bind(&content.hash)
        .bind(content.bytes)
        .execute(&self.pool)
        .await?
        .rows_affected()
            > 0)
    }

    /// Done tasks other than `except_task` (any job, pass, superseded or not) that record `path` as
    /// their image: their bytes must be moved aside before anything is written there.
    pub async fn images_at(&self, path: &str, except_task: i64) -> Result<Vec<KeptImage>> {
        Ok(sqlx::query_as::<_, KeptImage>(&format!(
            "{KEPT_COLUMNS} WHERE t.output_path = ?1 AND t.state = 'done' AND t.id <> ?2 ORDER BY t.id"
        ))
        .bind(path)
        .bind(except_task)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The task's image now lives at `to` (moved aside from `from`). Only a task still recording
    /// `from` is changed; returns whether it was.
    pub async fn move_image(&self, task_id: i64, from: &str, to: &str) -> Result<bool> {
        Ok(
            sqlx::query("UPDATE tasks SET output_path = ?3 WHERE id = ?1 AND output_path = ?2")
                .bind(task_id)
                .bind(from)
                .bind(to)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    /// The job's done, non-superseded tasks with a file (both passes, or one), `limit` at a time
    /// after task id `after`, in id order: what `verify` and the start-of-run check go through.
    pub async fn kept_images(
        &self,
        job_id: i64,
        pass: Option<Pass>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<KeptImage>> {
        Ok(sqlx::query_as::<_, KeptImage>(&format!(
            "{KEPT_COLUMNS} WHERE t.job_id = ?1 AND (?2 IS NULL OR t.pass = ?2) AND t.state = 'done'
               AND t.superseded = 0 AND t.output_path IS NOT NULL AND t.id > ?3
             ORDER BY t.id LIMIT ?4"
        ))
        .bind(job_id)
        .bind(pass.map(Pass::as_str))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Reopens the pass's done tasks with recorded damage so this run restores them, in one
    /// transaction: a task that kept a generation of its own goes back to `downloading` with that
    /// generation `completed` again (its image is downloaded again at no cost); a cache copy, or a
    /// task without a kept generation, goes back to `pending` (the cache, or a new create under the
    /// budget). Their hashes are cleared; the damage stays until the task is done again. Returns
    /// how many were reopened.
    pub async fn reopen_damaged(&self, job_id: i64, pass: Pass) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE generations SET state = 'completed'
             WHERE state = 'kept' AND image_url IS NOT NULL AND upstream_id IS NOT NULL
               AND task_id IN (SELECT id FROM tasks WHERE job_id = ?1 AND pass = ?2 AND state = 'done'
                               AND superseded = 0 AND damage IS NOT NULL AND cached = 0)",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .execute(&mut *tx)
        .await?;
        let reopened = sqlx::query(
            "UPDATE tasks SET
                state = CASE WHEN cached = 0 AND EXISTS (SELECT 1 FROM generations g
                                WHERE g.task_id = tasks.id AND g.state = 'completed')
                        THEN 'downloading' ELSE 'pending' END,
                generation_id = CASE WHEN cached = 0 THEN generation_id END,
                cached = 0, content_hash = NULL, content_bytes = NULL, finished_at = NULL, reason = NULL
             WHERE job_id = ?1 AND pass = ?2 AND state = 'done' AND superseded = 0 AND damage IS NOT NULL",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(reopened)
    }

    /// Whether the task is being restored (its earlier file was found missing or changed).
    pub async fn is_restoring(&self, task_id: i64) -> Result<bool> {
        let damage: Option<Option<String>> = sqlx::query_scalar("SELECT damage FROM tasks WHERE id = ?1")
            .bind(task_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(damage.flatten().is_some())
    }

    /// A task being restored whose kept generation the upstream no longer has: that generation is
    /// `lost` (its charge stays: it was paid) and the task is pending again, to be made anew under
    /// the budget.
    pub async fn remake_lost(&self, generation: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let task_id: i64 = sqlx::query_scalar(
            "UPDATE generations SET state = 'lost', completed_at = COALESCE(completed_at, ?2) WHERE id = ?1
             RETURNING task_id",
        )
        .bind(generation)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE tasks SET state = 'pending', generation_id = NULL, reason = NULL WHERE id = ?1
             AND state = 'downloading'",
        )
        .bind(task_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
