//! Progress while a run goes: a bar on a terminal (done/total, spend against budget, rate, ETA), one
//! JSON event per line on stdout with `--json`, and plain lines for notable events otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;

use darkroom_engine::Event;
use darkroom_jobs::Money;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug)]
pub struct Progress {
    json: bool,
    bar: Option<ProgressBar>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    spent: Money,
    budget: Money,
    /// Creates are paused after a 429 until this instant (shown as this text).
    paused: Option<(std::time::Instant, String)>,
    /// How long the 429s had lasted when the last line about them was printed.
    last_pause_line_ms: Option<u64>,
}

/// How often, at most, a long run of 429s prints a line (besides its first).
const PAUSE_LINE_EVERY_MS: u64 = 60_000;

/// The bar: done/total, the spend line, the rate of images per second and the time left.
const BAR_TEMPLATE: &str = "{bar:30} {pos}/{len} {msg} [{rate}, eta {eta}]";

/// Images per second as the bar shows it, one decimal: `2.0/s` (`0.0/s` before there is a rate).
fn rate(per_second: f64) -> String {
    let per_second = if per_second.is_finite() && per_second > 0.0 {
        per_second
    } else {
        0.0
    };
    format!("{per_second:.1}/s")
}

/// The line a 429 prints: the first of a run of them, then one a minute at most; records the
/// pause for the bar's message.
fn rate_limit_line(state: &mut State, event: &Event) -> Option<String> {
    let Event::RateLimited {
        retry_after_ms,
        paused_until,
        paused_for_ms,
        answers,
        rate_limited_for_ms,
        give_up_after_ms,
    } = event
    else {
        return None;
    };
    tracing::info!(?event);
    let until = clock_time(paused_until);
    state.paused = Some((
        std::time::Instant::now() + std::time::Duration::from_millis(*paused_for_ms),
        until.clone(),
    ));
    let due = *answers == 1
        || state
            .last_pause_line_ms
            .is_none_or(|last| *rate_limited_for_ms >= last + PAUSE_LINE_EVERY_MS);
    due.then(|| {
        state.last_pause_line_ms = Some(*rate_limited_for_ms);
        let after = retry_after_ms.map_or_else(
            || "without a Retry-After".to_string(),
            |ms| format!("Retry-After {}", seconds(ms)),
        );
        if *answers == 1 {
            format!("rate limited (429, {after}): creates paused until {until}")
        } else {
            format!(
                "rate limited: {answers} 429s in a row over {} with none accepted; creates paused until {until}; giving up after {}",
                seconds(*rate_limited_for_ms),
                seconds(*give_up_after_ms)
            )
        }
    })
}

/// `12:03:09 UTC` from an RFC 3339 time in UTC.
fn clock_time(rfc3339: &str) -> String {
    rfc3339
        .get(11..19)
        .map_or_else(|| rfc3339.to_string(), |time| format!("{time} UTC"))
}

impl Progress {
    pub fn new(json: bool, total: u64) -> Progress {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(BAR_TEMPLATE)
                .map(|style| {
                    style.with_key(
                        "rate",
                        |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                            let _ = w.write_str(&rate(state.per_sec()));
                        },
                    )
                })
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Progress {
            json,
            bar,
            state: Mutex::new(State::default()),
        }
    }

    pub fn show(&self, event: &Event) {
        if self.json {
            // The price warning goes to stderr as well: a script reading stdout may not look for it.
            if let Some(warning) = price_warning(event).or_else(|| route_line(event)) {
                eprintln!("{warning}");
            }
            if let Ok(line) = serde_json::to_string(event) {
                println!("{line}");
            }
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let line = match event {
            Event::Started {
                budget,
                spent,
                counts,
                ..
            } => {
                state.budget = *budget;
                state.spent = *spent;
                if let Some(bar) = &self.bar {
                    bar.set_position(counts.done + counts.failed + counts.blocked);
                }
                None
            }
            Event::TaskFinished {
                state: task_state,
                cost,
                task,
                reason,
                ..
            } => {
                state.spent += *cost;
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                }
                match task_state.as_str() {
                    "done" => None,
                    other => Some(format!("{task}: {other}: {}", reason.as_deref().unwrap_or(""))),
                }
            }
            Event::BudgetWarning { spent, budget } => {
                Some(format!("warning: {spent} of the {budget} budget spent (80%)"))
            }
            Event::CreditsLow { credits, needed } => Some(format!(
                "warning: the account has {credits} of credit; this pass needs up to {needed}"
            )),
            Event::Stopping { reason } => Some(format!("stopping: {reason}")),
            Event::Routed { .. } | Event::Failover { .. } => route_line(event),
            Event::PriceObserved { .. } => price_warning(event),
            Event::RateLimited { .. } => rate_limit_line(&mut state, event),
            Event::Retry { .. } | Event::Reconciled { .. } => {
                tracing::info!(?event);
                None
            }
        };
        let message = match &state.paused {
            Some((until, text)) if *until > std::time::Instant::now() => {
                format!(
                    "{} of {} · creates paused until {text}",
                    state.spent, state.budget
                )
            }
            _ => format!("{} of {}", state.spent, state.budget),
        };
        match &self.bar {
            Some(bar) => {
                bar.set_message(message);
                if let Some(line) = line {
                    bar.println(line);
                }
            }
            None => {
                if let Some(line) = line {
                    eprintln!("{line}");
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Milliseconds as `12s`, `10m`, `1m30s`, `0.8s`.
fn seconds(ms: u64) -> String {
    darkroom_engine::limits::human(std::time::Duration::from_millis(ms))
}

/// The plain words for an observed price: a warning when it is higher (the run re-priced), a note
/// when it is lower (the table stays).
fn price_warning(event: &Event) -> Option<String> {
    let Event::PriceObserved {
        model,
        table,
        observed,
        applied,
        per,
        config_line,
    } = event
    else {
        return None;
    };
    let unit = if per == "image" {
        format!("per {model} image")
    } else {
        format!("per {per} of {model}")
    };
    Some(if *applied {
        format!(
            "warning: the account is charging {observed} {unit}, the price table says {table}; \
             reserving and counting {observed} {unit} from now on (earlier images corrected). \
             Set `{config_line}` in your config file."
        )
    } else {
        format!(
            "note: the account is charging {observed} {unit}, less than the table's {table}; \
             the budget keeps counting {table} (to count less, set `{config_line}`)"
        )
    })
}

/// The line a routed pass prints, on the bar or on stderr beside `--json`'s events: where tasks
/// go, and a failover's from which provider to which, how many tasks, and why.
fn route_line(event: &Event) -> Option<String> {
    match event {
        Event::Routed {
            provider,
            tasks,
            cost,
        } => Some(format!("{tasks} task(s) go to {provider}, {cost} at its prices")),
        Event::Failover {
            from,
            to,
            tasks,
            reason,
        } => Some(format!(
            "failover: {from} refused the run ({reason}); {tasks} task(s) never sent there move to {to}, \
             reserved at {to}'s prices within the same budget"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_reads_as_images_per_second_with_one_decimal() {
        assert_eq!(rate(2.0), "2.0/s");
        assert_eq!(rate(2.034_2), "2.0/s");
        assert_eq!(rate(0.26), "0.3/s");
        assert_eq!(rate(12.345), "12.3/s");
        assert_eq!(rate(0.0), "0.0/s");
        assert_eq!(rate(f64::NAN), "0.0/s");
        assert_eq!(rate(f64::INFINITY), "0.0/s");
    }

    #[test]
    fn the_bar_shows_the_rate_key_not_indicatifs_own() {
        assert!(BAR_TEMPLATE.contains("{rate}"));
        assert!(!BAR_TEMPLATE.contains("{per_sec}"));
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
    }
}
