//! The job report: spend by model and pass, estimate against actual, counts, attempts, latency
//! percentiles, spend over time, and the contact sheet of previews beside their finals. One
//! [`Report`] value renders as text for a terminal, as stable JSON for scripts, and as one
//! self-contained HTML file (thumbnails embedded) that works offline from `file://`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use darkroom_jobs::{Money, Pass};
use darkroom_ledger::{Counts, Ledger, ModelSpend, TaskState, TileRecord};
use serde::Serialize;

use crate::thumbs::{thumb_path, thumbnail};
use crate::EngineError;

/// Tiles embedded in the HTML contact sheet at most; the rest are counted, not shown.
pub const MAX_EMBEDDED_TILES: usize = 2_000;
/// Points of the spend-over-time series at most.
const MAX_POINTS: usize = 240;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Bumped when a field changes meaning; fields are only ever added.
    pub version: u32,
    pub job: String,
    pub generated_at: String,
    pub spent_micros: i64,
    pub passes: Vec<PassReport>,
    pub spend_by_model: Vec<ModelSpend>,
    /// `(unix ms, cumulative net spend in micro-dollars)`, at most 240 points.
    pub spend_over_time: Vec<(i64, i64)>,
    /// Previews and their finals, by group (the `group` metadata, else the row).
    pub groups: Vec<Group>,
    /// The latest account audits of the job (newest first, at most 10): generations the upstream
    /// committed that the ledger did not know, adopted or charged as extras.
    pub audits: Vec<darkroom_ledger::AuditRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PassReport {
    pub pass: String,
    pub budget_micros: i64,
    pub spent_micros: i64,
    /// What the pass's tasks cost if each is made once (the estimate).
    pub estimate_micros: i64,
    pub counts: Counts,
    /// Attempts beyond the first, over every task.
    pub retries: u64,
    pub latency: Vec<Latency>,
    /// What the account was observed to charge per image, per run and model (newest run first),
    /// beside the table's price. A higher one was counted (reservations and charges re-priced);
    /// a lower one only noted. Empty when the provider exposes no balance.
    pub prices: Vec<darkroom_ledger::PriceObservation>,
    /// The part of `spent_micros` no reservation covered (charges corrected up to an observed
    /// price, late commits found by an audit).
    pub unplanned_micros: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub model: String,
    pub images: usize,
    pub p50_ms: i64,
    pub p95_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub name: String,
    pub tiles: Vec<Pair>,
}

/// A preview and the final made from it (either may be missing).
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    pub id: String,
    pub prompt: String,
    pub preview: Option<Tile>,
    #[serde(rename = "final")]
    pub final_: Option<Tile>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tile {
    pub task: i64,
    pub state: String,
    pub cached: bool,
    pub model: String,
    pub cost_micros: i64,
    pub reason: Option<String>,
    pub path: Option<String>,
    /// For a promoted final: how its preview was used.
    pub reference: Option<String>,
    /// For a promoted final: made from the prompt alone, its preview's URL having expired.
    #[serde(skip)]
    pub reference_lost: bool,
}

impl Tile {
    fn of(t: &TileRecord) -> Tile {
        Tile {
            task: t.id,
            state: t.state.to_string(),
            cached: t.cached != 0,
            model: t.model.clone(),
            cost_micros: t.cost_micros,
            reason: t.reason.clone(),
            path: t.output_path.clone(),
            reference: t.reference_note.clone(),
            reference_lost: t.reference_lost,
        }
    }
}

/// The group a task is shown in: its `group` metadata, else its row.
pub fn group_of(metadata_json: &str, row_id: &str) -> String {
    serde_json::from_str::<BTreeMap<String, String>>(metadata_json)
        .ok()
        .and_then(|m| m.get("group").cloned())
        .filter(|g| !g.trim().is_empty())
        .unwrap_or_else(|| row_id.to_string())
}

/// Builds the report of a job from the ledger.
pub async fn build(ledger: &Ledger, job_id: i64, job: &str) -> Result<Report, EngineError> {
    let previews = ledger.tiles(job_id, Pass::Preview).await?;
    let finals = ledger.tiles(job_id, Pass::Final).await?;
    let mut passes = Vec::new();
    for (pass, tiles) in [(Pass::Preview, &previews), (Pass::Final, &finals)] {
        let Some(record) = ledger.pass(job_id, pass).await? else {
            continue;
        };
        passes.push(PassReport {
            pass: pass.as_str().to_string(),
            budget_micros: record.budget_micros,
            spent_micros: record.spent_micros,
            estimate_micros: ledger.planned_cost(job_id, pass).await?.micros(),
            counts: ledger.counts(job_id, pass).await?,
            retries: tiles
                .iter()
                .map(|t| u64::try_from(t.attempts - 1).unwrap_or(0))
                .sum(),
            latency: latencies(tiles),
            prices: ledger.observations(job_id, pass).await?,
            unplanned_micros: record.unplanned_micros,
        });
    }
    let mut running = 0i64;
    let series: Vec<(i64, i64)> = ledger
        .spend_points(job_id)
        .await?
        .into_iter()
        .map(|p| {
            running += p.micros;
            (p.at, running)
        })
        .collect();
    Ok(Report {
        version: 1,
        job: job.to_string(),
        generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        spent_micros: running,
        passes,
        spend_by_model: ledger.spend_by_model(job_id).await?,
        spend_over_time: downsample(series),
        groups: pair_up(&previews, &finals),
        audits: ledger.audits(job_id, 10).await?,
    })
}

fn latencies(tiles: &[TileRecord]) -> Vec<Latency> {
    let mut by_model: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for t in tiles
        .iter()
        .filter(|t| t.state == TaskState::Done && t.cached == 0)
    {
        if let Some(ms) = t.latency_ms {
            by_model.entry(t.model.as_str()).or_default().push(ms);
        }
    }
    by_model
        .into_iter()
        .map(|(model, mut values)| {
            values.sort_unstable();
            Latency {
                model: model.to_string(),
                images: values.len(),
                p50_ms: percentile(&values, 50),
                p95_ms: percentile(&values, 95),
            }
        })
        .collect()
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: usize) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// Keeps at most [`MAX_POINTS`] points, always the last (the total).
fn downsample(series: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    if series.len() <= MAX_POINTS {
        return series;
    }
    let step = series.len().div_ceil(MAX_POINTS);
    let last = series[series.len() - 1];
    let mut kept: Vec<(i64, i64)> = series.into_iter().step_by(step).collect();
    if kept.last() != Some(&last) {
        kept.push(last);
    }
    kept
}

fn pair_up(previews: &[TileRecord], finals: &[TileRecord]) -> Vec<Group> {
    let mut final_of_preview: HashMap<i64, &TileRecord> = HashMap::new();
    let mut final_by_key: HashMap<&str, &TileRecord> = HashMap::new();
    for f in finals {
        match f.preview_task_id {
            Some(preview) => final_of_preview.insert(preview, f),
            None => final_by_key.insert(f.task_key.as_str(), f),
        };
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut push = |name: String, pair: Pair| {
        let at = *index.entry(name.clone()).or_insert_with(|| {
            groups.push(Group {
                name,
                tiles: Vec::new(),
            });
            groups.len() - 1
        });
        groups[at].tiles.push(pair);
    };
    for p in previews {
        let final_ = final_of_preview
            .remove(&p.id)
            .or_else(|| final_by_key.remove(p.task_key.as_str()));
        push(
            group_of(&p.metadata_json, &p.row_id),
            Pair {
                id: p.task_key.clone(),
                prompt: p.prompt.clone(),
                preview: Some(Tile::of(p)),
                final_: final_.map(Tile::of),
            },
        );
    }
    // Finals made directly (`run --pass final`), or whose preview is gone from the sheet.
    let mut leftovers: Vec<&TileRecord> = final_by_key
        .into_values()
        .chain(final_of_preview.into_values())
        .collect();
    leftovers.sort_by_key(|f| f.id);
    for f in leftovers {
        push(
            group_of(&f.metadata_json, &f.row_id),
            Pair {
                id: f.task_key.clone(),
                prompt: f.prompt.clone(),
                preview: None,
                final_: Some(Tile::of(f)),
            },
        );
    }
    groups
}

impl Report {
    /// The report for a terminal: short lines, no wider than 80 columns.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let usd = |m: i64| Money::from_micros(m).to_string();
        let _ = writeln!(out, "{}: spent {} in all", self.job, usd(self.spent_micros));
        for p in &self.passes {
            let c = &p.counts;
            let _ = writeln!(
                out,
                "\n{} pass: spent {} of {} budget; estimate {}",
                p.pass,
                usd(p.spent_micros),
                usd(p.budget_micros),
                usd(p.estimate_micros)
            );
            let _ = writeln!(
                out,
                "  {} tasks: {} done ({} cached), {} failed, {} blocked, {} skipped, {} left",
                c.total,
                c.done,
                c.cached,
                c.failed,
                c.blocked,
                c.skipped,
                c.pending + c.in_flight
            );
            let _ = writeln!(out, "  {} attempts, {} retries", c.attempts, p.retries);
            for o in &p.prices {
                let verdict = match o.observed_micros.cmp(&o.table_micros) {
                    std::cmp::Ordering::Greater => "higher: counted at the observed price",
                    std::cmp::Ordering::Less => "lower: the table's price was kept",
                    std::cmp::Ordering::Equal => "as the table says",
                };
                let _ = writeln!(
                    out,
                    "  {}: table {}, observed {} over {} images ({verdict})",
                    o.model,
                    usd(o.table_micros),
                    usd(o.observed_micros),
                    o.images
                );
            }
            for l in &p.latency {
                let _ = writeln!(
                    out,
                    "  {}: {} images, latency p50 {:.1} s, p95 {:.1} s",
                    l.model,
                    l.images,
                    l.p50_ms as f64 / 1000.0,
                    l.p95_ms as f64 / 1000.0
                );
            }
        }
        let found: Vec<_> = self
            .audits
            .iter()
            .filter(|a| a.recorded_anything() || a.foreign_count > 0)
            .collect();
        if !found.is_empty() {
            let _ = writeln!(out, "\naccount audits that found something:");
            for a in found {
                let _ = writeln!(
                    out,
                    "  {} {}: {} adopted, {} extra charges ({}), {} not this job's",
                    a.pass,
                    chrono::DateTime::from_timestamp_millis(a.at)
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                        .unwrap_or_default(),
                    a.adopted,
                    a.extra,
                    usd(a.extra_micros),
                    a.foreign_count
                );
            }
        }
        if !self.spend_by_model.is_empty() {
            let _ = writeln!(out, "\nspend by model:");
            for s in &self.spend_by_model {
                let _ = writeln!(
                    out,
                    "  {:<8} {:<15} {:>5} charged  {:>10} net",
                    s.pass,
                    s.model,
                    s.charges,
                    usd(s.charged_micros - s.refunded_micros)
                );
            }
        }
        let unreferenced: Vec<&str> = self
            .groups
            .iter()
            .flat_map(|g| &g.tiles)
            .filter(|t| t.final_.as_ref().is_some_and(|f| f.reference_lost))
            .map(|t| t.id.as_str())
            .collect();
        if !unreferenced.is_empty() {
            let _ = writeln!(
                out,
                "\n{} final(s) made from the prompt alone (the preview's URL had expired): {}",
                unreferenced.len(),
                unreferenced.join(", ")
            );
        }
        out
    }

    /// The report as one self-contained HTML file. Thumbnails are read (and cached) from the
    /// images under `job_dir` and embedded, up to [`MAX_EMBEDDED_TILES`]. Blocking.
    pub fn to_html(&self, job_dir: &Path) -> String {
        let mut html = String::with_capacity(64 * 1024);
        let usd = |m: i64| Money::from_micros(m).to_string();
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
            for o in p.prices.iter().filter(|o| o.observed_micros != o.table_micros) {
                let _ = write!(
                    html,
                    "<p class=\"meta\">{} pass, {}: the account charged {} an image, the table says {} ({})</p>",
                    escape(&p.pass),
                    escape(&o.model),
                    usd(o.observed_micros),
                    usd(o.table_micros),
                    if o.observed_micros > o.table_micros {
                        "counted at the observed price"
                    } else {
                        "the table's price was kept"
                    }
                );
            }
        }
        html.push_str("<h2>Spend by model</h2><table class=\"models\"><tr><th>pass</th><th>model</th><th>charged</th><th>refunded</th><th>net</th><th>p50</th><th>p95</th></tr>");
        for s in &self.spend_by_model {
            let latency = self
                .passes
                .iter()
                .filter(|p| p.pass == s.pass)
                .flat_map(|p| &p.latency)
                .find(|l| l.model == s.model);
            let (p50, p95) = latency.map_or((String::from("&ndash;"), String::from("&ndash;")), |l| {
                (
                    format!("{:.1} s", l.p50_ms as f64 / 1000.0),
                    format!("{:.1} s", l.p95_ms as f64 / 1000.0),
                )
            });
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{p50}</td><td>{p95}</td></tr>",
                escape(&s.pass),
                escape(&s.model),
                usd(s.charged_micros),
                s.charges,
                usd(s.refunded_micros),
                usd(s.charged_micros - s.refunded_micros)
            );
        }
        html.push_str("</table><h2>Spend over time</h2>");
        html.push_str(&self.chart_svg());
        html.push_str(
            "<h2>Contact sheet</h2><p class=\"meta\">each preview beside the final made from it</p>",
        );
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
        html.push_str("</body></html>\n");
        html
    }

    /// The thumbnails of the embedded tiles, made on every core at once (each is a full decode of
    /// an image the first time; later reports read them from the cache).
    fn thumbnails(&self, job_dir: &Path) -> HashMap<(&'static str, &str), Option<Vec<u8>>> {
        let wanted: Vec<(&'static str, &str, &str)> = self
            .groups
            .iter()
            .flat_map(|g| &g.tiles)
            .take(MAX_EMBEDDED_TILES)
            .flat_map(|pair| {
                [("preview", &pair.preview), ("final", &pair.final_)]
                    .into_iter()
                    .filter_map(move |(label, tile)| {
                        let tile = tile.as_ref().filter(|t| t.state == "done")?;
                        Some((label, pair.id.as_str(), tile.path.as_deref()?))
                    })
            })
            .collect();
        let workers = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let chunk = wanted.len().div_ceil(workers).max(1);
        std::thread::scope(|scope| {
            let handles: Vec<_> = wanted
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|&(label, key, path)| {
                                let made = thumbnail(Path::new(path), &thumb_path(job_dir, label, key)).ok();
                                ((label, key), made)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    }

    fn chart_svg(&self) -> String {
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
    let note = if tile.reference_lost {
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

/// Escapes text for HTML content and attribute values.
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

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#222}\
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}\
th{background:#f4f4f4}.meta{color:#666}.chart .axis{stroke:#999}.chart .spend{fill:none;stroke:#c33;stroke-width:2}\
.chart text{font-size:12px;fill:#555}.sheet{display:flex;flex-wrap:wrap;gap:.75rem}\
.pair{margin:0;border:1px solid #ddd;padding:.4rem;border-radius:4px}.pair figcaption{font-weight:600}\
.imgs{display:flex;gap:.4rem}.tile{display:flex;flex-direction:column;font-size:12px;color:#555}\
.tile img{max-width:200px;max-height:200px}.empty{width:160px;height:100px;display:flex;align-items:center;\
justify-content:center;text-align:center;background:#f6f6f6;color:#a33}";

#[cfg(test)]
mod tests {
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
}
