//! The reframes an export carries: each done reframe of the job with the image it extends and its
//! quality-check cell.

use std::collections::HashMap;

use darkroom_jobs::Pass;
use darkroom_ledger::{Ledger, TaskRecord, TaskState};

use super::{Chosen, ExportError};
use crate::EngineError;

/// The job's done reframes, each with its source; with `only` (a selection), just those whose
/// source is among the chosen images.
pub(super) async fn reframes_of(
    ledger: &Ledger,
    job_id: i64,
    previews: &[TaskRecord],
    finals: &[TaskRecord],
    only: Option<&Vec<Chosen>>,
) -> Result<Vec<Chosen>, ExportError> {
    let reframes = ledger
        .tiles(job_id, Pass::Reframe)
        .await
        .map_err(EngineError::from)?;
    let mut flags: HashMap<i64, Vec<_>> = HashMap::new();
    for flag in ledger
        .qc_flags(job_id, Pass::Reframe, 0, i64::MAX)
        .await
        .map_err(EngineError::from)?
    {
        flags.entry(flag.task_id).or_default().push(flag);
    }
    let sources: HashMap<i64, &TaskRecord> = previews.iter().chain(finals).map(|t| (t.id, t)).collect();
    let wanted = |id: i64| only.is_none_or(|chosen| chosen.iter().any(|c| c.task.id == id));
    Ok(reframes
        .into_iter()
        .filter(|r| r.state == TaskState::Done)
        .filter_map(|r| {
            let source = r.source_task_id.filter(|id| wanted(*id))?;
            let source = sources.get(&source).map(|s| (*s).clone());
            let qc = crate::outputs::qc_cell(flags.get(&r.id).map_or(&[][..], Vec::as_slice));
            Some(Chosen { task: r, source, qc })
        })
        .collect())
}
