//! The HTTP client: one method per endpoint, each with a timeout, each returning a classified error.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use reqwest::{header, Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::{detail_of, retry_after, shorten, Error, SetupError};
use crate::wire::{CreateRequest, Credits, Generation, GenerationList, ReframeRequest};

/// Keys shorter than this are not taken out of error messages (see `check_status`): no real key
/// is that short, and taking out one or two letters would turn the upstream's words to mush.
const MIN_REDACTED_KEY: usize = 8;

/// The API key. It never prints: Debug and Display redact it, and it has no Serialize.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// The key as read from `LUMAAI_API_KEY` (trimmed by the caller).
    pub fn new(key: String) -> ApiKey {
        ApiKey(key)
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How to reach the API. [`ClientConfig::new`] fills in the default timeouts and user agent;
/// change the fields afterwards where a caller needs others.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// e.g. `https://api.lumalabs.ai/dream-machine/v1`; a trailing slash is fine.
    pub base_url: String,
    /// Sent as `Authorization: Bearer` to the API's origin only.
    pub api_key: ApiKey,
    /// Time to open a connection (both to the API and to an asset's host).
    pub connect_timeout: Duration,
    /// Whole-request timeout for API calls.
    pub request_timeout: Duration,
    /// Whole-request timeout for an asset download.
    pub download_timeout: Duration,
    /// The `User-Agent` header of every request.
    pub user_agent: String,
}

impl ClientConfig {
    /// The default connect timeout: 10 s.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default timeout of an API call: 60 s (a create may take a while to be answered).
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
    /// The default timeout of an asset download: 120 s.
    pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);

    /// The API at `base_url` with `api_key`, the default timeouts and `darkroom/VERSION` as the
    /// user agent.
    pub fn new(base_url: impl Into<String>, api_key: ApiKey) -> ClientConfig {
        ClientConfig {
            base_url: base_url.into(),
            api_key,
            connect_timeout: Self::CONNECT_TIMEOUT,
            request_timeout: Self::REQUEST_TIMEOUT,
            download_timeout: Self::DOWNLOAD_TIMEOUT,
            user_agent: format!("darkroom/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// A client for one account. Cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub(crate) struct Client {
    api: reqwest::Client,
    assets: reqwest::Client,
    base_url: String,
    origin: String,
    key: ApiKey,
    download_timeout: Duration,
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
                .pool_max_idle_per_host(64)
                .user_agent(config.user_agent.clone())
                .build()
                .map_err(|e| SetupError(e.to_string()))
        };
        // Two pools: API calls carry the key; asset downloads (a CDN host) never do.
        let api = build(config.request_timeout)?;
        let assets = build(config.download_timeout)?;
        Ok(Client {
            api,
            assets,
            base_url,
            origin,
            key: config.api_key,
            download_timeout: config.download_timeout,
        })
    }

    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `POST /generations/image` (201).
    pub(crate) async fn create(&self, request: &CreateRequest) -> Result<Generation, Error> {
        self.call("create", Method::POST, "/generations/image", Some(request))
            .await
    }

    /// `POST /generations/image/reframe` (201).
    pub(crate) async fn reframe(&self, request: &ReframeRequest) -> Result<Generation, Error> {
        self.call(
            "reframe",
            Method::POST,
            "/generations/image/reframe",
            Some(request),
        )
        .await
    }

    /// `GET /generations/{id}`.
    pub(crate) async fn get(&self, id: &str) -> Result<Generation, Error> {
        self.call::<Generation, ()>("get", Method::GET, &format!("/generations/{id}"), None)
            .await
    }

    /// `GET /generations?limit=&offset=` (newest first).
    pub(crate) async fn list(&self, limit: u32, offset: u32) -> Result<GenerationList, Error> {
        self.call::<GenerationList, ()>(
            "list",
            Method::GET,
            &format!("/generations?limit={limit}&offset={offset}"),
            None,
        )
        .await
    }

    /// `GET /credits`.
    pub(crate) async fn credits(&self) -> Result<Credits, Error> {
        self.call::<Credits, ()>("credits", Method::GET, "/credits", None)
            .await
    }

    /// Downloads an asset, without the API key, checking the length received against the length
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
            .timeout(self.download_timeout)
            .send()
            .await
            .map_err(|e| fail(describe(&e), None))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!("HTTP {}", status.as_u16()), Some(status.as_u16())));
        }
        let announced = response.content_length();
        if announced.is_some_and(|n| n > max_bytes) {
            return Err(fail(format!("the image is larger than {max_bytes} bytes"), None));
        }
        let mut body =
            Vec::with_capacity(usize::try_from(announced.unwrap_or(0).min(max_bytes)).unwrap_or(0));
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if (body.len() + chunk.len()) as u64 > max_bytes {
                        return Err(fail(format!("the image is larger than {max_bytes} bytes"), None));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(fail(
                        format!("cut short after {} bytes: {}", body.len(), describe(&e)),
                        None,
                    ))
                }
            }
        }
        if let Some(announced) = announced {
            if body.len() as u64 != announced {
                return Err(fail(format!("got {} of {announced} bytes", body.len()), None));
            }
        }
        Ok(Bytes::from(body))
    }

    async fn call<T: DeserializeOwned, B: serde::Serialize>(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, Error> {
        let is_create = crate::error::is_paid(operation);
        let response = self.send(operation, method, path, body, is_create).await?;
        let text = check_status(operation, response, &self.key).await?;
        serde_json::from_str(&text).map_err(|e| Error::BadAnswer {
            operation,
            message: format!("{e} in {}", shorten(&text)),
            is_create,
        })
    }

    async fn send<B: serde::Serialize>(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<&B>,
        is_create: bool,
    ) -> Result<reqwest::Response, Error> {
        let mut request = self
            .api
            .request(method, format!("{}{path}", self.base_url))
            .header(header::AUTHORIZATION, self.key.bearer())
            .header(header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.map_err(|e| {
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
        })
    }
}

/// The body text of a successful answer, or the error its status says. A server that echoes the
/// request back (some proxies do) must not put the key into our error messages: it is scrubbed.
async fn check_status(
    operation: &'static str,
    response: reqwest::Response,
    key: &ApiKey,
) -> Result<String, Error> {
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let is_create = crate::error::is_paid(operation);
    let text = response.text().await.map_err(|e| Error::NoAnswer {
        operation,
        message: describe(&e),
        is_create,
    })?;
    if status.is_success() {
        return Ok(text);
    }
    let detail = if status == StatusCode::TOO_MANY_REQUESTS && text.is_empty() {
        "too many requests".into()
    } else {
        detail_of(&text)
    };
    // A key too short to be a real one would turn the upstream's words to mush ("e<redacted>ceeded"
    // for the key "x"); real keys are long, and those are always taken out.
    let detail = if key.0.len() < MIN_REDACTED_KEY {
        detail
    } else {
        detail.replace(&key.0, "<redacted>")
    };
    Err(Error::Status {
        operation,
        status: status.as_u16(),
        detail,
        retry_after,
    })
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
