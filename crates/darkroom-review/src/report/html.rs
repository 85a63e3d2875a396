//! The report as one self-contained HTML file: the tables, the chart (`chart`), the style sheet
//! (`report.css`, inlined) and the contact sheet with thumbnails embedded as data URIs, so the
//! file works offline from `file://`.

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use darkroom_jobs::Money;

use super::{Group, JobReport, Tile, MAX_EMBEDDED_TILES};
use crate::thumbs::{self, Thumbnails};

/// The report's style sheet, inlined into its `<style>` element.
const STYLE: &str = include_str!("report.css");

fn usd(micros: i64) -> String {
    Money::from_micros(micros).to_string()
}

impl JobReport {
    /// The report as one self-contained HTML file. Thumbnails are read (and cached) from the
    /// images under `job_dir` and embedded, up to [`MAX_EMBEDDED_TILES`]. Blocking.
    pub fn to_html(&self, job_dir: &Path) -> String {
        let mut html = String::with_capacity(64 * 1024);
        let _ = write!(
            html,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width\">\
             <title>darkroom report: {job}</title><style>{STYLE}</style></head><body>\
             <h1>{job}</h1><p class=\"meta\">spent <b>{spent}</b> &middot; generated {at}</p>",
            job = escape(&self.job),
            spent = usd(self.spent_micros),
            at = escape(&self.generated_at),
        );
        self.passes_html(&mut html);
        self.prices_html(&mut html);
        self.models_html(&mut html);
        self.trial_html(&mut html);
        super::needs_work::html(&mut html, &self.trouble);
        html.push_str("<h2>Spend over time</h2>");
        html.push_str(&self.chart_svg());
        html.push_str(
            "<h2>Contact sheet</h2><p class=\"meta\">each preview beside the final made from it</p>",
        );
        self.sheet_html(&mut html, job_dir);
        self.reframes_html(&mut html, job_dir);
        html.push_str("</body></html>\n");
        html
    }

    fn passes_html(&self, html: &mut String) {
        html.push_str("<table class=\"passes\"><tr><th>pass</th><th>budget</th><th>estimate</th><th>spent</th><th>done</th><th>cached</th><th>failed</th><th>blocked</th><th>skipped</th><th>left</th><th>attempts</th><th>retries</th></tr>");
        for p in &self.passes {
            let c = &p.counts;
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                p.pass,
                usd(p.budget_micros),
                usd(p.estimate_micros),
                usd(p.spent_micros),
                c.done,
                c.cached,
                c.failed,
                c.blocked,
                c.skipped,
                c.pending + c.in_flight,
                c.attempts,
                p.retries
            );
        }
        html.push_str("</table>");
        for p in &self.passes {
            if let Some(line) = super::needs_work::qc_line(&p.qc) {
                let _ = write!(
                    html,
                    "<p class=\"meta qc\">{} pass: {}</p>",
                    escape(&p.pass),
                    escape(&line)
                );
            }
        }
    }

    /// A note for each model whose observed price differs from the table's.
    fn prices_html(&self, html: &mut String) {
        for p in &self.passes {
            for o in p.prices.iter().filter(|o| o.observed_micros != o.table_micros) {
                let _ =
                    write!(
                    html,
                    "<p class=\"meta\">{} pass, {}: the account charged {} {}, the table says {} ({})</p>",
                    escape(&p.pass),
                    escape(&o.model),
                    usd(o.observed_micros),
                    if o.per == "megapixel" { "per megapixel" } else { "an image" },
                    usd(o.table_micros),
                    if o.observed_micros > o.table_micros {
                        "counted at the observed price"
                    } else {
                        "the table's price was kept"
                    }
                );
            }
        }
    }

    fn models_html(&self, html: &mut String) {
        html.push_str("<h2>Spend by provider and model</h2><table class=\"models\"><tr><th>pass</th><th>provider</th><th>model</th><th>charged</th><th>refunded</th><th>net</th><th>p50</th><th>p95</th></tr>");
        for s in &self.spend_by_model {
            let latency = self
                .passes
                .iter()
                .filter(|p| p.pass == s.pass)
                .flat_map(|p| &p.latency)
                .find(|l| l.provider == s.provider && l.model == s.model);
            let (p50, p95) = latency.map_or((String::from("&ndash;"), String::from("&ndash;")), |l| {
                (
                    format!("{:.1} s", l.p50_ms as f64 / 1000.0),
                    format!("{:.1} s", l.p95_ms as f64 / 1000.0),
                )
            });
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{p50}</td><td>{p95}</td></tr>",
                escape(&s.pass),
                escape(&s.provider),
                escape(&s.model),
                usd(s.charged_micros),
                s.charges,
                usd(s.refunded_micros),
                usd(s.charged_micros - s.refunded_micros)
            );
        }
        html.push_str("</table>");
    }

    /// The contact sheet: each group's previews beside their finals, up to
    /// [`MAX_EMBEDDED_TILES`] pairs; the rest are counted.
    fn sheet_html(&self, html: &mut String, job_dir: &Path) {
        let thumbs = self.thumbnails(job_dir);
        let mut embedded = 0usize;
        let mut hidden = 0usize;
        for group in &self.groups {
            let _ = write!(
                html,
                "<section class=\"group\"><h3>{}</h3><div class=\"sheet\">",
                escape(&group.name)
            );
            for pair in &group.tiles {
                if embedded >= MAX_EMBEDDED_TILES {
                    hidden += 1;
                    continue;
                }
                embedded += 1;
                let _ = write!(
                    html,
                    "<figure class=\"pair\" title=\"{}\"><figcaption>{}</figcaption><div class=\"imgs\">",
                    escape(&pair.prompt),
                    escape(&pair.id)
                );
                for (label, tile) in [("preview", &pair.preview), ("final", &pair.final_)] {
                    if let Some(tile) = tile {
                        let thumb = thumbs.get(&(label, pair.id.as_str())).and_then(Option::as_deref);
                        html.push_str(&tile_html(label, &pair.id, tile, thumb));
                    }
                }
                html.push_str("</div></figure>");
            }
            html.push_str("</div></section>");
        }
        if hidden > 0 {
            let _ = write!(
                html,
                "<p class=\"meta\">{hidden} more tiles are not shown here; see manifest.csv.</p>"
            );
        }
    }

    /// The thumbnails of the embedded tiles that have an image, keyed by (pass, task key).
    fn thumbnails(&self, job_dir: &Path) -> Thumbnails<'_> {
        let wanted: Vec<(&'static str, &str, &str)> = embedded_pairs(&self.groups)
            .flat_map(|pair| {
                [("preview", &pair.preview), ("final", &pair.final_)]
                    .into_iter()
                    .filter_map(move |(label, tile)| {
                        let tile = tile.as_ref().filter(|t| t.state == "done")?;
                        Some((label, pair.id.as_str(), tile.path.as_deref()?))
                    })
            })
            .collect();
        thumbs::make_many(job_dir, &wanted)
    }
}

fn embedded_pairs(groups: &[Group]) -> impl Iterator<Item = &super::Pair> {
    groups.iter().flat_map(|g| &g.tiles).take(MAX_EMBEDDED_TILES)
}

fn tile_html(label: &str, key: &str, tile: &Tile, thumb: Option<&[u8]>) -> String {
    let image = thumb.map(|bytes| {
        format!(
            "<img alt=\"{label} {}\" src=\"data:image/jpeg;base64,{}\">",
            escape(key),
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    });
    let body = image.unwrap_or_else(|| {
        format!(
            "<div class=\"empty\">{}{}</div>",
            escape(&tile.state),
            tile.reason
                .as_deref()
                .map(|r| format!("<br><small>{}</small>", escape(r)))
                .unwrap_or_default()
        )
    });
    let note = if tile.made_without_reference() {
        " <em>(from the prompt alone)</em>"
    } else {
        ""
    };
    format!(
        "<div class=\"tile {label} {state}\">{body}<span>{label} &middot; {model} &middot; {cost}{note}</span></div>",
        state = escape(&tile.state),
        model = escape(&tile.model),
        cost = Money::from_micros(tile.cost_micros),
    )
}

/// Escapes text for HTML content and attribute values (`&`, `<`, `>`, `"` and `'`).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
