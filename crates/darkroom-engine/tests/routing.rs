//! A pass routed over two providers (`darkroom_engine::routing`), each a real simulator on a
//! loopback port: Luma on one whose creates all fail, Replicate on another. Luma's breaker opens,
//! its tasks never sent move to Replicate within the same budget, the creates Luma may have
//! received are settled on Luma and never sent twice, and the ledger equals the two bills.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::sync::Arc;
use std::time::Duration;

use darkroom_engine::routing::{run_routed, Route, RoutePlan, Routing};
use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{Event, StopReason};
use darkroom_jobs::{Money, PriceTable};
use darkroom_provider::Provider;
use darkroom_sim::{Faults, SimConfig};
use darkroom_testkit::jobs::write_csv;
use darkroom_testkit::Harness;

/// A Replicate client for the simulator at `sim`, at Replicate's published prices.
fn replicate(sim: &darkroom_sim::SimHandle) -> Arc<dyn Provider> {
    let config = darkroom_replicate::ClientConfig::new(
        sim.replicate_base_url(),
        darkroom_replicate::ApiToken::new("r8_test".into()),
    );
    Arc::new(darkroom_replicate::ReplicateProvider::new(config).unwrap())
}

/// Luma first, then Replicate, failing over.
fn luma_then_replicate(luma: Arc<dyn Provider>, replicate: Arc<dyn Provider>) -> RoutePlan {
    RoutePlan {
        routes: vec![
            Route {
                client: luma,
                prices: PriceTable::default(),
                creates_per_minute: None,
                account: None,
            },
            Route {
                client: replicate,
                prices: darkroom_replicate::REPLICATE_PRICES,
                creates_per_minute: None,
                account: None,
            },
        ],
        routing: Routing::Fixed,
        failover: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_whose_breaker_opens_hands_its_unsent_tasks_to_the_next_and_pays_nothing_twice() {
    let luma = Harness::start(SimConfig {
        time_scale: 0.02,
        creates_per_minute: None,
        faults: Faults {
            create_5xx: 1.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let other = darkroom_testkit::sim::spawn(SimConfig {
        time_scale: 0.02,
        creates_per_minute: None,
        ..SimConfig::default()
    })
    .await;
    let file = write_csv(luma.dir.path(), "lamps.csv", 8, |n| {
        format!("lamp-{n},A brass desk lamp number {n},1:1")
    });
    let mut settings = luma.settings("lamps");
    settings.breaker_threshold = 3;
    settings.max_in_flight = 2;
    settings.settle_window = Duration::from_millis(300);
    let job = luma.load(&file, &settings, Money::from_micros(1_000_000)).await;

    let plan = luma_then_replicate(luma.client.clone(), replicate(&other));
    let (events, collected) = darkroom_testkit::events::collect();
    let outcome = run_routed(&luma.ledger, &plan, &settings, job, events, Shutdown::default())
        .await
        .unwrap();
    let events = collected.await.unwrap();

    assert_eq!(outcome.stop, None, "{outcome:?}");
    assert_eq!(outcome.counts.done, 8, "{:?}", outcome.counts);
    let failover = events.iter().find_map(|e| match e {
        Event::Failover {
            from,
            to,
            tasks,
            reason,
        } => Some((from.clone(), to.clone(), *tasks, reason.clone())),
        _ => None,
    });
    let (from, to, tasks, reason) = failover.expect("a failover event");
    assert_eq!((from.as_str(), to.as_str()), ("luma", "replicate"));
    assert!(tasks >= 6, "at least the tasks never sent move: {tasks}");
    assert!(reason.contains("in a row failed"), "{reason}");
    assert_eq!(luma.sim.billing().net_micros, 0, "Luma made nothing");
    assert_eq!(
        other.billing().net_micros,
        8 * 10_000,
        "each image billed once on Replicate"
    );
    assert_eq!(
        outcome.spent,
        Money::from_micros(8 * 10_000),
        "the ledger is both bills"
    );
    for result in luma.ledger.results(job, settings.pass, 0, 100).await.unwrap() {
        assert_eq!(
            result.provider.as_deref(),
            Some("replicate"),
            "{}",
            result.task_key
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_failover_a_refused_route_stops_the_run_and_nothing_goes_elsewhere() {
    let luma = Harness::start(SimConfig {
        time_scale: 0.02,
        creates_per_minute: None,
        api_key: Some("another-key".into()),
        ..SimConfig::default()
    })
    .await;
    let other = darkroom_testkit::sim::spawn(SimConfig {
        time_scale: 0.02,
        creates_per_minute: None,
        ..SimConfig::default()
    })
    .await;
    let file = write_csv(luma.dir.path(), "lamps.csv", 3, |n| {
        format!("lamp-{n},A brass desk lamp number {n},1:1")
    });
    let settings = luma.settings("lamps");
    let job = luma.load(&file, &settings, Money::from_micros(1_000_000)).await;
    let mut plan = luma_then_replicate(luma.client.clone(), replicate(&other));
    plan.failover = false;
    let outcome = run_routed(
        &luma.ledger,
        &plan,
        &settings,
        job,
        darkroom_testkit::events::discard(),
        Shutdown::default(),
    )
    .await
    .unwrap();
    assert!(
        matches!(outcome.stop, Some(StopReason::Refused(_))),
        "{outcome:?}"
    );
    assert_eq!(outcome.counts.pending, 3);
    assert_eq!(other.billing().charged_micros, 0);
}
