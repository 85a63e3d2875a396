//! What a create's body must be: Luma's schema errors (422, pydantic style) and business rules
//! (400), and the request as a generation echoes it.

// Handlers return early with a ready `Response` as their error; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::error;

pub(super) const ASPECT_RATIOS: [&str; 7] = ["1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21"];

pub(super) struct Checked {
    pub(super) model: String,
    pub(super) aspect_ratio: String,
    pub(super) format: String,
    /// A reframe's source image URL (`media.url`); `None` for an ordinary create.
    pub(super) media: Option<String>,
}

/// Schema errors (422, pydantic style, all of them) first; then the business rules (400).
pub(super) fn validate(request: &Value) -> Result<Checked, Response> {
    let mut problems = Vec::new();
    let field = |name: &str| request.get(name).filter(|v| !v.is_null());
    let enum_error = |name: &str, value: &Value, expected: &str| json!({"type": "enum", "loc": ["body", name], "msg": format!("Input should be {expected}"), "input": value, "ctx": {"expected": expected}});
    let model = match field("model") {
        None => {
            problems.push(json!({"type": "missing", "loc": ["body", "model"], "msg": "Field required", "input": request}));
            String::new()
        }
        Some(Value::String(m)) if m == "photon-1" || m == "photon-flash-1" => m.clone(),
        Some(other) => {
            problems.push(enum_error("model", other, "'photon-1' or 'photon-flash-1'"));
            String::new()
        }
    };
    let aspect_ratio = match field("aspect_ratio") {
        None => "16:9".to_string(),
        Some(Value::String(a)) if ASPECT_RATIOS.contains(&a.as_str()) => a.clone(),
        Some(other) => {
            problems.push(enum_error(
                "aspect_ratio",
                other,
                "'1:1', '16:9', '9:16', '4:3', '3:4', '21:9' or '9:21'",
            ));
            String::new()
        }
    };
    let format = match field("format") {
        None => "jpg".to_string(),
        Some(Value::String(f)) if f == "jpg" || f == "png" => f.clone(),
        Some(other) => {
            problems.push(enum_error("format", other, "'jpg' or 'png'"));
            String::new()
        }
    };
    for name in ["prompt", "callback_url"] {
        if let Some(value) = field(name) {
            if !value.is_string() {
                problems.push(json!({"type": "string_type", "loc": ["body", name], "msg": "Input should be a valid string", "input": value}));
            }
        }
    }
    let refs_ok = |value: &Value| {
        value
            .as_array()
            .is_some_and(|a| a.iter().all(|r| r.get("url").is_some_and(Value::is_string)))
    };
    for name in ["image_ref", "style_ref"] {
        if let Some(value) = field(name) {
            if !refs_ok(value) {
                problems.push(json!({"type": "list_type", "loc": ["body", name], "msg": "Input should be a valid list of {url, weight}", "input": value}));
            }
        }
    }
    if let Some(value) = field("modify_image_ref") {
        if !value.get("url").is_some_and(Value::is_string) {
            problems.push(json!({"type": "model_type", "loc": ["body", "modify_image_ref"], "msg": "Input should be a valid {url, weight}", "input": value}));
        }
    }
    if let Some(value) = field("character_ref") {
        let images = value
            .get("identity0")
            .and_then(|i| i.get("images"))
            .and_then(Value::as_array);
        if !images.is_some_and(|a| a.iter().all(Value::is_string)) {
            problems.push(json!({"type": "model_type", "loc": ["body", "character_ref"], "msg": "Input should be {identity0: {images: [url, ...]}}", "input": value}));
        }
    }
    if !problems.is_empty() {
        return Err(error(StatusCode::UNPROCESSABLE_ENTITY, Value::Array(problems)));
    }
    if let Some(message) = broken_rule(request) {
        return Err(error(StatusCode::BAD_REQUEST, message));
    }
    Ok(Checked {
        model,
        aspect_ratio,
        format,
        media: None,
    })
}

/// The first business rule (400) a schema-valid request breaks: the prompt's length, then the
/// number of images of each reference kind.
fn broken_rule(request: &Value) -> Option<String> {
    let field = |name: &str| request.get(name).filter(|v| !v.is_null());
    let prompt = field("prompt").and_then(Value::as_str).unwrap_or("").trim();
    let length = prompt.chars().count();
    let too_many = |name: &str, max: usize| {
        let n = match name {
            "character_ref" => request
                .pointer("/character_ref/identity0/images")
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
            _ => field(name).and_then(Value::as_array).map_or(0, Vec::len),
        };
        (n > max).then(|| format!("Too many {name} images: {n}, maximum is {max}"))
    };
    if length == 0 {
        Some("Prompt is required".to_string())
    } else if length < 3 {
        Some("Prompt is too short, minimum length is 3 characters".to_string())
    } else if length > 5000 {
        Some("Prompt is too long, maximum length is 5000 characters".to_string())
    } else {
        too_many("image_ref", 4)
            .or_else(|| too_many("style_ref", 1))
            .or_else(|| too_many("character_ref", 4))
    }
}

/// The request as the API echoes it: every image field, `null` when unset.
pub(super) fn echo(request: &Value, model: &str) -> Value {
    let pick = |name: &str| request.get(name).cloned().unwrap_or(Value::Null);
    json!({
        "generation_type": "image",
        "model": model,
        "prompt": pick("prompt"),
        "aspect_ratio": request.get("aspect_ratio").cloned().unwrap_or(json!("16:9")),
        "callback_url": pick("callback_url"),
        "image_ref": pick("image_ref"),
        "style_ref": pick("style_ref"),
        "character_ref": pick("character_ref"),
        "modify_image_ref": pick("modify_image_ref"),
    })
}
