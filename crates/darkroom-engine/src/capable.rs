//! Whether the provider can make every task a pass is about to send, checked before anything is
//! spent.
//!
//! A provider that silently dropped part of a request (a second image reference, a `png` format,
//! a `modify_image_ref`) would charge for an image other than the one asked for, so a pass whose
//! tasks ask for what its provider can't do is refused whole, each such task named with its row
//! and line ([`darkroom_provider::Capabilities::refusals`] says why).

use darkroom_jobs::{Model, Pass, Row, WeightedUrl};
use darkroom_ledger::{Ledger, TaskState};
use darkroom_provider::{CreateRequest, Provider};

use crate::EngineError;

/// The neutral request a row's tasks carry when made with `model` (the fields its stored create
/// body has), to check a job file against a provider before it is loaded (`estimate`, `validate`).
pub fn request_for_row(row: &Row, model: Model) -> CreateRequest {
    let neutral = |r: &WeightedUrl| darkroom_provider::ImageRef {
        url: r.url.clone(),
        weight: r.weight,
    };
    let refs = &row.refs;
    CreateRequest {
        aspect_ratio: Some(row.aspect_ratio.as_str().to_string()),
        format: Some(row.format.as_str().to_string()),
        image_ref: (!refs.image_ref.is_empty()).then(|| refs.image_ref.iter().map(neutral).collect()),
        style_ref: refs.style_ref.as_ref().map(|r| vec![neutral(r)]),
        character_ref: (!refs.character_ref.is_empty()).then(|| darkroom_provider::CharacterRef {
            identity0: darkroom_provider::Identity {
                images: refs.character_ref.clone(),
            },
        }),
        modify_image_ref: refs.modify_image_ref.as_ref().map(neutral),
        ..CreateRequest::new(model.as_str(), row.prompt.clone())
    }
}

/// Tasks read from the ledger at a time.
const PAGE: i64 = 1000;

/// A task the provider can't make as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incapable {
    /// The row id from the job file.
    pub row_id: String,
    /// The job file line its row starts on.
    pub line: i64,
    /// The task's key (its image's file stem).
    pub task_key: String,
    /// What of its request the provider can't make, one reason each.
    pub reasons: Vec<String>,
}

/// The tasks of the pass still to be sent (pending, or reserved by a run that stopped) that
/// `provider` can't make whole, in file order; empty when it can make every one. With a `scope`
/// (a command's own tasks, or the tasks a routed pass sends to `provider`), only the tasks in it.
///
/// # Errors
/// [`EngineError::Ledger`] when the ledger can't be read; [`EngineError::CorruptRequest`] when a
/// stored request is not one.
pub async fn check_pass(
    ledger: &Ledger,
    provider: &dyn Provider,
    job_id: i64,
    pass: Pass,
    scope: Option<&darkroom_ledger::TaskScope>,
) -> Result<Vec<Incapable>, EngineError> {
    let capabilities = provider.capabilities();
    let mut found = Vec::new();
    let mut check = |task: &darkroom_ledger::TaskRecord| -> Result<(), EngineError> {
        let request: CreateRequest =
            serde_json::from_str(&task.request_json).map_err(|source| EngineError::CorruptRequest {
                task_key: task.task_key.clone(),
                source,
            })?;
        let reasons = capabilities.refusals(&request);
        if !reasons.is_empty() {
            found.push(Incapable {
                row_id: task.row_id.clone(),
                line: task.line,
                task_key: task.task_key.clone(),
                reasons,
            });
        }
        Ok(())
    };
    for task in ledger.unfinished_tasks(job_id, pass).await? {
        if task.state == TaskState::Reserved && scope.is_none_or(|s| s.contains(&task.task_key)) {
            check(&task)?;
        }
    }
    let mut after = 0;
    loop {
        let page = ledger.pending_tasks_in(job_id, pass, scope, after, PAGE).await?;
        for task in &page {
            check(task)?;
        }
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => after = last.id,
            _ => break,
        }
    }
    found.sort_by_key(|i| i.line);
    Ok(found)
}
