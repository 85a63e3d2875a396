//! Callbacks instead of polling: the upstream POSTs a generation to the `callback_url` of its create
//! when it starts and when it ends. Each create gets its own URL, `URL/TOKEN`, with a random
//! 128-bit token bound to that create, so a callback is matched to its generation without reading
//! its body, and one with an unknown token (forged, or from an earlier run) is refused with 403.
//!
//! A callback is a hint, never the truth: it only asks the poller to read the generation now
//! (a GET), and the engine acts on what that read says. Callbacks are unsigned and Luma retries a
//! failed delivery only 3 times, 100 ms apart, so some are lost: with callbacks on, the poller still
//! reads every generation, slowly, as a safety net ([`SAFETY_FIRST_READ`], then backing off to
//! [`SAFETY_MAX_INTERVAL`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::Router;
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
    counts: Counters,
}

#[derive(Debug, Clone)]
enum Route {
    /// The create is on its way; its generation's id is not known yet.
    Sent,
    /// The create was answered with this generation.
    Generation(String),
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    refused: AtomicU64,
    nudges: AtomicU64,
}

/// What the receiver has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CallbackCounts {
    /// Callbacks with a known token.
    pub received: u64,
    /// Callbacks refused with 403: unknown or forged tokens.
    pub refused: u64,
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
            nudges: c.nudges.load(Ordering::Relaxed),
        }
    }

    /// A new token for one create, and the `callback_url` to send with it.
    pub fn new_token(&self) -> (String, String) {
        use rand::RngCore;
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.routes().insert(token.clone(), Route::Sent);
        let url = format!("{}/{token}", self.inner.url);
        (token, url)
    }

    /// The create sent with `token` was answered (or adopted) with this generation.
    pub fn bind_generation(&self, token: &str, upstream_id: &str) {
        self.routes()
            .insert(token.to_string(), Route::Generation(upstream_id.to_string()));
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
    counts.received.fetch_add(1, Ordering::Relaxed);
    // The body is unsigned: it may only say whether a read is worth making now. A generation that
    // just started dreaming needs none; anything else (or a body we can't read) gets one.
    let hint: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let state = hint
        .as_ref()
        .and_then(|v| v.get("state"))
        .and_then(|s| s.as_str());
    if matches!(state, Some("queued" | "dreaming")) {
        return StatusCode::OK;
    }
    let id = match route {
        Route::Generation(id) => Some(id),
        // Our create's answer is still on its way: the body's id is only a hint, and the poller
        // reads only generations this run created, so a wrong one costs one read at most.
        Route::Sent => hint
            .as_ref()
            .and_then(|v| v.get("id"))
            .and_then(|id| id.as_str())
            .map(str::to_string),
    };
    if let Some(id) = id {
        counts.nudges.fetch_add(1, Ordering::Relaxed);
        poller.nudge(&id);
    }
    StatusCode::OK
}
