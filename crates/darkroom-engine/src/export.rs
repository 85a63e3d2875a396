//! The deliverable of a job (`darkroom export`): its images, a manifest of what each file is, and
//! the report, as a folder or one zip file.
//!
//! - What goes in ([`choose`]): the job's done finals, or its done previews when it has no final;
//!   with a selection (review's `select.csv`), each kept preview's done final, else the preview.
//!   Then the job's done reframes (`reframe/FILE`), with a selection only those of chosen images.
//!   An id that names no preview, or a preview with no image, is refused by name.
//! - Every image is read once, checked against the hash the ledger recorded (a missing, unreadable
//!   or changed file is refused with its row id) and written as `PASS/FILE`; `manifest.csv` lists
//!   each file with its row, pass, model, prompt, generation, source, size and BLAKE3 hash.
//! - Atomic and re-runnable: everything is written under a temporary name beside the destination
//!   and renamed into place only when every image passed; a refused export leaves the previous one
//!   as it was and nothing half-written. The same command again gives the same files with the same
//!   bytes (zip entries in a fixed order with a fixed time), and nothing stale from an earlier one.
//!
//! The report is rendered by the caller (`darkroom-review`) and handed in as bytes; the files are
//! read as recorded (the ledger's paths).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use darkroom_jobs::Pass;
use darkroom_ledger::{Ledger, TaskRecord, TaskState};

use crate::images;
use crate::metadata::file_name;
use crate::promote::{ByTaskKey, SelectionError};
use crate::EngineError;

mod reframes;
mod sink;

use reframes::reframes_of;
use sink::{remove_leftovers, Sink};

/// The manifest's fixed columns, before the job's own metadata columns.
pub const MANIFEST_COLUMNS: [&str; 13] = [
    "file",
    "row_id",
    "pass",
    "variant",
    "model",
    "provider",
    "prompt",
    "generation_id",
    "source",
    "source_generation_id",
    "bytes",
    "blake3",
    "qc",
];

/// Where the deliverable goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A folder (replaced whole): `manifest.csv`, `report.html` and `PASS/FILE` for each image.
    Folder(PathBuf),
    /// A zip file (replaced whole) holding the same files under one folder named after the job.
    Zip(PathBuf),
}

impl Destination {
    /// The folder's or the zip file's path.
    pub fn path(&self) -> &Path {
        match self {
            Destination::Folder(path) | Destination::Zip(path) => path,
        }
    }
}

/// One image chosen for the deliverable, with the preview it was made from (for a final).
#[derive(Debug, Clone)]
pub struct Chosen {
    /// The task whose image it is.
    pub task: TaskRecord,
    /// For a final made from a preview: that preview; for a reframe: the image it extends.
    pub source: Option<TaskRecord>,
    /// The manifest's `qc` cell: the image's quality-check flags (`outputs::qc_cell`).
    pub qc: String,
}

/// What an export wrote.
#[derive(Debug, Clone, Default)]
pub struct Exported {
    /// Finals in the deliverable.
    pub finals: usize,
    /// Previews in the deliverable.
    pub previews: usize,
    /// Reframes in the deliverable.
    pub reframes: usize,
    /// The images' bytes in total.
    pub bytes: u64,
}

/// Why nothing was exported. Nothing was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The selection file could not be read.
    #[error(transparent)]
    Selection(#[from] SelectionError),
    /// The job has no done image (or the selection keeps none).
    #[error("job {job} has no done image to export")]
    Nothing {
        /// The job's name.
        job: String,
    },
    /// Kept ids that name no preview of the job, or previews without an image: one line each.
    #[error("the selection can't be exported:\n  {}", .problems.join("\n  "))]
    BadSelection {
        /// One line per id, naming it and what is wrong.
        problems: Vec<String>,
    },
    /// Images whose file is missing, unreadable or not what the ledger recorded: one line each,
    /// naming the row id and the file.
    #[error("{} image(s) can't be exported:\n  {}", .problems.len(), .problems.join("\n  "))]
    Damaged {
        /// One line per image, naming its row id, file and what is wrong.
        problems: Vec<String>,
    },
    /// The zip destination names something an export must not replace: a directory, or an
    /// existing file that is not a zip (an image, the ledger, a job file). Nothing was written.
    #[error("--zip {path} {reason}; name a new file or an earlier export's zip")]
    Destination {
        /// The path given.
        path: PathBuf,
        /// What is there (`is a directory`, `is a file that is not a zip, ...`).
        reason: String,
    },
    /// The ledger failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The destination could not be written.
    #[error("could not write {path}: {source}")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Chooses the images of job `job_id` (named `job`): its done finals, else its done previews;
/// with `kept` (preview ids, as `promote::read_selection` reads them), each kept preview's done
/// final, else the preview itself. In file order (finals after their previews' order).
///
/// # Errors
/// [`ExportError::BadSelection`] for kept ids that name no preview or no image,
/// [`ExportError::Nothing`] when nothing is left, and the ledger's.
pub async fn choose(
    ledger: &Ledger,
    job_id: i64,
    job: &str,
    kept: Option<&[String]>,
) -> Result<Vec<Chosen>, ExportError> {
    let previews = ledger
        .tiles(job_id, Pass::Preview)
        .await
        .map_err(EngineError::from)?;
    let finals = ledger
        .tiles(job_id, Pass::Final)
        .await
        .map_err(EngineError::from)?;
    let done = |t: &&TaskRecord| t.state == TaskState::Done;
    let by_id: HashMap<i64, &TaskRecord> = previews.iter().map(|p| (p.id, p)).collect();
    let mut flags: HashMap<i64, Vec<darkroom_ledger::StoredFlag>> = HashMap::new();
    for pass in [Pass::Preview, Pass::Final] {
        for flag in ledger
            .qc_flags(job_id, pass, 0, i64::MAX)
            .await
            .map_err(EngineError::from)?
        {
            flags.entry(flag.task_id).or_default().push(flag);
        }
    }
    let with_source = |task: &TaskRecord| Chosen {
        task: task.clone(),
        source: task
            .preview_task_id
            .and_then(|id| by_id.get(&id).map(|p| (*p).clone())),
        qc: crate::outputs::qc_cell(flags.get(&task.id).map_or(&[][..], Vec::as_slice)),
    };
    let chosen: Vec<Chosen> = match kept {
        None if finals.iter().any(|f| f.state == TaskState::Done) => {
            finals.iter().filter(done).map(with_source).collect()
        }
        None => previews.iter().filter(done).map(with_source).collect(),
        Some(ids) => choose_kept(&previews, &finals, ids)?
            .into_iter()
            .map(with_source)
            .collect(),
    };
    let mut chosen = chosen;
    chosen.extend(
        reframes_of(
            ledger,
            job_id,
            &previews,
            &finals,
            kept.is_some().then_some(&chosen),
        )
        .await?,
    );
    if chosen.is_empty() {
        return Err(ExportError::Nothing { job: job.to_string() });
    }
    Ok(chosen)
}

/// The kept previews' done finals (made from them, or made directly under the same id), else the
/// previews; every id must name a preview, and one without a final must be done.
fn choose_kept<'a>(
    previews: &'a [TaskRecord],
    finals: &'a [TaskRecord],
    ids: &[String],
) -> Result<Vec<&'a TaskRecord>, ExportError> {
    let by_key = ByTaskKey::new(previews, |p: &TaskRecord| p.task_key.as_str());
    let final_of: HashMap<i64, &TaskRecord> = finals
        .iter()
        .filter(|f| f.state == TaskState::Done)
        .filter_map(|f| f.preview_task_id.map(|p| (p, f)))
        .collect();
    // A final made directly (`run --pass final`) is its row's final too.
    let final_by_key: HashMap<&str, &TaskRecord> = finals
        .iter()
        .filter(|f| f.state == TaskState::Done && f.preview_task_id.is_none())
        .map(|f| (f.task_key.as_str(), f))
        .collect();
    let (mut chosen, mut problems, mut seen) = (Vec::new(), Vec::new(), std::collections::HashSet::new());
    for id in ids {
        match by_key.get(id) {
            // The same preview named twice (perhaps in another case) counts once.
            Some(preview) if !seen.insert(preview.id) => {}
            None => problems.push(format!("id {id:?}: no preview of this job has that id")),
            Some(preview) => match final_of
                .get(&preview.id)
                .or_else(|| final_by_key.get(preview.task_key.as_str()))
            {
                Some(done_final) => chosen.push(*done_final),
                None if preview.state == TaskState::Done => chosen.push(preview),
                None => problems.push(format!(
                    "id {id:?} (row {}): the preview has no image ({})",
                    preview.row_id, preview.state
                )),
            },
        }
    }
    if !problems.is_empty() {
        return Err(ExportError::BadSelection { problems });
    }
    Ok(chosen)
}

/// Writes the deliverable of `chosen` to `destination` with `extra` files beside the manifest
/// (the report: `("report.html", bytes)`), replacing what an earlier export left there. `columns`:
/// the job's metadata columns, added to the manifest after [`MANIFEST_COLUMNS`].
///
/// # Errors
/// [`ExportError::Destination`] when a zip destination is a directory or an existing file that is
/// not a zip (checked before anything is written), [`ExportError::Damaged`] when some image's file
/// is missing, unreadable or changed (every one is listed; nothing is written),
/// [`ExportError::Write`] when the destination can't be written.
pub async fn write(
    chosen: Vec<Chosen>,
    columns: Vec<String>,
    extra: Vec<(String, Vec<u8>)>,
    destination: Destination,
    job: String,
) -> Result<Exported, ExportError> {
    tokio::task::spawn_blocking(move || write_blocking(&chosen, &columns, &extra, &destination, &job))
        .await
        .map_err(|e| ExportError::Write {
            path: PathBuf::new(),
            source: std::io::Error::other(e),
        })?
}

fn write_blocking(
    chosen: &[Chosen],
    columns: &[String],
    extra: &[(String, Vec<u8>)],
    destination: &Destination,
    job: &str,
) -> Result<Exported, ExportError> {
    let target = destination.path();
    let write_error = |source| ExportError::Write {
        path: target.to_path_buf(),
        source,
    };
    if let Destination::Zip(path) = destination {
        check_zip_destination(path)?;
    }
    remove_leftovers(target).map_err(write_error)?;
    let mut sink = Sink::open(destination, job).map_err(write_error)?;
    match fill(&mut sink, chosen, columns, extra) {
        Ok(exported) => {
            sink.commit().map_err(write_error)?;
            Ok(exported)
        }
        Err(error) => {
            sink.abandon();
            Err(match error {
                Filled::Damaged(problems) => ExportError::Damaged { problems },
                Filled::Io(source) => write_error(source),
            })
        }
    }
}

/// A zip destination is replaced whole, so it must be new or an earlier zip: a directory, or a
/// file that is not a zip (a paid image, the ledger, a job file), is refused untouched.
fn check_zip_destination(path: &Path) -> Result<(), ExportError> {
    let refuse = |reason: &str| ExportError::Destination {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if path.as_os_str().is_empty() || path.file_name().is_none() {
        return Err(refuse("names no file"));
    }
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ExportError::Write {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if metadata.is_dir() {
        return Err(refuse("is a directory"));
    }
    if !metadata.is_file() {
        return Err(refuse("is not a regular file"));
    }
    let mut head = [0u8; 4];
    let read = std::fs::File::open(path).and_then(|mut file| {
        use std::io::Read as _;
        let mut filled = 0;
        while filled < head.len() {
            match file.read(&mut head[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(filled)
    });
    match read {
        // An empty file holds nothing to lose.
        Ok(0) => Ok(()),
        Ok(4) if head == *b"PK\x03\x04" || head == *b"PK\x05\x06" => Ok(()),
        Ok(_) => Err(refuse("is a file that is not a zip (it would be lost)")),
        Err(source) => Err(ExportError::Write {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Why [`fill`] stopped.
enum Filled {
    Damaged(Vec<String>),
    Io(std::io::Error),
}

impl From<std::io::Error> for Filled {
    fn from(error: std::io::Error) -> Self {
        Filled::Io(error)
    }
}

impl From<csv::Error> for Filled {
    fn from(error: csv::Error) -> Self {
        Filled::Io(error.into())
    }
}

/// Writes every image, the manifest and `extra` into the sink; every damaged image is named.
fn fill(
    sink: &mut Sink,
    chosen: &[Chosen],
    columns: &[String],
    extra: &[(String, Vec<u8>)],
) -> Result<Exported, Filled> {
    let mut manifest = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<&str> = MANIFEST_COLUMNS.to_vec();
    header.extend(columns.iter().map(String::as_str));
    manifest.write_record(&header)?;
    let (mut exported, mut problems) = (Exported::default(), Vec::new());
    for item in chosen {
        let bytes = match read_checked(&item.task) {
            Ok(bytes) => bytes,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        if !problems.is_empty() {
            continue; // Still checking the rest, so every damaged image is named at once.
        }
        let file = format!("{}/{}", item.task.pass, file_name(&item.task));
        sink.add(&file, &bytes)?;
        manifest.write_record(manifest_record(item, &file, &bytes, columns))?;
        match item.task.pass.as_str() {
            "final" => exported.finals += 1,
            "reframe" => exported.reframes += 1,
            _ => exported.previews += 1,
        }
        exported.bytes += bytes.len() as u64;
    }
    if !problems.is_empty() {
        return Err(Filled::Damaged(problems));
    }
    let manifest = manifest
        .into_inner()
        .map_err(|e| Filled::Io(std::io::Error::other(e.to_string())))?;
    sink.add("manifest.csv", &manifest)?;
    for (name, bytes) in extra {
        sink.add(name, bytes)?;
    }
    Ok(exported)
}

/// The image's bytes, if its file holds what the ledger recorded; else a line naming the row id,
/// the file and what is wrong.
fn read_checked(task: &TaskRecord) -> Result<Vec<u8>, String> {
    let who = format!("row {} ({} {})", task.row_id, task.pass, task.task_key);
    let Some(path) = task.output_path.as_deref() else {
        return Err(format!("{who}: the ledger records no file"));
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "{who}: {path} is missing (`darkroom verify` marks it; the next run restores it)"
            ))
        }
        Err(e) => return Err(format!("{who}: {path} can't be read: {e}")),
    };
    let found = images::content_of(&bytes);
    if task
        .content_hash
        .as_deref()
        .is_some_and(|hash| hash != found.hash)
    {
        return Err(format!(
            "{who}: {path} is not the image the ledger recorded (`darkroom verify` marks it; the next run restores it)"
        ));
    }
    Ok(bytes)
}

/// One manifest line: the fixed columns, then the row's metadata columns.
fn manifest_record(item: &Chosen, file: &str, bytes: &[u8], columns: &[String]) -> Vec<String> {
    let task = &item.task;
    let metadata: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&task.metadata_json).unwrap_or_default();
    let (source, source_generation) = match &item.source {
        Some(source) => (
            format!("{}/{}", source.pass, file_name(source)),
            source.generation_id.clone().unwrap_or_default(),
        ),
        None => (String::new(), String::new()),
    };
    let mut record = vec![
        file.to_string(),
        task.row_id.clone(),
        task.pass.clone(),
        task.variant.to_string(),
        task.model.clone(),
        // The provider that made the image; empty for a copy from the cache, as in results.jsonl.
        task.provider.clone().unwrap_or_default(),
        task.prompt.clone(),
        task.generation_id.clone().unwrap_or_default(),
        source,
        source_generation,
        bytes.len().to_string(),
        blake3::hash(bytes).to_hex().to_string(),
        item.qc.clone(),
    ];
    record.extend(columns.iter().map(|column| match metadata.get(column) {
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }));
    record
}

#[cfg(test)]
mod tests;
