//! fal's JSON, as sent and as received (`providers-api.md` §2).
//!
//! Requests leave out unset fields. Answers are read leniently, as fal's own clients read them:
//! every field optional, unknown fields ignored, an unknown status kept as text.

use serde::{Deserialize, Deserializer, Serialize};

/// The body of a text-to-image submit (`POST {queue}/fal-ai/luma-photon[/flash]`): a prompt and an
/// aspect ratio, the only inputs those endpoints take.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Input {
    pub(crate) prompt: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) aspect_ratio: Option<String>,
}

/// The answer to a submit: the request's id and where to read it.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Submitted {
    #[serde(default)]
    pub(crate) request_id: Option<String>,
}

/// A queued request's status (`IN_QUEUE`, `IN_PROGRESS`, `COMPLETED`); an unknown one is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QueueStatus {
    InQueue,
    InProgress,
    Completed,
    Unknown(String),
}

impl<'de> Deserialize<'de> for QueueStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?.unwrap_or_default();
        Ok(match text.as_str() {
            "IN_QUEUE" => QueueStatus::InQueue,
            "IN_PROGRESS" => QueueStatus::InProgress,
            "COMPLETED" => QueueStatus::Completed,
            _ => QueueStatus::Unknown(text),
        })
    }
}

/// `GET .../requests/{id}/status`: a failure is `COMPLETED` with `error` (and `error_type`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Status {
    pub(crate) status: QueueStatus,
    #[serde(default)]
    pub(crate) request_id: Option<String>,
    #[serde(default)]
    pub(crate) error: Option<serde_json::Value>,
    #[serde(default)]
    pub(crate) error_type: Option<String>,
}

/// A file of an output: `{url, content_type?, file_name?, file_size?}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct File {
    #[serde(default)]
    pub(crate) url: Option<String>,
}

/// Every Photon endpoint's output: `{"images": [File]}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Output {
    #[serde(default)]
    pub(crate) images: Vec<File>,
}

impl Output {
    /// The first image's URL, when it has a non-empty one.
    pub(crate) fn image_url(&self) -> Option<&str> {
        self.images
            .iter()
            .filter_map(|f| f.url.as_deref())
            .find(|u| !u.is_empty())
    }
}

/// One item of the by-endpoint request list (`GET {api}/models/requests/by-endpoint`).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RequestItem {
    #[serde(default)]
    pub(crate) request_id: Option<String>,
    #[serde(default)]
    pub(crate) endpoint_id: Option<String>,
    #[serde(default)]
    pub(crate) sent_at: Option<String>,
    #[serde(default)]
    pub(crate) started_at: Option<String>,
    #[serde(default)]
    pub(crate) ended_at: Option<String>,
    #[serde(default)]
    pub(crate) status_code: Option<u16>,
    #[serde(default)]
    pub(crate) json_input: Option<serde_json::Value>,
    #[serde(default)]
    pub(crate) json_output: Option<serde_json::Value>,
}

/// One page of the by-endpoint list: `{items, next_cursor, has_more}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RequestPage {
    #[serde(default)]
    pub(crate) items: Vec<RequestItem>,
    #[serde(default)]
    pub(crate) next_cursor: Option<String>,
    #[serde(default)]
    pub(crate) has_more: bool,
}

/// `GET {api}/account/billing?expand=credits`: the credit balance in USD.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct AccountBilling {
    #[serde(default)]
    pub(crate) credits: Option<Credits>,
}

/// `credits` of the billing answer.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Credits {
    #[serde(default)]
    pub(crate) current_balance: Option<f64>,
    #[serde(default)]
    pub(crate) currency: Option<String>,
}
