//! Rows into tasks: one task per variant, each with the model its pass routes to (unless the row names
//! one) and a fingerprint of its normalized request.

use serde_json::json;

use crate::model::{Pass, Routing, Row, Task};

/// The tasks of a row for a pass, variants 1..=n.
pub fn expand<'a>(row: &'a Row, pass: Pass, routing: &'a Routing) -> impl Iterator<Item = Task> + 'a {
    let model = row.model.unwrap_or_else(|| routing.model_for(pass));
    (1..=row.variants).map(move |variant| {
        let mut task = Task {
            row_id: row.id.clone(),
            pass,
            variant,
            variants: row.variants,
            model,
            prompt: row.prompt.clone(),
            aspect_ratio: row.aspect_ratio,
            format: row.format,
            refs: row.refs.clone(),
            metadata: row.metadata.clone(),
            fingerprint: String::new(),
        };
        task.fingerprint = fingerprint(&task);
        task
    })
}

/// A hash of the task's normalized request: model, prompt (trimmed), aspect ratio, format,
/// references (in order, weights included) and variant index. The pass, the row id and metadata
/// are not part of it: the same request in another job or under another id is the same image.
pub fn fingerprint(task: &Task) -> String {
    let normalized = json!({
        "v": 1,
        "model": task.model.as_str(),
        "prompt": task.prompt.trim(),
        "aspect_ratio": task.aspect_ratio.as_str(),
        "format": task.format.as_str(),
        "refs": task.refs,
        "variant": task.variant,
    });
    blake3::hash(normalized.to_string().as_bytes()).to_hex()[..32].to_string()
}
