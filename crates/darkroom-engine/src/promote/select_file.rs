//! Select files: the CSV a user names with `--select` (the review page's export, or
//! `manifest.csv` with its `keep` column filled), read into the ids it chooses, each with its line.

use std::collections::HashMap;
use std::path::Path;

/// A select file could not be used. Nothing was spent.
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    /// The file could not be opened.
    #[error("could not read the select file {path}: {reason}")]
    Io {
        /// The select file, as given.
        path: String,
        /// The I/O error (the OS's reason is in the message).
        reason: std::io::Error,
    },
    /// A record is not CSV (e.g. not UTF-8).
    #[error("{path}, line {line}: {message}")]
    Csv {
        /// The select file, as given.
        path: String,
        /// The line of the record, from 1.
        line: u64,
        /// What the CSV reader said.
        message: String,
    },
    /// The header names no `id` column.
    #[error("{path} has no `id` column (expected the review page's export or manifest.csv)")]
    NoIdColumn {
        /// The select file, as given.
        path: String,
    },
}

/// Whether a `keep` cell chooses its row: `y`, `yes`, `x`, `1` or `true`, in any case.
pub(super) fn is_kept(cell: &str) -> bool {
    matches!(
        cell.trim().to_ascii_lowercase().as_str(),
        "y" | "yes" | "x" | "1" | "true"
    )
}

/// Reads a select file: a CSV with an `id` column (the review page's export, or `manifest.csv`).
/// With a `keep` column, only rows it marks are chosen; without one, every listed id is. With a
/// `pass` column, only preview rows count. Ids come back in file order, blanks left out.
///
/// # Errors
/// `SelectionError`, naming the file and, for a bad record, its line.
pub fn read_selection(path: &Path) -> Result<Vec<String>, SelectionError> {
    Ok(read_selection_lines(path)?.into_iter().map(|s| s.id).collect())
}

/// One id a select file chooses, with the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedId {
    /// The id as the file gives it (trimmed).
    pub id: String,
    /// The line of its record, from 1 (the header is line 1).
    pub line: u64,
}

/// [`read_selection`], each id with its line, so a caller can name the line of an id it can't use.
///
/// # Errors
/// As [`read_selection`].
pub fn read_selection_lines(path: &Path) -> Result<Vec<SelectedId>, SelectionError> {
    let shown = path.display().to_string();
    // A select file is small (a manifest of 50,000 rows is a few MB): held whole, so each id's
    // physical line can be counted from its record's offset.
    let bytes = std::fs::read(path).map_err(|reason| SelectionError::Io {
        path: shown.clone(),
        reason,
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(bytes.as_slice());
    let csv_error = |e: csv::Error| SelectionError::Csv {
        path: shown.clone(),
        line: e.position().map_or(1, csv::Position::line),
        message: e.to_string(),
    };
    let headers = reader.headers().map_err(csv_error)?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim().trim_start_matches('\u{feff}').eq_ignore_ascii_case(name))
    };
    let id = column("id").ok_or_else(|| SelectionError::NoIdColumn { path: shown.clone() })?;
    let (keep, pass) = (column("keep"), column("pass"));
    let mut ids = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        if pass.is_some_and(|p| record.get(p).is_some_and(|v| v.trim() != "preview")) {
            continue;
        }
        if keep.is_some_and(|k| !is_kept(record.get(k).unwrap_or(""))) {
            continue;
        }
        if let Some(value) = record.get(id).map(str::trim).filter(|v| !v.is_empty()) {
            ids.push(SelectedId {
                id: value.to_string(),
                line: record.position().map_or(0, |p| line_at(&bytes, p.byte())),
            });
        }
    }
    Ok(ids)
}

/// The physical line (from 1) of the record at byte `offset`: blank lines the reader skipped
/// before the record count, as an editor shows them.
fn line_at(bytes: &[u8], offset: u64) -> u64 {
    let mut at = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
    while bytes.get(at).is_some_and(|b| *b == b'\n' || *b == b'\r') {
        at += 1;
    }
    1 + bytes[..at].iter().filter(|b| **b == b'\n').count() as u64
}

/// Tasks looked up by the ids a select file names (`ROWID` or `ROWID-VARIANT`): the exact key
/// first, else the key ignoring ASCII letter case. A job's row ids are unique ignoring case (the
/// job file is refused otherwise, since such ids would be one file on macOS and Windows), so a
/// select file typed or edited with another case still names exactly one task.
#[derive(Debug)]
pub(crate) struct ByTaskKey<'a, T> {
    exact: HashMap<&'a str, &'a T>,
    folded: HashMap<String, &'a T>,
}

impl<'a, T> ByTaskKey<'a, T> {
    /// Indexes `items` by the task key `key` gives each.
    pub(crate) fn new(items: impl IntoIterator<Item = &'a T>, key: impl Fn(&'a T) -> &'a str) -> Self {
        let mut exact = HashMap::new();
        let mut folded = HashMap::new();
        for item in items {
            let k = key(item);
            exact.insert(k, item);
            folded.entry(k.to_ascii_lowercase()).or_insert(item);
        }
        ByTaskKey { exact, folded }
    }

    /// The task `id` names, exactly or ignoring case.
    pub(crate) fn get(&self, id: &str) -> Option<&'a T> {
        self.exact
            .get(id)
            .or_else(|| self.folded.get(&id.to_ascii_lowercase()))
            .copied()
    }
}
