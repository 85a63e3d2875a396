//! Checks of a JSONL line's shape made before it is read as a row, each with a message a person
//! can act on: a byte-order mark where only the file's first line may have one, a line that is
//! valid JSON but not an object, and a key given twice in any object of the line (serde_json
//! would keep the last value without a word; a job file with two ids or two prompts on one line is
//! a mistake, not a choice).

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Why a line's shape is refused, or `None` when it is an object with no key repeated (or not
/// valid JSON at all, which the row's own parse reports with its column).
pub(super) fn refusal(text: &str) -> Option<String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('\u{feff}') {
        return Some(
            "starts with a byte-order mark (U+FEFF), which may only open the file's first line; \
             remove it (a file joined from several may carry one per part)"
                .into(),
        );
    }
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let kind = match value {
        serde_json::Value::Object(_) => return repeated_key(text),
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
    };
    Some(format!(
        "expected a JSON object with at least id/prompt (e.g. {{\"id\": \"sofa-1\", \"prompt\": \"A linen sofa\"}}), found {kind}"
    ))
}

/// The first key given twice in one object of `text`, as a message naming it with its path.
fn repeated_key(text: &str) -> Option<String> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    match (Walk { path: String::new() }).deserialize(&mut deserializer) {
        Ok(()) => None,
        Err(error) => {
            let message = error.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message);
            message.strip_prefix(REPEATED).map(|key| {
                format!("gives the key \"{key}\" twice; write each key once (JSON readers disagree on which one counts)")
            })
        }
    }
}

const REPEATED: &str = "repeated key: ";

/// Walks one JSON value, failing at the first key an object repeats; `path` is where the value is
/// (`metadata.`).
struct Walk {
    path: String,
}

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = format!("{}{key}", self.path);
            if !seen.insert(key) {
                return Err(serde::de::Error::custom(format!("{REPEATED}{path}")));
            }
            map.next_value_seed(Walk {
                path: format!("{path}."),
            })?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        let base = self.path.trim_end_matches('.').to_string();
        while seq
            .next_element_seed(Walk {
                path: format!("{base}[{index}]."),
            })?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}
