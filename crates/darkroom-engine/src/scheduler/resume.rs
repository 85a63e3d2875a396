//! The `resume` phase: work an earlier run left in flight (reserved with an intent, submitted,
//! completed, downloading) is reconciled, polled or downloaded, never created again. Each task
//! takes a worker slot, so resumed work and new work together stay within `worker_limit`.

use super::Run;
use crate::EngineError;

/// Starts a task for each of the pass's unfinished tasks; returns once all are started.
pub(super) async fn resume(run: &Run) -> Result<(), EngineError> {
    let ctx = &run.ctx;
    for task in ctx.ledger.unfinished_tasks(ctx.job_id, ctx.settings.pass).await? {
        let Ok(worker) = run.workers.clone().acquire_owned().await else {
            break;
        };
        run.spawn_task(task, None, worker);
    }
    Ok(())
}
