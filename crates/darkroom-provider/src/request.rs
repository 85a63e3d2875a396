//! The request for one image, in the provider-neutral form the engine builds, stores and compares.
//!
//! Its JSON is what the ledger keeps as a task's request (`tasks.request_json`) and what the request
//! fingerprint hashes, so the field names and the leaving-out of unset fields are a stored format:
//! they only ever gain optional fields. A provider turns it into its own wire body (and refuses what
//! its [`Capabilities`](crate::Capabilities) say it can't do); nothing here is any provider's wire type.

use serde::{Deserialize, Serialize};

/// One reference image: a URL and how strongly it steers the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRef {
    /// An `http(s)` URL (or a `data:` URL) the provider fetches itself.
    pub url: String,
    /// 0 to 1, higher follows the reference more closely; `None` leaves the provider's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

/// A character reference: images of one person whose likeness the image keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CharacterRef {
    /// The one identity a request may carry.
    pub identity0: Identity,
}

/// The images of one identity of a [`CharacterRef`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// Image URLs of the same person.
    pub images: Vec<String>,
}

/// A reframe's source: the image to extend to the request's aspect ratio.
///
/// A request carrying one is not a text-to-image create but a reframe (outpainting): the provider
/// fetches `url` itself, so it must be a URL the provider can reach (its own URL of an earlier
/// generation), never a local path. Sent through [`Provider::reframe`](crate::Provider::reframe).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReframeSource {
    /// An `http(s)` URL of the source image that the provider fetches.
    pub url: String,
}

/// What to make: one image from one model.
///
/// Unset options are left out of the JSON (never `null`), so a stored request reads back as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateRequest {
    /// The model's name as the job file gives it (`photon-1`, `photon-flash-1`).
    pub model: String,
    /// The text prompt.
    pub prompt: String,
    /// `W:H`, one of the provider's [`Capabilities::aspect_ratios`](crate::Capabilities); `None`
    /// takes the provider's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aspect_ratio: Option<String>,
    /// `jpg` or `png`; `None` takes the provider's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Images whose content guides the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<Vec<ImageRef>>,
    /// Images whose style the result takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style_ref: Option<Vec<ImageRef>>,
    /// A person whose likeness the result keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub character_ref: Option<CharacterRef>,
    /// An image the result redoes (keeping its composition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modify_image_ref: Option<ImageRef>,
    /// The image a reframe extends to `aspect_ratio` (the prompt then describes what to add);
    /// `None` for an ordinary create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reframe: Option<ReframeSource>,
    /// Where the provider reports the generation's progress; added per send, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

impl CreateRequest {
    /// A request for `prompt` from `model` with every option unset.
    pub fn new(model: impl Into<String>, prompt: impl Into<String>) -> CreateRequest {
        CreateRequest {
            model: model.into(),
            prompt: prompt.into(),
            aspect_ratio: None,
            format: None,
            image_ref: None,
            style_ref: None,
            character_ref: None,
            modify_image_ref: None,
            reframe: None,
            callback_url: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_stores_without_unset_fields_and_reads_back_the_same() {
        let mut request = CreateRequest::new("photon-flash-1", "a red chair");
        request.aspect_ratio = Some("16:9".into());
        request.style_ref = Some(vec![ImageRef {
            url: "https://cdn.example.com/s.jpg".into(),
            weight: None,
        }]);
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(
            text,
            r#"{"model":"photon-flash-1","prompt":"a red chair","aspect_ratio":"16:9","style_ref":[{"url":"https://cdn.example.com/s.jpg"}]}"#
        );
        assert_eq!(serde_json::from_str::<CreateRequest>(&text).unwrap(), request);
    }

    #[test]
    fn a_reframe_stores_its_source_and_a_stored_request_without_one_reads_as_an_ordinary_create() {
        let mut request = CreateRequest::new("photon-1", "a red chair");
        request.aspect_ratio = Some("9:16".into());
        request.reframe = Some(ReframeSource {
            url: "https://cdn.example.com/a.jpg".into(),
        });
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(
            text,
            r#"{"model":"photon-1","prompt":"a red chair","aspect_ratio":"9:16","reframe":{"url":"https://cdn.example.com/a.jpg"}}"#
        );
        assert_eq!(serde_json::from_str::<CreateRequest>(&text).unwrap(), request);
        let old: CreateRequest = serde_json::from_str(r#"{"model":"photon-1","prompt":"x"}"#).unwrap();
        assert_eq!(old.reframe, None);
    }
}
