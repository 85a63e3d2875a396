//! Rows are never lost or merged without a diagnostic, and two tasks never share an output file:
//! quoting faults in CSV, cut or doubled JSONL lines, every kind of line ending, and the names
//! darkroom derives (`row-LINE`, template slugs, variants) against each other and the file's ids.

#![allow(clippy::unwrap_used)] // In tests a panic is a failure with a backtrace.

use std::collections::HashSet;

use darkroom_jobs::{expand, read_job, Pass, ReadOptions, Report, Routing, Row};
use proptest::prelude::*;

fn read(name: &str, bytes: &[u8]) -> (Report, Vec<Row>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let mut rows = Vec::new();
    let report = read_job(&path, &ReadOptions::default(), |row| rows.push(row)).unwrap();
    (report, rows)
}

fn ids(rows: &[Row]) -> Vec<&str> {
    rows.iter().map(|r| r.id.as_str()).collect()
}

/// Every task's file stem, in lower case (one file on macOS and Windows when equal).
fn stems(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .flat_map(|row| expand(row, Pass::Preview, &Routing::default()).collect::<Vec<_>>())
        .map(|task| task.file_stem().to_ascii_lowercase())
        .collect()
}

fn assert_one_error(report: &Report, line: u64, fragments: &[&str]) {
    assert_eq!(report.error_count, 1, "{:?}", report.errors);
    let error = &report.errors[0];
    assert_eq!(error.line, line, "{error}");
    let text = error.to_string();
    for fragment in fragments {
        assert!(text.contains(fragment), "{text} lacks {fragment:?}");
    }
}

const UNCLOSED: &str = "id,prompt\n\
vinyl,\"A 12 inch vinyl record on a turntable, warm light\n\
trumpet,A jazz trumpet resting on a wooden stool\n\
piano,An upright piano in an empty hall\n";

#[test]
fn a_quote_never_closed_is_an_error_naming_the_line_it_opened_on() {
    let (report, rows) = read("a.csv", UNCLOSED.as_bytes());
    assert_one_error(&report, 2, &["line 2", "never closed", "lines 2 to 4"]);
    assert!(rows.is_empty(), "nothing is handed on from an invalid file");
    assert_eq!(report.rows, 0, "no row holding three lines is counted as valid");
}

#[test]
fn a_quote_closed_lines_later_over_rows_is_an_error_naming_the_span() {
    let text = "id,prompt\n\
                vinyl,\"A vinyl record, warm light\n\
                trumpet,A jazz trumpet\n\
                piano,An upright piano\"\n\
                drum,A snare drum on a rug\n";
    let (report, rows) = read("a.csv", text.as_bytes());
    assert_one_error(
        &report,
        2,
        &[
            "lines 2 to 4 are one quoted field",
            "lines 3, 4",
            "\"trumpet,A jazz trumpet\"",
        ],
    );
    assert!(rows.is_empty());
    assert_eq!(
        report.rows, 1,
        "the row after the span is still read and validated"
    );
}

#[test]
fn a_row_shaped_line_is_recognised_by_the_columns_darkroom_checks() {
    // No id column: the aspect ratio and the field count make the line a row.
    let text = "prompt,aspect_ratio\n\"A sofa,16:9\nA lamp,1:1\nA chair\",4:3\n";
    let (report, _) = read("a.csv", text.as_bytes());
    assert_one_error(&report, 2, &["lines 2 to 4", "line 3"]);
    // A header with no checked column: the field count alone.
    let text = "prompt,sku\n\"A sofa,S-1\nA lamp,S-2\nA chair\",S-3\n";
    let (report, _) = read("a.csv", text.as_bytes());
    assert_one_error(&report, 2, &["lines 2 to 4", "line 3"]);
    // Prose that wraps onto a line starting with a space is not a row.
    let (report, _) = read("a.csv", b"id,prompt\nsofa,\"A sofa and\n a,lamp\"\n");
    assert!(report.is_valid(), "{:?}", report.errors);
}

#[test]
fn a_multi_line_prompt_is_one_row_and_validate_counts_its_lines() {
    let text = "id,prompt,aspect_ratio\n\
                sofa,\"A three-seat sofa, linen,\n\
                with cushions, a throw, and a lamp\n\
                in a sunlit loft\",1:1\n\
                lamp,\"A brass lamp\n\
                beside a chair\"\n";
    // The second row has too few fields; the first must read whole.
    let (report, _) = read("a.csv", text.as_bytes());
    assert_one_error(&report, 5, &["has 2 fields; the header has 3"]);

    let text = "id,prompt\n\
                sofa,\"A three-seat sofa, linen,\n\
                with cushions, a throw, and a lamp\"\n\
                lamp,A brass lamp\n";
    let (report, rows) = read("a.csv", text.as_bytes());
    assert!(report.is_valid(), "{:?}", report.errors);
    assert_eq!(ids(&rows), ["sofa", "lamp"]);
    assert_eq!(
        rows[0].prompt,
        "A three-seat sofa, linen,\nwith cushions, a throw, and a lamp"
    );
    assert_eq!((report.records, report.lines), (2, 3));
}

#[test]
fn a_quote_inside_an_unquoted_field_is_an_ordinary_character() {
    let (report, rows) = read(
        "a.csv",
        b"id,prompt\nvinyl,A 12\" vinyl record on a turntable\ntrumpet,A jazz trumpet\n",
    );
    assert!(report.is_valid(), "{:?}", report.errors);
    assert_eq!(rows[0].prompt, "A 12\" vinyl record on a turntable");
    assert_eq!(ids(&rows), ["vinyl", "trumpet"]);
}

#[test]
fn text_after_a_closing_quote_is_an_error_not_a_mangled_field() {
    let (report, rows) = read(
        "a.csv",
        b"id,prompt\nvinyl,\"A 12\" vinyl record\"\ntrumpet,A jazz trumpet\n",
    );
    assert_one_error(&report, 2, &["text follows the closing quote", "\"\""]);
    assert!(rows.is_empty());
    // Doubled, the quote is a quote.
    let (report, rows) = read("a.csv", b"id,prompt\nvinyl,\"A 12\"\" vinyl record\"\n");
    assert!(report.is_valid(), "{:?}", report.errors);
    assert_eq!(rows[0].prompt, "A 12\" vinyl record");
}

#[test]
fn every_line_ending_numbers_lines_the_same_way() {
    for ending in ["\n", "\r\n", "\r"] {
        let text = [
            "id,prompt",
            "a,A red sofa",
            "",
            "b,ab",
            "c,\"A quoted",
            "prompt\"",
            "d,A last row without an ending",
        ]
        .join(ending);
        let (report, rows) = read("a.csv", text.as_bytes());
        assert_one_error(&report, 4, &["too short"]);
        assert_eq!(report.rows, 3, "{ending:?}");
        assert_eq!((report.records, report.lines), (4, 5), "{ending:?}");
        assert_eq!(rows.len(), 1, "rows after the error are not handed on");
        let (_, rows) = read("a.csv", text.replace("b,ab", "b,A blue sofa").as_bytes());
        assert_eq!(ids(&rows), ["a", "b", "c", "d"], "{ending:?}");
        assert_eq!(
            rows[2].prompt,
            format!("A quoted{ending}prompt"),
            "the field keeps its bytes"
        );
    }
}

#[test]
fn a_line_of_only_separators_is_reported_not_skipped() {
    let (report, _) = read(
        "a.csv",
        b"id,prompt,aspect_ratio\na,A red sofa,1:1\n,,\nb,A blue sofa,1:1\n",
    );
    assert_one_error(&report, 3, &["only empty fields"]);
    let (report, _) = read("a.csv", b"id,prompt\na,A red sofa\n,,,\n");
    assert_one_error(&report, 3, &["has 4 fields; the header has 2"]);
}

#[test]
fn a_row_with_fewer_or_more_fields_names_its_line_and_id() {
    let (report, _) = read(
        "a.csv",
        b"id,prompt,aspect_ratio\na,A red sofa\nb,A blue sofa,1:1,x\n",
    );
    assert_eq!(report.error_count, 2, "{:?}", report.errors);
    assert_eq!(
        report.errors[0].to_string(),
        "line 2 (id \"a\"): has 2 fields; the header has 3 (is a comma or a quote missing?)"
    );
    assert_eq!(report.errors[1].line, 3);
}

#[test]
fn an_unclosed_quote_in_the_header_refuses_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.csv");
    std::fs::write(&path, "id,\"prompt\na,A red sofa\n").unwrap();
    let error = read_job(&path, &ReadOptions::default(), |_| {}).unwrap_err();
    assert!(error.to_string().contains("never closed"), "{error}");
}

#[test]
fn a_jsonl_line_cut_short_or_holding_two_objects_is_an_error_on_its_line() {
    let text = "{\"id\": \"a\", \"prompt\": \"A red so\n\
                {\"id\": \"b\", \"prompt\": \"A blue sofa\"}{\"id\": \"c\", \"prompt\": \"A green sofa\"}\n\
                {\"id\": \"d\", \"prompt\": \"A grey sofa\"}\n";
    let (report, rows) = read("a.jsonl", text.as_bytes());
    assert_eq!(report.error_count, 2, "{:?}", report.errors);
    assert_eq!(report.errors[0].line, 1);
    assert!(
        report.errors[0].message.contains("cut short"),
        "{}",
        report.errors[0]
    );
    assert_eq!(report.errors[1].line, 2);
    assert!(
        report.errors[1].message.contains("more than one value"),
        "{}",
        report.errors[1]
    );
    assert!(rows.is_empty());
    assert_eq!((report.records, report.lines, report.rows), (3, 3, 1));
}

#[test]
fn jsonl_lines_may_end_with_a_lone_carriage_return() {
    let text =
        "{\"prompt\": \"A red sofa\"}\r{\"prompt\": \"A blue sofa\"}\r\n{\"prompt\": \"A green sofa\"}";
    let (report, rows) = read("a.jsonl", text.as_bytes());
    assert!(report.is_valid(), "{:?}", report.errors);
    assert_eq!(ids(&rows), ["row-1", "row-2", "row-3"]);
}

#[test]
fn template_alternatives_cut_to_the_same_slug_get_distinct_stable_names() {
    let text = "id,prompt,aspect_ratio\n\
                scene,\"A living room in {mid-century modern style with walnut furniture|mid-century modern style with teak furniture}\",16:9\n";
    let (report, rows) = read("a.csv", text.as_bytes());
    assert!(report.is_valid(), "{:?}", report.errors);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].id, "scene-mid-century-modern-style");
    let second = &rows[1].id;
    assert!(
        second.starts_with("scene-mid-century-modern-style-") && second.len() == rows[0].id.len() + 9,
        "{second}"
    );
    assert!(darkroom_jobs::valid_id(second));
    assert_eq!(report.renamed_count, 1);
    assert_eq!(report.renamed[0].line, 2);
    assert!(
        report.renamed[0].message.contains(second.as_str()),
        "{}",
        report.renamed[0]
    );
    let (_, again) = read("a.csv", text.as_bytes());
    assert_eq!(again, rows, "the same file always gives the same names");
}

#[test]
fn a_derived_line_id_yields_to_the_files_own_id_before_or_after_it() {
    let (report, rows) = read("a.csv", b"id,prompt\n,A red sofa\nrow-2,A blue sofa\n");
    assert!(report.is_valid(), "{:?}", report.errors);
    assert_eq!(rows[1].id, "row-2", "the id the file gives is kept");
    assert!(rows[0].id.starts_with("row-2-"), "{}", rows[0].id);
    let (report, rows) = read("a.csv", b"id,prompt\nROW-3,A blue sofa\n,A red sofa\n");
    assert!(report.is_valid(), "{:?}", report.errors);
    assert_eq!(rows[0].id, "ROW-3");
    assert!(rows[1].id.starts_with("row-3-"), "{}", rows[1].id);
}

#[test]
fn variant_file_names_yield_to_an_id_the_file_gives() {
    let text = "id,prompt,variants\nsofa,A red sofa,2\nsofa-1,A blue sofa,1\n";
    let (report, rows) = read("a.csv", text.as_bytes());
    assert!(report.is_valid(), "{:?}", report.errors);
    assert_eq!(rows[1].id, "sofa-1");
    assert!(
        rows[0].id.starts_with("sofa-") && rows[0].id != "sofa-1",
        "{}",
        rows[0].id
    );
    assert_eq!(report.renamed[0].line, 2);
    assert!(
        report.renamed[0].message.contains("the row on line 3"),
        "{}",
        report.renamed[0]
    );
    let stems = stems(&rows);
    assert_eq!(
        stems.iter().collect::<HashSet<_>>().len(),
        stems.len(),
        "{stems:?}"
    );
}

#[test]
fn ids_differing_only_in_case_are_an_error_naming_both_lines() {
    let (report, rows) = read(
        "a.csv",
        b"id,prompt\nSofa,A red sofa\nlamp,A lamp\nsofa,A blue sofa\n",
    );
    assert_one_error(&report, 4, &["(id \"sofa\")", "line 2", "letter case"]);
    assert_eq!(
        rows.len(),
        2,
        "rows before the error are handed on; the caller discards them"
    );
}

#[test]
fn a_repeated_id_is_refused_on_every_later_row_naming_the_first_even_when_the_first_is_invalid() {
    // The first "sofa" has a bad aspect ratio; both later ones are duplicates of it, and the
    // derived name of line 4 (`row-4`) yields to line 6's own id.
    let (report, _) = read(
        "a.csv",
        b"id,prompt,aspect_ratio
sofa,A red sofa,5:4
lamp,A lamp,1:1
,A chair,1:1
sofa,A blue sofa,1:1
row-4,A desk,1:1
SOFA,A green sofa,1:1
",
    );
    assert_eq!(report.error_count, 3, "{:?}", report.errors);
    let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [2, 5, 7]);
    assert!(report.errors[1]
        .message
        .contains("duplicate id \"sofa\" (first used on line 2)"));
    assert!(report.errors[2]
        .message
        .contains("line 2 differ only in letter case"));
    assert_eq!(report.renamed_count, 1, "{:?}", report.renamed);
    assert_eq!(report.renamed[0].line, 4);
}

#[test]
fn a_template_name_yields_to_an_id_the_file_gives_in_any_case() {
    let (report, rows) = read("a.csv", b"id,prompt\nx,A {Red|blue} sofa\nX-RED,A red sofa\n");
    assert!(report.is_valid(), "{:?}", report.errors);
    assert_eq!(rows[2].id, "X-RED");
    assert!(rows[0].id.starts_with("x-red-"), "{}", rows[0].id);
    assert_eq!(rows[1].id, "x-blue");
}

/// Writes one CSV field as a careful writer would: quoted, quotes doubled.
fn quoted(field: &str) -> String {
    format!("\"{}\"", field.replace('"', "\"\""))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn well_quoted_fields_read_back_exactly(
        // A line a prompt wraps onto starts with a space, so it never looks like a row.
        prompts in prop::collection::vec("[a-z ,\"]{0,6}(\n [a-z ,\"]{0,6})?[a-z]{3}", 1..6),
        ending in prop::sample::select(vec!["\n", "\r\n", "\r"]),
    ) {
        let mut text = format!("id,prompt{ending}");
        for (i, prompt) in prompts.iter().enumerate() {
            text.push_str(&format!("r{i},{}{ending}", quoted(prompt)));
        }
        let (report, rows) = read("p.csv", text.as_bytes());
        prop_assert!(report.is_valid(), "{:?} in {text:?}", report.errors);
        prop_assert_eq!(rows.len(), prompts.len());
        for (row, prompt) in rows.iter().zip(&prompts) {
            prop_assert_eq!(row.prompt.as_str(), prompt.trim());
        }
    }

    #[test]
    fn dropping_any_one_quote_loses_no_row_silently(
        prompts in prop::collection::vec("[a-z ,\"]{0,12}[a-z]{3}", 2..6),
        which in any::<prop::sample::Index>(),
    ) {
        let mut text = String::from("id,prompt\n");
        for (i, prompt) in prompts.iter().enumerate() {
            text.push_str(&format!("r{i},{}\n", quoted(prompt)));
        }
        let quotes: Vec<usize> = text.match_indices('"').map(|(i, _)| i).collect();
        let mut broken = text.clone();
        broken.remove(quotes[which.index(quotes.len())]);
        let (report, rows) = read("p.csv", broken.as_bytes());
        if report.is_valid() {
            let expected: Vec<String> = (0..prompts.len()).map(|i| format!("r{i}")).collect();
            prop_assert_eq!(ids(&rows), expected, "{:?}", broken);
        }
    }

    #[test]
    fn a_valid_file_never_gives_two_tasks_one_file(
        lines in prop::collection::vec(
            ("(|[aA]|[aA]-[12]|row-[2-5]|[xX]-[aA])", "(|\\{a\\|A\\|a-1\\} )", 1u32..3),
            1..8,
        ),
    ) {
        let mut text = String::from("id,prompt,variants\n");
        for (id, group, variants) in &lines {
            text.push_str(&format!("{id},A {group}sofa,{variants}\n"));
        }
        let (report, rows) = read("p.csv", text.as_bytes());
        if report.is_valid() {
            let stems = stems(&rows);
            let distinct: HashSet<_> = stems.iter().collect();
            prop_assert_eq!(distinct.len(), stems.len(), "{:?} from {:?}", stems, text);
            for row in &rows {
                prop_assert!(darkroom_jobs::valid_id(&row.id), "{}", row.id);
            }
        } else {
            // The only refusal left is two ids the file gives itself.
            for error in &report.errors {
                prop_assert!(
                    error.message.contains("duplicate id") || error.message.contains("letter case"),
                    "{error} in {text:?}"
                );
            }
        }
    }
}
