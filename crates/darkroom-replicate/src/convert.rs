//! Replicate's wire types to and from the neutral ones: the only place the two meet.
//!
//! A neutral request becomes a prediction's `input` (one image reference, one style reference,
//! one character image; the model named by its Replicate path); a prediction becomes a neutral
//! generation whose echo is its `input` read back, with Replicate's default aspect ratio (`16:9`)
//! for matching a request that left it out. Replicate's statuses map onto the neutral states:
//! `starting` queued, `processing` dreaming, `succeeded` completed, `failed`, `canceled` and
//! `aborted` failed.

use darkroom_jobs::Model;
use darkroom_provider as neutral;

use crate::wire::{self, Status};

/// Replicate's default aspect ratio for Photon, taken when a request leaves it out.
pub(crate) const DEFAULT_ASPECT_RATIO: &str = "16:9";

/// What a generation whose output Replicate deleted reports as its reason (a `succeeded`
/// prediction with `data_removed` and no output).
pub(crate) const OUTPUT_REMOVED: &str =
    "Replicate deleted the output (it keeps an API prediction's files one hour after it ends)";

/// Replicate's model path for a darkroom model (`luma/photon`, `luma/photon-flash`).
pub(crate) fn model_path(model: Model) -> &'static str {
    match model {
        Model::Photon1 => "luma/photon",
        Model::PhotonFlash1 => "luma/photon-flash",
    }
}

/// The darkroom model a Replicate model path stands for; `None` for any other model.
pub(crate) fn model_of_path(path: &str) -> Option<Model> {
    Model::ALL.into_iter().find(|m| model_path(*m) == path)
}

/// A neutral request as a prediction's `input`. The caller has checked it against the
/// capabilities: anything past the first reference of a kind is not here.
pub(crate) fn input_of(request: &neutral::CreateRequest) -> wire::Input {
    let first = |list: &Option<Vec<neutral::ImageRef>>| list.as_ref().and_then(|v| v.first()).cloned();
    let (image, style) = (first(&request.image_ref), first(&request.style_ref));
    wire::Input {
        prompt: Some(request.prompt.clone()),
        aspect_ratio: request.aspect_ratio.clone(),
        image_reference_weight: image.as_ref().and_then(|r| r.weight),
        image_reference: image.map(|r| r.url),
        style_reference_weight: style.as_ref().and_then(|r| r.weight),
        style_reference: style.map(|r| r.url),
        character_reference: request
            .character_ref
            .as_ref()
            .and_then(|c| c.identity0.images.first().cloned()),
    }
}

/// The request a prediction's input echoes, in neutral form.
fn echo_of(model: Option<Model>, input: wire::Input) -> neutral::RequestEcho {
    let one =
        |url: Option<String>, weight: Option<f64>| url.map(|url| vec![neutral::ImageRef { url, weight }]);
    neutral::RequestEcho {
        model: model.map(|m| m.as_str().to_string()),
        prompt: input.prompt,
        aspect_ratio: input.aspect_ratio,
        format: None,
        image_ref: one(input.image_reference, input.image_reference_weight),
        style_ref: one(input.style_reference, input.style_reference_weight),
        character_ref: input.character_reference.map(|url| neutral::CharacterRef {
            identity0: neutral::Identity { images: vec![url] },
        }),
        modify_image_ref: None,
        default_aspect_ratio: Some(DEFAULT_ASPECT_RATIO.to_string()),
        default_format: None,
        reframe: None,
    }
}

impl From<wire::Prediction> for neutral::Generation {
    fn from(prediction: wire::Prediction) -> neutral::Generation {
        let image_url = prediction.output_url().map(str::to_string);
        let created_at_ms = prediction.created_at_ms();
        let error = prediction.error_text();
        let (state, failure_reason) = match &prediction.status {
            Status::Starting => (neutral::GenerationState::Queued, None),
            Status::Processing => (neutral::GenerationState::Dreaming, None),
            Status::Succeeded => {
                let removed =
                    (image_url.is_none() && prediction.data_removed).then(|| OUTPUT_REMOVED.to_string());
                (neutral::GenerationState::Completed, removed)
            }
            Status::Failed => (
                neutral::GenerationState::Failed,
                Some(error.unwrap_or_else(|| "failed".into())),
            ),
            Status::Canceled => (neutral::GenerationState::Failed, Some("canceled".into())),
            Status::Aborted => (
                neutral::GenerationState::Failed,
                Some("aborted: its deadline passed before it started".into()),
            ),
            Status::Unknown(text) => (neutral::GenerationState::Unknown(text.clone()), None),
        };
        let model = prediction.model.as_deref().and_then(model_of_path);
        // A prediction made on the web is no create of ours; one whose input was removed can't be
        // recognised.
        let ours = prediction.source.as_deref().is_none_or(|s| s == "api");
        let request = prediction
            .input
            .filter(|_| ours)
            .map(|input| echo_of(model, input));
        neutral::Generation {
            id: prediction.id,
            state,
            failure_reason,
            created_at_ms,
            image_url,
            model: prediction.model,
            request,
        }
    }
}

#[cfg(test)]
mod tests {
    use darkroom_provider::{CreateRequest, Generation, GenerationState, ImageRef};

    use super::*;

    fn read(json: &str) -> Generation {
        serde_json::from_str::<wire::Prediction>(json).unwrap().into()
    }

    fn request() -> CreateRequest {
        let mut request = CreateRequest::new("photon-flash-1", "A linen sofa");
        request.image_ref = Some(vec![ImageRef {
            url: "https://cdn.example.com/a.jpg".into(),
            weight: Some(0.4),
        }]);
        request
    }

    #[test]
    fn a_request_becomes_an_input_and_its_echo_matches_the_request() {
        let input = input_of(&request());
        let body = serde_json::to_value(&input).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"prompt": "A linen sofa", "image_reference": "https://cdn.example.com/a.jpg", "image_reference_weight": 0.4})
        );
        let echoed = read(&format!(
            r#"{{"id":"p1","model":"luma/photon-flash","status":"starting","source":"api","input":{body}}}"#
        ));
        assert!(
            echoed.matches_request(&request()),
            "16:9 left out is Replicate's default"
        );
        let mut other = request();
        other.model = "photon-1".into();
        assert!(
            !echoed.matches_request(&other),
            "the model path tells photon from flash"
        );
    }

    #[test]
    fn statuses_map_onto_the_neutral_states_and_aborted_is_an_end() {
        let states = [
            ("starting", GenerationState::Queued),
            ("processing", GenerationState::Dreaming),
            ("succeeded", GenerationState::Completed),
            ("failed", GenerationState::Failed),
            ("canceled", GenerationState::Failed),
            ("aborted", GenerationState::Failed),
        ];
        for (status, state) in states {
            assert_eq!(
                read(&format!(r#"{{"id":"p","status":"{status}"}}"#)).state,
                state,
                "{status}"
            );
        }
        let failed = read(
            r#"{"id":"p","status":"failed","error":"The input or output was flagged as sensitive. (E005)"}"#,
        );
        assert_eq!(
            failed.failure_reason.as_deref(),
            Some("The input or output was flagged as sensitive. (E005)")
        );
    }

    #[test]
    fn an_output_replicate_deleted_is_said_so_and_a_web_prediction_is_never_ours() {
        let removed =
            read(r#"{"id":"p","status":"succeeded","output":null,"data_removed":true,"input":null}"#);
        assert_eq!(removed.state, GenerationState::Completed);
        assert_eq!(removed.image_url(), None);
        assert_eq!(removed.failure_reason.as_deref(), Some(OUTPUT_REMOVED));
        assert!(
            !removed.matches_request(&request()),
            "a removed input can't be recognised"
        );
        let web = read(
            r#"{"id":"w","model":"luma/photon-flash","status":"succeeded","source":"web","input":{"prompt":"A linen sofa","image_reference":"https://cdn.example.com/a.jpg","image_reference_weight":0.4}}"#,
        );
        assert!(!web.matches_request(&request()));
    }
}
