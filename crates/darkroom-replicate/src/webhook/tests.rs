//! The Standard Webhooks check against the standard's published test vector, and each way a
//! delivery is refused: unsigned, stale (a replay), tampered, signed under another secret.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use darkroom_provider::{Delivery, DeliveryRefused};

use super::{WebhookSecret, TOLERANCE};

// The test vector the Standard Webhooks specification publishes (and every official library tests).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const TIMESTAMP: i64 = 1_614_265_330;
const BODY: &[u8] = br#"{"test": 2432232314}"#;
const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn headers(id: &str, timestamp: &str, signature: &str) -> Vec<(String, String)> {
    vec![
        ("Webhook-Id".to_string(), id.to_string()),
        ("webhook-timestamp".to_string(), timestamp.to_string()),
        ("webhook-signature".to_string(), signature.to_string()),
    ]
}

#[test]
fn the_published_test_vector_signs_and_verifies() {
    let secret = WebhookSecret::parse(SECRET).unwrap();
    assert_eq!(secret.sign(ID, &TIMESTAMP.to_string(), BODY), SIGNATURE);
    let h = headers(ID, &TIMESTAMP.to_string(), SIGNATURE);
    assert_eq!(secret.verify(&Delivery::new(&h, BODY), TIMESTAMP), Ok(()));
    // Within the tolerance either way, and among several signatures (a rotated secret's too).
    let several = format!("v1,bm90IGl0 v2,abc {SIGNATURE}");
    let h = headers(ID, &TIMESTAMP.to_string(), &several);
    let tolerance = i64::try_from(TOLERANCE.as_secs()).unwrap();
    assert_eq!(
        secret.verify(&Delivery::new(&h, BODY), TIMESTAMP + tolerance),
        Ok(())
    );
    assert_eq!(
        secret.verify(&Delivery::new(&h, BODY), TIMESTAMP - tolerance),
        Ok(())
    );
}

#[test]
fn a_delivery_older_or_newer_than_five_minutes_is_refused_as_a_replay() {
    let secret = WebhookSecret::parse(SECRET).unwrap();
    let h = headers(ID, &TIMESTAMP.to_string(), SIGNATURE);
    for now in [TIMESTAMP + 301, TIMESTAMP - 301, TIMESTAMP + 86_400] {
        assert!(
            matches!(
                secret.verify(&Delivery::new(&h, BODY), now),
                Err(DeliveryRefused::Stale { tolerance_s: 300, .. })
            ),
            "{now}"
        );
    }
    let h = headers(ID, "yesterday", SIGNATURE);
    assert!(matches!(
        secret.verify(&Delivery::new(&h, BODY), TIMESTAMP),
        Err(DeliveryRefused::Stale { .. })
    ));
}

#[test]
fn a_tampered_body_id_or_timestamp_or_another_secret_does_not_verify() {
    let secret = WebhookSecret::parse(SECRET).unwrap();
    let ts = TIMESTAMP.to_string();
    let refused = |h: &[(String, String)], body: &[u8], now: i64| secret.verify(&Delivery::new(h, body), now);
    let h = headers(ID, &ts, SIGNATURE);
    assert_eq!(
        refused(&h, br#"{"test": 2432232315}"#, TIMESTAMP),
        Err(DeliveryRefused::BadSignature)
    );
    let h = headers("msg_other", &ts, SIGNATURE);
    assert_eq!(refused(&h, BODY, TIMESTAMP), Err(DeliveryRefused::BadSignature));
    let h = headers(ID, &(TIMESTAMP + 1).to_string(), SIGNATURE);
    assert_eq!(refused(&h, BODY, TIMESTAMP), Err(DeliveryRefused::BadSignature));
    let other = WebhookSecret::parse("whsec_c2VjcmV0IG9mIGFub3RoZXIgYWNjb3VudA==").unwrap();
    let h = headers(ID, &ts, &other.sign(ID, &ts, BODY));
    assert_eq!(refused(&h, BODY, TIMESTAMP), Err(DeliveryRefused::BadSignature));
    for garbage in [
        "v1,",
        "v1,not base64!",
        "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    ] {
        let h = headers(ID, &ts, garbage);
        assert_eq!(
            refused(&h, BODY, TIMESTAMP),
            Err(DeliveryRefused::BadSignature),
            "{garbage}"
        );
    }
}

#[test]
fn a_delivery_without_any_of_the_three_headers_is_unsigned() {
    let secret = WebhookSecret::parse(SECRET).unwrap();
    let full = headers(ID, &TIMESTAMP.to_string(), SIGNATURE);
    for (missing, name) in ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .iter()
        .enumerate()
    {
        let mut h = full.clone();
        h.remove(missing);
        assert_eq!(
            secret.verify(&Delivery::new(&h, BODY), TIMESTAMP),
            Err(DeliveryRefused::Unsigned((*name).to_string()))
        );
    }
    assert_eq!(
        secret.verify(&Delivery::new(&[], BODY), TIMESTAMP),
        Err(DeliveryRefused::Unsigned("webhook-id".into()))
    );
}

#[test]
fn a_secret_must_be_whsec_and_base64_and_never_prints() {
    assert!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
    assert!(WebhookSecret::parse("whsec_").is_err());
    assert!(WebhookSecret::parse("whsec_not base64!").is_err());
    let secret = WebhookSecret::parse(SECRET).unwrap();
    assert_eq!(format!("{secret:?}"), "WebhookSecret(<redacted>)");
}
