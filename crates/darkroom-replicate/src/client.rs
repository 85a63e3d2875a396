//! The HTTP client: one method per endpoint, each with a timeout, each returning a classified error.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use reqwest::{header, Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::{detail_of, retry_after, shorten, Error, SetupError};
use crate::webhook::WebhookSecret;
use crate::wire::{CreateBody, Prediction, PredictionList};

/// Tokens shorter than this are not taken out of error messages: no real token is that short,
/// and taking out a letter or two would turn Replicate's words to mush.
const MIN_REDACTED_TOKEN: usize = 8;

/// The API token (`REPLICATE_API_TOKEN`, as Replicate's own clients read it). It never prints:
/// Debug and Display redact it, and it has no Serialize.
#[derive(Clone)]
pub struct ApiToken(String);

impl ApiToken {
    /// The token as read from `REPLICATE_API_TOKEN` (trimmed by the caller).
    pub fn new(token: String) -> ApiToken {
        ApiToken(token)
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl fmt::Display for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How to reach Replicate. [`ClientConfig::new`] fills in the default timeouts and user agent;
/// change the fields afterwards where a caller needs others.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// e.g. `https://api.replicate.com/v1`; a trailing slash is fine.
    pub base_url: String,
    /// Sent as `Authorization: Bearer` to the API's origin only.
    pub api_token: ApiToken,
    /// Time to open a connection (both to the API and to an output's host).
    pub connect_timeout: Duration,
    /// Whole-request timeout for API calls.
    pub request_timeout: Duration,
    /// Whole-request timeout for an output download.
    pub download_timeout: Duration,
    /// The `User-Agent` header of every request.
    pub user_agent: String,
}

impl ClientConfig {
    /// The default connect timeout: 10 s.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default timeout of an API call: 60 s.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
    /// The default timeout of an output download: 120 s.
    pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);

    /// The API at `base_url` with `api_token`, the default timeouts and `darkroom/VERSION` as the
    /// user agent.
    pub fn new(base_url: impl Into<String>, api_token: ApiToken) -> ClientConfig {
        ClientConfig {
            base_url: base_url.into(),
            api_token,
            connect_timeout: Self::CONNECT_TIMEOUT,
            request_timeout: Self::REQUEST_TIMEOUT,
            download_timeout: Self::DOWNLOAD_TIMEOUT,
            user_agent: format!("darkroom/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// A client for one account. Cheap to clone (the connection pools are shared).
#[derive(Debug, Clone)]
pub(crate) struct Client {
    api: reqwest::Client,
    assets: reqwest::Client,
    base_url: String,
    origin: String,
    token: ApiToken,
}

impl Client {
    pub(crate) fn new(config: ClientConfig) -> Result<Client, SetupError> {
        let base_url = config.base_url.trim_end_matches('/').to_string();
        let parsed =
            reqwest::Url::parse(&base_url).map_err(|e| SetupError(format!("base URL {base_url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(SetupError(format!("base URL {base_url:?} is not an http(s) URL")));
        }
        let origin = parsed.origin().ascii_serialization();
        let build = |timeout: Duration| {
            reqwest::Client::builder()
                .connect_timeout(config.connect_timeout)
                .timeout(timeout)
                // Replicate's API answers with no redirect worth following; a redirect must not
                // carry the token to another host.
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(64)
                .user_agent(config.user_agent.clone())
                .build()
                .map_err(|e| SetupError(e.to_string()))
        };
        // Two pools: API calls carry the token; output downloads (a CDN host) never do.
        Ok(Client {
            api: build(config.request_timeout)?,
            assets: build(config.download_timeout)?,
            base_url,
            origin,
            token: config.api_token,
        })
    }

    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `POST /models/{owner}/{name}/predictions` (201), without `Prefer: wait`: the answer comes
    /// at once and the engine polls.
    pub(crate) async fn create(&self, model: &str, body: &CreateBody) -> Result<Prediction, Error> {
        let url = format!("{}/models/{model}/predictions", self.base_url);
        self.call("create", Method::POST, &url, Some(body)).await
    }

    /// `GET /predictions/{id}`.
    pub(crate) async fn get(&self, id: &str) -> Result<Prediction, Error> {
        let url = format!("{}/predictions/{id}", self.base_url);
        self.call::<_, ()>("get", Method::GET, &url, None).await
    }

    /// `GET /webhooks/default/secret`: the account's webhook signing secret (`{"key": "whsec_..."}`).
    pub(crate) async fn webhook_secret(&self) -> Result<WebhookSecret, Error> {
        #[derive(serde::Deserialize)]
        struct Secret {
            key: String,
        }
        let url = format!("{}/webhooks/default/secret", self.base_url);
        let secret: Secret = self
            .call::<_, ()>("webhook secret", Method::GET, &url, None)
            .await?;
        WebhookSecret::parse(&secret.key).map_err(|e| Error::BadAnswer {
            operation: "webhook secret",
            message: e.to_string(),
            is_create: false,
        })
    }

    /// `GET /predictions[?created_after=]`, or the `next` URL of an earlier page, which must be on
    /// the API's own origin (the token goes nowhere else).
    pub(crate) async fn list(
        &self,
        created_after: Option<&str>,
        next: Option<&str>,
    ) -> Result<PredictionList, Error> {
        let url = match next {
            Some(next) => {
                let same_origin = reqwest::Url::parse(next)
                    .is_ok_and(|url| url.origin().ascii_serialization() == self.origin);
                if !same_origin {
                    return Err(Error::Refused {
                        operation: "list",
                        message: format!("the next page {:?} is not on {}", shorten(next), self.origin),
                    });
                }
                next.to_string()
            }
            None => match created_after {
                Some(at) => format!("{}/predictions?created_after={at}", self.base_url),
                None => format!("{}/predictions", self.base_url),
            },
        };
        self.call::<_, ()>("list", Method::GET, &url, None).await
    }

    /// Downloads an output, without the token, checking the length received against the length
    /// announced and refusing more than `max_bytes`.
    pub(crate) async fn download(&self, url: &str, max_bytes: u64) -> Result<Bytes, Error> {
        let fail = |message: String, status: Option<u16>| Error::Download { message, status };
        let parsed = reqwest::Url::parse(url).map_err(|e| fail(format!("bad URL: {e}"), None))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(fail(format!("refusing a {} URL", parsed.scheme()), None));
        }
        let mut response = self
            .assets
            .get(parsed)
            .send()
            .await
            .map_err(|e| fail(describe(&e), None))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!("HTTP {}", status.as_u16()), Some(status.as_u16())));
        }
        let announced = response.content_length();
        let too_large = || fail(format!("the image is larger than {max_bytes} bytes"), None);
        if announced.is_some_and(|n| n > max_bytes) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if (body.len() + chunk.len()) as u64 > max_bytes => return Err(too_large()),
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    let message = format!("cut short after {} bytes: {}", body.len(), describe(&e));
                    return Err(fail(message, None));
                }
            }
        }
        if let Some(announced) = announced.filter(|n| body.len() as u64 != *n) {
            return Err(fail(format!("got {} of {announced} bytes", body.len()), None));
        }
        Ok(Bytes::from(body))
    }

    async fn call<T: DeserializeOwned, B: serde::Serialize>(
        &self,
        operation: &'static str,
        method: Method,
        url: &str,
        body: Option<&B>,
    ) -> Result<T, Error> {
        let is_create = operation == "create";
        let mut request = self
            .api
            .request(method, url)
            .header(header::AUTHORIZATION, self.token.bearer())
            .header(header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                Error::NeverSent {
                    operation,
                    origin: self.origin.clone(),
                    message: describe(&e),
                }
            } else {
                Error::NoAnswer {
                    operation,
                    message: describe(&e),
                    is_create,
                }
            }
        })?;
        let text = self.checked_text(operation, response).await?;
        serde_json::from_str(&text).map_err(|e| Error::BadAnswer {
            operation,
            message: format!("{e} in {}", shorten(&text)),
            is_create,
        })
    }

    /// The body of a successful answer, or the error its status says, with the token scrubbed
    /// from the detail (a proxy may echo the request back).
    async fn checked_text(
        &self,
        operation: &'static str,
        response: reqwest::Response,
    ) -> Result<String, Error> {
        let status = response.status();
        let headers = response.headers().clone();
        let is_create = operation == "create";
        let text = response.text().await.map_err(|e| Error::NoAnswer {
            operation,
            message: describe(&e),
            is_create,
        })?;
        if status.is_success() {
            return Ok(text);
        }
        let detail = if status == StatusCode::TOO_MANY_REQUESTS && text.trim().is_empty() {
            "too many requests".to_string()
        } else {
            detail_of(&text)
        };
        let detail = if self.token.0.len() < MIN_REDACTED_TOKEN {
            detail
        } else {
            detail.replace(&self.token.0, "<redacted>")
        };
        let retry_after = (status == StatusCode::TOO_MANY_REQUESTS)
            .then(|| retry_after(&headers, &detail))
            .flatten();
        Err(Error::Status {
            operation,
            status: status.as_u16(),
            detail,
            retry_after,
        })
    }
}

/// A reqwest error as one line, with its causes, without the URL (which could carry a token).
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "connection failed".to_string()
    } else if error.is_body() || error.is_decode() {
        "the body was cut short".to_string()
    } else {
        "the connection failed".to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    shorten(&text)
}
