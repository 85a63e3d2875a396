//! A simulated account kept in a state directory: what one simulator did (generations, pictures,
//! billing, credit) is there for the next, times survive the restart anchored to the wall clock,
//! and simulators sharing a directory at once lose nothing of each other's.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::path::Path;
use std::time::Duration;

use darkroom_sim::{Faults, SimConfig, SimHandle};
use serde_json::{json, Value};

fn kept_in(dir: &Path) -> SimConfig {
    SimConfig {
        time_scale: 0.01,
        creates_per_minute: None,
        max_concurrent: None,
        state_dir: Some(dir.to_path_buf()),
        ..SimConfig::default()
    }
}

async fn create(sim: &SimHandle, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/generations/image", sim.base_url()))
        .bearer_auth("k")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn get(sim: &SimHandle, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}{path}", sim.base_url()))
        .bearer_auth("k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The generation's image URL and bytes, once it completed.
async fn image_of(sim: &SimHandle, id: &str) -> (String, bytes::Bytes) {
    for _ in 0..500 {
        let generation = get(sim, &format!("/generations/{id}")).await;
        if let Some(url) = generation["assets"]["image"].as_str() {
            let response = reqwest::get(url).await.unwrap();
            assert_eq!(response.status(), 200, "{url}");
            return (url.to_string(), response.bytes().await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("generation {id} did not complete");
}

const PREVIEW: &str = "A walnut side table in a bright room";

#[tokio::test]
async fn the_next_simulator_on_a_state_directory_has_the_account_its_urls_and_its_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let first = darkroom_sim::spawn(kept_in(dir.path())).await.unwrap();
    let preview = create(
        &first,
        json!({"model": "photon-flash-1", "prompt": PREVIEW, "aspect_ratio": "4:3"}),
    )
    .await;
    let id = preview["id"].as_str().unwrap().to_string();
    let (url, picture) = image_of(&first, &id).await;
    let billing = first.billing();
    assert_eq!(billing.net_micros, 4_000);
    first.shutdown().await;

    let second = darkroom_sim::spawn(kept_in(dir.path())).await.unwrap();
    let read = get(&second, &format!("/generations/{id}")).await;
    assert_eq!(read["state"], "completed", "{read:#}");
    assert_eq!(read["request"]["prompt"], PREVIEW);
    let listed = get(&second, "/generations").await;
    assert_eq!(listed["generations"][0]["id"], id.as_str());
    let later = second.billing();
    assert_eq!(
        (later.net_micros, later.balance_micros, later.entries.len()),
        (billing.net_micros, billing.balance_micros, 1),
        "the bill goes on from where it was"
    );
    let credits = get(&second, "/credits").await;
    assert_eq!(credits["credit_balance"], json!(9_999.6));

    // The URL the first simulator handed out still resolves, to the same picture.
    let again = reqwest::get(&url).await.unwrap();
    assert_eq!(again.status(), 200, "{url}");
    assert_eq!(again.bytes().await.unwrap(), picture);

    // A final made from that URL redoes the picture, whichever loopback port the URL names.
    for reference in [url.clone(), url.replace(&second.addr().port().to_string(), "1")] {
        let final_ = create(
            &second,
            json!({"model": "photon-1", "prompt": PREVIEW, "aspect_ratio": "4:3",
                   "modify_image_ref": {"url": reference, "weight": 0.85}}),
        )
        .await;
        let (_, final_picture) = image_of(&second, final_["id"].as_str().unwrap()).await;
        assert_eq!(final_picture, picture, "made from {reference}");
    }
    assert_eq!(second.billing().net_micros, 4_000 + 2 * 15_000);
    second.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_generation_unfinished_at_shutdown_finishes_after_the_restart_and_a_failure_is_refunded_once() {
    let dir = tempfile::tempdir().unwrap();
    let slow = |generation_failed: f64| SimConfig {
        time_scale: 1.0,
        latency_photon_1: (10_000.0, 10_000.0),
        faults: Faults {
            generation_failed,
            ..Faults::default()
        },
        ..kept_in(dir.path())
    };
    let first = darkroom_sim::spawn(slow(0.0)).await.unwrap();
    let made = create(&first, json!({"model": "photon-1", "prompt": PREVIEW})).await;
    first.shutdown().await;
    let second = darkroom_sim::spawn(slow(1.0)).await.unwrap();
    let failing = create(&second, json!({"model": "photon-1", "prompt": "A second table"})).await;
    second.shutdown().await;

    let third = darkroom_sim::spawn(slow(0.0)).await.unwrap();
    for id in [&made["id"], &failing["id"]] {
        let read = get(&third, &format!("/generations/{}", id.as_str().unwrap())).await;
        assert_ne!(read["state"], "completed", "not before its end: {read:#}");
        assert_ne!(read["state"], "failed", "not before its end: {read:#}");
    }
    assert_eq!(third.billing().net_micros, 2 * 15_000);
    tokio::time::advance(Duration::from_secs(10_001)).await;
    let done = get(&third, &format!("/generations/{}", made["id"].as_str().unwrap())).await;
    assert_eq!(done["state"], "completed", "{done:#}");
    let failed = get(
        &third,
        &format!("/generations/{}", failing["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(failed["state"], "failed", "{failed:#}");
    third.shutdown().await;

    let fourth = darkroom_sim::spawn(kept_in(dir.path())).await.unwrap();
    let billing = fourth.billing();
    assert_eq!(
        (
            billing.charged_micros,
            billing.refunded_micros,
            billing.net_micros
        ),
        (30_000, 15_000, 15_000),
        "the failure is refunded once: {billing:?}"
    );
    fourth.shutdown().await;
}

#[tokio::test]
async fn simulators_sharing_a_state_directory_at_once_lose_none_of_each_others_generations() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        darkroom_sim::spawn(kept_in(dir.path())).await.unwrap(),
        darkroom_sim::spawn(kept_in(dir.path())).await.unwrap(),
    );
    assert_ne!(a.addr(), b.addr());
    let mut ids = Vec::new();
    for (i, sim) in [&a, &b, &a, &b].into_iter().enumerate() {
        let body = json!({"model": "photon-flash-1", "prompt": format!("Chair number {i}")});
        let id = create(sim, body).await["id"].as_str().unwrap().to_string();
        image_of(sim, &id).await;
        ids.push(id);
    }
    a.shutdown().await;
    b.shutdown().await;

    let next = darkroom_sim::spawn(kept_in(dir.path())).await.unwrap();
    let listed = get(&next, "/generations").await;
    let mut seen: Vec<String> = listed["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap().to_string())
        .collect();
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    assert_eq!(next.billing().net_micros, 4 * 4_000);
    next.shutdown().await;
}

#[tokio::test]
async fn an_account_file_that_is_not_one_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("account.json"), "not an account").unwrap();
    let error = darkroom_sim::spawn(kept_in(dir.path())).await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("account.json"), "{text}");
}

#[tokio::test]
async fn the_fal_account_is_kept_beside_lumas_so_the_next_simulator_has_its_requests_and_its_bill() {
    let dir = tempfile::tempdir().unwrap();
    let first = darkroom_sim::spawn(kept_in(dir.path())).await.unwrap();
    let client = reqwest::Client::new();
    let submitted: Value = client
        .post(format!("{}/fal-ai/luma-photon/flash", first.fal_queue_url()))
        .header("Authorization", "Key k")
        .json(&json!({"prompt": PREVIEW, "aspect_ratio": "1:1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = submitted["request_id"].as_str().unwrap().to_string();
    let status_url =
        |sim: &SimHandle| format!("{}/fal-ai/luma-photon/requests/{id}/status", sim.fal_queue_url());
    for _ in 0..500 {
        let status: Value = client
            .get(status_url(&first))
            .header("Authorization", "Key k")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["status"] == "COMPLETED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let billed = first.fal_billing();
    assert!(billed.net_micros > 0, "{billed:?}");
    assert_eq!(first.billing().net_micros, 0, "Luma's account is not fal's");
    first.shutdown().await;
    assert!(dir.path().join("fal-account.json").is_file());

    let second = darkroom_sim::spawn(kept_in(dir.path())).await.unwrap();
    assert_eq!(second.fal_billing().net_micros, billed.net_micros);
    assert_eq!(second.fal_billing().entries.len(), billed.entries.len());
    let status = client
        .get(status_url(&second))
        .header("Authorization", "Key k")
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200, "the request is known to the next simulator");
    second.shutdown().await;
}
