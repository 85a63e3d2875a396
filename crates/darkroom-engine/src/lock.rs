//! One run of a job at a time: an exclusive OS lock on a file beside the ledger.
//!
//! The operating system releases the lock when the process ends, however it ends, so a run killed
//! with SIGKILL never leaves a stale lock behind for the next one.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

/// Held for the whole run; dropping it releases the job.
#[derive(Debug)]
pub struct JobLock {
    _file: File,
    path: PathBuf,
}

/// Why the job could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the job's lock.
    #[error("job {job:?} is already running in another darkroom process (lock {path})")]
    Busy {
        /// The job's name.
        job: String,
        /// The lock file.
        path: PathBuf,
    },
    /// The lock file could not be created or locked.
    #[error("could not create the lock file {path}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl JobLock {
    /// Locks job `job` of the ledger at `ledger_path`, or says who holds it.
    pub fn acquire(ledger_path: &Path, job: &str) -> Result<JobLock, LockError> {
        let name = ledger_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = ledger_path.with_file_name(format!("{name}.{job}.lock"));
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(JobLock { _file: file, path }),
            Err(TryLockError::WouldBlock) => Err(LockError::Busy {
                job: job.to_string(),
                path,
            }),
            Err(TryLockError::Error(source)) => Err(LockError::Io { path, source }),
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_job_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("darkroom.db");
        let first = JobLock::acquire(&db, "shoes").unwrap();
        assert!(matches!(
            JobLock::acquire(&db, "shoes"),
            Err(LockError::Busy { .. })
        ));
        assert!(
            JobLock::acquire(&db, "hats").is_ok(),
            "other jobs are independent"
        );
        drop(first);
        assert!(JobLock::acquire(&db, "shoes").is_ok());
    }
}
