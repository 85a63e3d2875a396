//! Which provider made what (migration 0012), against a real SQLite file: a create's intent names
//! its provider on the task and the generation, the unsettled creates of a pass are listed by
//! provider, and tasks holding no create are re-priced at the table of the provider a pass runs on
//! while a create in flight keeps the price it was sent at.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.
use darkroom_jobs::{
    AspectRatio, Format, Metadata, Model, Money, Pass, PriceBasis, PriceTable, References, Task,
};
use darkroom_ledger::{Ledger, NewTask, Reservation, TaskState};

fn new_task(key: &str, price: i64) -> NewTask {
    NewTask {
        task: Task {
            row_id: key.to_string(),
            pass: Pass::Preview,
            variant: 1,
            variants: 1,
            model: Model::PhotonFlash1,
            prompt: format!("a lamp called {key}"),
            aspect_ratio: AspectRatio::Square,
            format: Format::Jpg,
            refs: References::default(),
            metadata: Metadata::new(),
            fingerprint: format!("fp-{key}"),
        },
        line: 2,
        price: Money::from_micros(price),
        request_json: "{}".into(),
    }
}

/// A ledger with tasks `a`..`d` at Luma's $0.004 and a $1 budget.
async fn four_tasks() -> (tempfile::TempDir, Ledger, i64, Vec<i64>) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("darkroom.db")).await.unwrap();
    let job = ledger.upsert_job("job", "job.csv", "file-fp").await.unwrap();
    ledger
        .set_budget(job, Pass::Preview, Money::from_micros(1_000_000))
        .await
        .unwrap();
    let mut loader = ledger.begin_load(job, Pass::Preview).await.unwrap();
    let tasks: Vec<NewTask> = ["a", "b", "c", "d"].iter().map(|k| new_task(k, 4_000)).collect();
    loader.load_page(&tasks).await.unwrap();
    loader.finish("file-fp").await.unwrap();
    let ids = ledger
        .pending_tasks(job, Pass::Preview, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    (dir, ledger, job, ids)
}

#[tokio::test]
async fn an_intent_names_its_provider_and_an_unsettled_create_is_listed_under_it() {
    let (_dir, ledger, job, ids) = four_tasks().await;
    assert_eq!(ledger.task(ids[0]).await.unwrap().provider, None, "never sent");
    ledger.reserve(ids[0]).await.unwrap();
    let unknown = ledger.record_intent(ids[0], "fp", "luma").await.unwrap();
    ledger.record_outcome_unknown(unknown).await.unwrap();
    ledger.reserve(ids[1]).await.unwrap();
    let made = ledger.record_intent(ids[1], "fp", "replicate").await.unwrap();
    ledger.record_submitted(made, "r8-1").await.unwrap();

    assert_eq!(
        ledger.task(ids[0]).await.unwrap().provider.as_deref(),
        Some("luma")
    );
    let generations = ledger.open_generations(ids[1]).await.unwrap();
    assert_eq!(generations[0].provider.as_deref(), Some("replicate"));
    let unsettled: Vec<(String, String)> = ledger
        .unsettled_by_provider(job, Pass::Preview)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.provider, c.task_key))
        .collect();
    assert_eq!(
        unsettled,
        [
            ("luma".to_string(), "a".to_string()),
            ("replicate".to_string(), "b".to_string())
        ]
    );
    assert_eq!(
        ledger.providers_used(job, Pass::Preview).await.unwrap(),
        ["luma", "replicate"]
    );

    // Settled: nothing is left for either provider.
    ledger.record_completed(made, "http://cdn/b.jpg").await.unwrap();
    ledger.record_not_created(unknown, true).await.unwrap();
    ledger.release(ids[0], TaskState::Pending, None).await.unwrap();
    let left = ledger.unsettled_by_provider(job, Pass::Preview).await.unwrap();
    assert_eq!(left.len(), 1, "b's image is not downloaded yet: {left:?}");
    assert_eq!(left[0].task_key, "b");
}

#[tokio::test]
async fn tasks_holding_no_create_are_priced_at_the_new_providers_table_and_a_create_in_flight_keeps_its_price(
) {
    let (_dir, ledger, job, ids) = four_tasks().await;
    // a: a create in flight on Luma; b: reserved by a run that was stopped before sending.
    ledger.reserve(ids[0]).await.unwrap();
    ledger.record_intent(ids[0], "fp", "luma").await.unwrap();
    assert_eq!(ledger.reserve(ids[1]).await.unwrap(), Reservation::Reserved);

    let fal = PriceTable {
        photon_1: Money::from_micros(19_000),
        photon_flash_1: Money::from_micros(5_000),
        basis: PriceBasis::PerMegapixel,
    };
    let changed = ledger.price_unsent(job, Pass::Preview, &fal).await.unwrap();
    let square = fal.price_of(Model::PhotonFlash1, AspectRatio::Square).micros();
    assert_eq!(changed, 3, "b (its reservation given back), c and d");
    let a = ledger.task(ids[0]).await.unwrap();
    assert_eq!(
        (a.price_micros, a.reserved_micros),
        (4_000, 4_000),
        "sent at Luma's price"
    );
    let b = ledger.task(ids[1]).await.unwrap();
    assert_eq!(
        (b.state, b.price_micros, b.reserved_micros),
        (TaskState::Pending, square, 0)
    );
    assert_eq!(ledger.task(ids[3]).await.unwrap().price_micros, square);
    let pass = ledger.pass(job, Pass::Preview).await.unwrap().unwrap();
    assert_eq!(pass.reserved_micros, 4_000, "only a's reservation is held");

    assert_eq!(
        ledger.price_unsent(job, Pass::Preview, &fal).await.unwrap(),
        0,
        "nothing left to change"
    );

    // a's create was never made on Luma: it moves to the pass's provider at its price.
    let generation = ledger.open_generations(ids[0]).await.unwrap()[0].id;
    ledger.record_not_created(generation, true).await.unwrap();
    ledger
        .move_unsent(ids[0], Money::from_micros(square))
        .await
        .unwrap();
    let a = ledger.task(ids[0]).await.unwrap();
    assert_eq!(
        (a.state, a.price_micros, a.reserved_micros),
        (TaskState::Pending, square, 0)
    );
    assert_eq!(
        ledger
            .pass(job, Pass::Preview)
            .await
            .unwrap()
            .unwrap()
            .reserved_micros,
        0
    );
    assert_eq!(ledger.reserve(ids[0]).await.unwrap(), Reservation::Reserved);
    assert_eq!(ledger.task(ids[0]).await.unwrap().reserved_micros, square);
}

#[tokio::test]
async fn between_a_routed_passs_runs_reservations_with_no_create_out_are_given_back_and_unsent_tasks_listed_by_scope(
) {
    let (_dir, ledger, job, ids) = four_tasks().await;
    // a: a create in flight on Luma; b: reserved by a run that stopped before sending; c: failed
    // (its create settled as never made); d: pending.
    ledger.reserve(ids[0]).await.unwrap();
    ledger.record_intent(ids[0], "fp", "luma").await.unwrap();
    ledger.reserve(ids[1]).await.unwrap();
    ledger.reserve(ids[2]).await.unwrap();
    let never = ledger.record_intent(ids[2], "fp", "luma").await.unwrap();
    ledger.record_not_created(never, true).await.unwrap();
    ledger
        .release(ids[2], TaskState::Failed, Some("refused"))
        .await
        .unwrap();

    assert_eq!(
        ledger.release_unsent(job, Pass::Preview).await.unwrap(),
        1,
        "b only"
    );
    let b = ledger.task(ids[1]).await.unwrap();
    assert_eq!((b.state, b.reserved_micros), (TaskState::Pending, 0));
    let a = ledger.task(ids[0]).await.unwrap();
    assert_eq!(
        (a.state, a.reserved_micros),
        (TaskState::Submitting, 4_000),
        "a create in flight keeps its reservation"
    );
    let pass = ledger.pass(job, Pass::Preview).await.unwrap().unwrap();
    assert_eq!(pass.reserved_micros, 4_000, "only a's reservation is held");

    let keys = |tasks: Vec<darkroom_ledger::TaskRecord>| -> Vec<String> {
        tasks.into_iter().map(|t| t.task_key).collect()
    };
    let unsent = ledger
        .unsent_tasks(job, Pass::Preview, None, 0, 10)
        .await
        .unwrap();
    assert_eq!(
        keys(unsent),
        ["b", "c", "d"],
        "pending, failed and pending; never a"
    );
    let scope = darkroom_ledger::TaskScope::of_keys(["a", "d"]);
    assert!(scope.contains("d") && !scope.contains("b"));
    let scoped = ledger
        .unsent_tasks(job, Pass::Preview, Some(&scope), 0, 10)
        .await
        .unwrap();
    assert_eq!(keys(scoped), ["d"]);
    let paged = ledger
        .unsent_tasks(job, Pass::Preview, None, ids[1], 1)
        .await
        .unwrap();
    assert_eq!(keys(paged), ["c"], "a page after b, one long");
}
