//! `POST /generations/image/reframe`: what a reframe's body must be (`ReframeImageRequest`: the
//! source in `media`, an aspect ratio, a model, `generation_type` `reframe_image`), its source
//! image looked up among the account's own, and the request as a reframe echoes it. Admission,
//! billing, faults and listing are a create's (`create.rs`).

// Handlers return early with a ready `Response` as their error; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::error;
use super::validate::Checked;
use crate::state::{Account, Outcome};

const ASPECT_RATIOS: [&str; 7] = ["1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21"];

/// Schema errors (422, pydantic style, all of them), then the prompt's length (400).
pub(super) fn validate(request: &Value) -> Result<Checked, Response> {
    let field = |name: &str| request.get(name).filter(|v| !v.is_null());
    let missing = |name: &str| json!({"type": "missing", "loc": ["body", name], "msg": "Field required", "input": request});
    let enum_error = |name: &str, value: &Value, expected: &str| json!({"type": "enum", "loc": ["body", name], "msg": format!("Input should be {expected}"), "input": value, "ctx": {"expected": expected}});
    let mut problems = Vec::new();
    let mut text = |name: &str, allowed: &[&str], expected: &str, default: Option<&str>| match field(name) {
        None if default.is_some() => default.map(str::to_string),
        None => {
            problems.push(missing(name));
            None
        }
        Some(Value::String(v)) if allowed.is_empty() || allowed.contains(&v.as_str()) => Some(v.clone()),
        Some(other) => {
            problems.push(enum_error(name, other, expected));
            None
        }
    };
    let generation_type = text("generation_type", &["reframe_image"], "'reframe_image'", None);
    let model = text(
        "model",
        &["photon-1", "photon-flash-1"],
        "'photon-1' or 'photon-flash-1'",
        None,
    );
    let aspect_ratio = text(
        "aspect_ratio",
        &ASPECT_RATIOS,
        "'1:1', '16:9', '9:16', '4:3', '3:4', '21:9' or '9:21'",
        None,
    );
    let format = text("format", &["jpg", "png"], "'jpg' or 'png'", Some("jpg"));
    let prompt = text("prompt", &[], "a valid string", Some(""));
    text("callback_url", &[], "a valid string", Some(""));
    let media = match field("media").map(|m| m.get("url")) {
        None => {
            problems.push(missing("media"));
            None
        }
        Some(Some(Value::String(url))) => Some(url.clone()),
        Some(_) => {
            problems.push(json!({"type": "model_type", "loc": ["body", "media"], "msg": "Input should be a valid {url}", "input": field("media")}));
            None
        }
    };
    if !problems.is_empty() {
        return Err(error(StatusCode::UNPROCESSABLE_ENTITY, Value::Array(problems)));
    }
    if prompt.is_some_and(|p| p.chars().count() > 5000) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "Prompt is too long, maximum length is 5000 characters",
        ));
    }
    match (generation_type, model, aspect_ratio, format, media) {
        (Some(_), Some(model), Some(aspect_ratio), Some(format), Some(media)) => Ok(Checked {
            model,
            aspect_ratio,
            format,
            media: Some(media),
        }),
        // Each `None` above pushed a problem.
        _ => Err(error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid request")),
    }
}

/// The seed and aspect ratio of the picture `url` names: one of the account's completed images
/// (on any loopback port), still served. Anything else can't be fetched: 400, nothing charged.
pub(super) fn source(
    account: &Account,
    url: &str,
    asset_base: &str,
    now: Instant,
) -> Result<([u8; 32], String), Response> {
    let found = super::create::own_generation(url, asset_base)
        .and_then(|id| account.generations.get(id))
        .filter(|g| !g.deleted && g.state(now) == "completed")
        .filter(|g| {
            !matches!(
                g.outcome,
                Outcome::ImageMissing | Outcome::CompletedWithoutImage | Outcome::NotAnImage
            )
        });
    match found {
        Some(g) => Ok((g.image_seed, g.aspect_ratio.clone())),
        None => Err(error(
            StatusCode::BAD_REQUEST,
            format!("Could not fetch media from url: {url}"),
        )),
    }
}

/// The request as a reframe echoes it: its fields, `null` when unset.
pub(super) fn echo(request: &Value, model: &str) -> Value {
    let pick = |name: &str| request.get(name).cloned().unwrap_or(Value::Null);
    json!({
        "generation_type": "reframe_image",
        "model": model,
        "prompt": request.get("prompt").cloned().unwrap_or(json!("")),
        "aspect_ratio": pick("aspect_ratio"),
        "format": pick("format"),
        "callback_url": pick("callback_url"),
        "media": pick("media"),
    })
}
