//! Promotion's own tests: keep cells, select files and the finals' requests.

use super::*;

fn options(reference: PreviewReference) -> PromoteOptions {
    PromoteOptions {
        reference,
        weight: 0.85,
        model: Model::Photon1,
        price: Money::from_micros(15_000),
        prices: PriceTable::default(),
        choices: RoutingChoices::default(),
    }
}

#[test]
fn keep_cells_that_choose_a_row() {
    for yes in ["y", "YES", " x ", "1", "True"] {
        assert!(is_kept(yes), "{yes:?}");
    }
    for no in ["", "n", "no", "0", "false", "keep", "2"] {
        assert!(!is_kept(no), "{no:?}");
    }
}

fn selection_from(text: impl AsRef<[u8]>) -> Result<Vec<String>, SelectionError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("select.csv");
    std::fs::write(&path, text).unwrap();
    read_selection(&path)
}

#[test]
fn a_select_file_chooses_kept_preview_rows() {
    // manifest.csv as a spreadsheet saves it: a BOM, final rows, keep in any case.
    let manifest =
        "\u{feff}id,pass,model,keep\nsofa,preview,photon-flash-1,YES\nlamp,preview,photon-flash-1,\n\
                    sofa,final,photon-1,y\nrug,preview,photon-flash-1, x \n";
    assert_eq!(selection_from(manifest).unwrap(), ["sofa", "rug"]);
    // The review page's export, and a bare list of ids.
    assert_eq!(
        selection_from("id,pass,keep\nsofa,preview,y\n").unwrap(),
        ["sofa"]
    );
    assert_eq!(selection_from("id\nsofa\n\nlamp\n").unwrap(), ["sofa", "lamp"]);
}

#[test]
fn a_select_file_without_ids_is_an_error_with_its_place() {
    assert!(matches!(
        selection_from("name,keep\nsofa,y\n"),
        Err(SelectionError::NoIdColumn { .. })
    ));
    let bad = selection_from(b"id,keep\nsofa,y\n\xff\xfe,y\n").unwrap_err();
    assert!(bad.to_string().contains("line 3"), "{bad}");
}

#[test]
fn the_final_request_switches_the_model_and_adds_the_preview() {
    let preview = r#"{"model":"photon-flash-1","prompt":"a vase","aspect_ratio":"1:1","format":"jpg"}"#;
    let body: Value = serde_json::from_str(&final_request(
        preview,
        Model::Photon1,
        &options(PreviewReference::ModifyImageRef),
        Some("http://p/1.jpg"),
    ))
    .unwrap();
    assert_eq!(body["model"], "photon-1");
    assert_eq!(body["prompt"], "a vase");
    assert_eq!(body["modify_image_ref"]["url"], "http://p/1.jpg");
    assert_eq!(body["modify_image_ref"]["weight"], 0.85);

    let body: Value = serde_json::from_str(&final_request(
        preview,
        Model::Photon1,
        &options(PreviewReference::ModifyImageRef),
        None,
    ))
    .unwrap();
    assert!(body.get("modify_image_ref").is_none(), "no URL, no reference");
}

#[test]
fn an_image_ref_final_keeps_at_most_four_references() {
    let preview = r#"{"model":"photon-flash-1","prompt":"a vase","image_ref":[{"url":"a"},{"url":"b"},{"url":"c"},{"url":"d"}]}"#;
    let body: Value = serde_json::from_str(&final_request(
        preview,
        Model::Photon1,
        &options(PreviewReference::ImageRef),
        Some("p"),
    ))
    .unwrap();
    let refs = body["image_ref"].as_array().unwrap();
    assert_eq!(refs.len(), 4);
    assert_eq!(refs[3]["url"], "p");
    assert_eq!(refs[0]["url"], "a");
}

#[test]
fn each_chosen_id_carries_its_physical_line_blank_lines_and_crlf_included() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("select.csv");
    std::fs::write(
        &path,
        "id,note,keep\r\nsofa,,y\r\n\r\nlamp,\"two\r\nlines\",y\r\nrug,,\r\n\r\n\r\nvase,,x\r\n",
    )
    .unwrap();
    let lines: Vec<(String, u64)> = read_selection_lines(&path)
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s.line))
        .collect();
    assert_eq!(
        lines,
        [
            ("sofa".to_string(), 2),
            ("lamp".to_string(), 4),
            ("vase".to_string(), 9)
        ]
    );
}
