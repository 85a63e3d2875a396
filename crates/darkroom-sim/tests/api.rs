//! The simulator over real HTTP on a loopback port: shapes, auth, validation, limits in both
//! windowing modes, billing and refunds, callbacks, and faults that are real at the transport level.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::time::Duration;

use darkroom_sim::{Faults, RateWindow, SimConfig, SimHandle};
use serde_json::{json, Value};

async fn start(config: SimConfig) -> (SimHandle, reqwest::Client) {
    (darkroom_sim::spawn(config).await.unwrap(), reqwest::Client::new())
}

async fn create(sim: &SimHandle, http: &reqwest::Client, body: Value) -> reqwest::Response {
    http.post(format!("{}/generations/image", sim.base_url()))
        .bearer_auth("k")
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn quick() -> SimConfig {
    SimConfig {
        time_scale: 0.01,
        creates_per_minute: None,
        max_concurrent: None,
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn a_create_answers_201_with_the_documented_shape_then_completes_with_a_real_image() {
    let (sim, http) = start(quick()).await;
    let response = create(
        &sim,
        &http,
        json!({"model": "photon-flash-1", "prompt": "A linen sofa", "aspect_ratio": "21:9", "unknown": 1}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["state"], "queued");
    assert_eq!(created["generation_type"], "image");
    assert_eq!(
        created["assets"],
        json!({"image": null, "video": null, "progress_video": null})
    );
    assert_eq!(created["request"]["style_ref"], Value::Null);
    assert_eq!(created["request"]["model"], "photon-flash-1");
    let created_at = created["created_at"].as_str().unwrap();
    assert!(
        created_at.ends_with('Z') && created_at.len() == "2026-11-24T09:30:19.123456Z".len(),
        "{created_at}"
    );
    uuid::Uuid::parse_str(created["id"].as_str().unwrap()).unwrap();

    tokio::time::sleep(Duration::from_millis(50)).await;
    let url = format!(
        "{}/generations/{}",
        sim.base_url(),
        created["id"].as_str().unwrap()
    );
    let done: Value = http
        .get(&url)
        .bearer_auth("k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(done["state"], "completed");
    let image_url = done["assets"]["image"].as_str().unwrap();
    let bytes = http.get(image_url).send().await.unwrap().bytes().await.unwrap();
    let image = image::load_from_memory(&bytes).unwrap();
    assert_eq!((image.width(), image.height()), (2432, 1024));
    let again = http.get(image_url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(bytes, again, "same request, same bytes");
}

#[tokio::test]
async fn auth_validation_and_unknown_ids_answer_as_documented() {
    let (sim, http) = start(SimConfig {
        api_key: Some("right".into()),
        ..quick()
    })
    .await;
    let url = format!("{}/generations/image", sim.base_url());
    let wrong = http
        .post(&url)
        .bearer_auth("wrong")
        .json(&json!({"model": "photon-1", "prompt": "A sofa"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.json::<Value>().await.unwrap(),
        json!({"detail": "Invalid API key is provided"})
    );
    let missing = http
        .get(format!("{}/credits", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);

    let send = |body: Value| http.post(&url).bearer_auth("right").json(&body).send();
    let bad = send(json!({"model": "photon-2", "prompt": "A sofa", "aspect_ratio": "5:4", "format": 3}))
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let detail: Value = bad.json().await.unwrap();
    let locs: Vec<&Value> = detail["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["loc"][1])
        .collect();
    assert_eq!(locs, [&json!("model"), &json!("aspect_ratio"), &json!("format")]);
    for (body, message) in [
        (json!({"model": "photon-1"}), "Prompt is required"),
        (
            json!({"model": "photon-1", "prompt": "ab"}),
            "Prompt is too short, minimum length is 3 characters",
        ),
        (
            json!({"model": "photon-1", "prompt": "x".repeat(5001)}),
            "Prompt is too long, maximum length is 5000 characters",
        ),
    ] {
        let response = send(body).await.unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(response.json::<Value>().await.unwrap()["detail"], message);
    }
    let refs: Vec<Value> = (0..5)
        .map(|i| json!({"url": format!("https://x/{i}.jpg")}))
        .collect();
    assert_eq!(
        send(json!({"model": "photon-1", "prompt": "A sofa", "image_ref": refs}))
            .await
            .unwrap()
            .status(),
        400
    );

    let unknown = http
        .get(format!(
            "{}/generations/00000000-0000-4000-8000-000000000000",
            sim.base_url()
        ))
        .bearer_auth("right")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let created: Value = send(json!({"model": "photon-1", "prompt": "A sofa"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!(
        "{}/generations/{}",
        sim.base_url(),
        created["id"].as_str().unwrap()
    );
    assert_eq!(
        http.delete(&url)
            .bearer_auth("right")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        http.delete(&url)
            .bearer_auth("right")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        http.get(&url).bearer_auth("right").send().await.unwrap().status(),
        404
    );
}

#[tokio::test]
async fn the_list_is_newest_first_and_pages() {
    let (sim, http) = start(quick()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let created: Value = create(
            &sim,
            &http,
            json!({"model": "photon-1", "prompt": format!("Sofa {i}")}),
        )
        .await
        .json()
        .await
        .unwrap();
        ids.push(created["id"].as_str().unwrap().to_string());
    }
    let page: Value = http
        .get(format!("{}/generations?limit=2&offset=1", sim.base_url()))
        .bearer_auth("k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let got: Vec<&str> = page["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[3].as_str(), ids[2].as_str()]);
    assert_eq!(
        (
            page["has_more"].as_bool(),
            page["count"].as_u64(),
            page["limit"].as_u64(),
            page["offset"].as_u64()
        ),
        (Some(true), Some(2), Some(2), Some(1))
    );
}

async fn creates_until_refused(
    sim: &SimHandle,
    http: &reqwest::Client,
    n: usize,
) -> (usize, Option<reqwest::Response>) {
    for i in 0..n {
        let response = create(
            sim,
            http,
            json!({"model": "photon-flash-1", "prompt": "A sofa in a room"}),
        )
        .await;
        if response.status() == 429 {
            return (i, Some(response));
        }
    }
    (n, None)
}

#[tokio::test]
async fn the_per_minute_limit_holds_in_both_windowing_modes() {
    for window in [RateWindow::Bucket, RateWindow::Sliding] {
        // A "minute" of 6 s: five creates pass, the sixth is refused with a Retry-After.
        let config = SimConfig {
            time_scale: 0.1,
            creates_per_minute: Some(5),
            max_concurrent: None,
            rate_window: window,
            ..SimConfig::default()
        };
        let (sim, http) = start(config).await;
        let (accepted, refused) = creates_until_refused(&sim, &http, 10).await;
        assert_eq!(accepted, 5, "{window:?}");
        let refused = refused.unwrap();
        assert!(refused.headers().get("retry-after").is_some());
        assert!(refused.json::<Value>().await.unwrap()["detail"].is_string());
        assert_eq!(sim.stats().rate_limited, 1);
    }
    let config = SimConfig {
        time_scale: 0.1,
        creates_per_minute: Some(5),
        retry_after: false,
        ..SimConfig::default()
    };
    let (sim, http) = start(config).await;
    let (_, refused) = creates_until_refused(&sim, &http, 10).await;
    assert!(
        refused.unwrap().headers().get("retry-after").is_none(),
        "Retry-After can be switched off"
    );
}

#[tokio::test]
async fn strict_spacing_refuses_a_second_create_inside_its_slot_where_a_bucket_or_window_allows_a_burst() {
    // 5 a minute: one create every 12 s under spacing; a burst of 5 under the other two.
    for (window, accepted_at_once) in [
        (RateWindow::Spacing, 1),
        (RateWindow::Bucket, 5),
        (RateWindow::Sliding, 5),
    ] {
        let config = SimConfig {
            creates_per_minute: Some(5),
            max_concurrent: None,
            rate_window: window,
            ..SimConfig::default()
        };
        let (sim, http) = start(config).await;
        let (accepted, refused) = creates_until_refused(&sim, &http, 10).await;
        assert_eq!(accepted, accepted_at_once, "{window:?}");
        let refused = refused.unwrap();
        let wait: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        if window == RateWindow::Spacing {
            // The next slot is 12 s after the accepted create, rounded up to whole seconds.
            assert_eq!(wait, 12, "{window:?}");
        }
        assert_eq!(sim.stats().rate_limited, 1, "{window:?}");
    }
}

#[tokio::test]
async fn the_concurrency_limit_counts_generations_not_yet_finished() {
    let config = SimConfig {
        time_scale: 1.0,
        creates_per_minute: None,
        max_concurrent: Some(3),
        ..SimConfig::default()
    };
    let (sim, http) = start(config).await;
    let (accepted, refused) = creates_until_refused(&sim, &http, 10).await;
    assert_eq!(accepted, 3);
    assert_eq!(refused.unwrap().status(), 429);
}

#[tokio::test]
async fn billing_charges_at_create_refunds_failures_and_refuses_without_credit() {
    let faults = Faults {
        generation_failed: 1.0,
        ..Faults::default()
    };
    let config = SimConfig {
        credits_micros: 20_000,
        insufficient_credit_status: 400,
        faults,
        ..quick()
    };
    let (sim, http) = start(config).await;
    assert_eq!(
        create(&sim, &http, json!({"model": "photon-1", "prompt": "A sofa"}))
            .await
            .status(),
        201
    );
    // 5,000 left until the failure is refunded: a second photon-1 can't be paid for.
    let refused = create(&sim, &http, json!({"model": "photon-1", "prompt": "A sofa"})).await;
    assert_eq!(refused.status(), 400);
    assert!(refused.json::<Value>().await.unwrap()["detail"]
        .as_str()
        .unwrap()
        .contains("credits"));
    tokio::time::sleep(Duration::from_millis(80)).await;
    let billing = sim.billing();
    assert_eq!(
        (
            billing.charged_micros,
            billing.refunded_micros,
            billing.net_micros
        ),
        (15_000, 15_000, 0)
    );
    assert_eq!(
        billing.entries.iter().map(|e| e.kind).collect::<Vec<_>>(),
        ["charge", "refund"]
    );
    let credits: Value = http
        .get(format!("{}/credits", sim.base_url()))
        .bearer_auth("k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(credits["credit_balance"], 2.0, "USD cents");
}

#[tokio::test]
async fn an_accepted_then_dropped_create_resets_the_connection_but_is_charged() {
    let config = SimConfig {
        faults: Faults {
            create_dropped: 1.0,
            ..Faults::default()
        },
        ..quick()
    };
    let (sim, http) = start(config).await;
    let error = http
        .post(format!("{}/generations/image", sim.base_url()))
        .bearer_auth("k")
        .json(&json!({"model": "photon-flash-1", "prompt": "A sofa"}))
        .send()
        .await
        .unwrap_err();
    assert!(!error.is_connect() && !error.is_status(), "{error:?}");
    assert_eq!(sim.billing().charged_micros, 4_000);
    let list: Value = http
        .get(format!("{}/generations", sim.base_url()))
        .bearer_auth("k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["generations"].as_array().unwrap().len(),
        1,
        "the generation exists upstream"
    );
}

#[tokio::test]
async fn callbacks_post_the_generation_on_dreaming_and_on_completion() {
    use axum::routing::post;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let app = axum::Router::new().route(
        "/hook",
        post(move |axum::Json(body): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (sim, http) = start(SimConfig {
        time_scale: 0.05,
        ..quick()
    })
    .await;
    let created: Value = create(
        &sim,
        &http,
        json!({"model": "photon-flash-1", "prompt": "A sofa", "callback_url": hook}),
    )
    .await
    .json()
    .await
    .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first["id"], created["id"]);
    assert_eq!(first["state"], "dreaming");
    assert_eq!(second["state"], "completed");
    assert!(second["assets"]["image"].is_string());
}

/// Waits for a generation to complete and downloads its image.
async fn image_of(sim: &SimHandle, http: &reqwest::Client, id: &str) -> (String, bytes::Bytes) {
    for _ in 0..200 {
        let generation: Value = http
            .get(format!("{}/generations/{id}", sim.base_url()))
            .bearer_auth("k")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(url) = generation["assets"]["image"].as_str() {
            let bytes = http.get(url).send().await.unwrap().bytes().await.unwrap();
            return (url.to_string(), bytes);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("generation {id} did not complete");
}

#[tokio::test]
async fn a_generation_that_modifies_one_of_ours_keeps_its_picture() {
    let (sim, http) = start(quick()).await;
    let body = json!({"model": "photon-flash-1", "prompt": "A walnut side table", "aspect_ratio": "4:3"});
    let preview: Value = create(&sim, &http, body).await.json().await.unwrap();
    let (preview_url, preview_image) = image_of(&sim, &http, preview["id"].as_str().unwrap()).await;

    let modify = json!({"model": "photon-1", "prompt": "A walnut side table", "aspect_ratio": "4:3",
                        "modify_image_ref": {"url": preview_url, "weight": 0.85}});
    let final_: Value = create(&sim, &http, modify).await.json().await.unwrap();
    let (_, final_image) = image_of(&sim, &http, final_["id"].as_str().unwrap()).await;
    assert_eq!(
        final_image, preview_image,
        "the final redoes the preview's picture"
    );

    let other = json!({"model": "photon-1", "prompt": "A walnut side table", "aspect_ratio": "4:3",
                       "modify_image_ref": {"url": "https://cdn.example.com/elsewhere.jpg"}});
    let other: Value = create(&sim, &http, other).await.json().await.unwrap();
    let (_, other_image) = image_of(&sim, &http, other["id"].as_str().unwrap()).await;
    assert_ne!(other_image, preview_image);
}

#[tokio::test(start_paused = true)]
async fn one_429_announces_its_pause_refuses_creates_inside_it_and_counts_them() {
    for as_http_date in [false, true] {
        let (sim, http) = start(SimConfig {
            rate_limit_once: Some(darkroom_sim::RateLimitOnce {
                after_creates: 2,
                retry_after: Duration::from_secs(10),
                as_http_date,
            }),
            ..quick()
        })
        .await;
        let body = json!({"model": "photon-flash-1", "prompt": "A linen sofa"});
        for _ in 0..2 {
            assert_eq!(create(&sim, &http, body.clone()).await.status(), 201);
        }
        let refused = create(&sim, &http, body.clone()).await;
        assert_eq!(refused.status(), 429);
        let header = refused.headers()["retry-after"].to_str().unwrap().to_string();
        if as_http_date {
            let at = httpdate::parse_http_date(&header).unwrap();
            let wait = at.duration_since(std::time::SystemTime::now()).unwrap();
            assert!(
                wait > Duration::from_secs(9) && wait <= Duration::from_secs(11),
                "{header}"
            );
        } else {
            assert_eq!(header, "10");
        }
        assert_eq!(sim.stats().creates_inside_pause, 0);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(create(&sim, &http, body.clone()).await.status(), 429);
        assert_eq!(sim.stats().creates_inside_pause, 1);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(create(&sim, &http, body.clone()).await.status(), 201);
        assert_eq!(sim.stats().creates_inside_pause, 1);
    }
}

#[tokio::test]
async fn an_account_over_its_monthly_limit_answers_every_create_429_with_the_reason() {
    let (sim, http) = start(SimConfig {
        refuse_creates: Some(darkroom_sim::RefuseCreates::monthly_usage_limit()),
        ..quick()
    })
    .await;
    for _ in 0..3 {
        let response = create(
            &sim,
            &http,
            json!({"model": "photon-1", "prompt": "A linen sofa"}),
        )
        .await;
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "1");
        let body: Value = response.json().await.unwrap();
        assert!(body["detail"]
            .as_str()
            .unwrap()
            .contains("Monthly usage limit exceeded"));
    }
    assert_eq!(sim.stats().creates_accepted, 0);
    assert_eq!(sim.billing().charged_micros, 0);
}
