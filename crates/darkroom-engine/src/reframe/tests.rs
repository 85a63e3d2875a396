//! Unit tests of `--to` parsing.

use super::*;

#[test]
fn targets_are_read_in_order_once_each_with_spaces_allowed() {
    assert_eq!(
        parse_targets("1:1, 9:16,16:9,1:1").unwrap(),
        vec![
            AspectRatio::parse("1:1").unwrap(),
            AspectRatio::parse("9:16").unwrap(),
            AspectRatio::parse("16:9").unwrap()
        ]
    );
}

#[test]
fn a_bad_target_is_named_with_what_was_expected() {
    let error = parse_targets("1:1,9x16,2:1").unwrap_err();
    assert!(
        error.contains("\"9x16\", \"2:1\" is not an aspect ratio"),
        "{error}"
    );
    assert!(error.contains("1:1") && error.contains("9:21"), "{error}");
    assert!(parse_targets("").unwrap_err().contains("\"\""));
    assert!(parse_targets(" , ").is_err());
}
