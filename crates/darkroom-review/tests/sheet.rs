//! The review page's reads at 50,000 images, through the router (`oneshot`, no socket) over a real
//! ledger file seeded through the ledger crate (`darkroom_testkit::ledger::many_previews`): the
//! first page is a page, not the sheet; a poll with nothing changed is a few hundred bytes; a
//! poll after ten tasks finished carries those ten pairs and no other; filters, select-all's ids
//! and bad filter values. The figures are printed (`--nocapture`); the bounds asserted are on
//! bytes and counts, never on time.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use darkroom_engine::promote::{PreviewReference, PromoteOptions};
use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::RunSettings;
use darkroom_jobs::{Model, Money, Pass, PriceTable};
use darkroom_review::server::hosts_for;
use darkroom_review::{router, ReviewConfig, ReviewState};
use serde_json::Value;
use tower::ServiceExt as _;

const HOST: &str = "127.0.0.1:7880";
const ROWS: usize = 50_000;

fn state(dir: &std::path::Path, ledger: darkroom_ledger::Ledger, job_id: i64) -> Arc<ReviewState> {
    let config = ReviewConfig {
        job: "big".into(),
        job_id,
        ledger_path: dir.join("darkroom.db"),
        out: dir.join("out"),
        token: "00112233445566778899aabbccddeeff".into(),
        hosts: hosts_for(HOST.parse().unwrap()),
        promote: PromoteOptions {
            reference: PreviewReference::ModifyImageRef,
            weight: 0.85,
            model: Model::Photon1,
            price: PriceTable::default().price(Model::Photon1),
            prices: PriceTable::default(),
            choices: Default::default(),
        },
        default_budget: Money::parse_usd("2").unwrap(),
        run: RunSettings::new("big", Pass::Final, dir.join("out")),
        callbacks: None,
        routes: None,
    };
    ReviewState::new(config, ledger, None, Shutdown::default())
}

async fn get(state: &Arc<ReviewState>, uri: &str) -> (StatusCode, usize, Value) {
    let request = Request::builder()
        .uri(uri)
        .header(header::HOST, HOST)
        .body(Body::empty())
        .unwrap();
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        body.len(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

fn ids(body: &Value) -> Vec<&str> {
    body["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect()
}

/// The change feed's poll, once the sheet's read interval has passed.
async fn poll(state: &Arc<ReviewState>, since: &Value, epoch: &Value) -> (usize, Value) {
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let (status, bytes, body) = get(
        state,
        &format!("/api/changes?since={since}&epoch={}", epoch.as_str().unwrap()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (bytes, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_50000_images_the_page_loads_a_page_and_a_poll_carries_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, job) = darkroom_testkit::ledger::many_previews(dir.path(), "big", ROWS, 49_000).await;
    let review = state(dir.path(), ledger.clone(), job);

    let (status, first_bytes, first) = get(&review, "/api/sheet?limit=200").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["total"], ROWS);
    assert_eq!(ids(&first).len(), 200);
    assert_eq!(ids(&first)[0], "row-1");
    assert_eq!(first["groups_total"], 100, "500 rows a group");
    assert_eq!(first["pairs"][0]["group"], "g-1");
    assert_eq!(
        first["pairs"][0]["prompt"],
        "a product photo number 1 on a plain background"
    );
    assert_eq!(first["pairs"][0]["metadata"]["group"], "g-1");
    assert_eq!(first["pairs"][0]["promote"]["model"], "photon-1");
    assert!(
        first_bytes < 400_000,
        "the first page is a page, not the sheet: {first_bytes} bytes"
    );

    // The next page goes on where the first stopped.
    let (_, _, second) = get(&review, "/api/sheet?offset=200&limit=200").await;
    assert_eq!(ids(&second)[0], "row-201");

    // Nothing changed: a poll is the summary and no pair.
    let (idle_bytes, idle) = poll(&review, &first["revision"], &first["epoch"]).await;
    assert_eq!(idle["reload"], false);
    assert!(idle["pairs"].as_array().unwrap().is_empty(), "{idle}");
    assert!(idle_bytes < 2_000, "an idle poll: {idle_bytes} bytes");

    // Ten previews finish: the poll carries those ten pairs, done, and no other.
    ledger.mark_first_tasks_done(49_010).await.unwrap();
    let (busy_bytes, busy) = poll(&review, &first["revision"], &first["epoch"]).await;
    let changed = ids(&busy);
    assert_eq!(changed.len(), 10, "{changed:?}");
    assert_eq!(changed[0], "row-49001");
    assert!(busy["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["preview"]["state"] == "done"));
    assert!(
        busy_bytes < 20_000,
        "a poll after ten changes: {busy_bytes} bytes"
    );
    let (_, again) = poll(&review, &busy["revision"], &busy["epoch"]).await;
    assert!(
        again["pairs"].as_array().unwrap().is_empty(),
        "each change travels once"
    );

    // A page that saw another server's sheet is told to load again.
    let (_, stale) = poll(&review, &busy["revision"], &Value::from("another-server")).await;
    assert_eq!(stale["reload"], true);

    println!(
        "review page at {ROWS} images: first page {first_bytes} bytes, idle poll {idle_bytes} bytes, \
         poll after 10 changes {busy_bytes} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_narrow_the_pages_and_select_all_names_every_done_preview_of_a_group() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, job) = darkroom_testkit::ledger::many_previews(dir.path(), "big", 1_200, 700).await;
    let review = state(dir.path(), ledger, job);

    let (_, _, g2) = get(&review, "/api/sheet?group=g-2&limit=1000").await;
    assert_eq!(g2["total"], 500);
    assert!(ids(&g2).iter().all(|id| {
        let n: usize = id.trim_start_matches("row-").parse().unwrap();
        (501..=1000).contains(&n)
    }));
    let (_, _, unfinished) = get(&review, "/api/sheet?state=unfinished").await;
    assert_eq!(unfinished["total"], 500, "rows 701 to 1,200 are pending");
    let (_, _, done_in_g2) = get(&review, "/api/sheet?group=g-2&state=done").await;
    assert_eq!(done_in_g2["total"], 200);
    let (_, _, flagged) = get(&review, "/api/sheet?qc=blank").await;
    assert_eq!(flagged["total"], 0, "no image is flagged");
    let (_, _, chosen) = get(&review, "/api/sheet?ids=row-3,row-900,row-9999").await;
    assert_eq!(
        ids(&chosen),
        ["row-3", "row-900"],
        "in sheet order; unknown ids match nothing"
    );

    // Select all in g-2: its done previews only (pending ones can't be chosen), each with what
    // promoting it costs.
    let (_, _, all) = get(&review, "/api/ids?group=g-2").await;
    let pairs = all["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 200);
    assert_eq!(pairs[0]["id"], "row-501");
    assert_eq!(pairs[0]["promote_micros"], 15_000);

    for (uri, named) in [
        ("/api/sheet?state=lost", "state \"lost\""),
        ("/api/sheet?qc=ugly", "qc \"ugly\""),
        ("/api/ids?qc=ugly", "qc \"ugly\""),
    ] {
        let (status, _, body) = get(&review, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(body["error"].as_str().unwrap().contains(named), "{uri}: {body}");
    }
}
