//! The API's JSON, as sent and as received.
//!
//! Requests leave out unset fields rather than sending `null`. Responses are read leniently, as the
//! official SDKs do: every field optional, unknown fields ignored, `assets` null or an object,
//! `type` where `generation_type` is expected, `created_at` with or without fractional seconds.

use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;

/// `{url, weight}`: an image reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ImageRef {
    pub(crate) url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) weight: Option<f64>,
}

/// `{"identity0": {"images": [...]}}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CharacterRef {
    pub(crate) identity0: Identity,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub(crate) images: Vec<String>,
}

/// The body of `POST /generations/image`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct CreateRequest {
    pub(crate) model: String,
    pub(crate) prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) aspect_ratio: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) image_ref: Option<Vec<ImageRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) style_ref: Option<Vec<ImageRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) character_ref: Option<CharacterRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) modify_image_ref: Option<ImageRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) callback_url: Option<String>,
}

/// `{url}`: a reframe's source image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Media {
    pub(crate) url: String,
}

/// The body of `POST /generations/image/reframe` (`ReframeImageRequest`): the source image in
/// `media`, the target aspect ratio, and `generation_type` `reframe_image`, which the API requires.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ReframeRequest {
    pub(crate) generation_type: &'static str,
    pub(crate) media: Media,
    pub(crate) model: String,
    pub(crate) prompt: String,
    pub(crate) aspect_ratio: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) callback_url: Option<String>,
}

/// A generation's state; an unknown state is kept as text rather than failing the parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GenerationState {
    Queued,
    Dreaming,
    Completed,
    Failed,
    Unknown(String),
}

impl<'de> Deserialize<'de> for GenerationState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?.unwrap_or_default();
        Ok(match text.as_str() {
            "queued" => GenerationState::Queued,
            "dreaming" => GenerationState::Dreaming,
            "completed" => GenerationState::Completed,
            "failed" => GenerationState::Failed,
            _ => GenerationState::Unknown(text),
        })
    }
}

/// `assets`: the image URL once completed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct Assets {
    #[serde(default)]
    pub(crate) image: Option<String>,
}

/// The request echo inside a generation: whatever of it came back.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct RequestEcho {
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) prompt: Option<String>,
    #[serde(default)]
    pub(crate) aspect_ratio: Option<String>,
    #[serde(default)]
    pub(crate) format: Option<String>,
    #[serde(default)]
    pub(crate) image_ref: Option<Vec<ImageRef>>,
    #[serde(default)]
    pub(crate) style_ref: Option<Vec<ImageRef>>,
    #[serde(default)]
    pub(crate) character_ref: Option<CharacterRef>,
    #[serde(default)]
    pub(crate) modify_image_ref: Option<ImageRef>,
    /// A reframe's source image.
    #[serde(default)]
    pub(crate) media: Option<Media>,
}

/// A generation, as create, get, list and callbacks return it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Generation {
    pub(crate) id: String,
    /// Not used by darkroom; kept so the tests show both spellings parse.
    #[allow(dead_code)]
    #[serde(default, alias = "type")]
    pub(crate) generation_type: Option<String>,
    #[serde(default = "unknown_state")]
    pub(crate) state: GenerationState,
    #[serde(default)]
    pub(crate) failure_reason: Option<String>,
    /// As sent by the upstream; see [`Generation::created_at`].
    #[serde(default, rename = "created_at")]
    pub(crate) created_at_text: Option<String>,
    #[serde(default)]
    pub(crate) assets: Option<Assets>,
    /// Possibly an internal label ("photon-v1.0"): use the model that was sent, not this.
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) request: Option<RequestEcho>,
}

fn unknown_state() -> GenerationState {
    GenerationState::Unknown(String::new())
}

impl Generation {
    /// The image URL, once completed.
    pub(crate) fn image_url(&self) -> Option<&str> {
        self.assets
            .as_ref()
            .and_then(|a| a.image.as_deref())
            .filter(|u| !u.is_empty())
    }

    /// `created_at` parsed (RFC 3339, with or without fractional seconds, `Z` or an offset, or with
    /// no zone at all, taken as UTC).
    pub(crate) fn created_at(&self) -> Option<OffsetDateTime> {
        let text = self.created_at_text.as_deref()?;
        let rfc = time::format_description::well_known::Rfc3339;
        OffsetDateTime::parse(text, &rfc).ok().or_else(|| {
            let with_zone = format!("{text}Z");
            OffsetDateTime::parse(&with_zone, &rfc).ok()
        })
    }

    /// `created_at` as Unix milliseconds.
    pub(crate) fn created_at_ms(&self) -> Option<i64> {
        self.created_at()
            .map(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
    }
}

/// `GET /generations`: newest first (assumed), with paging fields.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct GenerationList {
    #[serde(default)]
    pub(crate) generations: Vec<Generation>,
    #[serde(default)]
    pub(crate) has_more: bool,
}

/// `GET /credits`: the balance in US cents, as a float.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub(crate) struct Credits {
    pub(crate) credit_balance: f64,
}

impl Credits {
    /// The balance in integer micro-dollars, rounded down (a balance is never overstated).
    #[allow(clippy::cast_possible_truncation)]
    pub(crate) fn micro_dollars(&self) -> i64 {
        let micros = (self.credit_balance * 10_000.0).floor();
        if micros.is_nan() || micros <= 0.0 {
            0
        } else if micros >= i64::MAX as f64 {
            i64::MAX
        } else {
            micros as i64
        }
    }
}

impl Credits {
    /// The balance as a reading to compare with a later one: `(micro-dollars, resolution in
    /// micro-dollars)`. The value is rounded to the nearest micro-dollar (the float carries cents, so
    /// a balance like 9999.6 cents is exactly 99,996,000 micro-dollars, not one less). The resolution
    /// is a cent (10,000) unless the value shows finer: 9999.6 shows tenths of a cent (1,000).
    #[allow(clippy::cast_possible_truncation)]
    pub(crate) fn reading(&self) -> (i64, i64) {
        let cents = self.credit_balance;
        if !cents.is_finite() || cents <= 0.0 {
            return (0, 10_000);
        }
        let micros = (cents * 10_000.0).round();
        let micros = if micros >= i64::MAX as f64 {
            i64::MAX
        } else {
            micros as i64
        };
        // Decimal places shown (Rust prints the shortest text that reads back as the same float).
        let text = format!("{cents}");
        let places = text
            .split_once('.')
            .map_or(0, |(_, frac)| frac.trim_end_matches('0').len());
        let resolution = match places {
            0 => 10_000,
            1 => 1_000,
            2 => 100,
            3 => 10,
            _ => 1,
        };
        (micros, resolution)
    }
}

#[cfg(test)]
mod tests {
    use super::Credits;

    #[test]
    fn a_balance_in_whole_cents_reads_with_a_cent_of_resolution() {
        assert_eq!(
            Credits {
                credit_balance: 10345.0
            }
            .reading(),
            (103_450_000, 10_000)
        );
    }

    #[test]
    fn a_balance_showing_fractions_of_a_cent_reads_exactly_with_that_resolution() {
        assert_eq!(
            Credits {
                credit_balance: 9999.6
            }
            .reading(),
            (99_996_000, 1_000)
        );
        assert_eq!(
            Credits {
                credit_balance: 10345.5
            }
            .reading(),
            (103_455_000, 1_000)
        );
        assert_eq!(
            Credits {
                credit_balance: 0.0004
            }
            .reading(),
            (4, 1)
        );
    }
}
