//! Settings, resolved once at the edge: the built-in defaults (`config/default.toml`, embedded) → a
//! user file (`--config` or `DARKROOM_CONFIG`) → `DARKROOM_*` variables → flags (applied by each
//! command). Unknown keys are errors. This is the only place that reads environment variables.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use darkroom_jobs::{AspectRatio, Money, PriceTable, Routing};
use darkroom_luma::ApiKey;
use serde::Deserialize;

use crate::exit::{Exit, Failure};

mod qc;
pub use qc::QcConfig;
mod sim;
pub use sim::{sim_config, sim_state_dir};

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
    /// The account runs share limits and budgets on (`[account] name`).
    pub const ACCOUNT: &str = "DARKROOM_ACCOUNT";
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
    /// fal.ai's key (`--provider fal`), as fal's official clients read it. Never printed or stored.
    pub const FAL_KEY: &str = "FAL_KEY";
    /// fal.ai's key as an id and a secret (`FAL_KEY_ID:FAL_KEY_SECRET`), when `FAL_KEY` is unset.
    pub const FAL_KEY_ID: &str = "FAL_KEY_ID";
    /// See [`FAL_KEY_ID`].
    pub const FAL_KEY_SECRET: &str = "FAL_KEY_SECRET";
    /// fal.ai's queue host (default `https://queue.fal.run`).
    pub const FAL_QUEUE_URL: &str = "DARKROOM_FAL_QUEUE_URL";
    /// fal.ai's platform API (default `https://api.fal.ai/v1`).
    pub const FAL_API_URL: &str = "DARKROOM_FAL_API_URL";
    /// Where fal.ai publishes its webhook signing keys (default
    /// `https://rest.fal.ai/.well-known/jwks.json`), read when a run receives callbacks.
    pub const FAL_JWKS_URL: &str = "DARKROOM_FAL_JWKS_URL";
    /// The secret notifications are signed with.
    pub const NOTIFY_SECRET: &str = "DARKROOM_NOTIFY_SECRET";
    /// The price table's photon-1 price, USD (`[prices] "photon-1"`).
    pub const PRICE_PHOTON_1: &str = "DARKROOM_PRICE_PHOTON_1";
    /// The price table's photon-flash-1 price, USD (`[prices] "photon-flash-1"`).
    pub const PRICE_PHOTON_FLASH_1: &str = "DARKROOM_PRICE_PHOTON_FLASH_1";
    /// What the built-in simulator of `--sim` bills per photon-1 image, USD [default: the published
    /// price]: to see a run on an account charging other than the table.
    pub const SIM_PRICE_PHOTON_1: &str = "DARKROOM_SIM_PRICE_PHOTON_1";
    /// What the built-in simulator of `--sim` bills per photon-flash-1 image, USD.
    pub const SIM_PRICE_PHOTON_FLASH_1: &str = "DARKROOM_SIM_PRICE_PHOTON_FLASH_1";
    /// Replicate's API token, as Replicate's SDK reads it. Never printed or stored.
    pub const REPLICATE_API_TOKEN: &str = "REPLICATE_API_TOKEN";
    /// Replicate's API root (without `/v1`), as Replicate's SDK reads it.
    pub const REPLICATE_BASE_URL: &str = "REPLICATE_BASE_URL";
}

/// Where a price of the table in force came from.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "from")]
pub enum PriceSource {
    /// `config/default.toml`, built into the binary.
    #[default]
    BuiltIn,
    /// The user's config file (its path).
    ConfigFile(String),
    /// A `DARKROOM_PRICE_*` variable (its name).
    Environment(String),
}

impl std::fmt::Display for PriceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PriceSource::BuiltIn => f.write_str("built-in default"),
            PriceSource::ConfigFile(path) => write!(f, "config file {path}"),
            PriceSource::Environment(name) => write!(f, "environment {name}"),
        }
    }
}

/// Where each price of `[prices]` came from.
#[derive(Debug, Clone, Default)]
pub struct PriceSources {
    pub photon_1: PriceSource,
    pub photon_flash_1: PriceSource,
}

impl PriceSources {
    pub fn of(&self, model: darkroom_jobs::Model) -> &PriceSource {
        match model {
            darkroom_jobs::Model::Photon1 => &self.photon_1,
            darkroom_jobs::Model::PhotonFlash1 => &self.photon_flash_1,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub prices: PriceTable,
    pub routing: Routing,
    pub limits: Limits,
    /// The account runs share limits on, and its monthly ceiling.
    pub account: AccountSettings,
    pub budget: Budget,
    pub defaults: Defaults,
    pub latency: Latency,
    pub retry: Retry,
    pub notify: NotifySettings,
    pub promote: PromoteSettings,
    /// What goes into the images darkroom writes.
    pub outputs: OutputSettings,
    /// How the provider is reached (timeouts).
    pub luma: LumaSettings,
    /// The quality checks of kept images and their thresholds.
    pub qc: QcConfig,
    /// Which provider a pass runs on by default.
    pub provider: provider::ProviderSettings,
    /// Photon through Replicate: its limit, timeouts and prices.
    pub replicate: provider::ReplicateSettings,
    /// Photon through fal.ai: its prices per megapixel.
    pub fal: provider::FalSettings,
    /// Luma's `[prices]` once `prices` holds another provider's table (`for_provider`), so a
    /// client for Luma built beside another provider's pass still prices at Luma's table.
    #[serde(skip)]
    pub luma_prices: Option<PriceTable>,
    /// Where each price came from (for `darkroom prices`).
    #[serde(skip)]
    pub price_sources: PriceSources,
    /// Where every setting came from, by dotted key (`limits.max_in_flight`), and the config file
    /// with how it was named (for `darkroom config`).
    #[serde(skip)]
    pub origins: Origins,
}

/// Where one setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `config/default.toml`, built into the binary (or the flag's own default).
    Default,
    /// The user's config file.
    File(PathBuf),
    /// An environment variable (its name).
    Environment(&'static str),
    /// A command-line flag (its name, `--db`).
    Flag(&'static str),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Environment(name) => write!(f, "environment {name}"),
            Origin::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// The origin of every resolved setting, and which config file was read.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// By dotted key, in key order.
    pub settings: std::collections::BTreeMap<String, Origin>,
    /// The config file read, and whether `--config` or `DARKROOM_CONFIG` named it.
    pub file: Option<(PathBuf, Origin)>,
    /// Every setting as resolved, as TOML (for printing).
    pub values: toml::Table,
}

impl Origins {
    /// Records `origin` for every leaf of `table`, under `prefix`.
    fn mark(&mut self, prefix: &str, table: &toml::Table, origin: &Origin) {
        for (key, value) in table {
            let dotted = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::Table(inner) => self.mark(&dotted, inner, origin),
                _ => {
                    self.settings.insert(dotted, origin.clone());
                }
            }
        }
    }
}

/// How a final uses its chosen preview.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteSettings {
    pub reference: darkroom_engine::promote::PreviewReference,
    pub weight: f64,
}

/// What goes into the images darkroom writes.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSettings {
    /// Write darkroom's metadata inside every image (PNG text chunks, JPEG XMP); `--no-metadata`
    /// turns it off for one command.
    pub metadata: bool,
}

/// How Luma's API is reached: a timeout for each kind of call. The key and base URL come from the
/// environment and flags only (`LUMAAI_API_KEY`, `--base-url` / `LUMAAI_BASE_URL`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LumaSettings {
    /// Time to open a connection, to the API or to an image's host.
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: std::time::Duration,
    /// Time an API call may take, its answer included. A create that times out is an unknown
    /// outcome, reconciled before it is sent again.
    #[serde(deserialize_with = "duration")]
    pub request_timeout: std::time::Duration,
    /// Time an image download may take.
    #[serde(deserialize_with = "duration")]
    pub download_timeout: std::time::Duration,
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
    /// How creates are paced under the rate: `"learn"` (a burst first, learned from 429s) or
    /// `"strict"` (evenly spaced, no 429).
    pub pacing: darkroom_engine::limits::Pacing,
    /// How long an unbroken run of 429s, with no create accepted, may last before the run ends
    /// refused (exit 5): a duration such as `"10m"`, `"90s"` or `"1h30m"`.
    #[serde(deserialize_with = "duration")]
    pub give_up_after: std::time::Duration,
}

/// A duration written as text (`"90s"`, `"10m"`, `"1h30m"`), as `--max-duration` takes it.
fn duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<std::time::Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    let duration =
        darkroom_engine::schedule_times::parse_duration(&text).map_err(serde::de::Error::custom)?;
    if duration.is_zero() {
        return Err(serde::de::Error::custom(format!(
            "{text:?} is no time at all: give a duration such as \"10m\""
        )));
    }
    Ok(duration)
}

/// `[account]`: the account's name (empty: derived from the key and the base URL) and the
/// upstream's monthly cap, the ceiling of an account with no monthly limit of its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSettings {
    pub name: String,
    pub monthly_ceiling: Money,
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
    /// Seconds after its submission a generation not yet finished is given up as stuck.
    pub stuck_after_seconds: u64,
}

/// Resolves the settings: defaults → user file → `DARKROOM_*` variables.
pub fn resolve(config_file: Option<&Path>) -> anyhow::Result<Settings> {
    let mut merged: toml::Table = DEFAULT_CONFIG
        .parse()
        .context("the built-in config/default.toml is broken")?;
    let mut origins = Origins::default();
    origins.mark("", &merged, &Origin::Default);
    let user_file = match config_file {
        Some(path) => Some((path.to_path_buf(), Origin::Flag("--config"))),
        None => std::env::var_os(env::CONFIG).map(|p| (PathBuf::from(p), Origin::Environment(env::CONFIG))),
    };
    origins.file.clone_from(&user_file);
    let user_file = user_file.map(|(path, _)| path);
    let mut sources = PriceSources::default();
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
        if let Some(toml::Value::Table(prices)) = user.get("prices") {
            let from = PriceSource::ConfigFile(path.display().to_string());
            if prices.contains_key("photon-1") {
                sources.photon_1 = from.clone();
            }
            if prices.contains_key("photon-flash-1") {
                sources.photon_flash_1 = from;
            }
        }
        origins.mark("", &user, &Origin::File(path.clone()));
        merge(&mut merged, user);
        // Checked here so a mistake is reported against the file that made it.
        let parsed = parse(merged.clone())
            .map_err(|e| Failure::new(Exit::BadInput, format!("{}: {e}", path.display())))?;
        provider::check_prices(&parsed)
            .map_err(|e| Failure::new(Exit::BadInput, format!("{}: {e}", path.display())))?;
    }
    apply_environment(&mut merged, &mut sources, &mut origins)?;
    origins.values = merged.clone();
    let mut settings = parse(merged)
        .map_err(|e| Failure::new(Exit::BadInput, format!("config from the environment: {e}")))?;
    provider::check_prices(&settings)
        .map_err(|e| Failure::new(Exit::BadInput, format!("config from the environment: {e}")))?;
    settings.price_sources = sources;
    settings.origins = origins;
    Ok(settings)
}

/// Layers the `DARKROOM_*` variables over `merged`, noting where each price and setting came from.
fn apply_environment(
    merged: &mut toml::Table,
    sources: &mut PriceSources,
    origins: &mut Origins,
) -> anyhow::Result<()> {
    let overrides = [
        (env::BUDGET, "budget", "default", Kind::Text),
        (
            env::RATE_PER_MINUTE,
            "limits",
            "creates_per_minute",
            Kind::Integer,
        ),
        (env::MAX_IN_FLIGHT, "limits", "max_in_flight", Kind::Integer),
        (env::ACCOUNT, "account", "name", Kind::Text),
        (
            env::SETTLE_WINDOW,
            "retry",
            "settle_window_seconds",
            Kind::Integer,
        ),
        (env::DEFAULT_ASPECT_RATIO, "defaults", "aspect_ratio", Kind::Text),
        (env::PRICE_PHOTON_1, "prices", "photon-1", Kind::Text),
        (env::PRICE_PHOTON_FLASH_1, "prices", "photon-flash-1", Kind::Text),
    ];
    for (variable, table, key, kind) in overrides {
        let Ok(value) = std::env::var(variable) else {
            continue;
        };
        match variable {
            env::PRICE_PHOTON_1 => sources.photon_1 = PriceSource::Environment(variable.to_string()),
            env::PRICE_PHOTON_FLASH_1 => {
                sources.photon_flash_1 = PriceSource::Environment(variable.to_string());
            }
            _ => {}
        }
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
        origins
            .settings
            .insert(format!("{table}.{key}"), Origin::Environment(variable));
    }
    Ok(())
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
    api_key_text().map(ApiKey::new)
}

/// `LUMAAI_API_KEY` as text, trimmed, if set and not empty: only for hashing into the account's
/// identity (`darkroom_engine::account::Account`); everything that sends it takes [`api_key`].
pub fn api_key_text() -> Option<String> {
    std::env::var(env::API_KEY)
        .ok()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
}

/// The notification signing secret, if set.
pub fn notify_secret() -> Option<String> {
    std::env::var(env::NOTIFY_SECRET).ok().filter(|s| !s.is_empty())
}

pub mod provider;

#[cfg(test)]
mod tests;
