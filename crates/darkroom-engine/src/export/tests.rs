//! Unit tests of `export`: which images a selection keeps, and the leftovers of a killed export.

use super::*;

fn task(id: i64, key: &str, pass: &str, state: TaskState, preview: Option<i64>) -> TaskRecord {
    TaskRecord {
        id,
        job_id: 1,
        pass: pass.into(),
        task_key: key.into(),
        row_id: key.into(),
        line: 2,
        variant: 1,
        variants: 1,
        model: "photon-1".into(),
        fingerprint: String::new(),
        request_json: "{}".into(),
        prompt: "a prompt".into(),
        aspect_ratio: "1:1".into(),
        format: "jpg".into(),
        metadata_json: "{}".into(),
        state,
        reason: None,
        price_micros: 0,
        reserved_micros: 0,
        cost_micros: 0,
        attempts: 1,
        cached: 0,
        latency_ms: None,
        output_path: None,
        generation_id: None,
        preview_task_id: preview,
        reference_note: None,
        reference_lost: false,
        content_hash: None,
        content_bytes: None,
        source_task_id: None,
        provider: None,
        source_key: None,
        preview_key: None,
        image_url: None,
    }
}

#[test]
fn a_kept_preview_gives_its_done_final_else_itself_and_bad_ids_are_named() {
    let previews = [
        task(1, "sofa", "preview", TaskState::Done, None),
        task(2, "lamp", "preview", TaskState::Done, None),
        task(3, "rug", "preview", TaskState::Failed, None),
    ];
    let finals = [
        task(11, "sofa", "final", TaskState::Done, Some(1)),
        task(12, "lamp", "final", TaskState::Failed, Some(2)),
    ];
    let ids = ["lamp".to_string(), "sofa".to_string(), "lamp".to_string()];
    let chosen = choose_kept(&previews, &finals, &ids).unwrap();
    let got: Vec<(i64, &str)> = chosen.iter().map(|t| (t.id, t.pass.as_str())).collect();
    assert_eq!(got, [(2, "preview"), (11, "final")]);

    // A final made directly (no preview link) under a kept preview's id is that row's final, even
    // when the preview itself has no image.
    let direct = [task(13, "rug", "final", TaskState::Done, None)];
    let chosen = choose_kept(&previews, &direct, &["rug".to_string()]).unwrap();
    assert_eq!(chosen[0].id, 13);

    let ids = ["rug".to_string(), "chair".to_string()];
    let Err(ExportError::BadSelection { problems }) = choose_kept(&previews, &finals, &ids) else {
        panic!("a bad selection is refused");
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("\"rug\"") && problems[0].contains("failed"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("\"chair\"") && problems[1].contains("no preview"),
        "{problems:?}"
    );
}

#[test]
fn leftovers_of_a_killed_export_are_removed_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("export");
    std::fs::create_dir_all(dir.path().join(".export.tmp-1-2/final")).unwrap();
    std::fs::write(dir.path().join(".export.old-1-2"), b"x").unwrap();
    std::fs::write(dir.path().join(".other.tmp-1-2"), b"x").unwrap();
    std::fs::write(dir.path().join("results.jsonl"), b"x").unwrap();
    remove_leftovers(&target).unwrap();
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [".other.tmp-1-2", "results.jsonl"]);
}
