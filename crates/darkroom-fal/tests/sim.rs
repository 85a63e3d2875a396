//! The fal provider, used as the engine uses it (`Arc<dyn Provider>`), against the simulator's fal
//! API on loopback: submit, status, result, download, the request list, the balance, and the bill.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::sync::Arc;
use std::time::Duration;

use darkroom_fal::{FalConfig, FalKey, FalPrices, FalProvider};
use darkroom_jobs::{AspectRatio, Model};
use darkroom_provider::{CreateRequest, ErrorClass, GenerationState, ImageRef, Provider, Refusal};
use darkroom_sim::{SimConfig, SimHandle};

async fn sim(config: SimConfig) -> SimHandle {
    darkroom_sim::spawn(SimConfig {
        time_scale: 0.02,
        creates_per_minute: None,
        ..config
    })
    .await
    .unwrap()
}

fn provider(sim: &SimHandle, key: &str) -> Arc<dyn Provider> {
    let config = FalConfig {
        queue_url: sim.fal_queue_url(),
        api_url: sim.fal_api_url(),
        ..FalConfig::new(FalKey::new(key.into()))
    };
    Arc::new(FalProvider::new(config).unwrap())
}

fn request(model: &str, prompt: &str, ratio: &str) -> CreateRequest {
    let mut request = CreateRequest::new(model, prompt);
    request.aspect_ratio = Some(ratio.into());
    request
}

/// Reads a generation until it has ended.
async fn finished(provider: &dyn Provider, id: &str) -> darkroom_provider::Generation {
    for _ in 0..500 {
        let generation = provider.get(id).await.unwrap();
        if generation.state.is_terminal() {
            return generation;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{id} never ended");
}

#[tokio::test]
async fn a_submit_completes_downloads_a_jpeg_and_is_billed_its_table_price_per_megapixel() {
    let sim = sim(SimConfig::default()).await;
    let fal = provider(&sim, "fal-test-key-0001");
    let wide = request("photon-1", "A linen sofa", "21:9");
    let square = request("photon-flash-1", "A linen sofa", "1:1");
    let mut expected = 0;
    for sent in [&wide, &square] {
        let created = fal.create(sent).await.unwrap();
        assert_eq!(created.state, GenerationState::Queued);
        let done = finished(fal.as_ref(), &created.id).await;
        assert_eq!(done.state, GenerationState::Completed, "{done:?}");
        let image = fal.download(done.image_url().unwrap(), 50 << 20).await.unwrap();
        assert_eq!(&image[..3], &[0xFF, 0xD8, 0xFF], "a JPEG");
        expected += fal.table_price(sent).unwrap().micros();
    }
    assert_eq!(
        fal.table_price(&wide),
        Some(FalPrices::default().price(Model::Photon1, AspectRatio::Landscape21x9))
    );
    let bill = sim.fal_billing();
    assert_eq!(bill.net_micros, expected, "{bill:?}");
    assert_eq!(sim.billing().net_micros, 0, "the Luma account is untouched");
    let balance = fal.balance().await.unwrap().unwrap();
    assert_eq!(balance.available_micros, bill.balance_micros);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_submit_whose_answer_was_lost_is_found_in_the_request_list_by_what_was_sent() {
    let sim = sim(SimConfig::default()).await;
    let fal = provider(&sim, "fal-test-key-0001");
    let since = time_ms() - 1_000;
    let sent = request("photon-flash-1", "A walnut desk", "4:3");
    let other = request("photon-1", "A walnut desk", "4:3");
    let id = fal.create(&sent).await.unwrap().id;
    let other_id = fal.create(&other).await.unwrap().id;
    let mut found = Vec::new();
    let mut cursor = None;
    loop {
        let page = fal.list_since(since, cursor.as_ref()).await.unwrap();
        found.extend(page.generations);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let matching: Vec<_> = found
        .iter()
        .filter(|g| g.matches_request(&sent))
        .map(|g| &g.id)
        .collect();
    assert_eq!(
        matching,
        vec![&id],
        "only the flash request matches the flash submit"
    );
    assert!(found
        .iter()
        .any(|g| g.id == other_id && g.matches_request(&other)));
    assert!(found.iter().all(|g| g.created_at_ms.unwrap() >= since));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_request_fal_would_make_without_its_references_is_refused_before_anything_is_sent() {
    let sim = sim(SimConfig::default()).await;
    let fal = provider(&sim, "fal-test-key-0001");
    let mut refs = request("photon-1", "A linen sofa", "16:9");
    refs.style_ref = Some(vec![ImageRef {
        url: "https://cdn.example.com/s.jpg".into(),
        weight: None,
    }]);
    let error = fal.create(&refs).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Permanent { status: 422 });
    assert!(error.to_string().contains("a style reference"), "{error}");
    assert!(sim.fal_stats().requests.is_empty(), "nothing reached fal");
    assert_eq!(sim.fal_billing().net_micros, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_wrong_key_is_a_credentials_refusal_and_an_empty_account_a_quota_refusal() {
    let sim = sim(SimConfig {
        api_key: Some("fal-right-key-0001".into()),
        credits_micros: 10_000,
        ..SimConfig::default()
    })
    .await;
    let sent = request("photon-1", "A linen sofa", "1:1");
    let wrong = provider(&sim, "fal-wrong-key-0001")
        .create(&sent)
        .await
        .unwrap_err();
    assert_eq!(wrong.refusal(), Some(Refusal::Credentials), "{wrong}");
    assert_eq!(
        provider(&sim, "fal-wrong-key-0001").balance().await.unwrap(),
        None,
        "a key the billing API refuses reads as no balance"
    );
    // $0.01 of credit is less than one photon-1 image ($0.044827).
    let broke = provider(&sim, "fal-right-key-0001")
        .create(&sent)
        .await
        .unwrap_err();
    assert_eq!(broke.refusal(), Some(Refusal::Quota), "{broke}");
    assert_eq!(sim.fal_billing().net_micros, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_moderated_request_ends_failed_with_fals_reason_and_is_refunded() {
    let sim = sim(SimConfig {
        faults: darkroom_sim::Faults {
            moderation: 1.0,
            ..darkroom_sim::Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let fal = provider(&sim, "fal-test-key-0001");
    let id = fal
        .create(&request("photon-flash-1", "p", "1:1"))
        .await
        .unwrap()
        .id;
    let done = finished(fal.as_ref(), &id).await;
    assert_eq!(done.state, GenerationState::Failed);
    let reason = done.failure_reason.unwrap();
    assert_eq!(
        darkroom_provider::FailureKind::classify(&reason),
        darkroom_provider::FailureKind::Blocked,
        "{reason}"
    );
    let bill = sim.fal_billing();
    assert_eq!((bill.charged_micros, bill.net_micros), (11_797, 0));
    sim.shutdown().await;
}

fn time_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[tokio::test]
async fn the_simulators_webhook_delivery_verifies_against_its_published_keys_and_a_tampered_one_does_not() {
    use axum::http::HeaderMap;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(HeaderMap, axum::body::Bytes)>();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook?task=t-1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    let sim = sim(SimConfig::default()).await;
    let fal = provider(&sim, "fal-test-key-0001");
    let mut sent = request("photon-flash-1", "A linen sofa", "1:1");
    sent.callback_url = Some(hook);
    let id = fal.create(&sent).await.unwrap().id;
    let (headers, body) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let delivery: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(delivery["request_id"], id.as_str());
    assert_eq!(delivery["status"], "OK");
    let verifier = darkroom_fal::WebhookVerifier::fetch(&sim.fal_jwks_url(), Duration::from_secs(5))
        .await
        .unwrap();
    let now = time_ms() / 1000;
    assert_eq!(verifier.verify(&headers, &body, now), Ok(()));
    let tampered = String::from_utf8(body.to_vec())
        .unwrap()
        .replace("\"OK\"", "\"ERROR\"");
    assert_eq!(
        verifier.verify(&headers, tampered.as_bytes(), now),
        Err(darkroom_fal::WebhookError::BadSignature)
    );
    sim.shutdown().await;
}
