//! The job's output files in `OUT/JOB/`, rewritten from the ledger at the end of every run:
//! `results.jsonl` (one line per done task, with its image's `content_hash` and `bytes`),
//! `errors.jsonl` (failed, blocked and skipped tasks with their reasons) and `manifest.csv` (one row
//! per task, with its image's `content_hash`, its quality-check flags in `qc` (kinds joined by `;`,
//! empty when none) and a `keep` column for review: blank, or what the user wrote in it, which a
//! rewrite keeps). A done task's line in `results.jsonl` carries its flags as `qc`: a list of
//! `{kind, measured, threshold, detail}` (and `duplicate_of` for a duplicate), empty when none.
//!
//! They are views of the ledger, so a killed run loses nothing: the next run writes them again.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use darkroom_jobs::{Format, Metadata, Money, Pass};
use darkroom_ledger::{Ledger, ResultRecord, StoredFlag, TaskState};
use serde_json::json;

use crate::images::{sync_dir, temporary_path};
use crate::EngineError;

/// The paths of the files written.
#[derive(Debug, Clone)]
pub struct OutputFiles {
    /// `OUT/JOB/results.jsonl`: one line per done task.
    pub results: PathBuf,
    /// `OUT/JOB/errors.jsonl`: failed, blocked and skipped tasks with their reasons.
    pub errors: PathBuf,
    /// `OUT/JOB/manifest.csv`: one row per task, with the `keep` column for review.
    pub manifest: PathBuf,
}

const PAGE: i64 = 5_000;

/// Where a task's image goes: `PASS_DIR/TASK_KEY.EXT`, the extension its format's (`jpg`, `png`).
/// A download and a cache copy both write here; nowhere else builds the name.
pub fn image_path(pass_dir: &Path, task_key: &str, format: Format) -> PathBuf {
    pass_dir.join(format!("{task_key}.{}", format.extension()))
}

/// Rewrites the three output files of a job from the ledger, both passes.
///
/// The files are streamed a page of tasks at a time, so memory does not grow with the job: the
/// manifest's metadata columns are collected first (one query), then every page is written to
/// temporary files that are synced and renamed into place at the end, as `write_atomically` does.
pub async fn write_outputs(ledger: &Ledger, job_id: i64, job_dir: &Path) -> Result<OutputFiles, EngineError> {
    let files = OutputFiles {
        results: job_dir.join("results.jsonl"),
        errors: job_dir.join("errors.jsonl"),
        manifest: job_dir.join("manifest.csv"),
    };
    let metadata_columns: BTreeSet<String> = ledger.metadata_keys(job_id).await?.into_iter().collect();
    let keeps = existing_keeps(&files.manifest);
    let mut results = Staged::create(&files.results)?;
    let mut errors = Staged::create(&files.errors)?;
    let mut manifest = csv::Writer::from_writer(Staged::create(&files.manifest)?);
    write_csv(
        &mut manifest,
        &manifest_header(&metadata_columns),
        &files.manifest,
    )?;
    for pass in Pass::ALL {
        let mut after = 0;
        loop {
            let page = ledger.results(job_id, pass, after, PAGE).await?;
            let (Some(first), Some(last)) = (page.first(), page.last()) else {
                break;
            };
            after = last.id;
            let flags = flags_by_task(ledger.qc_flags(job_id, pass, first.id, last.id).await?);
            for record in page {
                let metadata: Metadata = serde_json::from_str(&record.metadata_json).unwrap_or_default();
                let qc = flags.get(&record.id).map_or(&[][..], Vec::as_slice);
                match record.state {
                    TaskState::Done => results.line(&result_line(&record, &metadata, qc))?,
                    TaskState::Failed | TaskState::Blocked | TaskState::Skipped => {
                        errors.line(&error_line(&record, &metadata))?
                    }
                    _ => {}
                }
                write_csv(
                    &mut manifest,
                    &manifest_row(&record, &metadata, &metadata_columns, &keeps, qc),
                    &files.manifest,
                )?;
            }
        }
    }
    let manifest = manifest.into_inner().map_err(|e| EngineError::Output {
        path: files.manifest.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    for staged in [results, errors, manifest] {
        staged.commit()?;
    }
    Ok(files)
}

/// An output file being written beside its final path, renamed into place once whole.
struct Staged {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
}

impl Staged {
    fn create(path: &Path) -> Result<Staged, EngineError> {
        let tmp = temporary_path(path);
        let error = |source| EngineError::Output {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).map_err(error)?;
        let file = File::create(&tmp).map_err(error)?;
        Ok(Staged {
            path: path.to_path_buf(),
            tmp,
            out: Some(BufWriter::with_capacity(256 * 1024, file)),
        })
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), EngineError> {
        let result = match self.out.as_mut() {
            Some(out) => out.write_all(bytes),
            None => Ok(()),
        };
        result.map_err(|source| self.error(source))
    }

    fn line(&mut self, value: &serde_json::Value) -> Result<(), EngineError> {
        let mut line = value.to_string();
        line.push('\n');
        self.write_bytes(line.as_bytes())
    }

    /// Flushes, syncs and renames the file into place, then syncs its directory.
    fn commit(mut self) -> Result<(), EngineError> {
        let result = (|| {
            if let Some(out) = self.out.take() {
                let file = out.into_inner().map_err(std::io::IntoInnerError::into_error)?;
                file.sync_all()?;
            }
            std::fs::rename(&self.tmp, &self.path)?;
            sync_dir(self.path.parent().unwrap_or(Path::new(".")))
        })();
        result.map_err(|source| self.error(source))
    }

    fn error(&self, source: std::io::Error) -> EngineError {
        EngineError::Output {
            path: self.path.clone(),
            source,
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Not committed (an error on the way): leave no temporary file behind.
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Write for Staged {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.out.as_mut() {
            Some(out) => out.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.as_mut().map_or(Ok(()), Write::flush)
    }
}

fn write_csv(csv: &mut csv::Writer<Staged>, record: &[String], path: &Path) -> Result<(), EngineError> {
    csv.write_record(record).map_err(|e| EngineError::Output {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// A page's flags grouped by task id.
fn flags_by_task(flags: Vec<StoredFlag>) -> HashMap<i64, Vec<StoredFlag>> {
    let mut by_task: HashMap<i64, Vec<StoredFlag>> = HashMap::new();
    for flag in flags {
        by_task.entry(flag.task_id).or_default().push(flag);
    }
    by_task
}

/// The manifest's `qc` cell: the flags' kinds joined by `;`, empty when none.
pub fn qc_cell(flags: &[StoredFlag]) -> String {
    flags
        .iter()
        .map(|f| f.kind.as_str())
        .collect::<Vec<_>>()
        .join(";")
}

fn result_line(r: &ResultRecord, metadata: &Metadata, qc: &[StoredFlag]) -> serde_json::Value {
    let mut line = json!({
        "id": r.task_key,
        "row_id": r.row_id,
        "variant": r.variant,
        "pass": r.pass,
        "model": r.model,
        // The provider that made the image (`null` for a copy from the cache).
        "provider": r.provider,
        "status": if r.cached != 0 { "cached" } else { "done" },
        "path": r.output_path,
        "cost": Money::from_micros(r.cost_micros),
        "cost_micros": r.cost_micros,
        // The table's price at load time; `cost` is what was counted (the observed price if higher).
        "price_micros": r.price_micros,
        "generation_id": r.generation_id,
        "attempts": r.attempts,
        "latency_ms": r.latency_ms,
        "content_hash": r.content_hash,
        "bytes": r.content_bytes,
        "prompt": r.prompt,
        "aspect_ratio": r.aspect_ratio,
        "metadata": metadata,
        "qc": qc,
    });
    if let Some(preview) = &r.preview_key {
        // A final made by promotion names its preview and how the preview was used.
        line["preview"] = json!(preview);
        line["reference"] = json!(r.reference_note);
    }
    if let Some(source) = source_file(r) {
        // A reframe names the image it extends, as `PASS/FILE`.
        line["source"] = json!(source);
    }
    line
}

/// A reframe's source image as `PASS/FILE` (`final/jar.jpg`): a reframe keeps its source's format.
fn source_file(r: &ResultRecord) -> Option<String> {
    let key = r.source_key.as_ref()?;
    let format = darkroom_jobs::Format::parse(&r.format).unwrap_or_default();
    Some(format!("{key}.{}", format.extension()))
}

fn error_line(r: &ResultRecord, metadata: &Metadata) -> serde_json::Value {
    json!({
        "id": r.task_key,
        "row_id": r.row_id,
        "pass": r.pass,
        "model": r.model,
        "provider": r.provider,
        "status": r.state,
        "reason": r.reason,
        "attempts": r.attempts,
        "cost_micros": r.cost_micros,
        "prompt": r.prompt,
        "metadata": metadata,
    })
}

fn manifest_header(metadata_columns: &BTreeSet<String>) -> Vec<String> {
    let mut header: Vec<String> = [
        "id",
        "pass",
        "model",
        "provider",
        "status",
        "path",
        "cost",
        "prompt",
        "aspect_ratio",
        "reason",
        "content_hash",
        "qc",
        "source",
    ]
    .map(String::from)
    .to_vec();
    header.extend(metadata_columns.iter().cloned());
    header.push("keep".into());
    header
}

/// `keep` cells a user filled in the manifest already on disk, by (id, pass): a rewrite keeps them.
pub fn existing_keeps(manifest: &Path) -> HashMap<(String, String), String> {
    let mut keeps = HashMap::new();
    let Ok(mut reader) = csv::ReaderBuilder::new().flexible(true).from_path(manifest) else {
        return keeps;
    };
    let Ok(headers) = reader.headers().cloned() else {
        return keeps;
    };
    let column = |name: &str| headers.iter().position(|h| h == name);
    let (Some(id), Some(pass), Some(keep)) = (column("id"), column("pass"), column("keep")) else {
        return keeps;
    };
    for record in reader.records().flatten() {
        if let (Some(i), Some(p), Some(k)) = (record.get(id), record.get(pass), record.get(keep)) {
            if !k.trim().is_empty() {
                keeps.insert((i.to_string(), p.to_string()), k.to_string());
            }
        }
    }
    keeps
}

fn manifest_row(
    r: &ResultRecord,
    metadata: &Metadata,
    metadata_columns: &BTreeSet<String>,
    keeps: &HashMap<(String, String), String>,
    qc: &[StoredFlag],
) -> Vec<String> {
    let mut row = vec![
        r.task_key.clone(),
        r.pass.clone(),
        r.model.clone(),
        r.provider.clone().unwrap_or_default(),
        if r.state == TaskState::Done && r.cached != 0 {
            "cached".into()
        } else {
            r.state.to_string()
        },
        r.output_path.clone().unwrap_or_default(),
        Money::from_micros(r.cost_micros).to_decimal_string(),
        r.prompt.clone(),
        r.aspect_ratio.clone(),
        r.reason.clone().unwrap_or_default(),
        if r.state == TaskState::Done {
            r.content_hash.clone().unwrap_or_default()
        } else {
            String::new()
        },
        qc_cell(qc),
        source_file(r).unwrap_or_default(),
    ];
    row.extend(
        metadata_columns
            .iter()
            .map(|c| metadata.get(c).cloned().unwrap_or_default()),
    );
    row.push(
        keeps
            .get(&(r.task_key.clone(), r.pass.clone()))
            .cloned()
            .unwrap_or_default(),
    );
    row
}
