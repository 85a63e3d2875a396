//! darkroom-ledger: the SQLite ledger. Every SQL statement of darkroom lives in this crate.
//!
//! It owns the schema (migrations in the top-level `migrations/`, embedded with `migrate!`), the budget
//! reservation (spent + reserved ≤ budget, checked in the transaction that reserves), the task state
//! machine's transitions (each one a transaction), the money log, and the queries a resumed run needs.
//! It never speaks HTTP and never touches image files: the engine tells it what happened.
//!
//! One connection does all the writing, so transactions never contend inside a process. Other
//! processes share the file safely: opening and migrating are serialised by an OS lock beside the
//! ledger, every write transaction begins as a writer (`BEGIN IMMEDIATE`) and waits up to
//! [`BUSY_TIMEOUT`] for another's, and readers (`darkroom status` while a run goes on) read through WAL.

mod audit;
#[cfg(feature = "bench")]
mod bench_views;
mod content;
mod prices;
mod records;
mod review;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use darkroom_jobs::{Money, Pass, Task};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row as _, SqlitePool};

pub use audit::{AuditRecord, FoundState};
pub use content::{CachedImage, Damage, ImageContent, KeptImage};
pub use prices::{BalanceReading, ModelCharges, PriceObservation, Repriced};
pub use records::{Counts, GenerationRecord, JobRecord, PassRecord, ResultRecord, TaskRecord, TaskState};
pub use review::{ModelSpend, NewFinal, SpendPoint, TileRecord};

/// What can go wrong with the ledger. The engine stops the run on any of these: a ledger that
/// can't be written is a systemic failure.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the ledger {path} could not be opened")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("the ledger {path}'s schema could not be brought up to date")]
    Migrate {
        path: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("ledger query failed")]
    Sql(#[from] sqlx::Error),
    #[error("no job named {0:?} in this ledger")]
    NoSuchJob(String),
    #[error("the budget {budget} is below what this pass has already spent or reserved ({committed})")]
    BudgetBelowSpend { budget: Money, committed: Money },
}

pub type Result<T> = std::result::Result<T, LedgerError>;

/// Whether a reservation was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    Reserved,
    /// spent + reserved + price would exceed the budget: nothing was reserved.
    OverBudget,
    /// The task was no longer pending (another path took it): nothing was reserved.
    NotPending,
}

/// The ledger: a handle on one SQLite file.
#[derive(Debug, Clone)]
pub struct Ledger {
    pool: SqlitePool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// How long a connection waits for another process's lock before failing with "database is
/// locked". The longest write transaction a darkroom process holds is a job file's load (about
/// 15 s for a million tasks on a laptop); two minutes leaves room for larger files and a loaded
/// machine. Readers (`darkroom status`) never wait: WAL lets them read beside a writer.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a task waits for the process's one connection: longer than [`BUSY_TIMEOUT`], so the
/// task holding it can wait out another process's lock first.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(300);

/// The current time as Unix milliseconds.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

impl Ledger {
    /// Opens (creating if needed, with mode 0600) the ledger file and brings its schema up to date.
    ///
    /// Safe when several processes open the same file at once, new or existing: opening and
    /// migrating happen under an exclusive OS lock on `PATH-lock` beside the ledger (see
    /// [`open_lock_path`]), taken only for the open and released before this returns, because sqlx's
    /// SQLite migrator takes no lock of its own and two processes would both apply `0001`. Every
    /// connection then waits up to [`BUSY_TIMEOUT`] for another process's write transaction.
    ///
    /// Errors: [`LedgerError::Open`] (naming the file) when the file or its lock can't be created or
    /// isn't a SQLite database, [`LedgerError::Migrate`] when the schema can't be brought up to date.
    pub async fn open(path: &Path) -> Result<Ledger> {
        let open_error = |source| LedgerError::Open {
            path: path.display().to_string(),
            source,
        };
        create_private_file(path).map_err(|e| open_error(sqlx::Error::Io(e)))?;
        let _opening = lock_for_open(path)
            .await
            .map_err(|e| open_error(sqlx::Error::Io(e)))?;
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(open_error)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // A local file does not go stale between queries: no ping before each one.
            .test_before_acquire(false)
            // Nor does it age: no idle timeout and no maximum lifetime, which also keeps sqlx from
            // starting its reaper. sqlx 0.8.6's reaper loops `num_idle()` times without yielding,
            // and that count is briefly below zero (a huge usize) while a connection is being
            // returned as another is taken: once seen, the loop held the runtime's worker for good
            // and the run hung at 100% CPU.
            .idle_timeout(None)
            .max_lifetime(None)
            // Longer than a busy wait: a task queued behind one that waits for another process's
            // lock must not give up first.
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        MIGRATOR.run(&pool).await.map_err(|source| LedgerError::Migrate {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Ledger { pool })
    }

    /// Begins a write transaction as a writer (`BEGIN IMMEDIATE`): it waits for the write lock up
    /// to [`BUSY_TIMEOUT`] before reading anything. A deferred `BEGIN` would read first, and when
    /// another process wrote in between, WAL answers its first write with `SQLITE_BUSY_SNAPSHOT`,
    /// which no busy timeout can wait out. Every transaction that writes starts here.
    ///
    /// A connection that comes back from the pool still inside a transaction (a future dropped
    /// mid-transaction whose queued rollback could not run, as when a statement of it was still
    /// active) is closed and a fresh one taken: its writes were never committed, and a new
    /// transaction on it would only be a savepoint inside that stale one.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        use sqlx::Connection as _;
        let mut conn = self.pool.acquire().await?;
        for _ in 0..3 {
            if !conn.is_in_transaction() {
                break;
            }
            tracing::warn!("a ledger connection was left inside a transaction; opening a fresh one");
            conn.close_on_drop();
            drop(conn);
            conn = self.pool.acquire().await?;
        }
        Ok(sqlx::Transaction::begin(conn, Some("BEGIN IMMEDIATE".into())).await?)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- jobs and passes ------------------------------------------------------------------

    /// Creates the job, or updates its file path and fingerprint; returns its id.
    pub async fn upsert_job(&self, name: &str, file_path: &str, file_fingerprint: &str) -> Result<i64> {
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO jobs (name, file_path, file_fingerprint, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (name) DO UPDATE SET file_path = ?2, file_fingerprint = ?3, updated_at = ?4
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

    pub async fn job(&self, name: &str) -> Result<JobRecord> {
        sqlx::query_as::<_, JobRecord>(
            "SELECT id, name, file_path, file_fingerprint FROM jobs WHERE name = ?1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| LedgerError::NoSuchJob(name.to_string()))
    }

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

    pub async fn set_pass_status(&self, job_id: i64, pass: Pass, status: &str) -> Result<()> {
        let finished = matches!(status, "finished" | "budget_exhausted" | "refused").then(now_ms);
        sqlx::query("UPDATE job_passes SET status = ?3, finished_at = ?4 WHERE job_id = ?1 AND pass = ?2")
            .bind(job_id)
            .bind(pass.as_str())
            .bind(status)
            .bind(finished)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- loading tasks ----------------------------------------------------------------------

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
        Ok(Loader {
            conn,
            job_id,
            pass,
            inserted: 0,
            committed: false,
        })
    }

    // ---- scheduling ------------------------------------------------------------------------

    /// Up to `limit` pending tasks of the pass with an id above `after`, in file order.
    pub async fn pending_tasks(
        &self,
        job_id: i64,
        pass: Pass,
        after: i64,
        limit: i64,
    ) -> Result<Vec<TaskRecord>> {
        Ok(sqlx::query_as::<_, TaskRecord>(&format!(
            "{TASK_COLUMNS} WHERE job_id = ?1 AND pass = ?2 AND state = 'pending' AND superseded = 0 AND id > ?3
             ORDER BY id LIMIT ?4"
        ))
        .bind(job_id)
        .bind(pass.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Tasks a previous run left between reserving and finishing: the resume work list.
    pub async fn unfinished_tasks(&self, job_id: i64, pass: Pass) -> Result<Vec<TaskRecord>> {
        Ok(sqlx::query_as::<_, TaskRecord>(&format!(
            "{TASK_COLUMNS} WHERE job_id = ?1 AND pass = ?2 AND superseded = 0
             AND state IN ('reserved', 'submitting', 'submitted', 'downloading') ORDER BY id"
        ))
        .bind(job_id)
        .bind(pass.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn task(&self, task_id: i64) -> Result<TaskRecord> {
        Ok(
            sqlx::query_as::<_, TaskRecord>(&format!("{TASK_COLUMNS} WHERE id = ?1"))
                .bind(task_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Reserves the task's price against its pass's budget, in one transaction:
    /// spent + reserved + price ≤ budget, or nothing changes. The price is the task's table price,
    /// or the higher price the account was observed to charge for its model (`reprice`).
    pub async fn reserve(&self, task_id: i64) -> Result<Reservation> {
        let mut tx = self.begin_write().await?;
        let task: Option<(i64, String, i64, String)> = sqlx::query_as(&format!(
            "SELECT job_id, pass, {PRICE_IN_FORCE}, state FROM tasks t WHERE id = ?1"
        ))
        .bind(task_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((job_id, pass, price, state)) = task else {
            return Ok(Reservation::NotPending);
        };
        if state != "pending" {
            return Ok(Reservation::NotPending);
        }
        let updated = sqlx::query(
            "UPDATE job_passes SET reserved_micros = reserved_micros + ?3
             WHERE job_id = ?1 AND pass = ?2 AND spent_micros + reserved_micros + ?3 <= budget_micros",
        )
        .bind(job_id)
        .bind(&pass)
        .bind(price)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Ok(Reservation::OverBudget);
        }
        sqlx::query("UPDATE tasks SET state = 'reserved', reserved_micros = ?2 WHERE id = ?1")
            .bind(task_id)
            .bind(price)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Reservation::Reserved)
    }

    /// Gives the task's reservation back and returns it to `pending` (or to `state` if given:
    /// failed, blocked, skipped, cancelled, with its reason).
    pub async fn release(&self, task_id: i64, state: TaskState, reason: Option<&str>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        release_in(&mut tx, task_id).await?;
        let finished = state.is_terminal().then(now_ms);
        sqlx::query(
            "UPDATE tasks SET state = ?2, reason = ?3, finished_at = COALESCE(?4, finished_at) WHERE id = ?1",
        )
        .bind(task_id)
        .bind(state.as_str())
        .bind(reason)
        .bind(finished)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records the intent to send a create (before it leaves): returns the generation's row id.
    /// The task must hold its reservation.
    pub async fn record_intent(&self, task_id: i64, request_fingerprint: &str) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let attempt: i64 = sqlx::query_scalar(
            "UPDATE tasks SET state = 'submitting', attempts = attempts + 1,
                                first_sent_at = COALESCE(first_sent_at, ?2) WHERE id = ?1 RETURNING attempts",
        )
        .bind(task_id)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO generations (task_id, attempt, intent_at, request_fingerprint) VALUES (?1, ?2, ?3, ?4)
             RETURNING id",
        )
        .bind(task_id)
        .bind(attempt)
        .bind(now_ms())
        .bind(request_fingerprint)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The create's outcome is unknown (timeout after sending, reset, 5xx): the reservation stays,
    /// and the generation must be reconciled against the upstream's list before any re-send.
    pub async fn record_outcome_unknown(&self, generation: i64) -> Result<()> {
        sqlx::query(
            "UPDATE generations SET state = 'unknown' WHERE id = ?1 AND state IN ('intent', 'unknown')",
        )
        .bind(generation)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The create was certainly not accepted (refused before sending, 4xx, 429, or reconciliation
    /// found no match): the task keeps its reservation for the next attempt.
    /// `counts` says whether the attempt counts against the task's cap (a 429 does not).
    pub async fn record_not_created(&self, generation: i64, counts: bool) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE generations SET state = 'not_created' WHERE id = ?1")
            .bind(generation)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE tasks SET state = 'reserved', attempts = attempts - CASE WHEN ?2 THEN 0 ELSE 1 END
             WHERE id = (SELECT task_id FROM generations WHERE id = ?1)",
        )
        .bind(generation)
        .bind(counts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The upstream accepted the create: the reservation becomes a charge, logged. The charge is
    /// the price in force (the table's, or the higher observed one); any part of it the reservation
    /// did not cover (reserved before the price was raised) is unplanned spend.
    pub async fn record_submitted(&self, generation: i64, upstream_id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let (task_id, job_id, pass, reserved, price): (i64, i64, String, i64, i64) =
            sqlx::query_as(&format!(
                "SELECT t.id, t.job_id, t.pass, t.reserved_micros, {PRICE_IN_FORCE}
             FROM generations g JOIN tasks t ON t.id = g.task_id WHERE g.id = ?1"
            ))
            .bind(generation)
            .fetch_one(&mut *tx)
            .await?;
        let now = now_ms();
        sqlx::query(
            "UPDATE generations SET upstream_id = ?2, state = 'submitted', charge_micros = ?3, submitted_at = ?4
             WHERE id = ?1",
        )
        .bind(generation)
        .bind(upstream_id)
        .bind(price)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // The charge takes the reservation's place; if the task held none (adopted after a crash
        // that lost it), the charge is still recorded: the upstream took the money.
        let unplanned = if reserved > 0 {
            (price - reserved).max(0)
        } else {
            0
        };
        sqlx::query(
            "UPDATE job_passes SET reserved_micros = reserved_micros - ?3, spent_micros = spent_micros + ?4,
                                   unplanned_micros = unplanned_micros + ?5
             WHERE job_id = ?1 AND pass = ?2",
        )
        .bind(job_id)
        .bind(&pass)
        .bind(reserved)
        .bind(price)
        .bind(unplanned)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE tasks SET state = 'submitted', reserved_micros = 0, cost_micros = cost_micros + ?2 WHERE id = ?1",
        )
        .bind(task_id)
        .bind(price)
        .execute(&mut *tx)
        .await?;
        insert_spend(&mut tx, job_id, &pass, task_id, generation, "charge", price, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The generation ended `failed` upstream: its charge is refunded. The task goes to `next`
    /// (`Pending` to retry, `Blocked`/`Failed` to end) with the reason.
    pub async fn record_generation_failed(
        &self,
        generation: i64,
        reason: &str,
        next: TaskState,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let (task_id, state): (i64, String) =
            sqlx::query_as("SELECT task_id, state FROM generations WHERE id = ?1")
                .bind(generation)
                .fetch_one(&mut *tx)
                .await?;
        if state == "failed" {
            return Ok(()); // already settled (a duplicate report)
        }
        let now = now_ms();
        fail_and_refund(&mut tx, generation, reason, now).await?;
        let finished = next.is_terminal().then_some(now);
        sqlx::query("UPDATE tasks SET state = ?2, reason = ?3, finished_at = ?4 WHERE id = ?1")
            .bind(task_id)
            .bind(next.as_str())
            .bind(reason)
            .bind(finished)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The generation completed upstream: its image is at `image_url`; the task is downloading.
    pub async fn record_completed(&self, generation: i64, image_url: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE generations SET state = 'completed', image_url = ?2, completed_at = ?3 WHERE id = ?1",
        )
        .bind(generation)
        .bind(image_url)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE tasks SET state = 'downloading' WHERE id = (SELECT task_id FROM generations WHERE id = ?1)",
        )
        .bind(generation)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The task's image is on disk (verified, synced, renamed): the task is done and this
    /// generation is the one it keeps. `content` is what was written (its hash and size); any
    /// damage recorded against the task's earlier file is cleared.
    pub async fn record_done(
        &self,
        generation: i64,
        output_path: &str,
        content: &ImageContent,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let now = now_ms();
        let (task_id, upstream_id): (i64, Option<String>) = sqlx::query_as(
            "UPDATE generations SET state = 'kept' WHERE id = ?1 RETURNING task_id, upstream_id",
        )
        .bind(generation)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE tasks SET state = 'done', reason = NULL, output_path = ?2, generation_id = ?3, finished_at = ?4,
                    latency_ms = ?4 - first_sent_at, content_hash = ?5, content_bytes = ?6, damage = NULL
             WHERE id = ?1",
        )
        .bind(task_id)
        .bind(output_path)
        .bind(upstream_id)
        .bind(now)
        .bind(&content.hash)
        .bind(content.bytes)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A task whose image came from the cache: done at no cost. `content` is what was copied (it
    /// hashed to the source's recorded hash).
    pub async fn record_cached(
        &self,
        task_id: i64,
        output_path: &str,
        from_generation: Option<&str>,
        content: &ImageContent,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE tasks SET state = 'done', cached = 1, reason = NULL, output_path = ?2, generation_id = ?3,
                    finished_at = ?4, latency_ms = 0, content_hash = ?5, content_bytes = ?6, damage = NULL
             WHERE id = ?1",
        )
        .bind(task_id)
        .bind(output_path)
        .bind(from_generation)
        .bind(now_ms())
        .bind(&content.hash)
        .bind(content.bytes)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The sum of prices of the pass's pending tasks: what finishing it would cost.
    pub async fn pending_cost(&self, job_id: i64, pass: Pass) -> Result<Money> {
        let sum: Option<i64> = sqlx::query_scalar(
            "SELECT SUM(price_micros) FROM tasks WHERE job_id = ?1 AND pass = ?2 AND state = 'pending' AND superseded = 0",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(Money::from_micros(sum.unwrap_or(0)))
    }

    /// Every pending task of the pass ends as `state` (skipped for budget or deadline, cancelled).
    pub async fn end_pending(&self, job_id: i64, pass: Pass, state: TaskState, reason: &str) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE tasks SET state = ?3, reason = ?4, finished_at = ?5
             WHERE job_id = ?1 AND pass = ?2 AND state = 'pending' AND superseded = 0",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .bind(state.as_str())
        .bind(reason)
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Tasks that ended skipped (budget, deadline) go back to pending, so a resumed run with a
    /// raised budget takes them up again. Returns how many.
    pub async fn reopen_skipped(&self, job_id: i64, pass: Pass) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE tasks SET state = 'pending', reason = NULL, finished_at = NULL
             WHERE job_id = ?1 AND pass = ?2 AND state IN ('skipped', 'cancelled') AND superseded = 0",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Failed (not blocked) tasks get another round of attempts on a new run.
    pub async fn reopen_failed(&self, job_id: i64, pass: Pass) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE tasks SET state = 'pending', reason = NULL, finished_at = NULL, attempts = 0
             WHERE job_id = ?1 AND pass = ?2 AND state = 'failed' AND superseded = 0",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    // ---- generations -----------------------------------------------------------------------

    /// The task's generations that may still hold money or an image: the last intent and
    /// anything submitted or completed and not yet settled.
    pub async fn open_generations(&self, task_id: i64) -> Result<Vec<GenerationRecord>> {
        Ok(sqlx::query_as::<_, GenerationRecord>(&format!(
            "{GENERATION_COLUMNS} WHERE task_id = ?1 AND state IN ('intent', 'unknown', 'submitted', 'completed')
             ORDER BY id"
        ))
        .bind(task_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether this upstream id is already claimed by a generation in the ledger.
    pub async fn is_claimed(&self, upstream_id: &str) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM generations WHERE upstream_id = ?1")
            .bind(upstream_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// A generation that will not be kept (the task ended another way): abandoned, its charge
    /// stays (the upstream kept the money).
    pub async fn abandon_generation(&self, generation: i64) -> Result<()> {
        sqlx::query("UPDATE generations SET state = 'abandoned' WHERE id = ?1")
            .bind(generation)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Abandoned generations of the pass that still hold a charge: the upstream may yet fail them
    /// (and refund) or finish them. `(generation, upstream id)`, oldest first, at most `limit`.
    pub async fn charged_abandoned(&self, job_id: i64, pass: Pass, limit: i64) -> Result<Vec<(i64, String)>> {
        Ok(sqlx::query_as(
            "SELECT g.id, g.upstream_id FROM generations g JOIN tasks t ON t.id = g.task_id
             WHERE t.job_id = ?1 AND t.pass = ?2 AND g.state = 'abandoned' AND g.charge_micros > 0
               AND g.upstream_id IS NOT NULL
             ORDER BY g.id LIMIT ?3",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// An abandoned generation ended upstream after all. `Some(reason)`: it failed and the upstream
    /// refunded it, so the ledger refunds it too (the task is not touched: it went on without it).
    /// `None`: it completed; its charge stays, and it is no longer checked (`extra`).
    pub async fn settle_abandoned(&self, generation: i64, failed: Option<&str>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let state: String = sqlx::query_scalar("SELECT state FROM generations WHERE id = ?1")
            .bind(generation)
            .fetch_one(&mut *tx)
            .await?;
        if state != "abandoned" {
            return Ok(());
        }
        let now = now_ms();
        let Some(reason) = failed else {
            sqlx::query("UPDATE generations SET state = 'extra', completed_at = ?2 WHERE id = ?1")
                .bind(generation)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(());
        };
        fail_and_refund(&mut tx, generation, reason, now).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- reporting -------------------------------------------------------------------------

    /// Counts per state, spend and reservations of the pass.
    pub async fn counts(&self, job_id: i64, pass: Pass) -> Result<Counts> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT state, COUNT(*), SUM(cached) FROM tasks WHERE job_id = ?1 AND pass = ?2 AND superseded = 0
             GROUP BY state",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut counts = Counts::default();
        for (state, n, cached) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            counts.total += n;
            match state.as_str() {
                "done" => {
                    counts.done += n;
                    counts.cached += u64::try_from(cached).unwrap_or(0);
                }
                "failed" => counts.failed += n,
                "blocked" => counts.blocked += n,
                "skipped" => counts.skipped += n,
                "cancelled" => counts.cancelled += n,
                "pending" => counts.pending += n,
                _ => counts.in_flight += n,
            }
        }
        let attempts: Option<i64> = sqlx::query_scalar(
            "SELECT SUM(attempts) FROM tasks WHERE job_id = ?1 AND pass = ?2 AND superseded = 0",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .fetch_one(&self.pool)
        .await?;
        counts.attempts = u64::try_from(attempts.unwrap_or(0)).unwrap_or(0);
        Ok(counts)
    }

    /// The sum of charges minus refunds in the money log of the whole ledger: what the upstream
    /// billed. Equals the sum of `spent` over every pass.
    pub async fn net_charges(&self) -> Result<Money> {
        let net: Option<i64> =
            sqlx::query_scalar("SELECT SUM(CASE kind WHEN 'charge' THEN micros ELSE -micros END) FROM spend")
                .fetch_one(&self.pool)
                .await?;
        Ok(Money::from_micros(net.unwrap_or(0)))
    }

    /// Every upstream generation in the ledger: (upstream id, state, net charge in micro-dollars).
    /// For audits: a charge the upstream kept must belong to a kept (or abandoned) generation here.
    pub async fn upstream_generations(&self) -> Result<Vec<(String, String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT upstream_id, state, charge_micros FROM generations WHERE upstream_id IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The metadata keys used by any task of the job (both passes): the manifest's extra columns.
    pub async fn metadata_keys(&self, job_id: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT m.key FROM tasks t, json_each(t.metadata_json) m
             WHERE t.job_id = ?1 AND t.superseded = 0 ORDER BY m.key",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Finished or ended tasks of the pass, a page at a time, for the outputs.
    pub async fn results(
        &self,
        job_id: i64,
        pass: Pass,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ResultRecord>> {
        Ok(sqlx::query_as::<_, ResultRecord>(
            "SELECT id, task_key, row_id, pass, model, state, reason, output_path, price_micros, cost_micros, generation_id,
                    attempts, cached, latency_ms, prompt, aspect_ratio, metadata_json, variant, reference_note,
                    content_hash, content_bytes,
                    (SELECT p.task_key FROM tasks p WHERE p.id = tasks.preview_task_id) AS preview_key
             FROM tasks WHERE job_id = ?1 AND pass = ?2 AND superseded = 0 AND id > ?3 ORDER BY id LIMIT ?4",
        )
        .bind(job_id)
        .bind(pass.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// A task to load, with what the ledger keeps beside it.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub task: Task,
    /// The line of the job file its row starts on.
    pub line: u64,
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
            let mut sql = String::from("INSERT OR IGNORE INTO loaded_keys (task_key, fingerprint) VALUES ");
            push_placeholders(&mut sql, chunk.len(), 2);
            let mut query = sqlx::query(&sql);
            for (key, new) in keys.iter().zip(chunk) {
                query = query.bind(key).bind(&new.task.fingerprint);
            }
            query.execute(&mut *self.conn).await?;

            let mut sql = String::from(
                "INSERT INTO tasks (job_id, pass, task_key, row_id, line, variant, variants, model, fingerprint,
                                    request_json, prompt, aspect_ratio, format, metadata_json, price_micros)
                 VALUES ",
            );
            push_placeholders(&mut sql, chunk.len(), 15);
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
                query = query
                    .bind(self.job_id)
                    .bind(self.pass.as_str())
                    .bind(key)
                    .bind(&task.row_id)
                    .bind(i64::try_from(*line).unwrap_or(i64::MAX))
                    .bind(task.variant)
                    .bind(task.variants)
                    .bind(task.model.as_str())
                    .bind(&task.fingerprint)
                    .bind(request_json)
                    .bind(&task.prompt)
                    .bind(task.aspect_ratio.as_str())
                    .bind(task.format.as_str())
                    .bind(metadata)
                    .bind(price.micros());
            }
            self.inserted += query.execute(&mut *self.conn).await?.rows_affected();
        }
        Ok(())
    }

    /// Supersedes the pass's tasks that the file no longer has, records the file fingerprint
    /// loaded, and commits. Returns how many task rows were inserted or refreshed.
    pub async fn finish(mut self, file_fingerprint: &str) -> Result<u64> {
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
        sqlx::query("UPDATE job_passes SET loaded_fingerprint = ?3 WHERE job_id = ?1 AND pass = ?2")
            .bind(self.job_id)
            .bind(pass)
            .bind(file_fingerprint)
            .execute(&mut *self.conn)
            .await?;
        sqlx::query("DELETE FROM loaded_keys")
            .execute(&mut *self.conn)
            .await?;
        sqlx::query("COMMIT").execute(&mut *self.conn).await?;
        self.committed = true;
        Ok(self.inserted)
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

/// A task's price per image as an expression over `tasks t`: its table price, or the higher price
/// its pass was re-priced to for its model once the account was observed to charge more.
const PRICE_IN_FORCE: &str = "MAX(t.price_micros, COALESCE((SELECT p.price_micros FROM pass_prices p
    WHERE p.job_id = t.job_id AND p.pass = t.pass AND p.model = t.model), 0))";

const TASK_COLUMNS: &str = "SELECT id, job_id, pass, task_key, row_id, variant, variants, model, fingerprint,
    request_json, prompt, aspect_ratio, format, metadata_json, state, reason, price_micros, reserved_micros,
    cost_micros, attempts, output_path, generation_id FROM tasks";

const GENERATION_COLUMNS: &str = "SELECT id, task_id, attempt, upstream_id, intent_at, request_fingerprint,
    state, failure_reason, charge_micros, image_url FROM generations";

/// Marks a generation failed and refunds its charge, if it held one: the pass's spend, the task's
/// cost and a refund in the money log.
async fn fail_and_refund(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    generation: i64,
    reason: &str,
    now: i64,
) -> Result<()> {
    let (task_id, job_id, pass, charge): (i64, i64, String, i64) = sqlx::query_as(
        "SELECT t.id, t.job_id, t.pass, g.charge_micros FROM generations g JOIN tasks t ON t.id = g.task_id
         WHERE g.id = ?1",
    )
    .bind(generation)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE generations SET state = 'failed', failure_reason = ?2, charge_micros = 0, completed_at = ?3
         WHERE id = ?1",
    )
    .bind(generation)
    .bind(reason)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    if charge > 0 {
        sqlx::query("UPDATE job_passes SET spent_micros = spent_micros - ?3 WHERE job_id = ?1 AND pass = ?2")
            .bind(job_id)
            .bind(&pass)
            .bind(charge)
            .execute(&mut **tx)
            .await?;
        sqlx::query("UPDATE tasks SET cost_micros = cost_micros - ?2 WHERE id = ?1")
            .bind(task_id)
            .bind(charge)
            .execute(&mut **tx)
            .await?;
        insert_spend(tx, job_id, &pass, task_id, generation, "refund", charge, now).await?;
    }
    Ok(())
}

async fn release_in(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, task_id: i64) -> Result<()> {
    let (job_id, pass, reserved): (i64, String, i64) =
        sqlx::query_as("SELECT job_id, pass, reserved_micros FROM tasks WHERE id = ?1")
            .bind(task_id)
            .fetch_one(&mut **tx)
            .await?;
    if reserved > 0 {
        sqlx::query(
            "UPDATE job_passes SET reserved_micros = reserved_micros - ?3 WHERE job_id = ?1 AND pass = ?2",
        )
        .bind(job_id)
        .bind(&pass)
        .bind(reserved)
        .execute(&mut **tx)
        .await?;
        sqlx::query("UPDATE tasks SET reserved_micros = 0 WHERE id = ?1")
            .bind(task_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn insert_spend(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    job_id: i64,
    pass: &str,
    task_id: i64,
    generation: i64,
    kind: &str,
    micros: i64,
    at: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO spend (job_id, pass, task_id, generation_id, kind, micros, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .bind(job_id)
    .bind(pass)
    .bind(task_id)
    .bind(generation)
    .bind(kind)
    .bind(micros)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The lock file that serialises opening a ledger: `PATH-lock` beside it (SQLite's own files are
/// `PATH-wal` and `PATH-shm`; a job's run lock is `PATH.JOB.lock`, so the names can't meet). It is
/// left in place: removing a lock file another process may be about to lock would break the lock.
pub(crate) fn open_lock_path(ledger: &Path) -> std::path::PathBuf {
    let mut name = ledger.as_os_str().to_owned();
    name.push("-lock");
    std::path::PathBuf::from(name)
}

/// Takes the exclusive open lock on [`open_lock_path`], waiting (off the async threads) for another
/// process that is opening or migrating the same ledger. The OS releases it when the returned file
/// is dropped or the process dies. The ledger file itself is never locked this way: SQLite's own
/// POSIX locks on it are released when any descriptor of the file in the process is closed.
async fn lock_for_open(ledger: &Path) -> std::io::Result<std::fs::File> {
    let path = open_lock_path(ledger);
    tokio::task::spawn_blocking(move || {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&path)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Creates the ledger file readable and writable by its owner only: it holds prompts, spend and
/// upstream ids of a business's work.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn pass_with(budget: i64) -> (tempfile::TempDir, Ledger, i64) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("darkroom.db")).await.unwrap();
        let job = ledger.upsert_job("job", "job.csv", "fp").await.unwrap();
        ledger
            .set_budget(job, Pass::Preview, Money::from_micros(budget))
            .await
            .unwrap();
        (dir, ledger, job)
    }

    #[tokio::test]
    async fn the_schema_refuses_a_reservation_past_the_budget_but_records_unplanned_charges() {
        let (_dir, ledger, job) = pass_with(10_000).await;
        let reserve = |micros: i64| {
            sqlx::query("UPDATE job_passes SET reserved_micros = reserved_micros + ?2 WHERE job_id = ?1")
                .bind(job)
                .bind(micros)
                .execute(&ledger.pool)
        };
        reserve(10_000).await.unwrap();
        assert!(
            reserve(1).await.is_err(),
            "a reservation past the budget must be refused"
        );
        // A charge nobody reserved for (found after the fact) is real money: it is recorded even
        // past the budget, and then nothing more can be reserved.
        sqlx::query(
            "UPDATE job_passes SET reserved_micros = 0, spent_micros = 14000, unplanned_micros = 4000
             WHERE job_id = ?1",
        )
        .bind(job)
        .execute(&ledger.pool)
        .await
        .unwrap();
        assert!(reserve(1).await.is_err());
        let pass = ledger.pass(job, Pass::Preview).await.unwrap().unwrap();
        assert_eq!((pass.spent_micros, pass.unplanned_micros), (14_000, 4_000));
        assert_eq!(pass.remaining(), Money::ZERO);
        // Keeping the budget is allowed (a resume with the same --budget); lowering it is not.
        ledger
            .set_budget(job, Pass::Preview, Money::from_micros(10_000))
            .await
            .unwrap();
        assert!(ledger
            .set_budget(job, Pass::Preview, Money::from_micros(9_000))
            .await
            .is_err());
        ledger
            .set_budget(job, Pass::Preview, Money::from_micros(20_000))
            .await
            .unwrap();
        assert_eq!(
            ledger
                .pass(job, Pass::Preview)
                .await
                .unwrap()
                .unwrap()
                .remaining(),
            Money::from_micros(6_000)
        );
    }
}
