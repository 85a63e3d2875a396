//! Which provider a pass runs on (`--provider`, `[provider] default`) and the settings of each
//! provider other than Luma (`[replicate]`: its account's create limit, timeouts and price table;
//! `[fal]`: its price table per megapixel).
//! Secrets and base URLs come from the environment only, as each provider's official SDK reads them.

use darkroom_jobs::{Money, PriceTable};
use serde::Deserialize;

use super::Settings;

/// The providers a pass can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProviderName {
    // Luma's own API (`LUMAAI_API_KEY`). Plain comments: clap would show doc comments as a
    // long list in every command's help.
    Luma,
    // Photon through Replicate (`REPLICATE_API_TOKEN`): one image and one style reference, one
    // character image, no modify, JPEG only, no balance API.
    Replicate,
    // Photon through fal.ai (`FAL_KEY`): prompt and aspect ratio only, priced per megapixel;
    // hosts from DARKROOM_FAL_QUEUE_URL and DARKROOM_FAL_API_URL.
    Fal,
}

impl ProviderName {
    /// Every provider, in the order `estimate` shows them.
    pub const ALL: [ProviderName; 3] = [ProviderName::Luma, ProviderName::Replicate, ProviderName::Fal];

    /// The name as flags, config and the ledger spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderName::Luma => "luma",
            ProviderName::Replicate => "replicate",
            ProviderName::Fal => "fal",
        }
    }
}

/// `[provider]`: the provider a pass runs on when `--provider` does not say, how tasks are routed
/// and where they go when a provider refuses the run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// `luma`, `replicate` or `fal`.
    pub default: ProviderName,
    /// `fixed` (every task on the pass's provider) or `cheapest` (each task on the cheapest
    /// provider that can make it and has a key; failover on).
    #[serde(default)]
    pub routing: RoutingName,
    /// Where a fixed pass's tasks never sent go, in order, when its provider refuses the run (a
    /// refused key, no credit, a quota, its breaker); empty: no failover.
    #[serde(default)]
    pub failover: Vec<ProviderName>,
}

/// How a pass picks each task's provider (`[provider] routing`, `--routing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RoutingName {
    // Every task on the pass's provider (`--provider`, `[provider] default`). Plain comments, as
    // for `ProviderName`.
    #[default]
    Fixed,
    // Each task on the cheapest provider that can make it and has a key.
    Cheapest,
}

/// `[replicate]`: Photon through Replicate. The token comes from `REPLICATE_API_TOKEN`, the base
/// URL from `REPLICATE_BASE_URL` (the API's root, as Replicate's SDK reads it; `/v1` is added).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicateSettings {
    /// The account's create limit (Replicate documents 600 a minute); `[limits]` is Luma's.
    pub creates_per_minute: u32,
    /// Time to open a connection, to the API or to an output's host.
    #[serde(deserialize_with = "super::duration")]
    pub connect_timeout: std::time::Duration,
    /// Time an API call may take, its answer included.
    #[serde(deserialize_with = "super::duration")]
    pub request_timeout: std::time::Duration,
    /// Time an output download may take.
    #[serde(deserialize_with = "super::duration")]
    pub download_timeout: std::time::Duration,
    /// What Replicate charges an image, USD (its published $0.03 and $0.01).
    pub prices: PriceTable,
}

/// `[fal]`: Photon through fal.ai. The key comes from `FAL_KEY` (or `FAL_KEY_ID` and
/// `FAL_KEY_SECRET`), the hosts from `DARKROOM_FAL_QUEUE_URL` and `DARKROOM_FAL_API_URL`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FalSettings {
    /// What fal charges per megapixel of output, USD (its published $0.019 and $0.005).
    pub prices: FalRates,
}

/// `[fal.prices]`: fal's rate per megapixel of each model. An image costs its megapixels times
/// the rate, rounded up to the micro-dollar (a 1:1 image is 1536x1536, 2.36 MP).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FalRates {
    /// `fal-ai/luma-photon`, per megapixel.
    #[serde(rename = "photon-1")]
    pub photon_1: Money,
    /// `fal-ai/luma-photon/flash`, per megapixel.
    #[serde(rename = "photon-flash-1")]
    pub photon_flash_1: Money,
}

impl FalSettings {
    /// The configured rates as the fal client prices by them.
    pub fn prices(&self) -> darkroom_fal::FalPrices {
        darkroom_fal::FalPrices {
            photon_1_per_megapixel: self.prices.photon_1,
            photon_flash_1_per_megapixel: self.prices.photon_flash_1,
        }
    }
}

/// Refuses a price of $0 in any provider's table (`[prices]`, `[replicate.prices]`,
/// `[fal.prices]`): a paid API never charges nothing, and a zero price would let a run reserve
/// nothing and count nothing. The error names the key and the unit the price is written in.
pub fn check_prices(settings: &Settings) -> Result<(), String> {
    let tables = [
        ("[prices]", "per image", &settings.prices),
        ("[replicate.prices]", "per image", &settings.replicate.prices),
    ];
    let fal = settings.fal.prices().table();
    let tables = tables
        .into_iter()
        .chain([("[fal.prices]", "per megapixel", &fal)]);
    for (section, per, table) in tables {
        for (model, price) in [
            (darkroom_jobs::Model::Photon1, table.photon_1),
            (darkroom_jobs::Model::PhotonFlash1, table.photon_flash_1),
        ] {
            if price <= Money::ZERO {
                return Err(format!(
                    "{section} \"{}\" is {price}: a paid API never charges nothing; write the price {per} \
                     in USD as text, e.g. \"{}\"",
                    model.as_str(),
                    if section == "[fal.prices]" {
                        "0.019"
                    } else {
                        "0.015"
                    }
                ));
            }
        }
    }
    Ok(())
}

/// Prices configured far below a provider's published ones (under half), one line each, for a
/// warning as a pass starts. A run keeps its budget at the table's price until the account's
/// balance shows the real charge; Replicate has no balance to read, so there a table too low is
/// never corrected and a run can spend several times its budget.
pub fn low_price_warnings(settings: &Settings) -> Vec<String> {
    let published = super::DEFAULT_CONFIG
        .parse::<toml::Table>()
        .ok()
        .and_then(|table| super::parse(table).ok());
    let Some(published) = published else {
        return Vec::new();
    };
    let luma = settings.luma_prices.unwrap_or(settings.prices);
    let tables = [
        ("[prices]", "Luma's", "per image", luma, published.prices),
        (
            "[replicate.prices]",
            "Replicate's",
            "per image",
            settings.replicate.prices,
            published.replicate.prices,
        ),
        (
            "[fal.prices]",
            "fal.ai's",
            "per megapixel",
            settings.fal.prices().table(),
            published.fal.prices().table(),
        ),
    ];
    let mut lines = Vec::new();
    for (section, whose, per, table, list) in tables {
        for model in darkroom_jobs::Model::ALL {
            let (price, listed) = (table.price(model), list.price(model));
            if price.micros().saturating_mul(2) >= listed.micros() {
                continue;
            }
            let consequence = if section == "[replicate.prices]" {
                "Replicate has no balance API, so nothing corrects it: the budget is kept at this price \
                 while the account is billed at its own, which can be several times more"
            } else {
                "the budget is kept at it until the account's balance shows the real charge"
            };
            lines.push(format!(
                "{section} \"{}\" is {price} {per}, under half of {whose} published {listed}; {consequence}",
                model.as_str()
            ));
        }
    }
    lines
}

impl Settings {
    /// The provider a command runs on: `--provider`, else `[provider] default`.
    pub fn provider_name(&self, flag: Option<ProviderName>) -> ProviderName {
        flag.unwrap_or(self.provider.default)
    }

    /// The settings as a pass on `provider` uses them: its price table in `prices` (what tasks
    /// are reserved at) and its account's create limit in `limits`.
    #[must_use]
    pub fn for_provider(mut self, provider: ProviderName) -> Settings {
        let luma = *self.luma_prices.get_or_insert(self.prices);
        match provider {
            ProviderName::Luma => self.prices = luma,
            ProviderName::Replicate => {
                self.prices = self.replicate.prices;
                self.limits.creates_per_minute = self.replicate.creates_per_minute;
                self.price_sources = self.sources_of("replicate.prices");
            }
            ProviderName::Fal => {
                self.prices = self.fal.prices().table();
                self.price_sources = self.sources_of("fal.prices");
            }
        }
        self
    }

    /// Where each price of the table at `section` (`fal.prices`) came from, by its origin.
    fn sources_of(&self, section: &str) -> super::PriceSources {
        let of = |model: &str| match self.origins.settings.get(&format!("{section}.{model}")) {
            Some(super::Origin::File(path)) => super::PriceSource::ConfigFile(path.display().to_string()),
            Some(super::Origin::Environment(name)) => super::PriceSource::Environment((*name).to_string()),
            _ => super::PriceSource::BuiltIn,
        };
        super::PriceSources {
            photon_1: of("photon-1"),
            photon_flash_1: of("photon-flash-1"),
        }
    }
}

/// The API token from `REPLICATE_API_TOKEN`, if set and not empty.
pub fn replicate_token() -> Option<darkroom_replicate::ApiToken> {
    replicate_token_text().map(darkroom_replicate::ApiToken::new)
}

/// `REPLICATE_API_TOKEN` as text, trimmed, if set and not empty: only for hashing into the
/// account's identity; everything that sends it takes [`replicate_token`].
pub fn replicate_token_text() -> Option<String> {
    std::env::var(super::env::REPLICATE_API_TOKEN)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Replicate's API base URL: `REPLICATE_BASE_URL` (the root, `/v1` added) or Replicate's own.
pub fn replicate_base_url() -> String {
    match std::env::var(super::env::REPLICATE_BASE_URL) {
        Ok(root) if !root.trim().is_empty() => format!("{}/v1", root.trim().trim_end_matches('/')),
        _ => darkroom_replicate::REPLICATE_BASE_URL.to_string(),
    }
}
