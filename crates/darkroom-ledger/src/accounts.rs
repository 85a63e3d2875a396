//! Accounts (migration 0013): the create rate and the in-flight cap of one upstream account,
//! shared by every run on it through the ledger, in one process or many.
//!
//! A run joins its account (`join_account`: the account's row, created or brought up to date, and a
//! holder row for the run, kept alive by `account_heartbeat`) and asks for a permit before each
//! create (`record_intent_on_account`). The permit is decided and the intent written in one write
//! transaction, so concurrent runs cannot both take the last slot or the same instant:
//!
//! - **In flight**: a slot is a generation of the account in `intent`, `unknown` or `submitted`,
//!   held from its intent until some run records its end. A killed run's generations keep their
//!   slots for [`SLOT_HORIZON_MS`] after their intent (the upstream may still be working on them),
//!   or until a resumed run sees them end, whichever comes first.
//! - **Rate**: GCRA with no burst. `accounts.tat_ms` is the earliest instant the next create may
//!   go; each permit moves it one interval on. While a run is alone on the account (no other
//!   holder alive) the permit never waits, so its own create gate paces it as before (learned
//!   bursts included), but `tat_ms` still moves, so a run that joins later waits for what the first
//!   one used. With two or more runs alive, a permit waits until `tat_ms`, at most
//!   [`MAX_PERMIT_WAIT_MS`]: a later one is refused with the time to ask again.
//! - **Pauses**: a 429's `Retry-After` given to any run (`pause_account`) holds every other run's
//!   permits until it ends.
//!
//! Times are Unix milliseconds passed in by the caller, so tests can move the clock.

use crate::tasks::insert_intent;
use crate::{Ledger, Result};

/// A holder whose heartbeat is older than this is no longer a run (killed, or its machine asleep).
pub const HOLDER_LEASE_MS: i64 = 30_000;
/// How long a generation of a run that is no longer alive keeps its in-flight slot after its intent.
pub const SLOT_HORIZON_MS: i64 = 10 * 60_000;
/// The longest wait a permit is granted with; a create further off is refused with a time to ask again.
pub const MAX_PERMIT_WAIT_MS: i64 = 2_000;
/// When the account is at its in-flight cap, how long until asking again.
pub const IN_FLIGHT_RETRY_MS: i64 = 250;

/// Which account a run is on, and the limits it runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSpec {
    /// The account's name: configured, or derived from the key's hash and the base URL.
    pub name: String,
    /// A hash of the key (never the key itself), hex.
    pub key_hash: String,
    /// The API's base URL.
    pub base_url: String,
    /// Milliseconds between two creates at the account's rate; 0 for no rate limit.
    pub create_interval_ms: i64,
    /// Generations in flight at once on the account; 0 for no cap.
    pub max_in_flight: u32,
}

/// A run's place in an account's limits: the account's row id and the run's holder row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountHolder {
    /// `accounts.id`.
    pub account_id: i64,
    /// `account_holders.id`.
    pub holder_id: i64,
}

/// The answer to a permit: the intent is written and the create may go after `wait_ms`, or nothing
/// was written and the run asks again after `retry_in_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// The intent is recorded (generation row id); send after `wait_ms` milliseconds.
    Granted {
        /// The generation's row id.
        generation: i64,
        /// Milliseconds to wait before sending (0 when the account's rate allows it now).
        wait_ms: i64,
    },
    /// Nothing was written; ask again after `retry_in_ms` milliseconds.
    Wait {
        /// Milliseconds until asking again.
        retry_in_ms: i64,
        /// What the create waits for.
        reason: PermitWait,
    },
}

/// What a refused permit waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermitWait {
    /// The account has `cap` generations in flight.
    InFlight {
        /// The account's cap.
        cap: i64,
    },
    /// The account's rate: the next create's instant is further off than [`MAX_PERMIT_WAIT_MS`].
    Rate,
    /// A `Retry-After` another run was given has not ended.
    Paused,
}

/// An account as `darkroom budget` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountRecord {
    /// Row id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// The API's base URL.
    pub base_url: String,
    /// Milliseconds between creates (0: no rate limit).
    pub create_interval_ms: i64,
    /// The in-flight cap (0: none).
    pub max_in_flight: i64,
    /// Runs alive on it now.
    pub live_runs: i64,
    /// Generations in flight on it now (as the ledger counts them).
    pub in_flight: i64,
}

/// Generations of account `?1` holding a slot at instant `?2` (`?3`: [`SLOT_HORIZON_MS`], `?4`:
/// [`HOLDER_LEASE_MS`]).
const IN_FLIGHT: &str = "SELECT COUNT(*) FROM generations g
     WHERE g.account_id = ?1 AND g.state IN ('intent', 'unknown', 'submitted')
       AND (g.intent_at >= ?2 - ?3
            OR g.holder_id IN (SELECT h.id FROM account_holders h
                               WHERE h.account_id = ?1 AND h.heartbeat_at > ?2 - ?4))";

impl Ledger {
    /// Joins the run to the account `spec` names: creates the account's row or brings its key
    /// hash, base URL and limits up to date (the last run to join sets them), and adds a holder row
    /// for this run (process `pid`, job `job_id`), alive from `now`.
    pub async fn join_account(
        &self,
        spec: &AccountSpec,
        job_id: Option<i64>,
        pid: u32,
        now: i64,
    ) -> Result<AccountHolder> {
        let mut tx = self.begin_write().await?;
        let account_id: i64 = sqlx::query_scalar(
            "INSERT INTO accounts (name, key_hash, base_url, create_interval_ms, max_in_flight, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             ON CONFLICT (name) DO UPDATE SET key_hash = excluded.key_hash, base_url = excluded.base_url,
                 create_interval_ms = excluded.create_interval_ms, max_in_flight = excluded.max_in_flight,
                 updated_at = excluded.updated_at
             RETURNING id",
        )
        .bind(&spec.name)
        .bind(&spec.key_hash)
        .bind(&spec.base_url)
        .bind(spec.create_interval_ms.max(0))
        .bind(i64::from(spec.max_in_flight))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        // Rows of runs long gone are only clutter: a holder is needed while its generations may
        // still hold slots.
        sqlx::query("DELETE FROM account_holders WHERE account_id = ?1 AND heartbeat_at < ?2")
            .bind(account_id)
            .bind(now - SLOT_HORIZON_MS - HOLDER_LEASE_MS)
            .execute(&mut *tx)
            .await?;
        let holder_id: i64 = sqlx::query_scalar(
            "INSERT INTO account_holders (account_id, job_id, pid, started_at, heartbeat_at)
             VALUES (?1, ?2, ?3, ?4, ?4) RETURNING id",
        )
        .bind(account_id)
        .bind(job_id)
        .bind(i64::from(pid))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(AccountHolder {
            account_id,
            holder_id,
        })
    }

    /// Keeps the run's holder alive (call well within [`HOLDER_LEASE_MS`]).
    pub async fn account_heartbeat(&self, holder: AccountHolder, now: i64) -> Result<()> {
        sqlx::query("UPDATE account_holders SET heartbeat_at = ?2 WHERE id = ?1")
            .bind(holder.holder_id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The run leaves the account: its holder row goes. Generations it left in flight keep their
    /// slots until their end is recorded or [`SLOT_HORIZON_MS`] after their intent.
    pub async fn leave_account(&self, holder: AccountHolder) -> Result<()> {
        sqlx::query("DELETE FROM account_holders WHERE id = ?1")
            .bind(holder.holder_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A run on the account was given a `Retry-After` ending at `until` (Unix ms): every run's
    /// permits wait for it (a later end only ever extends the pause).
    pub async fn pause_account(&self, account_id: i64, until: i64) -> Result<()> {
        sqlx::query("UPDATE accounts SET paused_until_ms = MAX(paused_until_ms, ?2) WHERE id = ?1")
            .bind(account_id)
            .bind(until)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The account's permit for the task's next create, decided in the transaction that writes the
    /// intent (see the module's text): [`Permit::Granted`] with the intent's generation row id
    /// (tagged with the account and the run, so it holds an in-flight slot), or [`Permit::Wait`]
    /// with nothing written. The task must hold its reservation.
    pub async fn record_intent_on_account(
        &self,
        task_id: i64,
        request_fingerprint: &str,
        provider: &str,
        holder: AccountHolder,
        now: i64,
    ) -> Result<Permit> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE account_holders SET heartbeat_at = ?2 WHERE id = ?1")
            .bind(holder.holder_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let (interval, cap, tat, paused_until): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT create_interval_ms, max_in_flight, tat_ms, paused_until_ms FROM accounts WHERE id = ?1",
        )
        .bind(holder.account_id)
        .fetch_one(&mut *tx)
        .await?;
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM account_holders WHERE account_id = ?1 AND heartbeat_at > ?2",
        )
        .bind(holder.account_id)
        .bind(now - HOLDER_LEASE_MS)
        .fetch_one(&mut *tx)
        .await?;
        let shared = live > 1;
        if shared && paused_until > now {
            return Ok(Permit::Wait {
                retry_in_ms: paused_until - now,
                reason: PermitWait::Paused,
            });
        }
        if cap > 0 {
            let in_flight: i64 = sqlx::query_scalar(IN_FLIGHT)
                .bind(holder.account_id)
                .bind(now)
                .bind(SLOT_HORIZON_MS)
                .bind(HOLDER_LEASE_MS)
                .fetch_one(&mut *tx)
                .await?;
            if in_flight >= cap {
                return Ok(Permit::Wait {
                    retry_in_ms: IN_FLIGHT_RETRY_MS,
                    reason: PermitWait::InFlight { cap },
                });
            }
        }
        let next = tat.max(now);
        let wait_ms = if shared && interval > 0 { next - now } else { 0 };
        if wait_ms > MAX_PERMIT_WAIT_MS {
            return Ok(Permit::Wait {
                retry_in_ms: wait_ms - MAX_PERMIT_WAIT_MS,
                reason: PermitWait::Rate,
            });
        }
        let generation = insert_intent(&mut tx, task_id, request_fingerprint, provider, now).await?;
        sqlx::query("UPDATE generations SET account_id = ?2, holder_id = ?3 WHERE id = ?1")
            .bind(generation)
            .bind(holder.account_id)
            .bind(holder.holder_id)
            .execute(&mut *tx)
            .await?;
        if interval > 0 {
            sqlx::query("UPDATE accounts SET tat_ms = ?2 WHERE id = ?1")
                .bind(holder.account_id)
                .bind(next + interval)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Permit::Granted { generation, wait_ms })
    }

    /// Whether any other job or pass sent a create on the account after generation
    /// `after_generation`: the account's balance then moved for more than this pass's charges, so
    /// a reading of it says nothing about this pass's price.
    pub async fn others_on_account_since(
        &self,
        account_id: i64,
        job_id: i64,
        pass: darkroom_jobs::Pass,
        after_generation: i64,
    ) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM generations g JOIN tasks t ON t.id = g.task_id
                            WHERE g.account_id = ?1 AND g.id > ?4 AND NOT (t.job_id = ?2 AND t.pass = ?3))",
        )
        .bind(account_id)
        .bind(job_id)
        .bind(pass.as_str())
        .bind(after_generation)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Every account this ledger has seen, by name, with its runs alive and generations in flight
    /// at `now`.
    pub async fn accounts(&self, now: i64) -> Result<Vec<AccountRecord>> {
        Ok(sqlx::query_as::<_, AccountRecord>(&format!(
            "SELECT a.id, a.name, a.base_url, a.create_interval_ms, a.max_in_flight,
                    (SELECT COUNT(*) FROM account_holders h WHERE h.account_id = a.id AND h.heartbeat_at > ?2 - ?4)
                        AS live_runs,
                    ({}) AS in_flight
             FROM accounts a ORDER BY a.name",
            IN_FLIGHT.replace("?1", "a.id")
        ))
        .bind(0)
        .bind(now)
        .bind(SLOT_HORIZON_MS)
        .bind(HOLDER_LEASE_MS)
        .fetch_all(&self.pool)
        .await?)
    }
}
