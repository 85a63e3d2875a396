//! Opening a ledger: the private file, the OS lock that serialises opening and migrating, the
//! connection pool, the embedded migrations, and `begin_write`, where every write transaction starts.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use crate::error::BackendError;
use crate::{LedgerError, Result};

/// The ledger: a handle on one SQLite file.
#[derive(Debug, Clone)]
pub struct Ledger {
    pub(crate) pool: SqlitePool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// How long a connection waits for another process's lock before failing with "database is
/// locked". The longest write transaction a darkroom process holds is a job file's load (about
/// 15 s for a million tasks on a laptop); two minutes leaves room for larger files and a loaded
/// machine. Readers (`darkroom status`) never wait: WAL lets them read beside a writer.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(120);

/// The tracing target of the event every write transaction emits as it begins (at `TRACE`): a
/// transaction is two statements sqlx does not log itself, its `BEGIN` and its `COMMIT` (or
/// `ROLLBACK`). Every other statement is an event of target `sqlx::query`.
pub const TRANSACTION_TARGET: &str = "darkroom_ledger::transaction";

/// How long a task waits for the process's one connection: longer than [`BUSY_TIMEOUT`], so the
/// task holding it can wait out another process's lock first.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(300);

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
    /// isn't a SQLite database, [`LedgerError::Migrate`] when the schema can't be brought up to date,
    /// [`LedgerError::BadValue`] when a state, pass or model column holds a text this release does
    /// not know (checked once here, so no command passes over such a row; see `stored_values`).
    pub async fn open(path: &Path) -> Result<Ledger> {
        let open_error = |source: sqlx::Error| LedgerError::Open {
            path: path.display().to_string(),
            source: BackendError::new(source),
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
            source: BackendError::new(source),
        })?;
        let ledger = Ledger { pool };
        ledger.check_stored_values().await?;
        Ok(ledger)
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
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
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
        // sqlx logs every statement it runs (target `sqlx::query`) except a transaction's own
        // `BEGIN` and `COMMIT`: this event stands for both, so the statements a task costs can be
        // counted (`darkroom-engine`'s `tests/ledger_statements.rs`).
        tracing::trace!(target: TRANSACTION_TARGET, "BEGIN IMMEDIATE");
        Ok(sqlx::Transaction::begin(conn, Some("BEGIN IMMEDIATE".into())).await?)
    }

    /// Closes the ledger's connections, waiting for the one in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }
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
