//! The `finish` phase: the run's stop becomes the pass's status; pending tasks a budget or a
//! deadline kept from dispatch end `skipped` with that reason; abandoned generations that ended
//! meanwhile are settled; the output files are rewritten from the ledger; the `Outcome` is read.

use darkroom_jobs::Money;
use darkroom_ledger::{PassStatus, TaskState};

use super::{Outcome, Run};
use crate::audit::Audit;
use crate::outputs::write_outputs;
use crate::run_context::StopReason;
use crate::EngineError;

/// Ends the run and says how it ended.
pub(super) async fn finish(run: &Run, audit: Option<Audit>) -> Result<Outcome, EngineError> {
    let ctx = &run.ctx;
    let (ledger, job_id, pass) = (&ctx.ledger, ctx.job_id, ctx.settings.pass);
    let scope = ctx.settings.scope.as_ref();
    let mut stop = ctx.stop_reason();
    if run.shutdown.stop.is_cancelled() {
        stop = Some(StopReason::Interrupted);
    }
    match stop {
        Some(StopReason::BudgetExhausted) => {
            ledger
                .end_pending(job_id, pass, scope, TaskState::Skipped, "budget")
                .await?;
        }
        Some(StopReason::Deadline) => {
            ledger
                .end_pending(job_id, pass, scope, TaskState::Skipped, "deadline")
                .await?;
        }
        Some(StopReason::SpendingLimit(_)) => {
            ledger
                .end_pending(job_id, pass, scope, TaskState::Skipped, "spending limit")
                .await?;
        }
        _ => {}
    }
    ledger
        .set_pass_status(job_id, pass, pass_status(stop.as_ref()))
        .await?;
    if !run.shutdown.abort.is_cancelled() {
        for upstream in std::iter::once(ctx.own_upstream()).chain(ctx.earlier.iter().cloned()) {
            crate::reconcile::settle_abandoned(ledger, &upstream.client, job_id, pass).await?;
        }
    }
    if let Some(account) = &ctx.account {
        account.leave(ledger).await?;
    }
    let outputs = write_outputs(ledger, job_id, &run.job_dir).await?;
    let pass_record = ledger.pass(job_id, pass).await?;
    Ok(Outcome {
        counts: ledger.counts(job_id, pass).await?,
        stop,
        spent: pass_record.as_ref().map_or(Money::ZERO, |p| p.spent()),
        budget: pass_record.as_ref().map_or(Money::ZERO, |p| p.budget()),
        outputs: Some(outputs),
        audit,
    })
}

/// The pass's status in the ledger for how the run stopped.
fn pass_status(stop: Option<&StopReason>) -> PassStatus {
    match stop {
        None => PassStatus::Finished,
        Some(StopReason::BudgetExhausted | StopReason::SpendingLimit(_)) => PassStatus::BudgetExhausted,
        Some(StopReason::Interrupted) => PassStatus::Interrupted,
        Some(StopReason::Deadline) => PassStatus::Deadline,
        Some(StopReason::Refused(_)) => PassStatus::Refused,
        Some(StopReason::Failed(_)) => PassStatus::Failed,
    }
}
