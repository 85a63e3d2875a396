//! `--provider fal`: fal.ai's queue API as the provider, with its key, hosts and per-megapixel
//! prices (`[fal.prices]`). The simulator (`--sim`) serves fal's API too, as an account of its own.

use std::sync::Arc;

use darkroom_fal::{FalConfig, FalKey, FalProvider};

use crate::config::env;
use crate::exit::{Exit, Failure};
use darkroom_provider::Provider;

/// The key from `FAL_KEY`, else `FAL_KEY_ID` and `FAL_KEY_SECRET`, as fal's clients read them.
pub(crate) fn key() -> Option<FalKey> {
    key_string().map(FalKey::new)
}

/// The key's text: `FAL_KEY`, else `FAL_KEY_ID:FAL_KEY_SECRET`, as fal's clients form it.
fn key_string() -> Option<String> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    match (var(env::FAL_KEY), var(env::FAL_KEY_ID), var(env::FAL_KEY_SECRET)) {
        (Some(key), _, _) => Some(key),
        (None, Some(id), Some(secret)) => Some(format!("{id}:{secret}")),
        _ => None,
    }
}

/// The key's text and the queue host it is used on (`DARKROOM_FAL_QUEUE_URL`, else fal's), for
/// naming the account runs share limits on (the key is only hashed there); `None` without a key.
pub fn key_text() -> Option<(String, String)> {
    let key = key_string()?;
    let queue_url = std::env::var(env::FAL_QUEUE_URL).unwrap_or_else(|_| FalConfig::QUEUE_URL.to_string());
    Some((key, queue_url))
}

/// fal's queue API as the provider: the simulator's fal account with `--sim` (`sim`), else fal's
/// hosts with the key from the environment, priced at `prices` (`[fal.prices]`). Exit 2 when no
/// key is set or a host is not a URL.
pub fn provider(
    sim: Option<&darkroom_sim::SimHandle>,
    prices: darkroom_fal::FalPrices,
) -> anyhow::Result<Arc<dyn Provider>> {
    let config = if let Some(sim) = sim {
        eprintln!("simulator: {}", sim.fal_queue_url());
        FalConfig {
            queue_url: sim.fal_queue_url(),
            api_url: sim.fal_api_url(),
            jwks_url: sim.fal_jwks_url(),
            ..FalConfig::new(FalKey::new("simulator".into()))
        }
    } else {
        let key = key().ok_or_else(|| {
            Failure::new(Exit::BadInput, "FAL_KEY is not set").with_hint(
                "export FAL_KEY=... (or FAL_KEY_ID and FAL_KEY_SECRET), or add --sim to run against the \
                 built-in simulator at no cost",
            )
        })?;
        let mut config = FalConfig::new(key);
        if let Ok(url) = std::env::var(env::FAL_QUEUE_URL) {
            config.queue_url = url;
        }
        if let Ok(url) = std::env::var(env::FAL_API_URL) {
            config.api_url = url;
        }
        if let Ok(url) = std::env::var(env::FAL_JWKS_URL) {
            config.jwks_url = url;
        }
        config
    };
    let provider = FalProvider::new(config).map_err(|e| {
        Failure::new(Exit::BadInput, e.to_string()).with_hint(
            "DARKROOM_FAL_QUEUE_URL, DARKROOM_FAL_API_URL and DARKROOM_FAL_JWKS_URL are fal's hosts, e.g. \
             https://queue.fal.run, https://api.fal.ai/v1 and https://rest.fal.ai/.well-known/jwks.json",
        )
    })?;
    Ok(Arc::new(provider.with_prices(prices)))
}

/// fal's queue host as a fal run reaches it without `--sim`: `DARKROOM_FAL_QUEUE_URL`, else
/// fal's own (the account observations are kept under).
pub fn queue_url() -> String {
    std::env::var(env::FAL_QUEUE_URL).unwrap_or_else(|_| FalConfig::new(FalKey::new(String::new())).queue_url)
}
