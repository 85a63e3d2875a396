//! JSONL job files: one object per line with the CSV's names, references in the API's own shapes
//! (`image_ref: [{url, weight}]`, `character_ref: {identity0: {images: [...]}}`, ...) and a `metadata`
//! object. A line ends at `\n`, `\r\n` or a lone `\r` (a JSON string can't hold a raw line
//! break, so no row is split). Blank lines are skipped; unknown keys are errors, so a typo can't
//! pass; a line cut short or holding two objects is an error with its line; a line longer than 1 MiB
//! is refused without being held in memory. A line that is not an object, repeats a key or opens
//! with a byte-order mark (other than the file's first) is refused naming that (`shape`).

mod shape;

use std::io::Read;

use serde::Deserialize;

use crate::model::{Metadata, References, WeightedUrl};
use crate::read::{buffered, read_line, FileError, HashingReader, RawRow, Sink, MAX_RECORD_BYTES};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    id: Option<String>,
    prompt: Option<String>,
    aspect_ratio: Option<String>,
    variants: Option<serde_json::Value>,
    model: Option<String>,
    format: Option<String>,
    image_ref: Option<Vec<WeightedUrl>>,
    style_ref: Option<OneOrMany>,
    character_ref: Option<CharacterRef>,
    modify_image_ref: Option<WeightedUrl>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(WeightedUrl),
    Many(Vec<WeightedUrl>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CharacterRef {
    identity0: Identity,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    images: Vec<String>,
}

pub(crate) fn read<R: Read, F: FnMut(crate::Row)>(
    source: HashingReader<R>,
    path: &str,
    sink: &mut Sink<F>,
) -> Result<HashingReader<R>, FileError> {
    let mut reader = buffered(source);
    let mut bytes = Vec::new();
    let mut line = 0u64;
    loop {
        let read = read_line(&mut reader, &mut bytes, MAX_RECORD_BYTES).map_err(|source| FileError::Io {
            path: path.to_string(),
            source,
        })?;
        let Some((_, overflow)) = read else { break };
        line += 1;
        if let Some(length) = overflow {
            sink.record(line, line);
            sink.error(
                line,
                None,
                format!("line is {length} bytes long; at most {MAX_RECORD_BYTES} are read"),
            );
            continue;
        }
        let text = match std::str::from_utf8(&bytes) {
            Ok(text) => text,
            Err(e) => {
                sink.record(line, line);
                sink.error(
                    line,
                    None,
                    format!("is not valid UTF-8 (bad byte at column {})", e.valid_up_to() + 1),
                );
                continue;
            }
        };
        let text = if line == 1 {
            text.trim_start_matches('\u{feff}')
        } else {
            text
        };
        if text.trim().is_empty() {
            continue;
        }
        sink.record(line, line);
        if let Some(message) = shape::refusal(text) {
            // Two ids on one line name neither: which one the row has is the question.
            let id = id_hint(text).filter(|_| !message.contains("\"id\" twice"));
            sink.error(line, id, message);
            continue;
        }
        let parsed: JsonRow = match serde_json::from_str(text) {
            Ok(row) => row,
            Err(e) => {
                let id = id_hint(text);
                let message = if e.is_eof() {
                    format!("is not valid JSON: the line ends inside its value, as if cut short ({e}); write one whole object per line")
                } else if e.to_string().starts_with("trailing characters") {
                    format!(
                        "is not valid JSON: it holds more than one value (the next starts at column {}); write one object per line",
                        e.column()
                    )
                } else if e.is_syntax() {
                    format!("is not valid JSON: {e}")
                } else {
                    format!("{e}").replace(" at line 1 column", " at column")
                };
                sink.error(line, id, message);
                continue;
            }
        };
        sink.raw(to_raw(line, parsed));
    }
    Ok(reader.into_inner())
}

/// The row's id for an error message, when the line is at least a JSON object with a string id.
fn id_hint(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value.get("id")?.as_str().map(str::to_string)
}

fn to_raw(line: u64, row: JsonRow) -> RawRow {
    let mut raw = RawRow {
        line,
        id: row.id,
        prompt: row.prompt,
        aspect_ratio: row.aspect_ratio,
        ..RawRow::default()
    };
    raw.model = row.model;
    raw.format = row.format;
    raw.variants = match row.variants {
        None | Some(serde_json::Value::Null) => None,
        // JSONL is typed: a count given as text is refused, as a weight given as text is.
        Some(serde_json::Value::String(s)) => {
            raw.errors.push(format!(
                "variants must be a JSON number (e.g. \"variants\": 2), not the string {s:?}"
            ));
            None
        }
        Some(other) => Some(other.to_string()),
    };
    let mut refs = References {
        image_ref: row.image_ref.unwrap_or_default(),
        ..References::default()
    };
    match row.style_ref {
        None => {}
        Some(OneOrMany::One(one)) => refs.style_ref = Some(one),
        Some(OneOrMany::Many(mut many)) => {
            if many.len() > 1 {
                raw.errors
                    .push(format!("style_ref has {} images; at most 1", many.len()));
            }
            refs.style_ref = many.drain(..).next();
        }
    }
    refs.character_ref = row.character_ref.map(|c| c.identity0.images).unwrap_or_default();
    refs.modify_image_ref = row.modify_image_ref;
    raw.refs = refs;
    let mut metadata = Metadata::new();
    for (key, value) in row.metadata.unwrap_or_default() {
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => String::new(),
            serde_json::Value::Bool(_) | serde_json::Value::Number(_) => value.to_string(),
            _ => {
                raw.errors
                    .push(format!("metadata.{key} must be a string, number or boolean"));
                continue;
            }
        };
        metadata.insert(key, text);
    }
    raw.metadata = metadata;
    raw
}
