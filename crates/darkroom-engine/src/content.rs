//! Images by content, not by path: writing an image without destroying bytes the ledger still points
//! at, the content-checked cache, the cheap start-of-run check and the full `verify`.
//!
//! - [`put_image`]: before a download or a cache copy is renamed into place, the bytes at that path
//!   that another task (superseded, or of another pass or job) still records as its image are kept
//!   aside under `DIR/.superseded/` and that task's path is updated; only then is the new file
//!   renamed over the path. A crash at any instant leaves every task pointing at bytes that exist
//!   (the link is made before the ledger moves, the ledger moves before the rename) or at a path
//!   `verify` flags.
//! - [`take_from_cache`]: a cache hit copies only bytes that hash to the source's recorded hash;
//!   a missing or changed source is marked damaged (never offered again) and is not a hit. The
//!   copy's metadata is then rewritten to its own task's (`metadata::embed`).
//!
//! The hash and size recorded for an image are those of the file as written, metadata included:
//! `verify` and the start-of-run check compare the file with exactly what was written, and a cache
//! source is checked against its own file's hash before its metadata is replaced in the copy.
//! - [`check_kept_images`]: at the start of each run, a done task whose file is missing or has the
//!   wrong size is marked damaged (a `stat` per file, no hashing), so the run restores it; a task
//!   revived by the job file whose image was kept aside gets it back at its own path.
//! - [`verify_job`]: every done task's file hashed and compared with the ledger.
//!
//! Hashing and file checks are here and in `images`; what is recorded is the ledger's.

use std::path::{Component, Path, PathBuf};

use darkroom_jobs::Pass;
use darkroom_ledger::{CachedImage, Damage, ImageContent, JobRecord, KeptImage, Ledger};
use serde::Serialize;

use crate::images::{self, file_content, keep_aside, superseded_path};
use crate::metadata::ImageMetadata;
use crate::EngineError;

/// Done tasks read from the ledger at a time by the checks.
const PAGE: i64 = 500;

/// Cache sources tried for one task before it is generated instead.
const CACHE_TRIES: usize = 16;

/// Writes an image's bytes to `path` for task `task_id` and returns their hash and size: staged
/// beside the path, then whatever another task still records at `path` is moved aside, then the
/// staged file is renamed into place. The caller records the task done with the returned content.
pub(crate) async fn put_image(
    ledger: &Ledger,
    task_id: i64,
    path: &Path,
    bytes: Vec<u8>,
) -> Result<ImageContent, EngineError> {
    let content = images::content_of(&bytes);
    let staged = {
        let path = path.to_path_buf();
        blocking(move || images::stage(&path, &bytes)).await
    }
    .map_err(|source| output_error(path, source))?;
    make_room(ledger, task_id, path).await?;
    blocking(move || staged.commit())
        .await
        .map_err(|source| output_error(path, source))?;
    Ok(content)
}

/// Moves aside the bytes at `path` that other done tasks still record as their image. A task whose
/// recorded hash is not what the file holds (or whose file is gone) already lost its bytes: it is
/// marked damaged instead (never offered by the cache, restored by its pass's next run).
async fn make_room(ledger: &Ledger, task_id: i64, path: &Path) -> Result<(), EngineError> {
    let path_text = path.display().to_string();
    let occupants = ledger.images_at(&path_text, task_id).await?;
    if occupants.is_empty() {
        return Ok(());
    }
    let found = {
        let path = path.to_path_buf();
        blocking(move || match file_content(&path) {
            Ok(content) => Ok(Some(content)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }
    .map_err(|source| output_error(path, source))?;
    let mut aside: Option<PathBuf> = None;
    for occupant in occupants {
        let recorded = occupant.content();
        match (&found, recorded) {
            (None, Some(_)) => {
                ledger.mark_damaged(occupant.task_id, Damage::Missing).await?;
            }
            // Kept by an older release and already gone: `verify` reports it.
            (None, None) => {}
            (Some(found), Some(recorded)) if *found != recorded => {
                ledger.mark_damaged(occupant.task_id, Damage::Changed).await?;
            }
            // Its bytes (or, for an image from before hashes were kept, whatever is there).
            (Some(found), _) => {
                let target = match &aside {
                    Some(target) => target.clone(),
                    None => {
                        let target = superseded_path(path, &found.hash);
                        let (from, to) = (path.to_path_buf(), target.clone());
                        blocking(move || keep_aside(&from, &to))
                            .await
                            .map_err(|source| output_error(&target, source))?;
                        aside = Some(target.clone());
                        target
                    }
                };
                ledger
                    .move_image(occupant.task_id, &path_text, &target.display().to_string())
                    .await?;
            }
        }
    }
    Ok(())
}

/// A cache hit: an image with the task's fingerprint, made on `provider`, whose bytes still hash to what the ledger
/// recorded, copied to `target`. Sources whose file is missing or changed are marked damaged and
/// the next one is tried; `None` when no source holds good bytes (the task is generated instead).
/// Returns the source used and the content written.
/// The copy carries `metadata` (the task's own fields, with the source's generation id), or, with
/// `None`, none of darkroom's: never the source's job, row or pass.
pub(crate) async fn take_from_cache(
    ledger: &Ledger,
    task_id: i64,
    fingerprint: &str,
    provider: &str,
    target: &Path,
    metadata: Option<ImageMetadata>,
) -> Result<Option<(CachedImage, ImageContent)>, EngineError> {
    // Each turn marks a source damaged or finds it moved: bounded, in case sources keep moving.
    for _ in 0..CACHE_TRIES {
        let Some(source) = ledger.cached_image(fingerprint, provider).await? else {
            break;
        };
        let read = {
            let from = PathBuf::from(&source.output_path);
            blocking(move || std::fs::read(from)).await
        };
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !moved_since(ledger, &source).await? {
                    tracing::warn!(path = %source.output_path, "a cached image is missing; not reusing it");
                    ledger.mark_damaged(source.task_id, Damage::Missing).await?;
                }
                continue;
            }
            Err(error) => {
                // Unreadable for now (permissions, I/O): not a hit, but not known to be damaged.
                tracing::warn!(path = %source.output_path, %error, "a cached image could not be read");
                return Ok(None);
            }
        };
        if images::content_of(&bytes) != source.content {
            if !moved_since(ledger, &source).await? {
                tracing::warn!(path = %source.output_path, "a cached image's bytes changed; not reusing it");
                ledger.mark_damaged(source.task_id, Damage::Changed).await?;
            }
            continue;
        }
        let metadata = metadata.map(|m| ImageMetadata {
            generation_id: source.generation_id.clone(),
            ..m
        });
        let bytes = crate::metadata::stamp(bytes, metadata, &target.display().to_string()).await;
        let content = put_image(ledger, task_id, target, bytes).await?;
        return Ok(Some((source, content)));
    }
    Ok(None)
}

/// Whether the source's image was kept aside (by a download landing at its path) after it was
/// looked up: then its old path holds another task's bytes, and the source is tried again where
/// it is now rather than marked damaged.
async fn moved_since(ledger: &Ledger, source: &CachedImage) -> Result<bool, EngineError> {
    let now = ledger.task(source.task_id).await?.output_path;
    Ok(now.as_deref() != Some(source.output_path.as_str()))
}

/// The start-of-run check of one pass: each done task's file must exist with its recorded size
/// (a `stat`, no hashing); those that don't are marked damaged and reopened, so this run downloads
/// them again (or makes them again when the upstream no longer has them). A task back in the job
/// file after being superseded, whose image was kept aside meanwhile, gets it back at its own path
/// in `pass_dir` (after its hash is checked). Returns how many tasks were reopened.
pub async fn check_kept_images(
    ledger: &Ledger,
    job_id: i64,
    pass: Pass,
    pass_dir: &Path,
) -> Result<u64, EngineError> {
    let mut after = 0;
    loop {
        let page = ledger.kept_images(job_id, Some(pass), after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.task_id;
        let checked = tokio::task::spawn_blocking(move || {
            page.into_iter()
                .filter(|image| image.damage.is_none())
                .filter_map(|image| {
                    let damage = match std::fs::metadata(&image.output_path) {
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Damage::Missing),
                        Ok(meta) if !meta.is_file() => Some(Damage::Missing),
                        Ok(meta) => image
                            .content_bytes
                            .filter(|bytes| u64::try_from(*bytes).ok() != Some(meta.len()))
                            .map(|_| Damage::Changed),
                        // Unreadable metadata: not known to be damaged; `verify` reports it.
                        Err(_) => None,
                    };
                    match damage {
                        Some(damage) => Some((image, Some(damage))),
                        None if is_kept_aside(Path::new(&image.output_path)) => Some((image, None)),
                        None => None,
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (image, damage) in checked {
            match damage {
                Some(damage) => {
                    ledger.mark_damaged(image.task_id, damage).await?;
                }
                None => put_back(ledger, &image, pass_dir).await?,
            }
        }
    }
    Ok(ledger.reopen_damaged(job_id, pass).await?)
}

/// Whether an image's path is one `put_image` kept it aside at.
fn is_kept_aside(path: &Path) -> bool {
    path.parent()
        .and_then(Path::file_name)
        .is_some_and(|name| name == images::SUPERSEDED_DIR)
}

/// Copies a revived task's kept-aside image back to its own path (moving aside whatever another
/// task keeps there) and records it there; a file that no longer hashes to its record is marked
/// changed instead, to be restored.
async fn put_back(ledger: &Ledger, image: &KeptImage, pass_dir: &Path) -> Result<(), EngineError> {
    let recorded = PathBuf::from(&image.output_path);
    let name = match recorded.extension() {
        Some(ext) => format!("{}.{}", image.task_key, ext.to_string_lossy()),
        None => image.task_key.clone(),
    };
    let target = pass_dir.join(name);
    let bytes = {
        let recorded = recorded.clone();
        blocking(move || std::fs::read(recorded)).await
    }
    .map_err(|source| output_error(&recorded, source))?;
    let content = images::content_of(&bytes);
    if image.content().is_some_and(|expected| expected != content) {
        ledger.mark_damaged(image.task_id, Damage::Changed).await?;
        return Ok(());
    }
    put_image(ledger, image.task_id, &target, bytes).await?;
    ledger
        .move_image(image.task_id, &image.output_path, &target.display().to_string())
        .await?;
    Ok(())
}

/// What is wrong with a kept image's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Problem {
    /// No file at its path.
    Missing,
    /// A file of another size or hash than the ledger recorded.
    Changed,
    /// The file could not be read (permissions, I/O).
    Unreadable,
    /// Kept by a release before hashes were recorded: nothing to compare it with.
    Unverified,
}

impl Problem {
    /// The problem's name, stable for scripts: `missing`, `changed`, `unreadable`, `unverified`.
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::Missing => "missing",
            Problem::Changed => "changed",
            Problem::Unreadable => "unreadable",
            Problem::Unverified => "unverified",
        }
    }
}

/// One kept image whose file is not what the ledger recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The job's name.
    pub job: String,
    /// The pass: `preview` or `final`.
    pub pass: String,
    /// The row's id in the job file.
    pub row_id: String,
    /// The file stem: the row id, with `-VARIANT` for variants.
    pub id: String,
    /// The path checked (the recorded one, moved under `--out` when given).
    pub path: String,
    /// What is wrong with it.
    pub problem: Problem,
    /// What the ledger recorded (none for an unverified image).
    pub expected: Option<ImageContent>,
    /// What the file holds (none when it is missing or unreadable).
    pub found: Option<ImageContent>,
    /// The I/O error, for an unreadable file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `verify` found for one job.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Done, non-superseded tasks whose files were checked.
    pub checked: u64,
    /// Files holding exactly the recorded bytes.
    pub intact: u64,
    /// Missing, changed, unreadable and unverified files, in task order.
    pub findings: Vec<Finding>,
    /// Tasks marked for the next run to restore (missing or changed).
    pub marked: u64,
}

impl VerifyReport {
    /// Whether some file is missing, changed or unreadable (unverified ones are not wrong).
    pub fn has_damage(&self) -> bool {
        self.findings.iter().any(|f| f.problem != Problem::Unverified)
    }
}

/// How `verify` treats a file kept before hashes were recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unverified {
    /// Report it and record nothing: its bytes may be another image (the bug hashes were added
    /// for could have overwritten it), and recording them would make the cache spread them.
    Report,
    /// The user has looked at the images and vouches for them: record their current hash and size.
    Record,
}

/// Hashes every done, non-superseded task's file of the job and compares it with the ledger.
/// Missing and changed files are marked so the job's next `run` (or `promote`) restores them; a
/// file found intact again has its damage cleared. `out`: look for files under this output
/// directory instead of the recorded paths (for a job moved since it ran).
pub async fn verify_job(
    ledger: &Ledger,
    job: &JobRecord,
    out: Option<&Path>,
    unverified: Unverified,
) -> Result<VerifyReport, EngineError> {
    let mut report = VerifyReport::default();
    let mut after = 0;
    loop {
        let page = ledger.kept_images(job.id, None, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.task_id;
        for image in page {
            report.checked += 1;
            let path = match out {
                Some(out) => rebase(&image, out),
                None => PathBuf::from(&image.output_path),
            };
            let found = {
                let path = path.clone();
                blocking(move || file_content(&path)).await
            };
            let expected = image.content();
            let problem = match (&found, &expected) {
                (Ok(found), Some(expected)) if found == expected => {
                    report.intact += 1;
                    if image.damage.is_some() {
                        ledger.clear_damage(image.task_id).await?;
                    }
                    continue;
                }
                (Ok(found), None) if unverified == Unverified::Record => {
                    ledger.record_content(image.task_id, found).await?;
                    report.intact += 1;
                    continue;
                }
                (Ok(_), None) => Problem::Unverified,
                (Ok(_), Some(_)) => Problem::Changed,
                (Err(e), _) if e.kind() == std::io::ErrorKind::NotFound => Problem::Missing,
                (Err(_), _) => Problem::Unreadable,
            };
            let damage = match problem {
                Problem::Missing => Some(Damage::Missing),
                Problem::Changed => Some(Damage::Changed),
                Problem::Unreadable | Problem::Unverified => None,
            };
            if let Some(damage) = damage {
                if ledger.mark_damaged(image.task_id, damage).await? {
                    report.marked += 1;
                }
            }
            let (found, error) = match found {
                Ok(found) => (Some(found), None),
                Err(_) if problem == Problem::Missing => (None, None),
                Err(e) => (None, Some(e.to_string())),
            };
            report.findings.push(Finding {
                job: image.job_name.clone(),
                pass: image.pass.clone(),
                row_id: image.row_id.clone(),
                id: image.task_key.clone(),
                path: path.display().to_string(),
                problem,
                expected,
                found,
                error,
            });
        }
    }
    Ok(report)
}

/// The recorded path moved under `out`: the part after `JOB/PASS/` joined to `OUT/JOB/PASS/`. A
/// path without that part is used as recorded.
fn rebase(image: &KeptImage, out: &Path) -> PathBuf {
    let recorded = Path::new(&image.output_path);
    let parts: Vec<Component<'_>> = recorded.components().collect();
    let is = |c: &Component<'_>, text: &str| c.as_os_str() == std::ffi::OsStr::new(text);
    for i in (1..parts.len()).rev() {
        if is(&parts[i], &image.pass) && is(&parts[i - 1], &image.job_name) {
            let mut path = out.join(&image.job_name).join(&image.pass);
            for part in &parts[i + 1..] {
                path.push(part.as_os_str());
            }
            return path;
        }
    }
    recorded.to_path_buf()
}

fn output_error(path: &Path, source: std::io::Error) -> EngineError {
    EngineError::Output {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs blocking file work on the blocking pool; a panic there is an I/O error here.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

#[cfg(test)]
mod tests;
