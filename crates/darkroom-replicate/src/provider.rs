//! Replicate as a [`Provider`]: the client's calls, converted to and from the neutral types.

use std::sync::Arc;

use bytes::Bytes;
use darkroom_jobs::{AspectRatio, Format, Model, Money, PriceTable};
use darkroom_provider::{
    Balance, Capabilities, CreateRequest, DeliveryCheck, Generation, GenerationPage, PageCursor, Provider,
    ProviderError, ProviderFuture,
};

use crate::client::{Client, ClientConfig};
use crate::convert::{input_of, model_of_path, model_path};
use crate::error::{Error, SetupError};
use crate::wire::{self, CreateBody};

/// Replicate's documented API base URL.
pub const REPLICATE_BASE_URL: &str = "https://api.replicate.com/v1";

/// Replicate's published prices for Photon (its model pages): $0.03 a `luma/photon` image and
/// $0.01 a `luma/photon-flash` image, billed per output.
pub const REPLICATE_PRICES: PriceTable = PriceTable {
    photon_1: Money::from_micros(30_000),
    photon_flash_1: Money::from_micros(10_000),
    basis: darkroom_jobs::PriceBasis::PerImage,
};

/// Photon through Replicate's predictions API for one account, as the engine's [`Provider`].
/// Cheap to clone (the connection pools are shared).
#[derive(Debug, Clone)]
pub struct ReplicateProvider {
    client: Client,
    capabilities: Capabilities,
    prices: PriceTable,
}

impl ReplicateProvider {
    /// A provider for the API and token of `config`, priced by Replicate's published table
    /// ([`REPLICATE_PRICES`]).
    ///
    /// # Errors
    /// [`SetupError`] when the base URL is no `http(s)` URL with a host, or the HTTP client can't
    /// be built. Nothing is sent.
    pub fn new(config: ClientConfig) -> Result<ReplicateProvider, SetupError> {
        Ok(ReplicateProvider {
            client: Client::new(config)?,
            capabilities: replicate_capabilities(),
            prices: REPLICATE_PRICES,
        })
    }

    /// The same provider priced by `prices` (a configured table) instead of Replicate's published one.
    #[must_use]
    pub fn with_prices(mut self, prices: PriceTable) -> ReplicateProvider {
        self.prices = prices;
        self
    }
}

/// What Replicate's `luma/photon` and `luma/photon-flash` take: one image reference and one style
/// reference, each with a weight, one character image, no modify, one format (JPEG is what
/// darkroom asks to verify: Replicate offers no choice), the seven aspect ratios, webhooks, and
/// no balance API.
pub fn replicate_capabilities() -> Capabilities {
    Capabilities {
        models: Model::ALL.to_vec(),
        max_image_refs: 1,
        max_style_refs: 1,
        max_character_images: 1,
        reference_weights: true,
        modify: false,
        formats: vec![Format::Jpg],
        aspect_ratios: AspectRatio::ALL.to_vec(),
        callbacks: true,
        balance: false,
    }
}

/// A page of Replicate's list as a neutral page: only Photon predictions made through the API (the
/// account's other models and web predictions are none of darkroom's), with no next page once
/// Replicate gives none, the page was empty, or it reached predictions created before `since_ms`.
fn page_of(list: wire::PredictionList, since_ms: i64) -> GenerationPage {
    let older_seen = list
        .results
        .iter()
        .any(|p| p.created_at_ms().is_some_and(|c| c < since_ms));
    let next = list
        .next
        .filter(|_| !list.results.is_empty() && !older_seen)
        .map(PageCursor::new);
    let generations = list
        .results
        .into_iter()
        .filter(|p| p.model.as_deref().and_then(model_of_path).is_some())
        .filter(|p| p.source.as_deref().is_none_or(|s| s == "api"))
        .map(Into::into)
        .collect();
    GenerationPage { generations, next }
}

impl Provider for ReplicateProvider {
    fn name(&self) -> &'static str {
        "replicate"
    }

    fn base_url(&self) -> &str {
        self.client.base_url()
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn table_price(&self, request: &CreateRequest) -> Option<Money> {
        Model::parse(&request.model).map(|model| self.prices.price(model))
    }

    /// Refuses, before sending, a request Replicate would make only in part (see
    /// [`Capabilities::refusals`]): a permanent error naming each part.
    fn create<'a>(&'a self, request: &'a CreateRequest) -> ProviderFuture<'a, Generation> {
        Box::pin(async move {
            let refusals = self.capabilities.refusals(request);
            let model = Model::parse(&request.model).filter(|_| refusals.is_empty());
            let Some(model) = model else {
                return Err(Error::Refused {
                    operation: "create",
                    message: format!("Replicate can't make this request: {}", refusals.join("; ")),
                }
                .into());
            };
            let body = CreateBody {
                input: input_of(request),
                webhook: request.callback_url.clone(),
                webhook_events_filter: request.callback_url.as_ref().map(|_| vec!["completed"]),
            };
            Ok(self.client.create(model_path(model), &body).await?.into())
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> ProviderFuture<'a, Generation> {
        Box::pin(async move { Ok(self.client.get(id).await?.into()) })
    }

    /// Reads `GET /predictions?created_after=` (left out for a `since_ms` before 1970, as the
    /// poller's "newest first" read asks), then the `next` URLs Replicate gives.
    fn list_since<'a>(
        &'a self,
        since_ms: i64,
        cursor: Option<&'a PageCursor>,
    ) -> ProviderFuture<'a, GenerationPage> {
        Box::pin(async move {
            let created_after = (since_ms > 0).then(|| wire::iso_time(since_ms)).flatten();
            let list = self
                .client
                .list(created_after.as_deref(), cursor.map(PageCursor::as_str))
                .await?;
            Ok(page_of(list, since_ms))
        })
    }

    /// Replicate has no balance API: always `Ok(None)`, the ledger being the only account of spend.
    fn balance(&self) -> ProviderFuture<'_, Option<Balance>> {
        Box::pin(async { Ok::<_, ProviderError>(None) })
    }

    fn download<'a>(&'a self, url: &'a str, max_bytes: u64) -> ProviderFuture<'a, Bytes> {
        Box::pin(async move { Ok(self.client.download(url, max_bytes).await?) })
    }

    /// Replicate signs its deliveries (Standard Webhooks): the check holds the account's secret,
    /// read from `GET /webhooks/default/secret`.
    fn delivery_check(&self) -> ProviderFuture<'_, Option<Arc<dyn DeliveryCheck>>> {
        Box::pin(async move {
            let secret = self.client.webhook_secret().await?;
            Ok(Some(Arc::new(secret) as Arc<dyn DeliveryCheck>))
        })
    }
}
