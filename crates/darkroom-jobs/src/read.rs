//! Reading a job file: CSV or JSONL, streamed row by row, every row validated, every problem kept
//! with its line and row id. Valid rows are handed to the caller one at a time (after prompt-variable
//! expansion and defaults), so a million-row file never sits in memory.
//!
//! The two formats differ only in how a line becomes a [`RawRow`]; what makes a row valid is decided
//! once, in [`validate`].

use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::Serialize;

use crate::model::{AspectRatio, Format, Metadata, Model, References, Row, WeightedUrl};
use crate::variables::{expanded_id, Template, MAX_EXPANSION};

/// Options for reading: the defaults for columns a row leaves empty.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    pub default_aspect_ratio: AspectRatio,
    /// Errors kept in the report (all are counted).
    pub max_errors_kept: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            default_aspect_ratio: AspectRatio::Landscape16x9,
            max_errors_kept: 1000,
        }
    }
}

/// The file's format, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Csv,
    Jsonl,
}

/// One problem with one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// 1-based line where the row starts.
    pub line: u64,
    pub row_id: Option<String>,
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.row_id {
            Some(id) => write!(f, "line {} (id {id:?}): {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

/// What reading a job file found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub format: FileFormat,
    /// Valid rows, after prompt-variable expansion.
    pub rows: u64,
    /// Images the valid rows ask for (rows × variants).
    pub tasks: u64,
    /// Columns (CSV) or `metadata` keys (JSONL) carried through as metadata, in first-seen order.
    pub metadata_columns: Vec<String>,
    /// The first problems found (see `ReadOptions::max_errors_kept`).
    pub errors: Vec<RowError>,
    /// Every problem found.
    pub error_count: u64,
    /// blake3 of the file's bytes.
    pub file_fingerprint: String,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.error_count == 0
    }
}

/// Why the file could not be read at all (as opposed to a row being invalid).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("could not read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: unknown job file type (expected .csv or .jsonl)")]
    UnknownType { path: String },
    #[error("{path}: {message}")]
    BadHeader { path: String, message: String },
}

/// A row as read, before validation: every field as text or the API's shapes.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawRow {
    pub line: u64,
    pub id: Option<String>,
    pub prompt: Option<String>,
    pub aspect_ratio: Option<String>,
    pub variants: Option<String>,
    pub model: Option<String>,
    pub format: Option<String>,
    pub refs: References,
    pub metadata: Metadata,
    /// Problems found while reading the row's shape.
    pub errors: Vec<String>,
}

/// The longest line (JSONL) or record (CSV) read, in bytes.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
const MAX_ID_LEN: usize = 100;
const PROMPT_MIN: usize = 3;
const PROMPT_MAX: usize = 5000;
const MAX_VARIANTS: u32 = 100;
const MAX_IMAGE_REFS: usize = 4;
const MAX_CHARACTER_REFS: usize = 4;

/// Reads and validates a whole job file, calling `on_row` for each valid row until the first
/// problem (rows after it are validated and counted, not handed on). The file is usable only when
/// the report [`is_valid`](Report::is_valid): a caller loading rows must discard them otherwise.
pub fn read_job(path: &Path, options: &ReadOptions, on_row: impl FnMut(Row)) -> Result<Report, FileError> {
    let display = path.display().to_string();
    let format = match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("csv") => FileFormat::Csv,
        Some("jsonl" | "ndjson") => FileFormat::Jsonl,
        _ => return Err(FileError::UnknownType { path: display }),
    };
    let file = std::fs::File::open(path).map_err(|source| FileError::Io {
        path: display.clone(),
        source,
    })?;
    read_from(file, &display, format, options, on_row)
}

/// Reads and validates job-file content from any reader (as [`read_job`] does a file); `name` is
/// used in messages. The entry point for fuzzing.
pub fn read_from<R: Read>(
    source: R,
    name: &str,
    format: FileFormat,
    options: &ReadOptions,
    on_row: impl FnMut(Row),
) -> Result<Report, FileError> {
    let hashing = HashingReader {
        inner: source,
        hasher: blake3::Hasher::new(),
    };
    let mut sink = Sink::new(*options, on_row);
    let hashing = match format {
        FileFormat::Csv => crate::csv_reader::read(hashing, name, &mut sink)?,
        FileFormat::Jsonl => crate::jsonl_reader::read(hashing, name, &mut sink)?,
    };
    let file_fingerprint = hashing.finish().map_err(|source| FileError::Io {
        path: name.to_string(),
        source,
    })?;
    Ok(sink.into_report(format, file_fingerprint))
}

/// Reads the rest of the file through the hasher so the fingerprint covers every byte.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> HashingReader<R> {
    fn finish(mut self) -> std::io::Result<String> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok(self.hasher.finalize().to_hex().to_string())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

pub(crate) fn buffered<R: Read>(reader: R) -> BufReader<R> {
    BufReader::with_capacity(256 * 1024, reader)
}

/// Reads one line of at most `max` bytes (without its newline). Returns `None` at the end; a
/// longer line is consumed whole and reported as `Err(length)`.
pub(crate) fn read_bounded_line<R: BufRead>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<Result<(), usize>>> {
    line.clear();
    let mut total = 0usize;
    let mut any = false;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            break;
        }
        any = true;
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        total += chunk.len();
        if total <= max {
            line.extend_from_slice(chunk);
        }
        let consumed = done.unwrap_or(available.len());
        reader.consume(consumed);
        if done.is_some() {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    if line.ends_with(b"\r") {
        line.pop();
    }
    if total > max {
        line.clear();
        return Ok(Some(Err(total)));
    }
    Ok(Some(Ok(())))
}

/// Receives raw rows, validates them, keeps the report and hands valid rows on.
pub(crate) struct Sink<F> {
    options: ReadOptions,
    on_row: F,
    rows: u64,
    tasks: u64,
    errors: Vec<RowError>,
    error_count: u64,
    metadata_columns: Vec<String>,
    /// First line of each id seen (by a 128-bit hash, so a million ids stay small).
    ids: HashMap<u128, u64>,
}

impl<F: FnMut(Row)> Sink<F> {
    fn new(options: ReadOptions, on_row: F) -> Self {
        Sink {
            options,
            on_row,
            rows: 0,
            tasks: 0,
            errors: Vec::new(),
            error_count: 0,
            metadata_columns: Vec::new(),
            ids: HashMap::new(),
        }
    }

    pub fn metadata_column(&mut self, name: &str) {
        if !self.metadata_columns.iter().any(|c| c == name) {
            self.metadata_columns.push(name.to_string());
        }
    }

    pub fn error(&mut self, line: u64, row_id: Option<String>, message: String) {
        self.error_count += 1;
        if self.errors.len() < self.options.max_errors_kept {
            self.errors.push(RowError {
                line,
                row_id,
                message,
            });
        }
    }

    pub fn raw(&mut self, raw: RawRow) {
        let line = raw.line;
        for key in raw.metadata.keys() {
            if !self.metadata_columns.iter().any(|c| c == key) {
                self.metadata_columns.push(key.clone());
            }
        }
        let shown_id = raw.id.clone().filter(|id| !id.trim().is_empty());
        match validate(raw, &self.options) {
            Ok(rows) => {
                for row in rows {
                    let key = id_key(&row.id);
                    if let Some(first) = self.ids.get(&key) {
                        let message = format!("duplicate id {:?} (first used on line {first})", row.id);
                        self.error(line, Some(row.id.clone()), message);
                        continue;
                    }
                    self.ids.insert(key, line);
                    self.rows += 1;
                    self.tasks += u64::from(row.variants);
                    if self.error_count == 0 {
                        (self.on_row)(row);
                    }
                }
            }
            Err(messages) => {
                for message in messages {
                    self.error(line, shown_id.clone(), message);
                }
            }
        }
    }

    fn into_report(self, format: FileFormat, file_fingerprint: String) -> Report {
        Report {
            format,
            rows: self.rows,
            tasks: self.tasks,
            metadata_columns: self.metadata_columns,
            errors: self.errors,
            error_count: self.error_count,
            file_fingerprint,
        }
    }
}

fn id_key(id: &str) -> u128 {
    let hash = blake3::hash(id.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_bytes()[..16]);
    u128::from_le_bytes(bytes)
}

/// Whether `id` is usable as a file name: letters, digits, `-`, `_`, `.`, no leading dot, ≤ 100,
/// and not a name Windows reserves for a device (`CON`, `NUL`, `COM1`, ... with any extension).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !is_device_name(id)
}

fn is_device_name(id: &str) -> bool {
    let stem = id.split('.').next().unwrap_or(id).to_ascii_uppercase();
    matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit())
}

/// Validates a raw row: every problem, not the first. A valid row yields one row per prompt
/// expansion.
pub(crate) fn validate(raw: RawRow, options: &ReadOptions) -> Result<Vec<Row>, Vec<String>> {
    let mut errors = raw.errors;
    let id = match raw.id.as_deref().map(str::trim) {
        None | Some("") => format!("row-{}", raw.line),
        Some(id) => {
            if !valid_id(id) {
                errors.push(format!(
                    "id {id:?} must be 1 to {MAX_ID_LEN} letters, digits, '-', '_' or '.', not start with '.', \
                     and not be a device name (CON, NUL, COM1, ...)"
                ));
            }
            id.to_string()
        }
    };
    let prompt = raw
        .prompt
        .as_deref()
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    if let Some(bad) = prompt
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
    {
        errors.push(format!(
            "prompt contains the control character U+{:04X}",
            u32::from(bad)
        ));
    }
    let template = if prompt.is_empty() {
        errors.push("prompt is empty (it is required)".into());
        None
    } else {
        match Template::parse(&prompt) {
            Ok(t) if t.count() > MAX_EXPANSION => {
                errors.push(format!(
                    "prompt variables expand this row into {} rows; at most {MAX_EXPANSION} are allowed",
                    if t.count() == u64::MAX {
                        "too many".to_string()
                    } else {
                        t.count().to_string()
                    }
                ));
                None
            }
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(e.to_string());
                None
            }
        }
    };
    let aspect_ratio = match raw.aspect_ratio.as_deref().map(str::trim) {
        None | Some("") => options.default_aspect_ratio,
        Some(text) => AspectRatio::parse(text).unwrap_or_else(|| {
            errors.push(format!(
                "aspect_ratio {text:?} is not one of {}",
                AspectRatio::expected_list()
            ));
            options.default_aspect_ratio
        }),
    };
    let variants = match raw.variants.as_deref().map(str::trim) {
        None | Some("") => 1,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=MAX_VARIANTS).contains(&n) => n,
            _ => {
                errors.push(format!(
                    "variants {text:?} is not a whole number from 1 to {MAX_VARIANTS}"
                ));
                1
            }
        },
    };
    let model = match raw.model.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Model::parse(text).or_else(|| {
            errors.push(format!("model {text:?} is not one of photon-1, photon-flash-1"));
            None
        }),
    };
    let format = match raw.format.as_deref().map(str::trim) {
        None | Some("") => Format::Jpg,
        Some(text) => Format::parse(&text.to_ascii_lowercase()).unwrap_or_else(|| {
            errors.push(format!("format {text:?} is not one of jpg, png"));
            Format::Jpg
        }),
    };
    check_refs(&raw.refs, &mut errors);

    let Some(template) = template.filter(|_| errors.is_empty()) else {
        return Err(errors);
    };
    let base = Row {
        line: raw.line,
        id: id.clone(),
        prompt: String::new(),
        aspect_ratio,
        variants,
        model,
        format,
        refs: raw.refs,
        metadata: raw.metadata,
    };
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for (expanded, chosen) in template.expand() {
        let expanded = expanded.trim().to_string();
        let length = expanded.chars().count();
        if length < PROMPT_MIN {
            problems.push(format!(
                "prompt {expanded:?} is too short: at least {PROMPT_MIN} characters"
            ));
        } else if length > PROMPT_MAX {
            problems.push(format!(
                "prompt is too long: {length} characters, at most {PROMPT_MAX}"
            ));
        }
        let row_id = if template.has_groups() {
            expanded_id(&id, &chosen)
        } else {
            id.clone()
        };
        rows.push(Row {
            id: row_id,
            prompt: expanded,
            ..base.clone()
        });
        if problems.len() >= 5 {
            break;
        }
    }
    if problems.is_empty() {
        Ok(rows)
    } else {
        Err(problems)
    }
}

fn check_refs(refs: &References, errors: &mut Vec<String>) {
    if refs.image_ref.len() > MAX_IMAGE_REFS {
        errors.push(format!(
            "image_ref has {} URLs; at most {MAX_IMAGE_REFS}",
            refs.image_ref.len()
        ));
    }
    if refs.character_ref.len() > MAX_CHARACTER_REFS {
        errors.push(format!(
            "character_ref has {} URLs; at most {MAX_CHARACTER_REFS}",
            refs.character_ref.len()
        ));
    }
    for r in &refs.image_ref {
        check_weighted("image_ref", r, errors);
    }
    if let Some(r) = &refs.style_ref {
        check_weighted("style_ref", r, errors);
    }
    if let Some(r) = &refs.modify_image_ref {
        check_weighted("modify_image_ref", r, errors);
    }
    for url in &refs.character_ref {
        if let Err(message) = check_url(url) {
            errors.push(format!("character_ref {message}"));
        }
    }
}

fn check_weighted(name: &str, reference: &WeightedUrl, errors: &mut Vec<String>) {
    if let Err(message) = check_url(&reference.url) {
        errors.push(format!("{name} {message}"));
    }
    if let Some(weight) = reference.weight {
        if !(0.0..=1.0).contains(&weight) {
            errors.push(format!("{name}_weight {weight} is outside 0 to 1"));
        }
    }
}

/// An http(s) URL with a host, no spaces.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an http or https URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or("");
    let host_name = host.split(':').next().unwrap_or("");
    if host_name.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} contains spaces or control characters"));
    }
    Ok(())
}
