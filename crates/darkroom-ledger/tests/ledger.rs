//! The ledger against a real SQLite file: budget reservation, charges and refunds, loading and
//! superseding tasks, resume queries.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.
use darkroom_jobs::{AspectRatio, Format, Metadata, Model, Money, Pass, References, Task};
use darkroom_ledger::{Damage, ImageContent, Ledger, NewFinal, NewTask, Reservation, TaskState};

fn task(key: &str, prompt: &str) -> Task {
    Task {
        row_id: key.to_string(),
        pass: Pass::Preview,
        variant: 1,
        variants: 1,
        model: Model::PhotonFlash1,
        prompt: prompt.to_string(),
        aspect_ratio: AspectRatio::Square,
        format: Format::Jpg,
        refs: References::default(),
        metadata: Metadata::new(),
        fingerprint: format!("fp-{key}-{prompt}"),
    }
}

fn new_task(key: &str, prompt: &str, price: i64) -> NewTask {
    NewTask {
        task: task(key, prompt),
        line: 2,
        price: Money::from_micros(price),
        request_json: "{}".into(),
    }
}

async fn ledger_with(tasks: &[NewTask], budget: i64) -> (tempfile::TempDir, Ledger, i64) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("darkroom.db")).await.unwrap();
    let job = ledger.upsert_job("job", "job.csv", "file-fp").await.unwrap();
    ledger
        .set_budget(job, Pass::Preview, Money::from_micros(budget))
        .await
        .unwrap();
    let mut loader = ledger.begin_load(job, Pass::Preview).await.unwrap();
    loader.load_page(tasks).await.unwrap();
    loader.finish("file-fp").await.unwrap();
    (dir, ledger, job)
}

#[tokio::test]
async fn reservations_stop_exactly_at_the_budget() {
    let tasks: Vec<_> = (0..10)
        .map(|i| new_task(&format!("t{i}"), "a prompt", 4_000))
        .collect();
    let (_dir, ledger, job) = ledger_with(&tasks, 4_000 * 3 + 3_999).await;
    let pending = ledger.pending_tasks(job, Pass::Preview, 0, 100).await.unwrap();
    let mut outcomes = Vec::new();
    for t in &pending {
        outcomes.push(ledger.reserve(t.id).await.unwrap());
    }
    assert_eq!(
        outcomes.iter().filter(|o| **o == Reservation::Reserved).count(),
        3
    );
    assert_eq!(outcomes[3], Reservation::OverBudget);
    let pass = ledger.pass(job, Pass::Preview).await.unwrap().unwrap();
    assert_eq!(pass.reserved_micros, 12_000);
    assert!(pass.spent_micros + pass.reserved_micros <= pass.budget_micros);
}

#[tokio::test]
async fn concurrent_reservations_never_overshoot_the_budget() {
    let tasks: Vec<_> = (0..200)
        .map(|i| new_task(&format!("t{i}"), "a prompt", 15_000))
        .collect();
    let (_dir, ledger, job) = ledger_with(&tasks, 15_000 * 40 + 1).await;
    let pending = ledger.pending_tasks(job, Pass::Preview, 0, 1000).await.unwrap();
    let handles: Vec<_> = pending
        .into_iter()
        .map(|t| {
            let ledger = ledger.clone();
            tokio::spawn(async move { ledger.reserve(t.id).await.unwrap() })
        })
        .collect();
    let mut reserved = 0;
    for h in handles {
        if h.await.unwrap() == Reservation::Reserved {
            reserved += 1;
        }
    }
    assert_eq!(reserved, 40);
}

#[tokio::test]
async fn a_charge_replaces_the_reservation_and_a_failure_refunds_it() {
    let (_dir, ledger, job) = ledger_with(&[new_task("a", "a prompt", 4_000)], 10_000).await;
    let t = &ledger.pending_tasks(job, Pass::Preview, 0, 10).await.unwrap()[0];
    assert_eq!(ledger.reserve(t.id).await.unwrap(), Reservation::Reserved);
    let g = ledger.record_intent(t.id, "req-fp", "luma").await.unwrap();
    ledger.record_submitted(g, "upstream-1").await.unwrap();
    let pass = ledger.pass(job, Pass::Preview).await.unwrap().unwrap();
    assert_eq!((pass.spent_micros, pass.reserved_micros), (4_000, 0));
    assert_eq!(ledger.net_charges().await.unwrap(), Money::from_micros(4_000));

    ledger
        .record_generation_failed(g, "Job failed", TaskState::Pending)
        .await
        .unwrap();
    // A duplicate report of the same failure refunds nothing more.
    ledger
        .record_generation_failed(g, "Job failed", TaskState::Pending)
        .await
        .unwrap();
    let pass = ledger.pass(job, Pass::Preview).await.unwrap().unwrap();
    assert_eq!((pass.spent_micros, pass.reserved_micros), (0, 0));
    assert_eq!(ledger.net_charges().await.unwrap(), Money::ZERO);
    assert_eq!(ledger.task(t.id).await.unwrap().state, TaskState::Pending);
}

#[tokio::test]
async fn a_done_task_is_found_by_fingerprint_for_the_cache() {
    let (_dir, ledger, job) = ledger_with(&[new_task("a", "a prompt", 4_000)], 10_000).await;
    let t = &ledger.pending_tasks(job, Pass::Preview, 0, 10).await.unwrap()[0];
    ledger.reserve(t.id).await.unwrap();
    let g = ledger.record_intent(t.id, "req", "luma").await.unwrap();
    ledger.record_submitted(g, "up-1").await.unwrap();
    ledger.record_completed(g, "http://cdn/x.jpg").await.unwrap();
    ledger
        .record_done(g, "out/job/preview/a.jpg", &content("aa11", 10))
        .await
        .unwrap();
    let cached = ledger
        .cached_image(&t.fingerprint, "luma")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            cached.task_id,
            cached.output_path.as_str(),
            cached.generation_id.as_deref()
        ),
        (t.id, "out/job/preview/a.jpg", Some("up-1"))
    );
    assert_eq!(cached.content, content("aa11", 10));
    let counts = ledger.counts(job, Pass::Preview).await.unwrap();
    assert_eq!((counts.done, counts.total, counts.attempts), (1, 1, 1));
}

#[tokio::test]
async fn the_cache_offers_an_image_only_to_a_run_on_the_provider_that_made_it_copies_included() {
    let task = new_task("a", "a prompt", 4_000);
    let (_dir, ledger, job) = ledger_with(std::slice::from_ref(&task), 10_000).await;
    let (made, _) = make_done(&ledger, job, "aa11").await;
    let fingerprint = ledger.task(made).await.unwrap().fingerprint;
    assert_eq!(
        ledger
            .cached_image(&fingerprint, "luma")
            .await
            .unwrap()
            .map(|c| c.task_id),
        Some(made)
    );
    assert!(ledger
        .cached_image(&fingerprint, "replicate")
        .await
        .unwrap()
        .is_none());
    assert!(ledger.cached_image(&fingerprint, "fal").await.unwrap().is_none());

    // A copy in another job counts as made where its source's generation was made.
    let other = ledger
        .upsert_job("other", "other.csv", "file-fp-2")
        .await
        .unwrap();
    let mut loader = ledger.begin_load(other, Pass::Preview).await.unwrap();
    loader.load_page(&[task]).await.unwrap();
    loader.finish("file-fp-2").await.unwrap();
    let copy = ledger
        .pending_tasks(other, Pass::Preview, 0, 1)
        .await
        .unwrap()
        .remove(0);
    let source = ledger.task(made).await.unwrap().generation_id;
    ledger
        .record_cached(
            copy.id,
            "out/other/preview/a.jpg",
            source.as_deref(),
            &content("aa11", 10),
        )
        .await
        .unwrap();
    ledger.mark_damaged(made, Damage::Missing).await.unwrap();
    assert_eq!(
        ledger
            .cached_image(&fingerprint, "luma")
            .await
            .unwrap()
            .map(|c| c.task_id),
        Some(copy.id)
    );
    assert!(ledger
        .cached_image(&fingerprint, "replicate")
        .await
        .unwrap()
        .is_none());
}

fn content(hash: &str, bytes: i64) -> ImageContent {
    ImageContent {
        hash: hash.to_string(),
        bytes,
    }
}

/// Takes the first pending task through a paid create to done with `hash`: (task, generation).
async fn make_done(ledger: &Ledger, job: i64, hash: &str) -> (i64, i64) {
    let t = ledger
        .pending_tasks(job, Pass::Preview, 0, 1)
        .await
        .unwrap()
        .remove(0);
    ledger.reserve(t.id).await.unwrap();
    let g = ledger.record_intent(t.id, "req", "luma").await.unwrap();
    ledger.record_submitted(g, &format!("up-{}", t.id)).await.unwrap();
    ledger.record_completed(g, "http://cdn/x.jpg").await.unwrap();
    ledger
        .record_done(
            g,
            &format!("out/job/preview/{}.jpg", t.task_key),
            &content(hash, 10),
        )
        .await
        .unwrap();
    (t.id, g)
}

#[tokio::test]
async fn a_damaged_image_is_not_offered_by_the_cache_and_is_reopened_for_download_at_no_cost() {
    let (_dir, ledger, job) = ledger_with(&[new_task("a", "a prompt", 4_000)], 10_000).await;
    let (task, generation) = make_done(&ledger, job, "aa11").await;
    let fingerprint = ledger.task(task).await.unwrap().fingerprint;
    assert!(ledger.mark_damaged(task, Damage::Changed).await.unwrap());
    assert!(ledger.cached_image(&fingerprint, "luma").await.unwrap().is_none());

    assert_eq!(ledger.reopen_damaged(job, Pass::Preview).await.unwrap(), 1);
    let reopened = ledger.task(task).await.unwrap();
    assert_eq!(reopened.state, TaskState::Downloading);
    let open = ledger.open_generations(task).await.unwrap();
    assert_eq!(
        (open.len(), open[0].id, open[0].state.as_str()),
        (1, generation, "completed")
    );
    assert!(ledger.is_restoring(task).await.unwrap());
    // Downloading it again charges nothing and clears the damage.
    ledger
        .record_done(generation, "out/job/preview/a.jpg", &content("aa11", 10))
        .await
        .unwrap();
    assert!(!ledger.is_restoring(task).await.unwrap());
    assert_eq!(ledger.net_charges().await.unwrap(), Money::from_micros(4_000));
    assert!(ledger.cached_image(&fingerprint, "luma").await.unwrap().is_some());
}

#[tokio::test]
async fn a_lost_generation_leaves_its_charge_and_the_task_pending_to_be_made_again() {
    let (_dir, ledger, job) = ledger_with(&[new_task("a", "a prompt", 4_000)], 10_000).await;
    let (task, generation) = make_done(&ledger, job, "aa11").await;
    ledger.mark_damaged(task, Damage::Missing).await.unwrap();
    ledger.reopen_damaged(job, Pass::Preview).await.unwrap();
    ledger.remake_lost(generation).await.unwrap();
    assert_eq!(ledger.task(task).await.unwrap().state, TaskState::Pending);
    assert!(ledger.open_generations(task).await.unwrap().is_empty());
    assert_eq!(ledger.net_charges().await.unwrap(), Money::from_micros(4_000));
}

#[tokio::test]
async fn a_damaged_cache_copy_is_reopened_as_pending_and_no_longer_counts_as_cached() {
    let (_dir, ledger, job) = ledger_with(&[new_task("a", "a prompt", 4_000)], 10_000).await;
    let t = ledger
        .pending_tasks(job, Pass::Preview, 0, 1)
        .await
        .unwrap()
        .remove(0);
    ledger
        .record_cached(t.id, "out/job/preview/a.jpg", Some("up-9"), &content("bb22", 10))
        .await
        .unwrap();
    ledger.mark_damaged(t.id, Damage::Missing).await.unwrap();
    assert_eq!(ledger.reopen_damaged(job, Pass::Preview).await.unwrap(), 1);
    let counts = ledger.counts(job, Pass::Preview).await.unwrap();
    assert_eq!((counts.pending, counts.cached, counts.done), (1, 0, 0));
}

#[tokio::test]
async fn the_tasks_recording_a_path_are_found_and_moved_with_their_image() {
    let (_dir, ledger, job) = ledger_with(
        &[new_task("a", "first", 4_000), new_task("b", "second", 4_000)],
        10_000,
    )
    .await;
    let (a, _) = make_done(&ledger, job, "aa11").await;
    let path = ledger.task(a).await.unwrap().output_path.unwrap();
    let others = ledger.images_at(&path, -1).await.unwrap();
    assert_eq!(others.len(), 1);
    assert_eq!(others[0].content_hash.as_deref(), Some("aa11"));
    assert!(ledger.images_at(&path, a).await.unwrap().is_empty());
    assert!(ledger
        .move_image(a, &path, "out/job/preview/.superseded/a-aa11.jpg")
        .await
        .unwrap());
    assert!(
        !ledger.move_image(a, &path, "elsewhere").await.unwrap(),
        "only from where it was"
    );
    assert!(ledger.images_at(&path, -1).await.unwrap().is_empty());
}

#[tokio::test]
async fn reloading_a_changed_file_supersedes_changed_and_removed_rows_only() {
    let (_dir, ledger, job) = ledger_with(
        &[
            new_task("a", "first", 4_000),
            new_task("b", "second", 4_000),
            new_task("c", "third", 4_000),
        ],
        100_000,
    )
    .await;
    let mut loader = ledger.begin_load(job, Pass::Preview).await.unwrap();
    loader
        .load_page(&[
            new_task("a", "first", 4_000),
            new_task("b", "second, edited", 4_000),
        ])
        .await
        .unwrap();
    loader.finish("file-fp-2").await.unwrap();
    let pending = ledger.pending_tasks(job, Pass::Preview, 0, 100).await.unwrap();
    let mut prompts: Vec<_> = pending.iter().map(|t| t.prompt.as_str()).collect();
    prompts.sort_unstable();
    assert_eq!(prompts, ["first", "second, edited"]);
    assert_eq!(ledger.counts(job, Pass::Preview).await.unwrap().total, 2);
}

#[tokio::test]
async fn a_budget_below_what_was_spent_is_refused() {
    let (_dir, ledger, job) = ledger_with(&[new_task("a", "a prompt", 4_000)], 10_000).await;
    let t = &ledger.pending_tasks(job, Pass::Preview, 0, 10).await.unwrap()[0];
    ledger.reserve(t.id).await.unwrap();
    let error = ledger
        .set_budget(job, Pass::Preview, Money::from_micros(3_000))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("below"), "{error}");
    ledger
        .set_budget(job, Pass::Preview, Money::from_micros(20_000))
        .await
        .unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn the_ledger_file_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("darkroom.db");
    let _ledger = Ledger::open(&path).await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test]
async fn a_final_keeps_its_reference_lost_flag_apart_from_its_note() {
    let tasks = [
        new_task("oak", "an oak chair", 4_000),
        new_task("elm", "an elm chair", 4_000),
    ];
    let (_dir, ledger, job) = ledger_with(&tasks, 100_000).await;
    let previews = ledger.tiles(job, Pass::Preview).await.unwrap();
    let finals: Vec<NewFinal> = previews
        .iter()
        .map(|p| NewFinal {
            preview_task_id: p.id,
            task_key: p.task_key.clone(),
            row_id: p.row_id.clone(),
            line: p.line,
            variant: p.variant,
            variants: p.variants,
            model: "photon-1".into(),
            fingerprint: format!("final-{}", p.task_key),
            request_json: "{}".into(),
            prompt: p.prompt.clone(),
            aspect_ratio: p.aspect_ratio.clone(),
            format: p.format.clone(),
            metadata_json: p.metadata_json.clone(),
            price: Money::from_micros(15_000),
            // The note is for people: its words never decide the flag.
            reference_note: "made from the prompt alone".into(),
            reference_lost: p.row_id == "oak",
        })
        .collect();
    assert_eq!(ledger.add_finals(job, &finals).await.unwrap(), 2);
    // Promoting again resumes: a preview keeps the final it has.
    assert_eq!(ledger.add_finals(job, &finals).await.unwrap(), 0);
    let lost: Vec<(String, bool)> = ledger
        .results(job, Pass::Final, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.row_id, r.reference_lost))
        .collect();
    // Tiles come in file order (line, then row id): elm, then oak.
    assert_eq!(lost, [("elm".to_string(), false), ("oak".to_string(), true)]);
    let tiles = ledger.tiles(job, Pass::Final).await.unwrap();
    assert_eq!(
        tiles.iter().map(|t| t.reference_lost).collect::<Vec<_>>(),
        [false, true]
    );
}

#[tokio::test]
async fn a_job_records_the_hash_of_its_file_and_an_empty_one_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("darkroom.db")).await.unwrap();
    let job = ledger.upsert_job("job", "job.csv", "").await.unwrap();
    assert_eq!(ledger.job("job").await.unwrap().file_fingerprint, "");
    ledger.record_file_fingerprint(job, "abc123").await.unwrap();
    assert_eq!(ledger.upsert_job("job", "moved/job.csv", "").await.unwrap(), job);
    let record = ledger.job("job").await.unwrap();
    assert_eq!(
        (record.file_path.as_str(), record.file_fingerprint.as_str()),
        ("moved/job.csv", "abc123")
    );
    ledger.upsert_job("job", "job.csv", "def456").await.unwrap();
    assert_eq!(ledger.job("job").await.unwrap().file_fingerprint, "def456");
}
