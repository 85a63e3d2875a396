//! Splitting a CSV byte stream into records: physical lines numbered for every line ending,
//! quoted fields that may span lines, and the checks that keep a quote from swallowing rows
//! ([`RowShape`]).

use std::io::BufRead;

use crate::ids::valid_id;
use crate::model::{AspectRatio, Format, Model};
use crate::read::{read_line, Ending, MAX_RECORD_BYTES};

/// Continuation lines quoted in an error message are cut to this many characters.
const SHOWN_CHARS: usize = 40;

/// What a physical line must look like to be taken for a row of this file: the header's number of
/// fields and, when the header has columns darkroom checks (`id`, `aspect_ratio`, `variants`,
/// `model`, `format`), at least one of them filled and every filled one holding a value that
/// column accepts (an id right at the start of the line, without spaces). A file whose header has none of those columns is judged by the count alone;
/// a file of one column can't be judged at all.
#[derive(Debug, Clone)]
pub(crate) struct RowShape {
    columns: usize,
    checked: Vec<(usize, Checked)>,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Checked {
    Id,
    AspectRatio,
    Variants,
    Model,
    Format,
}

impl Checked {
    fn accepts(self, value: &str) -> bool {
        match self {
            Checked::Id => valid_id(value),
            Checked::AspectRatio => AspectRatio::parse(value).is_some(),
            Checked::Variants => value.parse::<u32>().is_ok_and(|n| (1..=100).contains(&n)),
            Checked::Model => Model::parse(value).is_some(),
            Checked::Format => Format::parse(&value.to_ascii_lowercase()).is_some(),
        }
    }
}

impl RowShape {
    pub(crate) fn of(header: &[String]) -> RowShape {
        let checked = header
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let kind = match name.as_str() {
                    "id" => Checked::Id,
                    "aspect_ratio" => Checked::AspectRatio,
                    "variants" => Checked::Variants,
                    "model" => Checked::Model,
                    "format" => Checked::Format,
                    _ => return None,
                };
                Some((i, kind))
            })
            .collect();
        RowShape {
            columns: header.len(),
            checked,
        }
    }

    /// Whether `line`, read on its own as the start of a record, looks like a row of this file.
    pub(crate) fn matches(&self, line: &[u8]) -> bool {
        if self.columns < 2 {
            return false;
        }
        let fields = split_line(line);
        if fields.len() != self.columns {
            return false;
        }
        if self.checked.is_empty() {
            return true;
        }
        let mut filled = false;
        for (i, kind) in &self.checked {
            let Ok(value) = std::str::from_utf8(&fields[*i]) else {
                return false;
            };
            // An id starts its line, as a row's does; prose that wraps starts with a space or a word.
            let value = if matches!(kind, Checked::Id) {
                value
            } else {
                value.trim()
            };
            if value.is_empty() {
                continue;
            }
            if !kind.accepts(value) {
                return false;
            }
            filled = true;
        }
        filled
    }
}

/// One line split into fields as if it started a record; a quote left open takes the rest.
fn split_line(line: &[u8]) -> Vec<Vec<u8>> {
    let mut record = Record::default();
    let mut opened = 0;
    take_line(&mut record, line, State::FieldStart, 0, &mut opened);
    record.ends.push(record.data.len());
    record.fields().map(<[u8]>::to_vec).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// At the start of a field.
    FieldStart,
    /// Inside a field that did not start with a quote.
    Unquoted,
    /// Inside a quoted field.
    Quoted,
    /// Just after a quote inside a quoted field: the field's end, or the first half of `""`.
    AfterQuote,
}

/// One record: its fields (as bytes, unquoted), the physical lines it took, and what was wrong
/// with its quoting.
#[derive(Debug, Default)]
pub(super) struct Record {
    pub(super) first_line: u64,
    pub(super) last_line: u64,
    pub(super) data: Vec<u8>,
    pub(super) ends: Vec<usize>,
    pub(super) problems: Vec<String>,
}

impl Record {
    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(super) fn field(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.data[start..end])
    }

    pub(super) fn fields(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).filter_map(|i| self.field(i))
    }

    /// One field of nothing but whitespace: a blank line.
    pub(super) fn is_blank(&self) -> bool {
        self.len() == 1 && self.data.iter().all(u8::is_ascii_whitespace)
    }
}

pub(super) enum Next {
    Record(Record),
    End,
    /// A record outgrew [`MAX_RECORD_BYTES`]; nothing after it can be placed.
    TooLarge {
        first_line: u64,
        quote_opened: Option<u64>,
    },
}

/// Splits a byte stream into records, numbering physical lines.
pub(super) struct Records<R> {
    reader: R,
    /// The number of the last physical line read.
    line: u64,
    buffer: Vec<u8>,
    /// The last record's size in bytes and fields: a new record starts with that much room, so
    /// it is not grown piece by piece (a million-row file read twice made millions of regrowths).
    last_size: (usize, usize),
}

impl<R: BufRead> Records<R> {
    pub(super) fn new(reader: R) -> Self {
        Records {
            reader,
            line: 0,
            buffer: Vec::new(),
            last_size: (0, 0),
        }
    }

    pub(super) fn into_inner(self) -> R {
        self.reader
    }

    /// The next record. With a `shape`, a quoted field that takes in a line shaped like a row is
    /// reported in the record's problems.
    pub(super) fn next(&mut self, shape: Option<&RowShape>) -> std::io::Result<Next> {
        let mut record = Record {
            data: Vec::with_capacity(self.last_size.0),
            ends: Vec::with_capacity(self.last_size.1),
            ..Record::default()
        };
        let mut state = State::FieldStart;
        let mut quote_opened = 0u64;
        let mut row_like: Vec<u64> = Vec::new();
        let mut first_row_like = String::new();
        loop {
            let Some((ending, overflow)) = read_line(&mut self.reader, &mut self.buffer, MAX_RECORD_BYTES)?
            else {
                if record.first_line == 0 {
                    return Ok(Next::End);
                }
                // The file ended inside a quoted field (any other state ends the record with its line).
                record.problems.insert(
                    0,
                    format!(
                        "a quote opened on line {quote_opened} is never closed, so lines {quote_opened} to {} \
                         (the end of the file) would be one field; close it, or write \"\" for a quote inside a field",
                        record.last_line
                    ),
                );
                record.ends.push(record.data.len());
                return Ok(Next::Record(record));
            };
            self.line += 1;
            let continuation = record.first_line != 0;
            if !continuation {
                record.first_line = self.line;
            }
            record.last_line = self.line;
            let quoted_at_start = state == State::Quoted;
            if overflow.is_some() || record.data.len() + self.buffer.len() > MAX_RECORD_BYTES {
                return Ok(Next::TooLarge {
                    first_line: record.first_line,
                    quote_opened: quoted_at_start.then_some(quote_opened),
                });
            }
            if self.line == 1 && self.buffer.starts_with(b"\xef\xbb\xbf") {
                self.buffer.drain(..3);
            }
            if !continuation && self.buffer.is_empty() {
                record.first_line = 0;
                continue; // an empty line between records
            }
            if continuation && quoted_at_start && shape.is_some_and(|s| s.matches(&self.buffer)) {
                if row_like.is_empty() {
                    first_row_like = shown(&self.buffer);
                }
                row_like.push(self.line);
            }
            state = take_line(&mut record, &self.buffer, state, self.line, &mut quote_opened);
            if state == State::Quoted {
                if ending == Ending::Eof {
                    continue; // reported above, at the end of the file
                }
                record.data.extend_from_slice(ending.bytes());
                continue;
            }
            record.ends.push(record.data.len());
            self.last_size = (record.data.len(), record.ends.len());
            if !row_like.is_empty() {
                let lines = row_like.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
                let first = row_like[0];
                record.problems.insert(
                    0,
                    format!(
                        "lines {} to {} are one quoted field, and line{} {lines} inside it look{} like rows \
                         (line {first}: {first_row_like:?}); close the quote where the field ends, \
                         or write \"\" for a quote inside a field",
                        record.first_line,
                        record.last_line,
                        if row_like.len() > 1 { "s" } else { "" },
                        if row_like.len() > 1 { "" } else { "s" },
                    ),
                );
            }
            return Ok(Next::Record(record));
        }
    }
}

/// Adds one physical line's bytes to `record`, starting in `state`; returns the state at its end.
/// `quote_opened` is set to `line_number` when a quoted field opens.
fn take_line(
    record: &mut Record,
    line: &[u8],
    mut state: State,
    line_number: u64,
    quote_opened: &mut u64,
) -> State {
    let mut i = 0;
    while i < line.len() {
        match state {
            State::FieldStart if line[i] == b'"' => {
                state = State::Quoted;
                *quote_opened = line_number;
                i += 1;
            }
            State::FieldStart | State::Unquoted => {
                let rest = &line[i..];
                let run = memchr::memchr(b',', rest).unwrap_or(rest.len());
                record.data.extend_from_slice(&rest[..run]);
                i += run;
                if i < line.len() {
                    record.ends.push(record.data.len());
                    state = State::FieldStart;
                    i += 1;
                } else {
                    state = State::Unquoted;
                }
            }
            State::Quoted => {
                let rest = &line[i..];
                let run = memchr::memchr(b'"', rest).unwrap_or(rest.len());
                record.data.extend_from_slice(&rest[..run]);
                i += run;
                if i < line.len() {
                    state = State::AfterQuote;
                    i += 1;
                }
            }
            State::AfterQuote => match line[i] {
                b'"' => {
                    record.data.push(b'"');
                    state = State::Quoted;
                    i += 1;
                }
                b',' => {
                    record.ends.push(record.data.len());
                    state = State::FieldStart;
                    i += 1;
                }
                _ => {
                    if record.problems.is_empty() {
                        record.problems.push(format!(
                            "on line {line_number}, text follows the closing quote of a quoted field ({:?}); \
                             inside a quoted field write \"\" for a quote",
                            shown(&line[i..])
                        ));
                    }
                    state = State::Unquoted;
                }
            },
        }
    }
    state
}

/// A line's start for a message: at most [`SHOWN_CHARS`] characters, lossy UTF-8.
fn shown(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut out: String = text.chars().take(SHOWN_CHARS).collect();
    if text.chars().nth(SHOWN_CHARS).is_some() {
        out.push('…');
    }
    out
}
