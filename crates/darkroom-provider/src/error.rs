//! Errors from a provider, classified by what the engine may safely do next.
//!
//! The class is the point: a create that was *never sent* may be sent again; one whose *outcome is
//! unknown* may have been accepted and charged, and must be reconciled first; *rate limited* says
//! slow down; *transient* (a failed read) may be read again; *permanent* won't get better by
//! retrying, and a *refusal* of the account (a rejected key, no credits, a quota or spend limit)
//! means no other request will succeed either. Each provider maps its own statuses and bodies onto
//! these; the message never carries a secret.

use std::time::Duration;

/// What the caller may do after an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request never reached the provider (connection refused, DNS, connect timeout).
    NeverSent,
    /// A create may or may not have been accepted (timeout after sending, reset, 5xx, a 2xx that
    /// could not be read): reconcile before sending it again.
    OutcomeUnknown,
    /// Slow down (HTTP 429); `retry_after` when the provider said how long (`Retry-After`).
    RateLimited {
        /// The wait the provider asked for, from when the answer came.
        retry_after: Option<Duration>,
    },
    /// A read (get, list, download) failed in a way that may pass: read again.
    Transient,
    /// The same request will fail the same way (a 4xx other than a rate limit, or a refusal).
    Permanent {
        /// The HTTP status the provider answered with.
        status: u16,
    },
}

/// Why the provider refused the account itself, not just one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The key was rejected or the account is forbidden (HTTP 401, 403).
    Credentials,
    /// The account can't pay: no credits, payment required, or over a quota, usage, spend or
    /// billing limit (HTTP 402, or a 400/429 whose detail says so). Waiting won't clear it.
    Quota,
}

/// An error from a provider or the way to it: a class to branch on and a one-line message.
///
/// `Display` is the message: `OPERATION: WHAT`, with the provider's own words where it gave any
/// (cut short, never holding the key).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    operation: &'static str,
    class: ErrorClass,
    status: Option<u16>,
    refusal: Option<Refusal>,
    detail: Option<String>,
    message: String,
}

impl ProviderError {
    /// An error of `class` from `operation` (`create`, `get`, `list`, `balance`, `download`...),
    /// shown as `message`.
    pub fn new(operation: &'static str, class: ErrorClass, message: impl Into<String>) -> ProviderError {
        ProviderError {
            operation,
            class,
            status: None,
            refusal: None,
            detail: None,
            message: message.into(),
        }
    }

    /// The HTTP status the provider answered with.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> ProviderError {
        self.status = Some(status);
        self
    }

    /// Marks the error as a refusal of the account.
    #[must_use]
    pub fn with_refusal(mut self, refusal: Refusal) -> ProviderError {
        self.refusal = Some(refusal);
        self
    }

    /// The provider's own words (its error body's detail), already cut short and free of secrets.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> ProviderError {
        self.detail = Some(detail.into());
        self
    }

    /// What the caller may safely do next.
    pub fn class(&self) -> ErrorClass {
        self.class.clone()
    }

    /// The operation that failed.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// The HTTP status, when the provider answered with one.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The provider's own words, when it gave any.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// Why the account was refused, when it was.
    pub fn refusal(&self) -> Option<Refusal> {
        self.refusal
    }

    /// Whether the provider refused the account itself: no other request will succeed either, so
    /// the run should stop.
    pub fn is_refusal(&self) -> bool {
        self.refusal.is_some()
    }

    /// 404: the generation (or asset) does not exist (any more).
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_shows_its_message_and_keeps_its_class_status_and_refusal() {
        let error = ProviderError::new(
            "create",
            ErrorClass::Permanent { status: 429 },
            "create: HTTP 429: quota",
        )
        .with_status(429)
        .with_refusal(Refusal::Quota)
        .with_detail("quota");
        assert_eq!(error.to_string(), "create: HTTP 429: quota");
        assert_eq!(error.class(), ErrorClass::Permanent { status: 429 });
        assert_eq!(error.status(), Some(429));
        assert_eq!(error.detail(), Some("quota"));
        assert!(error.is_refusal());
        assert!(!error.is_not_found());
    }

    #[test]
    fn only_a_404_is_not_found_and_only_a_marked_error_is_a_refusal() {
        let gone = ProviderError::new("get", ErrorClass::Permanent { status: 404 }, "get: HTTP 404")
            .with_status(404);
        assert!(gone.is_not_found());
        assert!(!gone.is_refusal());
        let rate = ProviderError::new(
            "create",
            ErrorClass::RateLimited {
                retry_after: Some(Duration::from_secs(3)),
            },
            "create: HTTP 429: too many requests",
        )
        .with_status(429);
        assert!(!rate.is_refusal());
        assert!(!rate.is_not_found());
    }
}
