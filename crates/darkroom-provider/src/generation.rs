//! A generation (one create upstream) as the engine sees it, whichever provider made it.
//!
//! A provider reads its own answers leniently and converts them to these types; the engine never
//! sees a provider's wire shape.

/// Where a generation is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenerationState {
    /// Accepted, not started.
    Queued,
    /// Being made.
    Dreaming,
    /// Made: its image can be downloaded (when the answer names one).
    Completed,
    /// Ended without an image (refunded by the providers known so far); see
    /// [`Generation::failure_reason`].
    Failed,
    /// A state this build does not know, as the provider wrote it. Not an end: the engine reads again.
    Unknown(String),
}

impl GenerationState {
    /// Whether the generation has ended (`Completed` or `Failed`).
    pub fn is_terminal(&self) -> bool {
        matches!(self, GenerationState::Completed | GenerationState::Failed)
    }
}

/// What the provider echoed of the request a generation was made from, to recognise it again
/// (a create whose answer was lost, a generation the audit finds). Every field is what came back:
/// `None` means "not echoed", which can't disqualify a match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestEcho {
    /// The model named in the request.
    pub model: Option<String>,
    /// The prompt.
    pub prompt: Option<String>,
    /// `W:H`.
    pub aspect_ratio: Option<String>,
    /// `jpg` or `png`.
    pub format: Option<String>,
    /// Image references; an empty list is the same as none.
    pub image_ref: Option<Vec<crate::ImageRef>>,
    /// Style references; an empty list is the same as none.
    pub style_ref: Option<Vec<crate::ImageRef>>,
    /// The character reference.
    pub character_ref: Option<crate::CharacterRef>,
    /// The image modified.
    pub modify_image_ref: Option<crate::ImageRef>,
    /// A reframe's source image (`None`: not a reframe, or a provider that does not echo it).
    /// Compared strictly: an ordinary image never matches a reframe, nor one reframe another's source.
    pub reframe: Option<crate::ReframeSource>,
    /// The aspect ratio the provider takes when a request leaves it out.
    pub default_aspect_ratio: Option<String>,
    /// The format the provider takes when a request leaves it out.
    pub default_format: Option<String>,
}

/// One generation, as a create, a read, a list or a callback reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The provider's id for it.
    pub id: String,
    /// Where it is.
    pub state: GenerationState,
    /// Why it failed, in the provider's words, when it did; for a completed generation without an
    /// image, why it has none when the provider said (Replicate deletes outputs after an hour).
    pub failure_reason: Option<String>,
    /// When the provider says it was created, Unix milliseconds (`None` when unreadable).
    pub created_at_ms: Option<i64>,
    /// The image's URL once completed (never empty).
    pub image_url: Option<String>,
    /// The model label the provider reports; may be an internal name: use the model that was sent.
    pub model: Option<String>,
    /// The request as echoed back, when it was.
    pub request: Option<RequestEcho>,
}

impl Generation {
    /// The image URL, once completed.
    pub fn image_url(&self) -> Option<&str> {
        self.image_url.as_deref()
    }

    /// `created_at` as Unix milliseconds.
    pub fn created_at_ms(&self) -> Option<i64> {
        self.created_at_ms
    }

    /// Whether the echoed request is the request we sent: same model and prompt, same aspect ratio
    /// and format where echoed (a request that left one out meaning the provider's default), same
    /// references, the same reframe source or none on both sides. Used to adopt a create whose answer was lost; no echo is never a match.
    pub fn matches_request(&self, sent: &crate::CreateRequest) -> bool {
        let Some(echo) = &self.request else { return false };
        let same = |echoed: &Option<String>, sent: &Option<String>, default: &Option<String>| match echoed {
            None => true, // not echoed: can't tell, don't disqualify
            Some(e) => Some(e) == sent.as_ref().or(default.as_ref()),
        };
        let refs = |list: &Option<Vec<crate::ImageRef>>| list.clone().filter(|v| !v.is_empty());
        echo.model.as_deref() == Some(sent.model.as_str())
            && echo.prompt.as_deref() == Some(sent.prompt.as_str())
            && same(&echo.aspect_ratio, &sent.aspect_ratio, &echo.default_aspect_ratio)
            && same(&echo.format, &sent.format, &echo.default_format)
            && refs(&echo.image_ref) == refs(&sent.image_ref)
            && refs(&echo.style_ref) == refs(&sent.style_ref)
            && echo.character_ref == sent.character_ref
            && echo.modify_image_ref == sent.modify_image_ref
            && echo.reframe == sent.reframe
    }
}

/// How a failed generation's reason should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Moderation: trying again would fail again. The task is blocked.
    Blocked,
    /// Anything else: worth a bounded retry.
    Retryable,
}

impl FailureKind {
    /// Classifies a failure reason. Moderation-like reasons (Luma's documented ones and those seen
    /// in the wild: "moderation", "blacklisted", "not allowed", "nsfw", "safety"; Replicate's
    /// safety checker: "flagged as sensitive", code E005) block; the rest may be retried.
    pub fn classify(failure_reason: &str) -> FailureKind {
        let reason = failure_reason.to_ascii_lowercase();
        let blocked = [
            "moderat",
            "blacklist",
            "not allowed",
            "nsfw",
            "safety",
            "flagged as sensitive",
            "(e005)",
        ];
        if blocked.iter().any(|word| reason.contains(word)) {
            FailureKind::Blocked
        } else {
            FailureKind::Retryable
        }
    }
}

/// Where a listing goes on from: opaque, made by the provider that returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor(String);

impl PageCursor {
    /// A cursor with the provider's own text (an offset, a cursor URL, a token).
    pub fn new(text: impl Into<String>) -> PageCursor {
        PageCursor(text.into())
    }

    /// The provider's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One page of the account's generations, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationPage {
    /// The generations of this page. It may hold some created before the moment asked for (the
    /// caller filters by [`Generation::created_at_ms`]).
    pub generations: Vec<Generation>,
    /// Where the next page starts; `None` when there is none, or when this page already reached
    /// generations older than the moment asked for.
    pub next: Option<PageCursor>,
}

/// The account's balance, in integer micro-dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    /// What the account can spend, rounded down (a balance is never overstated).
    pub available_micros: i64,
    /// The balance rounded to the nearest micro-dollar, to compare with a later reading.
    pub reading_micros: i64,
    /// The finest step this reading shows, micro-dollars (a balance in whole cents: 10,000).
    pub resolution_micros: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CreateRequest, ImageRef};

    #[test]
    fn moderation_reasons_block_and_the_rest_retry() {
        for reason in [
            "Contains blacklisted words",
            "Frame moderation failed",
            "400: failed to moderate image",
            "prompt not allowed because advanced moderation failed",
            "The input or output was flagged as sensitive. Please try again with different inputs. (E005)",
        ] {
            assert_eq!(FailureKind::classify(reason), FailureKind::Blocked, "{reason}");
        }
        for reason in [
            "Job failed",
            "Error dispatching job",
            "Prompt processing failed",
            "Failed to read user input frames",
        ] {
            assert_eq!(FailureKind::classify(reason), FailureKind::Retryable, "{reason}");
        }
    }

    fn generation(echo: Option<RequestEcho>) -> Generation {
        Generation {
            id: "g".into(),
            state: GenerationState::Queued,
            failure_reason: None,
            created_at_ms: None,
            image_url: None,
            model: None,
            request: echo,
        }
    }

    fn echo() -> RequestEcho {
        RequestEcho {
            model: Some("photon-1".into()),
            prompt: Some("a chair".into()),
            default_aspect_ratio: Some("16:9".into()),
            default_format: Some("jpg".into()),
            ..RequestEcho::default()
        }
    }

    #[test]
    fn no_echo_never_matches_and_fields_not_echoed_do_not_disqualify() {
        let sent = CreateRequest::new("photon-1", "a chair");
        assert!(!generation(None).matches_request(&sent));
        assert!(generation(Some(echo())).matches_request(&sent));
        let mut other_prompt = sent.clone();
        other_prompt.prompt = "a table".into();
        assert!(!generation(Some(echo())).matches_request(&other_prompt));
        let mut other_model = sent;
        other_model.model = "photon-flash-1".into();
        assert!(!generation(Some(echo())).matches_request(&other_model));
    }

    #[test]
    fn an_echoed_option_is_compared_with_the_sent_one_or_the_providers_default() {
        let mut echoed = echo();
        echoed.aspect_ratio = Some("16:9".into());
        let mut sent = CreateRequest::new("photon-1", "a chair");
        assert!(
            generation(Some(echoed.clone())).matches_request(&sent),
            "unsent means the default"
        );
        sent.aspect_ratio = Some("1:1".into());
        assert!(!generation(Some(echoed.clone())).matches_request(&sent));
        echoed.default_aspect_ratio = None;
        sent.aspect_ratio = None;
        assert!(
            !generation(Some(echoed)).matches_request(&sent),
            "no known default: can't be the same"
        );
    }

    #[test]
    fn an_empty_reference_list_is_the_same_as_none_and_references_must_agree() {
        let mut echoed = echo();
        echoed.image_ref = Some(vec![]);
        let mut sent = CreateRequest::new("photon-1", "a chair");
        assert!(generation(Some(echoed.clone())).matches_request(&sent));
        sent.image_ref = Some(vec![ImageRef {
            url: "https://cdn.example.com/a.jpg".into(),
            weight: None,
        }]);
        assert!(!generation(Some(echoed.clone())).matches_request(&sent));
        echoed.image_ref.clone_from(&sent.image_ref);
        assert!(generation(Some(echoed)).matches_request(&sent));
    }

    #[test]
    fn a_reframe_matches_only_a_reframe_of_the_same_source() {
        let source = |url: &str| Some(crate::ReframeSource { url: url.to_string() });
        let mut sent = CreateRequest::new("photon-1", "a chair");
        sent.reframe = source("https://cdn.example.com/a.jpg");
        assert!(
            !generation(Some(echo())).matches_request(&sent),
            "an ordinary image with the same prompt is not the reframe"
        );
        let mut echoed = echo();
        echoed.reframe = source("https://cdn.example.com/b.jpg");
        assert!(!generation(Some(echoed.clone())).matches_request(&sent));
        echoed.reframe.clone_from(&sent.reframe);
        assert!(generation(Some(echoed.clone())).matches_request(&sent));
        assert!(
            !generation(Some(echoed)).matches_request(&CreateRequest::new("photon-1", "a chair")),
            "a reframe is not the ordinary create of the same prompt"
        );
    }
}
