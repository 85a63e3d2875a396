//! Observed prices in the ledger against a real SQLite file: re-pricing corrects earlier charges as
//! unplanned spend, later reservations and charges use the higher price, and it is never lowered.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.
use darkroom_jobs::{AspectRatio, Format, Metadata, Model, Money, Pass, References, Task};
use darkroom_ledger::{Ledger, NewTask, Reservation};

fn new_task(key: &str) -> NewTask {
    NewTask {
        task: Task {
            row_id: key.to_string(),
            pass: Pass::Preview,
            variant: 1,
            variants: 1,
            model: Model::PhotonFlash1,
            prompt: format!("a prompt for {key}"),
            aspect_ratio: AspectRatio::Square,
            format: Format::Jpg,
            refs: References::default(),
            metadata: Metadata::new(),
            fingerprint: format!("fp-{key}"),
        },
        line: 2,
        price: Money::from_micros(4_000),
        request_json: "{}".into(),
    }
}

async fn ledger_with(tasks: usize, budget: i64) -> (tempfile::TempDir, Ledger, i64, Vec<i64>) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("darkroom.db")).await.unwrap();
    let job = ledger.upsert_job("job", "job.csv", "file-fp").await.unwrap();
    ledger
        .set_budget(job, Pass::Preview, Money::from_micros(budget))
        .await
        .unwrap();
    let mut loader = ledger.begin_load(job, Pass::Preview).await.unwrap();
    let new: Vec<_> = (0..tasks).map(|i| new_task(&format!("t{i}"))).collect();
    loader.load_page(&new).await.unwrap();
    loader.finish("file-fp").await.unwrap();
    let ids = ledger
        .pending_tasks(job, Pass::Preview, 0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    (dir, ledger, job, ids)
}

async fn charge(ledger: &Ledger, task: i64, upstream: &str) {
    assert_eq!(ledger.reserve(task).await.unwrap(), Reservation::Reserved);
    let generation = ledger.record_intent(task, "fp", "luma").await.unwrap();
    ledger.record_submitted(generation, upstream).await.unwrap();
}

#[tokio::test]
async fn repricing_corrects_earlier_charges_as_unplanned_and_later_ones_reserve_the_observed_price() {
    let (_dir, ledger, job, tasks) = ledger_with(10, 40_000).await;
    charge(&ledger, tasks[0], "g0").await;
    charge(&ledger, tasks[1], "g1").await;
    // Reserved at the table's price, not yet charged, when the higher price is learnt.
    assert_eq!(ledger.reserve(tasks[2]).await.unwrap(), Reservation::Reserved);

    let repriced = ledger
        .reprice(job, Pass::Preview, "photon-flash-1", Money::from_micros(8_000))
        .await
        .unwrap();
    assert_eq!(repriced.corrected_images, 2);
    assert_eq!(repriced.corrected, Money::from_micros(8_000));
    assert_eq!(repriced.topped_up, 1);
    let pass = ledger.pass(job, Pass::Preview).await.unwrap().unwrap();
    assert_eq!(
        pass.spent_micros, 16_000,
        "the earlier charges count at the observed price"
    );
    assert_eq!(pass.unplanned_micros, 8_000);
    assert_eq!(pass.reserved_micros, 8_000, "the waiting reservation was raised");
    assert_eq!(
        ledger.net_charges().await.unwrap().micros(),
        16_000,
        "corrections are in the money log"
    );

    // 16,000 spent + 8,000 reserved + 8,000 a task: two more fit in 40,000, a third does not.
    let outcomes = [
        ledger.reserve(tasks[3]).await.unwrap(),
        ledger.reserve(tasks[4]).await.unwrap(),
        ledger.reserve(tasks[5]).await.unwrap(),
    ];
    assert_eq!(
        outcomes,
        [
            Reservation::Reserved,
            Reservation::Reserved,
            Reservation::OverBudget
        ]
    );
    let generation = ledger.record_intent(tasks[3], "fp", "luma").await.unwrap();
    ledger.record_submitted(generation, "g3").await.unwrap();
    assert_eq!(ledger.task(tasks[3]).await.unwrap().cost_micros, 8_000);
    assert_eq!(
        ledger.task(tasks[3]).await.unwrap().price_micros,
        4_000,
        "the table price stays"
    );
}

#[tokio::test]
async fn a_charge_reserved_before_repricing_that_no_longer_fits_is_recorded_at_the_observed_price_as_unplanned(
) {
    let (_dir, ledger, job, tasks) = ledger_with(3, 8_000).await;
    assert_eq!(ledger.reserve(tasks[0]).await.unwrap(), Reservation::Reserved);
    assert_eq!(ledger.reserve(tasks[1]).await.unwrap(), Reservation::Reserved);
    let repriced = ledger
        .reprice(job, Pass::Preview, "photon-flash-1", Money::from_micros(8_000))
        .await
        .unwrap();
    assert_eq!(
        repriced.topped_up, 0,
        "the budget has no room to raise either reservation"
    );
    let generation = ledger.record_intent(tasks[0], "fp", "luma").await.unwrap();
    ledger.record_submitted(generation, "g0").await.unwrap();
    let pass = ledger.pass(job, Pass::Preview).await.unwrap().unwrap();
    assert_eq!(pass.spent_micros, 8_000);
    assert_eq!(pass.unplanned_micros, 4_000);
    assert_eq!(pass.reserved_micros, 4_000);
}

#[tokio::test]
async fn an_observed_price_is_never_lowered_within_a_pass() {
    let (_dir, ledger, job, _tasks) = ledger_with(1, 40_000).await;
    ledger
        .reprice(job, Pass::Preview, "photon-flash-1", Money::from_micros(9_000))
        .await
        .unwrap();
    ledger
        .reprice(job, Pass::Preview, "photon-flash-1", Money::from_micros(6_000))
        .await
        .unwrap();
    assert_eq!(
        ledger
            .pass_price(job, Pass::Preview, "photon-flash-1")
            .await
            .unwrap(),
        Some(Money::from_micros(9_000))
    );
}

#[tokio::test]
async fn repricing_by_size_corrects_each_charge_at_its_own_size_and_a_waiting_reservation_is_covered_or_refused(
) {
    // Budget for 4 images at the table's 4,000 µ$; the account turns out to charge 11,797 µ$ at
    // 1:1 (the only size here) and more at 21:9.
    let (_dir, ledger, job, tasks) = ledger_with(4, 16_000).await;
    charge(&ledger, tasks[0], "g0").await;
    charge(&ledger, tasks[1], "g1").await;
    assert_eq!(ledger.reserve(tasks[2]).await.unwrap(), Reservation::Reserved);
    assert_eq!(ledger.reserve(tasks[3]).await.unwrap(), Reservation::Reserved);
    let sizes = [
        (AspectRatio::Square, Money::from_micros(11_797)),
        (AspectRatio::Landscape21x9, Money::from_micros(12_452)),
    ];
    let repriced = ledger
        .reprice_sizes(job, Pass::Preview, "photon-flash-1", &sizes)
        .await
        .unwrap();
    assert_eq!(repriced.corrected_images, 2);
    assert_eq!(repriced.corrected, Money::from_micros(2 * (11_797 - 4_000)));
    assert_eq!(repriced.topped_up, 0, "the budget can't raise either reservation");
    // Each charge is now its size's price, and the money log agrees.
    assert_eq!(
        ledger.net_charges().await.unwrap(),
        Money::from_micros(2 * 11_797)
    );
    // Spent 23,594 of 16,000: neither waiting reservation can be covered, so neither is sent.
    assert_eq!(
        ledger.cover_reservation(tasks[2]).await.unwrap(),
        Err(Money::from_micros(11_797))
    );
    // The task's own price is raised (later reservations use it), never lowered.
    let task = ledger.task(tasks[3]).await.unwrap();
    assert_eq!(task.price_micros, 11_797);
    ledger
        .reprice_sizes(
            job,
            Pass::Preview,
            "photon-flash-1",
            &[(AspectRatio::Square, Money::from_micros(5_000))],
        )
        .await
        .unwrap();
    assert_eq!(ledger.task(tasks[3]).await.unwrap().price_micros, 11_797);
}

#[tokio::test]
async fn a_reservation_made_before_a_raise_is_topped_up_once_the_budget_covers_it() {
    let (_dir, ledger, job, tasks) = ledger_with(2, 12_000).await;
    assert_eq!(ledger.reserve(tasks[0]).await.unwrap(), Reservation::Reserved);
    assert_eq!(ledger.reserve(tasks[1]).await.unwrap(), Reservation::Reserved);
    // Raised while both waited: 2 × 9,000 is past the budget, so neither is raised yet.
    let repriced = ledger
        .reprice(job, Pass::Preview, "photon-flash-1", Money::from_micros(9_000))
        .await
        .unwrap();
    assert_eq!(repriced.topped_up, 0);
    assert_eq!(
        ledger.cover_reservation(tasks[0]).await.unwrap(),
        Err(Money::from_micros(9_000))
    );
    // One is given back (not sent): the other now fits at the new price.
    ledger
        .release(tasks[1], darkroom_ledger::TaskState::Pending, None)
        .await
        .unwrap();
    assert_eq!(ledger.cover_reservation(tasks[0]).await.unwrap(), Ok(()));
    let pass = ledger.pass(job, Pass::Preview).await.unwrap().unwrap();
    assert_eq!(pass.reserved_micros, 9_000);
    assert_eq!(ledger.task(tasks[0]).await.unwrap().reserved_micros, 9_000);
}
