//! The conversions, on fal's documented shapes.

use darkroom_provider::{CreateRequest, GenerationState, ImageRef};

use super::*;

fn request() -> CreateRequest {
    let mut request = CreateRequest::new("photon-flash-1", "A linen sofa");
    request.aspect_ratio = Some("16:9".into());
    request
}

#[test]
fn a_plain_request_becomes_a_flash_submit_of_prompt_and_aspect_ratio() {
    let (model, input) = input_of(&request()).unwrap();
    assert_eq!(endpoint_of(model), "fal-ai/luma-photon/flash");
    assert_eq!(
        serde_json::to_string(&input).unwrap(),
        r#"{"prompt":"A linen sofa","aspect_ratio":"16:9"}"#
    );
    let (model, _) = input_of(&CreateRequest::new("photon-1", "p")).unwrap();
    assert_eq!(endpoint_of(model), "fal-ai/luma-photon");
}

#[test]
fn a_request_with_anything_fal_would_ignore_is_refused_naming_it() {
    let mut refs = request();
    refs.image_ref = Some(vec![ImageRef {
        url: "https://cdn.example.com/a.jpg".into(),
        weight: None,
    }]);
    refs.format = Some("png".into());
    let message = input_of(&refs).unwrap_err().to_string();
    assert!(message.contains("image references"), "{message}");
    assert!(message.contains("a format other than jpg"), "{message}");
    let mut modify = request();
    modify.modify_image_ref = Some(ImageRef {
        url: "https://cdn.example.com/a.jpg".into(),
        weight: Some(0.5),
    });
    assert!(input_of(&modify)
        .unwrap_err()
        .to_string()
        .contains("an image to modify"));
    let mut ratio = request();
    ratio.aspect_ratio = Some("2:1".into());
    assert!(input_of(&ratio).unwrap_err().to_string().contains("\"2:1\""));
    let unknown = CreateRequest::new("photon-2", "p");
    assert!(input_of(&unknown).unwrap_err().to_string().contains("photon-2"));
    // An empty reference list and jpg are no extra asks.
    let mut empty = request();
    empty.image_ref = Some(vec![]);
    empty.format = Some("jpg".into());
    assert!(input_of(&empty).is_ok());
}

#[test]
fn statuses_map_to_states_and_a_completed_status_with_an_error_is_a_failure() {
    let read = |body: &str| -> wire::Status { serde_json::from_str(body).unwrap() };
    let queued = from_status("r", read(r#"{"status":"IN_QUEUE","queue_position":3}"#), None);
    assert_eq!(queued.state, GenerationState::Queued);
    let running = from_status("r", read(r#"{"status":"IN_PROGRESS","logs":null}"#), None);
    assert_eq!(running.state, GenerationState::Dreaming);
    let output: wire::Output = serde_json::from_str(
        r#"{"images":[{"url":"https://v3.fal.media/files/x.jpg","content_type":"image/jpeg"}]}"#,
    )
    .unwrap();
    let done = from_status(
        "r",
        read(r#"{"status":"COMPLETED","request_id":"r"}"#),
        Some(&output),
    );
    assert_eq!(done.state, GenerationState::Completed);
    assert_eq!(done.image_url(), Some("https://v3.fal.media/files/x.jpg"));
    let failed = from_status(
        "r",
        read(
            r#"{"status":"COMPLETED","error":"Content policy violation","error_type":"content_policy_violation"}"#,
        ),
        None,
    );
    assert_eq!(failed.state, GenerationState::Failed);
    assert_eq!(failed.failure_reason.as_deref(), Some("Content policy violation"));
    let new = from_status("r", read(r#"{"status":"PAUSED"}"#), None);
    assert_eq!(new.state, GenerationState::Unknown("PAUSED".into()));
}

#[test]
fn a_listed_request_matches_what_was_sent_and_its_defaults() {
    let item: wire::RequestItem = serde_json::from_str(
        r#"{"request_id":"r1","endpoint_id":"fal-ai/luma-photon/flash","sent_at":"2026-11-24T09:30:19.123Z",
        "started_at":"2026-11-24T09:30:20Z","ended_at":"2026-11-24T09:30:25Z","status_code":200,"duration":5.1,
        "json_input":{"prompt":"A linen sofa","aspect_ratio":"16:9"},
        "json_output":{"images":[{"url":"https://v3.fal.media/files/r1.jpg"}]}}"#,
    )
    .unwrap();
    let generation = from_item(item).unwrap();
    assert_eq!(generation.state, GenerationState::Completed);
    assert_eq!(generation.created_at_ms, Some(1_795_512_619_123));
    assert!(generation.matches_request(&request()));
    let mut square = request();
    square.aspect_ratio = Some("1:1".into());
    assert!(!generation.matches_request(&square));
    let bare: wire::RequestItem = serde_json::from_str(
        r#"{"request_id":"r2","endpoint_id":"fal-ai/luma-photon","status_code":422,
        "json_input":{"prompt":"p"},"json_output":{"detail":[{"loc":["body","prompt"],"msg":"content policy"}]}}"#,
    )
    .unwrap();
    let failed = from_item(bare).unwrap();
    assert_eq!(failed.state, GenerationState::Failed);
    assert!(
        failed.matches_request(&CreateRequest::new("photon-1", "p")),
        "1:1 is fal's default"
    );
    assert_eq!(
        failed.failure_reason.as_deref(),
        Some("body.prompt: content policy")
    );
}

#[test]
fn a_billing_answer_reads_to_the_micro_dollar_rounded_down() {
    let billing: wire::AccountBilling =
        serde_json::from_str(r#"{"username":"u","credits":{"current_balance":12.3456789,"currency":"USD"}}"#)
            .unwrap();
    let balance = balance_of(&billing).unwrap();
    assert_eq!(balance.available_micros, 12_345_678);
    assert_eq!(balance.reading_micros, 12_345_679);
    let none: wire::AccountBilling = serde_json::from_str(r#"{"username":"u"}"#).unwrap();
    assert_eq!(balance_of(&none), None);
}
