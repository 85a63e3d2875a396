//! Unit tests of the crate (they reach its private pool).

#![allow(clippy::unwrap_used)]

use darkroom_jobs::{Money, Pass};

use crate::Ledger;

async fn pass_with(budget: i64) -> (tempfile::TempDir, Ledger, i64) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("darkroom.db")).await.unwrap();
    let job = ledger.upsert_job("job", "job.csv", "fp").await.unwrap();
    ledger
        .set_budget(job, Pass::Preview, Money::from_micros(budget))
        .await
        .unwrap();
    (dir, ledger, job)
}

#[tokio::test]
async fn the_schema_refuses_a_reservation_past_the_budget_but_records_unplanned_charges() {
    let (_dir, ledger, job) = pass_with(10_000).await;
    let reserve = |micros: i64| {
        sqlx::query("UPDATE job_passes SET reserved_micros = reserved_micros + ?2 WHERE job_id = ?1")
            .bind(job)
            .bind(micros)
            .execute(&ledger.pool)
    };
    reserve(10_000).await.unwrap();
    assert!(
        reserve(1).await.is_err(),
        "a reservation past the budget must be refused"
    );
    // A charge nobody reserved for (found after the fact) is real money: it is recorded even
    // past the budget, and then nothing more can be reserved.
    sqlx::query(
        "UPDATE job_passes SET reserved_micros = 0, spent_micros = 14000, unplanned_micros = 4000
         WHERE job_id = ?1",
    )
    .bind(job)
    .execute(&ledger.pool)
    .await
    .unwrap();
    assert!(reserve(1).await.is_err());
    let pass = ledger.pass(job, Pass::Preview).await.unwrap().unwrap();
    assert_eq!((pass.spent_micros, pass.unplanned_micros), (14_000, 4_000));
    assert_eq!(pass.remaining(), Money::ZERO);
    // Keeping the budget is allowed (a resume with the same --budget); lowering it is not.
    ledger
        .set_budget(job, Pass::Preview, Money::from_micros(10_000))
        .await
        .unwrap();
    assert!(ledger
        .set_budget(job, Pass::Preview, Money::from_micros(9_000))
        .await
        .is_err());
    ledger
        .set_budget(job, Pass::Preview, Money::from_micros(20_000))
        .await
        .unwrap();
    assert_eq!(
        ledger
            .pass(job, Pass::Preview)
            .await
            .unwrap()
            .unwrap()
            .remaining(),
        Money::from_micros(6_000)
    );
}
