//! Running a pass once its tasks are in the ledger: what `darkroom run` and `darkroom promote` share.
//! Progress on stderr (or JSON events on stdout), Ctrl-C handling, notifications, the refreshed
//! report, and the summary that ends the run with what to do next.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use darkroom_engine::notify::{NotificationKind, Notifier, SigningSecret};
use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{Event, Outcome, RunSettings, StopReason};
use darkroom_jobs::Pass;
use darkroom_ledger::Ledger;
use tokio::sync::mpsc;

use crate::commands::progress::Progress;
use crate::commands::Connection;
use crate::config::{self, Settings};
use crate::exit::{Exit, Failure};

mod signals;
use signals::{wait_until, watch_signals};

/// The flags every command that spends takes.
#[derive(Debug, Clone, clap::Args)]
pub struct RunFlags {
    /// Creates per minute (0 turns the limit off) [default: config limits.creates_per_minute].
    #[arg(long, value_name = "N")]
    pub rate_per_minute: Option<u32>,
    /// Generations in flight at once [default: config limits.max_in_flight].
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<u32>,
    /// Don't reuse images with the same fingerprint from earlier jobs.
    #[arg(long)]
    pub no_cache: bool,
    /// Keep images as the provider sent them, without darkroom's metadata inside (prompt, model,
    /// generation id, job, row id, pass, variant, source) [default: config outputs.metadata].
    #[arg(long)]
    pub no_metadata: bool,
    /// The account this run shares limits and budgets with: runs with the same name share its
    /// create rate, in-flight cap and spending limits [default: config account.name, else the
    /// key and base URL].
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,
    /// The label the job's spend counts toward (a team, a client), for `darkroom budget --label`
    /// limits; kept with the job for later runs ("" removes it).
    #[arg(long, value_name = "NAME")]
    pub label: Option<String>,
    /// Print one JSON event per line on stdout instead of a progress bar.
    #[arg(long)]
    pub json: bool,
    /// After Ctrl-C, how long in-flight generations get to finish (seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub drain_timeout: u64,
    /// POST a signed JSON summary here when the run ends, the budget runs out, 80% of it is spent, or
    /// the upstream refuses the run (repeatable; also `[notify] urls` in config). Signed with
    /// DARKROOM_NOTIFY_SECRET, Standard Webhooks style.
    #[arg(long, value_name = "URL")]
    pub notify: Vec<String>,
    /// Receive the upstream's callbacks on this address (e.g. 0.0.0.0:8787; port 0 picks one): a
    /// callback makes darkroom read that generation at once, and polling slows to a safety net.
    #[arg(long, value_name = "ADDR")]
    pub callbacks_listen: Option<std::net::SocketAddr>,
    /// The URL the upstream reaches the receiver at (a public host or a tunnel); each create adds
    /// /TOKEN [default: http://ADDR].
    #[arg(long, value_name = "URL", requires = "callbacks_listen")]
    pub callbacks_url: Option<String>,
    #[command(flatten)]
    pub route: crate::commands::route::RouteFlags,
}

/// A pass ready to run.
pub struct PassRun {
    pub ledger: Ledger,
    pub connection: Connection,
    pub job: String,
    pub job_id: i64,
    pub pass: Pass,
    pub out: PathBuf,
    pub flags: RunFlags,
    pub start_at: Option<chrono::DateTime<chrono::Utc>>,
    pub deadline_ms: Option<i64>,
    /// The command that resumes this pass, for the summary.
    pub resume: String,
    /// The flags that keep a printed command in this pass's situation (`hints::same_situation`).
    pub situation: String,
    /// The tasks this command makes (`None`: every task of the pass): see `RunSettings::scope`.
    pub scope: Option<darkroom_ledger::TaskScope>,
    /// The next step printed after a pass that made images, instead of the usual one (a preview
    /// pass's `darkroom review JOB`); empty prints none.
    pub next: Option<String>,
}

/// The engine's settings for a pass, from config and flags.
pub fn run_settings(
    settings: &Settings,
    job: &str,
    pass: Pass,
    out: &std::path::Path,
    flags: &RunFlags,
    deadline_ms: Option<i64>,
) -> RunSettings {
    let mut s = RunSettings::new(job, pass, out);
    s.prices = settings.prices;
    let per_minute = flags
        .rate_per_minute
        .unwrap_or(settings.limits.creates_per_minute);
    s.creates_per_minute = (per_minute > 0).then_some(per_minute);
    s.max_in_flight = flags
        .max_in_flight
        .unwrap_or(settings.limits.max_in_flight)
        .max(1);
    s.max_attempts = settings.retry.max_attempts.max(1);
    s.give_up_after = settings.limits.give_up_after;
    s.pacing = settings.limits.pacing;
    s.settle_window = Duration::from_secs(settings.retry.settle_window_seconds);
    s.stuck_after = Duration::from_secs(settings.retry.stuck_after_seconds.max(1));
    s.latency_photon_1 = Duration::from_secs_f64(settings.latency.photon_1.max(0.0));
    s.latency_photon_flash_1 = Duration::from_secs_f64(settings.latency.photon_flash_1.max(0.0));
    s.use_cache = !flags.no_cache;
    s.metadata = settings.outputs.metadata && !flags.no_metadata;
    s.qc = settings.qc.to_settings();
    s.drain_timeout = Duration::from_secs(flags.drain_timeout);
    s.deadline_ms = deadline_ms;
    s.label = flags.label.as_ref().map(|l| l.trim().to_string());
    s
}

/// Starts the callback receiver: an address that can't be bound is bad input (exit 2).
fn bind_callbacks(
    listen: std::net::SocketAddr,
    url: Option<&str>,
) -> anyhow::Result<darkroom_engine::callbacks::CallbackReceiver> {
    let receiver = darkroom_engine::callbacks::CallbackReceiver::bind(listen, url).map_err(|e| {
        Failure::new(
            Exit::BadInput,
            format!("could not listen for callbacks on {listen}: {e}"),
        )
        .with_hint("choose another address with --callbacks-listen, or leave it out to poll")
    })?;
    eprintln!(
        "callbacks: listening on {}; the upstream posts to {}/TOKEN",
        receiver.local_addr(),
        receiver.url()
    );
    Ok(receiver)
}

/// Runs the pass and ends with the summary; the exit code says how it ended.
pub async fn execute(settings: &Settings, run: PassRun) -> anyhow::Result<Exit> {
    let engine_settings = engine_settings(settings, &run).await?;
    let PassRun {
        ledger,
        connection,
        job,
        job_id,
        pass,
        out,
        flags,
        start_at,
        resume,
        situation,
        next,
        ..
    } = run;

    let shutdown = Shutdown::default();
    let signals = tokio::spawn(watch_signals(shutdown.clone()));
    let (events_tx, events_rx) = mpsc::channel(1024);
    let total = ledger.counts(job_id, pass).await?.total;
    let progress = Arc::new(Progress::new(flags.json, total));
    let notifier = notifier(settings, &flags);
    let job_dir = out.join(&job);
    let printer = tokio::spawn(print_events(
        events_rx,
        progress.clone(),
        notifier.clone(),
        job.clone(),
        Thumbnails {
            maker: darkroom_review::thumbs::Maker::start(&job_dir),
            pass,
        },
    ));

    if let Some(start_at) = start_at {
        if !wait_until(start_at, &shutdown).await {
            signals.abort();
            ledger.close().await;
            connection.stop().await;
            eprintln!("cancelled before the start; nothing was sent");
            return Ok(Exit::Interrupted);
        }
    }
    let started = std::time::Instant::now();
    let outcome = crate::commands::route::run(
        settings,
        &connection,
        &flags,
        (&ledger, job_id),
        &engine_settings,
        events_tx,
        shutdown.clone(),
    )
    .await;
    let thumbnails = printer.await.ok();
    signals.abort();
    progress.finish();
    let ended = matches!(&outcome, Ok(o) if o.stop != Some(StopReason::Interrupted));
    let report = refresh_report(thumbnails, ended, &ledger, job_id, &job, &job_dir).await;
    if let Some(receiver) = &engine_settings.callbacks {
        crate::commands::callbacks::say_counts(receiver);
    }
    let outcome = outcome.map_err(crate::commands::providers::refusal)?;
    ledger.close().await;
    connection.stop().await;

    let finished = Finished {
        job: &job,
        pass,
        outcome: &outcome,
        job_dir: &job_dir,
        report: report.as_deref(),
    };
    announce(&finished, &notifier, started, flags.json).await;
    let next = next.unwrap_or_else(|| match pass {
        Pass::Preview => {
            format!("next: darkroom review {job}{situation}   (choose the previews to make finals of)")
        }
        _ => String::new(),
    });
    print_summary(&finished, &resume, &next)
}

/// The engine's settings for `run`: from config and flags, its scope, its callback receiver, the
/// providers holding its unsettled creates and the account it shares limits on. A configured price
/// far below a provider's published one is warned about first (`low_price_warnings`).
async fn engine_settings(settings: &Settings, run: &PassRun) -> anyhow::Result<RunSettings> {
    for line in crate::config::provider::low_price_warnings(settings) {
        eprintln!("warning: {line}");
    }
    let mut engine = run_settings(
        settings,
        &run.job,
        run.pass,
        &run.out,
        &run.flags,
        run.deadline_ms,
    );
    engine.scope = run.scope.clone();
    engine.earlier_providers = crate::commands::providers::earlier_providers(
        &run.ledger,
        &run.connection,
        settings,
        run.job_id,
        run.pass,
    )
    .await?;
    crate::commands::providers::before_sending(&run.connection);
    engine.account =
        crate::commands::budget::run_account(settings, &run.connection, &run.flags, &run.ledger).await?;
    if let Some(listen) = run.flags.callbacks_listen {
        engine.callbacks = Some(bind_callbacks(listen, run.flags.callbacks_url.as_deref())?);
    }
    Ok(engine)
}

/// Ends the thumbnail maker and refreshes the job's report, returning its path. A run that did not
/// end (stopped by Ctrl-C, or failed) leaves at once: the thumbnails still queued are left and the
/// report is refreshed by the next run.
async fn refresh_report(
    thumbnails: Option<Thumbnails>,
    ended: bool,
    ledger: &Ledger,
    job_id: i64,
    job: &str,
    job_dir: &std::path::Path,
) -> Option<PathBuf> {
    if let Some(thumbnails) = thumbnails {
        if ended {
            thumbnails.maker.finish().await;
        } else {
            thumbnails.maker.stop().await;
        }
    }
    if !ended {
        return None;
    }
    darkroom_review::report::refresh(ledger, job_id, job, job_dir).await
}

/// How a pass ended, as the closing summary and the notification tell it.
struct Finished<'a> {
    job: &'a str,
    pass: Pass,
    outcome: &'a Outcome,
    job_dir: &'a std::path::Path,
    report: Option<&'a std::path::Path>,
}

/// Sends the closing notification (and waits up to 10 s for its delivery), and prints the
/// summary as JSON with `--json`.
async fn announce(finished: &Finished<'_>, notifier: &Notifier, started: std::time::Instant, json: bool) {
    let Finished {
        job,
        pass,
        outcome,
        job_dir,
        report,
    } = *finished;
    let summary = summary_json(job, pass, outcome, job_dir, started, report);
    let kind = match outcome.stop {
        Some(StopReason::BudgetExhausted | StopReason::SpendingLimit(_)) => NotificationKind::BudgetExhausted,
        Some(StopReason::Refused(_)) => NotificationKind::BreakerTripped,
        _ => NotificationKind::RunFinished,
    };
    notifier.send(kind, job, summary.clone());
    notifier.flush(Duration::from_secs(10)).await;
    if json {
        println!("{summary}");
    }
}

/// The notifier for `[notify] urls` and `--notify`, signing with `DARKROOM_NOTIFY_SECRET`.
fn notifier(settings: &Settings, flags: &RunFlags) -> Notifier {
    let mut urls = settings.notify.urls.clone();
    urls.extend(flags.notify.iter().cloned());
    Notifier::new(urls, config::notify_secret().as_deref().map(SigningSecret::parse))
}

/// The closing summary as one JSON object: printed with `--json` and sent as the notification.
fn summary_json(
    job: &str,
    pass: Pass,
    outcome: &Outcome,
    job_dir: &std::path::Path,
    started: std::time::Instant,
    report: Option<&std::path::Path>,
) -> serde_json::Value {
    serde_json::json!({
        "event": "summary", "job": job, "pass": pass.as_str(), "counts": outcome.counts,
        "spent": outcome.spent, "budget": outcome.budget,
        "stopped": outcome.stop.as_ref().map(StopReason::kind),
        "stop_reason": outcome.stop.as_ref().and_then(StopReason::reason),
        "out": job_dir.display().to_string(),
        "duration_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "results": job_dir.join("results.jsonl").display().to_string(),
        "report": report.map(|p| p.display().to_string()),
        "audit": outcome.audit.as_ref().map(crate::commands::audit::audit_json),
    })
}

/// The run's last words: what happened, what it cost, and what to do next.
fn print_summary(finished: &Finished<'_>, resume: &str, next: &str) -> anyhow::Result<Exit> {
    let Finished {
        job,
        pass,
        outcome,
        job_dir,
        report,
    } = *finished;
    let counts = outcome.counts;
    eprintln!(
        "{job} {pass}: {} done ({} cached), {} blocked, {} failed, {} skipped, {} left; spent {} of {}",
        counts.done,
        counts.cached,
        counts.blocked,
        counts.failed,
        counts.skipped,
        counts.pending + counts.in_flight,
        outcome.spent,
        outcome.budget
    );
    if let Some(audit) = &outcome.audit {
        eprintln!("{}", crate::commands::audit::describe(audit));
    }
    eprintln!("outputs: {}", job_dir.display());
    if let Some(report) = report {
        eprintln!("report:  {}", report.display());
    }
    Ok(match &outcome.stop {
        Some(StopReason::Interrupted) => {
            eprintln!("interrupted; run `{resume}` again to resume");
            Exit::Interrupted
        }
        Some(StopReason::BudgetExhausted) => {
            eprintln!("the budget ran out; raise it with `{resume} --budget USD` to finish");
            Exit::BudgetExhausted
        }
        Some(StopReason::SpendingLimit(reason)) => {
            eprintln!(
                "a spending limit was reached: {reason}; `darkroom budget` shows the limits and raises them"
            );
            Exit::BudgetExhausted
        }
        Some(StopReason::Deadline) => {
            eprintln!("the deadline passed; run `{resume} --deadline TIME` (or --no-deadline) to finish");
            Exit::Deadline
        }
        Some(StopReason::Refused(reason)) => {
            return Err(
                Failure::new(Exit::Refused, format!("the upstream refused the run: {reason}")).into(),
            );
        }
        Some(StopReason::Failed(reason)) => {
            return Err(
                Failure::new(Exit::RecordsFailed, format!("the run stopped: {reason}"))
                    .with_hint(format!(
                        "darkroom could not keep its records (the ledger or the disk failed); nothing \
                         paid is lost: fix the cause, then run `{resume}` again"
                    ))
                    .into(),
            );
        }
        None if counts.failed + counts.blocked > 0 || counts.pending + counts.in_flight > 0 => {
            eprintln!(
                "details of each failed or blocked task: {}",
                job_dir.join("errors.jsonl").display()
            );
            if counts.failed + counts.pending + counts.in_flight > 0 {
                eprintln!("run `{resume}` again to retry the failed ones");
            }
            if counts.done > 0 && !next.is_empty() {
                eprintln!("{next}");
            }
            Exit::SomeFailed
        }
        None => {
            if !next.is_empty() {
                eprintln!("{next}");
            }
            Exit::Done
        }
    })
}

/// The thumbnail maker fed with the pass's images as they are written, for the report.
struct Thumbnails {
    maker: darkroom_review::thumbs::Maker,
    pass: Pass,
}

/// Shows each event, notifies a budget warning, and hands each image written to the thumbnail
/// maker; returns the maker once the run's events end.
async fn print_events(
    mut events: mpsc::Receiver<Event>,
    progress: Arc<Progress>,
    notifier: Notifier,
    job: String,
    thumbnails: Thumbnails,
) -> Thumbnails {
    while let Some(event) = events.recv().await {
        progress.show(&event);
        match &event {
            Event::BudgetWarning { .. } => {
                notifier.send(NotificationKind::BudgetWarning, &job, serde_json::json!(event));
            }
            Event::TaskFinished {
                task,
                path: Some(path),
                ..
            } => thumbnails
                .maker
                .offer(thumbnails.pass.as_str(), task, std::path::Path::new(path)),
            _ => {}
        }
    }
    thumbnails
}
