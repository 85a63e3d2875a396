//! CSV job files: UTF-8 (a BOM is tolerated), a header row, quoted multi-line fields. Known columns
//! fill the row; any other column is metadata. A record with the wrong number of fields or bytes that
//! are not UTF-8 is reported with its line, and reading goes on.

use std::cell::Cell;
use std::io::Read;
use std::rc::Rc;

use crate::model::{Metadata, References, WeightedUrl};
use crate::read::{buffered, FileError, HashingReader, RawRow, Sink, MAX_RECORD_BYTES};

/// Bytes read past a record boundary before a record counts as too large: the record limit plus the
/// buffers between the file and the CSV parser.
const GUARD_BYTES: usize = MAX_RECORD_BYTES + 512 * 1024;

/// Refuses to read more than `limit` bytes between two resets, so one gigantic field can't make the
/// CSV parser buffer the whole file.
struct Guard<R> {
    inner: R,
    since_reset: Rc<Cell<usize>>,
    limit: usize,
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.since_reset.get() > self.limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                RecordTooLarge,
            ));
        }
        let n = self.inner.read(buf)?;
        self.since_reset.set(self.since_reset.get() + n);
        Ok(n)
    }
}

#[derive(Debug)]
struct RecordTooLarge;

impl std::fmt::Display for RecordTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a record is larger than {MAX_RECORD_BYTES} bytes")
    }
}

impl std::error::Error for RecordTooLarge {}

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

pub(crate) fn read<R: Read, F: FnMut(crate::Row)>(
    source: HashingReader<R>,
    path: &str,
    sink: &mut Sink<F>,
) -> Result<HashingReader<R>, FileError> {
    let since_reset = Rc::new(Cell::new(0));
    let guarded = Guard {
        inner: source,
        since_reset: since_reset.clone(),
        limit: GUARD_BYTES,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(buffered(guarded));
    let mut record = csv::ByteRecord::new();
    let io = |e: csv::Error| FileError::Io {
        path: path.to_string(),
        source: std::io::Error::other(e.to_string()),
    };

    if !reader.read_byte_record(&mut record).map_err(io)? {
        return Err(FileError::BadHeader {
            path: path.to_string(),
            message: "the file is empty (expected a header row)".into(),
        });
    }
    let mut header = Vec::with_capacity(record.len());
    for (i, field) in record.iter().enumerate() {
        let name = std::str::from_utf8(field)
            .map_err(|_| FileError::BadHeader {
                path: path.to_string(),
                message: format!("header column {} is not valid UTF-8", i + 1),
            })?
            .trim()
            .trim_start_matches('\u{feff}')
            .to_string();
        if name.is_empty() {
            return Err(FileError::BadHeader {
                path: path.to_string(),
                message: format!("header column {} has no name", i + 1),
            });
        }
        if header.contains(&name) {
            return Err(FileError::BadHeader {
                path: path.to_string(),
                message: format!("header names column {name:?} twice"),
            });
        }
        header.push(name);
    }
    if !header.iter().any(|h| h == "prompt") {
        return Err(FileError::BadHeader {
            path: path.to_string(),
            message: format!(
                "the header has no \"prompt\" column (it has: {})",
                header.join(", ")
            ),
        });
    }
    for name in &header {
        if !KNOWN_COLUMNS.contains(&name.as_str()) {
            sink.metadata_column(name);
        }
    }

    let mut last_line = 1;
    loop {
        since_reset.set(0);
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let line = e.position().map_or(last_line + 1, |p| p.line());
                let message = match e.kind() {
                    csv::ErrorKind::Io(io)
                        if io.get_ref().is_some_and(|inner| inner.is::<RecordTooLarge>()) =>
                    {
                        format!("a record starting after line {last_line} is larger than {MAX_RECORD_BYTES} bytes; reading stopped")
                    }
                    _ => format!("could not be read as CSV: {e}"),
                };
                sink.error(line, None, message);
                if !matches!(
                    e.kind(),
                    csv::ErrorKind::Utf8 { .. } | csv::ErrorKind::UnequalLengths { .. }
                ) {
                    break;
                }
                continue;
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        last_line = line;
        if record.len() == 1
            && record
                .get(0)
                .is_some_and(|f| f.iter().all(u8::is_ascii_whitespace))
        {
            continue; // a blank line
        }
        let mut raw = RawRow {
            line,
            ..RawRow::default()
        };
        if record.len() != header.len() {
            sink.error(
                line,
                None,
                format!(
                    "has {} fields; the header has {} (is a comma or a quote missing?)",
                    record.len(),
                    header.len()
                ),
            );
            continue;
        }
        let mut fields: Vec<(&str, String)> = Vec::with_capacity(header.len());
        let mut bad_utf8 = false;
        for (name, bytes) in header.iter().zip(record.iter()) {
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
            let id = fields
                .iter()
                .find(|(n, _)| *n == "id")
                .map(|(_, v)| v.trim().to_string())
                .filter(|v| !v.is_empty());
            for message in raw.errors {
                sink.error(line, id.clone(), message);
            }
            continue;
        }
        fill(&mut raw, fields);
        sink.raw(raw);
    }
    Ok(reader.into_inner().into_inner().inner)
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
