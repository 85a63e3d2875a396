//! Errors from the upstream, classified by what the caller may safely do next.
//!
//! The class is the point: a create that was *never sent* may be sent again; one whose *outcome is
//! unknown* may have been accepted and charged, and must be reconciled first; *rate limited* says
//! slow down; *transient* (a failed read) may be read again; *permanent* won't get better by retrying.
//! No message here ever contains the API key, and a non-JSON body is cut short.

use std::time::Duration;

/// What the caller may do after an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request never reached the upstream (connection refused, DNS, connect timeout).
    NeverSent,
    /// A create may or may not have been accepted (timeout after sending, reset, 5xx, a 2xx we
    /// could not read): reconcile before sending it again.
    OutcomeUnknown,
    /// 429: slow down; `retry_after` when the upstream said how long.
    RateLimited { retry_after: Option<Duration> },
    /// A read (get, list, download) failed in a way that may pass: read again.
    Transient,
    /// 4xx other than 429: the same request will fail the same way.
    Permanent { status: u16 },
}

/// An error from the upstream or the way to it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    #[error("the client could not be built: {0}")]
    Setup(String),
}

impl Error {
    /// What the caller may safely do next.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::NeverSent { .. } | Error::Setup(_) => ErrorClass::NeverSent,
            Error::NoAnswer { is_create: true, .. } | Error::BadAnswer { is_create: true, .. } => {
                ErrorClass::OutcomeUnknown
            }
            Error::NoAnswer { .. } | Error::BadAnswer { .. } => ErrorClass::Transient,
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

    /// The HTTP status, when the upstream answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            Error::Download { status, .. } => *status,
            _ => None,
        }
    }

    /// Whether the upstream refused the account itself (bad key, no credits, forbidden): no other
    /// request will succeed either, so the run should stop.
    pub fn is_refusal(&self) -> bool {
        match self {
            Error::Status {
                status: 401..=403, ..
            } => true,
            Error::Status {
                status: 400, detail, ..
            } => {
                let detail = detail.to_ascii_lowercase();
                detail.contains("credit") || detail.contains("balance") || detail.contains("insufficient")
            }
            _ => false,
        }
    }

    /// 404: the generation (or asset) does not exist (any more).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
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

/// `Retry-After` (seconds or an HTTP date) or `retry-after-ms`.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}
