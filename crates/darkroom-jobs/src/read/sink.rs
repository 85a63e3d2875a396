//! One pass over a job file: raw rows in, the report kept, every valid row named (given ids first,
//! derived names made unique against them) and handed on.

use crate::ids::{valid_id, MAX_ID_LEN};
use crate::model::Row;
use crate::variables::Template;

pub(super) use super::names::Names;
use super::names::Taken;
use super::validate::validate;
use super::{FileFormat, RawRow, ReadOptions, Report, RowError, MAX_VARIANTS};

/// What a pass over the file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Collect the ids the file gives its rows; nothing else.
    Reserve,
    /// Validate every row, make derived names unique, hand valid rows on.
    Validate,
}

/// Receives raw rows, validates them, keeps the report and hands valid rows on.
pub(crate) struct Sink<F> {
    options: ReadOptions,
    on_row: F,
    mode: Mode,
    rows: u64,
    tasks: u64,
    pub(super) records: u64,
    lines: u64,
    errors: Vec<RowError>,
    pub(super) error_count: u64,
    renamed: Vec<RowError>,
    renamed_count: u64,
    metadata_columns: Vec<String>,
    pub(super) names: Names,
}

impl<F: FnMut(Row)> Sink<F> {
    pub(super) fn new(options: ReadOptions, on_row: F, mode: Mode, names: Names) -> Self {
        Sink {
            options,
            on_row,
            mode,
            rows: 0,
            tasks: 0,
            records: 0,
            lines: 0,
            errors: Vec::new(),
            error_count: 0,
            renamed: Vec::new(),
            renamed_count: 0,
            metadata_columns: Vec::new(),
            names,
        }
    }

    /// Records a column that is not a known one (its values become metadata).
    pub(crate) fn metadata_column(&mut self, name: &str) {
        if !self.metadata_columns.iter().any(|c| c == name) {
            self.metadata_columns.push(name.to_string());
        }
    }

    /// Whether this pass only collects the ids the file gives (a reader may then fill only `id`,
    /// `prompt` and `variants`).
    pub(crate) fn reserving(&self) -> bool {
        self.mode == Mode::Reserve
    }

    /// Counts one record that took physical lines `first..=last`.
    pub(crate) fn record(&mut self, first: u64, last: u64) {
        self.records += 1;
        self.lines += last.saturating_sub(first) + 1;
    }

    /// Records a problem with the row starting on `line` (not in the reserving pass).
    pub(crate) fn error(&mut self, line: u64, row_id: Option<String>, message: String) {
        if self.mode == Mode::Reserve {
            return;
        }
        self.error_count += 1;
        if self.errors.len() < self.options.max_errors_kept {
            self.errors.push(RowError {
                line,
                row_id,
                message,
            });
        }
    }

    /// Takes one raw row: in the reserving pass its id, else validated, named and handed on.
    pub(crate) fn raw(&mut self, raw: RawRow) {
        if self.mode == Mode::Reserve {
            self.reserve(
                raw.line,
                raw.id.as_deref(),
                raw.prompt.as_deref(),
                raw.variants.as_deref(),
            );
            return;
        }
        let line = raw.line;
        for key in raw.metadata.keys() {
            if !self.metadata_columns.iter().any(|c| c == key) {
                self.metadata_columns.push(key.clone());
            }
        }
        match validate(raw, &self.options) {
            Ok((rows, given)) => {
                for mut row in rows {
                    if let Err(message) = self.claim(&mut row, given) {
                        self.error(line, Some(row.id.clone()), message);
                        continue;
                    }
                    self.rows += 1;
                    self.tasks += u64::from(row.variants);
                    if self.error_count == 0 {
                        (self.on_row)(row);
                    }
                }
            }
            Err((messages, shown_id)) => {
                for message in messages {
                    self.error(line, shown_id.clone(), message);
                }
            }
        }
    }

    /// First pass: the id the row on `line` gives itself, when it names exactly one row (no
    /// prompt variables). The fields are the row's as written (`id`, `prompt`, `variants`).
    pub(crate) fn reserve(
        &mut self,
        line: u64,
        id: Option<&str>,
        prompt: Option<&str>,
        variants: Option<&str>,
    ) {
        let Some(id) = id.map(str::trim).filter(|id| valid_id(id)) else {
            return;
        };
        let prompt = prompt.unwrap_or_default().trim();
        if prompt.contains('{') && Template::parse(prompt).is_ok_and(|t| t.has_groups()) {
            return;
        }
        let variants = variants
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|n| (1..=MAX_VARIANTS).contains(n))
            .unwrap_or(1);
        self.names.reserve(id, line, variants);
    }

    /// Gives `row` its name for good. An id the file gave (`given`) that another row already has
    /// is an error naming that row's line; a name darkroom derived, for the row or for one of its
    /// variants, that another row has is replaced by a unique one, and the change is reported.
    fn claim(&mut self, row: &mut Row, given: bool) -> Result<(), String> {
        let line = row.line;
        let renamed_before = self.renamed_count;
        if given {
            // Only another row's own id can refuse a given id: a later row's variants yield to it
            // (that row is renamed when it is read), and an earlier row's already did.
            if let Some(taken) = self.names.reserved_by_another(&row.id, line) {
                return Err(taken.duplicate_message(&row.id));
            }
        } else if let Some(taken) = self.names.taken_by(&row.id, 0) {
            self.rename(row, &taken);
        }
        if row.variants > 1 && self.names.numbered > 0 {
            // A given id's own entry carries its variants; a derived name has none yet. With no
            // name ending in `-N` held, a variant's name could only be held as a variant of this
            // very name, which the checks above ruled out.
            let own = if given { line } else { 0 };
            let first_taken =
                (1..=row.variants).find_map(|n| self.names.taken_by(&format!("{}-{n}", row.id), own));
            if let Some(taken) = first_taken {
                if given {
                    // The id stays the file's own, but no longer names any variant's file.
                    self.names.claim(&row.id, line, 1);
                }
                self.rename(row, &taken);
            }
        }
        if !given || self.renamed_count != renamed_before {
            // A given id kept is already held, exactly so, by the first pass.
            self.names.claim(&row.id, line, row.variants);
        }
        Ok(())
    }

    /// Replaces a derived name that is taken with the row's name, a dash and eight hex digits of a
    /// hash of the row (its name, line and prompt): the same file always gives the same names.
    fn rename(&mut self, row: &mut Row, taken: &Taken) {
        let old = std::mem::take(&mut row.id);
        let keep = old.len().min(MAX_ID_LEN - 9);
        let mut attempt = 0u32;
        let new = loop {
            let mut hasher = blake3::Hasher::new();
            hasher.update(old.as_bytes());
            hasher.update(&row.line.to_le_bytes());
            hasher.update(row.prompt.as_bytes());
            hasher.update(&attempt.to_le_bytes());
            let candidate = format!("{}-{}", &old[..keep], &hasher.finalize().to_hex()[..8]);
            if self.names.is_free(&candidate, row.variants) {
                break candidate;
            }
            attempt += 1;
        };
        self.renamed_count += 1;
        if self.renamed.len() < self.options.max_errors_kept {
            self.renamed.push(RowError {
                line: row.line,
                row_id: Some(new.clone()),
                message: format!(
                    "the name {:?} darkroom derived is also the name of {}, so this row is named {new:?}",
                    taken.name,
                    if taken.line == row.line && taken.variant.is_none() {
                        "another of this row's prompt alternatives".to_string()
                    } else {
                        taken.whose()
                    }
                ),
            });
        }
        row.id = new;
    }

    pub(super) fn into_report(self, format: FileFormat, file_fingerprint: String) -> Report {
        Report {
            format,
            rows: self.rows,
            tasks: self.tasks,
            metadata_columns: self.metadata_columns,
            errors: self.errors,
            error_count: self.error_count,
            records: self.records,
            lines: self.lines,
            renamed: self.renamed,
            renamed_count: self.renamed_count,
            file_fingerprint,
        }
    }
}
