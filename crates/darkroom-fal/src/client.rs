//! The HTTP client: one method per fal call, each with a timeout, each returning a classified
//! error. The key goes to fal's queue and API hosts only, never with a download.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use reqwest::{header, Method};
use serde::de::DeserializeOwned;

use crate::error::{detail_of, retry_after, shorten, Error, SetupError};
use crate::wire::{AccountBilling, Input, Output, RequestPage, Status, Submitted};

/// Keys shorter than this are not taken out of error messages: no real key is that short.
const MIN_REDACTED_KEY: usize = 8;

/// The owner/app every Photon endpoint's request paths use (`fal-ai/luma-photon`, flash too).
pub(crate) const APP: &str = "fal-ai/luma-photon";

/// A fal key (`FAL_KEY`, or `FAL_KEY_ID:FAL_KEY_SECRET`), sent as `Authorization: Key ...`.
/// It never prints: Debug and Display redact it, and it has no Serialize.
#[derive(Clone)]
pub struct FalKey(String);

impl FalKey {
    /// The key as `FAL_KEY` holds it (trimmed by the caller).
    pub fn new(key: String) -> FalKey {
        FalKey(key)
    }

    /// The key the official clients make from `FAL_KEY_ID` and `FAL_KEY_SECRET`: `id:secret`.
    pub fn from_id_and_secret(id: &str, secret: &str) -> FalKey {
        FalKey(format!("{id}:{secret}"))
    }

    fn header(&self) -> String {
        format!("Key {}", self.0)
    }
}

impl fmt::Debug for FalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FalKey(<redacted>)")
    }
}

impl fmt::Display for FalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How to reach fal. [`FalConfig::new`] fills in fal's hosts, the default timeouts and the user
/// agent; change the fields afterwards where a caller needs others (the simulator's hosts).
#[derive(Debug, Clone)]
pub struct FalConfig {
    /// The queue host, e.g. `https://queue.fal.run` (submit, status, result).
    pub queue_url: String,
    /// The platform API, e.g. `https://api.fal.ai/v1` (the request list, billing).
    pub api_url: String,
    /// Where fal publishes the keys its webhook deliveries are signed with (a JWKS), e.g.
    /// `https://rest.fal.ai/.well-known/jwks.json`; fetched without the key.
    pub jwks_url: String,
    /// Sent as `Authorization: Key` to the two hosts above only.
    pub key: FalKey,
    /// Time to open a connection (to fal and to an image's host).
    pub connect_timeout: Duration,
    /// Whole-request timeout for calls to fal.
    pub request_timeout: Duration,
    /// Whole-request timeout for an image download.
    pub download_timeout: Duration,
    /// The `User-Agent` header of every request.
    pub user_agent: String,
}

impl FalConfig {
    /// fal's queue host.
    pub const QUEUE_URL: &'static str = "https://queue.fal.run";
    /// fal's platform API.
    pub const API_URL: &'static str = "https://api.fal.ai/v1";
    /// The default connect timeout: 10 s.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default timeout of a call: 60 s (a submit only queues; reads are quick).
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
    /// The default timeout of an image download: 120 s.
    pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);

    /// fal's hosts with `key`, the default timeouts and `darkroom/VERSION` as the user agent.
    pub fn new(key: FalKey) -> FalConfig {
        FalConfig {
            queue_url: Self::QUEUE_URL.into(),
            api_url: Self::API_URL.into(),
            jwks_url: crate::webhook::JWKS_URL.into(),
            key,
            connect_timeout: Self::CONNECT_TIMEOUT,
            request_timeout: Self::REQUEST_TIMEOUT,
            download_timeout: Self::DOWNLOAD_TIMEOUT,
            user_agent: format!("darkroom/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// A client for one fal account. Cheap to clone (the connection pools are shared).
#[derive(Debug, Clone)]
pub(crate) struct Client {
    api: reqwest::Client,
    assets: reqwest::Client,
    queue_url: String,
    api_url: String,
    jwks_url: String,
    request_timeout: Duration,
    key: FalKey,
}

/// `url` without a trailing slash, checked to be an `http(s)` URL with a host.
fn checked_base(url: &str) -> Result<String, SetupError> {
    let base = url.trim_end_matches('/').to_string();
    let parsed = reqwest::Url::parse(&base).map_err(|e| SetupError(format!("base URL {base:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(SetupError(format!("base URL {base:?} is not an http(s) URL")));
    }
    Ok(base)
}

impl Client {
    pub(crate) fn new(config: FalConfig) -> Result<Client, SetupError> {
        let queue_url = checked_base(&config.queue_url)?;
        let api_url = checked_base(&config.api_url)?;
        let jwks_url = checked_base(&config.jwks_url)?;
        let build = |timeout: Duration| {
            reqwest::Client::builder()
                .connect_timeout(config.connect_timeout)
                .timeout(timeout)
                .pool_max_idle_per_host(64)
                .user_agent(config.user_agent.clone())
                .build()
                .map_err(|e| SetupError(e.to_string()))
        };
        // Two pools: calls to fal carry the key; image downloads (a CDN host) never do.
        Ok(Client {
            api: build(config.request_timeout)?,
            assets: build(config.download_timeout)?,
            queue_url,
            api_url,
            jwks_url,
            request_timeout: config.request_timeout,
            key: config.key,
        })
    }

    /// fal's webhook keys, fetched from [`FalConfig::jwks_url`] (without the key).
    pub(crate) async fn webhook_keys(
        &self,
    ) -> Result<crate::webhook::WebhookVerifier, crate::webhook::WebhookError> {
        crate::webhook::WebhookVerifier::fetch(&self.jwks_url, self.request_timeout).await
    }

    pub(crate) fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// `POST {queue}/{endpoint}[?fal_webhook=URL]` with the input as the body.
    pub(crate) async fn submit(
        &self,
        endpoint: &str,
        input: &Input,
        webhook: Option<&str>,
    ) -> Result<Submitted, Error> {
        let mut url =
            reqwest::Url::parse(&format!("{}/{endpoint}", self.queue_url)).map_err(|e| Error::BadAnswer {
                operation: "create",
                message: format!("bad endpoint {endpoint:?}: {e}"),
            })?;
        if let Some(webhook) = webhook {
            url.query_pairs_mut().append_pair("fal_webhook", webhook);
        }
        let (body, _) = self.call("create", Method::POST, url, Some(input)).await?;
        parse("create", &body)
    }

    /// `GET {queue}/fal-ai/luma-photon/requests/{id}/status`.
    pub(crate) async fn status(&self, id: &str) -> Result<Status, Error> {
        let url = self.url("get", &format!("{}/{APP}/requests/{id}/status", self.queue_url))?;
        let (body, _) = self.call::<()>("get", Method::GET, url, None).await?;
        parse("get", &body)
    }

    /// `GET {queue}/fal-ai/luma-photon/requests/{id}`: the output, and the billed units
    /// (`x-fal-billable-units`) when fal sent them.
    pub(crate) async fn result(&self, id: &str) -> Result<(Output, Option<String>), Error> {
        let url = self.url("get", &format!("{}/{APP}/requests/{id}", self.queue_url))?;
        let (body, units) = self.call::<()>("get", Method::GET, url, None).await?;
        Ok((parse("get", &body)?, units))
    }

    /// `GET {api}/models/requests/by-endpoint?endpoint_id=&expand=payloads&limit=[&start=][&cursor=]`.
    pub(crate) async fn list(
        &self,
        endpoint: &str,
        start: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<RequestPage, Error> {
        let mut url = self.url("list", &format!("{}/models/requests/by-endpoint", self.api_url))?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("endpoint_id", endpoint)
                .append_pair("expand", "payloads")
                .append_pair("limit", &limit.to_string());
            if let Some(start) = start {
                query.append_pair("start", start);
            }
            if let Some(cursor) = cursor {
                query.append_pair("cursor", cursor);
            }
        }
        let (body, _) = self.call::<()>("list", Method::GET, url, None).await?;
        parse("list", &body)
    }

    /// `GET {api}/account/billing?expand=credits`.
    pub(crate) async fn billing(&self) -> Result<AccountBilling, Error> {
        let url = self.url(
            "balance",
            &format!("{}/account/billing?expand=credits", self.api_url),
        )?;
        let (body, _) = self.call::<()>("balance", Method::GET, url, None).await?;
        parse("balance", &body)
    }

    /// Downloads an image without the key, checking the length received against the length
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

    fn url(&self, operation: &'static str, text: &str) -> Result<reqwest::Url, Error> {
        reqwest::Url::parse(text).map_err(|e| Error::BadAnswer {
            operation,
            message: format!("bad URL: {e}"),
        })
    }

    /// Sends one call; the body text of a 2xx answer and its `x-fal-billable-units`, or the error
    /// its status says (with the key scrubbed from fal's words, should a proxy echo it).
    async fn call<B: serde::Serialize>(
        &self,
        operation: &'static str,
        method: Method,
        url: reqwest::Url,
        body: Option<&B>,
    ) -> Result<(String, Option<String>), Error> {
        let origin = url.origin().ascii_serialization();
        let mut request = self
            .api
            .request(method, url)
            .header(header::AUTHORIZATION, self.key.header())
            .header(header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                Error::NeverSent {
                    operation,
                    origin,
                    message: describe(&e),
                }
            } else {
                Error::NoAnswer {
                    operation,
                    message: describe(&e),
                }
            }
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.map_err(|e| Error::NoAnswer {
            operation,
            message: describe(&e),
        })?;
        if status.is_success() {
            let units = headers
                .get("x-fal-billable-units")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            return Ok((text, units));
        }
        let mut detail = detail_of(&text);
        if self.key.0.len() >= MIN_REDACTED_KEY {
            detail = detail.replace(&self.key.0, "<redacted>");
        }
        Err(Error::Status {
            operation,
            status: status.as_u16(),
            detail,
            retry_after: retry_after(&headers),
        })
    }
}

fn parse<T: DeserializeOwned>(operation: &'static str, text: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|e| Error::BadAnswer {
        operation,
        message: format!("{e} in {}", shorten(text)),
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
