//! `GET /sim/assets/{id}.{ext}`: a completed generation's picture, or the broken answer its
//! outcome or a download fault calls for (404, an HTML page, a body cut short).

use std::sync::{Arc, MutexGuard};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::{counted, error};
use crate::state::{Account, Outcome};
use crate::Sim;

pub(super) async fn asset(State(sim): State<Arc<Sim>>, Path(file): Path<String>) -> Response {
    let id = file.split('.').next().unwrap_or_default();
    let response = serve(&sim, id, Sim::lock, crate::state::LUMA).await;
    counted(&sim, "GET /sim/assets", response)
}

/// The picture of generation `id` in the account `account` locks (Luma's, which also holds
/// Replicate's, or fal's), made through `provider`'s API, or the broken answer its outcome or a
/// download fault calls for.
pub(super) async fn serve(
    sim: &Arc<Sim>,
    id: &str,
    account: fn(&Sim) -> MutexGuard<'_, Account>,
    provider: &str,
) -> Response {
    let (seed, aspect, source_aspect, format, truncate, fail, outcome) = {
        let now = Instant::now();
        let mut account = account(sim);
        account.settle(now);
        let Some(generation) = account
            .generations
            .get(id)
            .filter(|g| !g.deleted && g.provider == provider && g.state(now) == "completed")
        else {
            return error(StatusCode::NOT_FOUND, "Not found");
        };
        let found = (
            (
                generation.image_seed,
                crate::picture::Look::of_request(&generation.echo),
            ),
            generation.aspect_ratio.clone(),
            generation.format.clone(),
            generation.outcome.clone(),
            generation.source_aspect.clone(),
        );
        let fail = account.chance(sim.config.faults.download_failed);
        let truncate = !fail && account.chance(sim.config.faults.download_truncated);
        if fail {
            account.fault("download_failed");
        }
        if truncate {
            account.fault("download_truncated");
        }
        (found.0, found.1, found.4, found.2, truncate, fail, found.3)
    };
    match outcome {
        Outcome::ImageMissing | Outcome::CompletedWithoutImage => {
            return error(StatusCode::NOT_FOUND, "Not found");
        }
        Outcome::NotAnImage => {
            return (
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body><h1>Service temporarily unavailable</h1></body></html>",
            )
                .into_response();
        }
        _ => {}
    }
    if fail {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
    }
    let bytes = sim
        .image(seed.0, seed.1, &aspect, source_aspect.as_deref(), format == "png")
        .await;
    let content_type = if format == "png" {
        "image/png"
    } else {
        "image/jpeg"
    };
    if truncate {
        let half = bytes.slice(..bytes.len() / 2);
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(half),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "truncated",
            )),
        ];
        let mut response = Response::new(Body::from_stream(futures::stream::iter(chunks)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, header::HeaderValue::from(bytes.len()));
        return response;
    }
    ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
}
