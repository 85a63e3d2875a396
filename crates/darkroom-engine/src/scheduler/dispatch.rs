//! The `dispatch` phase: pending tasks in file order, a page at a time. Each is taken from the
//! cache when a verified image with its fingerprint exists; otherwise it waits for a worker slot
//! and an in-flight permit, reserves its price against the pass budget and starts. Dispatch stops
//! when the run stops (Ctrl-C, deadline, refusal, systemic failure) or the next price does not fit.

use darkroom_jobs::{AspectRatio, Model, Money};
use darkroom_ledger::{Reservation, TaskRecord, TaskState};

use super::Run;
use crate::events::Event;
use crate::run_context::{RunContext, StopReason};
use crate::EngineError;

/// Pending tasks read from the ledger at a time.
const PAGE: i64 = 500;

/// Takes pending tasks in file order: cache, then reservation, then the in-flight permit.
pub(super) async fn dispatch(run: &Run) -> Result<(), EngineError> {
    let shared = &run.ctx;
    let (ledger, settings) = (&shared.ledger, &shared.settings);
    let mut after = 0;
    loop {
        let page = ledger
            .pending_tasks_in(shared.job_id, settings.pass, settings.scope.as_ref(), after, PAGE)
            .await?;
        let Some(last) = page.last() else { return Ok(()) };
        after = last.id;
        for task in page {
            if shared.dispatch_stopped() {
                return Ok(());
            }
            if settings.use_cache && take_from_cache(shared, &task).await? {
                continue;
            }
            let worker = tokio::select! {
                w = run.workers.clone().acquire_owned() => w.ok(),
                () = shared.stop_dispatch.cancelled() => None,
            };
            let Some(worker) = worker else { return Ok(()) };
            let permit = tokio::select! {
                p = shared.in_flight.clone().acquire_owned() => p.ok(),
                () = shared.stop_dispatch.cancelled() => None,
            };
            let Some(permit) = permit else { return Ok(()) };
            match ledger.reserve(task.id).await? {
                Reservation::Reserved => {}
                Reservation::NotPending => continue,
                Reservation::OverBudget => return over_budget(shared, &task).await,
                Reservation::OverLimit(limit) => return over_limit(shared, &task, &limit).await,
            }
            let mut task = task;
            task.state = TaskState::Reserved;
            task.reserved_micros = task.price_micros;
            run.spawn_task(task, Some(permit), worker);
        }
    }
}

/// The next task's price does not fit in a spending limit of the job's account or label: dispatch
/// stops as for the budget, and the stop names the limit.
pub(crate) async fn over_limit(
    shared: &RunContext,
    task: &TaskRecord,
    limit: &darkroom_ledger::LimitUsage,
) -> Result<(), EngineError> {
    let reason = format!("{limit} cannot cover {} ({})", task.task_key, task.price());
    shared.stop(StopReason::SpendingLimit(reason.clone()));
    shared.emit(Event::Stopping { reason }).await;
    Ok(())
}

/// The next task's price does not fit in the budget: dispatch stops (tasks already holding a
/// reservation still go out), and the stop says why, naming the observed price when it is the
/// reason.
async fn over_budget(shared: &RunContext, task: &TaskRecord) -> Result<(), EngineError> {
    let settings = &shared.settings;
    if !shared.stop(StopReason::BudgetExhausted) {
        return Ok(()); // already stopped, and said why
    }
    // The price in force now: the pass's observed price per image (Luma, Replicate), or the
    // task's own price raised since it was read (fal, per megapixel at its size).
    let now = shared.ledger.task(task.id).await?;
    let observed = shared
        .ledger
        .pass_price(shared.job_id, settings.pass, &task.model)
        .await?
        .unwrap_or(Money::ZERO)
        .max(now.price());
    let table = table_price(shared, task);
    let reason = if observed > table {
        observed_reason(task, observed, table)
    } else {
        match shared.ledger.pass(shared.job_id, settings.pass).await? {
            Some(p) => format!(
                "the budget of {} ({} left) cannot cover {} at {observed} an image ({})",
                Money::from_micros(p.budget_micros),
                Money::from_micros(p.budget_micros - p.spent_micros - p.reserved_micros),
                task.task_key,
                task.model
            ),
            None => format!("the budget cannot cover {}", task.task_key),
        }
    };
    shared.emit(Event::Stopping { reason }).await;
    Ok(())
}

/// A task reserved before the account was seen to charge more than the price table can't be
/// covered at the price now in force (`price`): dispatch stops at the budget, saying why.
pub(crate) async fn over_budget_repriced(shared: &RunContext, task: &TaskRecord, price: Money) {
    if !shared.stop(StopReason::BudgetExhausted) {
        return; // already stopped, and said why
    }
    let reason = observed_reason(task, price, table_price(shared, task));
    shared.emit(Event::Stopping { reason }).await;
}

/// The table's price of one image of `task` (at its size, for a table per megapixel).
fn table_price(shared: &RunContext, task: &TaskRecord) -> Money {
    match (Model::parse(&task.model), AspectRatio::parse(&task.aspect_ratio)) {
        (Some(model), Some(ratio)) => shared.settings.prices.price_of(model, ratio),
        _ => task.price(),
    }
}

/// Why the budget stopped a task the account was seen to charge `observed` for, above the table.
fn observed_reason(task: &TaskRecord, observed: Money, table: Money) -> String {
    format!(
        "the budget cannot cover {} at the observed price of {} {observed} an image (the table says \
         {table}): the account charges more than the price table",
        task.task_key, task.model
    )
}

/// A verified image with the same fingerprint, made on the pass's provider, already on disk whose bytes still hash to what the
/// ledger recorded: reuse it at no cost (`content::take_from_cache`).
async fn take_from_cache(shared: &RunContext, task: &TaskRecord) -> Result<bool, EngineError> {
    let format = darkroom_jobs::Format::parse(&task.format).unwrap_or_default();
    let target = crate::outputs::image_path(&shared.pass_dir, &task.task_key, format);
    let metadata = if shared.settings.metadata {
        let (job, provider) = (&shared.settings.job_name, shared.client.name());
        Some(crate::metadata::for_task(&shared.ledger, task, job, provider, None).await?)
    } else {
        None
    };
    let Some((source, content)) = crate::content::take_from_cache(
        &shared.ledger,
        task.id,
        &task.fingerprint,
        shared.client.name(),
        &target,
        metadata,
    )
    .await?
    else {
        return Ok(false);
    };
    let path = target.display().to_string();
    shared
        .ledger
        .record_cached(task.id, &path, source.generation_id.as_deref(), &content)
        .await?;
    shared
        .emit(Event::TaskFinished {
            task: task.task_key.clone(),
            state: "done".into(),
            cost: Money::ZERO,
            cached: true,
            path: Some(path),
            reason: None,
            attempts: 0,
        })
        .await;
    Ok(true)
}
