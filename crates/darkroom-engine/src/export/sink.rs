//! Where an export's files go while it is written (`Sink`): a temporary folder or zip file beside
//! the destination, renamed into place when every file is in (`commit`) or removed (`abandon`), and
//! the leftovers of an export killed midway (`remove_leftovers`).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::images::sync_dir;

use super::Destination;

/// Temporaries an export killed midway left beside `target` (`.NAME.tmp-*`, `.NAME.old-*`).
pub(super) fn remove_leftovers(target: &Path) -> std::io::Result<()> {
    let (parent, name) = parts(target);
    let Ok(entries) = std::fs::read_dir(&parent) else {
        return Ok(());
    };
    let prefixes = [format!(".{name}.tmp-"), format!(".{name}.old-")];
    for entry in entries {
        let entry = entry?;
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        if prefixes.iter().any(|p| entry_name.starts_with(p.as_str())) {
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(path)?;
            } else {
                std::fs::remove_file(path)?;
            }
        }
    }
    Ok(())
}

/// The target's directory (`.` for a bare name) and file name.
fn parts(target: &Path) -> (PathBuf, String) {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map_or_else(|| "export".to_string(), |n| n.to_string_lossy().into_owned());
    (parent, name)
}

/// A name beside `target` no other export uses at the same time.
fn sibling(target: &Path, kind: &str) -> PathBuf {
    let (parent, name) = parts(target);
    let unique = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
    parent.join(format!(".{name}.{kind}-{unique}"))
}

/// Where the files go while the export is being written.
pub(super) enum Sink {
    Folder {
        tmp: PathBuf,
        target: PathBuf,
    },
    Zip {
        tmp: PathBuf,
        target: PathBuf,
        zip: Box<zip::ZipWriter<std::fs::File>>,
        root: String,
    },
}

impl Sink {
    pub(super) fn open(destination: &Destination, job: &str) -> std::io::Result<Sink> {
        let target = destination.path().to_path_buf();
        let (parent, _) = parts(&target);
        std::fs::create_dir_all(&parent)?;
        let tmp = sibling(&target, "tmp");
        Ok(match destination {
            Destination::Folder(_) => {
                std::fs::create_dir(&tmp)?;
                Sink::Folder { tmp, target }
            }
            Destination::Zip(_) => {
                let file = std::fs::File::create(&tmp)?;
                let zip = Box::new(zip::ZipWriter::new(file));
                Sink::Zip {
                    tmp,
                    target,
                    zip,
                    root: job.to_string(),
                }
            }
        })
    }

    /// Adds one file (`PASS/FILE`, `manifest.csv`) with `bytes`.
    pub(super) fn add(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Folder { tmp, .. } => {
                let path = tmp.join(name);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let mut file = std::fs::File::create(&path)?;
                file.write_all(bytes)?;
                file.sync_all()
            }
            Sink::Zip { zip, root, .. } => {
                // Images are compressed already; text is deflated. A fixed time keeps re-runs equal.
                let method = if name.ends_with(".csv") || name.ends_with(".html") {
                    zip::CompressionMethod::Deflated
                } else {
                    zip::CompressionMethod::Stored
                };
                let options = zip::write::SimpleFileOptions::default()
                    .compression_method(method)
                    .last_modified_time(zip::DateTime::default())
                    .unix_permissions(0o644);
                zip.start_file(format!("{root}/{name}"), options)
                    .map_err(std::io::Error::other)?;
                zip.write_all(bytes)
            }
        }
    }

    /// Renames the finished export into place (the earlier one, if any, removed after).
    pub(super) fn commit(self) -> std::io::Result<()> {
        match self {
            Sink::Folder { tmp, target } => {
                for dir in ["preview", "final"]
                    .map(|d| tmp.join(d))
                    .iter()
                    .filter(|d| d.is_dir())
                {
                    sync_dir(dir)?;
                }
                sync_dir(&tmp)?;
                let old = sibling(&target, "old");
                let had_one = match std::fs::rename(&target, &old) {
                    Ok(()) => true,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                    Err(e) => return Err(e),
                };
                std::fs::rename(&tmp, &target)?;
                sync_dir(&parts(&target).0)?;
                if had_one && old.is_dir() {
                    std::fs::remove_dir_all(&old)?;
                } else if had_one {
                    std::fs::remove_file(&old)?;
                }
                Ok(())
            }
            Sink::Zip { tmp, target, zip, .. } => {
                let file = zip.finish().map_err(std::io::Error::other)?;
                file.sync_all()?;
                drop(file);
                std::fs::rename(&tmp, &target)?;
                sync_dir(&parts(&target).0)
            }
        }
    }

    /// Removes what was written: nothing half-written is left.
    pub(super) fn abandon(self) {
        match self {
            Sink::Folder { tmp, .. } => {
                let _ = std::fs::remove_dir_all(tmp);
            }
            Sink::Zip { tmp, zip, .. } => {
                drop(zip);
                let _ = std::fs::remove_file(tmp);
            }
        }
    }
}
