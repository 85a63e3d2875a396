//! The verifier on deliveries signed with a key of our own: good, unsigned, badly signed, stale.

use reqwest::header::{HeaderMap, HeaderValue};
use ring::signature::{Ed25519KeyPair, KeyPair};

use super::*;

const NOW: i64 = 1_795_512_619;
const BODY: &[u8] = br#"{"request_id":"r1","gateway_request_id":"r1","status":"OK","payload":{"images":[]}}"#;

fn key(seed: u8) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
}

fn jwks(keys: &[&Ed25519KeyPair]) -> Vec<u8> {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| {
            serde_json::json!({"kty": "OKP", "crv": "Ed25519",
                "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k.public_key().as_ref())})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
}

fn signed(key: &Ed25519KeyPair, timestamp: i64, body: &[u8]) -> HeaderMap {
    let ts = timestamp.to_string();
    let signature = key.sign(signed_message("r1", "u1", &ts, body).as_bytes());
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        headers.insert(name, HeaderValue::from_str(value).unwrap());
    };
    set("x-fal-webhook-request-id", "r1");
    set("x-fal-webhook-user-id", "u1");
    set("x-fal-webhook-timestamp", &ts);
    set("x-fal-webhook-signature", &hex_encode(signature.as_ref()));
    headers
}

#[test]
fn a_delivery_signed_by_any_published_key_within_the_window_is_accepted() {
    let (old, new) = (key(1), key(2));
    let verifier = WebhookVerifier::from_jwks(&jwks(&[&old, &new])).unwrap();
    assert_eq!(verifier.verify(&signed(&new, NOW, BODY), BODY, NOW), Ok(()));
    assert_eq!(verifier.verify(&signed(&old, NOW - 299, BODY), BODY, NOW), Ok(()));
}

#[test]
fn an_unsigned_delivery_is_refused_naming_the_missing_header() {
    let verifier = WebhookVerifier::from_jwks(&jwks(&[&key(1)])).unwrap();
    assert_eq!(
        verifier.verify(&HeaderMap::new(), BODY, NOW),
        Err(WebhookError::Unsigned("x-fal-webhook-request-id"))
    );
    let mut headers = signed(&key(1), NOW, BODY);
    headers.remove("x-fal-webhook-signature");
    assert_eq!(
        verifier.verify(&headers, BODY, NOW),
        Err(WebhookError::Unsigned("x-fal-webhook-signature"))
    );
}

#[test]
fn a_delivery_signed_by_another_key_or_with_its_body_or_ids_changed_is_refused() {
    let verifier = WebhookVerifier::from_jwks(&jwks(&[&key(1)])).unwrap();
    let stranger = signed(&key(9), NOW, BODY);
    assert_eq!(
        verifier.verify(&stranger, BODY, NOW),
        Err(WebhookError::BadSignature)
    );
    let good = signed(&key(1), NOW, BODY);
    let tampered = br#"{"request_id":"r2","status":"OK"}"#;
    assert_eq!(
        verifier.verify(&good, tampered, NOW),
        Err(WebhookError::BadSignature)
    );
    let mut other_user = good.clone();
    other_user.insert("x-fal-webhook-user-id", HeaderValue::from_static("u2"));
    assert_eq!(
        verifier.verify(&other_user, BODY, NOW),
        Err(WebhookError::BadSignature)
    );
    let mut garbage = good;
    garbage.insert("x-fal-webhook-signature", HeaderValue::from_static("not-hex"));
    assert_eq!(
        verifier.verify(&garbage, BODY, NOW),
        Err(WebhookError::BadSignature)
    );
}

#[test]
fn a_delivery_stamped_more_than_300_seconds_from_now_is_refused_even_if_well_signed() {
    let verifier = WebhookVerifier::from_jwks(&jwks(&[&key(1)])).unwrap();
    for at in [NOW - 301, NOW + 301, NOW - 86_400] {
        assert_eq!(
            verifier.verify(&signed(&key(1), at, BODY), BODY, NOW),
            Err(WebhookError::Stale(at.to_string()))
        );
    }
    let mut words = signed(&key(1), NOW, BODY);
    words.insert("x-fal-webhook-timestamp", HeaderValue::from_static("soon"));
    assert_eq!(
        verifier.verify(&words, BODY, NOW),
        Err(WebhookError::Stale("soon".into()))
    );
}

#[test]
fn a_key_set_without_an_ed25519_key_is_refused() {
    assert!(matches!(
        WebhookVerifier::from_jwks(br#"{"keys":[{"kty":"RSA","n":"x","e":"AQAB"}]}"#),
        Err(WebhookError::BadKeys(_))
    ));
    assert!(matches!(
        WebhookVerifier::from_jwks(b"<html>"),
        Err(WebhookError::BadKeys(_))
    ));
}

/// The same delivery as the engine's receiver hands it over: headers as sent (any case), raw body.
fn as_delivered(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().to_ascii_uppercase(), v.to_str().unwrap().to_string()))
        .collect()
}

#[test]
fn the_engines_check_accepts_what_the_verifier_accepts_and_refuses_the_rest_with_its_reason() {
    let verifier = WebhookVerifier::from_jwks(&jwks(&[&key(1)])).unwrap();
    let check: &dyn DeliveryCheck = &verifier;
    let good = as_delivered(&signed(&key(1), NOW, BODY));
    assert_eq!(check.verify(&Delivery::new(&good, BODY), NOW), Ok(()));
    let forged = as_delivered(&signed(&key(9), NOW, BODY));
    assert_eq!(
        check.verify(&Delivery::new(&forged, BODY), NOW),
        Err(DeliveryRefused::BadSignature)
    );
    assert_eq!(
        check.verify(&Delivery::new(&good, b"{}"), NOW),
        Err(DeliveryRefused::BadSignature)
    );
    assert_eq!(
        check.verify(&Delivery::new(&good, BODY), NOW + 301),
        Err(DeliveryRefused::Stale {
            timestamp: NOW.to_string(),
            tolerance_s: 300
        })
    );
    assert_eq!(
        check.verify(&Delivery::new(&[], BODY), NOW),
        Err(DeliveryRefused::Unsigned("x-fal-webhook-request-id".into()))
    );
}
