//! The simulator's `POST /generations/image/reframe` over real HTTP: its schema, its source looked
//! up among the account's own images, the source picture inside the new canvas, billing as a
//! generation of its model, and listing beside the account's other generations.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::time::Duration;

use darkroom_sim::{SimConfig, SimHandle};
use serde_json::{json, Value};

fn quick() -> SimConfig {
    SimConfig {
        time_scale: 0.01,
        creates_per_minute: None,
        max_concurrent: None,
        ..SimConfig::default()
    }
}

async fn post(sim: &SimHandle, http: &reqwest::Client, path: &str, body: &Value) -> reqwest::Response {
    http.post(format!("{}{path}", sim.base_url()))
        .bearer_auth("k")
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn get(http: &reqwest::Client, url: &str) -> Value {
    http.get(url)
        .bearer_auth("k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A completed 16:9 picture of the account: its generation and image URL.
async fn source(sim: &SimHandle, http: &reqwest::Client) -> (Value, String) {
    let body = json!({"model": "photon-flash-1", "prompt": "A linen sofa", "aspect_ratio": "16:9"});
    let created: Value = post(sim, http, "/generations/image", &body)
        .await
        .json()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let done = get(
        http,
        &format!(
            "{}/generations/{}",
            sim.base_url(),
            created["id"].as_str().unwrap()
        ),
    )
    .await;
    let url = done["assets"]["image"].as_str().unwrap().to_string();
    (done, url)
}

fn reframe_body(url: &str, aspect_ratio: &str) -> Value {
    json!({"generation_type": "reframe_image", "media": {"url": url}, "model": "photon-1",
           "prompt": "A linen sofa", "aspect_ratio": aspect_ratio})
}

#[tokio::test]
async fn a_reframe_extends_its_source_to_the_new_shape_and_is_billed_and_listed_as_a_generation() {
    let sim = darkroom_sim::spawn(quick()).await.unwrap();
    let http = reqwest::Client::new();
    let (_, source_url) = source(&sim, &http).await;
    let response = post(
        &sim,
        &http,
        "/generations/image/reframe",
        &reframe_body(&source_url, "9:16"),
    )
    .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["state"], "queued");
    assert_eq!(created["request"]["generation_type"], "reframe_image");
    assert_eq!(created["request"]["media"]["url"], source_url.as_str());
    assert_eq!(created["request"]["aspect_ratio"], "9:16");
    tokio::time::sleep(Duration::from_millis(80)).await;
    let id = created["id"].as_str().unwrap();
    let done = get(&http, &format!("{}/generations/{id}", sim.base_url())).await;
    assert_eq!(done["state"], "completed");
    let bytes = http
        .get(done["assets"]["image"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let reframed = image::load_from_memory(&bytes).unwrap().to_rgb8();
    assert_eq!((reframed.width(), reframed.height()), (1152, 2048));
    // The source (2048×1152) fills the canvas's width: its middle row is the reframe's middle row.
    let original = http.get(&source_url).send().await.unwrap().bytes().await.unwrap();
    let original = image::load_from_memory(&original).unwrap().to_rgb8();
    let scaled = image::imageops::resize(&original, 1152, 648, image::imageops::FilterType::Nearest);
    let close = |a: &image::Rgb<u8>, b: &image::Rgb<u8>| a.0.iter().zip(b.0).all(|(x, y)| x.abs_diff(y) < 40);
    let top = (2048 - 648) / 2;
    let matching = (0..1152)
        .step_by(16)
        .filter(|&x| close(scaled.get_pixel(x, 324), reframed.get_pixel(x, top + 324)))
        .count();
    assert!(
        matching >= 60,
        "the source's content is inside the canvas: {matching} of 72"
    );

    let billing = sim.billing();
    assert_eq!(
        billing.charged_micros,
        4_000 + 15_000,
        "priced as a photon-1 generation"
    );
    assert!(billing
        .entries
        .iter()
        .any(|e| e.generation_id == id && e.model == "photon-1"));
    let list = get(&http, &format!("{}/generations?limit=10", sim.base_url())).await;
    assert_eq!(
        list["generations"][0]["id"], id,
        "listed newest first like any generation"
    );
    assert_eq!(
        list["generations"][0]["request"]["media"]["url"],
        source_url.as_str()
    );
}

#[tokio::test]
async fn a_reframe_whose_source_is_gone_or_not_ours_is_refused_and_costs_nothing() {
    let sim = darkroom_sim::spawn(quick()).await.unwrap();
    let http = reqwest::Client::new();
    let (done, source_url) = source(&sim, &http).await;
    let deleted = http
        .delete(format!(
            "{}/generations/{}",
            sim.base_url(),
            done["id"].as_str().unwrap()
        ))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let charged = sim.billing().charged_micros;
    for url in [
        source_url.as_str(),
        "/home/me/out/job/final/a.jpg",
        "https://example.com/x.jpg",
    ] {
        let response = post(
            &sim,
            &http,
            "/generations/image/reframe",
            &reframe_body(url, "1:1"),
        )
        .await;
        assert_eq!(response.status(), 400, "{url}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["detail"].as_str().unwrap().contains("Could not fetch media"),
            "{body}"
        );
    }
    assert_eq!(sim.billing().charged_micros, charged, "nothing charged");
}

#[tokio::test]
async fn a_reframe_without_its_required_fields_gets_every_schema_error_at_once() {
    let sim = darkroom_sim::spawn(quick()).await.unwrap();
    let http = reqwest::Client::new();
    let response = post(
        &sim,
        &http,
        "/generations/image/reframe",
        &json!({"model": "photon-3", "prompt": "x"}),
    )
    .await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    let fields: Vec<&str> = body["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["loc"][1].as_str().unwrap())
        .collect();
    for field in ["generation_type", "model", "aspect_ratio", "media"] {
        assert!(fields.contains(&field), "{field} in {body}");
    }
    assert_eq!(sim.billing().charged_micros, 0);
}
