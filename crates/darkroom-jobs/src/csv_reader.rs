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

use crate::model::{Metadata, References, WeightedUrl};
use crate::read::{buffered, FileError, HashingReader, RawRow, Sink, MAX_RECORD_BYTES};

mod records;

pub(crate) use records::RowShape;
use records::{Next, Record, Records};

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

/// Reads a CSV job file into `sink`: the header, then every record (see the module's rules).
/// Returns the reader (for the fingerprint of the whole file).
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
    let header = read_header(&mut records, path)?;
    for name in &header {
        if !KNOWN_COLUMNS.contains(&name.as_str()) {
            sink.metadata_column(name);
        }
    }
    let shape = RowShape::of(&header);
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
        take_record(sink, &header, record);
    }
    Ok(records.into_inner().into_inner())
}

/// The header row's column names: each named once, valid UTF-8, and a `prompt` among them.
fn read_header<R: BufRead>(records: &mut Records<R>, path: &str) -> Result<Vec<String>, FileError> {
    let bad_header = |message: String| FileError::BadHeader {
        path: path.to_string(),
        message,
    };
    let next = records.next(None).map_err(|source| FileError::Io {
        path: path.to_string(),
        source,
    })?;
    let header_record = match next {
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
    Ok(header)
}

/// One record after the header: its problems reported with its line and id, or its fields handed
/// to the sink as a raw row (in the reserving pass, only the fields that decide its id).
fn take_record<F: FnMut(crate::Row)>(sink: &mut Sink<F>, header: &[String], record: Record) {
    let line = record.first_line;
    if record.is_blank() {
        return;
    }
    sink.record(record.first_line, record.last_line);
    let text = |name: &str| {
        let i = header.iter().position(|h| h == name)?;
        std::str::from_utf8(record.field(i)?).ok()
    };
    // The id an error names; made only when there is an error to name it in.
    let id = || {
        text("id")
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    if !record.problems.is_empty() {
        for problem in &record.problems {
            sink.error(line, id(), problem.clone());
        }
        return;
    }
    if record.len() != header.len() {
        sink.error(
            line,
            id(),
            format!(
                "has {} fields; the header has {} (is a comma or a quote missing?)",
                record.len(),
                header.len()
            ),
        );
        return;
    }
    if header.len() > 1 && record.fields().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
        sink.error(
            line,
            None,
            "has only empty fields (a line of separators): delete it, or fill in its prompt".into(),
        );
        return;
    }
    if sink.reserving() {
        // Only the id a row gives itself matters in this pass.
        sink.reserve(line, text("id"), text("prompt"), text("variants"));
        return;
    }
    let mut raw = RawRow {
        line,
        ..RawRow::default()
    };
    let mut fields: Vec<(&str, &str)> = Vec::with_capacity(header.len());
    for (name, bytes) in header.iter().zip(record.fields()) {
        match std::str::from_utf8(bytes) {
            Ok(text) => fields.push((name.as_str(), text)),
            Err(e) => raw.errors.push(format!(
                "column {name:?} is not valid UTF-8 (bad byte at offset {})",
                e.valid_up_to()
            )),
        }
    }
    if !raw.errors.is_empty() {
        for message in std::mem::take(&mut raw.errors) {
            sink.error(line, id(), message);
        }
        return;
    }
    fill(&mut raw, &fields);
    sink.raw(raw);
}

/// The row's fields into `raw`: text is copied once, and only where the row keeps it (a blank
/// optional field is no field).
fn fill(raw: &mut RawRow, fields: &[(&str, &str)]) {
    let mut refs = References::default();
    let mut weights: [Option<&str>; 3] = [None, None, None];
    let mut metadata = Metadata::new();
    for &(name, value) in fields {
        let present = || (!value.trim().is_empty()).then(|| value.to_string());
        match name {
            "id" => raw.id = present(),
            "prompt" => raw.prompt = Some(value.to_string()),
            "aspect_ratio" => raw.aspect_ratio = present(),
            "variants" => raw.variants = present(),
            "model" => raw.model = present(),
            "format" => raw.format = present(),
            "image_ref" => {
                refs.image_ref = urls(value).map(|url| WeightedUrl { url, weight: None }).collect()
            }
            "style_ref" => refs.style_ref = single(raw, "style_ref", value),
            "character_ref" => refs.character_ref = urls(value).collect(),
            "modify_image_ref" => refs.modify_image_ref = single(raw, "modify_image_ref", value),
            "image_ref_weight" => weights[0] = Some(value).filter(|v| !v.trim().is_empty()),
            "style_ref_weight" => weights[1] = Some(value).filter(|v| !v.trim().is_empty()),
            "modify_image_ref_weight" => weights[2] = Some(value).filter(|v| !v.trim().is_empty()),
            other => {
                metadata.insert(other.to_string(), value.to_string());
            }
        }
    }
    let names = ["image_ref", "style_ref", "modify_image_ref"];
    for (i, weight) in weights.into_iter().enumerate() {
        let Some(text) = weight else { continue };
        let Some(value) = parse_weight(raw, names[i], text) else {
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
