//! darkroom-provider: the seam between the engine and an image provider.
//!
//! The engine talks to a provider only through [`Provider`] (held as `Arc<dyn Provider>`), in the
//! neutral types of this crate: a [`CreateRequest`] in, [`Generation`]s out, errors as
//! [`ProviderError`] with the [`ErrorClass`] the engine branches on. A provider crate
//! (`darkroom-luma`) owns its wire types, auth, timeouts and the mapping of its answers and errors
//! onto these; it keeps no state between calls and retries nothing (retry policy, the ledger and
//! files belong to `darkroom-engine`).
//!
//! What a new provider implements: the five calls below, its [`Capabilities`], and its table
//! price for a request. Its errors must be classified so that a create whose outcome is unknown is
//! never reported as never sent (that is how a create is paid twice), and its secret goes only to
//! its own API, never with a download and never into a message.

#![warn(missing_docs, unreachable_pub, clippy::too_many_lines)]

mod capabilities;
mod delivery;
mod error;
mod generation;
mod request;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use darkroom_jobs::Money;

pub use capabilities::Capabilities;
pub use delivery::{Delivery, DeliveryCheck, DeliveryRefused};
pub use error::{ErrorClass, ProviderError, Refusal};
pub use generation::{
    Balance, FailureKind, Generation, GenerationPage, GenerationState, PageCursor, RequestEcho,
};
pub use request::{CharacterRef, CreateRequest, Identity, ImageRef, ReframeSource};

/// The future a [`Provider`] call returns: boxed, so the trait stays object-safe.
pub type ProviderFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ProviderError>> + Send + 'a>>;

/// An image provider, as the engine uses it. Cheap to share (`Arc<dyn Provider>`); every call has
/// its own timeout and none is retried inside.
pub trait Provider: fmt::Debug + Send + Sync {
    /// A short lowercase name for messages (`luma`).
    fn name(&self) -> &'static str;

    /// Where the provider is reached (without a trailing slash). The ledger keys the account's
    /// balance readings and observed prices by it.
    fn base_url(&self) -> &str;

    /// What a request may ask of this provider.
    fn capabilities(&self) -> &Capabilities;

    /// What one create of `request` costs per the provider's published table; `None` when the
    /// table has no price for it (an unknown model). The engine may observe a higher real price.
    fn table_price(&self, request: &CreateRequest) -> Option<Money>;

    /// Sends one create. Paid: an error whose class is [`ErrorClass::OutcomeUnknown`] may hide an
    /// accepted, charged generation.
    fn create<'a>(&'a self, request: &'a CreateRequest) -> ProviderFuture<'a, Generation>;

    /// Reads one generation by id; a generation the provider no longer has is an error with
    /// [`ProviderError::is_not_found`].
    fn get<'a>(&'a self, id: &'a str) -> ProviderFuture<'a, Generation>;

    /// One page of the account's generations, newest first, from `cursor` (`None`: the newest).
    /// `since_ms` (Unix milliseconds) is the oldest moment the caller cares about: the page's
    /// `next` is `None` once generations older than it were seen. The reconcile search and the
    /// audit read through this.
    fn list_since<'a>(
        &'a self,
        since_ms: i64,
        cursor: Option<&'a PageCursor>,
    ) -> ProviderFuture<'a, GenerationPage>;

    /// The account's balance; `Ok(None)` when the provider exposes none (the ledger is then the
    /// only account of spend).
    fn balance(&self) -> ProviderFuture<'_, Option<Balance>>;

    /// Downloads an asset (an image URL from a [`Generation`]) without the provider's secret,
    /// refusing more than `max_bytes` and a body shorter than announced.
    fn download<'a>(&'a self, url: &'a str, max_bytes: u64) -> ProviderFuture<'a, Bytes>;

    /// The check of this provider's signed webhook deliveries, with what it needs fetched (a
    /// signing secret, a key set); `Ok(None)` when its deliveries are unsigned. Default: `None`.
    ///
    /// # Errors
    /// A [`ProviderError`] when the secret or keys could not be read.
    fn delivery_check(&self) -> ProviderFuture<'_, Option<std::sync::Arc<dyn DeliveryCheck>>> {
        Box::pin(async { Ok(None) })
    }

    /// What the provider says it billed for generation `id`, in its own unit and words (fal's
    /// `x-fal-billable-units`: megapixels, e.g. `2.359296`); `Ok(None)` when it says nothing.
    /// Read once a generation completed. Default: `None`, nothing sent.
    ///
    /// # Errors
    /// A [`ProviderError`] when the read fails.
    fn billed_units<'a>(&'a self, id: &'a str) -> ProviderFuture<'a, Option<String>> {
        let _ = id;
        Box::pin(async { Ok(None) })
    }

    /// Whether [`Provider::reframe`] is implemented: the reframe capability. A provided method
    /// rather than a [`Capabilities`] field, so a provider without reframe declares nothing.
    /// Default: `false`.
    fn can_reframe(&self) -> bool {
        false
    }

    /// Sends one reframe: `request.reframe`'s source image extended to `request.aspect_ratio`,
    /// `request.prompt` describing what to add. Paid like [`Provider::create`], with the same error
    /// classes. Default: an [`ErrorClass::Permanent`] error (status 501), nothing sent, for a provider that
    /// can't reframe.
    fn reframe<'a>(&'a self, request: &'a CreateRequest) -> ProviderFuture<'a, Generation> {
        let _ = request;
        let name = self.name();
        Box::pin(async move {
            Err(ProviderError::new(
                "reframe",
                // No request left; 501 (Not Implemented) is the status a server would answer.
                ErrorClass::Permanent { status: 501 },
                format!("reframe: {name} can't reframe images; nothing was sent"),
            ))
        })
    }
}

/// A shared provider is a provider: `&Arc<dyn Provider>` goes where `&dyn Provider` is asked for.
impl<P: Provider + ?Sized> Provider for std::sync::Arc<P> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn base_url(&self) -> &str {
        (**self).base_url()
    }

    fn capabilities(&self) -> &Capabilities {
        (**self).capabilities()
    }

    fn table_price(&self, request: &CreateRequest) -> Option<Money> {
        (**self).table_price(request)
    }

    fn create<'a>(&'a self, request: &'a CreateRequest) -> ProviderFuture<'a, Generation> {
        (**self).create(request)
    }

    fn get<'a>(&'a self, id: &'a str) -> ProviderFuture<'a, Generation> {
        (**self).get(id)
    }

    fn list_since<'a>(
        &'a self,
        since_ms: i64,
        cursor: Option<&'a PageCursor>,
    ) -> ProviderFuture<'a, GenerationPage> {
        (**self).list_since(since_ms, cursor)
    }

    fn balance(&self) -> ProviderFuture<'_, Option<Balance>> {
        (**self).balance()
    }

    fn download<'a>(&'a self, url: &'a str, max_bytes: u64) -> ProviderFuture<'a, Bytes> {
        (**self).download(url, max_bytes)
    }

    fn can_reframe(&self) -> bool {
        (**self).can_reframe()
    }

    fn delivery_check(&self) -> ProviderFuture<'_, Option<std::sync::Arc<dyn DeliveryCheck>>> {
        (**self).delivery_check()
    }

    fn billed_units<'a>(&'a self, id: &'a str) -> ProviderFuture<'a, Option<String>> {
        (**self).billed_units(id)
    }

    fn reframe<'a>(&'a self, request: &'a CreateRequest) -> ProviderFuture<'a, Generation> {
        (**self).reframe(request)
    }
}
