//! Luma as a [`Provider`]: the client's calls, converted to and from the neutral types.

use bytes::Bytes;
use darkroom_jobs::{AspectRatio, Format, Model, Money, PriceTable};
use darkroom_provider::{
    Balance, Capabilities, CreateRequest, ErrorClass, Generation, GenerationPage, PageCursor, Provider,
    ProviderError, ProviderFuture,
};

use crate::client::{Client, ClientConfig};
use crate::error::SetupError;
use crate::wire;

/// Generations per list page (Luma's `limit`).
const PAGE: u32 = 100;

/// Luma's image API (`/dream-machine/v1`) for one account, as the engine's [`Provider`].
/// Cheap to clone (the connection pools are shared).
#[derive(Debug, Clone)]
pub struct LumaProvider {
    client: Client,
    capabilities: Capabilities,
    prices: PriceTable,
}

impl LumaProvider {
    /// A provider for the API and key of `config`, priced by Luma's published table.
    ///
    /// # Errors
    /// [`SetupError`] when the base URL is no `http(s)` URL with a host, or the HTTP client can't
    /// be built. Nothing is sent.
    pub fn new(config: ClientConfig) -> Result<LumaProvider, SetupError> {
        Ok(LumaProvider {
            client: Client::new(config)?,
            capabilities: luma_capabilities(),
            prices: PriceTable::default(),
        })
    }

    /// The same provider priced by `prices` (a configured table) instead of Luma's published one.
    #[must_use]
    pub fn with_prices(mut self, prices: PriceTable) -> LumaProvider {
        self.prices = prices;
        self
    }
}

/// What Luma's image API takes (`luma-api.md`): up to 4 image references, one style reference,
/// one character of up to 4 images, weights, modify, jpg or png, seven aspect ratios, callbacks,
/// and a balance (`GET /credits`).
pub fn luma_capabilities() -> Capabilities {
    Capabilities {
        models: Model::ALL.to_vec(),
        max_image_refs: 4,
        max_style_refs: 1,
        max_character_images: 4,
        reference_weights: true,
        modify: true,
        formats: vec![Format::Jpg, Format::Png],
        aspect_ratios: AspectRatio::ALL.to_vec(),
        callbacks: true,
        balance: true,
    }
}

/// The offset a cursor of ours stands for.
fn offset_of(cursor: Option<&PageCursor>) -> Result<u32, ProviderError> {
    let Some(cursor) = cursor else { return Ok(0) };
    cursor.as_str().parse().map_err(|_| {
        ProviderError::new(
            "list",
            ErrorClass::NeverSent,
            format!("list: {:?} is not a page of Luma's list", cursor.as_str()),
        )
    })
}

/// A page of Luma's list as a neutral page: no next page once it has none, was empty, or reached
/// generations created before `since_ms`.
fn page_of(list: wire::GenerationList, offset: u32, since_ms: i64) -> GenerationPage {
    let older_seen = list
        .generations
        .iter()
        .any(|g| g.created_at_ms().is_some_and(|c| c < since_ms));
    let more = list.has_more && !list.generations.is_empty() && !older_seen;
    GenerationPage {
        next: more.then(|| PageCursor::new((offset + PAGE).to_string())),
        generations: list.generations.into_iter().map(Into::into).collect(),
    }
}

impl Provider for LumaProvider {
    fn name(&self) -> &'static str {
        "luma"
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

    fn create<'a>(&'a self, request: &'a CreateRequest) -> ProviderFuture<'a, Generation> {
        if request.reframe.is_some() {
            // Never a plain image in place of a reframe: it goes to the reframe endpoint.
            return self.reframe(request);
        }
        Box::pin(async move {
            let body = wire::CreateRequest::from(request);
            Ok(self.client.create(&body).await?.into())
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> ProviderFuture<'a, Generation> {
        Box::pin(async move { Ok(self.client.get(id).await?.into()) })
    }

    fn list_since<'a>(
        &'a self,
        since_ms: i64,
        cursor: Option<&'a PageCursor>,
    ) -> ProviderFuture<'a, GenerationPage> {
        Box::pin(async move {
            let offset = offset_of(cursor)?;
            let list = self.client.list(PAGE, offset).await?;
            Ok(page_of(list, offset, since_ms))
        })
    }

    fn balance(&self) -> ProviderFuture<'_, Option<Balance>> {
        Box::pin(async move { Ok(Some(self.client.credits().await?.into())) })
    }

    fn download<'a>(&'a self, url: &'a str, max_bytes: u64) -> ProviderFuture<'a, Bytes> {
        Box::pin(async move { Ok(self.client.download(url, max_bytes).await?) })
    }

    fn can_reframe(&self) -> bool {
        true
    }

    /// `POST /generations/image/reframe`, priced as a generation of its model.
    fn reframe<'a>(&'a self, request: &'a CreateRequest) -> ProviderFuture<'a, Generation> {
        Box::pin(async move {
            let Some(body) = crate::convert::reframe_body(request) else {
                return Err(ProviderError::new(
                    "reframe",
                    ErrorClass::NeverSent,
                    "reframe: the request names no source image; nothing was sent",
                ));
            };
            Ok(self.client.reframe(&body).await?.into())
        })
    }
}
