//! Replicate's JSON, as sent and as received.
//!
//! A create's body is `{input, webhook?, webhook_events_filter?}` with the model's input fields
//! (Replicate's schema for `luma/photon` and `luma/photon-flash`); unset fields are left out, never
//! `null`. Answers are read leniently: every field optional, unknown fields ignored, an `output`
//! that is one URL (today's schema) or a list of them (older versions), a status this build does
//! not know kept as text.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

/// The `input` of a Photon prediction: what the model is asked to make.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Input {
    #[serde(default)]
    pub(crate) prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) aspect_ratio: Option<String>,
    /// One image URL whose content guides the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) image_reference: Option<String>,
    /// 0 to 1 (Replicate's default 0.85).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) image_reference_weight: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) style_reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) style_reference_weight: Option<f64>,
    /// One image of the person whose likeness the result keeps (no weight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) character_reference: Option<String>,
}

/// The body of `POST /models/{owner}/{name}/predictions`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct CreateBody {
    pub(crate) input: Input,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) webhook: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) webhook_events_filter: Option<Vec<&'static str>>,
}

/// A prediction's status; one this build does not know is kept as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    Starting,
    Processing,
    Succeeded,
    Failed,
    /// Cancelled while it ran (charged, for public models).
    Canceled,
    /// Its `Cancel-After` deadline passed before it started (not charged).
    Aborted,
    Unknown(String),
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?.unwrap_or_default();
        Ok(match text.as_str() {
            "starting" => Status::Starting,
            "processing" => Status::Processing,
            "succeeded" => Status::Succeeded,
            "failed" => Status::Failed,
            "canceled" => Status::Canceled,
            "aborted" => Status::Aborted,
            _ => Status::Unknown(text),
        })
    }
}

fn unknown_status() -> Status {
    Status::Unknown(String::new())
}

/// A prediction, as create, get, list and webhooks return it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Prediction {
    pub(crate) id: String,
    /// `owner/name`, e.g. `luma/photon`.
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default = "unknown_status")]
    pub(crate) status: Status,
    /// `null` once the data was removed (an hour after the prediction ended).
    #[serde(default)]
    pub(crate) input: Option<Input>,
    /// One URL, a list of URLs, or `null`.
    #[serde(default)]
    pub(crate) output: Option<Value>,
    /// Why it failed: a string, or occasionally an object.
    #[serde(default)]
    pub(crate) error: Option<Value>,
    #[serde(default, rename = "created_at")]
    pub(crate) created_at_text: Option<String>,
    /// Replicate deleted the input, output and files (an hour after the end, for API predictions).
    #[serde(default)]
    pub(crate) data_removed: bool,
    /// `api` or `web`.
    #[serde(default)]
    pub(crate) source: Option<String>,
}

impl Prediction {
    /// The output image's URL: the output string, or the first of a list; never empty.
    pub(crate) fn output_url(&self) -> Option<&str> {
        match self.output.as_ref()? {
            Value::String(url) => Some(url.as_str()),
            Value::Array(urls) => urls.first().and_then(Value::as_str),
            _ => None,
        }
        .filter(|url| !url.is_empty())
    }

    /// The error in words, when there is one.
    pub(crate) fn error_text(&self) -> Option<String> {
        match self.error.as_ref()? {
            Value::Null => None,
            Value::String(text) if text.trim().is_empty() => None,
            Value::String(text) => Some(text.clone()),
            other => Some(other.to_string()),
        }
    }

    /// `created_at` (RFC 3339) as Unix milliseconds.
    pub(crate) fn created_at_ms(&self) -> Option<i64> {
        let text = self.created_at_text.as_deref()?;
        let at = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
        i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
    }
}

/// `GET /predictions`: newest first, with the URL of the next page.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct PredictionList {
    #[serde(default)]
    pub(crate) results: Vec<Prediction>,
    #[serde(default)]
    pub(crate) next: Option<String>,
}

/// Unix milliseconds as the ISO 8601 time `created_after` takes (`2026-11-24T09:30:19.123Z`).
pub(crate) fn iso_time(ms: i64) -> Option<String> {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_is_one_url_or_the_first_of_a_list_and_never_empty() {
        let read = |json: &str| serde_json::from_str::<Prediction>(json).unwrap();
        assert_eq!(
            read(r#"{"id":"a","status":"succeeded","output":"https://replicate.delivery/a.jpg"}"#)
                .output_url(),
            Some("https://replicate.delivery/a.jpg")
        );
        assert_eq!(
            read(r#"{"id":"a","status":"succeeded","output":["https://r/1.jpg","https://r/2.jpg"]}"#)
                .output_url(),
            Some("https://r/1.jpg")
        );
        assert_eq!(
            read(r#"{"id":"a","status":"succeeded","output":""}"#).output_url(),
            None
        );
        assert_eq!(
            read(r#"{"id":"a","status":"succeeded","output":null}"#).output_url(),
            None
        );
        let odd = read(r#"{"id":"a","status":"in_review","extra":1}"#);
        assert_eq!(odd.status, Status::Unknown("in_review".into()));
    }

    #[test]
    fn times_read_and_write_as_iso_8601() {
        let prediction: Prediction =
            serde_json::from_str(r#"{"id":"a","created_at":"2026-11-24T09:30:19.123456Z"}"#).unwrap();
        let ms = prediction.created_at_ms().unwrap();
        assert_eq!(iso_time(ms).unwrap(), "2026-11-24T09:30:19.123Z");
    }
}
