//! `darkroom run`: validate and load the job file, then run its pass against the upstream (or the
//! built-in simulator with `--sim`), showing progress, and exit with the code that says how it ended.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use darkroom_engine::notify::{NotificationKind, Notifier, SigningSecret};
use darkroom_engine::scheduler::Shutdown;
use darkroom_engine::{Event, RunSettings, StopReason};
use darkroom_jobs::{Money, Pass};
use darkroom_ledger::Ledger;
use tokio::sync::mpsc;

use crate::commands::progress::Progress;
use crate::commands::{connect, job_name_for, print_row_errors, PassArg, Upstream};
use crate::config::{self, Settings};
use crate::exit::{Exit, Failure};

/// Run a job file's pass: budgeted, rate-limited, resumable. Running it again resumes it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job file (.csv or .jsonl).
    pub file: PathBuf,
    /// Which pass: previews with photon-flash-1, or finals with photon-1.
    #[arg(long, value_enum, default_value_t = PassArg::Preview)]
    pub pass: PassArg,
    /// The pass's budget in USD (stored with the job; a later run may raise it).
    #[arg(long, value_name = "USD", value_parser = crate::commands::parse_usd)]
    pub budget: Option<Money>,
    /// The job's name [default: the file's stem].
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
    /// Where images and outputs go: OUT/JOB/PASS/ROWID[-VARIANT].EXT.
    #[arg(long, value_name = "DIR", env = crate::config::env::OUT, default_value = "out")]
    pub out: PathBuf,
    #[command(flatten)]
    pub upstream: Upstream,
    /// Creates per minute (0 turns the limit off) [default: config limits.creates_per_minute].
    #[arg(long, value_name = "N")]
    pub rate_per_minute: Option<u32>,
    /// Generations in flight at once [default: config limits.max_in_flight].
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<u32>,
    /// Don't reuse images with the same fingerprint from earlier jobs.
    #[arg(long)]
    pub no_cache: bool,
    /// Print one JSON event per line on stdout instead of a progress bar.
    #[arg(long)]
    pub json: bool,
    /// After Ctrl-C, how long in-flight generations get to finish (seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub drain_timeout: u64,
    /// Wait until this time before the first create: HH:MM (local, next occurrence) or RFC 3339.
    #[arg(long, value_name = "TIME")]
    pub start_at: Option<String>,
    /// Send no new create after this time (HH:MM or RFC 3339); in-flight work finishes, the rest is
    /// skipped (deadline) and the exit code is 6. A resumed run keeps its deadline unless given a new one.
    #[arg(long, value_name = "TIME", conflicts_with = "max_duration")]
    pub deadline: Option<String>,
    /// The deadline as a duration from now: 90m, 8h, 1h30m.
    #[arg(long, value_name = "DURATION")]
    pub max_duration: Option<String>,
    /// Drop a deadline an earlier run of this job set.
    #[arg(long, conflicts_with_all = ["deadline", "max_duration"])]
    pub no_deadline: bool,
    /// POST a signed JSON summary here when the run ends, the budget runs out, 80% of it is spent, or
    /// the upstream refuses the run (repeatable; also `[notify] urls` in config). Signed with
    /// DARKROOM_NOTIFY_SECRET, Standard Webhooks style.
    #[arg(long, value_name = "URL")]
    pub notify: Vec<String>,
}

pub fn run(config_file: Option<&Path>, args: Args) -> anyhow::Result<Exit> {
    let settings = config::resolve(config_file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run_async(settings, args))
}

async fn run_async(settings: Settings, args: Args) -> anyhow::Result<Exit> {
    let pass: Pass = args.pass.into();
    let job = job_name_for(args.job.as_deref(), &args.file)?;
    let budget = args.budget;

    let db = args.upstream.db.clone();
    let _lock = darkroom_engine::lock::JobLock::acquire(&db, &job).map_err(|e| {
        Failure::new(Exit::BadInput, e.to_string()).with_hint("wait for it to finish, or stop it with Ctrl-C")
    })?;
    let ledger = Ledger::open(&db)
        .await
        .with_context(|| format!("opening the ledger {}", db.display()))?;
    let file_path = args.file.display().to_string();
    let job_id = ledger.upsert_job(&job, &file_path, "").await?;
    let existing = ledger.pass(job_id, pass).await?;
    match (budget, &existing) {
        (Some(budget), _) => ledger.set_budget(job_id, pass, budget).await.map_err(|e| {
            Failure::new(Exit::BadInput, e.to_string())
                .with_hint("a budget can be raised, not lowered below spend")
        })?,
        (None, None) => ledger.set_budget(job_id, pass, settings.budget.default).await?,
        (None, Some(_)) => {}
    }

    let now = chrono::Local::now();
    let window_error = |e: darkroom_engine::windows::WindowError| Failure::new(Exit::BadInput, e.to_string());
    let start_at = args
        .start_at
        .as_deref()
        .map(|t| darkroom_engine::windows::parse_time(t, now).map_err(window_error))
        .transpose()?;
    let new_deadline = match (&args.deadline, &args.max_duration) {
        (Some(text), _) => Some(darkroom_engine::windows::parse_time(text, now).map_err(window_error)?),
        (None, Some(text)) => {
            let duration = darkroom_engine::windows::parse_duration(text).map_err(window_error)?;
            Some(start_at.unwrap_or_else(chrono::Utc::now) + duration)
        }
        (None, None) => None,
    };
    if let Some(deadline) = new_deadline {
        ledger
            .set_deadline(job_id, pass, Some(deadline.timestamp_millis()))
            .await?;
    } else if args.no_deadline {
        ledger.set_deadline(job_id, pass, None).await?;
    }
    let deadline_ms = ledger.pass(job_id, pass).await?.and_then(|p| p.deadline_at);

    let options = darkroom_jobs::ReadOptions {
        default_aspect_ratio: settings.defaults.aspect_ratio,
        ..Default::default()
    };
    match darkroom_engine::load::load_job(
        &ledger,
        job_id,
        &args.file,
        pass,
        settings.routing,
        settings.prices,
        options,
    )
    .await
    {
        Ok(loaded) => {
            if let Some(report) = &loaded.report {
                tracing::info!(rows = report.rows, tasks = report.tasks, "job file loaded");
            }
        }
        Err(darkroom_engine::load::LoadError::Invalid(report)) => {
            print_row_errors(&args.file, &report);
            return Err(Failure::new(
                Exit::BadInput,
                format!(
                    "{} has {} invalid row(s); nothing was sent",
                    args.file.display(),
                    report.error_count
                ),
            )
            .into());
        }
        Err(darkroom_engine::load::LoadError::File(e)) => {
            return Err(Failure::new(Exit::BadInput, e.to_string()).into())
        }
        Err(e) => return Err(e.into()),
    }

    let connection = connect(&args.upstream).await?;
    let mut run = RunSettings::new(&job, pass, &args.out);
    run.prices = settings.prices;
    let per_minute = args.rate_per_minute.unwrap_or(settings.limits.creates_per_minute);
    run.creates_per_minute = (per_minute > 0).then_some(per_minute);
    run.max_in_flight = args.max_in_flight.unwrap_or(settings.limits.max_in_flight).max(1);
    run.max_attempts = settings.retry.max_attempts.max(1);
    run.latency_photon_1 = Duration::from_secs_f64(settings.latency.photon_1.max(0.0));
    run.latency_photon_flash_1 = Duration::from_secs_f64(settings.latency.photon_flash_1.max(0.0));
    run.use_cache = !args.no_cache;
    run.drain_timeout = Duration::from_secs(args.drain_timeout);
    run.deadline_ms = deadline_ms;

    let shutdown = Shutdown::default();
    let signals = tokio::spawn(watch_signals(shutdown.clone()));
    let (events_tx, events_rx) = mpsc::channel(1024);
    let total = ledger.counts(job_id, pass).await?.total;
    let progress = Arc::new(Progress::new(args.json, total));
    let mut notify_urls = settings.notify.urls.clone();
    notify_urls.extend(args.notify.iter().cloned());
    let notifier = Notifier::new(
        notify_urls,
        config::notify_secret().as_deref().map(SigningSecret::parse),
    );
    let printer = tokio::spawn(print_events(
        events_rx,
        progress.clone(),
        notifier.clone(),
        job.clone(),
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
    let outcome = darkroom_engine::run_pass(
        &ledger,
        &connection.client,
        &run,
        job_id,
        events_tx,
        shutdown.clone(),
    )
    .await;
    let _ = printer.await;
    signals.abort();
    progress.finish();
    let outcome = outcome?;
    ledger.close().await;
    connection.stop().await;

    let counts = outcome.counts;
    let summary = serde_json::json!({
        "event": "summary", "job": job, "pass": pass.as_str(), "counts": counts,
        "spent": outcome.spent, "budget": outcome.budget,
        "stopped": outcome.stop.as_ref().map(|s| format!("{s:?}")),
        "out": args.out.join(&job).display().to_string(),
        "duration_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "results": args.out.join(&job).join("results.jsonl").display().to_string(),
    });
    let kind = match outcome.stop {
        Some(StopReason::BudgetExhausted) => NotificationKind::BudgetExhausted,
        Some(StopReason::Refused(_)) => NotificationKind::BreakerTripped,
        _ => NotificationKind::RunFinished,
    };
    notifier.send(kind, &job, summary.clone());
    notifier.flush(Duration::from_secs(10)).await;
    if args.json {
        println!("{summary}");
    }
    eprintln!(
        "{job} {pass}: {} done ({} cached), {} failed, {} blocked, {} skipped, {} left; spent {} of {}",
        counts.done,
        counts.cached,
        counts.failed,
        counts.blocked,
        counts.skipped,
        counts.pending + counts.in_flight,
        outcome.spent,
        outcome.budget
    );
    eprintln!("outputs: {}", args.out.join(&job).display());
    let resume = format!("darkroom run {}", args.file.display());
    Ok(match outcome.stop {
        Some(StopReason::Interrupted) => {
            eprintln!("interrupted; run `{resume}` again to resume");
            Exit::Interrupted
        }
        Some(StopReason::BudgetExhausted) => {
            eprintln!("the budget ran out; raise it with `{resume} --budget USD` to finish");
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
                Failure::new(Exit::SomeFailed, format!("the run stopped: {reason}"))
                    .with_hint(format!(
                        "fix the cause, then run `{resume}` again: nothing paid is lost"
                    ))
                    .into(),
            );
        }
        None if counts.failed + counts.blocked > 0 || counts.pending + counts.in_flight > 0 => {
            eprintln!(
                "details of each failed or blocked task: {}",
                args.out.join(&job).join("errors.jsonl").display()
            );
            Exit::SomeFailed
        }
        None => {
            if pass == Pass::Preview {
                eprintln!(
                    "next: review the previews in {}",
                    args.out.join(&job).join("preview").display()
                );
            }
            Exit::Done
        }
    })
}

/// First Ctrl-C: stop taking work and let in-flight generations finish. Second: abort.
async fn watch_signals(shutdown: Shutdown) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    eprintln!("stopping: no new creates; waiting for in-flight generations (Ctrl-C again to abort)");
    shutdown.stop.cancel();
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!("aborting; the ledger is consistent and the next run resumes");
        shutdown.abort.cancel();
    }
}

async fn print_events(
    mut events: mpsc::Receiver<Event>,
    progress: Arc<Progress>,
    notifier: Notifier,
    job: String,
) {
    while let Some(event) = events.recv().await {
        progress.show(&event);
        if let Event::BudgetWarning { .. } = &event {
            notifier.send(NotificationKind::BudgetWarning, &job, serde_json::json!(event));
        }
    }
}

/// Waits until `at`, showing a countdown on stderr; false if Ctrl-C came first.
async fn wait_until(at: chrono::DateTime<chrono::Utc>, shutdown: &Shutdown) -> bool {
    loop {
        let left = darkroom_engine::windows::until(at, chrono::Utc::now());
        if left.is_zero() {
            return true;
        }
        let (h, m, s) = (
            left.as_secs() / 3600,
            left.as_secs() / 60 % 60,
            left.as_secs() % 60,
        );
        eprintln!(
            "starting at {} (in {h}h{m:02}m{s:02}s); Ctrl-C cancels",
            at.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M")
        );
        let step = if left > Duration::from_secs(600) {
            Duration::from_secs(300)
        } else {
            left.min(Duration::from_secs(60))
        };
        tokio::select! {
            () = tokio::time::sleep(step) => {}
            () = shutdown.stop.cancelled() => return false,
        }
    }
}
