//! CSV job files: UTF-8 (a BOM is tolerated), a header row, quoted multi-line fields. Known columns
//! fill the row; any other column is metadata.
//!
//! Records are split here, not by a general CSV library, because a job file must never lose a row
//! without a diagnostic, and that needs to know where every quote opened and which physical lines a
//! record took in:
//!
//! - A line ends at `\n`, `\r\n` or a lone `\r`; lines are numbered the same way for every ending.
//! - A field that starts with `"` is quoted: `""` inside it is one quote, and it may span lines.
//!   A quote inside an unquoted field (`12" vinyl`) is an ordinary character.
//! - A quote that is never closed is an error naming the line it opened on.
//! - A quoted field that takes in a later physical line shaped like a row of this file (see
//!   [`RowShape`]) is an error naming the span of lines, so rows are never merged silently.
//! - Text after a closing quote (`"12" vinyl"`) is an error: the quote was meant to be `""`.
//! - A record with the wrong number of fields, a line of only separators, or bytes that are not
//!   UTF-8 are reported with their line, and reading goes on. A record larger than
//!   [`MAX_RECORD_BYTES`] stops reading.

use std::io::{BufRead, Read};

use crate::model::{AspectRatio, Format, Metadata, Model, References, WeightedUrl};
use crate::read::{
    buffered, read_line, valid_id, Ending, FileError, HashingReader, RawRow, Sink, MAX_RECORD_BYTES,
};

/// The columns darkroom reads; every other column is metadata.
pub const KNOWN_COLUMNS: [&str; 13] = [
    "id",
    "prompt",
    "aspect_ratio",
    "variants",
    "model",
    "format",
    "image_ref",
    "image_ref_weight",
    "style_ref",
    "style_ref_weight",
    "character_ref",
    "modify_image_ref",
    "modify_image_ref_weight",
];

/// Continuation lines quoted in an error message are cut to this many characters.
const SHOWN_CHARS: usize = 40;

pub(crate) fn read<R: Read, F: FnMut(crate::Row)>(
    source: HashingReader<R>,
    path: &str,
    sink: &mut Sink<F>,
) -> Result<HashingReader<R>, FileError> {
    let mut records = Records::new(buffered(source));
    let io = |source: std::io::Error| FileError::Io {
        path: path.to_string(),
        source,
    };
    let bad_header = |message: String| FileError::BadHeader {
        path: path.to_string(),
        message,
    };

    let header_record = match records.next(None).map_err(io)? {
        Next::End => return Err(bad_header("the file is empty (expected a header row)".into())),
        Next::TooLarge { first_line, .. } => {
            return Err(bad_header(format!(
                "the header starting on line {first_line} is larger than {MAX_RECORD_BYTES} bytes"
            )))
        }
        Next::Record(record) => record,
    };
    if let Some(problem) = header_record.problems.first() {
        return Err(bad_header(format!("the header row: {problem}")));
    }
    let mut header: Vec<String> = Vec::with_capacity(header_record.len());
    for (i, field) in header_record.fields().enumerate() {
        let name = std::str::from_utf8(field)
            .map_err(|_| bad_header(format!("header column {} is not valid UTF-8", i + 1)))?
            .trim()
            .trim_start_matches('\u{feff}')
            .to_string();
        if name.is_empty() {
            return Err(bad_header(format!("header column {} has no name", i + 1)));
        }
        if header.contains(&name) {
            return Err(bad_header(format!("header names column {name:?} twice")));
        }
        header.push(name);
    }
    if !header.iter().any(|h| h == "prompt") {
        return Err(bad_header(format!(
            "the header has no \"prompt\" column (it has: {})",
            header.join(", ")
        )));
    }
    for name in &header {
        if !KNOWN_COLUMNS.contains(&name.as_str()) {
            sink.metadata_column(name);
        }
    }
    let shape = RowShape::of(&header);
    let id_column = header.iter().position(|h| h == "id");

    loop {
        let record = match records.next(Some(&shape)).map_err(io)? {
            Next::End => break,
            Next::TooLarge {
                first_line,
                quote_opened,
            } => {
                let hint = quote_opened.map_or(String::new(), |line| {
                    format!(" (the quote opened on line {line} may never be closed)")
                });
                sink.error(
                    first_line,
                    None,
                    format!("a record starting on line {first_line} is larger than {MAX_RECORD_BYTES} bytes{hint}; reading stopped"),
                );
                break;
            }
            Next::Record(record) => record,
        };
        let line = record.first_line;
        if record.is_blank() {
            continue;
        }
        sink.record(record.first_line, record.last_line);
        let id = id_column
            .and_then(|i| record.field(i))
            .and_then(|f| std::str::from_utf8(f).ok())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        if !record.problems.is_empty() {
            for problem in record.problems {
                sink.error(line, id.clone(), problem);
            }
            continue;
        }
        if record.len() != header.len() {
            sink.error(
                line,
                id,
                format!(
                    "has {} fields; the header has {} (is a comma or a quote missing?)",
                    record.len(),
                    header.len()
                ),
            );
            continue;
        }
        if header.len() > 1 && record.fields().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
            sink.error(
                line,
                None,
                "has only empty fields (a line of separators): delete it, or fill in its prompt".into(),
            );
            continue;
        }
        let mut raw = RawRow {
            line,
            ..RawRow::default()
        };
        if sink.reserving() {
            // Only the id a row gives itself matters in this pass.
            let text = |name: &str| {
                let i = header.iter().position(|h| h == name)?;
                std::str::from_utf8(record.field(i)?).ok().map(str::to_string)
            };
            raw.id = text("id");
            raw.prompt = text("prompt");
            raw.variants = text("variants");
            sink.raw(raw);
            continue;
        }
        let mut fields: Vec<(&str, String)> = Vec::with_capacity(header.len());
        let mut bad_utf8 = false;
        for (name, bytes) in header.iter().zip(record.fields()) {
            match std::str::from_utf8(bytes) {
                Ok(text) => fields.push((name.as_str(), text.to_string())),
                Err(e) => {
                    raw.errors.push(format!(
                        "column {name:?} is not valid UTF-8 (bad byte at offset {})",
                        e.valid_up_to()
                    ));
                    bad_utf8 = true;
                }
            }
        }
        if bad_utf8 {
            for message in raw.errors {
                sink.error(line, id.clone(), message);
            }
            continue;
        }
        fill(&mut raw, fields);
        sink.raw(raw);
    }
    Ok(records.into_inner().into_inner())
}

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
enum Checked {
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
enum State {
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
struct Record {
    first_line: u64,
    last_line: u64,
    data: Vec<u8>,
    ends: Vec<usize>,
    problems: Vec<String>,
}

impl Record {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn field(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.data[start..end])
    }

    fn fields(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).filter_map(|i| self.field(i))
    }

    /// One field of nothing but whitespace: a blank line.
    fn is_blank(&self) -> bool {
        self.len() == 1 && self.data.iter().all(u8::is_ascii_whitespace)
    }
}

enum Next {
    Record(Record),
    End,
    /// A record outgrew [`MAX_RECORD_BYTES`]; nothing after it can be placed.
    TooLarge {
        first_line: u64,
        quote_opened: Option<u64>,
    },
}

/// Splits a byte stream into records, numbering physical lines.
struct Records<R> {
    reader: R,
    /// The number of the last physical line read.
    line: u64,
    buffer: Vec<u8>,
}

impl<R: BufRead> Records<R> {
    fn new(reader: R) -> Self {
        Records {
            reader,
            line: 0,
            buffer: Vec::new(),
        }
    }

    fn into_inner(self) -> R {
        self.reader
    }

    /// The next record. With a `shape`, a quoted field that takes in a line shaped like a row is
    /// reported in the record's problems.
    fn next(&mut self, shape: Option<&RowShape>) -> std::io::Result<Next> {
        let mut record = Record::default();
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
                let run = rest.iter().position(|c| *c == b',').unwrap_or(rest.len());
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
                let run = rest.iter().position(|c| *c == b'"').unwrap_or(rest.len());
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

fn fill(raw: &mut RawRow, fields: Vec<(&str, String)>) {
    let mut refs = References::default();
    let mut weights: [Option<String>; 3] = [None, None, None];
    let mut metadata = Metadata::new();
    for (name, value) in fields {
        let present = || Some(value.clone()).filter(|v| !v.trim().is_empty());
        match name {
            "id" => raw.id = present(),
            "prompt" => raw.prompt = Some(value),
            "aspect_ratio" => raw.aspect_ratio = present(),
            "variants" => raw.variants = present(),
            "model" => raw.model = present(),
            "format" => raw.format = present(),
            "image_ref" => {
                refs.image_ref = urls(&value)
                    .map(|url| WeightedUrl { url, weight: None })
                    .collect()
            }
            "style_ref" => refs.style_ref = single(raw, "style_ref", &value),
            "character_ref" => refs.character_ref = urls(&value).collect(),
            "modify_image_ref" => refs.modify_image_ref = single(raw, "modify_image_ref", &value),
            "image_ref_weight" => weights[0] = present(),
            "style_ref_weight" => weights[1] = present(),
            "modify_image_ref_weight" => weights[2] = present(),
            other => {
                metadata.insert(other.to_string(), value);
            }
        }
    }
    let names = ["image_ref", "style_ref", "modify_image_ref"];
    for (i, weight) in weights.into_iter().enumerate() {
        let Some(text) = weight else { continue };
        let Some(value) = parse_weight(raw, names[i], &text) else {
            continue;
        };
        let targets: Vec<&mut WeightedUrl> = match i {
            0 => refs.image_ref.iter_mut().collect(),
            1 => refs.style_ref.iter_mut().collect(),
            _ => refs.modify_image_ref.iter_mut().collect(),
        };
        if targets.is_empty() {
            raw.errors
                .push(format!("{}_weight is given but {} is empty", names[i], names[i]));
        }
        for target in targets {
            target.weight = Some(value);
        }
    }
    raw.refs = refs;
    raw.metadata = metadata;
}

fn urls(value: &str) -> impl Iterator<Item = String> + '_ {
    value.split_whitespace().map(str::to_string)
}

fn single(raw: &mut RawRow, name: &str, value: &str) -> Option<WeightedUrl> {
    let mut all = urls(value);
    let first = all.next()?;
    if all.next().is_some() {
        raw.errors.push(format!("{name} takes one URL"));
    }
    Some(WeightedUrl {
        url: first,
        weight: None,
    })
}

fn parse_weight(raw: &mut RawRow, name: &str, text: &str) -> Option<f64> {
    match text.trim().parse::<f64>() {
        Ok(w) if w.is_finite() => Some(w),
        _ => {
            raw.errors.push(format!(
                "{name}_weight {:?} is not a number from 0 to 1",
                text.trim()
            ));
            None
        }
    }
}
