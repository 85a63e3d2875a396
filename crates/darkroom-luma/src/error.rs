//! Errors from the upstream, classified by what the caller may safely do next.
//!
//! The class is the point: a create that was *never sent* may be sent again; one whose *outcome is
//! unknown* may have been accepted and charged, and must be reconciled first; *rate limited* says
//! slow down; *transient* (a failed read) may be read again; *permanent* won't get better by retrying.
//! No message here ever contains the API key, and a non-JSON body is cut short.

use std::time::Duration;

use darkroom_provider::{ErrorClass, ProviderError, Refusal};

/// Whether `operation` creates something the account pays for (`create`, `reframe`): its outcome
/// is unknown when the answer is lost, never "read again".
pub(crate) fn is_paid(operation: &str) -> bool {
    matches!(operation, "create" | "reframe")
}

/// Why a provider could not be built from its configuration (a base URL that is no `http(s)` URL,
/// a TLS set-up that failed). Nothing was sent.
#[derive(Debug, thiserror::Error)]
#[error("the client could not be built: {0}")]
pub struct SetupError(pub(crate) String);

/// An error from the upstream or the way to it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("{operation}: could not reach {origin}: {message}")]
    NeverSent {
        operation: &'static str,
        origin: String,
        message: String,
    },
    #[error("{operation}: no answer ({message}); the upstream may have acted on it")]
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
    #[error("download: {message}")]
    Download { message: String, status: Option<u16> },
}

impl Error {
    /// What the caller may safely do next.
    pub(crate) fn class(&self) -> ErrorClass {
        match self {
            Error::NeverSent { .. } => ErrorClass::NeverSent,
            Error::NoAnswer { is_create: true, .. } | Error::BadAnswer { is_create: true, .. } => {
                ErrorClass::OutcomeUnknown
            }
            Error::NoAnswer { .. } | Error::BadAnswer { .. } => ErrorClass::Transient,
            // A 429 that names a quota or spend limit is the account refused, not a rate: waiting
            // won't clear it.
            Error::Status { status: 429, .. } if self.is_refusal() => ErrorClass::Permanent { status: 429 },
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
                if is_paid(operation) {
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

    /// The HTTP status, when the upstream answered with one.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            Error::Download { status, .. } => *status,
            _ => None,
        }
    }

    /// Whether the upstream refused the account itself: no other request will succeed either, so
    /// the run should stop. That is a rejected key or a forbidden account (401, 403), payment
    /// required (402), and a 400 or 429 whose detail names credits, a quota, or a usage, spend,
    /// monthly or billing limit (Luma caps monthly spend; a 429 saying so is not a rate limit).
    pub(crate) fn is_refusal(&self) -> bool {
        match self {
            Error::Status {
                status: 401..=403, ..
            } => true,
            Error::Status {
                status: status @ (400 | 429),
                detail,
                ..
            } => names_an_account_limit(*status, detail),
            _ => false,
        }
    }

    /// Which refusal of the account this is, when it is one: a rejected key or forbidden account
    /// (401, 403) or an account that can't pay (402, or a quota or spend limit named by a 400/429).
    pub(crate) fn refusal(&self) -> Option<Refusal> {
        match self {
            Error::Status {
                status: 401 | 403, ..
            } => Some(Refusal::Credentials),
            _ if self.is_refusal() => Some(Refusal::Quota),
            _ => None,
        }
    }

    /// The operation that failed.
    fn operation(&self) -> &'static str {
        match self {
            Error::NeverSent { operation, .. }
            | Error::NoAnswer { operation, .. }
            | Error::Status { operation, .. }
            | Error::BadAnswer { operation, .. } => operation,
            Error::Download { .. } => "download",
        }
    }

    /// The provider-neutral error: the same class, status, refusal and message.
    pub(crate) fn into_provider(self) -> ProviderError {
        let mut neutral = ProviderError::new(self.operation(), self.class(), self.to_string());
        if let Some(status) = self.status() {
            neutral = neutral.with_status(status);
        }
        if let Some(refusal) = self.refusal() {
            neutral = neutral.with_refusal(refusal);
        }
        if let Error::Status { detail, .. } = self {
            neutral = neutral.with_detail(detail);
        }
        neutral
    }
}

impl From<Error> for ProviderError {
    fn from(error: Error) -> ProviderError {
        error.into_provider()
    }
}

/// Phrases an error detail uses when the account (not the request) is the limit: out of credits,
/// over a quota, or over a usage, spend or plan cap. Specific enough to read in any 4xx.
const ACCOUNT_LIMIT_PHRASES: [&str; 11] = [
    "credit",
    "balance",
    "insufficient",
    "quota",
    "usage limit",
    "usage cap",
    "spend limit",
    "spending limit",
    "exceeded your current usage",
    "plan limit",
    "billing limit",
];

/// Looser words that, on a 429 only, say the limit is the account's (a monthly cap, billing,
/// payment). A 400 about the request itself may use them ("a monthly planner", "billing page").
const ACCOUNT_LIMIT_WORDS_ON_429: [&str; 4] = ["spend", "monthly", "billing", "payment"];

/// Whether an error's detail names a limit of the account rather than of the request (or, for a
/// 429, of the request rate).
fn names_an_account_limit(status: u16, detail: &str) -> bool {
    let detail = detail.to_ascii_lowercase();
    ACCOUNT_LIMIT_PHRASES.iter().any(|phrase| detail.contains(phrase))
        || (status == 429
            && ACCOUNT_LIMIT_WORDS_ON_429
                .iter()
                .any(|word| detail.contains(word)))
}

/// The `detail` of an error body: a string, a pydantic list rendered readably, or the raw text cut short.
pub(crate) fn detail_of(body: &str) -> String {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(body) {
        match value.get("detail") {
            Some(serde_json::Value::String(text)) => return shorten(text),
            Some(serde_json::Value::Array(items)) => {
                let parts: Vec<String> = items
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
                    .collect();
                return shorten(&parts.join("; "));
            }
            Some(other) => return shorten(&other.to_string()),
            None => {}
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
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

/// `Retry-After` (seconds or an HTTP date) or `retry-after-ms`, as a wait from now.
///
/// A date in the past is a wait of zero; a value too large for a `Duration` is `Duration::MAX`
/// (the caller clamps both to what it will honour). An HTTP date names a whole second, so the wait
/// until it is rounded up to a whole second: never shorter than the upstream meant. A negative or
/// unreadable value is no value.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        if let Some(wait) = seconds(ms / 1000.0) {
            return Some(wait);
        }
    }
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(value) = value.parse::<f64>() {
        return seconds(value);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let wait = at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Some(if wait.subsec_nanos() == 0 {
        wait
    } else {
        Duration::from_secs(wait.as_secs().saturating_add(1))
    })
}

/// A non-negative number of seconds as a `Duration`, saturating at `Duration::MAX`.
fn seconds(value: f64) -> Option<Duration> {
    if value.is_nan() || value < 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(value).unwrap_or(Duration::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, detail: &str) -> Error {
        Error::Status {
            operation: "create",
            status,
            detail: detail.into(),
            retry_after: Some(Duration::from_secs(1)),
        }
    }

    #[test]
    fn a_429_naming_a_quota_usage_spend_or_billing_limit_is_a_refusal_not_a_rate_limit() {
        for detail in [
            "Monthly usage limit exceeded. Upgrade your plan or wait until next month.",
            "You have exceeded your monthly spend limit",
            "Quota exceeded for this account",
            "Usage cap reached",
            "Billing limit reached; contact sales",
            "Insufficient credits",
        ] {
            let error = status(429, detail);
            assert!(error.is_refusal(), "{detail}");
            assert_eq!(error.class(), ErrorClass::Permanent { status: 429 }, "{detail}");
        }
    }

    #[test]
    fn a_429_about_the_request_rate_or_concurrency_is_still_a_rate_limit() {
        for detail in [
            "Too many requests",
            "Rate limit exceeded: 80 requests per minute",
            "Too many concurrent generations; wait for one to finish",
            "",
        ] {
            let error = status(429, detail);
            assert!(!error.is_refusal(), "{detail}");
            assert!(
                matches!(error.class(), ErrorClass::RateLimited { .. }),
                "{detail}"
            );
        }
    }

    #[test]
    fn payment_required_forbidden_and_quota_400s_are_refusals_and_other_400s_are_not() {
        assert!(status(402, "Payment required").is_refusal());
        assert!(status(403, "Monthly usage limit exceeded").is_refusal());
        assert!(status(400, "Monthly usage limit exceeded").is_refusal());
        assert!(status(400, "Insufficient credits").is_refusal());
        assert!(!status(400, "Prompt is too short, minimum length is 3 characters").is_refusal());
        // A 400 about the request may use the looser words; only a 429 reads them as the account's.
        assert!(!status(400, "Unsupported option for model: monthly billing layout").is_refusal());
        assert!(status(429, "Monthly spend cap reached").is_refusal());
        assert!(!status(422, "body.aspect_ratio: Input should be '1:1'").is_refusal());
    }

    fn headers(name: &str, value: &str) -> reqwest::header::HeaderMap {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            reqwest::header::HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn retry_after_reads_seconds_milliseconds_and_dates_and_never_panics_on_absurd_values() {
        assert_eq!(
            retry_after(&headers("retry-after", "10")),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            retry_after(&headers("retry-after-ms", "1500")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(retry_after(&headers("retry-after", "1e300")), Some(Duration::MAX));
        assert_eq!(
            retry_after(&headers("retry-after-ms", "1e300")),
            Some(Duration::MAX)
        );
        assert_eq!(retry_after(&headers("retry-after", "-5")), None);
        assert_eq!(retry_after(&headers("retry-after", "soon")), None);
        // A date in the past is no wait at all (the gate applies its own floor).
        assert_eq!(
            retry_after(&headers("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        // A date names a whole second: the wait is rounded up, never cut short.
        let at = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(10));
        let wait = retry_after(&headers("retry-after", &at)).unwrap();
        assert!(
            wait >= Duration::from_secs(9) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        assert_eq!(wait.subsec_nanos(), 0);
    }
}
