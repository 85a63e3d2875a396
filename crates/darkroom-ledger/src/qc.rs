//! Quality checks of kept images (migration 0010): what was measured of each image as it was
//! downloaded (`image_checks`) and the flags raised on it (`qc_flags`).
//!
//! The ledger stores and reads; it decides nothing. What to measure, the thresholds and whether two
//! variants are nearly identical are the engine's (`darkroom_engine::qc`): the engine hands the
//! measurements and a rule for comparing with the row's other variants to
//! [`Ledger::record_done_checked`], which records the image as kept, its check and every flag in one
//! transaction, so a flag is never lost to a crash between them and a resumed run never measures
//! an image twice.

use darkroom_jobs::Pass;

use crate::tasks::mark_done;
use crate::{ImageContent, Ledger, QcKind, Result};

/// What was measured of one kept image, and the flags it raised.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageCheck {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The image's perceptual hash (hex), compared with the other variants of its row.
    pub perceptual_hash: String,
    /// The flags the image raised on its own (blank, dimensions, small file); duplicates are
    /// decided against the row's other variants by the rule given to
    /// [`Ledger::record_done_checked`].
    pub flags: Vec<QcFlag>,
}

/// One flag: its kind, the value measured and the threshold it crossed (both in the kind's unit,
/// see [`QcKind`]) and a sentence for people.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QcFlag {
    /// What the flag says.
    pub kind: QcKind,
    /// The value measured, in the kind's unit.
    pub measured: f64,
    /// The threshold it crossed, in the same unit.
    pub threshold: f64,
    /// What was found, in words (`"1024x576, not the 2048x1152 asked for"`).
    pub detail: String,
}

/// A done variant of the same row (same job and pass) whose image was checked: what a duplicate
/// rule compares the new image with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedSibling {
    /// Its task's row id.
    pub task_id: i64,
    /// Its task key (`ROWID-VARIANT`).
    pub task_key: String,
    /// Its 1-based variant index.
    pub variant: u32,
    /// Its image's perceptual hash (hex).
    pub perceptual_hash: String,
}

/// A duplicate found by the caller's rule: the flag goes on `holder`, naming `other`.
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateFlag {
    /// The task that carries the flag (the later variant of the two).
    pub holder: i64,
    /// The task whose image it nearly repeats.
    pub other: i64,
    /// The flag (kind [`QcKind::Duplicate`]).
    pub flag: QcFlag,
}

/// A flag as read back for the outputs, the report and the review page.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct StoredFlag {
    /// The flagged task's row id.
    #[serde(skip)]
    pub task_id: i64,
    /// What the flag says.
    pub kind: QcKind,
    /// The value measured, in the kind's unit.
    pub measured: f64,
    /// The threshold it crossed.
    pub threshold: f64,
    /// What was found, in words.
    pub detail: String,
    /// For a duplicate: the task key of the variant it nearly repeats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
}

/// How many kept images of a pass carry each kind of flag.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct QcCounts {
    /// Images measured.
    pub checked: u64,
    /// Images with at least one flag.
    pub flagged: u64,
    /// Nearly one flat colour.
    pub blank: u64,
    /// Not the size asked for.
    pub dimensions: u64,
    /// Nearly identical to another variant of the row.
    pub duplicate: u64,
    /// A suspiciously small file.
    pub small_file: u64,
}

impl Ledger {
    /// [`Ledger::record_done`] and the image's quality check in one transaction: the task is done
    /// with this generation kept, `check` replaces whatever an earlier image of the task recorded
    /// (its own flags, and duplicate flags other variants carried naming it), and `duplicate` is
    /// asked about every done variant of the same row whose image was checked; each
    /// [`DuplicateFlag`] it returns is recorded (one duplicate flag per task: the first stays).
    ///
    /// # Errors
    /// [`crate::LedgerError::Query`] when a statement fails; nothing is recorded then.
    pub async fn record_done_checked(
        &self,
        generation: i64,
        output_path: &str,
        content: &ImageContent,
        check: &ImageCheck,
        mut duplicate: impl FnMut(&CheckedSibling) -> Option<DuplicateFlag> + Send,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let task_id = mark_done(&mut tx, generation, output_path, content).await?;
        sqlx::query("DELETE FROM qc_flags WHERE task_id = ?1 OR other_task_id = ?1")
            .bind(task_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT OR REPLACE INTO image_checks (task_id, content_hash, width, height, perceptual_hash, checked_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(task_id)
        .bind(&content.hash)
        .bind(i64::from(check.width))
        .bind(i64::from(check.height))
        .bind(&check.perceptual_hash)
        .bind(crate::now_ms())
        .execute(&mut *tx)
        .await?;
        for flag in &check.flags {
            insert_flag(&mut tx, task_id, flag, None).await?;
        }
        let siblings: Vec<(i64, String, i64, String)> = sqlx::query_as(
            // A row's tasks are keyed by its id (`ROWID`, `ROWID-N`, a reframe's `KEY-W-H`): the
            // key range finds them through the `(job_id, pass, task_key, ...)` unique index, where
            // `row_id` alone would read every done task of the pass for each image.
            "SELECT s.id, s.task_key, s.variant, c.perceptual_hash
             FROM tasks t CROSS JOIN tasks s ON s.job_id = t.job_id AND s.pass = t.pass
                  AND s.task_key >= t.row_id AND s.task_key < t.row_id || '.'
             JOIN image_checks c ON c.task_id = s.id
             WHERE t.id = ?1 AND s.row_id = t.row_id AND s.id <> t.id
               AND s.state = 'done' AND s.superseded = 0
             ORDER BY s.variant",
        )
        .bind(task_id)
        .fetch_all(&mut *tx)
        .await?;
        for (id, task_key, variant, perceptual_hash) in siblings {
            let sibling = CheckedSibling {
                task_id: id,
                task_key,
                variant: u32::try_from(variant).unwrap_or(0),
                perceptual_hash,
            };
            if let Some(found) = duplicate(&sibling) {
                insert_flag(&mut tx, found.holder, &found.flag, Some(found.other)).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Whether the task's kept image has been checked (an image kept before quality checks
    /// existed, or copied from the cache, has not).
    pub async fn is_checked(&self, task_id: i64) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT task_id FROM image_checks WHERE task_id = ?1")
            .bind(task_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// The flags on the pass's current tasks with ids in `first..=last`, in task then kind
    /// order (`0..=i64::MAX` for all of them): the outputs read them a page of results at a time.
    pub async fn qc_flags(&self, job_id: i64, pass: Pass, first: i64, last: i64) -> Result<Vec<StoredFlag>> {
        Ok(sqlx::query_as::<_, StoredFlag>(
            "SELECT f.task_id, f.kind, f.measured, f.threshold, f.detail, o.task_key AS duplicate_of
             FROM qc_flags f JOIN tasks t ON t.id = f.task_id LEFT JOIN tasks o ON o.id = f.other_task_id
             WHERE t.job_id = ?1 AND t.pass = ?2 AND t.superseded = 0 AND t.state = 'done'
               AND f.task_id BETWEEN ?3 AND ?4
             ORDER BY f.task_id, f.kind",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .bind(first)
        .bind(last)
        .fetch_all(&self.pool)
        .await?)
    }

    /// How many of the pass's kept images were checked and flagged, by kind.
    pub async fn qc_counts(&self, job_id: i64, pass: Pass) -> Result<QcCounts> {
        let checked: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM image_checks c JOIN tasks t ON t.id = c.task_id
             WHERE t.job_id = ?1 AND t.pass = ?2 AND t.superseded = 0 AND t.state = 'done'",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .fetch_one(&self.pool)
        .await?;
        let flags = self.qc_flags(job_id, pass, 0, i64::MAX).await?;
        let mut counts = QcCounts {
            checked: u64::try_from(checked).unwrap_or(0),
            ..QcCounts::default()
        };
        let mut last_task = None;
        for flag in &flags {
            if last_task != Some(flag.task_id) {
                counts.flagged += 1;
                last_task = Some(flag.task_id);
            }
            match flag.kind {
                QcKind::Blank => counts.blank += 1,
                QcKind::Dimensions => counts.dimensions += 1,
                QcKind::Duplicate => counts.duplicate += 1,
                QcKind::SmallFile => counts.small_file += 1,
            }
        }
        Ok(counts)
    }
}

/// One flag on `task_id` (a second flag of the same kind on the task is ignored).
async fn insert_flag(
    tx: &mut sqlx::SqliteConnection,
    task_id: i64,
    flag: &QcFlag,
    other: Option<i64>,
) -> Result<()> {
    sqlx::query(
        "INSERT OR IGNORE INTO qc_flags (task_id, kind, measured, threshold, detail, other_task_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(task_id)
    .bind(flag.kind)
    .bind(flag.measured)
    .bind(flag.threshold)
    .bind(&flag.detail)
    .bind(other)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
