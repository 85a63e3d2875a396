//! The Replicate provider, used as the engine uses it (`Arc<dyn Provider>`), against the
//! simulator's Replicate API on loopback: creates, reads, the list with its cursor pages and input
//! match, downloads, retention, throttling, refusals and lost answers, each produced for real.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::sync::Arc;
use std::time::Duration;

use darkroom_provider::{
    CreateRequest, ErrorClass, GenerationState, ImageRef, PageCursor, Provider, Refusal,
};
use darkroom_replicate::{ApiToken, ClientConfig, ReplicateProvider};
use darkroom_sim::{Faults, SimConfig, SimHandle};

const TOKEN: &str = "r8_test-token-0123456789";

async fn sim(config: SimConfig) -> SimHandle {
    darkroom_sim::spawn(SimConfig {
        api_key: Some(TOKEN.into()),
        ..config
    })
    .await
    .unwrap()
}

fn base(sim: &SimHandle) -> String {
    format!("http://{}/replicate/v1", sim.addr())
}

fn provider_with(sim: &SimHandle, token: &str) -> Arc<dyn Provider> {
    let config = ClientConfig {
        request_timeout: Duration::from_secs(5),
        ..ClientConfig::new(base(sim), ApiToken::new(token.into()))
    };
    Arc::new(ReplicateProvider::new(config).unwrap())
}

fn provider(sim: &SimHandle) -> Arc<dyn Provider> {
    provider_with(sim, TOKEN)
}

fn request(prompt: &str) -> CreateRequest {
    let mut request = CreateRequest::new("photon-flash-1", prompt);
    request.aspect_ratio = Some("1:1".into());
    request.image_ref = Some(vec![ImageRef {
        url: "https://cdn.example.com/chair.jpg".into(),
        weight: Some(0.6),
    }]);
    request
}

#[tokio::test]
async fn a_prediction_is_made_read_downloaded_and_billed_at_replicates_price() {
    let sim = sim(SimConfig::unlimited()).await;
    let client = provider(&sim);
    let created = client.create(&request("a red chair")).await.unwrap();
    assert!(created.matches_request(&request("a red chair")), "{created:?}");
    let read = client.get(&created.id).await.unwrap();
    assert_eq!(read.state, GenerationState::Completed);
    let url = read.image_url().unwrap();
    assert!(url.contains("/replicate/delivery/"), "{url}");
    let bytes = client.download(url, 10 << 20).await.unwrap();
    assert_eq!(&bytes[..2], &[0xFF, 0xD8], "a JPEG");
    let billing = sim.billing();
    assert_eq!(billing.net_micros, 10_000, "$0.01 for photon-flash");
    assert_eq!(billing.entries[0].provider, "replicate");
    assert_eq!(
        client.balance().await.unwrap(),
        None,
        "Replicate has no balance API"
    );
    assert_eq!(client.table_price(&request("x")).unwrap().micros(), 10_000);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_found_in_the_list_by_its_input() {
    let sim = sim(SimConfig {
        faults: Faults {
            create_dropped: 1.0,
            ..Faults::default()
        },
        ..SimConfig::unlimited()
    })
    .await;
    let client = provider(&sim);
    let sent = request("a lost chair");
    let error = client.create(&sent).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::OutcomeUnknown, "{error}");
    let page = client.list_since(0, None).await.unwrap();
    let found: Vec<_> = page
        .generations
        .iter()
        .filter(|g| g.matches_request(&sent))
        .collect();
    assert_eq!(found.len(), 1, "{page:?}");
    let mut other = sent.clone();
    other.image_ref = None;
    assert!(
        !found[0].matches_request(&other),
        "a different input is not a match"
    );
    assert_eq!(
        sim.billing().net_micros,
        10_000,
        "it was charged: adopting it pays once"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn the_list_follows_replicates_cursor_pages_and_stops_at_created_after() {
    let sim = sim(SimConfig::unlimited()).await;
    let client = provider(&sim);
    for n in 0..130 {
        client.create(&request(&format!("chair {n}"))).await.unwrap();
    }
    let first = client.list_since(0, None).await.unwrap();
    assert_eq!(first.generations.len(), 100);
    let next = first.next.clone().expect("a second page");
    let second = client.list_since(0, Some(&next)).await.unwrap();
    assert_eq!(second.generations.len(), 30);
    assert_eq!(second.next, None);
    assert_eq!(
        second
            .generations
            .last()
            .unwrap()
            .request
            .as_ref()
            .unwrap()
            .prompt
            .as_deref(),
        Some("chair 0")
    );
    let future = first.generations[0].created_at_ms().unwrap() + 60_000;
    assert!(client
        .list_since(future, None)
        .await
        .unwrap()
        .generations
        .is_empty());
    let elsewhere = PageCursor::new("http://127.0.0.2:9/v1/predictions?cursor=100");
    let refused = client.list_since(0, Some(&elsewhere)).await.unwrap_err();
    assert!(
        refused.to_string().contains("is not on"),
        "the token goes nowhere else: {refused}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn an_output_replicate_deleted_is_said_so_and_no_longer_downloads() {
    let sim = sim(SimConfig {
        replicate: darkroom_sim::ReplicateSim {
            retention: Duration::ZERO,
            ..darkroom_sim::ReplicateSim::default()
        },
        ..SimConfig::unlimited()
    })
    .await;
    let client = provider(&sim);
    let created = client.create(&request("a chair")).await.unwrap();
    let read = client.get(&created.id).await.unwrap();
    assert_eq!(read.state, GenerationState::Completed);
    assert_eq!(read.image_url(), None);
    assert!(
        read.failure_reason
            .as_deref()
            .unwrap()
            .contains("deleted the output"),
        "{read:?}"
    );
    assert_eq!(read.request, None, "its input is gone too");
    let gone = format!("http://{}/replicate/delivery/{}.jpg", sim.addr(), created.id);
    let error = client.download(&gone, 10 << 20).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Permanent { status: 404 });
    sim.shutdown().await;
}

#[tokio::test]
async fn a_throttled_create_waits_as_long_as_replicates_reset_hint_says() {
    let sim = sim(SimConfig {
        replicate: darkroom_sim::ReplicateSim {
            creates_per_minute: Some(2),
            ..darkroom_sim::ReplicateSim::default()
        },
        time_scale: 1.0,
        ..SimConfig::unlimited()
    })
    .await;
    let client = provider(&sim);
    client.create(&request("one")).await.unwrap();
    client.create(&request("two")).await.unwrap();
    let error = client.create(&request("three")).await.unwrap_err();
    let ErrorClass::RateLimited {
        retry_after: Some(wait),
    } = error.class()
    else {
        panic!("{error} is not a rate limit");
    };
    assert!(
        wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    assert!(!error.is_refusal());
    assert_eq!(
        sim.billing().entries.len(),
        2,
        "the throttled create was not charged"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_rejected_token_and_an_account_without_credit_are_refusals_and_the_token_never_shows() {
    let sim = sim(SimConfig {
        credits_micros: 20_000,
        ..SimConfig::unlimited()
    })
    .await;
    let wrong = "r8_wrong-token-9876543210";
    let error = provider_with(&sim, wrong)
        .create(&request("x y z"))
        .await
        .unwrap_err();
    assert_eq!(error.refusal(), Some(Refusal::Credentials), "{error}");
    assert!(!error.to_string().contains(wrong));
    let mut photon = request("a chair");
    photon.model = "photon-1".into();
    let error = provider(&sim).create(&photon).await.unwrap_err();
    assert_eq!(error.refusal(), Some(Refusal::Quota), "{error}");
    assert_eq!(sim.billing().net_micros, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_request_replicate_would_make_only_in_part_is_refused_before_anything_is_sent() {
    let sim = sim(SimConfig::unlimited()).await;
    let client = provider(&sim);
    let mut two = request("two references");
    two.image_ref.as_mut().unwrap().push(ImageRef {
        url: "https://cdn.example.com/table.jpg".into(),
        weight: None,
    });
    let mut modify = request("modify");
    modify.modify_image_ref = Some(ImageRef {
        url: "https://cdn.example.com/a.jpg".into(),
        weight: None,
    });
    let mut png = request("png");
    png.format = Some("png".into());
    for (request, reason) in [
        (two, "2 image references (takes at most 1)"),
        (modify, "modify_image_ref"),
        (png, "format png"),
    ] {
        let error = client.create(&request).await.unwrap_err();
        assert!(matches!(error.class(), ErrorClass::Permanent { .. }), "{error}");
        assert!(error.to_string().contains(reason), "{error}");
    }
    assert!(sim.stats().requests.is_empty(), "{:?}", sim.stats().requests);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_server_error_on_create_is_an_unknown_outcome_and_on_a_read_is_transient() {
    let sim = sim(SimConfig {
        faults: Faults {
            create_5xx: 1.0,
            get_5xx: 1.0,
            ..Faults::default()
        },
        ..SimConfig::unlimited()
    })
    .await;
    let client = provider(&sim);
    let error = client.create(&request("a chair")).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::OutcomeUnknown, "{error}");
    let error = client.get("no-such-id").await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Transient, "{error}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_prediction_the_account_never_made_is_not_found() {
    let sim = sim(SimConfig::unlimited()).await;
    let error = provider(&sim).get("nope").await.unwrap_err();
    assert!(error.is_not_found(), "{error}");
    sim.shutdown().await;
}
