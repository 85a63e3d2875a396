//! darkroom-sim: a Luma-compatible server for tests, demos, benchmarks and zero-cost dry runs.
//!
//! It serves Luma's image API under `/dream-machine/v1` with the documented shapes, limits (creates
//! per minute, concurrent generations), billing (charged at create, refunded on failure) and failure
//! modes, plus real images and `/sim/billing` and `/sim/stats` to reconcile against. It defines its own
//! wire types and shares none with `darkroom-luma`, so a mistake can't hide on both sides.
//!
//! It also serves fal.ai's queue API for Photon under `/fal` (`api/fal.rs`), as a second account
//! with its own credit and bill (`/sim/fal/billing`), priced per megapixel, with the same fault
//! profile; `SimHandle::fal_queue_url` and `SimHandle::fal_api_url` are its two hosts.
//!
//! Connections are served by our own accept loop so a fault can drop one mid-request: "accepted and
//! charged, then the connection dropped" is a real reset to the client, not an HTTP error.

#![warn(missing_docs, unreachable_pub, clippy::too_many_lines)]

mod api;
mod callbacks;
mod config;
pub mod jpeg;
mod persist;
pub mod picture;
mod state;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use rand::SeedableRng;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Faults, RateLimitOnce, RateWindow, RefuseCreates, ReplicateSim, SimConfig};
pub use persist::StateError;
pub use state::{Billing, BillingEntry, Stats, MODERATION_REASONS, RETRYABLE_REASONS};

/// Mixed into the seed of the fal account's draws, so its faults are not the Luma side's.
const FAL_SEED: u64 = 0x00fa_1fa1;

/// A running simulator.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    sim: Arc<Sim>,
}

impl SimHandle {
    /// The loopback address served (the first port, which new image URLs name).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/dream-machine/v1`, for `LUMAAI_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}/dream-machine/v1", self.addr)
    }

    /// `http://127.0.0.1:PORT/replicate/v1`: the same account through Replicate's API.
    pub fn replicate_base_url(&self) -> String {
        format!("http://{}/replicate/v1", self.addr)
    }

    /// Every charge and refund so far.
    pub fn billing(&self) -> Billing {
        self.sim.billing()
    }

    /// Requests, 429s and faults counted since this simulator started (not kept in a state
    /// directory).
    pub fn stats(&self) -> Stats {
        self.sim.stats()
    }

    /// `http://127.0.0.1:PORT/fal/queue`: fal's queue host (`https://queue.fal.run`) here.
    pub fn fal_queue_url(&self) -> String {
        format!("http://{}/fal/queue", self.addr)
    }

    /// `http://127.0.0.1:PORT/fal/api/v1`: fal's platform API (`https://api.fal.ai/v1`) here.
    pub fn fal_api_url(&self) -> String {
        format!("http://{}/fal/api/v1", self.addr)
    }

    /// `http://127.0.0.1:PORT/fal/rest/.well-known/jwks.json`: the key the fal account signs its
    /// webhook deliveries with (fal's is `https://rest.fal.ai/.well-known/jwks.json`).
    pub fn fal_jwks_url(&self) -> String {
        format!("http://{}/fal/rest/.well-known/jwks.json", self.addr)
    }

    /// Every charge and refund of the fal account so far (also at `GET /sim/fal/billing`).
    pub fn fal_billing(&self) -> Billing {
        self.sim.fal_billing()
    }

    /// The fal account's requests, 429s and faults since this simulator started.
    pub fn fal_stats(&self) -> Stats {
        self.sim.fal().stats.clone()
    }

    /// Stops serving and waits for the server's tasks to end; with a state directory, the
    /// account is then saved one last time.
    pub async fn shutdown(self) {
        self.sim.stop.cancel();
        self.sim.tracker.close();
        self.sim.tracker.wait().await;
        self.sim.save_now();
    }
}

impl Drop for SimHandle {
    /// A handle dropped without `shutdown` (an early return, a panic) still leaves the account
    /// saved as it is.
    fn drop(&mut self) {
        self.sim.save_now();
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The port could not be listened on (taken, or not ours to take).
    #[error("could not listen on 127.0.0.1:{port}")]
    Bind {
        /// The port asked for.
        port: u16,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The state directory could not be used or its account read.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Starts the simulator on 127.0.0.1 (port 0 picks a free one). With `SimConfig::state_dir`, the
/// account saved there is loaded (or a new one opened) and kept there as it changes.
pub async fn spawn(config: SimConfig) -> Result<SimHandle, SimError> {
    let store = config
        .state_dir
        .as_deref()
        .map(persist::Store::open)
        .transpose()?;
    let saved = match &store {
        Some(store) => store.locked(|| store.read())?,
        None => None,
    };
    let fal_store = config
        .state_dir
        .as_deref()
        .map(|dir| persist::Store::open_file(dir, persist::FAL_ACCOUNT_FILE))
        .transpose()?;
    let fal_saved = match &fal_store {
        Some(store) => store.locked(|| store.read())?,
        None => None,
    };
    let saved_ports = saved.as_ref().map(|s| s.ports.clone()).unwrap_or_default();
    let (listener, addr) = listen(config.port, &saved_ports).await?;
    // The ports the account's earlier image URLs name, listened on again where free.
    let mut extra = Vec::new();
    if config.port == 0 {
        for port in saved_ports.iter().rev().filter(|p| **p != addr.port()) {
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", *port)).await {
                extra.push(listener);
            }
        }
    }
    let mut ports = vec![addr.port()];
    ports.extend(extra.iter().filter_map(|l| l.local_addr().ok()).map(|a| a.port()));
    let rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let mut account = state::Account::new(&config, rng);
    if let Some(saved) = &saved {
        persist::merge(&mut account, saved);
    }
    let mut fal = state::Account::new(&config, rand::rngs::StdRng::seed_from_u64(config.seed ^ FAL_SEED));
    if let Some(saved) = &fal_saved {
        persist::merge(&mut fal, saved);
    }
    let sim = Arc::new(Sim {
        account: Mutex::new(account),
        fal: Mutex::new(fal),
        images: Mutex::new(ImageCache::default()),
        http: reqwest::Client::new(),
        asset_base: OnceLock::new(),
        stop: CancellationToken::new(),
        tracker: TaskTracker::new(),
        changed: Notify::new(),
        ports,
        store,
        fal_store,
        config,
    });
    let _ = sim.asset_base.set(format!("http://{addr}/sim/assets"));
    sim.save_now();
    let app = api::router(sim.clone());
    for listener in std::iter::once(listener).chain(extra) {
        sim.tracker.spawn(serve(
            listener,
            app.clone(),
            sim.stop.clone(),
            sim.tracker.clone(),
        ));
    }
    if sim.store.is_some() {
        sim.tracker.spawn(keep_saved(sim.clone()));
    }
    Ok(SimHandle { addr, sim })
}

/// Binds `port`; with port 0, the account's most recent port first when it is free.
async fn listen(port: u16, saved_ports: &[u16]) -> Result<(TcpListener, SocketAddr), SimError> {
    let bind_error = |source| SimError::Bind { port, source };
    let mut listener = None;
    if port == 0 {
        if let Some(last) = saved_ports.last() {
            listener = TcpListener::bind(("127.0.0.1", *last)).await.ok();
        }
    }
    let listener = match listener {
        Some(listener) => listener,
        None => TcpListener::bind(("127.0.0.1", port)).await.map_err(bind_error)?,
    };
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, addr))
}

/// Saves the accounts whenever one changed, until the simulator stops (`shutdown` saves last).
async fn keep_saved(sim: Arc<Sim>) {
    let revisions = |sim: &Sim| (sim.lock().revision, sim.fal().revision);
    let mut saved_revision = revisions(&sim);
    loop {
        tokio::select! {
            () = sim.changed.notified() => {}
            () = sim.stop.cancelled() => return,
        }
        let revision = revisions(&sim);
        if revision == saved_revision {
            continue;
        }
        let saver = sim.clone();
        let _ = tokio::task::spawn_blocking(move || saver.save_now()).await;
        saved_revision = revision;
    }
}

/// Fired by a handler to drop its connection without answering.
#[derive(Debug, Clone)]
pub(crate) struct Kill(pub Arc<Notify>);

async fn serve(listener: TcpListener, app: axum::Router, stop: CancellationToken, tracker: TaskTracker) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let kill = Arc::new(Notify::new());
        let service = hyper_util::service::TowerToHyperService::new(
            app.clone().layer(axum::Extension(Kill(kill.clone()))),
        );
        let stop = stop.clone();
        tracker.spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = kill.notified() => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

/// The shared state behind the handlers.
pub(crate) struct Sim {
    pub config: SimConfig,
    account: Mutex<state::Account>,
    /// The fal.ai account (`api/fal.rs`): its own credit, billing and draws, kept beside the
    /// Luma account in a state directory (`fal-account.json`).
    fal: Mutex<state::Account>,
    images: Mutex<ImageCache>,
    pub http: reqwest::Client,
    asset_base: OnceLock<String>,
    pub stop: CancellationToken,
    pub tracker: TaskTracker,
    /// Woken after each request, so the account is saved when it changed.
    pub changed: Notify,
    /// The ports this simulator listens on, the first the one its new image URLs name.
    pub ports: Vec<u16>,
    store: Option<persist::Store>,
    /// Where the fal account is kept, with a state directory.
    fal_store: Option<persist::Store>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// The account's lock; never held across an await.
    pub(crate) fn lock(&self) -> MutexGuard<'_, state::Account> {
        self.account.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Saves the account to its state directory, if it has one; a failure is logged (the
    /// simulator goes on serving, as an account's bookkeeping is not the client's concern).
    pub(crate) fn save_now(&self) {
        if let Some(store) = &self.store {
            if let Err(error) = persist::save(store, self, false) {
                tracing::warn!(error = %error, "could not save the simulated account");
            }
        }
        if let Some(store) = &self.fal_store {
            if let Err(error) = persist::save(store, self, true) {
                tracing::warn!(error = %error, "could not save the simulated fal account");
            }
        }
    }

    /// The fal account's lock; never held across an await.
    pub(crate) fn fal(&self) -> MutexGuard<'_, state::Account> {
        self.fal.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn fal_billing(&self) -> Billing {
        let mut account = self.fal();
        account.settle(tokio::time::Instant::now());
        account.billing.clone()
    }

    pub(crate) fn asset_base(&self) -> String {
        self.asset_base.get().cloned().unwrap_or_default()
    }

    pub(crate) fn billing(&self) -> Billing {
        let mut account = self.lock();
        account.settle(tokio::time::Instant::now());
        account.billing.clone()
    }

    pub(crate) fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// The picture for a generation, rendered once on the blocking pool and kept (bounded): in
    /// `look` at its size for the aspect ratio, or for a reframe (`source_aspect`: its source's
    /// aspect ratio) the source picture inside the new canvas.
    pub(crate) async fn image(
        &self,
        seed: [u8; 32],
        look: picture::Look,
        aspect_ratio: &str,
        source_aspect: Option<&str>,
        png: bool,
    ) -> Bytes {
        let key = (
            seed,
            png,
            format!("{aspect_ratio}<{}", source_aspect.unwrap_or("")),
            look,
        );
        if let Some(bytes) = self.images.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return bytes;
        }
        let aspect = aspect_ratio.to_string();
        let source = source_aspect.map(str::to_string);
        let bytes = tokio::task::spawn_blocking(move || {
            Bytes::from(match source {
                Some(source) => {
                    let (width, height) = picture::size_for(&aspect);
                    let frame = picture::frame_for(picture::size_for(&source), (width, height));
                    picture::render_framed(seed, width, height, Some(frame), png)
                }
                None => picture::render_look(seed, look, &aspect, png),
            })
        })
        .await
        .unwrap_or_default();
        self.images.lock().unwrap_or_else(|e| e.into_inner()).put(
            key,
            bytes.clone(),
            self.config.image_cache,
        );
        bytes
    }
}

type ImageKey = ([u8; 32], bool, String, picture::Look);

#[derive(Default)]
struct ImageCache {
    map: HashMap<ImageKey, Bytes>,
    order: VecDeque<ImageKey>,
}

impl ImageCache {
    fn get(&self, key: &ImageKey) -> Option<Bytes> {
        self.map.get(key).cloned()
    }

    fn put(&mut self, key: ImageKey, bytes: Bytes, capacity: usize) {
        if self.map.insert(key.clone(), bytes).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > capacity.max(1) {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}
