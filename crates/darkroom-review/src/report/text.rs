//! The report as text for a terminal: short lines, no wider than 80 columns.

use std::fmt::Write as _;

use darkroom_jobs::Money;

use super::{JobReport, PassReport};

fn usd(micros: i64) -> String {
    Money::from_micros(micros).to_string()
}

impl JobReport {
    /// The report for a terminal: short lines, no wider than 80 columns.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}: spent {} in all", self.job, usd(self.spent_micros));
        for p in &self.passes {
            pass_text(&mut out, p);
        }
        self.audits_text(&mut out);
        self.spend_text(&mut out);
        self.unreferenced_text(&mut out);
        super::needs_work::text(&mut out, &self.trouble);
        out
    }

    fn audits_text(&self, out: &mut String) {
        let found: Vec<_> = self
            .audits
            .iter()
            .filter(|a| a.recorded_anything() || a.foreign_count > 0)
            .collect();
        if found.is_empty() {
            return;
        }
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

    fn spend_text(&self, out: &mut String) {
        if self.spend_by_model.is_empty() {
            return;
        }
        let _ = writeln!(out, "\nspend by provider and model:");
        for s in &self.spend_by_model {
            let _ = writeln!(
                out,
                "  {:<8} {:<10} {:<15} {:>5} charged  {:>10} net",
                s.pass,
                s.provider,
                s.model,
                s.charges,
                usd(s.charged_micros - s.refunded_micros)
            );
        }
    }

    /// Finals made from the prompt alone because their preview's URL had expired.
    fn unreferenced_text(&self, out: &mut String) {
        let unreferenced: Vec<&str> = self
            .groups
            .iter()
            .flat_map(|g| &g.tiles)
            .filter(|t| t.final_.as_ref().is_some_and(super::Tile::made_without_reference))
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
    }
}

/// One pass's lines: spend against budget and estimate, counts, prices and latencies.
fn pass_text(out: &mut String, p: &PassReport) {
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
    if let Some(line) = super::needs_work::qc_line(&p.qc) {
        let _ = writeln!(out, "  {line}");
    }
    for o in &p.prices {
        let verdict = match o.observed_micros.cmp(&o.table_micros) {
            std::cmp::Ordering::Greater => "higher: counted at the observed price",
            std::cmp::Ordering::Less => "lower: the table's price was kept",
            std::cmp::Ordering::Equal => "as the table says",
        };
        // Per image says nothing more; fal's prices are per megapixel and say so.
        let per = if o.per == "megapixel" {
            " per megapixel"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {}: table {}{per}, observed {}{per} over {} images ({verdict})",
            o.model,
            usd(o.table_micros),
            usd(o.observed_micros),
            o.images
        );
    }
    for l in &p.latency {
        let _ = writeln!(
            out,
            "  {} on {}: {} images, latency p50 {:.1} s, p95 {:.1} s",
            l.model,
            l.provider,
            l.images,
            l.p50_ms as f64 / 1000.0,
            l.p95_ms as f64 / 1000.0
        );
    }
}
