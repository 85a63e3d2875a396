//! Settings, resolved once at the edge: the built-in defaults (`config/default.toml`, embedded) → a
//! user file (`--config` or `DARKROOM_CONFIG`) → `DARKROOM_*` variables → flags (applied by each
//! command). Unknown keys are errors. This is the only place that reads environment variables.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use darkroom_jobs::{AspectRatio, Money, PriceTable, Routing};
use darkroom_luma::ApiKey;
use serde::Deserialize;

use crate::exit::{Exit, Failure};

/// The built-in defaults, embedded so an installed binary works anywhere.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/default.toml");

/// Every environment variable darkroom reads, with what it means.
pub mod env {
    /// A config file layered over the built-in defaults.
    pub const CONFIG: &str = "DARKROOM_CONFIG";
    /// The default budget of a pass, in USD (`[budget] default`).
    pub const BUDGET: &str = "DARKROOM_BUDGET";
    /// Creates per minute (`[limits] creates_per_minute`).
    pub const RATE_PER_MINUTE: &str = "DARKROOM_RATE_PER_MINUTE";
    /// Generations in flight at once (`[limits] max_in_flight`).
    pub const MAX_IN_FLIGHT: &str = "DARKROOM_MAX_IN_FLIGHT";
    /// Seconds a create whose outcome is unknown is searched for before it is re-sent
    /// (`[retry] settle_window_seconds`).
    pub const SETTLE_WINDOW: &str = "DARKROOM_SETTLE_WINDOW_SECONDS";
    /// The aspect ratio of rows that leave it empty (`[defaults] aspect_ratio`).
    pub const DEFAULT_ASPECT_RATIO: &str = "DARKROOM_DEFAULT_ASPECT_RATIO";
    /// The ledger file (also `--db`), read by clap.
    pub const DB: &str = "DARKROOM_DB";
    /// The output directory (also `--out`), read by clap.
    pub const OUT: &str = "DARKROOM_OUT";
    /// The API key, as the official SDKs read it. Never printed or stored.
    pub const API_KEY: &str = "LUMAAI_API_KEY";
    /// The API's base URL, as the official SDKs read it (also `--base-url`), read by clap.
    pub const BASE_URL: &str = "LUMAAI_BASE_URL";
    /// The secret notifications are signed with.
    pub const NOTIFY_SECRET: &str = "DARKROOM_NOTIFY_SECRET";
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub prices: PriceTable,
    pub routing: Routing,
    pub limits: Limits,
    pub budget: Budget,
    pub defaults: Defaults,
    pub latency: Latency,
    pub retry: Retry,
    pub notify: NotifySettings,
    pub promote: PromoteSettings,
}

/// How a final uses its chosen preview.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteSettings {
    pub reference: darkroom_engine::promote::PreviewReference,
    pub weight: f64,
}

/// Where run notifications go (with any `--notify` URLs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    pub urls: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub creates_per_minute: u32,
    pub max_in_flight: u32,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub default: Money,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub aspect_ratio: AspectRatio,
}

/// Typical create-to-completed seconds per model.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    #[serde(rename = "photon-1")]
    pub photon_1: f64,
    #[serde(rename = "photon-flash-1")]
    pub photon_flash_1: f64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub max_attempts: u32,
    /// Seconds a create whose outcome is unknown is searched for before anything is re-sent.
    pub settle_window_seconds: u64,
}

/// Resolves the settings: defaults → user file → `DARKROOM_*` variables.
pub fn resolve(config_file: Option<&Path>) -> anyhow::Result<Settings> {
    let mut merged: toml::Table = DEFAULT_CONFIG
        .parse()
        .context("the built-in config/default.toml is broken")?;
    let user_file = config_file
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(env::CONFIG).map(PathBuf::from));
    if let Some(path) = user_file {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Failure::new(
                Exit::BadInput,
                format!("could not read the config file {}: {e}", path.display()),
            )
        })?;
        let user: toml::Table = text
            .parse()
            .map_err(|e| Failure::new(Exit::BadInput, format!("{}: {e}", path.display())))?;
        merge(&mut merged, user);
        // Checked here so a mistake is reported against the file that made it.
        parse(merged.clone())
            .map_err(|e| Failure::new(Exit::BadInput, format!("{}: {e}", path.display())))?;
    }
    let overrides = [
        (env::BUDGET, "budget", "default", Kind::Text),
        (
            env::RATE_PER_MINUTE,
            "limits",
            "creates_per_minute",
            Kind::Integer,
        ),
        (env::MAX_IN_FLIGHT, "limits", "max_in_flight", Kind::Integer),
        (
            env::SETTLE_WINDOW,
            "retry",
            "settle_window_seconds",
            Kind::Integer,
        ),
        (env::DEFAULT_ASPECT_RATIO, "defaults", "aspect_ratio", Kind::Text),
    ];
    for (variable, table, key, kind) in overrides {
        let Ok(value) = std::env::var(variable) else {
            continue;
        };
        let value = match kind {
            Kind::Text => toml::Value::String(value),
            Kind::Integer => toml::Value::Integer(value.trim().parse().map_err(|_| {
                Failure::new(
                    Exit::BadInput,
                    format!("{variable}={value:?} is not a whole number"),
                )
            })?),
        };
        if let Some(toml::Value::Table(section)) = merged.get_mut(table) {
            section.insert(key.to_string(), value);
        }
    }
    parse(merged)
        .map_err(|e| Failure::new(Exit::BadInput, format!("config from the environment: {e}")).into())
}

enum Kind {
    Text,
    Integer,
}

fn parse(table: toml::Table) -> Result<Settings, toml::de::Error> {
    toml::Value::Table(table).try_into()
}

/// Layers `over` onto `base`, table by table.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// The API key from `LUMAAI_API_KEY`, if set and not empty.
pub fn api_key() -> Option<ApiKey> {
    std::env::var(env::API_KEY)
        .ok()
        .filter(|k| !k.trim().is_empty())
        .map(|k| ApiKey::new(k.trim().to_string()))
}

/// The notification signing secret, if set.
pub fn notify_secret() -> Option<String> {
    std::env::var(env::NOTIFY_SECRET).ok().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_defaults_parse_with_the_published_prices_and_limits() {
        let settings = parse(DEFAULT_CONFIG.parse().unwrap()).unwrap();
        assert_eq!(settings.prices, PriceTable::default());
        assert_eq!(settings.routing, Routing::default());
        assert_eq!(
            (settings.limits.creates_per_minute, settings.limits.max_in_flight),
            (80, 40)
        );
        assert_eq!(settings.defaults.aspect_ratio, AspectRatio::Landscape16x9);
    }

    #[test]
    fn unknown_keys_and_imprecise_prices_are_errors() {
        let mut table: toml::Table = DEFAULT_CONFIG.parse().unwrap();
        merge(&mut table, "[limits]\ncreates_per_minit = 5".parse().unwrap());
        assert!(parse(table)
            .unwrap_err()
            .to_string()
            .contains("creates_per_minit"));
        let mut table: toml::Table = DEFAULT_CONFIG.parse().unwrap();
        merge(
            &mut table,
            "[prices]\n\"photon-1\" = \"0.0150001\"".parse().unwrap(),
        );
        assert!(parse(table).unwrap_err().to_string().contains("micro-dollar"));
    }
}
