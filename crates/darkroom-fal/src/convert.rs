//! fal's wire types to and from the provider-neutral ones: the only place the two meet.
//!
//! A neutral request becomes a text-to-image submit (endpoint from the model, a prompt and an
//! aspect ratio) or is refused with what fal could not honour: fal's text-to-image endpoints take
//! no references, no modify and no format, and darkroom never sends a request fal would quietly
//! make without part of it. A request that leaves the aspect ratio out means fal's default, `1:1`.

use darkroom_jobs::{AspectRatio, Model};
use darkroom_provider as neutral;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::Error;
use crate::wire;

/// fal's default aspect ratio, taken when a request leaves it out.
pub(crate) const DEFAULT_ASPECT_RATIO: &str = "1:1";
/// The one format darkroom takes from fal (its Photon outputs are JPEG images).
pub(crate) const FORMAT: &str = "jpg";

/// The text-to-image endpoint of each model, in the order the request list is read.
pub(crate) const ENDPOINTS: [(Model, &str); 2] = [
    (Model::Photon1, "fal-ai/luma-photon"),
    (Model::PhotonFlash1, "fal-ai/luma-photon/flash"),
];

/// The endpoint id of `model`.
pub(crate) fn endpoint_of(model: Model) -> &'static str {
    ENDPOINTS
        .iter()
        .find(|(m, _)| *m == model)
        .map_or(ENDPOINTS[0].1, |(_, e)| e)
}

/// The model an endpoint id makes.
fn model_of(endpoint: &str) -> Option<Model> {
    ENDPOINTS.iter().find(|(_, e)| *e == endpoint).map(|(m, _)| *m)
}

/// The submit of `request`: its model and body, or what fal can't do of it.
pub(crate) fn input_of(request: &neutral::CreateRequest) -> Result<(Model, wire::Input), Error> {
    let model = Model::parse(&request.model).ok_or_else(|| {
        Error::Unsupported(format!(
            "model {:?} (fal sells photon-1 and photon-flash-1)",
            request.model
        ))
    })?;
    let mut extra = Vec::new();
    let listed = |list: &Option<Vec<neutral::ImageRef>>| list.as_ref().is_some_and(|v| !v.is_empty());
    if listed(&request.image_ref) {
        extra.push("image references");
    }
    if listed(&request.style_ref) {
        extra.push("a style reference");
    }
    if request.character_ref.is_some() {
        extra.push("a character reference");
    }
    if request.modify_image_ref.is_some() {
        extra.push("an image to modify");
    }
    if request.format.as_deref().is_some_and(|f| f != FORMAT) {
        extra.push("a format other than jpg");
    }
    if !extra.is_empty() {
        return Err(Error::Unsupported(format!(
            "{} (fal's text-to-image endpoints take a prompt and an aspect ratio only)",
            extra.join(", ")
        )));
    }
    if let Some(ratio) = request
        .aspect_ratio
        .as_deref()
        .filter(|r| AspectRatio::parse(r).is_none())
    {
        return Err(Error::Unsupported(format!(
            "aspect ratio {ratio:?} (expected one of {})",
            AspectRatio::expected_list()
        )));
    }
    Ok((
        model,
        wire::Input {
            prompt: request.prompt.clone(),
            aspect_ratio: request.aspect_ratio.clone(),
        },
    ))
}

/// The echo of what was sent: fal echoes nothing at submit, so a created generation carries the
/// request as sent.
pub(crate) fn echo_of(model: Model, input: &wire::Input) -> neutral::RequestEcho {
    neutral::RequestEcho {
        model: Some(model.as_str().to_string()),
        prompt: Some(input.prompt.clone()),
        aspect_ratio: Some(
            input
                .aspect_ratio
                .clone()
                .unwrap_or_else(|| DEFAULT_ASPECT_RATIO.to_string()),
        ),
        default_aspect_ratio: Some(DEFAULT_ASPECT_RATIO.to_string()),
        default_format: Some(FORMAT.to_string()),
        reframe: None,
        ..neutral::RequestEcho::default()
    }
}

/// An RFC 3339 time (a time without a zone read as UTC) as Unix milliseconds.
fn millis(text: &str) -> Option<i64> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(&format!("{text}Z"), &Rfc3339))
        .ok()?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Unix milliseconds as the RFC 3339 time fal's list takes for `start`.
pub(crate) fn rfc3339(ms: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

/// The words of an `error` field (a string, or an object with a `detail` or `msg`).
pub(crate) fn reason_of(error: &serde_json::Value) -> String {
    match error {
        serde_json::Value::String(text) => text.clone(),
        other => crate::error::detail_of(&other.to_string()),
    }
}

/// A generation read from its status (and, once completed well, its output).
pub(crate) fn from_status(
    id: &str,
    status: wire::Status,
    output: Option<&wire::Output>,
) -> neutral::Generation {
    let (state, failure_reason) = match status.status {
        wire::QueueStatus::InQueue => (neutral::GenerationState::Queued, None),
        wire::QueueStatus::InProgress => (neutral::GenerationState::Dreaming, None),
        wire::QueueStatus::Completed => match status.error.as_ref().filter(|e| !e.is_null()) {
            Some(error) => (neutral::GenerationState::Failed, Some(reason_of(error))),
            None if status.error_type.is_some() => (neutral::GenerationState::Failed, status.error_type),
            None => (neutral::GenerationState::Completed, None),
        },
        wire::QueueStatus::Unknown(text) => (neutral::GenerationState::Unknown(text), None),
    };
    neutral::Generation {
        id: status.request_id.unwrap_or_else(|| id.to_string()),
        state,
        failure_reason,
        created_at_ms: None,
        image_url: output.and_then(wire::Output::image_url).map(str::to_string),
        model: None,
        request: None,
    }
}

/// A generation of the by-endpoint list; `None` for an item without a request id.
pub(crate) fn from_item(item: wire::RequestItem) -> Option<neutral::Generation> {
    let id = item.request_id.filter(|id| !id.is_empty())?;
    let model = item.endpoint_id.as_deref().and_then(model_of);
    let output = item
        .json_output
        .as_ref()
        .and_then(|v| serde_json::from_value::<wire::Output>(v.clone()).ok());
    let (state, failure_reason) = match item.status_code {
        Some(200..=299) => (neutral::GenerationState::Completed, None),
        Some(code) => {
            let output = item.json_output.as_ref();
            let reason = match (
                output.and_then(|v| v.get("detail")),
                output.and_then(|v| v.get("error")),
            ) {
                (Some(_), _) => crate::error::detail_of(&output.map(ToString::to_string).unwrap_or_default()),
                (None, Some(error)) => reason_of(error),
                (None, None) => format!("HTTP {code}"),
            };
            (neutral::GenerationState::Failed, Some(reason))
        }
        None if item.ended_at.is_some() => (neutral::GenerationState::Unknown("ended".into()), None),
        None if item.started_at.is_some() => (neutral::GenerationState::Dreaming, None),
        None => (neutral::GenerationState::Queued, None),
    };
    let input = item.json_input.unwrap_or_default();
    let text = |key: &str| input.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let request = model.map(|model| neutral::RequestEcho {
        model: Some(model.as_str().to_string()),
        prompt: text("prompt"),
        aspect_ratio: Some(text("aspect_ratio").unwrap_or_else(|| DEFAULT_ASPECT_RATIO.to_string())),
        default_aspect_ratio: Some(DEFAULT_ASPECT_RATIO.to_string()),
        default_format: Some(FORMAT.to_string()),
        reframe: None,
        ..neutral::RequestEcho::default()
    });
    Some(neutral::Generation {
        id,
        state,
        failure_reason,
        created_at_ms: item.sent_at.as_deref().and_then(millis),
        image_url: output
            .as_ref()
            .and_then(wire::Output::image_url)
            .map(str::to_string),
        model: model.map(|m| m.as_str().to_string()),
        request,
    })
}

/// The balance of a billing answer: USD as a number, read to the micro-dollar; its resolution is
/// taken to be a cent (fal's pages show cents; a finer reading is not promised).
pub(crate) fn balance_of(billing: &wire::AccountBilling) -> Option<neutral::Balance> {
    let dollars = billing.credits.as_ref()?.current_balance?;
    if !dollars.is_finite()
        || billing
            .credits
            .as_ref()?
            .currency
            .as_deref()
            .is_some_and(|c| !c.eq_ignore_ascii_case("USD"))
    {
        return None;
    }
    let micros = dollars * 1_000_000.0;
    // In range for an i64 after the check; `as` saturates anyway.
    #[allow(clippy::cast_possible_truncation)]
    let (floor, nearest) = (micros.floor() as i64, micros.round() as i64);
    Some(neutral::Balance {
        available_micros: floor,
        reading_micros: nearest,
        resolution_micros: 10_000,
    })
}

#[cfg(test)]
mod tests;
