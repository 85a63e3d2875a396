//! Unit tests of the report model's helpers and the HTML escaping.

use super::*;

#[test]
fn percentiles_are_nearest_rank() {
    let v: Vec<i64> = (1..=100).collect();
    assert_eq!(percentile(&v, 50), 50);
    assert_eq!(percentile(&v, 95), 95);
    assert_eq!(percentile(&[7], 95), 7);
    assert_eq!(percentile(&[], 50), 0);
}

#[test]
fn downsampling_keeps_the_total() {
    let series: Vec<(i64, i64)> = (0..1000).map(|i| (i, i * 3)).collect();
    let kept = downsample(series);
    assert!(kept.len() <= MAX_POINTS + 1);
    assert_eq!(kept.last(), Some(&(999, 2997)));
}

#[test]
fn groups_come_from_metadata_else_the_row() {
    assert_eq!(group_of(r#"{"group":"sofas"}"#, "r1"), "sofas");
    assert_eq!(group_of(r#"{"group":" "}"#, "r1"), "r1");
    assert_eq!(group_of("{}", "r1"), "r1");
}

#[test]
fn html_text_is_escaped() {
    assert_eq!(
        escape("<a href=\"x\">&'"),
        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
    );
}
