//! Reading a job file into the ledger: validate every row, expand rows into the pass's tasks, and
//! load them in one transaction, streaming, so a million-row file is never held in memory and a
//! file with one invalid row loads nothing at all.
//!
//! An unchanged file (same bytes, same routing and prices) is not read again on resume: the tasks are
//! already in the ledger, and a resumed run reaches its first create at once.

use std::path::Path;

use darkroom_jobs::{Pass, PriceTable, ReadOptions, Report, Routing, RoutingChoices};
use darkroom_ledger::{Ledger, NewTask};
use tokio::sync::mpsc;

use crate::requests::create_body_text;

/// Tasks per ledger page while loading.
const PAGE: usize = 2_000;

/// What loading did.
#[derive(Debug)]
pub struct Loaded {
    /// The reader's report; `None` when the file was unchanged and not read again.
    pub report: Option<Report>,
    /// The key the load was recorded under (file fingerprint, pass, routing, prices).
    pub load_key: String,
}

/// Why a job file could not be loaded. Nothing was spent and the ledger's tasks are unchanged.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file as a whole could not be read as a job file (its format, encoding or header).
    #[error(transparent)]
    File(#[from] darkroom_jobs::FileError),
    /// Rows are invalid: the reader's report lists every problem with its line.
    #[error("the job file has {} invalid row(s)", .0.error_count)]
    Invalid(Box<Report>),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] darkroom_ledger::LedgerError),
    /// The file could not be opened or read while fingerprinting or reading it.
    #[error("could not read {path}")]
    Io {
        /// The job file, as given.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The fingerprint under which a file's tasks for a pass were loaded: the file's, the pass, the
/// models of its routing and the prices in micro-dollars, joined by `:`.
fn load_key(file_fingerprint: &str, pass: Pass, routing: &Routing, prices: &PriceTable) -> String {
    format!(
        "{file_fingerprint}:{pass}:{}:{}:{}:{}",
        routing.preview,
        routing.final_,
        prices.photon_1.micros(),
        prices.photon_flash_1.micros()
    )
}

/// The BLAKE3 hash of a file's bytes (64 hex digits), streamed.
fn file_fingerprint(path: &Path) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// Validates the file and loads its tasks for `pass` into the job `job_id`, unless the same file was
/// already loaded with the same routing and prices (then `Loaded::report` is `None`). Records the
/// file's fingerprint on the job either way, once the file has loaded (an invalid file leaves the
/// fingerprint of the last file that did).
///
/// # Errors
/// `LoadError::Invalid` when any row is invalid (nothing is loaded), `File` or `Io` when the file
/// can't be read, `Ledger` when the ledger fails; the load's transaction is rolled back on each.
pub async fn load_job(
    ledger: &Ledger,
    job_id: i64,
    path: &Path,
    pass: Pass,
    routing: Routing,
    prices: PriceTable,
    options: ReadOptions,
) -> Result<Loaded, LoadError> {
    let routed = Routed {
        routing,
        choices: RoutingChoices::default(),
    };
    load_job_routed(ledger, job_id, path, pass, routed, prices, options).await
}

/// A pass's routing and the choices made after a trial (`RoutingChoices`: finals of a row or a
/// group made with another model).
#[derive(Debug, Clone, Default)]
pub struct Routed {
    /// Which model each pass uses when a row names none.
    pub routing: Routing,
    /// The trial's choices, which win over `routing` for the rows they cover.
    pub choices: RoutingChoices,
}

/// [`load_job`] with the choices made after a trial: a row of the final pass with no model of its
/// own is made with its row's or group's chosen model. The choices are part of the load key, so a
/// new choice loads the file again: as when a row's `model` column changes, its task is replaced
/// (a final already made is superseded and made again with the chosen model).
///
/// # Errors
/// As [`load_job`].
pub async fn load_job_routed(
    ledger: &Ledger,
    job_id: i64,
    path: &Path,
    pass: Pass,
    routed: Routed,
    prices: PriceTable,
    options: ReadOptions,
) -> Result<Loaded, LoadError> {
    let Routed { routing, choices } = routed;
    let fingerprint = fingerprint_of(path).await?;
    let mut key = load_key(&fingerprint, pass, &routing, &prices);
    let digest = choices.digest();
    if pass == Pass::Final && !digest.is_empty() {
        key.push_str(&format!(":choices={}", blake3::hash(digest.as_bytes()).to_hex()));
    }
    let already = ledger
        .pass(job_id, pass)
        .await?
        .and_then(|p| p.loaded_fingerprint);
    if already.as_deref() == Some(key.as_str()) {
        ledger.record_file_fingerprint(job_id, &fingerprint).await?;
        return Ok(Loaded {
            report: None,
            load_key: key,
        });
    }

    let (tx, mut rx) = mpsc::channel::<Vec<NewTask>>(4);
    let reader = spawn_reader(path, pass, Routed { routing, choices }, prices, options, tx);

    let mut loader = ledger.begin_load(job_id, pass).await?;
    let mut load_error = None;
    while let Some(page) = rx.recv().await {
        if load_error.is_none() {
            if let Err(e) = loader.load_page(&page).await {
                load_error = Some(e);
            }
        }
    }
    let report = reader.await.map_err(|e| LoadError::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e),
    })??;
    if let Some(e) = load_error {
        return Err(e.into());
    }
    if report.error_count > 0 {
        // Dropping the loader rolls the whole load back.
        drop(loader);
        return Err(LoadError::Invalid(Box::new(report)));
    }
    loader.finish(&key).await?;
    ledger.record_file_fingerprint(job_id, &fingerprint).await?;
    Ok(Loaded {
        report: Some(report),
        load_key: key,
    })
}

/// Reads and validates the file on a blocking thread, sending its tasks for `pass` in pages of
/// `PAGE`; the reader's report is the thread's result. Once the receiver is gone (the load
/// failed), no more pages are built.
fn spawn_reader(
    path: &Path,
    pass: Pass,
    routed: Routed,
    prices: PriceTable,
    options: ReadOptions,
    tx: mpsc::Sender<Vec<NewTask>>,
) -> tokio::task::JoinHandle<Result<Report, darkroom_jobs::FileError>> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut page = Vec::with_capacity(PAGE);
        let mut receiver_gone = false;
        let Routed { routing, choices } = routed;
        let report = darkroom_jobs::read_job(&path, &options, |mut row| {
            if receiver_gone {
                return;
            }
            if row.model.is_none() {
                row.model = choices
                    .chosen(pass, &row.id, &row.metadata)
                    .map(|(model, _)| model);
            }
            for task in darkroom_jobs::expand(&row, pass, &routing) {
                let price = prices.price_of(task.model, task.aspect_ratio);
                let request_json = create_body_text(&task);
                page.push(NewTask {
                    task,
                    line: row.line,
                    price,
                    request_json,
                });
                if page.len() >= PAGE && tx.blocking_send(std::mem::take(&mut page)).is_err() {
                    receiver_gone = true;
                    return;
                }
            }
        });
        if !page.is_empty() {
            let _ = tx.blocking_send(page);
        }
        report
    })
}

/// The file's fingerprint (`file_fingerprint`), computed on a blocking thread.
async fn fingerprint_of(path: &Path) -> Result<String, LoadError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || file_fingerprint(&owned))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        .map_err(|source| LoadError::Io {
            path: path.display().to_string(),
            source,
        })
}

/// Reads and validates `path` as a job file without loading it anywhere: what `darkroom run` does
/// before it creates a ledger that does not exist yet, so input it refuses leaves no ledger (nor
/// lock file) behind. Returns the reader's report for a valid file.
///
/// # Errors
/// `LoadError::Io` when the file can't be opened, `File` when it can't be read as a job file
/// (format, encoding, header, no rows), `Invalid` when any row is invalid.
pub async fn check_file(path: &Path, options: ReadOptions) -> Result<Report, LoadError> {
    // Opened here first, so a missing or unreadable file is named as the load would name it.
    fingerprint_of(path).await?;
    let owned = path.to_path_buf();
    let report = tokio::task::spawn_blocking(move || darkroom_jobs::read_job(&owned, &options, |_| {}))
        .await
        .map_err(|e| LoadError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(e),
        })??;
    if report.error_count > 0 {
        return Err(LoadError::Invalid(Box::new(report)));
    }
    Ok(report)
}
