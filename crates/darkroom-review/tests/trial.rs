//! A trial on the review server: its Flash | Photon 1 pairs, and a routing choice posted through
//! the router (`oneshot`, no socket) that the trialled job's next final pass honours: the rows of
//! a group judged "Flash is enough" are sent to the simulator as photon-flash-1, the others as
//! photon-1. A real ledger file and the real simulator on a loopback port.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use darkroom_engine::prepare::{prepare_job, JobFile};
use darkroom_engine::promote::{PreviewReference, PromoteOptions};
use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::trial::sample::{draw, SampleSpec};
use darkroom_engine::trial::{prepare_trial, trial_name, TrialJob, TRIAL_ROUTING};
use darkroom_engine::RunSettings;
use darkroom_jobs::{ChoiceScope, Model, Money, Pass, PriceTable, ReadOptions, Routing};
use darkroom_review::server::hosts_for;
use darkroom_review::{router, ReviewConfig, ReviewState};
use darkroom_testkit::Harness;
use serde_json::Value;
use tower::ServiceExt as _;

const HOST: &str = "127.0.0.1:7879";
const TOKEN: &str = "fedcba9876543210fedcba9876543210";
const JOB_FILE: &str = "id,prompt,group\n\
    mug-1,a ceramic mug on a shelf,coffee\n\
    mug-2,a ceramic mug in the rain,coffee\n\
    shoe-1,an orange trail shoe on a rock,shoes\n\
    shoe-2,an orange trail shoe in mud,shoes\n";

async fn run(h: &Harness, job: &str, job_id: i64, pass: Pass) {
    let mut settings: RunSettings = h.settings(job);
    settings.pass = pass;
    settings.latency_photon_1 = Duration::from_millis(20);
    let (outcome, _) = h.run_collecting(job_id, &settings).await;
    assert_eq!(
        outcome.counts.done, outcome.counts.total,
        "{job} {pass}: every image is made"
    );
}

/// The job file, and its trial made whole (both passes run) on the simulator.
async fn trial(h: &Harness) -> (std::path::PathBuf, i64) {
    let file = h.dir.path().join("shop.csv");
    std::fs::write(&file, JOB_FILE).unwrap();
    let spec = SampleSpec { size: 4, seed: 1 };
    let sample = draw(&file, &ReadOptions::default(), spec).unwrap();
    let name = trial_name("shop");
    let prepared = prepare_trial(
        &h.ledger,
        TrialJob {
            of_job: "shop",
            name: &name,
            sample: &sample,
            spec,
            dir: &h.dir.path().join("out").join(&name),
            budget: None,
            default_budget: Money::parse_usd("1").unwrap(),
            prices: PriceTable::default(),
            read: ReadOptions::default(),
        },
    )
    .await
    .unwrap();
    run(h, &name, prepared.job_id, Pass::Preview).await;
    run(h, &name, prepared.job_id, Pass::Final).await;
    (file, prepared.job_id)
}

fn state(h: &Harness, job_id: i64) -> Arc<ReviewState> {
    review_of(h, &trial_name("shop"), job_id, false)
}

/// A review server for `job`, promoting through the harness's simulator when `promotes`.
fn review_of(h: &Harness, job: &str, job_id: i64, promotes: bool) -> Arc<ReviewState> {
    let mut run = h.settings(job);
    run.pass = Pass::Final;
    let config = ReviewConfig {
        job: job.to_string(),
        job_id,
        ledger_path: h.dir.path().join("darkroom.db"),
        out: h.dir.path().join("out"),
        token: TOKEN.into(),
        hosts: hosts_for(HOST.parse().unwrap()),
        promote: PromoteOptions {
            reference: PreviewReference::ModifyImageRef,
            weight: 0.85,
            model: Model::Photon1,
            price: PriceTable::default().price(Model::Photon1),
            prices: PriceTable::default(),
            choices: Default::default(),
        },
        default_budget: Money::parse_usd("1").unwrap(),
        run,
        callbacks: None,
        routes: None,
    };
    let client = promotes.then(|| h.client.clone());
    ReviewState::new(config, h.ledger.clone(), client, Shutdown::default())
}

async fn call(
    review: &Arc<ReviewState>,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header("x-darkroom-token", token);
    }
    let response = router(review.clone())
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn choices(body: &Value) -> Vec<(String, Value)> {
    body["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["row_id"].as_str().unwrap().to_string(),
                p["choice"]["model"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trial_is_shown_as_pairs_of_both_models_images_for_each_row() {
    let h = Harness::fast().await;
    let (_, trial_id) = trial(&h).await;
    let review = state(&h, trial_id);
    let (status, body) = call(&review, "GET", "/api/trial", None, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["of_job"], "shop");
    let pairs = body["pairs"].as_array().unwrap();
    let rows: Vec<&str> = pairs.iter().map(|p| p["row_id"].as_str().unwrap()).collect();
    assert_eq!(rows, ["mug-1", "mug-2", "shoe-1", "shoe-2"]);
    for pair in pairs {
        assert_eq!(
            (pair["flash"]["done"].clone(), pair["photon"]["done"].clone()),
            (true.into(), true.into()),
            "{pair}"
        );
        assert!(pair["choice"].is_null(), "nothing judged yet: {pair}");
    }
    // Each side's thumbnail is served from its own pass.
    let key = pairs[0]["flash"]["key"].as_str().unwrap();
    for pass in ["preview", "final"] {
        let (status, _) = call(&review, "GET", &format!("/thumb/{pass}/{key}"), None, "").await;
        assert_eq!(status, StatusCode::OK, "{pass}");
    }
    let (status, _) = call(&review, "GET", "/trial", None, "").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_judged_flash_is_enough_makes_the_jobs_next_finals_of_that_group_with_flash() {
    let h = Harness::fast().await;
    let (file, trial_id) = trial(&h).await;
    let review = state(&h, trial_id);

    let choice = r#"{"scope":"group","key":"coffee","model":"photon-flash-1"}"#;
    let (status, _) = call(&review, "POST", "/api/routing", None, choice).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a choice needs the page's token");
    assert!(h.ledger.routing_choices("shop").await.unwrap().is_empty());

    let (status, body) = call(&review, "POST", "/api/routing", Some(TOKEN), choice).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let flash = Value::from("photon-flash-1");
    assert_eq!(
        choices(&body),
        [
            ("mug-1".to_string(), flash.clone()),
            ("mug-2".to_string(), flash.clone()),
            ("shoe-1".to_string(), Value::Null),
            ("shoe-2".to_string(), Value::Null),
        ]
    );
    // One row of the other group needs Photon 1: a row's own choice.
    let row = r#"{"scope":"row","key":"shoe-2","model":"photon-1"}"#;
    let (status, body) = call(&review, "POST", "/api/routing", Some(TOKEN), row).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["pairs"][3]["choice"]["scope"], "row");

    // The job's first final pass, from its file: the coffee group goes to Flash, the rest Photon 1.
    let prepared = prepare_job(
        &h.ledger,
        JobFile {
            name: "shop",
            file: &file,
            pass: Pass::Final,
            budget: None,
            default_budget: Money::parse_usd("1").unwrap(),
            routing: Routing::default(),
            prices: PriceTable::default(),
            read: ReadOptions::default(),
        },
    )
    .await
    .unwrap();
    run(&h, "shop", prepared.job_id, Pass::Final).await;
    let finals = h.ledger.tiles(prepared.job_id, Pass::Final).await.unwrap();
    let mut sent = Vec::new();
    for task in &finals {
        let generation = h
            .client
            .get(task.generation_id.as_deref().unwrap())
            .await
            .unwrap();
        sent.push((task.row_id.as_str(), generation.model.unwrap(), task.price_micros));
    }
    let (f, p) = (
        PriceTable::default().photon_flash_1.micros(),
        PriceTable::default().photon_1.micros(),
    );
    assert_eq!(
        sent,
        [
            ("mug-1", "photon-flash-1".to_string(), f),
            ("mug-2", "photon-flash-1".to_string(), f),
            ("shoe-1", "photon-1".to_string(), p),
            ("shoe-2", "photon-1".to_string(), p),
        ]
    );
    assert_eq!(
        TRIAL_ROUTING.final_,
        Model::Photon1,
        "the trial itself still makes Photon 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_choice_for_a_row_or_group_the_trial_does_not_hold_or_a_bad_model_is_refused() {
    let h = Harness::fast().await;
    let (_, trial_id) = trial(&h).await;
    let review = state(&h, trial_id);
    for (body, says) in [
        (
            r#"{"scope":"group","key":"tea","model":"photon-1"}"#,
            "no group \"tea\"",
        ),
        (
            r#"{"scope":"row","key":"mug-9","model":"photon-1"}"#,
            "no row \"mug-9\"",
        ),
        (r#"{"scope":"row","key":"mug-1","model":"photon-2"}"#, "photon-2"),
        (r#"{"scope":"arm","key":"A","model":"photon-1"}"#, "scope \"arm\""),
    ] {
        let (status, answer) = call(&review, "POST", "/api/routing", Some(TOKEN), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{answer}");
    }
    assert!(h.ledger.routing_choices("shop").await.unwrap().is_empty());
    // Clearing a choice puts the job's routing back.
    let set = r#"{"scope":"row","key":"mug-1","model":"photon-flash-1"}"#;
    let clear = r#"{"scope":"row","key":"mug-1","model":null}"#;
    call(&review, "POST", "/api/routing", Some(TOKEN), set).await;
    assert!(!h.ledger.routing_choices("shop").await.unwrap().is_empty());
    let (status, _) = call(&review, "POST", "/api/routing", Some(TOKEN), clear).await;
    assert_eq!(status, StatusCode::OK);
    assert!(h.ledger.routing_choices("shop").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoting_from_the_review_page_makes_each_final_with_the_model_its_routing_choice_names() {
    let h = Harness::fast().await;
    let (file, _) = trial(&h).await;
    h.ledger
        .set_routing_choice("shop", ChoiceScope::Group, "coffee", Some(Model::PhotonFlash1))
        .await
        .unwrap();
    let prepared = prepare_job(
        &h.ledger,
        JobFile {
            name: "shop",
            file: &file,
            pass: Pass::Preview,
            budget: None,
            default_budget: Money::parse_usd("1").unwrap(),
            routing: Routing::default(),
            prices: PriceTable::default(),
            read: ReadOptions::default(),
        },
    )
    .await
    .unwrap();
    run(&h, "shop", prepared.job_id, Pass::Preview).await;
    let review = review_of(&h, "shop", prepared.job_id, true);
    let (f, p) = (
        PriceTable::default().photon_flash_1.micros(),
        PriceTable::default().photon_1.micros(),
    );

    // The page says what promoting each pair makes before anything is spent.
    let (status, sheet) = call(&review, "GET", "/api/sheet", None, "").await;
    assert_eq!(status, StatusCode::OK, "{sheet}");
    let promote: Vec<(String, Value, Value)> = sheet["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            (
                pair["id"].as_str().unwrap().to_string(),
                pair["promote"]["model"].clone(),
                pair["promote"]["choice"].clone(),
            )
        })
        .collect();
    assert_eq!(
        promote[0],
        ("mug-1".into(), "photon-flash-1".into(), "group".into())
    );
    assert_eq!(promote[2], ("shoe-1".into(), "photon-1".into(), Value::Null));

    let (status, body) = call(
        &review,
        "POST",
        "/api/promote",
        Some(TOKEN),
        r#"{"ids":["mug-1","shoe-1"]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body["cost_micros"],
        f + p,
        "each final at its routed model's price"
    );
    tokio::time::timeout(Duration::from_secs(120), review.finals_finished())
        .await
        .expect("the final pass ends");

    let mut sent = Vec::new();
    for task in h.ledger.tiles(prepared.job_id, Pass::Final).await.unwrap() {
        let generation = h
            .client
            .get(task.generation_id.as_deref().unwrap())
            .await
            .unwrap();
        sent.push((task.row_id, generation.model.unwrap(), task.price_micros));
    }
    assert_eq!(
        sent,
        [
            ("mug-1".to_string(), "photon-flash-1".to_string(), f),
            ("shoe-1".to_string(), "photon-1".to_string(), p),
        ]
    );
    let spent = h
        .ledger
        .pass(prepared.job_id, Pass::Final)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(spent.spent_micros, f + p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trials_report_shows_each_models_figures_its_qc_flag_rate_and_the_projection() {
    let h = Harness::fast().await;
    let (_, trial_id) = trial(&h).await;
    let report = darkroom_review::report::build(&h.ledger, trial_id, &trial_name("shop"))
        .await
        .unwrap();
    let section = report.trial.as_ref().expect("a trial's report has its figures");
    let figures = &section.figures;
    assert_eq!(figures.job, "shop");
    for model in &figures.models {
        assert_eq!(model.images, 4, "{model:?}");
        assert_eq!(
            model.qc_flag_rate,
            Some(0.0),
            "every image measured by the quality checks, none flagged: {model:?}"
        );
    }
    assert!(!section.job_size_known, "the job itself was never run here");
    assert_eq!(
        figures.job_projection.images,
        darkroom_review::report::TRIAL_PROJECTION_IMAGES
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["trial"]["figures"]["models"][1]["model"], "photon-1");

    let html = report.to_html(&h.dir.path().join("out").join(trial_name("shop")));
    assert!(
        html.contains("<h2>Trial</h2>"),
        "the HTML report has the trial's section"
    );
    assert!(html.contains("<td>photon-flash-1</td><td>4</td>"), "{html}");
    assert!(html.contains("Projection for 1000 images"), "{html}");
    assert!(html.contains("QC flag rate</th>") && html.contains("<td>0.0%</td>"));
}
