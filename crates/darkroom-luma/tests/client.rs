//! The Luma provider, used as the engine uses it (`Arc<dyn Provider>`), against small real servers
//! on loopback that misbehave on purpose: every error class is produced for real, and the key never
//! leaks.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::time::Duration;

use std::sync::Arc;

use darkroom_luma::{ApiKey, ClientConfig, LumaProvider};
use darkroom_provider::{CreateRequest, ErrorClass, Provider, Refusal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const KEY: &str = "luma-secret-test-key-123";

/// The provider for `base` with short timeouts (the servers here answer at once or never).
fn config(base: &str, key: &str) -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(800),
        download_timeout: Duration::from_secs(2),
        user_agent: "darkroom-tests".into(),
        ..ClientConfig::new(base, ApiKey::new(key.to_string()))
    }
}

fn client(base: &str) -> Arc<dyn Provider> {
    Arc::new(LumaProvider::new(config(base, KEY)).unwrap())
}

fn request() -> CreateRequest {
    serde_json::from_value(
        serde_json::json!({"model": "photon-flash-1", "prompt": "A linen sofa", "aspect_ratio": "16:9"}),
    )
    .unwrap()
}

/// A one-connection-at-a-time server that answers each request with `answer(request_text)`.
/// `None` closes the connection without answering.
async fn server(
    answer: fn(&str) -> Option<String>,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut read = 0;
                loop {
                    let Ok(n) = socket.read(&mut buf[read..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    read += n;
                    let text = String::from_utf8_lossy(&buf[..read]).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if read >= end + 4 + length {
                            let _ = tx.send(text.clone());
                            match answer(&text) {
                                Some(response) => {
                                    let _ = socket.write_all(response.as_bytes()).await;
                                    let _ = socket.shutdown().await;
                                }
                                None => drop(socket),
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    (format!("http://{addr}/dream-machine/v1"), rx)
}

fn http(status: &str, headers: &str, body: &str) -> Option<String> {
    Some(format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
        body.len()
    ))
}

#[tokio::test]
async fn a_refused_connection_is_never_sent() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let error = client(&format!("http://{addr}/dream-machine/v1"))
        .create(&request())
        .await
        .unwrap_err();
    assert_eq!(error.class(), ErrorClass::NeverSent, "{error}");
}

#[tokio::test]
async fn a_connection_dropped_after_the_create_was_sent_is_an_unknown_outcome() {
    let (base, mut seen) = server(|_| None).await;
    let error = client(&base).create(&request()).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::OutcomeUnknown, "{error}");
    assert!(
        seen.recv().await.unwrap().contains("A linen sofa"),
        "the request was written"
    );
    // The same failure on a read is merely transient.
    let error = client(&base).get("abc").await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Transient, "{error}");
}

#[tokio::test]
async fn a_create_that_times_out_after_sending_is_an_unknown_outcome() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(socket);
    });
    let error = client(&format!("http://{addr}/dream-machine/v1"))
        .create(&request())
        .await
        .unwrap_err();
    assert_eq!(error.class(), ErrorClass::OutcomeUnknown, "{error}");
}

#[tokio::test]
async fn a_proxy_html_502_on_create_is_unknown_and_kept_short() {
    let (base, _) = server(|_| {
        http(
            "502 Bad Gateway",
            "content-type: text/html\r\n",
            &format!("<html>{}</html>", "x".repeat(5000)),
        )
    })
    .await;
    let error = client(&base).create(&request()).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::OutcomeUnknown);
    assert!(error.to_string().len() < 400, "{error}");
}

#[tokio::test]
async fn a_429_carries_its_retry_after_in_seconds_or_as_a_date() {
    let (base, _) = server(|_| {
        http(
            "429 Too Many Requests",
            "retry-after: 7\r\n",
            r#"{"detail":"Too many requests"}"#,
        )
    })
    .await;
    let error = client(&base).create(&request()).await.unwrap_err();
    assert_eq!(
        error.class(),
        ErrorClass::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        }
    );

    let (base, _) = server(|_| {
        let at = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        http("429 Too Many Requests", &format!("retry-after: {at}\r\n"), "")
    })
    .await;
    match client(&base).create(&request()).await.unwrap_err().class() {
        ErrorClass::RateLimited { retry_after: Some(d) } => assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn permanent_errors_carry_their_detail_and_refusals_are_recognised() {
    let (base, _) = server(|_| {
        http(
            "401 Unauthorized",
            "",
            r#"{"detail":"Invalid API key is provided"}"#,
        )
    })
    .await;
    let error = client(&base).balance().await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Permanent { status: 401 });
    assert!(error.is_refusal());
    assert_eq!(error.refusal(), Some(Refusal::Credentials));
    assert_eq!(error.detail(), Some("Invalid API key is provided"));
    assert!(error.to_string().contains("Invalid API key is provided"));

    let (base, _) = server(|_| {
        http("422 Unprocessable Entity", "", r#"{"detail":[{"type":"enum","loc":["body","aspect_ratio"],"msg":"Input should be '1:1'","input":"5:4"}]}"#)
    })
    .await;
    let error = client(&base).create(&request()).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Permanent { status: 422 });
    assert!(!error.is_refusal());
    assert!(
        error
            .to_string()
            .contains("body.aspect_ratio: Input should be '1:1'"),
        "{error}"
    );
}

#[tokio::test]
async fn the_key_goes_to_the_api_but_never_with_a_download_and_never_into_errors() {
    let (base, mut seen) = server(|request| {
        if request.starts_with("GET /asset") {
            http("200 OK", "content-type: image/jpeg\r\n", "jpegbytes")
        } else {
            http(
                "400 Bad Request",
                "",
                r#"{"detail":"Prompt is too short, minimum length is 3 characters"}"#,
            )
        }
    })
    .await;
    let client = client(&base);
    let error = client.create(&request()).await.unwrap_err();
    assert!(seen
        .recv()
        .await
        .unwrap()
        .contains(&format!("authorization: Bearer {KEY}")));
    assert!(!format!("{error} {error:?}").contains(KEY));
    let origin = base.trim_end_matches("/dream-machine/v1");
    let bytes = client
        .download(&format!("{origin}/asset/x.jpg"), 1024)
        .await
        .unwrap();
    assert_eq!(&bytes[..], b"jpegbytes");
    let download_request = seen.recv().await.unwrap();
    assert!(
        !download_request.to_ascii_lowercase().contains("authorization"),
        "{download_request}"
    );
    assert!(!format!("{client:?}").contains(KEY));
}

#[tokio::test]
async fn a_truncated_download_is_refused() {
    let (base, _) = server(|_| {
        Some("HTTP/1.1 200 OK\r\ncontent-length: 1000\r\nconnection: close\r\n\r\nonly-a-little".to_string())
    })
    .await;
    let origin = base.trim_end_matches("/dream-machine/v1");
    let error = client(&base)
        .download(&format!("{origin}/a.jpg"), 1 << 20)
        .await
        .unwrap_err();
    assert_eq!(error.class(), ErrorClass::Transient, "{error}");
}

#[tokio::test]
async fn a_server_echoing_the_key_back_does_not_put_it_into_the_error() {
    let (base, _) = server(|request| {
        let auth = request
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("authorization"))
            .unwrap_or("")
            .to_string();
        http(
            "400 Bad Request",
            "",
            &format!("{{\"detail\": \"bad request: {auth}\"}}"),
        )
    })
    .await;
    let error = client(&base).create(&request()).await.unwrap_err();
    let shown = format!("{error} {error:?}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(!shown.contains(KEY), "{shown}");
}

#[tokio::test]
async fn a_key_too_short_to_be_real_does_not_mangle_the_upstreams_words() {
    let (base, _) = server(|_| {
        http(
            "429 Too Many Requests",
            "",
            r#"{"detail": "Monthly usage limit exceeded"}"#,
        )
    })
    .await;
    let client = LumaProvider::new(config(&base, "x")).unwrap();
    let error = client.create(&request()).await.unwrap_err();
    assert!(
        error.to_string().contains("Monthly usage limit exceeded"),
        "{error}"
    );
}

#[tokio::test]
async fn a_429_naming_a_monthly_limit_is_a_quota_refusal_through_the_provider() {
    let (base, _) = server(|_| {
        http(
            "429 Too Many Requests",
            "retry-after: 7\r\n",
            r#"{"detail": "Monthly usage limit exceeded"}"#,
        )
    })
    .await;
    let error = client(&base).create(&request()).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Permanent { status: 429 }, "{error}");
    assert_eq!(error.refusal(), Some(Refusal::Quota));
    assert_eq!(error.status(), Some(429));
    assert_eq!(error.operation(), "create");
}

#[tokio::test]
async fn a_create_sends_the_neutral_request_as_lumas_body_leaving_unset_fields_out() {
    let (base, mut seen) = server(|_| {
        http(
            "201 Created",
            "content-type: application/json\r\n",
            r#"{"id":"g1","state":"queued","created_at":"2026-11-24T09:30:19Z",
                "request":{"model":"photon-flash-1","prompt":"A linen sofa","aspect_ratio":"16:9","image_ref":null}}"#,
        )
    })
    .await;
    let mut sent = request();
    sent.image_ref = Some(vec![darkroom_provider::ImageRef {
        url: "https://cdn.example.com/a.jpg".into(),
        weight: Some(0.5),
    }]);
    let created = client(&base).create(&sent).await.unwrap();
    let text = seen.recv().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"model": "photon-flash-1", "prompt": "A linen sofa", "aspect_ratio": "16:9",
            "image_ref": [{"url": "https://cdn.example.com/a.jpg", "weight": 0.5}]})
    );
    assert_eq!(created.id, "g1");
    assert_eq!(created.created_at_ms(), Some(1_795_512_619_000));
    assert!(
        created.matches_request(&request()),
        "the echo is the request without the reference"
    );
    assert!(
        !created.matches_request(&sent),
        "the echo names no reference: not this request"
    );
}

#[tokio::test]
async fn the_list_goes_on_by_offset_until_it_reaches_generations_older_than_asked() {
    let (base, mut seen) = server(|request| {
        let old = request.contains("offset=100");
        let created = if old { "2026-11-24T09:00:00Z" } else { "2026-11-24T10:00:00Z" };
        http(
            "200 OK",
            "content-type: application/json\r\n",
            &format!(r#"{{"generations":[{{"id":"a","state":"completed","created_at":"{created}"}}],"has_more":true}}"#),
        )
    })
    .await;
    let provider = client(&base);
    // 2026-11-24T09:30:00Z
    let since = 1_795_512_600_000;
    let first = provider.list_since(since, None).await.unwrap();
    assert!(seen
        .recv()
        .await
        .unwrap()
        .starts_with("GET /dream-machine/v1/generations?limit=100&offset=0 "));
    assert_eq!(first.generations.len(), 1);
    let next = first.next.expect("a newer page with more behind it goes on");
    let second = provider.list_since(since, Some(&next)).await.unwrap();
    assert!(seen
        .recv()
        .await
        .unwrap()
        .starts_with("GET /dream-machine/v1/generations?limit=100&offset=100 "));
    assert_eq!(
        second.generations.len(),
        1,
        "older generations are returned; the caller filters"
    );
    assert_eq!(second.next, None, "a page reaching older generations is the last");
}

#[tokio::test]
async fn the_balance_reads_lumas_cents_as_micro_dollars_with_its_resolution() {
    let (base, _) = server(|_| {
        http(
            "200 OK",
            "content-type: application/json\r\n",
            r#"{"credit_balance": 12.34567}"#,
        )
    })
    .await;
    let balance = client(&base)
        .balance()
        .await
        .unwrap()
        .expect("Luma has a balance");
    assert_eq!(
        balance.available_micros, 123_456,
        "rounded down, never overstated"
    );
    assert_eq!(balance.reading_micros, 123_457, "rounded to the nearest");
    assert_eq!(
        balance.resolution_micros, 1,
        "the reading shows single micro-dollars"
    );
}

#[test]
fn a_base_url_that_is_not_http_is_a_setup_error() {
    for base in ["ftp://example.com/v1", "not a url", "http://"] {
        let error = LumaProvider::new(config(base, KEY)).unwrap_err();
        assert!(
            error.to_string().contains("the client could not be built"),
            "{error}"
        );
        assert!(!error.to_string().contains(KEY));
    }
}

#[test]
fn the_default_config_has_todays_timeouts_and_a_darkroom_user_agent() {
    let config = ClientConfig::new(
        "https://api.lumalabs.ai/dream-machine/v1",
        ApiKey::new(KEY.into()),
    );
    assert_eq!(config.connect_timeout, Duration::from_secs(10));
    assert_eq!(config.request_timeout, Duration::from_secs(60));
    assert_eq!(config.download_timeout, Duration::from_secs(120));
    assert!(
        config.user_agent.starts_with("darkroom/"),
        "{}",
        config.user_agent
    );
    assert!(!format!("{config:?}").contains(KEY));
}

#[test]
fn luma_declares_its_references_formats_ratios_and_prices() {
    let provider = LumaProvider::new(config("http://127.0.0.1:9/dream-machine/v1", KEY)).unwrap();
    let capabilities = provider.capabilities();
    assert_eq!(capabilities.max_image_refs, 4);
    assert_eq!(capabilities.max_style_refs, 1);
    assert_eq!(capabilities.max_character_images, 4);
    assert!(capabilities.modify && capabilities.balance && capabilities.callbacks);
    assert_eq!(capabilities.aspect_ratios.len(), 7);
    assert_eq!(capabilities.formats.len(), 2);
    assert_eq!(
        provider.table_price(&request()),
        Some(darkroom_jobs::Money::from_micros(4_000))
    );
    let mut unknown = request();
    unknown.model = "photon-9".into();
    assert_eq!(provider.table_price(&unknown), None);
    assert_eq!(provider.name(), "luma");
    assert_eq!(provider.base_url(), "http://127.0.0.1:9/dream-machine/v1");
}

fn reframe_request() -> CreateRequest {
    let mut request = request();
    request.aspect_ratio = Some("9:16".into());
    request.reframe = Some(darkroom_provider::ReframeSource {
        url: "https://cdn.example.com/source.jpg".into(),
    });
    request
}

#[tokio::test]
async fn a_reframe_posts_to_the_reframe_path_with_its_source_as_media() {
    let (base, mut seen) = server(|_| {
        http(
            "201 Created",
            "content-type: application/json\r\n",
            r#"{"id":"r1","state":"queued","created_at":"2026-11-24T09:30:19Z",
                "request":{"generation_type":"reframe_image","model":"photon-flash-1","prompt":"A linen sofa",
                "aspect_ratio":"9:16","media":{"url":"https://cdn.example.com/source.jpg"}}}"#,
        )
    })
    .await;
    let provider = client(&base);
    assert!(provider.can_reframe());
    // Through `create` too: a request with a source never becomes a plain image.
    for generation in [
        provider.reframe(&reframe_request()).await.unwrap(),
        provider.create(&reframe_request()).await.unwrap(),
    ] {
        let text = seen.recv().await.unwrap();
        assert!(
            text.starts_with("POST /dream-machine/v1/generations/image/reframe "),
            "{text}"
        );
        let body: serde_json::Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"generation_type": "reframe_image",
                "media": {"url": "https://cdn.example.com/source.jpg"},
                "model": "photon-flash-1", "prompt": "A linen sofa", "aspect_ratio": "9:16"})
        );
        assert!(generation.matches_request(&reframe_request()));
        assert!(!generation.matches_request(&request()));
    }
}

#[tokio::test]
async fn a_reframe_whose_answer_is_lost_is_an_unknown_outcome_like_a_create() {
    let (base, _) = server(|_| None).await;
    let error = client(&base).reframe(&reframe_request()).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::OutcomeUnknown, "{error}");
    assert_eq!(error.operation(), "reframe");
    let (base, _) = server(|_| http("503 Service Unavailable", "", "")).await;
    let error = client(&base).reframe(&reframe_request()).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::OutcomeUnknown, "{error}");
}
