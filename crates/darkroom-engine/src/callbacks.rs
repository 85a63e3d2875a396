//! Callbacks instead of polling: the upstream POSTs a generation to the `callback_url` of its create
//! when it starts and when it ends. Each create gets its own URL, `URL/TOKEN`, with a random
//! 128-bit token bound to that create, so a callback is matched to its generation without reading
//! its body, and one with an unknown token (forged, or from an earlier run) is refused with 403.
//!
//! A callback is a hint, never the truth: it only asks the poller to read the generation now
//! (a GET), and the engine acts on what that read says. Luma's callbacks are unsigned and Luma
//! retries a failed delivery only 3 times, 100 ms apart, so some are lost: with callbacks on, the
//! poller still reads every generation, slowly, as a safety net ([`SAFETY_FIRST_READ`], then
//! backing off to [`SAFETY_MAX_INTERVAL`]).
//!
//! Replicate and fal sign their deliveries (`webhook-*` HMAC headers; `X-Fal-Webhook-*` ED25519).
//! Each provider a run sends through is [registered](CallbackReceiver::register) with its poller
//! and the check of its signatures ([`darkroom_provider::DeliveryCheck`], its secret or keys
//! fetched then); a token made for a provider remembers it, and a delivery to that token that is
//! unsigned, badly signed or outside the provider's time tolerance (a replay) is refused with 401,
//! logged and counted, and asks for no read. A create on a provider never registered names no URL.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::Router;
use darkroom_provider::{Delivery, DeliveryCheck, Provider, ProviderError};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::poller::Poller;

/// With callbacks on, the first safety read of a generation comes no sooner than this (or four
/// times the model's usual latency, if longer)...
pub const SAFETY_FIRST_READ: Duration = Duration::from_secs(2);
/// ...and the reads after it back off to this interval.
pub const SAFETY_MAX_INTERVAL: Duration = Duration::from_secs(30);

/// The callback receiver: a listening socket, the URL the upstream is told, and the tokens of the
/// creates sent so far. Cheap to clone; clones share everything.
#[derive(Clone, Debug)]
pub struct CallbackReceiver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
    /// The base of every callback URL, without a trailing slash.
    url: String,
    routes: Mutex<HashMap<String, Route>>,
    /// Each registered provider's poller and signature check (`None`: unsigned deliveries).
    providers: Mutex<HashMap<&'static str, Registered>>,
    counts: Counters,
}

#[derive(Debug, Clone)]
struct Registered {
    poller: Poller,
    check: Option<Arc<dyn DeliveryCheck>>,
}

#[derive(Debug, Clone)]
struct Route {
    /// The provider the create went to, when it was made for one ([`CallbackReceiver::new_token_for`]).
    provider: Option<&'static str>,
    /// The generation the create was answered with; `None` while its answer is on its way.
    generation: Option<String>,
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    refused: AtomicU64,
    unverified: AtomicU64,
    nudges: AtomicU64,
}

/// What the receiver has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CallbackCounts {
    /// Callbacks with a known token.
    pub received: u64,
    /// Callbacks refused with 403: unknown or forged tokens.
    pub refused: u64,
    /// Deliveries to a known token refused with 401: unsigned, badly signed, or with a timestamp
    /// outside the provider's tolerance (a replay). Signed providers only.
    pub unverified: u64,
    /// Reads asked of the poller.
    pub nudges: u64,
}

impl CallbackReceiver {
    /// Listens on `listen` (port 0 picks one). The upstream is told `public_url` (where it reaches
    /// this socket: a public host or a tunnel), or `http://` + the bound address when `None`.
    pub fn bind(listen: SocketAddr, public_url: Option<&str>) -> std::io::Result<CallbackReceiver> {
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let url = public_url.map_or_else(
            || format!("http://{local_addr}"),
            |u| u.trim_end_matches('/').to_string(),
        );
        Ok(CallbackReceiver {
            inner: Arc::new(Inner {
                listener,
                local_addr,
                url,
                routes: Mutex::new(HashMap::new()),
                providers: Mutex::new(HashMap::new()),
                counts: Counters::default(),
            }),
        })
    }

    /// The address the receiver listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The base URL the upstream is told (each create adds `/TOKEN`).
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// What the receiver has seen so far: callbacks received and refused, reads asked for.
    pub fn counts(&self) -> CallbackCounts {
        let c = &self.inner.counts;
        CallbackCounts {
            received: c.received.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            unverified: c.unverified.load(Ordering::Relaxed),
            nudges: c.nudges.load(Ordering::Relaxed),
        }
    }

    /// A new token for one create, and the `callback_url` to send with it. Its deliveries are
    /// taken unsigned and nudge the poller given to [`CallbackReceiver::serve`].
    pub fn new_token(&self) -> (String, String) {
        self.token_with(None)
    }

    /// A new token for one create sent to `provider`, and its URL; `None` when that provider was
    /// not [registered](CallbackReceiver::register), so its deliveries could not be checked (the
    /// create then names no URL and is polled).
    pub fn new_token_for(&self, provider: &str) -> Option<(String, String)> {
        let name = self.providers().get_key_value(provider).map(|(name, _)| *name)?;
        Some(self.token_with(Some(name)))
    }

    fn token_with(&self, provider: Option<&'static str>) -> (String, String) {
        use rand::RngCore;
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let route = Route {
            provider,
            generation: None,
        };
        self.routes().insert(token.clone(), route);
        let url = format!("{}/{token}", self.inner.url);
        (token, url)
    }

    /// The create sent with `token` was answered (or adopted) with this generation.
    pub fn bind_generation(&self, token: &str, upstream_id: &str) {
        if let Some(route) = self.routes().get_mut(token) {
            route.generation = Some(upstream_id.to_string());
        }
    }

    /// Makes `provider`'s deliveries welcome: tokens made for it ([`CallbackReceiver::new_token_for`])
    /// nudge `poller`, and, when it signs them, are checked with its
    /// [`delivery_check`](Provider::delivery_check), fetched now (its secret or key set).
    ///
    /// # Errors
    /// The provider's error when its secret or keys could not be read; nothing is registered.
    pub async fn register(&self, provider: &dyn Provider, poller: Poller) -> Result<(), ProviderError> {
        let check = provider.delivery_check().await?;
        self.providers()
            .insert(provider.name(), Registered { poller, check });
        Ok(())
    }

    fn providers(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, Registered>> {
        self.inner
            .providers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Route>> {
        self.inner
            .routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Serves callbacks until `stop`, nudging `poller`. Each run serves on the same socket.
    pub fn serve(
        &self,
        poller: Poller,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::from_std(self.inner.listener.try_clone()?)?;
        let app = Router::new().fallback(receive).with_state((self.clone(), poller));
        tracker.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "the callback receiver stopped");
            }
        });
        Ok(())
    }
}

/// Any path whose last segment is a token we gave: proxies and tunnels may add a prefix.
async fn receive(
    State((receiver, poller)): State<(CallbackReceiver, Poller)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED;
    }
    let token = uri.path().rsplit('/').next().unwrap_or("");
    let route = receiver.routes().get(token).cloned();
    let counts = &receiver.inner.counts;
    let Some(route) = route else {
        counts.refused.fetch_add(1, Ordering::Relaxed);
        // The token may be a guess: log only enough of it to recognise a repeat.
        let shown: String = token.chars().take(6).collect();
        tracing::warn!(token = %shown, path_len = uri.path().len(), "refused a callback with an unknown token");
        return StatusCode::FORBIDDEN;
    };
    let registered = route
        .provider
        .and_then(|name| receiver.providers().get(name).cloned());
    if let Some(check) = registered.as_ref().and_then(|r| r.check.as_ref()) {
        let pairs: Vec<(String, String)> = headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
            .collect();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if let Err(why) = check.verify(&Delivery::new(&pairs, &body), now) {
            counts.unverified.fetch_add(1, Ordering::Relaxed);
            let provider = route.provider.unwrap_or_default();
            tracing::warn!(provider, %why, "refused a callback delivery that is not validly signed");
            return StatusCode::UNAUTHORIZED;
        }
    }
    counts.received.fetch_add(1, Ordering::Relaxed);
    let poller = registered.map_or(poller, |r| r.poller);
    if let Some(id) = hinted_id(route.generation, &body) {
        counts.nudges.fetch_add(1, Ordering::Relaxed);
        poller.nudge(&id);
    }
    StatusCode::OK
}

/// The generation a delivery asks to be read now, if any. The body may only say whether a read is
/// worth making: a generation that just started (Luma's `queued`/`dreaming`, Replicate's
/// `starting`/`processing`) needs none; anything else (or a body we can't read) gets one.
fn hinted_id(bound: Option<String>, body: &[u8]) -> Option<String> {
    let hint: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        hint.as_ref()
            .and_then(|v| v.get(name))
            .and_then(|s| s.as_str())
            .map(str::to_string)
    };
    let state = field("state").or_else(|| field("status"));
    if matches!(
        state.as_deref(),
        Some("queued" | "dreaming" | "starting" | "processing")
    ) {
        return None;
    }
    // Our create's answer may still be on its way: the body's id (fal's `request_id`) is only a
    // hint, and the poller reads only generations this run created, so a wrong one costs one
    // read at most.
    bound.or_else(|| field("id")).or_else(|| field("request_id"))
}
