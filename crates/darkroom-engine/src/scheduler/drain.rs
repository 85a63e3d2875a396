//! The `drain` phase: no new task starts; in-flight work finishes and is recorded. After a stop
//! (first Ctrl-C) it gets `RunSettings::drain_timeout`, then is aborted and resumes on the next
//! run; an abort (second Ctrl-C) cuts it short at once. Then the account is audited for creates
//! the upstream committed after we stopped waiting, the poller stops, and the balance is read once
//! more.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Run;
use crate::audit::Audit;
use crate::run_context::RunContext;
use crate::task::drive;
use crate::EngineError;

/// How long aborted tasks get to observe the abort before the run goes on without them (their
/// ledger state is already consistent).
const ABORT_GRACE: Duration = Duration::from_secs(2);

/// Drains the run; returns the audit's findings (`None` after an abort: work may still be in
/// flight, and the next run audits again).
pub(super) async fn drain(run: &mut Run) -> Result<Option<Audit>, EngineError> {
    run.tracker.close();
    let aborted = wait_for_in_flight(run).await;
    if let Some(timer) = run.deadline_timer.take() {
        timer.abort();
    }
    let audit = audit_account(run).await?;
    run.poll_stop.cancel();
    run.poll_tracker.close();
    run.poll_tracker.wait().await;
    if aborted {
        let _ = tokio::time::timeout(ABORT_GRACE, run.tracker.wait()).await;
    }
    // A last reading once everything in flight has settled: the run's charges at the observed price.
    run.observer_stop.cancel();
    if let Some(observer) = run.observer.take() {
        if let Ok(mut observer) = observer.await {
            if !run.shutdown.abort.is_cancelled() {
                observer.observe(&run.ctx).await?;
            }
        }
    }
    Ok(audit)
}

/// Waits until every task has ended; bounded by the drain timeout after a stop, cut short by an
/// abort. Returns whether the work was aborted.
async fn wait_for_in_flight(run: &Run) -> bool {
    let ctx = &run.ctx;
    tokio::select! {
        () = run.tracker.wait() => false,
        () = ctx.abort.cancelled() => true,
        () = async {
            ctx.stop_dispatch.cancelled().await;
            if run.shutdown.stop.is_cancelled() {
                tokio::time::sleep(ctx.settings.drain_timeout).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!("in-flight work did not finish within the drain timeout; it resumes on the next run");
            ctx.abort.cancel();
            true
        }
    }
}

/// The upstream may have committed creates after we stopped waiting for them: match the
/// account's generations since the run began against the ledger (not after an abort: work may
/// still be in flight, and the next run audits again).
async fn audit_account(run: &Run) -> Result<Option<Audit>, EngineError> {
    if run.shutdown.abort.is_cancelled() {
        return Ok(None);
    }
    let ctx = &run.ctx;
    use crate::audit::Pricing;
    // Earlier runs' providers first (each list for its own creates, at its own prices), then the
    // run's own, whose findings are the run's.
    for earlier in &ctx.earlier {
        let audit = crate::audit::audit(
            &ctx.ledger,
            earlier.client.as_ref(),
            ctx.job_id,
            ctx.settings.pass,
            run.started_ms,
            Pricing::Table,
        )
        .await?;
        if !audit.adopted_tasks.is_empty() && !run.shutdown.stop.is_cancelled() {
            finish_adopted(ctx, &audit.adopted_tasks, &run.kill).await?;
        }
    }
    let audit = crate::audit::audit(
        &ctx.ledger,
        ctx.client.as_ref(),
        ctx.job_id,
        ctx.settings.pass,
        run.started_ms,
        Pricing::InForce,
    )
    .await?;
    if !audit.adopted_tasks.is_empty() && !run.shutdown.stop.is_cancelled() {
        finish_adopted(ctx, &audit.adopted_tasks, &run.kill).await?;
    }
    Ok(Some(audit))
}

/// Polls and downloads the tasks that adopted a generation the audit found (they need no create),
/// until they end or the run is aborted; what is left is resumed by the next run.
async fn finish_adopted(
    shared: &Arc<RunContext>,
    tasks: &[i64],
    kill: &CancellationToken,
) -> Result<(), EngineError> {
    let tracker = TaskTracker::new();
    for task_id in tasks {
        let task = shared.ledger.task(*task_id).await?;
        let (shared, kill) = (shared.clone(), kill.clone());
        tracker.spawn(async move {
            tokio::select! {
                () = drive(shared, task, None) => {}
                () = kill.cancelled() => {}
            }
        });
    }
    tracker.close();
    tokio::select! {
        () = tracker.wait() => {}
        () = shared.abort.cancelled() => {}
    }
    Ok(())
}
