//! fal as a [`Provider`]: the client's calls, converted to and from the neutral types.

use bytes::Bytes;
use darkroom_jobs::{AspectRatio, Format, Model, Money};
use darkroom_provider::{
    Balance, Capabilities, CreateRequest, ErrorClass, Generation, GenerationPage, GenerationState,
    PageCursor, Provider, ProviderError, ProviderFuture,
};

use crate::client::{Client, FalConfig};
use crate::convert::{self, ENDPOINTS};
use crate::error::{Error, SetupError};
use crate::price::FalPrices;

/// Requests per page of fal's by-endpoint list (its most).
const PAGE: u32 = 100;

/// fal's queue API for Luma Photon (`fal-ai/luma-photon`, `fal-ai/luma-photon/flash`) for one
/// account, as the engine's [`Provider`]. Cheap to clone (the connection pools are shared).
#[derive(Debug, Clone)]
pub struct FalProvider {
    client: Client,
    capabilities: Capabilities,
    prices: FalPrices,
}

impl FalProvider {
    /// A provider for the hosts and key of `config`, priced by fal's published per-megapixel rates.
    ///
    /// # Errors
    /// [`SetupError`] when a base URL is no `http(s)` URL with a host, or the HTTP client can't
    /// be built. Nothing is sent.
    pub fn new(config: FalConfig) -> Result<FalProvider, SetupError> {
        Ok(FalProvider {
            client: Client::new(config)?,
            capabilities: fal_capabilities(),
            prices: FalPrices::default(),
        })
    }

    /// The same provider priced by `prices` (a configured table) instead of fal's published one.
    #[must_use]
    pub fn with_prices(mut self, prices: FalPrices) -> FalProvider {
        self.prices = prices;
        self
    }

    /// The per-megapixel rates this provider prices by.
    pub fn prices(&self) -> &FalPrices {
        &self.prices
    }
}

/// What fal's Photon text-to-image endpoints take (`providers-api.md` §2.1): a prompt and one of
/// the seven aspect ratios; no references of any kind, no weights, no format choice (JPEG out).
/// Modify and reframe exist on fal as endpoints of their own, which darkroom does not call, so
/// `modify` is false. A submit may name a webhook (`fal_webhook`), whose signed deliveries the
/// engine's callback receiver checks with [`Provider::delivery_check`]: `callbacks` is true. The balance is
/// read from the billing API (`balance`; it may need an admin-scope key, in which case it reads
/// as none).
pub fn fal_capabilities() -> Capabilities {
    Capabilities {
        models: Model::ALL.to_vec(),
        max_image_refs: 0,
        max_style_refs: 0,
        max_character_images: 0,
        reference_weights: false,
        modify: false,
        formats: vec![Format::Jpg],
        aspect_ratios: AspectRatio::ALL.to_vec(),
        callbacks: true,
        balance: true,
    }
}

/// Where a listing goes on: the endpoint (by its place in [`ENDPOINTS`]) and fal's cursor in it.
fn position_of(cursor: Option<&PageCursor>) -> Result<(usize, Option<String>), ProviderError> {
    let Some(cursor) = cursor else {
        return Ok((0, None));
    };
    let bad = || {
        ProviderError::new(
            "list",
            ErrorClass::NeverSent,
            format!("list: {:?} is not a page of fal's request list", cursor.as_str()),
        )
    };
    let (index, rest) = cursor.as_str().split_once(':').ok_or_else(bad)?;
    let index: usize = index.parse().map_err(|_| bad())?;
    if index >= ENDPOINTS.len() {
        return Err(bad());
    }
    Ok((index, Some(rest.to_string()).filter(|r| !r.is_empty())))
}

impl FalProvider {
    /// One page of one endpoint's requests sent since `since_ms`, and where the listing goes on:
    /// the same endpoint's next page, else the next endpoint's first, else nowhere.
    async fn list_page(
        &self,
        since_ms: i64,
        cursor: Option<&PageCursor>,
    ) -> Result<GenerationPage, ProviderError> {
        let (index, fal_cursor) = position_of(cursor)?;
        let start = (since_ms > 0).then(|| convert::rfc3339(since_ms)).flatten();
        let page = self
            .client
            .list(ENDPOINTS[index].1, start.as_deref(), fal_cursor.as_deref(), PAGE)
            .await?;
        let next = match page.next_cursor.filter(|c| page.has_more && !c.is_empty()) {
            Some(next) => Some(PageCursor::new(format!("{index}:{next}"))),
            None if index + 1 < ENDPOINTS.len() => Some(PageCursor::new(format!("{}:", index + 1))),
            None => None,
        };
        Ok(GenerationPage {
            generations: page.items.into_iter().filter_map(convert::from_item).collect(),
            next,
        })
    }

    /// A request's status, and its output once it completed without an error.
    async fn read(&self, id: &str) -> Result<Generation, ProviderError> {
        let status = self.client.status(id).await?;
        let completed_well = status.status == crate::wire::QueueStatus::Completed
            && status.error.as_ref().is_none_or(serde_json::Value::is_null)
            && status.error_type.is_none();
        if !completed_well {
            return Ok(convert::from_status(id, status, None));
        }
        match self.client.result(id).await {
            Ok((output, units)) => {
                if let Some(units) = units {
                    tracing::debug!(id, units, "fal billed units");
                }
                Ok(convert::from_status(id, status, Some(&output)))
            }
            // The status said done, the result says it failed (a 4xx with fal's words).
            Err(Error::Status {
                status: code, detail, ..
            }) if (400..500).contains(&code) && !matches!(code, 404 | 408 | 429) => {
                let mut generation = convert::from_status(id, status, None);
                generation.state = GenerationState::Failed;
                generation.failure_reason = Some(detail);
                Ok(generation)
            }
            Err(error) => Err(error.into()),
        }
    }
}

impl Provider for FalProvider {
    fn name(&self) -> &'static str {
        "fal"
    }

    fn base_url(&self) -> &str {
        self.client.queue_url()
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn table_price(&self, request: &CreateRequest) -> Option<Money> {
        let model = Model::parse(&request.model)?;
        let ratio = request
            .aspect_ratio
            .as_deref()
            .unwrap_or(convert::DEFAULT_ASPECT_RATIO);
        Some(self.prices.price(model, AspectRatio::parse(ratio)?))
    }

    fn create<'a>(&'a self, request: &'a CreateRequest) -> ProviderFuture<'a, Generation> {
        Box::pin(async move {
            let (model, input) = convert::input_of(request)?;
            let endpoint = convert::endpoint_of(model);
            let submitted = self
                .client
                .submit(endpoint, &input, request.callback_url.as_deref())
                .await?;
            let id = submitted
                .request_id
                .filter(|id| !id.is_empty())
                .ok_or_else(|| Error::BadAnswer {
                    operation: "create",
                    message: "the answer has no request_id".into(),
                })?;
            Ok(Generation {
                id,
                state: GenerationState::Queued,
                failure_reason: None,
                created_at_ms: None,
                image_url: None,
                model: Some(model.as_str().to_string()),
                request: Some(convert::echo_of(model, &input)),
            })
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> ProviderFuture<'a, Generation> {
        Box::pin(self.read(id))
    }

    fn list_since<'a>(
        &'a self,
        since_ms: i64,
        cursor: Option<&'a PageCursor>,
    ) -> ProviderFuture<'a, GenerationPage> {
        Box::pin(self.list_page(since_ms, cursor))
    }

    /// `x-fal-billable-units` of the request's result: the megapixels fal billed.
    fn billed_units<'a>(&'a self, id: &'a str) -> ProviderFuture<'a, Option<String>> {
        Box::pin(async move {
            let (_, units) = self.client.result(id).await?;
            Ok(units.filter(|u| !u.trim().is_empty()))
        })
    }

    /// fal signs its deliveries with ED25519: the check holds the keys of fal's JWKS.
    fn delivery_check(
        &self,
    ) -> ProviderFuture<'_, Option<std::sync::Arc<dyn darkroom_provider::DeliveryCheck>>> {
        Box::pin(async move {
            match self.client.webhook_keys().await {
                Ok(verifier) => Ok(Some(
                    std::sync::Arc::new(verifier) as std::sync::Arc<dyn darkroom_provider::DeliveryCheck>
                )),
                Err(error) => Err(ProviderError::new(
                    "webhook keys",
                    ErrorClass::Transient,
                    format!("webhook keys: {error}"),
                )),
            }
        })
    }

    fn balance(&self) -> ProviderFuture<'_, Option<Balance>> {
        Box::pin(async move {
            match self.client.billing().await {
                Ok(billing) => Ok(convert::balance_of(&billing)),
                Err(error) => {
                    let neutral = ProviderError::from(error);
                    // The billing API may need an admin-scope key: a key refused there (and not
                    // for money) still creates, and the ledger is then the only account of spend.
                    if neutral.refusal() == Some(darkroom_provider::Refusal::Credentials) {
                        tracing::info!(error = %neutral, "fal's balance could not be read with this key");
                        return Ok(None);
                    }
                    Err(neutral)
                }
            }
        })
    }

    fn download<'a>(&'a self, url: &'a str, max_bytes: u64) -> ProviderFuture<'a, Bytes> {
        Box::pin(async move { Ok(self.client.download(url, max_bytes).await?) })
    }
}
