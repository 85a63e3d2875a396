//! The routing choice on real provider clients (built, never called: capabilities and prices are
//! their own), and the cheapest rule `estimate` shares.

use std::sync::Arc;

use darkroom_jobs::{AspectRatio, Model, Money, PriceTable};
use darkroom_provider::{CreateRequest, ImageRef, Provider};

use super::{cheapest, choose, Route, RoutePlan, Routing};

fn luma() -> Arc<dyn Provider> {
    let config = darkroom_luma::ClientConfig::new(
        "http://127.0.0.1:9/dream-machine/v1",
        darkroom_luma::ApiKey::new("k".into()),
    );
    Arc::new(darkroom_luma::LumaProvider::new(config).unwrap_or_else(|e| panic!("{e}")))
}

fn replicate() -> Arc<dyn Provider> {
    let config = darkroom_replicate::ClientConfig::new(
        "http://127.0.0.1:9/v1",
        darkroom_replicate::ApiToken::new("r".into()),
    );
    Arc::new(darkroom_replicate::ReplicateProvider::new(config).unwrap_or_else(|e| panic!("{e}")))
}

/// Luma at `luma_flash` a preview, then Replicate at its published $0.01.
fn plan(routing: Routing, luma_flash: i64) -> RoutePlan {
    let luma_prices = PriceTable {
        photon_flash_1: Money::from_micros(luma_flash),
        ..PriceTable::default()
    };
    RoutePlan {
        routes: vec![
            Route {
                client: luma(),
                prices: luma_prices,
                creates_per_minute: None,
                account: None,
            },
            Route {
                client: replicate(),
                prices: darkroom_replicate::REPLICATE_PRICES,
                creates_per_minute: None,
                account: None,
            },
        ],
        routing,
        failover: true,
    }
}

fn plain() -> CreateRequest {
    CreateRequest::new("photon-flash-1", "a lamp")
}

fn modify() -> CreateRequest {
    CreateRequest {
        modify_image_ref: Some(ImageRef {
            url: "https://example.com/lamp.jpg".into(),
            weight: None,
        }),
        ..plain()
    }
}

const FLASH: Model = Model::PhotonFlash1;
const SQUARE: AspectRatio = AspectRatio::Square;

#[test]
fn cheapest_routing_picks_the_cheaper_provider_that_can_make_the_request() {
    let plan = plan(Routing::Cheapest, 20_000);
    let both = [true, true];
    assert_eq!(
        choose(&plan, &both, &plain(), FLASH, SQUARE),
        Some(1),
        "Replicate's $0.01 beats $0.02"
    );
    assert_eq!(
        choose(&plan, &both, &modify(), FLASH, SQUARE),
        Some(0),
        "only Luma modifies"
    );
    assert_eq!(
        choose(&plan, &[false, true], &modify(), FLASH, SQUARE),
        None,
        "none left can"
    );
}

#[test]
fn a_tie_goes_to_the_earlier_route() {
    let plan = plan(Routing::Cheapest, 10_000);
    assert_eq!(choose(&plan, &[true, true], &plain(), FLASH, SQUARE), Some(0));
    assert_eq!(
        cheapest([("a", Money::from_micros(5)), ("b", Money::from_micros(5))]),
        Some("a")
    );
    assert_eq!(
        cheapest([("a", Money::from_micros(6)), ("b", Money::from_micros(5))]),
        Some("b")
    );
    assert_eq!(cheapest(Vec::<(u8, Money)>::new()), None);
}

#[test]
fn a_fixed_pass_keeps_every_task_on_its_provider_until_it_refuses() {
    let plan = plan(Routing::Fixed, 20_000);
    assert_eq!(
        choose(&plan, &[true, true], &plain(), FLASH, SQUARE),
        Some(0),
        "not moved for price"
    );
    // Luma's own run refuses what it can't make; after a refusal, the next that can make it.
    assert_eq!(choose(&plan, &[false, true], &plain(), FLASH, SQUARE), Some(1));
    assert_eq!(choose(&plan, &[false, true], &modify(), FLASH, SQUARE), None);
}
