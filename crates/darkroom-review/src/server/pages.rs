//! The review page's reads at scale, answered from the in-memory `sheet`:
//!
//! - `GET /api/sheet?offset=N&limit=N&group=G&state=S&qc=K&ids=A,B`: one page of the pairs the
//!   filters admit (at most [`MAX_PAGE`]), how many they admit, the sheet's revision, the groups
//!   (first page only) and the summary;
//! - `GET /api/changes?since=REV&epoch=E`: the pairs changed and the ids removed since revision
//!   `REV`, and the summary; `reload: true` when `E` names another server's sheet;
//! - `GET /api/ids?group=G&state=S&qc=K`: the admitted pairs whose preview is done, each id with
//!   what promoting it costs ("select all" within a group);
//! - `GET /image/{pass}/{key}`: a done task's image itself, for the large view.
//!
//! The summary (counts per pass, the final budget, the promotion under way) is a few indexed reads,
//! never the whole sheet.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use darkroom_jobs::Pass;
use serde::Deserialize;
use serde_json::{json, Value};

use super::sheet::Filter;
use super::{internal, ReviewState};

/// Pairs in one page at most.
pub(super) const MAX_PAGE: usize = 1_000;
/// Pairs in a page when the page asks for no number.
const DEFAULT_PAGE: usize = 200;
/// Group names the first page lists at most (a job without a `group` column has a group per row).
const MAX_GROUPS_LISTED: usize = 2_000;
/// Ids a filter by selection names at most.
const MAX_IDS: usize = 1_000;

/// The filters and paging a read takes.
#[derive(Debug, Default, Deserialize)]
pub(super) struct SheetQuery {
    offset: Option<usize>,
    limit: Option<usize>,
    group: Option<String>,
    state: Option<String>,
    qc: Option<String>,
    /// Pair ids, comma-separated.
    ids: Option<String>,
}

impl SheetQuery {
    /// The filter asked for, or why it can't be (a value named, and what was expected).
    fn filter(&self) -> Result<Filter, String> {
        let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        let state = given(&self.state);
        if let Some(s) = state.as_deref() {
            if !["done", "unfinished", "failed", "blocked", "skipped"].contains(&s) {
                return Err(format!(
                    "state {s:?} is not one of done, unfinished, failed, blocked, skipped"
                ));
            }
        }
        let qc = given(&self.qc);
        if let Some(k) = qc.as_deref() {
            if k != "flagged" && darkroom_ledger::QcKind::try_from(k).is_err() {
                return Err(format!(
                    "qc {k:?} is not one of flagged, blank, dimensions, duplicate, small_file"
                ));
            }
        }
        let ids: Option<HashSet<String>> = self.ids.as_ref().map(|list| {
            list.split(',')
                .filter(|id| !id.is_empty())
                .map(str::to_string)
                .collect()
        });
        if ids.as_ref().is_some_and(|ids| ids.len() > MAX_IDS) {
            return Err(format!("ids names more than {MAX_IDS} pairs; ask in parts"));
        }
        Ok(Filter {
            group: given(&self.group),
            state,
            qc,
            ids,
        })
    }
}

fn bad_request(error: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": error}))).into_response()
}

/// What the change feed is asked for.
#[derive(Debug, Deserialize)]
pub(super) struct ChangesQuery {
    since: u64,
    epoch: String,
}

/// `GET /api/sheet`: a page of the filtered pairs.
pub(super) async fn sheet(
    State(review): State<Arc<ReviewState>>,
    Query(query): Query<SheetQuery>,
) -> Response {
    let filter = match query.filter() {
        Ok(f) => f,
        Err(error) => return bad_request(error),
    };
    let offset = query.offset.unwrap_or(0);
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let sheet = match review.fresh_sheet().await {
        Ok(sheet) => sheet,
        Err(e) => return internal(e),
    };
    let (total, pairs) = sheet.page(&filter, offset, limit);
    let groups: Option<Vec<Value>> = (offset == 0).then(|| {
        sheet
            .groups()
            .iter()
            .take(MAX_GROUPS_LISTED)
            .map(|(name, pairs)| json!({"name": name, "pairs": pairs}))
            .collect()
    });
    let body = json!({
        "epoch": sheet.epoch,
        "revision": sheet.revision,
        "offset": offset,
        "total": total,
        "pairs": pairs,
        "groups": groups,
        "groups_total": sheet.groups().len(),
        "pairs_total": sheet.len(),
    });
    drop(sheet);
    with_summary(&review, body).await
}

/// `GET /api/changes`: what changed since the revision the page last saw.
pub(super) async fn changes(
    State(review): State<Arc<ReviewState>>,
    Query(query): Query<ChangesQuery>,
) -> Response {
    let sheet = match review.fresh_sheet().await {
        Ok(sheet) => sheet,
        Err(e) => return internal(e),
    };
    let reload = query.epoch != sheet.epoch || query.since > sheet.revision;
    let (pairs, removed) = if reload {
        (Vec::new(), Vec::new())
    } else {
        sheet.changes(query.since)
    };
    let body = json!({
        "epoch": sheet.epoch,
        "revision": sheet.revision,
        "reload": reload,
        "pairs": pairs,
        "removed": removed,
    });
    drop(sheet);
    with_summary(&review, body).await
}

/// `GET /api/ids`: the choosable ids the filters admit.
pub(super) async fn ids(State(review): State<Arc<ReviewState>>, Query(query): Query<SheetQuery>) -> Response {
    let filter = match query.filter() {
        Ok(f) => f,
        Err(error) => return bad_request(error),
    };
    let sheet = match review.fresh_sheet().await {
        Ok(sheet) => sheet,
        Err(e) => return internal(e),
    };
    let pairs: Vec<Value> = sheet
        .choosable(&filter)
        .into_iter()
        .map(|(id, micros)| json!({"id": id, "promote_micros": micros}))
        .collect();
    Json(json!({"pairs": pairs})).into_response()
}

/// `GET /image/{pass}/{key}`: the done task's image, found by key among the job's tasks (never a
/// path from the request); 404 otherwise.
pub(super) async fn image(
    State(review): State<Arc<ReviewState>>,
    UrlPath((pass, key)): UrlPath<(String, String)>,
) -> Response {
    let (_, path) = match super::done_image(&review, &pass, &key).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let kind = match path.extension().and_then(|e| e.to_str()) {
        Some("png") => "image/png",
        _ => "image/jpeg",
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, "private, max-age=3600"),
            ],
            bytes,
        )
            .into_response(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => StatusCode::NOT_FOUND.into_response(),
        Err(e) => internal(e),
    }
}

/// `body` with the summary added: `summary` (tasks per state of each pass) and the final pass's
/// figures (see `super::final_figures`).
async fn with_summary(review: &ReviewState, mut body: Value) -> Response {
    let mut passes = Vec::new();
    for pass in Pass::ALL {
        match review.ledger.pass(review.config.job_id, pass).await {
            Ok(None) => continue,
            Ok(Some(_)) => {}
            Err(e) => return internal(e),
        }
        match review.ledger.counts(review.config.job_id, pass).await {
            Ok(counts) => passes.push(json!({"pass": pass.as_str(), "counts": counts})),
            Err(e) => return internal(e),
        }
    }
    let figures = match super::final_figures(review).await {
        Ok(f) => f,
        Err(e) => return internal(e),
    };
    if let (Value::Object(body), Value::Object(figures)) = (&mut body, figures) {
        body.insert("passes".into(), Value::Array(passes));
        body.extend(figures);
    }
    Json(body).into_response()
}
