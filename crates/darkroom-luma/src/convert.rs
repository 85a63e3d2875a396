//! Luma's wire types to and from the provider-neutral ones: the only place the two meet.
//!
//! Luma's create body has the shape of the neutral request (the ledger's stored form was Luma's
//! body first), so the request converts field by field; answers are read leniently by `wire` and
//! converted here. A request that leaves out the aspect ratio or format means Luma's defaults
//! (`16:9`, `jpg`), which the echo carries for matching.

use darkroom_provider as neutral;

use crate::wire;

/// Luma's default aspect ratio, taken when a request leaves it out.
pub(crate) const DEFAULT_ASPECT_RATIO: &str = "16:9";
/// Luma's default format.
pub(crate) const DEFAULT_FORMAT: &str = "jpg";

fn image_ref(r: &neutral::ImageRef) -> wire::ImageRef {
    wire::ImageRef {
        url: r.url.clone(),
        weight: r.weight,
    }
}

fn neutral_image_ref(r: wire::ImageRef) -> neutral::ImageRef {
    neutral::ImageRef {
        url: r.url,
        weight: r.weight,
    }
}

fn neutral_character_ref(r: wire::CharacterRef) -> neutral::CharacterRef {
    neutral::CharacterRef {
        identity0: neutral::Identity {
            images: r.identity0.images,
        },
    }
}

impl From<&neutral::CreateRequest> for wire::CreateRequest {
    fn from(request: &neutral::CreateRequest) -> wire::CreateRequest {
        let refs =
            |list: &Option<Vec<neutral::ImageRef>>| list.as_ref().map(|v| v.iter().map(image_ref).collect());
        wire::CreateRequest {
            model: request.model.clone(),
            prompt: request.prompt.clone(),
            aspect_ratio: request.aspect_ratio.clone(),
            format: request.format.clone(),
            image_ref: refs(&request.image_ref),
            style_ref: refs(&request.style_ref),
            character_ref: request.character_ref.as_ref().map(|c| wire::CharacterRef {
                identity0: wire::Identity {
                    images: c.identity0.images.clone(),
                },
            }),
            modify_image_ref: request.modify_image_ref.as_ref().map(image_ref),
            callback_url: request.callback_url.clone(),
        }
    }
}

/// The reframe body for a neutral request that carries a [`neutral::ReframeSource`]; `None` for an
/// ordinary create. Luma requires the aspect ratio; a request without one takes Luma's default.
pub(crate) fn reframe_body(request: &neutral::CreateRequest) -> Option<wire::ReframeRequest> {
    let source = request.reframe.as_ref()?;
    Some(wire::ReframeRequest {
        generation_type: "reframe_image",
        media: wire::Media {
            url: source.url.clone(),
        },
        model: request.model.clone(),
        prompt: request.prompt.clone(),
        aspect_ratio: request
            .aspect_ratio
            .clone()
            .unwrap_or_else(|| DEFAULT_ASPECT_RATIO.to_string()),
        format: request.format.clone(),
        callback_url: request.callback_url.clone(),
    })
}

impl From<wire::GenerationState> for neutral::GenerationState {
    fn from(state: wire::GenerationState) -> neutral::GenerationState {
        match state {
            wire::GenerationState::Queued => neutral::GenerationState::Queued,
            wire::GenerationState::Dreaming => neutral::GenerationState::Dreaming,
            wire::GenerationState::Completed => neutral::GenerationState::Completed,
            wire::GenerationState::Failed => neutral::GenerationState::Failed,
            wire::GenerationState::Unknown(text) => neutral::GenerationState::Unknown(text),
        }
    }
}

impl From<wire::RequestEcho> for neutral::RequestEcho {
    fn from(echo: wire::RequestEcho) -> neutral::RequestEcho {
        let refs =
            |list: Option<Vec<wire::ImageRef>>| list.map(|v| v.into_iter().map(neutral_image_ref).collect());
        neutral::RequestEcho {
            model: echo.model,
            prompt: echo.prompt,
            aspect_ratio: echo.aspect_ratio,
            format: echo.format,
            image_ref: refs(echo.image_ref),
            style_ref: refs(echo.style_ref),
            character_ref: echo.character_ref.map(neutral_character_ref),
            modify_image_ref: echo.modify_image_ref.map(neutral_image_ref),
            reframe: echo.media.map(|m| neutral::ReframeSource { url: m.url }),
            default_aspect_ratio: Some(DEFAULT_ASPECT_RATIO.to_string()),
            default_format: Some(DEFAULT_FORMAT.to_string()),
        }
    }
}

impl From<wire::Generation> for neutral::Generation {
    fn from(generation: wire::Generation) -> neutral::Generation {
        let created_at_ms = generation.created_at_ms();
        let image_url = generation.image_url().map(str::to_string);
        neutral::Generation {
            id: generation.id,
            state: generation.state.into(),
            failure_reason: generation.failure_reason,
            created_at_ms,
            image_url,
            model: generation.model,
            request: generation.request.map(Into::into),
        }
    }
}

impl From<wire::Credits> for neutral::Balance {
    fn from(credits: wire::Credits) -> neutral::Balance {
        let (reading_micros, resolution_micros) = credits.reading();
        neutral::Balance {
            available_micros: credits.micro_dollars(),
            reading_micros,
            resolution_micros,
        }
    }
}

#[cfg(test)]
mod tests {
    use darkroom_provider::{FailureKind, GenerationState};

    use crate::wire;

    fn request() -> darkroom_provider::CreateRequest {
        let mut request = darkroom_provider::CreateRequest::new("photon-flash-1", "A linen sofa");
        request.aspect_ratio = Some("16:9".into());
        request
    }

    #[test]
    fn every_documented_response_shape_parses() {
        let bodies = [
            r#"{"id":"4a7c8f4e-6a0b-4b7e-9d8e-1f2a3b4c5d6e","generation_type":"image","state":"queued","failure_reason":null,
            "created_at":"2026-11-24T09:30:19.123456Z","assets":{"image":null,"video":null,"progress_video":null},
            "model":"photon-flash-1","request":{"generation_type":"image","model":"photon-flash-1","prompt":"A linen sofa",
            "aspect_ratio":"16:9","callback_url":null,"image_ref":null,"style_ref":null,"character_ref":null,"modify_image_ref":null}}"#,
            r#"{"id":"x","type":"image","state":"completed","created_at":"2026-11-24T09:30:19Z","assets":{"image":"https://cdn/x.jpg"},
            "model":"photon-v1.0","request":{"type":"image","model":"photon-1","prompt":"p"},"extra":{"a":1}}"#,
            r#"{"id":"y","state":"failed","failure_reason":"Advanced prompt moderation failed","assets":null}"#,
            r#"{"id":"z","state":"some-new-state","created_at":"2026-11-24T09:30:19.5"}"#,
        ];
        let wire: Vec<wire::Generation> = bodies.iter().map(|b| serde_json::from_str(b).unwrap()).collect();
        assert_eq!(wire[1].generation_type.as_deref(), Some("image"));
        let parsed: Vec<darkroom_provider::Generation> = wire.into_iter().map(Into::into).collect();
        assert_eq!(parsed[0].state, GenerationState::Queued);
        assert!(parsed[0].matches_request(&request()));
        assert_eq!(parsed[1].image_url(), Some("https://cdn/x.jpg"));
        assert!(parsed[1].created_at_ms().is_some());
        assert_eq!(parsed[2].image_url(), None);
        assert_eq!(
            FailureKind::classify(parsed[2].failure_reason.as_deref().unwrap()),
            FailureKind::Blocked
        );
        assert_eq!(parsed[3].state, GenerationState::Unknown("some-new-state".into()));
        assert!(parsed[3].created_at_ms().is_some(), "no zone is read as UTC");
        let credits: wire::Credits = serde_json::from_str(r#"{"credit_balance": 10345.5}"#).unwrap();
        assert_eq!(
            darkroom_provider::Balance::from(credits).available_micros,
            103_455_000
        );
    }

    #[test]
    fn an_echo_without_aspect_ratio_or_format_matches_a_request_that_left_them_to_lumas_defaults() {
        let echo: wire::Generation = serde_json::from_str(
            r#"{"id":"a","state":"queued","request":{"model":"photon-flash-1","prompt":"A linen sofa","aspect_ratio":"16:9","format":"jpg"}}"#,
        )
        .unwrap();
        let echo = darkroom_provider::Generation::from(echo);
        let bare = darkroom_provider::CreateRequest::new("photon-flash-1", "A linen sofa");
        assert!(echo.matches_request(&bare), "16:9 and jpg are Luma's defaults");
        let mut square = bare.clone();
        square.aspect_ratio = Some("1:1".into());
        assert!(!echo.matches_request(&square));
        let mut png = bare;
        png.format = Some("png".into());
        assert!(!echo.matches_request(&png));
    }

    #[test]
    fn a_reframe_is_sent_with_its_source_as_media_and_its_echo_matches_only_that_source() {
        let mut sent = request();
        sent.aspect_ratio = Some("9:16".into());
        sent.reframe = Some(darkroom_provider::ReframeSource {
            url: "https://cdn/src.jpg".into(),
        });
        let body = serde_json::to_value(super::reframe_body(&sent).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"generation_type": "reframe_image", "media": {"url": "https://cdn/src.jpg"},
                "model": "photon-flash-1", "prompt": "A linen sofa", "aspect_ratio": "9:16"})
        );
        assert!(
            super::reframe_body(&request()).is_none(),
            "an ordinary create is no reframe"
        );
        let echo: wire::Generation = serde_json::from_str(
            r#"{"id":"r","state":"queued","request":{"generation_type":"reframe_image","model":"photon-flash-1",
            "prompt":"A linen sofa","aspect_ratio":"9:16","media":{"url":"https://cdn/src.jpg"}}}"#,
        )
        .unwrap();
        let echo = darkroom_provider::Generation::from(echo);
        assert!(echo.matches_request(&sent));
        let mut plain = sent.clone();
        plain.reframe = None;
        assert!(!echo.matches_request(&plain));
    }
}
