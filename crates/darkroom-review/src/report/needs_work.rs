//! The report's quality-check counts and its "prompts that need work" section, as text for a
//! terminal and as HTML (the model is `trouble`'s and `PassReport::qc`).

use std::fmt::Write as _;

use darkroom_jobs::Money;
use darkroom_ledger::QcCounts;

use super::html::escape;
use super::trouble::{Slice, Trouble, TroubleRow};

/// The lists in the order they are shown, with their headings.
fn lists(t: &Trouble) -> [(&'static str, &Vec<TroubleRow>, usize); 4] {
    [
        ("most attempts", &t.most_attempts, t.totals.most_attempts),
        ("blocked by moderation", &t.blocked, t.totals.blocked),
        ("flagged by quality checks", &t.flagged, t.totals.flagged),
        ("never kept in review", &t.never_kept, t.totals.never_kept),
    ]
}

/// `3 of 40 images flagged: 1 blank, 2 duplicate`, or `None` when nothing was checked.
pub(super) fn qc_line(qc: &QcCounts) -> Option<String> {
    if qc.checked == 0 {
        return None;
    }
    let kinds: Vec<String> = [
        ("blank", qc.blank),
        ("dimensions", qc.dimensions),
        ("duplicate", qc.duplicate),
        ("small_file", qc.small_file),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(kind, n)| format!("{n} {kind}"))
    .collect();
    let mut line = format!(
        "{} of {} images flagged by quality checks",
        qc.flagged, qc.checked
    );
    if !kinds.is_empty() {
        let _ = write!(line, ": {}", kinds.join(", "));
    }
    Some(line)
}

/// The section as text: each list that has rows, then the arm and group tables.
pub(super) fn text(out: &mut String, t: &Trouble) {
    for (heading, rows, total) in lists(t) {
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\nprompts that need work, {heading} ({total} rows):");
        for r in rows {
            let _ = writeln!(out, "  {:<20} {}: {}", r.row_id, r.detail, shorten(&r.prompt, 40));
        }
        if total > rows.len() {
            let _ = writeln!(
                out,
                "  ... and {} more (darkroom report --json lists the first {})",
                total - rows.len(),
                rows.len()
            );
        }
    }
    for (heading, slices) in [("arm", &t.by_arm), ("group", &t.by_group)] {
        if slices.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\nby {heading}:");
        let _ = writeln!(
            out,
            "  {:<16} {:>5} {:>7} {:>11} {:>5} {:>8}",
            heading, "rows", "images", "spent", "kept", "flagged"
        );
        for s in slices {
            let _ = writeln!(
                out,
                "  {:<16} {:>5} {:>7} {:>11} {:>5} {:>8}",
                shorten(&s.name, 16),
                s.rows,
                s.images,
                Money::from_micros(s.spent_micros).to_string(),
                s.kept,
                s.flagged
            );
        }
    }
}

/// The section as HTML: one table per list that has rows, then the arm and group tables.
pub(super) fn html(out: &mut String, t: &Trouble) {
    let any = lists(t).iter().any(|(_, rows, _)| !rows.is_empty())
        || !t.by_arm.is_empty()
        || !t.by_group.is_empty();
    if !any {
        return;
    }
    out.push_str("<h2>Prompts that need work</h2>");
    for (heading, rows, total) in lists(t) {
        if rows.is_empty() {
            continue;
        }
        let _ = write!(
            out,
            "<h3>{heading} ({total})</h3><table class=\"trouble\"><tr><th>row</th><th>attempts</th><th>why</th><th>prompt</th></tr>"
        );
        for r in rows {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&r.row_id),
                r.attempts,
                escape(&r.detail),
                escape(&r.prompt)
            );
        }
        out.push_str("</table>");
    }
    for (heading, slices) in [("arm", &t.by_arm), ("group", &t.by_group)] {
        if !slices.is_empty() {
            slice_table(out, heading, slices);
        }
    }
}

fn slice_table(out: &mut String, heading: &str, slices: &[Slice]) {
    let _ = write!(
        out,
        "<h3>by {heading}</h3><table class=\"slices\"><tr><th>{heading}</th><th>rows</th><th>images</th><th>spent</th><th>kept</th><th>flagged</th></tr>"
    );
    for s in slices {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.name),
            s.rows,
            s.images,
            Money::from_micros(s.spent_micros),
            s.kept,
            s.flagged
        );
    }
    out.push_str("</table>");
}

/// At most `max` characters, with `…` when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}
