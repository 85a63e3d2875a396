//! The account audit: the account's generations created since a moment, matched against the ledger,
//! so the ledger equals the bill even when the upstream commits a create after darkroom stopped
//! waiting for it. Every run ends with one (from the moment it began); `darkroom audit` runs one on
//! demand.
//!
//! A generation the ledger does not know, whose request matches a task of this job and pass and a
//! create of this ledger whose answer was never seen (`not_created`, not yet accounted for by an
//! earlier find), is adopted if that task still needs an image and has nothing in flight (it is
//! then polled and downloaded like any other), else recorded on that task as an extra charge.
//! One matching a task but no such create is another ledger's or tool's on the same account (two
//! teams running the same product file): reported as foreign, never charged here. One matching a create
//! still open in the ledger (another run's, or a killed run's `unknown` create) is left to that
//! create's reconciliation. One matching no task of this job is reported, charged to no one (it may
//! be another job's, another tool's, or a person's). The list is read newest first, a bounded
//! number of pages; the SQL is the ledger's.

use darkroom_jobs::{Money, Pass};
use darkroom_ledger::{AuditRecord, FoundState, Ledger, TaskRecord, TaskState};
use darkroom_provider::{CreateRequest, Generation, GenerationState, Provider};

use crate::requests::body_fingerprint;
use crate::EngineError;

/// How far the upstream's clock may be behind ours when comparing `created_at` to a moment.
const CLOCK_SKEW_MS: i64 = 120_000;
/// The most list pages read (100 generations each with Luma: 200,000 generations).
const MAX_PAGES: u32 = 2_000;
/// Ids of foreign generations kept in the findings.
const FOREIGN_IDS_KEPT: usize = 20;

/// What an audit found and did.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    /// The findings, as stored in the ledger (and shown by the report).
    pub record: AuditRecord,
    /// Tasks that adopted a found generation: they are `submitted` and need polling.
    pub adopted_tasks: Vec<i64>,
    /// The ids of generations matching no task of this job (the first few).
    pub foreign_ids: Vec<String>,
    /// Why the read stopped early, when it did.
    pub stopped_early: Option<String>,
}

impl Audit {
    /// The extra charges recorded, as money.
    pub fn extra_charged(&self) -> Money {
        Money::from_micros(self.record.extra_micros)
    }
}

/// What a generation found by an audit is charged at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pricing {
    /// The task's price in force: the audited provider is the one the pass's tasks are priced for
    /// (the run's provider).
    InForce,
    /// The audited provider's table price for the task's request: the provider an earlier run of
    /// the pass sent creates to, whose prices the tasks no longer carry.
    Table,
}

/// Reads `client`'s account's generations created at or after `since_ms` (Unix milliseconds; less
/// a margin for clock skew) and settles each one the ledger does not know against this job's tasks
/// (recorded as made by `client`'s provider, charged as `pricing` says), then stores the findings.
/// Errors are the ledger's only: a list that cannot be read ends the audit early
/// (`record.complete` false), as the next audit reads the same generations again.
pub async fn audit(
    ledger: &Ledger,
    client: &dyn Provider,
    job_id: i64,
    pass: Pass,
    since_ms: i64,
    pricing: Pricing,
) -> Result<Audit, EngineError> {
    let earliest = since_ms - CLOCK_SKEW_MS;
    let mut found = Audit {
        record: AuditRecord {
            pass: pass.as_str().to_string(),
            since_ms,
            complete: true,
            ..AuditRecord::default()
        },
        ..Audit::default()
    };
    let mut cursor = None;
    'pages: for page in 0..MAX_PAGES {
        let mut waits = crate::retry::AUDIT_LIST.start();
        let list = loop {
            match client.list_since(earliest, cursor.as_ref()).await {
                Ok(list) => break list,
                Err(error) => {
                    let wait = waits.next_delay().filter(|_| !error.is_refusal());
                    let Some(wait) = wait else {
                        found.stopped_early = Some(format!("the account's list could not be read: {error}"));
                        found.record.complete = false;
                        break 'pages;
                    };
                    tokio::time::sleep(wait).await;
                }
            }
        };
        for generation in list.generations {
            if generation.created_at_ms().is_some_and(|c| c < earliest) {
                continue;
            }
            found.record.read_count += 1;
            if ledger.is_claimed(&generation.id).await? {
                continue;
            }
            let on = Found {
                client,
                pricing,
                job_id,
                pass,
                earliest,
            };
            settle_found(ledger, &on, generation, &mut found).await?;
        }
        cursor = list.next;
        if cursor.is_none() {
            break;
        }
        if page + 1 == MAX_PAGES {
            found.stopped_early = Some(format!("read the newest {} generations only", MAX_PAGES * 100));
            found.record.complete = false;
        }
    }
    found.record.foreign_ids = serde_json::to_string(&found.foreign_ids).unwrap_or_else(|_| "[]".into());
    found.record.at = darkroom_ledger::now_ms();
    ledger.record_audit(job_id, &found.record).await?;
    Ok(found)
}

/// Where an audit found its generations: the provider, how they are charged, the job and pass.
struct Found<'a> {
    client: &'a dyn Provider,
    pricing: Pricing,
    job_id: i64,
    pass: Pass,
    /// The earliest creation time read (Unix milliseconds).
    earliest: i64,
}

/// Settles one generation the ledger does not know.
async fn settle_found(
    ledger: &Ledger,
    on: &Found<'_>,
    generation: Generation,
    found: &mut Audit,
) -> Result<(), EngineError> {
    let (job_id, pass) = (on.job_id, on.pass);
    let prompt = generation.request.as_ref().and_then(|r| r.prompt.clone());
    let candidates: Vec<TaskRecord> = match &prompt {
        Some(prompt) => ledger
            .tasks_with_prompt(job_id, pass, prompt)
            .await?
            .into_iter()
            .filter(|task| {
                serde_json::from_str::<CreateRequest>(&task.request_json)
                    .is_ok_and(|request| generation.matches_request(&request))
            })
            .collect(),
        None => Vec::new(),
    };
    let Some(first) = candidates.first() else {
        foreign(found, generation);
        return Ok(());
    };
    let fingerprint = body_fingerprint(&first.request_json);
    match elsewhere(ledger, on, &fingerprint).await? {
        Some(Elsewhere::OpenCreate) => found.record.left_count += 1,
        Some(Elsewhere::Foreign) => foreign(found, generation),
        None => return book(ledger, on, generation, &candidates, &fingerprint, found).await,
    }
    Ok(())
}

/// Why a found generation matching this job's request is not booked here.
enum Elsewhere {
    /// A create with this request on this provider is still open: its reconciliation settles it.
    OpenCreate,
    /// Every create is recorded before it leaves, so a generation of this ledger's has a create
    /// whose answer was never seen. With none left unaccounted for, it is another ledger's or
    /// tool's on the same account, with the same request: never charged here.
    Foreign,
}

async fn elsewhere(
    ledger: &Ledger,
    on: &Found<'_>,
    fingerprint: &str,
) -> Result<Option<Elsewhere>, EngineError> {
    let provider = on.client.name();
    if ledger.has_open_create(fingerprint, provider).await? {
        return Ok(Some(Elsewhere::OpenCreate));
    }
    if ledger
        .unaccounted_creates(fingerprint, provider, on.earliest)
        .await?
        <= 0
    {
        return Ok(Some(Elsewhere::Foreign));
    }
    Ok(None)
}

/// Books a found generation of this ledger's: adopted by the first candidate task that still
/// needs an image, else recorded on the first as an extra charge.
async fn book(
    ledger: &Ledger,
    on: &Found<'_>,
    generation: Generation,
    candidates: &[TaskRecord],
    fingerprint: &str,
    found: &mut Audit,
) -> Result<(), EngineError> {
    let provider = on.client.name();
    let first = &candidates[0];
    let usable = match &generation.state {
        GenerationState::Failed => false,
        GenerationState::Completed => generation.image_url().is_some(),
        _ => true,
    };
    if usable {
        let needing = candidates.iter().filter(|task| {
            task.reserved_micros == 0
                && matches!(
                    task.state,
                    TaskState::Pending | TaskState::Skipped | TaskState::Failed
                )
        });
        for task in needing {
            let price = charge_at(on, task);
            if ledger
                .adopt_found(task.id, &generation.id, fingerprint, provider, price)
                .await?
            {
                tracing::info!(task = %task.task_key, generation = %generation.id, "adopted a generation found by the audit");
                found.record.adopted += 1;
                found.adopted_tasks.push(task.id);
                return Ok(());
            }
        }
    }
    let state = match &generation.state {
        GenerationState::Failed => FoundState::Failed(
            generation
                .failure_reason
                .clone()
                .unwrap_or_else(|| "failed without a reason".into()),
        ),
        GenerationState::Completed => FoundState::Completed,
        _ => FoundState::Unfinished,
    };
    if let Some(net) = ledger
        .record_extra(
            first.id,
            &generation.id,
            fingerprint,
            &state,
            provider,
            charge_at(on, first),
        )
        .await?
    {
        tracing::warn!(task = %first.task_key, generation = %generation.id, charge = %net, "the audit found a generation the ledger did not know; recorded as an extra charge");
        found.record.extra += 1;
        found.record.extra_micros += net.micros();
    }
    Ok(())
}

/// Counts a generation that is not this ledger's, keeping the first few ids.
fn foreign(found: &mut Audit, generation: Generation) {
    found.record.foreign_count += 1;
    if found.foreign_ids.len() < FOREIGN_IDS_KEPT {
        found.foreign_ids.push(generation.id);
    }
}

/// The charge of a found generation adopted by or recorded on `task`: `None` for its price in
/// force, else the audited provider's table price for its request.
fn charge_at(on: &Found<'_>, task: &TaskRecord) -> Option<Money> {
    match on.pricing {
        Pricing::InForce => None,
        Pricing::Table => serde_json::from_str::<CreateRequest>(&task.request_json)
            .ok()
            .and_then(|request| on.client.table_price(&request))
            .or(Some(task.price())),
    }
}
