//! The run's share of its account's limits (issue 17): which account a run is on (`Account`: the
//! key's hash and the base URL, or a configured name), joining it in the ledger, the heartbeat
//! that keeps the run counted as alive, and the permit every create asks the ledger for.
//!
//! The ledger decides each permit in the transaction that writes the create's intent
//! (`Ledger::record_intent_on_account`): the account's in-flight cap counted over every run's
//! generations, its create rate (GCRA) while more than one run is alive on it, and any
//! `Retry-After` another run was given. The run's own create gate and in-flight semaphore still
//! apply, so a run alone on its account paces itself exactly as before (learned bursts included).
//! One task of a run asks at a time (`turn`), so a waiting run costs the ledger a few statements a
//! second, not one per task.

use std::time::Duration;

use darkroom_ledger::{AccountHolder, AccountSpec, Ledger, Permit, HOLDER_LEASE_MS};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::run_context::RunContext;
use crate::{EngineError, RunSettings};

/// The upstream account a run is on. Runs with the same `name` share its limits and budgets;
/// without a configured name, the name is derived from the key and the base URL, so the same key
/// on the same API is one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account's name (`[account] name`, `--account`, or `PROVIDER-HASH12`).
    pub name: String,
    /// A keyed BLAKE3 hash of the key, hex: what the ledger records instead of the key.
    pub key_hash: String,
    /// The API's base URL.
    pub base_url: String,
}

impl Account {
    /// The account of `key` on `base_url` with `provider`'s name (`luma`, `replicate`, `fal`),
    /// named `name` when one is configured. The key is only hashed, never kept.
    pub fn new(name: Option<&str>, provider: &str, base_url: &str, key: &str) -> Account {
        let key_hash = blake3::Hasher::new_derive_key("darkroom 2026-11 account key")
            .update(key.as_bytes())
            .finalize()
            .to_hex()
            .to_string();
        let base_url = base_url.trim_end_matches('/').to_string();
        let name = match name.map(str::trim).filter(|n| !n.is_empty()) {
            Some(name) => name.to_string(),
            None => {
                let identity = blake3::hash(format!("{key_hash}\n{base_url}").as_bytes()).to_hex();
                format!("{provider}-{}", &identity[..12])
            }
        };
        Account {
            name,
            key_hash,
            base_url,
        }
    }
}

impl Account {
    /// The same account under the configured `name`, when one is given (a blank name keeps the
    /// derived one).
    #[must_use]
    pub fn named(mut self, name: Option<&str>) -> Account {
        if let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) {
            self.name = name.to_string();
        }
        self
    }
}

/// A run's place in its account's limits: its holder row, the heartbeat keeping it alive, and the
/// turn its tasks take to ask for permits.
#[derive(Debug)]
pub(crate) struct SharedAccount {
    pub(crate) holder: AccountHolder,
    turn: tokio::sync::Mutex<()>,
    heartbeat: JoinHandle<()>,
    stop: CancellationToken,
}

/// What asking for a create's intent gave.
pub(crate) enum Intent {
    /// The intent is recorded: this generation row.
    Recorded(i64),
    /// Nothing was recorded: ask again after this long.
    Later(Duration),
}

/// Records the job's account and label (its spend counts toward their limits from now on) and,
/// when the run is on a named account, joins it: the holder row and its heartbeat, stopped by
/// `kill` or by [`SharedAccount::leave`].
pub(crate) async fn join(
    ledger: &Ledger,
    settings: &RunSettings,
    job_id: i64,
    kill: &CancellationToken,
) -> Result<Option<SharedAccount>, EngineError> {
    let name = settings.account.as_ref().map(|a| a.name.as_str());
    ledger
        .set_job_scope(job_id, name, settings.label.as_deref())
        .await?;
    let Some(account) = &settings.account else {
        return Ok(None);
    };
    let interval_ms = settings.creates_per_minute.map_or(0, |n| {
        // 1% under the rate, as the strict gate paces, so a window upstream never sees one too many.
        let window = i64::try_from(settings.rate_window.as_millis()).unwrap_or(i64::MAX);
        let per = 100 * i64::from(n.max(1));
        (window.saturating_mul(101) + per - 1) / per
    });
    let spec = AccountSpec {
        name: account.name.clone(),
        key_hash: account.key_hash.clone(),
        base_url: account.base_url.clone(),
        create_interval_ms: interval_ms,
        max_in_flight: settings.max_in_flight,
    };
    let holder = ledger
        .join_account(&spec, Some(job_id), std::process::id(), darkroom_ledger::now_ms())
        .await?;
    let stop = kill.child_token();
    let heartbeat = tokio::spawn(beat(ledger.clone(), holder, stop.clone()));
    Ok(Some(SharedAccount {
        holder,
        turn: tokio::sync::Mutex::new(()),
        heartbeat,
        stop,
    }))
}

/// Renews the holder's heartbeat six times per lease until `stop`; a failed write is tried at the
/// next beat (a missed beat or two still leaves the run alive).
async fn beat(ledger: Ledger, holder: AccountHolder, stop: CancellationToken) {
    let every = Duration::from_millis(u64::try_from(HOLDER_LEASE_MS / 6).unwrap_or(5_000));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        if let Err(error) = ledger.account_heartbeat(holder, darkroom_ledger::now_ms()).await {
            tracing::warn!(%error, "the account's heartbeat could not be recorded");
        }
    }
}

impl SharedAccount {
    /// The run ends: the heartbeat stops and the holder row goes (its generations still in flight
    /// keep their slots until their end is recorded).
    pub(crate) async fn leave(&self, ledger: &Ledger) -> Result<(), EngineError> {
        self.stop.cancel();
        self.heartbeat.abort();
        ledger.leave_account(self.holder).await?;
        Ok(())
    }
}

impl RunContext {
    /// The run's turn to ask its account for a permit (`None` when the run is on no account).
    pub(crate) async fn account_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.account {
            Some(account) => Some(account.turn.lock().await),
            None => None,
        }
    }

    /// Records the intent of the task's next create to `provider`: at once without an account; with one, when
    /// the account's permit allows, waiting out the wait it was granted with. A stop during that
    /// wait takes the intent back (`Later(0)`: the caller sees the stop).
    pub(crate) async fn record_intent(
        &self,
        task_id: i64,
        fingerprint: &str,
        provider: &str,
    ) -> Result<Intent, EngineError> {
        let Some(account) = &self.account else {
            return Ok(Intent::Recorded(
                self.ledger.record_intent(task_id, fingerprint, provider).await?,
            ));
        };
        let permit = self
            .ledger
            .record_intent_on_account(
                task_id,
                fingerprint,
                provider,
                account.holder,
                darkroom_ledger::now_ms(),
            )
            .await?;
        match permit {
            Permit::Granted { generation, wait_ms } => {
                if wait_ms > 0 {
                    tokio::select! {
                        () = tokio::time::sleep(millis(wait_ms)) => {}
                        () = self.stop_dispatch.cancelled() => {
                            self.ledger.record_not_created(generation, false).await?;
                            return Ok(Intent::Later(Duration::ZERO));
                        }
                    }
                }
                Ok(Intent::Recorded(generation))
            }
            Permit::Wait { retry_in_ms, reason } => {
                tracing::debug!(?reason, retry_in_ms, "waiting for the account's permit");
                Ok(Intent::Later(millis(retry_in_ms)))
            }
        }
    }

    /// A 429 paused this run's creates until `until`: every other run on the account waits for it
    /// too.
    pub(crate) async fn share_pause(&self, until: tokio::time::Instant) -> Result<(), EngineError> {
        let Some(account) = &self.account else {
            return Ok(());
        };
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        let left_ms = i64::try_from(left.as_millis()).unwrap_or(i64::MAX);
        self.ledger
            .pause_account(
                account.holder.account_id,
                darkroom_ledger::now_ms().saturating_add(left_ms),
            )
            .await?;
        Ok(())
    }
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
