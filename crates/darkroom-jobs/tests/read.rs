//! The job-file reader, driven by a table of inputs and the errors they must produce (with lines),
//! plus property tests: any input either parses or yields errors whose lines exist; never a panic.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::path::PathBuf;

use darkroom_jobs::{read_job, AspectRatio, Format, Model, ReadOptions, Report, Row};
use proptest::prelude::*;

fn read(name: &str, bytes: &[u8]) -> (Report, Vec<Row>) {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let mut rows = Vec::new();
    let report = read_job(&path, &ReadOptions::default(), |row| rows.push(row)).unwrap();
    (report, rows)
}

/// A file name, its content, and the errors it must produce: (line, a fragment of the message).
type Case = (&'static str, &'static str, &'static [(u64, &'static str)]);

const BAD: &[Case] = &[
    ("a.csv", "id,prompt\nsofa,\n", &[(2, "prompt is empty")]),
    ("a.csv", "id,prompt\nsofa,ab\n", &[(2, "too short")]),
    ("a.csv", "id,prompt,aspect_ratio\nsofa-3,A red sofa,5:4\n", &[(2, "aspect_ratio \"5:4\" is not one of 1:1, 3:4, 4:3")]),
    ("a.csv", "id,prompt\na,A red sofa\na,A blue sofa\n", &[(3, "duplicate id \"a\" (first used on line 2)")]),
    ("a.csv", "id,prompt\n../../x,A red sofa\n", &[(2, "must be 1 to 100 letters")]),
    ("a.csv", "id,prompt\n.hidden,A red sofa\n", &[(2, "not start with '.'")]),
    ("a.csv", "id,prompt,variants\na,A red sofa,0\nb,A red sofa,101\nc,A red sofa,two\n", &[(2, "variants"), (3, "variants"), (4, "variants")]),
    ("a.csv", "id,prompt,model\na,A red sofa,photon-2\n", &[(2, "model \"photon-2\"")]),
    ("a.csv", "id,prompt,format\na,A red sofa,gif\n", &[(2, "format \"gif\"")]),
    ("a.csv", "id,prompt,image_ref\na,A red sofa,ftp://x/y.jpg\n", &[(2, "not an http or https URL")]),
    ("a.csv", "id,prompt,image_ref\na,A red sofa,https:///y.jpg\n", &[(2, "has no host")]),
    ("a.csv", "id,prompt,image_ref,image_ref_weight\na,A red sofa,https://x/1.jpg,1.5\n", &[(2, "image_ref_weight 1.5 is outside 0 to 1")]),
    ("a.csv", "id,prompt,image_ref\na,A red sofa,https://x/1 https://x/2 https://x/3 https://x/4 https://x/5\n", &[(2, "at most 4")]),
    ("a.csv", "id,prompt,style_ref\na,A red sofa,https://x/1 https://x/2\n", &[(2, "style_ref takes one URL")]),
    ("a.csv", "id,prompt,style_ref_weight\na,A red sofa,0.5\n", &[(2, "style_ref_weight is given but style_ref is empty")]),
    ("a.csv", "id,prompt\na,A {red|blue sofa\n", &[(2, "unbalanced '{'")]),
    ("a.csv", "id,prompt\na,A red} sofa\n", &[(2, "unbalanced '}'")]),
    ("a.csv", "id,prompt\na,A red sofa,extra\n", &[(2, "has 3 fields; the header has 2")]),
    ("a.csv", "id,prompt\na,\"A red\nsofa\"\nb,ab\n", &[(4, "too short")]),
    ("a.jsonl", "{\"id\": \"a\", \"promt\": \"A red sofa\"}\n", &[(1, "unknown field `promt`")]),
    ("a.jsonl", "{\"id\": \"a\", \"prompt\": \"A red sofa\"\n", &[(1, "is not valid JSON")]),
    ("a.jsonl", "\n\n{\"id\": \"a\", \"prompt\": \"A red sofa\", \"aspect_ratio\": \"2:1\"}\n", &[(3, "aspect_ratio \"2:1\"")]),
    ("a.jsonl", "{\"id\": \"a\", \"prompt\": \"A red sofa\", \"metadata\": {\"x\": [1]}}\n", &[(1, "metadata.x must be")]),
    ("a.jsonl", "{\"id\": \"a\", \"prompt\": \"A red sofa\", \"style_ref\": [{\"url\": \"https://x/1\"}, {\"url\": \"https://x/2\"}]}\n", &[(1, "style_ref has 2 images")]),
    ("a.jsonl", "[1,2]\n", &[(1, "expected a JSON object with at least id/prompt")]),
    ("a.jsonl", "null\n", &[(1, "expected a JSON object with at least id/prompt (e.g. {\"id\": \"sofa-1\", \"prompt\": \"A linen sofa\"}), found null")]),
    ("a.jsonl", "\"A red sofa\"\n3\ntrue\n", &[(1, "found a string"), (2, "found a number"), (3, "found a boolean")]),
    ("a.jsonl", "{\"id\": \"a\", \"prompt\": \"A red sofa\"}\n\u{feff}{\"id\": \"b\", \"prompt\": \"A blue sofa\"}\n", &[(2, "starts with a byte-order mark (U+FEFF)")]),
    ("a.jsonl", "{\"id\": \"a\", \"prompt\": \"A red sofa\", \"id\": \"b\"}\n", &[(1, "gives the key \"id\" twice")]),
    ("a.jsonl", "{\"id\": \"a\", \"prompt\": \"A red sofa\", \"metadata\": {\"sku\": \"1\", \"sku\": \"2\"}}\n", &[(1, "gives the key \"metadata.sku\" twice")]),
    ("a.jsonl", "{\"id\": \"a\", \"prompt\": \"A red sofa\", \"image_ref\": [{\"url\": \"https://x/1\", \"url\": \"https://x/2\"}]}\n", &[(1, "gives the key \"image_ref[0].url\" twice")]),
];

#[test]
fn every_bad_row_is_reported_with_its_line_and_what_was_expected() {
    for (name, text, expected) in BAD {
        let (report, _) = read(name, text.as_bytes());
        assert_eq!(
            usize::try_from(report.error_count).unwrap(),
            expected.len(),
            "{text:?}: {:?}",
            report.errors
        );
        for ((line, fragment), error) in expected.iter().zip(&report.errors) {
            assert_eq!(error.line, *line, "{text:?}: {error}");
            assert!(
                error.to_string().contains(fragment),
                "{text:?}: {error} lacks {fragment:?}"
            );
        }
    }
}

#[test]
fn an_error_names_the_row_id_when_there_is_one() {
    let (report, _) = read("a.csv", b"id,prompt,aspect_ratio\nsofa-3,A red sofa,5:4\n");
    assert_eq!(
        report.errors[0].to_string(),
        "line 2 (id \"sofa-3\"): aspect_ratio \"5:4\" is not one of 1:1, 3:4, 4:3, 9:16, 16:9, 9:21, 21:9"
    );
}

#[test]
fn a_jsonl_line_giving_id_twice_names_neither_id_and_no_internal_type_names_show() {
    let (report, rows) = read(
        "a.jsonl",
        b"{\"id\": \"a\", \"prompt\": \"A red sofa\", \"id\": \"b\"}\nnull\n[1]\n",
    );
    assert!(rows.is_empty());
    assert_eq!(
        report.errors[0].to_string(),
        "line 1: gives the key \"id\" twice; write each key once (JSON readers disagree on which one counts)"
    );
    for error in &report.errors {
        let text = error.to_string();
        assert!(
            !text.contains("JsonRow") && !text.contains("expected a string"),
            "{text}"
        );
    }
    // A byte-order mark opening the first line is still taken as the file's own.
    let (report, rows) = read(
        "a.jsonl",
        "\u{feff}{\"id\": \"a\", \"prompt\": \"A red sofa\"}\n".as_bytes(),
    );
    assert!(report.is_valid(), "{:?}", report.errors);
    assert_eq!(rows.len(), 1);
}

#[test]
fn non_utf8_bytes_are_reported_on_their_line() {
    let (report, rows) = read("a.csv", b"id,prompt\na,A red sofa\nb,A caf\xe9 table\n");
    assert_eq!(
        rows.len(),
        1,
        "rows after the first invalid one are not handed on"
    );
    assert!(!report.is_valid());
    assert_eq!(report.errors[0].line, 3);
    assert!(report.errors[0].message.contains("UTF-8"));
    let (report, _) = read("a.jsonl", b"{\"prompt\": \"A caf\xe9 table\"}\n");
    assert_eq!(report.errors[0].line, 1);
}

#[test]
fn a_valid_csv_fills_every_column_and_defaults_the_rest() {
    let text = "\u{feff}id,prompt,aspect_ratio,variants,model,format,image_ref,image_ref_weight,style_ref,character_ref,sku,arm\n\
                sofa,A linen sofa,1:1,3,photon-1,png,https://cdn.example.com/a.jpg https://cdn.example.com/b.jpg,0.8,https://cdn.example.com/s.jpg,https://cdn.example.com/p.jpg,S-1,B\n\
                ,A walnut side table,,,,,,,,,S-2,A\n";
    let (report, rows) = read("a.csv", text.as_bytes());
    assert!(report.is_valid(), "{:?}", report.errors);
    assert_eq!((report.rows, report.tasks), (2, 4));
    assert_eq!(report.metadata_columns, ["sku", "arm"]);
    let sofa = &rows[0];
    assert_eq!(
        (sofa.aspect_ratio, sofa.variants, sofa.model, sofa.format),
        (AspectRatio::Square, 3, Some(Model::Photon1), Format::Png)
    );
    assert_eq!(sofa.refs.image_ref.len(), 2);
    assert_eq!(sofa.refs.image_ref[1].weight, Some(0.8));
    assert_eq!(sofa.metadata["sku"], "S-1");
    let table = &rows[1];
    assert_eq!(table.id, "row-3", "an id derived from the line");
    assert_eq!(
        (table.aspect_ratio, table.variants, table.model),
        (AspectRatio::Landscape16x9, 1, None)
    );
}

#[test]
fn prompt_variables_expand_rows_with_stable_ids() {
    let (report, rows) = read(
        "a.csv",
        b"id,prompt\nsofa,A {leather|linen} sofa in {oak|walnut}\n",
    );
    assert!(report.is_valid());
    let ids: Vec<_> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "sofa-leather-oak",
            "sofa-leather-walnut",
            "sofa-linen-oak",
            "sofa-linen-walnut"
        ]
    );
    assert_eq!(rows[3].prompt, "A linen sofa in walnut");
    let (again, rows_again) = read(
        "a.csv",
        b"id,prompt\nsofa,A {leather|linen} sofa in {oak|walnut}\n",
    );
    assert_eq!(again.rows, 4);
    assert_eq!(rows_again, rows);
}

#[test]
fn a_row_expanding_past_ten_thousand_is_an_error() {
    let group = format!(
        "{{{}}}",
        (0..101).map(|i| i.to_string()).collect::<Vec<_>>().join("|")
    );
    let text = format!("id,prompt\na,A {group} {group} sofa\n");
    let (report, _) = read("a.csv", text.as_bytes());
    assert_eq!(report.error_count, 1);
    assert!(
        report.errors[0].message.contains("10201 rows"),
        "{}",
        report.errors[0]
    );
}

#[test]
fn jsonl_takes_the_api_shapes_and_skips_blank_lines() {
    let text = r#"{"id": "p1", "prompt": "A portrait in a cafe", "aspect_ratio": "3:4", "variants": 2, "image_ref": [{"url": "https://cdn.example.com/a.jpg", "weight": 0.85}], "style_ref": {"url": "https://cdn.example.com/s.jpg", "weight": 0.5}, "character_ref": {"identity0": {"images": ["https://cdn.example.com/p.jpg"]}}, "modify_image_ref": {"url": "https://cdn.example.com/m.jpg", "weight": 0.1}, "metadata": {"campaign": "spring", "n": 3}}

{"prompt": "A sunny terrace"}
"#;
    let (report, rows) = read("a.jsonl", text.as_bytes());
    assert!(report.is_valid(), "{:?}", report.errors);
    assert_eq!((report.rows, report.tasks), (2, 3));
    assert_eq!(rows[0].refs.character_ref.len(), 1);
    assert_eq!(rows[0].refs.style_ref.as_ref().unwrap().weight, Some(0.5));
    assert_eq!(rows[0].metadata["n"], "3");
    assert_eq!(rows[1].id, "row-3");
    assert_eq!(report.metadata_columns, ["campaign", "n"]);
}

#[test]
fn a_gigantic_jsonl_line_is_refused_without_reading_it_into_memory() {
    let mut text = String::from("{\"prompt\": \"");
    text.push_str(&"x".repeat(2 << 20));
    text.push_str("\"}\n{\"prompt\": \"A fine prompt\"}\n");
    let (report, _) = read("a.jsonl", text.as_bytes());
    assert_eq!(report.error_count, 1);
    assert_eq!(report.errors[0].line, 1);
    assert_eq!(report.rows, 1);
}

#[test]
fn the_file_fingerprint_changes_with_any_byte() {
    let (a, _) = read("a.csv", b"id,prompt\na,A red sofa\n");
    let (b, _) = read("a.csv", b"id,prompt\na,A red sofb\n");
    assert_ne!(a.file_fingerprint, b.file_fingerprint);
    assert_eq!(a.file_fingerprint.len(), 64);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn any_csv_parses_or_reports_errors_on_lines_that_exist(body in "[a-z0-9,\"{}|\\\\\n :.\\-]{0,300}") {
        let text = format!("id,prompt,aspect_ratio,variants\n{body}");
        let lines = text.lines().count() as u64 + 1;
        let (report, _) = read("p.csv", text.as_bytes());
        for error in &report.errors {
            prop_assert!(error.line >= 1 && error.line <= lines, "{error} in {text:?}");
        }
    }

    #[test]
    fn any_jsonl_parses_or_reports_errors_on_lines_that_exist(body in "[a-z0-9{}\\[\\]\":, \n|]{0,300}") {
        let lines = body.lines().count() as u64 + 1;
        let (report, _) = read("p.jsonl", body.as_bytes());
        for error in &report.errors {
            prop_assert!(error.line >= 1 && error.line <= lines, "{error} in {body:?}");
        }
    }

    #[test]
    fn any_prompt_template_expands_or_errs_without_panicking(prompt in "[a-z {}|\\\\]{0,60}") {
        if let Ok(template) = darkroom_jobs::variables::Template::parse(&prompt) {
            let count = template.count();
            if count <= 1000 {
                prop_assert_eq!(template.expand().count() as u64, count);
            }
        }
    }
}

#[test]
fn hostile_ids_never_name_a_path_outside_the_output_directory() {
    for id in [
        "../../x",
        "/etc/passwd",
        "a/b",
        "a\\\\b",
        ".",
        "..",
        "CON",
        "nul.jpg",
        "com1",
        "LPT9",
        "a\u{0}b",
    ] {
        let text = format!("id,prompt\n\"{id}\",A red sofa\n");
        let (report, rows) = read("a.csv", text.as_bytes());
        assert_eq!(report.error_count, 1, "{id:?} must be refused");
        assert!(rows.is_empty());
    }
    assert!(
        darkroom_jobs::valid_id("console-1"),
        "only the device names themselves are refused"
    );
}

#[test]
fn a_prompt_with_a_nul_byte_is_refused() {
    let (report, _) = read("a.csv", b"id,prompt\na,A red\x00 sofa\n");
    assert!(report.errors[0].message.contains("U+0000"), "{:?}", report.errors);
}

#[test]
fn a_gigantic_csv_field_stops_reading_without_holding_it() {
    let mut text = String::from("id,prompt\na,A fine prompt\nb,\"");
    text.push_str(&"x".repeat(3 << 20));
    text.push_str("\"\n");
    let (report, rows) = read("a.csv", text.as_bytes());
    assert_eq!(report.error_count, 1);
    assert!(
        report.errors[0].message.contains("larger than"),
        "{}",
        report.errors[0]
    );
    assert_eq!(report.errors[0].line, 3);
    assert_eq!(rows.len(), 1);
}

#[test]
fn deeply_nested_json_is_an_error_not_a_crash() {
    let text = format!(
        "{{\"prompt\": \"A sofa\", \"metadata\": {{\"x\": {}{}}}}}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let (report, _) = read("a.jsonl", text.as_bytes());
    assert_eq!(report.error_count, 1);
}
