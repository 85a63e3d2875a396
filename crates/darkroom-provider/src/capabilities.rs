//! What a provider can do with a request, and what it charges for one per its published table.
//!
//! The engine checks a job against these before anything is spent; each provider declares its own
//! (Luma takes four image references, Replicate one, fal.ai's text-to-image endpoints none).

use darkroom_jobs::{AspectRatio, Format, Model};

/// What a provider accepts in a [`CreateRequest`](crate::CreateRequest); [`Capabilities::refusals`]
/// says what of a request it could not make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// The models it can make images with.
    pub models: Vec<Model>,
    /// Image references per request (0: none accepted).
    pub max_image_refs: usize,
    /// Style references per request.
    pub max_style_refs: usize,
    /// Images of the one character reference per request.
    pub max_character_images: usize,
    /// Whether a request may carry a weight on its references.
    pub reference_weights: bool,
    /// Whether a request may modify an image (`modify_image_ref`).
    pub modify: bool,
    /// The output formats a request may ask for; a provider with one fixed format lists that one.
    pub formats: Vec<Format>,
    /// The aspect ratios a request may ask for.
    pub aspect_ratios: Vec<AspectRatio>,
    /// Whether a create may name a URL to call back with its progress.
    pub callbacks: bool,
    /// Whether the account's balance can be read (`Provider::balance` returns `Some`).
    pub balance: bool,
}

impl Capabilities {
    /// Why this provider can't make `request` as asked, one reason per part it would have to drop
    /// or change (`"2 image references (takes at most 1)"`); empty when it can make it whole.
    ///
    /// A provider that silently ignored part of a request would charge for a different image than
    /// the one asked for, so the engine refuses such a request before anything is spent, and a
    /// provider's `create` refuses it too. Reasons name the request's field as the job file does.
    pub fn refusals(&self, request: &crate::CreateRequest) -> Vec<String> {
        let mut reasons = Vec::new();
        match Model::parse(&request.model) {
            Some(model) if self.models.contains(&model) => {}
            _ => reasons.push(format!("model {} is not offered", request.model)),
        }
        if let Some(ratio) = &request.aspect_ratio {
            if !AspectRatio::parse(ratio).is_some_and(|r| self.aspect_ratios.contains(&r)) {
                reasons.push(format!("aspect ratio {ratio} is not offered"));
            }
        }
        if let Some(format) = &request.format {
            if !Format::parse(format).is_some_and(|f| self.formats.contains(&f)) {
                let offered: Vec<&str> = self.formats.iter().map(|f| f.as_str()).collect();
                reasons.push(format!("format {format} (makes only {})", offered.join(", ")));
            }
        }
        let counted = [
            (
                "image reference",
                request.image_ref.as_deref().unwrap_or_default(),
                self.max_image_refs,
            ),
            (
                "style reference",
                request.style_ref.as_deref().unwrap_or_default(),
                self.max_style_refs,
            ),
        ];
        for (what, list, max) in counted {
            if list.len() > max {
                reasons.push(format!("{} ({})", counted_noun(list.len(), what), limit(max)));
            }
            if !self.reference_weights && list.iter().any(|r| r.weight.is_some()) {
                reasons.push(format!("a weight on its {what}s (takes none)"));
            }
        }
        if let Some(character) = &request.character_ref {
            let images = character.identity0.images.len();
            if images > self.max_character_images {
                reasons.push(format!(
                    "{} ({})",
                    counted_noun(images, "character image"),
                    limit(self.max_character_images)
                ));
            }
        }
        if request.modify_image_ref.is_some() && !self.modify {
            reasons.push("modify_image_ref (can't modify an image)".to_string());
        }
        reasons
    }
}

/// `1 image reference`, `2 image references`.
fn counted_noun(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// What a provider takes of a counted thing: `takes none`, `takes at most 1`.
fn limit(max: usize) -> String {
    if max == 0 {
        "takes none".to_string()
    } else {
        format!("takes at most {max}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CharacterRef, CreateRequest, Identity, ImageRef};

    fn one_reference_provider() -> Capabilities {
        Capabilities {
            models: Model::ALL.to_vec(),
            max_image_refs: 1,
            max_style_refs: 1,
            max_character_images: 1,
            reference_weights: true,
            modify: false,
            formats: vec![Format::Jpg],
            aspect_ratios: AspectRatio::ALL.to_vec(),
            callbacks: false,
            balance: false,
        }
    }

    fn reference(url: &str) -> ImageRef {
        ImageRef {
            url: url.into(),
            weight: Some(0.5),
        }
    }

    #[test]
    fn a_request_within_the_capabilities_has_no_refusal() {
        let mut request = CreateRequest::new("photon-1", "a chair");
        request.aspect_ratio = Some("1:1".into());
        request.format = Some("jpg".into());
        request.image_ref = Some(vec![reference("https://a/1.jpg")]);
        request.style_ref = Some(vec![reference("https://a/2.jpg")]);
        assert!(one_reference_provider().refusals(&request).is_empty());
    }

    #[test]
    fn every_part_a_provider_would_drop_is_named() {
        let mut request = CreateRequest::new("photon-1", "a chair");
        request.format = Some("png".into());
        request.image_ref = Some(vec![reference("https://a/1.jpg"), reference("https://a/2.jpg")]);
        request.character_ref = Some(CharacterRef {
            identity0: Identity {
                images: vec!["https://a/3.jpg".into(), "https://a/4.jpg".into()],
            },
        });
        request.modify_image_ref = Some(reference("https://a/5.jpg"));
        let reasons = one_reference_provider().refusals(&request);
        assert_eq!(
            reasons,
            [
                "format png (makes only jpg)",
                "2 image references (takes at most 1)",
                "2 character images (takes at most 1)",
                "modify_image_ref (can't modify an image)",
            ]
        );
        let mut unweighted = one_reference_provider();
        unweighted.reference_weights = false;
        unweighted.models = vec![Model::PhotonFlash1];
        let reasons = unweighted.refusals(&CreateRequest {
            image_ref: Some(vec![reference("https://a/1.jpg")]),
            ..CreateRequest::new("photon-1", "a chair")
        });
        assert_eq!(
            reasons,
            [
                "model photon-1 is not offered",
                "a weight on its image references (takes none)"
            ]
        );
    }

    #[test]
    fn counts_read_as_english_for_none_one_and_many() {
        let mut none = one_reference_provider();
        none.max_image_refs = 0;
        none.max_character_images = 0;
        let one_each = CreateRequest {
            image_ref: Some(vec![reference("https://a/1.jpg")]),
            character_ref: Some(CharacterRef {
                identity0: Identity {
                    images: vec!["https://a/3.jpg".into()],
                },
            }),
            ..CreateRequest::new("photon-1", "a chair")
        };
        assert_eq!(
            none.refusals(&one_each),
            ["1 image reference (takes none)", "1 character image (takes none)"]
        );
        let three = CreateRequest {
            style_ref: Some(vec![
                reference("https://a/1.jpg"),
                reference("https://a/2.jpg"),
                reference("https://a/3.jpg"),
            ]),
            ..CreateRequest::new("photon-1", "a chair")
        };
        assert_eq!(
            one_reference_provider().refusals(&three),
            ["3 style references (takes at most 1)"]
        );
    }
}
