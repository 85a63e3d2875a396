//! Migrations are history: a landed migration never changes (sqlx checksums every applied file, and
//! an edited one makes every existing ledger refuse to open), is never renumbered or removed, and a
//! ledger made by the previous release opens with this code, its jobs, tasks and spend intact.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.
use darkroom_jobs::{Money, Pass};
use darkroom_ledger::Ledger;

/// Every landed migration: version, description, and its sqlx checksum (SHA-384 of the file's
/// bytes, as `sqlx::migrate::Migrator` reports it). A new migration is appended to this list when it
/// lands; a line here never changes. If this test fails because a landed file was edited, undo the
/// edit and put the change in a new migration.
const LANDED: &[(i64, &str, &str)] = &[
    (
        1,
        "ledger",
        "b5e2e8e1ada9115053c1325efc0e2dcda0065f85508e02034484d5c5fa78ebe34458a3cef759ad5cd34d9e0d70f55c61",
    ),
    (
        2,
        "deadlines",
        "1c939a90aa3088c65ccf9f0af14df5d253625593dd88205d4ab4041bdd9ef7c94fae35120b6874848a49d92c1a425cf6",
    ),
    (
        3,
        "promotions",
        "33672e7c07905aef44428930c0fe079234c55ba0e9c66a2901fe7aba0efe1b1caaaaf9dfac218e6cafb1b4ce4a97bc26",
    ),
    (
        4,
        "unplanned charges",
        "485ce614a0379bf46e20018752bb45cffa00d5abe4d914997e75d689fbfdd739072b67c24244fa1b39c1b3a7c0395278",
    ),
    (
        5,
        "content hashes",
        "b94a4068aab32a6c466a3f3a5179ff0c474902235979626b513057b3c56c2c14cae72f7ea5934c83e50a598efbc3fda8",
    ),
    (
        6,
        "audit",
        "e48b85432380ed7106066a456b70dfa1faa8c69305fd0b683ccbf544bbbce3c66b2a8c6251275430893138955c94db33",
    ),
    (
        7,
        "observed prices",
        "aaf2e0b160eedaccb51b05b2bffd0a6175dff20cc6b0fecded8d37ed905da4cd14de5f87151e172e6fd0c79cdce15036",
    ),
    (
        8,
        "reference flags",
        "b73bb59412a9e49750b3e44e8954d1ba79f5016c73cb545a004b5d5a9ac59b3c1507662239a9da9f5f20910e02360b43",
    ),
    (
        9,
        "reframes",
        "0c355840bf6beebb236a6b2fe1898f3371678abd79088428c7327f5292c90303d5ca313b5fa51d7565d5087ed01ea9ab",
    ),
    (
        10,
        "quality checks",
        "acc0143454714fa1cfb1b136970536f887bd9390fbfcbe450422dae55a6668aefea60514d840034b139248d8f221db27",
    ),
    (
        11,
        "trials",
        "774ebecd42a1e2b1c5db4101635d16745a543e4cba723cdb027d27aae0148796a617159987fd2fbfd0965e36a887b0f6",
    ),
    (
        12,
        "providers",
        "c9d99ad057e51c4ff813a175bd700a7c8a5daf38450ab03b499f100cb530161415e29f7f46807126f6ae66d46cbac5d2",
    ),
    (
        13,
        "accounts",
        "15c1f17d48c22305192a8e2706800ea3c23f803da95a1a3ede323bc2a3dd8a2fe6e65683d9588a01c28c90b16095ee8c",
    ),
    (
        14,
        "run charges index",
        "70b05fe8e47e6c88ba626746abcea7ac3b98fb40734e74f71219db87670fc2027d546f4fe2d4f12afafbac7c51c145be",
    ),
    (
        15,
        "charge bases",
        "4dafe670484f21fc38aeb59923e0a7aec4ad16f18ceefac137afa8bf9d993b7afa701a96746db503560ab3d554b9946f",
    ),
    (
        16,
        "audit finds",
        "2b6e54cdbe5d0ae044d53b16f8fe5117d38de08d2790f82c137681046e70db86565ffee57e0add34e5a0ff6cbe56a5bb",
    ),
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn landed_migrations_keep_their_number_name_and_checksum() {
    let migrator = sqlx::migrate!("../../migrations");
    let found: Vec<(i64, String, String)> = migrator
        .iter()
        .map(|m| (m.version, m.description.to_string(), hex(&m.checksum)))
        .collect();
    assert!(
        found.len() >= LANDED.len(),
        "a landed migration was removed: {found:#?}"
    );
    for ((version, description, checksum), found) in LANDED.iter().zip(&found) {
        assert_eq!(
            (found.0, found.1.as_str()),
            (*version, *description),
            "landed migration {version:04} ({description}) was renumbered, renamed or removed"
        );
        assert_eq!(
            found.2,
            *checksum,
            "landed migration {version:04}_{} was edited: add a new migration instead",
            description.replace(' ', "_")
        );
    }
    // New migrations follow the landed ones, numbered one after another.
    for (i, (version, _, _)) in found.iter().enumerate() {
        assert_eq!(
            *version,
            i as i64 + 1,
            "migration numbers have a gap or a duplicate: {found:#?}"
        );
    }
}

/// `fixtures/ledger-0.1.0.db`: made by the release at commit 633b42b (see `fixtures/README.md`):
/// job `chairs`, previews of a 3-row file and one of them promoted to a final.
fn previous_release_ledger() -> (tempfile::TempDir, std::path::PathBuf) {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ledger-0.1.0.db");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("darkroom.db");
    std::fs::copy(&fixture, &db).unwrap();
    (dir, db)
}

#[tokio::test]
async fn a_ledger_made_by_the_previous_release_opens_with_its_jobs_tasks_and_spend() {
    let (_dir, db) = previous_release_ledger();
    let ledger = Ledger::open(&db).await.unwrap();

    let jobs = ledger.jobs().await.unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = ledger.job("chairs").await.unwrap();

    let preview = ledger.pass(job.id, Pass::Preview).await.unwrap().unwrap();
    let counts = ledger.counts(job.id, Pass::Preview).await.unwrap();
    assert_eq!((counts.total, counts.done), (3, 3), "{counts:?}");
    assert_eq!((preview.spent_micros, preview.reserved_micros), (3 * 4_000, 0));

    let finals = ledger.pass(job.id, Pass::Final).await.unwrap().unwrap();
    let counts = ledger.counts(job.id, Pass::Final).await.unwrap();
    assert_eq!((counts.total, counts.done), (1, 1), "{counts:?}");
    assert_eq!((finals.spent_micros, finals.reserved_micros), (15_000, 0));

    assert_eq!(
        ledger.net_charges().await.unwrap(),
        Money::from_micros(3 * 4_000 + 15_000)
    );
    let results = ledger.results(job.id, Pass::Preview, 0, 100).await.unwrap();
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|r| r.output_path.is_some()), "{results:?}");

    // The current code writes to it as well: a budget raised on the old pass.
    ledger
        .set_budget(job.id, Pass::Preview, Money::from_micros(1_000_000))
        .await
        .unwrap();
    ledger.close().await;
}

/// Writes to the ledger file with plain SQL, as an older release would have.
async fn write_raw(db: &std::path::Path, sql: &str) {
    use sqlx::Connection as _;
    let url = format!("sqlite://{}", db.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn opening_an_older_ledger_sets_the_reference_lost_flag_from_the_note_it_wrote() {
    // The fixture's one final was promoted after the preview's URL stopped resolving: release
    // 0.1.0 said so only in its note.
    let (_dir, db) = previous_release_ledger();
    let ledger = Ledger::open(&db).await.unwrap();
    let job = ledger.job("chairs").await.unwrap();

    let finals = ledger.results(job.id, Pass::Final, 0, 100).await.unwrap();
    assert_eq!(finals.len(), 1);
    assert!(
        finals[0]
            .reference_note
            .as_deref()
            .is_some_and(|n| n.contains("no longer resolves")),
        "{:?}",
        finals[0]
    );
    assert!(finals[0].reference_lost, "{:?}", finals[0]);
    assert!(ledger.tiles(job.id, Pass::Final).await.unwrap()[0].reference_lost);
    let previews = ledger.results(job.id, Pass::Preview, 0, 100).await.unwrap();
    assert!(previews.iter().all(|r| !r.reference_lost), "{previews:?}");
    ledger.close().await;
}

#[tokio::test]
async fn a_final_made_with_its_preview_as_reference_is_not_flagged_when_migrated() {
    let (_dir, db) = previous_release_ledger();
    write_raw(
        &db,
        "UPDATE tasks SET reference_note = 'image_ref = preview oak (weight 0.85)' WHERE pass = 'final'",
    )
    .await;
    let ledger = Ledger::open(&db).await.unwrap();
    let job = ledger.job("chairs").await.unwrap();
    let finals = ledger.results(job.id, Pass::Final, 0, 100).await.unwrap();
    assert_eq!(finals.len(), 1);
    assert!(!finals[0].reference_lost, "{:?}", finals[0]);
    ledger.close().await;
}

#[tokio::test]
async fn opening_an_older_ledger_records_its_sent_tasks_and_charges_as_lumas() {
    // Release 0.1.0 spoke only Luma: every task it sent, generation and charge is Luma's.
    let (_dir, db) = previous_release_ledger();
    let ledger = Ledger::open(&db).await.unwrap();
    let job = ledger.job("chairs").await.unwrap();
    for pass in [Pass::Preview, Pass::Final] {
        let tasks = ledger.results(job.id, pass, 0, 100).await.unwrap();
        assert!(!tasks.is_empty());
        for task in tasks {
            assert_eq!(task.provider.as_deref(), Some("luma"), "{task:?}");
        }
        assert_eq!(ledger.providers_used(job.id, pass).await.unwrap(), ["luma"]);
        assert!(ledger
            .unsettled_by_provider(job.id, pass)
            .await
            .unwrap()
            .is_empty());
    }
}
