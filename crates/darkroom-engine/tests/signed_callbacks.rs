//! The callback receiver with a signed provider registered (Replicate's Standard Webhooks, its
//! secret read from the simulator's API): a genuine delivery is a hint (200, one read asked); an
//! unsigned, forged or replayed one is refused with 401, counted, and asks for nothing. A provider
//! whose secret can't be read is not registered, and a create for a provider never registered
//! gets no callback URL.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use darkroom_engine::callbacks::CallbackReceiver;
use darkroom_engine::poller::Poller;
use darkroom_provider::Provider;
use darkroom_replicate::{ApiToken, ClientConfig, ReplicateProvider, WebhookSecret};
use darkroom_sim::{SimConfig, SimHandle};

const TOKEN: &str = "r8_test-token";

fn replicate(sim: &SimHandle, token: &str) -> Arc<dyn Provider> {
    let base = format!("http://{}/replicate/v1", sim.addr());
    let config = ClientConfig {
        request_timeout: Duration::from_secs(5),
        ..ClientConfig::new(base, ApiToken::new(token.into()))
    };
    Arc::new(ReplicateProvider::new(config).unwrap())
}

/// The account's signing secret, as Replicate's API gives it.
async fn secret(sim: &SimHandle) -> WebhookSecret {
    let answer: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "http://{}/replicate/v1/webhooks/default/secret",
            sim.addr()
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    WebhookSecret::parse(answer["key"].as_str().unwrap()).unwrap()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn post(url: &str, headers: &[(&str, String)], body: &str) -> u16 {
    let mut request = reqwest::Client::new().post(url).body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.send().await.unwrap().status().as_u16()
}

fn signed(secret: &WebhookSecret, timestamp: i64, body: &str) -> Vec<(&'static str, String)> {
    let id = "msg_abc";
    let timestamp = timestamp.to_string();
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", timestamp.clone()),
        ("webhook-signature", secret.sign(id, &timestamp, body.as_bytes())),
    ]
}

#[tokio::test]
async fn only_validly_signed_fresh_deliveries_are_hints_and_the_rest_are_refused_with_401() {
    let sim = darkroom_sim::spawn(SimConfig {
        api_key: Some(TOKEN.into()),
        ..SimConfig::unlimited()
    })
    .await
    .unwrap();
    let tracker = tokio_util::task::TaskTracker::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let client = replicate(&sim, TOKEN);
    let poller = Poller::spawn(client.clone(), 10, Duration::from_secs(5), &tracker, stop.clone());
    let receiver = CallbackReceiver::bind(SocketAddr::from(([127, 0, 0, 1], 0)), None).unwrap();
    receiver.serve(poller.clone(), &tracker, stop.clone()).unwrap();

    // Not registered yet: a create on Replicate would name no URL.
    assert!(receiver.new_token_for("replicate").is_none());
    // A token the account refuses can't read the secret: nothing is registered.
    assert!(receiver
        .register(replicate(&sim, "r8_wrong").as_ref(), poller.clone())
        .await
        .is_err());
    assert!(receiver.new_token_for("replicate").is_none());
    receiver.register(client.as_ref(), poller.clone()).await.unwrap();
    let (token, url) = receiver.new_token_for("replicate").unwrap();
    receiver.bind_generation(&token, "prediction-1");

    let body = r#"{"id":"prediction-1","status":"succeeded","output":"https://evil.example/x.jpg"}"#;
    let secret = secret(&sim).await;
    let other = WebhookSecret::parse("whsec_c2VjcmV0IG9mIGFub3RoZXIgYWNjb3VudA==").unwrap();
    // Unsigned, forged (another secret), replayed (ten minutes old), tampered after signing.
    assert_eq!(post(&url, &[], body).await, 401);
    assert_eq!(post(&url, &signed(&other, now(), body), body).await, 401);
    assert_eq!(post(&url, &signed(&secret, now() - 600, body), body).await, 401);
    let tampered = body.replace("succeeded", "failed");
    assert_eq!(post(&url, &signed(&secret, now(), body), &tampered).await, 401);
    let counts = receiver.counts();
    assert_eq!((counts.unverified, counts.received, counts.nudges), (4, 0, 0));

    // A genuine one is taken as a hint: one read asked; a start event asks none.
    assert_eq!(post(&url, &signed(&secret, now(), body), body).await, 200);
    let starting = r#"{"id":"prediction-1","status":"processing"}"#;
    assert_eq!(post(&url, &signed(&secret, now(), starting), starting).await, 200);
    let counts = receiver.counts();
    assert_eq!((counts.unverified, counts.received, counts.nudges), (4, 2, 1));
    // An unknown token is still refused with 403, signed or not.
    let forged_url = format!("{}/{}", receiver.url(), "0123456789abcdef0123456789abcdef");
    assert_eq!(post(&forged_url, &signed(&secret, now(), body), body).await, 403);
    assert_eq!(receiver.counts().refused, 1);

    stop.cancel();
    tracker.close();
    tracker.wait().await;
    sim.shutdown().await;
}
