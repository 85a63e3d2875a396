//! Turns a task into the body of its create request, as stored in the ledger and sent upstream.
//!
//! The body is built once, when the task is loaded, and kept verbatim: a resumed run sends exactly
//! what the first run would have, and reconciliation compares against exactly what was sent.

use serde_json::{json, Map, Value};

use darkroom_jobs::{Task, WeightedUrl};

/// The create body for a task (no `callback_url`: that is added per send when callbacks are on).
pub(crate) fn create_body(task: &Task) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(task.model.as_str()));
    body.insert("prompt".into(), json!(task.prompt));
    body.insert("aspect_ratio".into(), json!(task.aspect_ratio.as_str()));
    body.insert("format".into(), json!(task.format.as_str()));
    let refs = &task.refs;
    if !refs.image_ref.is_empty() {
        body.insert(
            "image_ref".into(),
            Value::Array(refs.image_ref.iter().map(weighted).collect()),
        );
    }
    if let Some(style) = &refs.style_ref {
        body.insert("style_ref".into(), Value::Array(vec![weighted(style)]));
    }
    if !refs.character_ref.is_empty() {
        body.insert(
            "character_ref".into(),
            json!({ "identity0": { "images": refs.character_ref } }),
        );
    }
    if let Some(modify) = &refs.modify_image_ref {
        body.insert("modify_image_ref".into(), weighted(modify));
    }
    Value::Object(body)
}

/// The body as the text stored in the ledger (compact JSON).
pub(crate) fn create_body_text(task: &Task) -> String {
    create_body(task).to_string()
}

/// A short hash of a stored body (the first 32 hex digits of its BLAKE3 hash), recorded with each
/// intent.
pub(crate) fn body_fingerprint(body_text: &str) -> String {
    blake3::hash(body_text.as_bytes()).to_hex()[..32].to_string()
}

fn weighted(reference: &WeightedUrl) -> Value {
    match reference.weight {
        Some(weight) => json!({ "url": reference.url, "weight": weight }),
        None => json!({ "url": reference.url }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use darkroom_jobs::{AspectRatio, Format, Metadata, Model, Pass, References};

    #[test]
    fn unset_references_are_left_out_not_sent_as_null() {
        let task = Task {
            row_id: "a".into(),
            pass: Pass::Preview,
            variant: 1,
            variants: 1,
            model: Model::PhotonFlash1,
            prompt: "a red chair".into(),
            aspect_ratio: AspectRatio::Landscape16x9,
            format: Format::Png,
            refs: References {
                image_ref: vec![WeightedUrl {
                    url: "https://cdn.example.com/a.jpg".into(),
                    weight: Some(0.85),
                }],
                character_ref: vec!["https://cdn.example.com/p.jpg".into()],
                ..References::default()
            },
            metadata: Metadata::new(),
            fingerprint: "fp".into(),
        };
        let body = create_body(&task);
        assert_eq!(
            body,
            json!({
                "model": "photon-flash-1", "prompt": "a red chair", "aspect_ratio": "16:9", "format": "png",
                "image_ref": [{"url": "https://cdn.example.com/a.jpg", "weight": 0.85}],
                "character_ref": {"identity0": {"images": ["https://cdn.example.com/p.jpg"]}}
            })
        );
    }
}
