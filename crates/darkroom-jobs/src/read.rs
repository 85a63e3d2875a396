//! Reading a job file: CSV or JSONL, streamed row by row, every row validated, every problem kept
//! with its line and row id. Valid rows are handed to the caller one at a time (after prompt-variable
//! expansion and defaults), so a million-row file never sits in memory.
//!
//! The two formats differ only in how a line becomes a [`RawRow`]; what makes a row valid is decided
//! once, in [`validate`].

use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
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
    /// Records read from the file, valid or not: CSV records after the header, JSONL lines holding
    /// something. Blank lines are not counted.
    pub records: u64,
    /// The physical lines those records took. More than `records` when quoted CSV fields span
    /// lines: `darkroom validate` says so, so a merged row can be seen.
    pub lines: u64,
    /// The first rows whose name darkroom derived and had to make unique (see
    /// `ReadOptions::max_errors_kept`); each message says which name was taken and the new one.
    pub renamed: Vec<RowError>,
    /// Every row renamed.
    pub renamed_count: u64,
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

/// Reads and validates job-file content from any seekable reader (as [`read_job`] does a file);
/// `name` is used in messages. The entry point for fuzzing.
///
/// The content is read twice: first for the ids the file gives its rows, so that a name darkroom
/// derives (`row-LINE`, a template alternative's slug, a variant's `-N`) never takes a name the
/// file gives another row, wherever that row is; then to validate and hand rows on.
pub fn read_from<R: Read + Seek>(
    mut source: R,
    name: &str,
    format: FileFormat,
    options: &ReadOptions,
    on_row: impl FnMut(Row),
) -> Result<Report, FileError> {
    let io = |source| FileError::Io {
        path: name.to_string(),
        source,
    };
    let mut reserve = Sink::new(*options, |_| {}, Mode::Reserve, Names::default());
    read_pass(&mut source, name, format, &mut reserve)?;
    source.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut sink = Sink::new(*options, on_row, Mode::Validate, reserve.names);
    let file_fingerprint = read_pass(&mut source, name, format, &mut sink)?;
    Ok(sink.into_report(format, file_fingerprint))
}

fn read_pass<R: Read, F: FnMut(Row)>(
    source: R,
    name: &str,
    format: FileFormat,
    sink: &mut Sink<F>,
) -> Result<String, FileError> {
    let hashing = HashingReader {
        inner: source,
        hasher: blake3::Hasher::new(),
    };
    let hashing = match format {
        FileFormat::Csv => crate::csv_reader::read(hashing, name, sink)?,
        FileFormat::Jsonl => crate::jsonl_reader::read(hashing, name, sink)?,
    };
    hashing.finish().map_err(|source| FileError::Io {
        path: name.to_string(),
        source,
    })
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

/// How a physical line ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Lf,
    CrLf,
    Cr,
    /// The file's last line, without a line ending.
    Eof,
}

impl Ending {
    /// The bytes that ended the line.
    pub(crate) fn bytes(self) -> &'static [u8] {
        match self {
            Ending::Lf => b"\n",
            Ending::CrLf => b"\r\n",
            Ending::Cr => b"\r",
            Ending::Eof => b"",
        }
    }
}

/// Reads one physical line of at most `max` bytes (without its ending) into `line`. A line ends at
/// `\n`, `\r\n` or a lone `\r`. Returns `None` at the end of the input; a longer line is consumed
/// whole, not kept, and reported with its length.
pub(crate) fn read_line<R: BufRead>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<(Ending, Option<usize>)>> {
    line.clear();
    let mut total = 0usize;
    let mut any = false;
    let ending = loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            break Ending::Eof;
        }
        any = true;
        match available.iter().position(|b| matches!(b, b'\n' | b'\r')) {
            Some(i) => {
                total += i;
                if total <= max {
                    line.extend_from_slice(&available[..i]);
                }
                let cr = available[i] == b'\r';
                reader.consume(i + 1);
                if !cr {
                    break Ending::Lf;
                }
                if reader.fill_buf()?.first() == Some(&b'\n') {
                    reader.consume(1);
                    break Ending::CrLf;
                }
                break Ending::Cr;
            }
            None => {
                let n = available.len();
                total += n;
                if total <= max {
                    line.extend_from_slice(available);
                }
                reader.consume(n);
            }
        }
    };
    if !any {
        return Ok(None);
    }
    if total > max {
        line.clear();
        return Ok(Some((ending, Some(total))));
    }
    Ok(Some((ending, None)))
}

/// What a pass over the file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
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
    records: u64,
    lines: u64,
    errors: Vec<RowError>,
    error_count: u64,
    renamed: Vec<RowError>,
    renamed_count: u64,
    metadata_columns: Vec<String>,
    names: Names,
}

impl<F: FnMut(Row)> Sink<F> {
    fn new(options: ReadOptions, on_row: F, mode: Mode, names: Names) -> Self {
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

    pub fn metadata_column(&mut self, name: &str) {
        if !self.metadata_columns.iter().any(|c| c == name) {
            self.metadata_columns.push(name.to_string());
        }
    }

    /// Whether this pass only collects the ids the file gives (a reader may then fill only `id`,
    /// `prompt` and `variants`).
    pub fn reserving(&self) -> bool {
        self.mode == Mode::Reserve
    }

    /// Counts one record that took physical lines `first..=last`.
    pub fn record(&mut self, first: u64, last: u64) {
        self.records += 1;
        self.lines += last.saturating_sub(first) + 1;
    }

    pub fn error(&mut self, line: u64, row_id: Option<String>, message: String) {
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

    pub fn raw(&mut self, raw: RawRow) {
        if self.mode == Mode::Reserve {
            self.reserve(&raw);
            return;
        }
        let line = raw.line;
        for key in raw.metadata.keys() {
            if !self.metadata_columns.iter().any(|c| c == key) {
                self.metadata_columns.push(key.clone());
            }
        }
        let shown_id = raw.id.clone().filter(|id| !id.trim().is_empty());
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
            Err(messages) => {
                for message in messages {
                    self.error(line, shown_id.clone(), message);
                }
            }
        }
    }

    /// First pass: the id a row gives itself, when it names exactly one row (no prompt variables).
    fn reserve(&mut self, raw: &RawRow) {
        let Some(id) = raw.id.as_deref().map(str::trim).filter(|id| valid_id(id)) else {
            return;
        };
        let prompt = raw.prompt.as_deref().unwrap_or_default().trim();
        if prompt.contains('{') && Template::parse(prompt).is_ok_and(|t| t.has_groups()) {
            return;
        }
        let variants = raw
            .variants
            .as_deref()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|n| (1..=MAX_VARIANTS).contains(n))
            .unwrap_or(1);
        self.names.reserve(id, raw.line, variants);
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
            if let Some(taken) = self.names.held_by(&row.id, line) {
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

    fn into_report(self, format: FileFormat, file_fingerprint: String) -> Report {
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

/// The names rows have, and before that the ids the file gives its rows, keyed by a 128-bit hash
/// of the name with ASCII letters in lower case: names that differ only in case are one file on
/// case-insensitive file systems (macOS, Windows). Ids are ASCII (see [`valid_id`]), so Unicode
/// normalization can't make two names one file, and a file name `ID.EXT` never ends in a dot or a
/// space. Memory grows with the number of rows, never with their contents or variants: a
/// variant's name `ID-N` is found through its row's entry.
#[derive(Debug, Default)]
struct Names {
    map: HashMap<u128, Held>,
    /// How many names held end in `-N` (a number): only those can be a variant's file name.
    numbered: u64,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    /// The line of the row holding the name.
    line: u64,
    /// A hash of the name as written, to tell a duplicate from a difference in case.
    exact: u32,
    variants: u32,
}

/// A name found taken: the name asked for and who holds it.
#[derive(Debug)]
struct Taken {
    name: String,
    line: u64,
    /// `Some(N)` when the name is variant N's file name of the row holding it.
    variant: Option<u32>,
    same_case: bool,
}

impl Taken {
    fn whose(&self) -> String {
        match self.variant {
            Some(n) => format!("variant {n} of the row on line {}", self.line),
            None if self.same_case => format!("the row on line {}", self.line),
            None => format!(
                "the row on line {} in other letter case (one file on macOS and Windows)",
                self.line
            ),
        }
    }

    /// The error for a given id that another row already has.
    fn duplicate_message(&self, id: &str) -> String {
        if self.same_case {
            format!("duplicate id {id:?} (first used on line {})", self.line)
        } else {
            format!(
                "id {id:?} and the id on line {} differ only in letter case, so their images would be \
                 one file on macOS and Windows; make them differ in more than case",
                self.line
            )
        }
    }
}

impl Names {
    /// Holds `id` for the row on `line` unless an earlier row holds it.
    fn reserve(&mut self, id: &str, line: u64, variants: u32) {
        if let std::collections::hash_map::Entry::Vacant(entry) = self.map.entry(folded_key(id)) {
            entry.insert(Held {
                line,
                exact: exact_hash(id),
                variants,
            });
            self.numbered += u64::from(variant_number(id).is_some());
        }
    }

    /// Gives `name` (and its variants' names) to the row on `line`.
    fn claim(&mut self, name: &str, line: u64, variants: u32) {
        let held = Held {
            line,
            exact: exact_hash(name),
            variants,
        };
        if self.map.insert(folded_key(name), held).is_none() {
            self.numbered += u64::from(variant_number(name).is_some());
        }
    }

    /// Who holds `name`, directly or as a variant's file name, other than the row on `line` (0 for
    /// any row).
    fn taken_by(&self, name: &str, line: u64) -> Option<Taken> {
        if let Some(taken) = self.held_by(name, line) {
            return Some(taken);
        }
        let other = |held: &Held| line == 0 || held.line != line;
        let (base, n) = variant_number(name)?;
        let held = self.map.get(&folded_key(base)).filter(|h| other(h))?;
        (held.variants > 1 && n <= held.variants).then(|| Taken {
            name: name.to_string(),
            line: held.line,
            variant: Some(n),
            same_case: true,
        })
    }

    /// Who holds `name` as its own id, other than the row on `line` (0 for any row).
    fn held_by(&self, name: &str, line: u64) -> Option<Taken> {
        let held = self
            .map
            .get(&folded_key(name))
            .filter(|h| line == 0 || h.line != line)?;
        Some(Taken {
            name: name.to_string(),
            line: held.line,
            variant: None,
            same_case: held.exact == exact_hash(name),
        })
    }

    /// Whether `name` and its variants' names are held by no row.
    fn is_free(&self, name: &str, variants: u32) -> bool {
        self.taken_by(name, 0).is_none()
            && (variants < 2 || (1..=variants).all(|n| self.taken_by(&format!("{name}-{n}"), 0).is_none()))
    }
}

/// `("sofa", 2)` for `"sofa-2"`: a name shaped like a variant's file name (no leading zero).
fn variant_number(name: &str) -> Option<(&str, u32)> {
    let (base, number) = name.rsplit_once('-')?;
    if number.is_empty() || number.starts_with('0') || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((base, number.parse().ok()?))
}

fn folded_key(name: &str) -> u128 {
    let mut folded = [0u8; 128];
    let hash = match folded.get_mut(..name.len()) {
        Some(buffer) => {
            buffer.copy_from_slice(name.as_bytes());
            buffer.make_ascii_lowercase();
            blake3::hash(buffer)
        }
        None => blake3::hash(name.to_ascii_lowercase().as_bytes()),
    };
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_bytes()[..16]);
    u128::from_le_bytes(bytes)
}

fn exact_hash(name: &str) -> u32 {
    let hash = blake3::hash(name.as_bytes());
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&hash.as_bytes()[..4]);
    u32::from_le_bytes(bytes)
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
/// expansion, and whether the row's id is the one the file gives it (an id given and no prompt
/// variables) rather than one darkroom derived.
pub(crate) fn validate(raw: RawRow, options: &ReadOptions) -> Result<(Vec<Row>, bool), Vec<String>> {
    let mut errors = raw.errors;
    let given = raw.id.as_deref().is_some_and(|id| !id.trim().is_empty());
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
        Ok((rows, given && !template.has_groups()))
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
