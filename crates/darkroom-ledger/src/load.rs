//! Loading a job file's tasks into a pass, a page at a time inside one transaction (`Loader`).

use darkroom_jobs::{Money, Pass, Task};

use crate::{Ledger, Result};

impl Ledger {
    /// Inserts the tasks of one job file into the pass, in one transaction. Tasks already in the
    /// ledger with the same key and fingerprint are kept as they are (a resume); a task whose
    /// fingerprint changed replaces the old one, which is marked superseded (and cancelled if it
    /// had not started). Tasks of the pass no longer in the file are superseded likewise.
    ///
    /// `tasks` is consumed in pages so a million-task file never sits in memory at once: call
    /// [`Ledger::begin_load`], then [`Ledger::load_page`] per page, then [`Ledger::finish_load`].
    pub async fn begin_load(&self, job_id: i64, pass: Pass) -> Result<Loader> {
        let mut conn = self.pool.acquire().await?;
        // A writer from the start, like every write transaction (see `begin_write`).
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        sqlx::query(
            "CREATE TEMP TABLE IF NOT EXISTS loaded_keys (task_key TEXT NOT NULL, fingerprint TEXT NOT NULL,
             PRIMARY KEY (task_key, fingerprint)) WITHOUT ROWID",
        )
        .execute(&mut *conn)
        .await?;
        sqlx::query("DELETE FROM loaded_keys").execute(&mut *conn).await?;
        // A pass with no tasks yet (a job's first load) has nothing to supersede: its keys need
        // not be kept aside, which halves the statements of a million-task load.
        let fresh: bool =
            sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM tasks WHERE job_id = ?1 AND pass = ?2)")
                .bind(job_id)
                .bind(pass.as_str())
                .fetch_one(&mut *conn)
                .await?;
        Ok(Loader {
            conn,
            job_id,
            pass,
            fresh,
            inserted: 0,
            committed: false,
        })
    }
}

/// A task to load, with what the ledger keeps beside it.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// The task, as read from the job file.
    pub task: Task,
    /// The line of the job file its row starts on.
    pub line: u64,
    /// Its price per image from the price table, reserved before each create.
    pub price: Money,
    /// The create request body (without `callback_url`).
    pub request_json: String,
}

/// Pages of tasks being loaded into a pass, inside one transaction.
#[derive(Debug)]
pub struct Loader {
    conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
    job_id: i64,
    pass: Pass,
    /// The pass had no tasks when the load began: nothing to supersede, no keys kept aside.
    fresh: bool,
    inserted: u64,
    committed: bool,
}

impl Loader {
    /// Adds a page of tasks with their prices and request bodies, many rows to a statement (one
    /// statement per row made loading a million tasks take a minute, most of it spent handing
    /// statements to SQLite's thread).
    pub async fn load_page(&mut self, page: &[NewTask]) -> Result<()> {
        for chunk in page.chunks(LOAD_ROWS_PER_STATEMENT) {
            let keys: Vec<String> = chunk.iter().map(|t| t.task.file_stem()).collect();
            if !self.fresh {
                let mut sql =
                    String::from("INSERT OR IGNORE INTO loaded_keys (task_key, fingerprint) VALUES ");
                push_placeholders(&mut sql, chunk.len(), 2);
                let mut query = sqlx::query(&sql);
                for (key, new) in keys.iter().zip(chunk) {
                    query = query.bind(key).bind(&new.task.fingerprint);
                }
                query.execute(&mut *self.conn).await?;
            }

            let mut sql = format!("{INSERT_TASKS} VALUES ");
            push_placeholders(&mut sql, chunk.len(), NEW_ROW_COLUMNS);
            sql.push_str(
                " ON CONFLICT (job_id, pass, task_key, fingerprint) DO UPDATE SET superseded = 0,
                    line = excluded.line, metadata_json = excluded.metadata_json",
            );
            let mut query = sqlx::query(&sql);
            for (key, new) in keys.iter().zip(chunk) {
                let NewTask {
                    task,
                    line,
                    price,
                    request_json,
                } = new;
                let metadata = serde_json::to_string(&task.metadata).unwrap_or_else(|_| "{}".into());
                query = NewRow {
                    job_id: self.job_id,
                    pass: self.pass,
                    task_key: key,
                    row_id: &task.row_id,
                    line: i64::try_from(*line).unwrap_or(i64::MAX),
                    variant: task.variant.into(),
                    variants: task.variants.into(),
                    model: task.model.as_str(),
                    fingerprint: &task.fingerprint,
                    request_json,
                    prompt: &task.prompt,
                    aspect_ratio: task.aspect_ratio.as_str(),
                    format: task.format.as_str(),
                    metadata_json: metadata,
                    price: *price,
                    preview_task_id: None,
                    reference_note: None,
                    reference_lost: false,
                }
                .bind_to(query);
            }
            self.inserted += query.execute(&mut *self.conn).await?.rows_affected();
        }
        Ok(())
    }

    /// Supersedes the pass's tasks that the file no longer has, records the file fingerprint
    /// loaded, and commits. Returns how many task rows were inserted or refreshed.
    pub async fn finish(mut self, file_fingerprint: &str) -> Result<u64> {
        let pass = self.pass.as_str();
        if !self.fresh {
            self.supersede_unloaded().await?;
        }
        sqlx::query("UPDATE job_passes SET loaded_fingerprint = ?3 WHERE job_id = ?1 AND pass = ?2")
            .bind(self.job_id)
            .bind(pass)
            .bind(file_fingerprint)
            .execute(&mut *self.conn)
            .await?;
        sqlx::query("COMMIT").execute(&mut *self.conn).await?;
        self.committed = true;
        Ok(self.inserted)
    }

    /// Supersedes the pass's tasks whose key and fingerprint the file no longer has (cancelling
    /// those that had not started), and empties the kept keys.
    async fn supersede_unloaded(&mut self) -> Result<()> {
        let pass = self.pass.as_str();
        sqlx::query(
            "UPDATE tasks SET superseded = 1,
                    state = CASE WHEN state IN ('pending', 'skipped') THEN 'cancelled' ELSE state END
             WHERE job_id = ?1 AND pass = ?2 AND superseded = 0 AND preview_task_id IS NULL
               AND NOT EXISTS (SELECT 1 FROM loaded_keys k WHERE k.task_key = tasks.task_key
                               AND k.fingerprint = tasks.fingerprint)",
        )
        .bind(self.job_id)
        .bind(pass)
        .execute(&mut *self.conn)
        .await?;
        sqlx::query("DELETE FROM loaded_keys")
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // A loader dropped without `finish` still has its transaction open: close the connection
        // instead of returning it to the pool mid-transaction, which rolls the load back.
        if !self.committed {
            self.conn.close_on_drop();
        }
    }
}

/// Task rows per `INSERT` while loading: 15 parameters each, well under SQLite's 32,766.
const LOAD_ROWS_PER_STATEMENT: usize = 100;

/// Appends `rows` groups of `columns` anonymous placeholders: `(?, ?), (?, ?)`. Not numbered: looking
/// up a numbered parameter's name is linear in the statement's parameters, so binding thousands of
/// them was quadratic.
fn push_placeholders(sql: &mut String, rows: usize, columns: usize) {
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            sql.push_str(if column == 0 { "?" } else { ", ?" });
        }
        sql.push(')');
    }
}

/// The one `INSERT` of task rows: loading appends `VALUES` groups (see [`push_placeholders`]),
/// promotion a guarded `SELECT`. [`NewRow::bind_to`] binds its columns in this order.
pub(crate) const INSERT_TASKS: &str = "INSERT INTO tasks (job_id, pass, task_key, row_id, line, variant, variants,
    model, fingerprint, request_json, prompt, aspect_ratio, format, metadata_json, price_micros, preview_task_id,
    reference_note, reference_lost)";

/// How many columns [`INSERT_TASKS`] names.
pub(crate) const NEW_ROW_COLUMNS: usize = 18;

/// A task row to insert, as plain values: what a loaded task and a promoted final both become.
pub(crate) struct NewRow<'a> {
    pub(crate) job_id: i64,
    pub(crate) pass: Pass,
    pub(crate) task_key: &'a str,
    pub(crate) row_id: &'a str,
    pub(crate) line: i64,
    pub(crate) variant: i64,
    pub(crate) variants: i64,
    pub(crate) model: &'a str,
    pub(crate) fingerprint: &'a str,
    pub(crate) request_json: &'a str,
    pub(crate) prompt: &'a str,
    pub(crate) aspect_ratio: &'a str,
    pub(crate) format: &'a str,
    pub(crate) metadata_json: String,
    pub(crate) price: Money,
    pub(crate) preview_task_id: Option<i64>,
    pub(crate) reference_note: Option<&'a str>,
    pub(crate) reference_lost: bool,
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

impl<'a> NewRow<'a> {
    /// Binds the row's [`NEW_ROW_COLUMNS`] values, in [`INSERT_TASKS`]'s order.
    pub(crate) fn bind_to<'q>(self, query: SqliteQuery<'q>) -> SqliteQuery<'q>
    where
        'a: 'q,
    {
        query
            .bind(self.job_id)
            .bind(self.pass.as_str())
            .bind(self.task_key)
            .bind(self.row_id)
            .bind(self.line)
            .bind(self.variant)
            .bind(self.variants)
            .bind(self.model)
            .bind(self.fingerprint)
            .bind(self.request_json)
            .bind(self.prompt)
            .bind(self.aspect_ratio)
            .bind(self.format)
            .bind(self.metadata_json)
            .bind(self.price.micros())
            .bind(self.preview_task_id)
            .bind(self.reference_note)
            .bind(self.reference_lost)
    }
}
