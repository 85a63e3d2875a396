//! Errors from fal or the way to it, classified by what the caller may safely do next.
//!
//! A submit that may have been queued (no answer, a 5xx, an answer that could not be read) is
//! *outcome unknown*, never *never sent*: fal has no idempotency key, and a second submit is a
//! second bill (`providers-api.md` §3). A 429 is a rate limit unless its detail names the
//! account's balance; 401 and 403 refuse the account (fal locks an account whose balance ran
//! out with a 403 saying so, which is a quota refusal). No message carries the key.

use std::time::Duration;

use darkroom_provider::{ErrorClass, ProviderError, Refusal};

/// Why a provider could not be built from its configuration (a base URL that is no `http(s)`
/// URL, a TLS set-up that failed). Nothing was sent.
#[derive(Debug, thiserror::Error)]
#[error("the fal client could not be built: {0}")]
pub struct SetupError(pub(crate) String);

/// An error from fal or the way to it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("{operation}: could not reach {origin}: {message}")]
    NeverSent {
        operation: &'static str,
        origin: String,
        message: String,
    },
    #[error("{operation}: no answer ({message}); fal may have acted on it")]
    NoAnswer {
        operation: &'static str,
        message: String,
    },
    #[error("{operation}: HTTP {status}: {detail}")]
    Status {
        operation: &'static str,
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("{operation}: the answer could not be read: {message}")]
    BadAnswer {
        operation: &'static str,
        message: String,
    },
    #[error("create: fal's text-to-image endpoints take a prompt and an aspect ratio only; this request also asks for {0}")]
    Unsupported(String),
    #[error("download: {message}")]
    Download { message: String, status: Option<u16> },
}

impl Error {
    /// What the caller may safely do next.
    pub(crate) fn class(&self) -> ErrorClass {
        let is_create = self.operation() == "create";
        match self {
            Error::NeverSent { .. } => ErrorClass::NeverSent,
            Error::NoAnswer { .. } | Error::BadAnswer { .. } if is_create => ErrorClass::OutcomeUnknown,
            Error::NoAnswer { .. } | Error::BadAnswer { .. } => ErrorClass::Transient,
            Error::Status { status: 429, .. } if self.is_refusal() => ErrorClass::Permanent { status: 429 },
            Error::Status {
                status: 429,
                retry_after,
                ..
            } => ErrorClass::RateLimited {
                retry_after: *retry_after,
            },
            Error::Status { status, .. } if *status >= 500 || *status == 408 => {
                if is_create {
                    ErrorClass::OutcomeUnknown
                } else {
                    ErrorClass::Transient
                }
            }
            Error::Status { status, .. } => ErrorClass::Permanent { status: *status },
            // Refused before anything was sent, as fal would refuse a body it can't take (422).
            Error::Unsupported(_) => ErrorClass::Permanent { status: 422 },
            Error::Download { status: Some(s), .. } if (400..500).contains(s) && *s != 408 && *s != 429 => {
                ErrorClass::Permanent { status: *s }
            }
            Error::Download { .. } => ErrorClass::Transient,
        }
    }

    /// The HTTP status, when fal answered with one.
    fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            Error::Download { status, .. } => *status,
            _ => None,
        }
    }

    /// Whether fal refused the account itself: 401, 402 and 403, and a 400 or 429 whose detail
    /// names the balance, credits, a lock or billing.
    fn is_refusal(&self) -> bool {
        match self {
            Error::Status {
                status: 401..=403, ..
            } => true,
            Error::Status {
                status: 400 | 429,
                detail,
                ..
            } => names_the_balance(detail),
            _ => false,
        }
    }

    /// Which refusal this is: a rejected key (401, or a 403 not about money) or an account that
    /// can't pay (402, or a detail naming the balance: "User is locked. Reason: Exhausted balance").
    fn refusal(&self) -> Option<Refusal> {
        match self {
            Error::Status { status: 402, .. } => Some(Refusal::Quota),
            Error::Status { detail, .. } if self.is_refusal() && names_the_balance(detail) => {
                Some(Refusal::Quota)
            }
            Error::Status {
                status: 401 | 403, ..
            } => Some(Refusal::Credentials),
            _ => None,
        }
    }

    fn operation(&self) -> &'static str {
        match self {
            Error::NeverSent { operation, .. }
            | Error::NoAnswer { operation, .. }
            | Error::Status { operation, .. }
            | Error::BadAnswer { operation, .. } => operation,
            Error::Unsupported(_) => "create",
            Error::Download { .. } => "download",
        }
    }
}

impl From<Error> for ProviderError {
    fn from(error: Error) -> ProviderError {
        let mut neutral = ProviderError::new(error.operation(), error.class(), error.to_string());
        if let Some(status) = error.status() {
            neutral = neutral.with_status(status);
        }
        if let Some(refusal) = error.refusal() {
            neutral = neutral.with_refusal(refusal);
        }
        if let Error::Status { detail, .. } = error {
            neutral = neutral.with_detail(detail);
        }
        neutral
    }
}

/// Whether a detail says the account can't pay.
fn names_the_balance(detail: &str) -> bool {
    let detail = detail.to_ascii_lowercase();
    ["balance", "credit", "locked", "billing", "payment", "quota"]
        .iter()
        .any(|word| detail.contains(word))
}

/// The `detail` of an error body (a string, a pydantic list, or the raw text), cut short.
pub(crate) fn detail_of(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
        let text = body.split_whitespace().collect::<Vec<_>>().join(" ");
        return if text.is_empty() {
            "(empty body)".into()
        } else {
            shorten(&text)
        };
    };
    match value.get("detail") {
        Some(serde_json::Value::String(text)) => shorten(text),
        Some(serde_json::Value::Array(items)) => shorten(
            &items
                .iter()
                .map(|item| {
                    let loc = item
                        .get("loc")
                        .and_then(|l| l.as_array())
                        .map(|l| {
                            l.iter()
                                .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_string))
                                .collect::<Vec<_>>()
                                .join(".")
                        })
                        .unwrap_or_default();
                    let msg = item.get("msg").and_then(|m| m.as_str()).unwrap_or("invalid");
                    if loc.is_empty() {
                        msg.to_string()
                    } else {
                        format!("{loc}: {msg}")
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Some(other) => shorten(&other.to_string()),
        None => shorten(&value.to_string()),
    }
}

/// Cuts text to 200 characters.
pub(crate) fn shorten(text: &str) -> String {
    const MAX: usize = 200;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    }
}

/// `Retry-After` in seconds, as a wait from now (fal is not known to send a date).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()?;
    if value.is_nan() || value < 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(value).unwrap_or(Duration::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(operation: &'static str, status: u16, detail: &str) -> Error {
        Error::Status {
            operation,
            status,
            detail: detail.into(),
            retry_after: None,
        }
    }

    #[test]
    fn a_submit_that_may_have_been_queued_is_outcome_unknown_and_a_read_is_transient() {
        for error in [
            status("create", 500, "Internal server error"),
            status("create", 503, "runner_scheduling_failure"),
            status("create", 504, "request_timeout"),
            Error::NoAnswer {
                operation: "create",
                message: "timed out".into(),
            },
            Error::BadAnswer {
                operation: "create",
                message: "not JSON".into(),
            },
        ] {
            assert_eq!(error.class(), ErrorClass::OutcomeUnknown, "{error}");
        }
        assert_eq!(status("get", 503, "x").class(), ErrorClass::Transient);
        assert_eq!(
            status("create", 422, "body.prompt: field required").class(),
            ErrorClass::Permanent { status: 422 }
        );
    }

    #[test]
    fn a_locked_account_is_a_quota_refusal_and_a_bad_key_a_credentials_refusal() {
        let locked = ProviderError::from(status(
            "create",
            403,
            "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing.",
        ));
        assert_eq!(locked.refusal(), Some(Refusal::Quota));
        let bad_key = ProviderError::from(status("create", 401, "Invalid Key"));
        assert_eq!(bad_key.refusal(), Some(Refusal::Credentials));
        let forbidden = ProviderError::from(status("create", 403, "Forbidden"));
        assert_eq!(forbidden.refusal(), Some(Refusal::Credentials));
        let rate = ProviderError::from(status("create", 429, "Too many requests"));
        assert!(!rate.is_refusal());
        assert!(matches!(rate.class(), ErrorClass::RateLimited { .. }));
        let broke = ProviderError::from(status("create", 429, "Insufficient credit balance"));
        assert_eq!(broke.refusal(), Some(Refusal::Quota));
        assert_eq!(broke.class(), ErrorClass::Permanent { status: 429 });
    }
}
