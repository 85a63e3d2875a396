//! The simulator and a client for it: one place that spells out a [`ClientConfig`] for tests.

use std::sync::Arc;
use std::time::Duration;

use darkroom_luma::{ApiKey, ClientConfig, LumaProvider};
use darkroom_provider::Provider;
use darkroom_sim::{SimConfig, SimHandle};

/// The key every test client sends. The simulator accepts any key; tests that check a key never
/// leaks look for this string.
pub const TEST_KEY: &str = "test-key-do-not-leak";

/// How long a test client waits for an API answer unless told otherwise: 10 s.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the simulator with `config` on a free loopback port.
///
/// # Panics
/// If it cannot bind or start.
pub async fn spawn(config: SimConfig) -> SimHandle {
    darkroom_sim::spawn(config)
        .await
        .expect("the simulator starts on a loopback port")
}

/// The client configuration for the simulator at `base_url`: [`TEST_KEY`], a 5 s connect
/// timeout, [`REQUEST_TIMEOUT`] per API call and 30 s per download, user agent `darkroom-tests`.
/// Change a field with struct update syntax where a test needs another value.
pub fn client_config(base_url: String) -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(5),
        request_timeout: REQUEST_TIMEOUT,
        download_timeout: Duration::from_secs(30),
        user_agent: "darkroom-tests".into(),
        ..ClientConfig::new(base_url, ApiKey::new(TEST_KEY.to_string()))
    }
}

/// The Luma provider for `sim`, as the engine holds it, with [`client_config`]'s settings and a `request_timeout` per API call.
///
/// # Panics
/// If the client cannot be built (no TLS backend, a malformed URL).
pub fn client(sim: &SimHandle, request_timeout: Duration) -> Arc<dyn Provider> {
    build(ClientConfig {
        request_timeout,
        ..client_config(sim.base_url())
    })
}

/// The Luma provider built from `config`, as the engine holds it.
///
/// # Panics
/// If the client cannot be built (no TLS backend, a malformed URL).
pub fn build(config: ClientConfig) -> Arc<dyn Provider> {
    Arc::new(LumaProvider::new(config).expect("a client for the simulator builds"))
}

/// Status reads `sim` has answered so far: single `GET`s of a generation and list calls.
pub fn status_reads(sim: &SimHandle) -> u64 {
    sim.stats()
        .requests
        .iter()
        .filter(|(k, _)| k.starts_with("GET /generations"))
        .map(|(_, n)| n)
        .sum()
}
