//! Reading a job file: CSV or JSONL, streamed row by row, every row validated, every problem kept
//! with its line and row id. Valid rows are handed to the caller one at a time (after prompt-variable
//! expansion and defaults), so a million-row file never sits in memory.
//!
//! The two formats differ only in how a line becomes a [`RawRow`]; what makes a row valid is decided
//! once, in `validate` (`read/validate.rs`). `read/sink.rs` receives the raw rows of a pass and
//! gives each valid row its name against `read/names.rs`'s table of the names rows hold.

mod names;
mod sink;
mod validate;

pub(crate) use sink::Sink;
use sink::{Mode, Names};

use std::fmt;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::Serialize;

use crate::model::{AspectRatio, Metadata, References, Row};

/// Options for reading: the defaults for columns a row leaves empty.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// The aspect ratio of a row that leaves it empty.
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
    /// A CSV file (`.csv`).
    Csv,
    /// JSON Lines (`.jsonl`).
    Jsonl,
}

/// One problem with one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// 1-based line where the row starts.
    pub line: u64,
    /// The row's id as the file gives it, when it gives one.
    pub row_id: Option<String>,
    /// What is wrong and, where it helps, what was expected.
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
    /// The file's format.
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
    /// Whether every row is valid: only then may the rows be used.
    pub fn is_valid(&self) -> bool {
        self.error_count == 0
    }
}

/// Why the file could not be read at all (as opposed to a row being invalid).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be opened or read.
    #[error("could not read {path}: {source}")]
    Io {
        /// The file, as given.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file's extension is neither `.csv` nor `.jsonl`.
    #[error("{path}: unknown job file type (expected .csv or .jsonl)")]
    UnknownType {
        /// The file, as given.
        path: String,
    },
    /// The header row is missing or unusable (CSV).
    #[error("{path}: {message}")]
    BadHeader {
        /// The file, as given.
        path: String,
        /// What is wrong with the header.
        message: String,
    },
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

/// The most names the table is sized for before reading (about 64 MB of table); a larger file's
/// table grows as it reads.
const MAX_PRESIZED_ROWS: usize = 2_000_000;

/// The longest line (JSONL) or record (CSV) read, in bytes.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
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
    // A row takes at least about 64 bytes in files of any size worth sizing for; a shorter
    // estimate only means the table grows as it would have anyway.
    let length = source.seek(SeekFrom::End(0)).map_err(io)?;
    source.seek(SeekFrom::Start(0)).map_err(io)?;
    let rows = usize::try_from(length / 64)
        .unwrap_or(usize::MAX)
        .min(MAX_PRESIZED_ROWS);
    let mut reserve = Sink::new(*options, |_| {}, Mode::Reserve, Names::with_capacity(rows));
    read_pass(&mut source, name, format, &mut reserve)?;
    source.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut sink = Sink::new(*options, on_row, Mode::Validate, reserve.names);
    let file_fingerprint = read_pass(&mut source, name, format, &mut sink)?;
    if sink.records == 0 && sink.error_count == 0 {
        // A job of nothing is a mistake (the wrong file, rows lost to an export), never a success:
        // every command that reads a job file refuses it the same way.
        let (line, expected) = match format {
            FileFormat::Csv => (2, "a row after the header line"),
            FileFormat::Jsonl => (1, "one JSON object per line"),
        };
        sink.error(line, None, format!("the file has no rows (expected {expected})"));
    }
    Ok(sink.into_report(format, file_fingerprint))
}

fn read_pass<R: Read, F: FnMut(Row)>(
    source: R,
    name: &str,
    format: FileFormat,
    sink: &mut Sink<F>,
) -> Result<String, FileError> {
    // Only the validating pass's fingerprint is kept: the reserving pass reads the same bytes.
    let hashing = HashingReader {
        inner: source,
        hasher: (!sink.reserving()).then(blake3::Hasher::new),
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

/// Reads the rest of the file through the hasher so the fingerprint covers every byte; with no
/// hasher, reads nothing more and the fingerprint is empty.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Option<blake3::Hasher>,
}

impl<R: Read> HashingReader<R> {
    fn finish(mut self) -> std::io::Result<String> {
        if self.hasher.is_none() {
            return Ok(String::new());
        }
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok(self
            .hasher
            .map(|h| h.finalize().to_hex().to_string())
            .unwrap_or_default())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
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
        match memchr::memchr2(b'\n', b'\r', available) {
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
