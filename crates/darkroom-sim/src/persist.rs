//! The simulated account on disk, so one account outlives one simulator: its generations (and so
//! their pictures, which are drawn from a seed), its billing record and its credit live in
//! `account.json` in a state directory, loaded when a simulator starts and saved as the account
//! changes and when it stops.
//!
//! Writes are atomic (a temporary file, synced, renamed over the old one, then the directory
//! synced), so a simulator killed mid-write leaves the previous account whole. Several simulators
//! may share one directory at once (darkroom processes running jobs side by side, each with its
//! own in-process simulator): each save takes an OS lock on `account.lock`, reads what the others
//! saved and writes the union (generations by id, billing lines by generation and kind), so no
//! one's work is lost. A running simulator does not take the others' changes in (its balance and
//! list stay its own until it is started again): the next one to start has the whole account.
//!
//! Times are saved as wall-clock instants and read back against tokio's clock at load, so a
//! generation that was dreaming when its simulator stopped is done (and settled) when the next one
//! starts after its end, and a test on paused time keeps its offsets.
//!
//! What is not kept: request counters (`Stats`) and the rate windows, which belong to one server's
//! life, and the rendered images, which are drawn again from their seeds.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::state::{Account, BillingEntry, Generation, Outcome, MODERATION_REASONS, RETRYABLE_REASONS};

/// The account file's name in the state directory.
const ACCOUNT_FILE: &str = "account.json";
/// The fal.ai account's file in the same directory: its own generations, bill and credit.
pub(crate) const FAL_ACCOUNT_FILE: &str = "fal-account.json";
/// The lock file's name in the state directory.
const LOCK_FILE: &str = "account.lock";
/// The format this code writes; a file of another format is refused, not guessed at.
const FORMAT: u32 = 1;
/// Ports remembered (newest last): each is listened on again at start when free, so the image
/// URLs handed out on them keep resolving.
const PORTS_KEPT: usize = 16;

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The directory, its lock or its account file could not be read or written.
    #[error("could not use the simulated account in {path}")]
    Io {
        /// The file or directory that failed.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The account file is not one this simulator wrote.
    #[error("the simulated account {path} is not readable: {reason}")]
    Unreadable {
        /// The account file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The account as saved.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Saved {
    format: u32,
    opening_balance_micros: i64,
    /// Every port the account's images were served on, newest last.
    pub(crate) ports: Vec<u16>,
    generations: Vec<SavedGeneration>,
    billing: Vec<SavedEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedGeneration {
    id: String,
    created_at_unix_us: i64,
    echo: Value,
    model: String,
    aspect_ratio: String,
    format: String,
    price_micros: i64,
    dreaming_at_unix_us: i64,
    done_at_unix_us: i64,
    /// `completed`, `failed`, `stuck`, `completed_without_image`, `image_missing`, `not_an_image`
    /// or `failed_without_reason`.
    outcome: String,
    failure_reason: Option<String>,
    settled: bool,
    deleted: bool,
    unknown_state: bool,
    image_seed: [u8; 32],
    /// `luma` (what accounts saved before Replicate was simulated hold) or `replicate`.
    #[serde(default = "luma")]
    provider: String,
    /// A reframe's source aspect ratio (absent in accounts saved before reframes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source_aspect: Option<String>,
}

fn luma() -> String {
    crate::state::LUMA.to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedEntry {
    generation_id: String,
    model: String,
    kind: String,
    micros: i64,
    at: String,
    #[serde(default = "luma")]
    provider: String,
}

/// The same moment on tokio's clock and the wall clock: converts one to the other.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    instant: Instant,
    unix_us: i64,
}

impl Anchor {
    fn now() -> Anchor {
        Anchor {
            instant: Instant::now(),
            unix_us: unix_us(OffsetDateTime::now_utc()),
        }
    }

    fn to_unix_us(self, at: Instant) -> i64 {
        if at >= self.instant {
            self.unix_us + micros(at - self.instant)
        } else {
            self.unix_us - micros(self.instant - at)
        }
    }

    /// A saved wall-clock time on tokio's clock; a time before the clock can go back to is "now".
    fn to_instant(self, unix: i64) -> Instant {
        let distance = Duration::from_micros(unix.abs_diff(self.unix_us));
        if unix >= self.unix_us {
            self.instant + distance
        } else {
            self.instant.checked_sub(distance).unwrap_or(self.instant)
        }
    }
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

fn unix_us(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(0)
}

/// A state directory: where the account file is and the lock that orders its writers.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    /// The account file's name in `dir`.
    file: &'static str,
    lock: File,
}

impl Store {
    /// Creates the directory if needed and opens its lock file: the Luma (and Replicate)
    /// account's store.
    pub(crate) fn open(dir: &Path) -> Result<Store, StateError> {
        Store::open_file(dir, ACCOUNT_FILE)
    }

    /// [`Store::open`] for the account kept in `file` (e.g. [`FAL_ACCOUNT_FILE`]); every account
    /// of a directory shares its lock.
    pub(crate) fn open_file(dir: &Path, file: &'static str) -> Result<Store, StateError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        Ok(Store {
            dir: dir.to_path_buf(),
            file,
            lock,
        })
    }

    fn account_path(&self) -> PathBuf {
        self.dir.join(self.file)
    }

    /// Runs `f` holding the directory's lock (waiting for another simulator's save to end).
    pub(crate) fn locked<T>(&self, f: impl FnOnce() -> Result<T, StateError>) -> Result<T, StateError> {
        let io = |source| StateError::Io {
            path: self.dir.join(LOCK_FILE),
            source,
        };
        self.lock.lock().map_err(io)?;
        let result = f();
        self.lock.unlock().map_err(io)?;
        result
    }

    /// The saved account, or `None` when none was saved yet.
    pub(crate) fn read(&self) -> Result<Option<Saved>, StateError> {
        let path = self.account_path();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        let saved: Saved = serde_json::from_slice(&bytes).map_err(|e| StateError::Unreadable {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if saved.format != FORMAT {
            return Err(StateError::Unreadable {
                path,
                reason: format!("format {} (this simulator reads format {FORMAT})", saved.format),
            });
        }
        Ok(Some(saved))
    }

    /// Replaces the account file atomically and durably.
    fn write(&self, saved: &Saved) -> Result<(), StateError> {
        let path = self.account_path();
        let temporary = self.dir.join(format!("{}.tmp", self.file));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        let bytes = serde_json::to_vec(saved).map_err(|e| StateError::Unreadable {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut file = File::create(&temporary).map_err(io(&temporary))?;
        file.write_all(&bytes).map_err(io(&temporary))?;
        file.sync_all().map_err(io(&temporary))?;
        drop(file);
        std::fs::rename(&temporary, &path).map_err(io(&path))?;
        // The rename is durable once the directory is synced (not possible on every platform).
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// Merges a saved account into `account` (at start): generations it doesn't know are added,
/// settled and deleted marks are kept from either side, billing lines it lacks are added, and the
/// opening balance is the saved one (the account's, not this simulator's configuration).
pub(crate) fn merge(account: &mut Account, saved: &Saved) {
    let anchor = Anchor::now();
    account.opening_balance = saved.opening_balance_micros;
    for record in &saved.generations {
        match account.generations.get_mut(&record.id) {
            Some(known) => {
                known.settled |= record.settled;
                known.deleted |= record.deleted;
            }
            None => {
                account.order.push(record.id.clone());
                account
                    .generations
                    .insert(record.id.clone(), generation(record, anchor));
            }
        }
    }
    let generations = &account.generations;
    account
        .order
        .sort_by_key(|id| generations.get(id).map(|g| g.created_at));
    let known: HashSet<(String, &'static str)> = account
        .billing
        .entries
        .iter()
        .map(|e| (e.generation_id.clone(), e.kind))
        .collect();
    for entry in &saved.billing {
        let kind = if entry.kind == "refund" {
            "refund"
        } else {
            "charge"
        };
        if !known.contains(&(entry.generation_id.clone(), kind)) {
            account.billing.entries.push(BillingEntry {
                generation_id: entry.generation_id.clone(),
                model: entry.model.clone(),
                kind,
                micros: entry.micros,
                at: entry.at.clone(),
                provider: entry.provider.clone(),
            });
        }
    }
    account.recount_billing();
    account.reschedule();
}

/// The account as it is to be saved, with `ports` merged into the ports saved before.
pub(crate) fn snapshot(account: &Account, ports: &[u16], saved_ports: &[u16]) -> Saved {
    let anchor = Anchor::now();
    let mut all_ports: Vec<u16> = saved_ports
        .iter()
        .filter(|p| !ports.contains(p))
        .copied()
        .collect();
    all_ports.extend_from_slice(ports);
    let drop_front = all_ports.len().saturating_sub(PORTS_KEPT);
    all_ports.drain(..drop_front);
    Saved {
        format: FORMAT,
        opening_balance_micros: account.opening_balance,
        ports: all_ports,
        generations: account
            .order
            .iter()
            .filter_map(|id| account.generations.get(id))
            .map(|g| saved_generation(g, anchor))
            .collect(),
        billing: account
            .billing
            .entries
            .iter()
            .map(|e| SavedEntry {
                generation_id: e.generation_id.clone(),
                model: e.model.clone(),
                kind: e.kind.to_string(),
                micros: e.micros,
                at: e.at.clone(),
                provider: e.provider.clone(),
            })
            .collect(),
    }
}

/// Saves the account (`fal`: the fal.ai account, else Luma's) joined with what others saved since,
/// under the lock.
pub(crate) fn save(store: &Store, sim: &crate::Sim, fal: bool) -> Result<(), StateError> {
    store.locked(|| {
        let on_disk = store.read()?;
        let ours = {
            let mut account = if fal { sim.fal() } else { sim.lock() };
            account.settle(Instant::now());
            let saved_ports = on_disk.as_ref().map_or(&[][..], |s| &s.ports[..]);
            snapshot(&account, &sim.ports, saved_ports)
        };
        let saved = match on_disk {
            Some(on_disk) => union(ours, on_disk),
            None => ours,
        };
        store.write(&saved)
    })
}

/// `ours` joined with `theirs`: every generation of either (settled or deleted if either says so),
/// every billing line of either once, and the opening balance of the account on disk.
fn union(ours: Saved, mut theirs: Saved) -> Saved {
    let mut index: std::collections::HashMap<String, usize> = theirs
        .generations
        .iter()
        .enumerate()
        .map(|(i, g)| (g.id.clone(), i))
        .collect();
    for generation in ours.generations {
        match index.get(&generation.id) {
            Some(&i) => {
                let known = &mut theirs.generations[i];
                known.settled |= generation.settled;
                known.deleted |= generation.deleted;
            }
            None => {
                index.insert(generation.id.clone(), theirs.generations.len());
                theirs.generations.push(generation);
            }
        }
    }
    theirs.generations.sort_by_key(|g| g.created_at_unix_us);
    let billed: HashSet<(String, String)> = theirs
        .billing
        .iter()
        .map(|e| (e.generation_id.clone(), e.kind.clone()))
        .collect();
    theirs.billing.extend(
        ours.billing
            .into_iter()
            .filter(|e| !billed.contains(&(e.generation_id.clone(), e.kind.clone()))),
    );
    Saved {
        ports: ours.ports,
        ..theirs
    }
}

fn saved_generation(g: &Generation, anchor: Anchor) -> SavedGeneration {
    let (outcome, failure_reason) = match &g.outcome {
        Outcome::Completed => ("completed", None),
        Outcome::Failed(reason) => ("failed", Some((*reason).to_string())),
        Outcome::Stuck => ("stuck", None),
        Outcome::CompletedWithoutImage => ("completed_without_image", None),
        Outcome::ImageMissing => ("image_missing", None),
        Outcome::NotAnImage => ("not_an_image", None),
        Outcome::FailedWithoutReason => ("failed_without_reason", None),
        Outcome::Aborted => ("aborted", None),
        Outcome::Canceled => ("canceled", None),
    };
    SavedGeneration {
        id: g.id.clone(),
        created_at_unix_us: unix_us(g.created_at),
        echo: g.echo.clone(),
        model: g.model.clone(),
        aspect_ratio: g.aspect_ratio.clone(),
        format: g.format.clone(),
        price_micros: g.price,
        dreaming_at_unix_us: anchor.to_unix_us(g.dreaming_at),
        done_at_unix_us: anchor.to_unix_us(g.done_at),
        outcome: outcome.to_string(),
        failure_reason,
        settled: g.settled,
        deleted: g.deleted,
        unknown_state: g.unknown_state,
        image_seed: g.image_seed,
        provider: g.provider.clone(),
        source_aspect: g.source_aspect.clone(),
    }
}

fn generation(record: &SavedGeneration, anchor: Anchor) -> Generation {
    let outcome = match record.outcome.as_str() {
        "failed" => Outcome::Failed(known_reason(record.failure_reason.as_deref())),
        "stuck" => Outcome::Stuck,
        "completed_without_image" => Outcome::CompletedWithoutImage,
        "image_missing" => Outcome::ImageMissing,
        "not_an_image" => Outcome::NotAnImage,
        "failed_without_reason" => Outcome::FailedWithoutReason,
        "aborted" => Outcome::Aborted,
        "canceled" => Outcome::Canceled,
        _ => Outcome::Completed,
    };
    Generation {
        id: record.id.clone(),
        created_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(record.created_at_unix_us) * 1000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        echo: record.echo.clone(),
        model: record.model.clone(),
        aspect_ratio: record.aspect_ratio.clone(),
        format: record.format.clone(),
        price: record.price_micros,
        dreaming_at: anchor.to_instant(record.dreaming_at_unix_us),
        done_at: anchor.to_instant(record.done_at_unix_us),
        outcome,
        settled: record.settled,
        deleted: record.deleted,
        unknown_state: record.unknown_state,
        image_seed: record.image_seed,
        provider: record.provider.clone(),
        source_aspect: record.source_aspect.clone(),
    }
}

/// A saved failure reason as one of the reasons the API words (they are all the simulator makes).
fn known_reason(reason: Option<&str>) -> &'static str {
    RETRYABLE_REASONS
        .iter()
        .chain(MODERATION_REASONS.iter())
        .find(|known| Some(**known) == reason)
        .copied()
        .unwrap_or(RETRYABLE_REASONS[0])
}
