//! The client against the wire examples and against small real servers on loopback that misbehave
//! on purpose: every error class is produced for real, and the key never leaks.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::time::Duration;

use darkroom_luma::{
    ApiKey, Client, ClientConfig, CreateRequest, ErrorClass, FailureKind, Generation, GenerationState,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const KEY: &str = "luma-secret-test-key-123";

fn client(base: &str) -> Client {
    Client::new(ClientConfig {
        base_url: base.to_string(),
        api_key: ApiKey::new(KEY.to_string()),
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(800),
        download_timeout: Duration::from_secs(2),
        user_agent: "darkroom-tests".into(),
    })
    .unwrap()
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

#[test]
fn every_documented_response_shape_parses() {
    let bodies = [
        r#"{"id":"4a7c8f4e-6a0b-4b7e-9d8e-1f2a3b4c5d6e","generation_type":"image","state":"queued","failure_reason":null,
            "created_at":"2026-11-24T09:30:19.123456Z","assets":{"image":null,"video":null,"progress_video":null},
            "model":"photon-flash-1","request":{"generation_type":"image","model":"photon-flash-1","prompt":"A linen sofa",
            "aspect_ratio":"16:9","callback_url":null,"image_ref":null,"style_ref":null,"character_ref":null,"modify_image_ref":null}}"#,
        r#"{"id":"x","type":"image","state":"completed","created_at":"2026-11-24T09:30:19Z","assets":{"image":"https://cdn/x.jpg"},
            "model":"photon-v1.0","request":{"type":"image","model":"photon-1","prompt":"p"},"extra":{"a":1}}"#,
        r#"{"id":"y","state":"failed","failure_reason":"Advanced prompt moderation failed","assets":null}"#,
        r#"{"id":"z","state":"some-new-state","created_at":"2026-11-24T09:30:19.5"}"#,
    ];
    let parsed: Vec<Generation> = bodies.iter().map(|b| serde_json::from_str(b).unwrap()).collect();
    assert_eq!(parsed[0].state, GenerationState::Queued);
    assert!(parsed[0].matches_request(&request()));
    assert_eq!(parsed[1].image_url(), Some("https://cdn/x.jpg"));
    assert_eq!(parsed[1].generation_type.as_deref(), Some("image"));
    assert!(parsed[1].created_at().is_some());
    assert_eq!(parsed[2].image_url(), None);
    assert_eq!(
        FailureKind::classify(parsed[2].failure_reason.as_deref().unwrap()),
        FailureKind::Blocked
    );
    assert_eq!(parsed[3].state, GenerationState::Unknown("some-new-state".into()));
    assert!(parsed[3].created_at().is_some(), "no zone is read as UTC");
    let credits: darkroom_luma::Credits = serde_json::from_str(r#"{"credit_balance": 10345.5}"#).unwrap();
    assert_eq!(credits.micro_dollars(), 103_455_000);
}

#[test]
fn moderation_reasons_block_and_the_rest_retry() {
    for reason in [
        "Contains blacklisted words",
        "Frame moderation failed",
        "400: failed to moderate image",
        "prompt not allowed because advanced moderation failed",
    ] {
        assert_eq!(FailureKind::classify(reason), FailureKind::Blocked, "{reason}");
    }
    for reason in [
        "Job failed",
        "Error dispatching job",
        "Prompt processing failed",
        "Failed to read user input frames",
    ] {
        assert_eq!(FailureKind::classify(reason), FailureKind::Retryable, "{reason}");
    }
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
    let error = client(&base).credits().await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Permanent { status: 401 });
    assert!(error.is_refusal());
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
    let client = Client::new(ClientConfig {
        base_url: base,
        api_key: ApiKey::new("x".to_string()),
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(800),
        download_timeout: Duration::from_secs(2),
        user_agent: "darkroom-tests".into(),
    })
    .unwrap();
    let error = client.create(&request()).await.unwrap_err();
    assert!(
        error.to_string().contains("Monthly usage limit exceeded"),
        "{error}"
    );
}
