//! The report's chart: cumulative spend over time as an inline SVG polyline, scaled to the
//! largest total, labelled with that total and the time spanned.

use std::fmt::Write as _;

use darkroom_jobs::Money;

use super::JobReport;

impl JobReport {
    /// The spend-over-time chart as an `<svg>` element (720 × 220), or a note when nothing is spent.
    pub(super) fn chart_svg(&self) -> String {
        let (w, h, pad) = (720.0_f64, 220.0_f64, 40.0_f64);
        let points = &self.spend_over_time;
        let mut svg = format!(
            "<svg class=\"chart\" role=\"img\" aria-label=\"cumulative spend over time\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\">"
        );
        let (Some(first), Some(last)) = (points.first(), points.last()) else {
            svg.push_str("<text x=\"40\" y=\"110\">nothing spent yet</text></svg>");
            return svg;
        };
        let top = points.iter().map(|p| p.1).max().unwrap_or(1).max(1);
        let max = top as f64;
        let span = (last.0 - first.0).max(1) as f64;
        let x = |t: i64| pad + (t - first.0) as f64 / span * (w - 2.0 * pad);
        let y = |m: i64| h - pad - (m as f64 / max) * (h - 2.0 * pad);
        let path: Vec<String> = points
            .iter()
            .map(|&(t, m)| format!("{:.1},{:.1}", x(t), y(m)))
            .collect();
        let _ = write!(
            svg,
            "<line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" class=\"axis\"/>\
             <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{b}\" class=\"axis\"/>\
             <polyline class=\"spend\" points=\"{}\"/>\
             <text x=\"{pad}\" y=\"{top}\">{}</text>\
             <text x=\"{r}\" y=\"{foot}\" text-anchor=\"end\">{}</text></svg>",
            path.join(" "),
            Money::from_micros(top),
            elapsed(span / 1000.0),
            b = h - pad,
            r = w - pad,
            top = pad - 8.0,
            foot = h - pad + 18.0,
        );
        svg
    }
}

/// A span of seconds as a chart label: `42 s`, `17 min`, `3.5 h`.
fn elapsed(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else if seconds < 7_200.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3_600.0)
    }
}
