//! Replicate's errors, classified by what the caller may safely do next.
//!
//! The classes are the neutral ones (`darkroom_provider::ErrorClass`): a create that may have been
//! accepted is never "never sent". Replicate's error bodies are `{"detail": ..., "title": ...,
//! "status": ...}`; a 429's detail carries the reset hint ("Your rate limit resets in ~30s."),
//! read as the wait when no `Retry-After` header came. No message ever contains the token, and a
//! body that is not JSON is cut short.

use std::time::Duration;

use darkroom_provider::{ErrorClass, ProviderError, Refusal};

/// Why the provider could not be built from its configuration (a base URL that is no `http(s)`
/// URL, a TLS set-up that failed). Nothing was sent.
#[derive(Debug, thiserror::Error)]
#[error("the Replicate client could not be built: {0}")]
pub struct SetupError(pub(crate) String);

/// An error from Replicate or the way to it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("{operation}: could not reach {origin}: {message}")]
    NeverSent {
        operation: &'static str,
        origin: String,
        message: String,
    },
    #[error("{operation}: no answer ({message}); Replicate may have acted on it")]
    NoAnswer {
        operation: &'static str,
        message: String,
        is_create: bool,
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
        is_create: bool,
    },
    /// Refused here, before anything was sent.
    #[error("{operation}: {message}")]
    Refused {
        operation: &'static str,
        message: String,
    },
    #[error("download: {message}")]
    Download { message: String, status: Option<u16> },
}

/// Words of an error's detail that say the account (not the request, not the rate) is the limit.
const ACCOUNT_LIMIT_PHRASES: [&str; 8] = [
    "credit",
    "billing",
    "payment",
    "insufficient",
    "quota",
    "spend limit",
    "spending limit",
    "unpaid",
];

impl Error {
    /// What the caller may safely do next.
    pub(crate) fn class(&self) -> ErrorClass {
        match self {
            Error::NeverSent { .. } => ErrorClass::NeverSent,
            Error::NoAnswer { is_create: true, .. } | Error::BadAnswer { is_create: true, .. } => {
                ErrorClass::OutcomeUnknown
            }
            Error::NoAnswer { .. } | Error::BadAnswer { .. } => ErrorClass::Transient,
            Error::Refused { .. } => ErrorClass::Permanent { status: 422 },
            Error::Status { status: 429, .. } if self.refusal().is_some() => {
                ErrorClass::Permanent { status: 429 }
            }
            Error::Status {
                status: 429,
                retry_after,
                ..
            } => ErrorClass::RateLimited {
                retry_after: *retry_after,
            },
            Error::Status {
                status, operation, ..
            } if *status >= 500 || *status == 408 => {
                if *operation == "create" {
                    ErrorClass::OutcomeUnknown
                } else {
                    ErrorClass::Transient
                }
            }
            Error::Status { status, .. } => ErrorClass::Permanent { status: *status },
            Error::Download { status: Some(s), .. } if (400..500).contains(s) && *s != 408 && *s != 429 => {
                ErrorClass::Permanent { status: *s }
            }
            Error::Download { .. } => ErrorClass::Transient,
        }
    }

    /// Which refusal of the account this is: a rejected token or forbidden account (401, 403), or
    /// an account that can't pay (402, or a 400/429 whose detail names credit, billing or a quota).
    pub(crate) fn refusal(&self) -> Option<Refusal> {
        let Error::Status { status, detail, .. } = self else {
            return None;
        };
        let names_limit = || {
            let detail = detail.to_ascii_lowercase();
            ACCOUNT_LIMIT_PHRASES.iter().any(|p| detail.contains(p))
        };
        match status {
            401 | 403 => Some(Refusal::Credentials),
            402 => Some(Refusal::Quota),
            400 | 429 if names_limit() => Some(Refusal::Quota),
            _ => None,
        }
    }

    fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            Error::Download { status, .. } => *status,
            _ => None,
        }
    }

    fn operation(&self) -> &'static str {
        match self {
            Error::NeverSent { operation, .. }
            | Error::NoAnswer { operation, .. }
            | Error::Status { operation, .. }
            | Error::BadAnswer { operation, .. }
            | Error::Refused { operation, .. } => operation,
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
        match error {
            Error::Status { detail, .. } | Error::Refused { message: detail, .. } => {
                neutral.with_detail(detail)
            }
            _ => neutral,
        }
    }
}

/// The `detail` of an error body (or its `title`, or a pydantic-style list), else the text cut short.
pub(crate) fn detail_of(body: &str) -> String {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(body) {
        match value.get("detail").or_else(|| value.get("title")) {
            Some(serde_json::Value::String(text)) => return shorten(text),
            Some(serde_json::Value::Null) | None => {}
            Some(other) => return shorten(&other.to_string()),
        }
    }
    let text = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        "(empty body)".into()
    } else {
        shorten(&text)
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

/// The wait a 429 asks for: its `Retry-After` header (seconds or an HTTP date, rounded up to a
/// whole second), else the reset hint of Replicate's detail ("resets in ~30s", "~2m"), else none.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap, detail: &str) -> Option<Duration> {
    if let Some(value) = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    {
        if let Ok(seconds) = value.parse::<f64>() {
            if seconds.is_finite() && seconds >= 0.0 {
                return Some(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX));
            }
        } else if let Ok(at) = httpdate::parse_http_date(value) {
            let wait = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO);
            let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Some(Duration::from_secs(whole));
        }
    }
    reset_hint(detail)
}

/// "Your rate limit resets in ~30s." → 30 s; `m` minutes, `h` hours; the `~` is optional.
fn reset_hint(detail: &str) -> Option<Duration> {
    let lower = detail.to_ascii_lowercase();
    let rest = &lower[lower.find("resets in")? + "resets in".len()..];
    let rest = rest.trim_start().trim_start_matches('~').trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let number: u64 = digits.parse().ok()?;
    let unit = rest[digits.len()..].trim_start().chars().next();
    let seconds = match unit {
        Some('m') => number.saturating_mul(60),
        Some('h') => number.saturating_mul(3600),
        _ => number,
    };
    Some(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, detail: &str) -> Error {
        Error::Status {
            operation: "create",
            status,
            detail: detail.into(),
            retry_after: None,
        }
    }

    #[test]
    fn the_reset_hint_of_a_throttled_answer_is_the_wait_when_no_header_says_one() {
        let none = reqwest::header::HeaderMap::new();
        let detail = "Request was throttled. Your rate limit resets in ~30s.";
        assert_eq!(retry_after(&none, detail), Some(Duration::from_secs(30)));
        assert_eq!(
            retry_after(&none, "resets in ~2m"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(retry_after(&none, "Request was throttled."), None);
        let mut header = reqwest::header::HeaderMap::new();
        header.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(
            retry_after(&header, detail),
            Some(Duration::from_secs(7)),
            "the header wins"
        );
    }

    #[test]
    fn a_rejected_token_or_an_account_that_cannot_pay_is_a_refusal_and_a_throttle_is_not() {
        assert_eq!(
            status(401, "Unauthenticated").refusal(),
            Some(Refusal::Credentials)
        );
        assert_eq!(status(403, "Forbidden").refusal(), Some(Refusal::Credentials));
        assert_eq!(status(402, "Payment Required").refusal(), Some(Refusal::Quota));
        let broke = status(429, "You have insufficient credit to run this model");
        assert_eq!(broke.refusal(), Some(Refusal::Quota));
        assert_eq!(broke.class(), ErrorClass::Permanent { status: 429 });
        let throttled = status(429, "Request was throttled. Your rate limit resets in ~30s.");
        assert_eq!(throttled.refusal(), None);
        assert!(matches!(throttled.class(), ErrorClass::RateLimited { .. }));
        assert_eq!(status(422, "Input validation failed").refusal(), None);
        assert_eq!(status(503, "unavailable").class(), ErrorClass::OutcomeUnknown);
    }

    #[test]
    fn an_error_body_gives_its_detail_or_title_or_its_text_cut_short() {
        assert_eq!(
            detail_of(
                r#"{"title":"Unauthenticated","detail":"You did not pass a valid token","status":401}"#
            ),
            "You did not pass a valid token"
        );
        assert_eq!(detail_of(r#"{"title":"Not found","status":404}"#), "Not found");
        assert_eq!(
            detail_of("<html> bad   gateway </html>"),
            "<html> bad gateway </html>"
        );
        assert_eq!(detail_of(""), "(empty body)");
        assert!(detail_of(&"x".repeat(500)).ends_with('…'));
    }
}
