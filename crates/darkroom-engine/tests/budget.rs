//! The budget policy and job preparation every command that spends goes through, against a real
//! ledger file: a given budget is set, never below what is committed; without one a new pass gets
//! the default and an existing pass keeps its own; an invalid job file loads nothing.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use darkroom_engine::budget::apply_budget;
use darkroom_engine::load::LoadError;
use darkroom_engine::prepare::{prepare_job, JobFile};
use darkroom_jobs::{Money, Pass, PriceTable, ReadOptions, Routing};
use darkroom_ledger::{Ledger, LedgerError, Reservation};

fn usd(text: &str) -> Money {
    Money::parse_usd(text).unwrap()
}

fn job_file<'a>(file: &'a std::path::Path, budget: Option<Money>) -> JobFile<'a> {
    JobFile {
        name: "vases",
        file,
        pass: Pass::Preview,
        budget,
        default_budget: usd("5"),
        routing: Routing::default(),
        prices: PriceTable::default(),
        read: ReadOptions::default(),
    }
}

#[tokio::test]
async fn a_new_pass_gets_the_default_an_existing_one_keeps_its_budget_and_a_given_one_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("darkroom.db")).await.unwrap();
    let file = dir.path().join("vases.csv");
    std::fs::write(&file, "id,prompt\nvase-1,a blue vase\nvase-2,a red vase\n").unwrap();

    let prepared = prepare_job(&ledger, job_file(&file, None)).await.unwrap();
    assert_eq!(prepared.pass.budget(), usd("5"), "a new pass gets the default");
    assert_eq!(prepared.loaded.report.as_ref().unwrap().tasks, 2);
    assert_eq!(
        ledger.counts(prepared.job_id, Pass::Preview).await.unwrap().total,
        2
    );
    let job = prepared.job_id;

    let given = apply_budget(&ledger, job, Pass::Preview, Some(usd("0.5")), usd("5"))
        .await
        .unwrap();
    assert_eq!(given.budget(), usd("0.5"), "a given budget is set, lower too");
    let kept = apply_budget(&ledger, job, Pass::Preview, None, usd("5"))
        .await
        .unwrap();
    assert_eq!(
        kept.budget(),
        usd("0.5"),
        "without one, the pass keeps its budget"
    );
    let again = prepare_job(&ledger, job_file(&file, None)).await.unwrap();
    assert_eq!(again.job_id, job, "the same job");
    assert_eq!(
        again.pass.budget(),
        usd("0.5"),
        "a resumed run keeps the budget too"
    );

    // A budget below what is reserved is refused, and the budget stays.
    let task = ledger.tiles(job, Pass::Preview).await.unwrap()[0].id;
    assert_eq!(ledger.reserve(task).await.unwrap(), Reservation::Reserved);
    let refused = apply_budget(&ledger, job, Pass::Preview, Some(usd("0.001")), usd("5")).await;
    assert!(
        matches!(refused, Err(LedgerError::BudgetBelowSpend { .. })),
        "{refused:?}"
    );
    let refused = prepare_job(&ledger, job_file(&file, Some(usd("0.001")))).await;
    assert!(
        matches!(
            refused,
            Err(LoadError::Ledger(LedgerError::BudgetBelowSpend { .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(
        ledger.pass(job, Pass::Preview).await.unwrap().unwrap().budget(),
        usd("0.5")
    );

    // The final pass is its own: no budget until one is applied.
    assert!(ledger.pass(job, Pass::Final).await.unwrap().is_none());
    let finals = apply_budget(&ledger, job, Pass::Final, None, usd("2"))
        .await
        .unwrap();
    assert_eq!(finals.budget(), usd("2"));
}

#[tokio::test]
async fn a_job_file_with_an_invalid_row_loads_no_task() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("darkroom.db")).await.unwrap();
    let file = dir.path().join("vases.csv");
    std::fs::write(
        &file,
        "id,prompt,aspect_ratio\nvase-1,a blue vase,1:1\nvase-2,a red vase,5:4\n",
    )
    .unwrap();
    let Err(LoadError::Invalid(report)) = prepare_job(&ledger, job_file(&file, None)).await else {
        panic!("the file has an invalid row");
    };
    assert_eq!(report.error_count, 1);
    // A first run that loaded nothing leaves no job behind (`darkroom status` would list it).
    assert!(matches!(
        ledger.job("vases").await,
        Err(darkroom_ledger::LedgerError::NoSuchJob(_))
    ));

    // A job that loaded before keeps its tasks when its file turns invalid.
    std::fs::write(&file, "id,prompt,aspect_ratio\nvase-1,a blue vase,1:1\n").unwrap();
    let loaded = prepare_job(&ledger, job_file(&file, None)).await.unwrap();
    std::fs::write(
        &file,
        "id,prompt,aspect_ratio\nvase-1,a blue vase,1:1\nvase-2,a red vase,5:4\n",
    )
    .unwrap();
    let Err(LoadError::Invalid(_)) = prepare_job(&ledger, job_file(&file, None)).await else {
        panic!("the file has an invalid row");
    };
    let job = ledger.job("vases").await.unwrap();
    assert_eq!(job.id, loaded.job_id);
    assert_eq!(ledger.counts(job.id, Pass::Preview).await.unwrap().total, 1);
}
