//! The `prepare` phase: everything before the first task starts. The pass directory is made and
//! cleared of a killed run's temporaries, images missing on disk are reopened, tasks the last run
//! skipped or failed get another chance, stuck generations an earlier run abandoned are settled,
//! the poller (and callback receiver) starts, the account's credits are checked, the balance
//! observer takes its first reading and the deadline timer is set.

use std::path::Path;
use std::sync::Arc;

use darkroom_jobs::Money;
use darkroom_ledger::Ledger;
use darkroom_provider::Provider;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{worker_limit, KillOnDrop, Run, Shutdown};
use crate::events::Event;
use crate::images;
use crate::poller::Poller;
use crate::run_context::{RunContext, RunParts, StopReason, Upstream};
use crate::{budget_warning_due, EngineError, RunSettings};

/// Builds the run: the pass restored, the poller started, the context made, the start announced,
/// the credits checked, the observer and the deadline timer started.
pub(super) async fn prepare(
    ledger: &Ledger,
    client: &Arc<dyn Provider>,
    settings: &RunSettings,
    job_id: i64,
    events: mpsc::Sender<Event>,
    shutdown: Shutdown,
) -> Result<Run, EngineError> {
    // The end-of-run audit reads the account's generations created since this moment.
    let started_ms = darkroom_ledger::now_ms();
    let job_dir = settings.out_dir.join(&settings.job_name);
    let pass_dir = job_dir.join(settings.pass.as_str());
    check_providers(ledger, client, settings, job_id).await?;
    restore_pass(ledger, client, settings, job_id, &pass_dir).await?;
    // Every pass (run, promote, reframe, trial, the review page's promotions) is refused whole,
    // with nothing sent, when its provider can't make some task as asked.
    let incapable = crate::capable::check_pass(
        ledger,
        client.as_ref(),
        job_id,
        settings.pass,
        settings.scope.as_ref(),
    )
    .await?;
    if !incapable.is_empty() {
        return Err(EngineError::Incapable {
            provider: client.name().to_string(),
            tasks: incapable,
        });
    }

    let poll_tracker = TaskTracker::new();
    let poll_stop = CancellationToken::new();
    // If this future is dropped mid-run (its caller gave up on it), every task it started stops at
    // its next await, as a killed process would: nothing keeps running behind the caller's back.
    let kill = CancellationToken::new();
    let kill_on_drop = KillOnDrop(vec![kill.clone(), poll_stop.clone()]);
    let poller = start_poller(client, settings, &poll_tracker, &poll_stop, true).await?;
    let account = crate::account::join(ledger, settings, job_id, &kill).await?;
    let mut earlier = Vec::new();
    for other in &settings.earlier_providers {
        let poller = start_poller(other, settings, &poll_tracker, &poll_stop, false).await?;
        earlier.push(Upstream {
            client: other.clone(),
            poller,
        });
    }
    let ctx = Arc::new(RunContext::new(RunParts {
        ledger: ledger.clone(),
        client: client.clone(),
        settings: settings.clone(),
        job_id,
        pass_dir,
        poller,
        earlier,
        events,
        stop_dispatch: shutdown.stop.child_token(),
        abort: shutdown.abort.clone(),
        account,
    }));
    announce_start(&ctx).await?;
    check_credits(&ctx).await?;
    // The balance before the first create (and before resumed work goes on), then as charges settle.
    let observer_stop = CancellationToken::new();
    let observer = crate::prices::Observer::start(&ctx).await?.map(|observer| {
        tokio::spawn(crate::prices::watch(
            ctx.clone(),
            observer,
            settings.balance_every,
            observer_stop.clone(),
        ))
    });
    let deadline_timer = start_deadline(&ctx);
    Ok(Run {
        workers: Arc::new(Semaphore::new(worker_limit(settings))),
        ctx,
        shutdown,
        started_ms,
        job_dir,
        tracker: TaskTracker::new(),
        poll_tracker,
        poll_stop,
        kill,
        _kill_on_drop: kill_on_drop,
        observer,
        observer_stop,
        deadline_timer,
    })
}

/// The pass directory made and cleaned, images missing on disk reopened, the last run's skipped
/// and failed tasks reopened, abandoned generations settled.
async fn restore_pass(
    ledger: &Ledger,
    client: &Arc<dyn Provider>,
    settings: &RunSettings,
    job_id: i64,
    pass_dir: &Path,
) -> Result<(), EngineError> {
    let pass = settings.pass;
    let output_error = |source| EngineError::Output {
        path: pass_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(pass_dir).map_err(output_error)?;
    // The caller holds the job's lock, so temporary files here are a killed run's leftovers.
    images::remove_stale_temporaries(pass_dir).map_err(output_error)?;
    // Done tasks whose file is missing or has the wrong size (or was found damaged since) are
    // reopened: this run downloads them again, or makes them again when the upstream lost them.
    let restoring = crate::content::check_kept_images(ledger, job_id, pass, pass_dir).await?;
    if restoring > 0 {
        tracing::warn!(
            count = restoring,
            "images missing or changed on disk; restoring them"
        );
    }
    // Whatever the last run skipped for budget gets another chance (the budget may have been raised).
    let scope = settings.scope.as_ref();
    ledger.reopen_skipped(job_id, pass, scope).await?;
    ledger.reopen_failed(job_id, pass, scope).await?;
    // Tasks holding no create are made on this run's provider, at its price table.
    let repriced = ledger.price_unsent(job_id, pass, &settings.prices).await?;
    if repriced > 0 {
        tracing::info!(
            count = repriced,
            provider = client.name(),
            "tasks priced at the run's provider's table"
        );
    }
    // Generations an earlier run gave up on as stuck may have ended since: settle their charges,
    // each on the provider that made it.
    for provider in std::iter::once(client).chain(&settings.earlier_providers) {
        crate::reconcile::settle_abandoned(ledger, provider, job_id, pass).await?;
    }
    Ok(())
}

/// Refuses the pass, before anything is sent, when a create an earlier run sent to a provider
/// other than this run's is unsettled and that provider was not given: only the provider that
/// received a create can say whether it was made, and looking in another's list would pay again.
async fn check_providers(
    ledger: &Ledger,
    client: &Arc<dyn Provider>,
    settings: &RunSettings,
    job_id: i64,
) -> Result<(), EngineError> {
    let given =
        |name: &str| name == client.name() || settings.earlier_providers.iter().any(|p| p.name() == name);
    let mut missing: Option<(String, Vec<String>)> = None;
    for create in ledger.unsettled_by_provider(job_id, settings.pass).await? {
        if given(&create.provider) {
            continue;
        }
        match &mut missing {
            Some((provider, tasks)) if *provider == create.provider => tasks.push(create.task_key),
            Some(_) => {}
            None => missing = Some((create.provider, vec![create.task_key])),
        }
    }
    match missing {
        Some((provider, tasks)) => Err(EngineError::ProviderMissing { provider, tasks }),
        None => Ok(()),
    }
}

/// The poller on `tracker`, at the interval callbacks allow, and, with callbacks on, the provider
/// registered with the receiver (its signing secret or keys read now) and, when `serve`, the
/// receiver served (once per run: every provider's deliveries arrive on the same socket).
async fn start_poller(
    client: &Arc<dyn Provider>,
    settings: &RunSettings,
    tracker: &TaskTracker,
    stop: &CancellationToken,
    serve: bool,
) -> Result<Poller, EngineError> {
    let max_interval = match settings.callbacks {
        Some(_) => crate::callbacks::SAFETY_MAX_INTERVAL,
        None => crate::poller::MAX_INTERVAL,
    };
    let poller = Poller::spawn(
        client.clone(),
        settings.polls_per_second,
        max_interval,
        tracker,
        stop.clone(),
    );
    if let Some(receiver) = &settings.callbacks {
        receiver
            .register(client.as_ref(), poller.clone())
            .await
            .map_err(|source| EngineError::WebhookKeys {
                provider: client.name().to_string(),
                source,
            })?;
        if serve {
            receiver
                .serve(poller.clone(), tracker, stop.clone())
                .map_err(|source| EngineError::Callbacks {
                    addr: receiver.local_addr().to_string(),
                    source,
                })?;
        }
    }
    Ok(poller)
}

/// `Event::Started` with the pass's counts and money; a budget already at its warning share is
/// not warned about again.
async fn announce_start(ctx: &RunContext) -> Result<(), EngineError> {
    let (ledger, pass) = (&ctx.ledger, ctx.settings.pass);
    let pass_record = ledger.pass(ctx.job_id, pass).await?;
    let (budget, spent) = pass_record
        .as_ref()
        .map_or((Money::ZERO, Money::ZERO), |p| (p.budget(), p.spent()));
    ctx.emit(Event::Started {
        job: ctx.settings.job_name.clone(),
        pass: pass.as_str().to_string(),
        counts: ledger.counts(ctx.job_id, pass).await?,
        budget,
        spent,
    })
    .await;
    if budget_warning_due(spent, budget) {
        ctx.budget_already_warned();
    }
    Ok(())
}

/// Stops dispatch at the pass's deadline (at once when it has passed), unless dispatch stops first.
fn start_deadline(ctx: &Arc<RunContext>) -> Option<JoinHandle<()>> {
    let deadline = ctx.settings.deadline_ms?;
    let remaining = deadline - darkroom_ledger::now_ms();
    if remaining <= 0 {
        ctx.stop(StopReason::Deadline);
        return None;
    }
    let ctx = ctx.clone();
    let wait = std::time::Duration::from_millis(u64::try_from(remaining).unwrap_or(u64::MAX));
    Some(tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(wait) => {
                ctx.emit(Event::Stopping { reason: "the deadline has passed".into() }).await;
                ctx.stop(StopReason::Deadline);
            }
            () = ctx.stop_dispatch.cancelled() => {}
        }
    }))
}

/// Refuses to start when the account's credits can't cover even the first task; warns when they
/// can't cover the whole pass.
async fn check_credits(shared: &RunContext) -> Result<(), EngineError> {
    let credits = match shared.client.balance().await {
        Ok(Some(balance)) => balance.available_micros,
        Ok(None) => return Ok(()),
        Err(error) if error.is_refusal() => {
            shared.stop(StopReason::Refused(error.to_string()));
            return Ok(());
        }
        Err(error) => {
            tracing::warn!(%error, "could not read the account's credits; going on");
            return Ok(());
        }
    };
    let credits = Money::from_micros(credits);
    let pending = shared
        .ledger
        .pending_tasks_in(
            shared.job_id,
            shared.settings.pass,
            shared.settings.scope.as_ref(),
            0,
            1,
        )
        .await?;
    let Some(first) = pending.first() else {
        return Ok(());
    };
    // A budget that can't cover the first image is darkroom's own refusal (dispatch stops at it,
    // naming the budget and the price), not the upstream's, however low the credit.
    if let Some(record) = shared.ledger.pass(shared.job_id, shared.settings.pass).await? {
        let left = record.budget_micros - record.spent_micros - record.reserved_micros;
        if left < first.price().micros() {
            return Ok(());
        }
    }
    if credits < first.price() {
        shared.stop(StopReason::Refused(format!(
            "the account has {credits} of credit, less than one image ({})",
            first.price()
        )));
        return Ok(());
    }
    let needed = shared
        .ledger
        .pending_cost(
            shared.job_id,
            shared.settings.pass,
            shared.settings.scope.as_ref(),
        )
        .await?;
    if credits < needed {
        shared.emit(Event::CreditsLow { credits, needed }).await;
    }
    Ok(())
}
