//! Settles a create whose outcome is unknown, before anything is sent again.
//!
//! A timeout after sending, a connection reset or a 5xx on create may each hide an accepted, charged
//! generation. Sending again blindly is how naive clients pay twice. Instead the upstream's list of
//! generations (newest first) is searched for one created at or after the intent, with the same request,
//! that no task in the ledger has claimed; a match is adopted.
//!
//! The list is read without the create lock (creates and other searches go on meanwhile); the lock
//! is held alone ([`CreateLock`]) only to check the candidates found against the ledger and claim
//! the first one still unclaimed. No create is between its send and its record while the claim
//! runs, so two tasks with identical requests (variants) can never adopt the same generation: the
//! second finds the first's claim and takes the next candidate, or searches again.

use darkroom_ledger::Ledger;
use std::sync::Arc;

use darkroom_provider::{CreateRequest, Generation, GenerationState, Provider};
use tokio::sync::RwLock;

/// Creates hold it shared; a reconciliation's match and claim hold it alone.
pub type CreateLock = RwLock<()>;

/// How far the upstream's clock may be behind ours when comparing `created_at` to an intent.
const CLOCK_SKEW_MS: i64 = 120_000;
/// The most list pages searched (100 generations each with Luma).
const MAX_PAGES: u32 = 20;

/// What the search found.
#[derive(Debug)]
pub enum Reconciled {
    /// This generation is ours and is claimed: the ledger recorded it as the create's
    /// (`submitted`, charged).
    Adopted(Box<Generation>),
    /// Nothing upstream matches: the create was not accepted and may be sent again.
    NotFound,
    /// The list could not be read: try again later; send nothing.
    Unreadable(darkroom_provider::ProviderError),
    /// The ledger could not say whether a match is already claimed, or could not record the
    /// claim: a systemic failure; send nothing.
    LedgerFailed(darkroom_ledger::LedgerError),
}

/// Settles the unknown create `generation` (a row of the ledger, intended at `intent_at_ms`, Unix
/// milliseconds) of `request`: searches the upstream's list without `lock`, then, holding `lock`
/// alone, claims the first match no task has claimed (`Ledger::record_submitted`). When every
/// match found was claimed by another task between the search and the claim, it searches again.
pub async fn reconcile(
    client: &dyn Provider,
    ledger: &Ledger,
    lock: &CreateLock,
    request: &CreateRequest,
    generation: i64,
    intent_at_ms: i64,
) -> Reconciled {
    loop {
        let candidates = match search(client, ledger, request, intent_at_ms).await {
            Ok(candidates) if candidates.is_empty() => return Reconciled::NotFound,
            Ok(candidates) => candidates,
            Err(found) => return found,
        };
        let _alone = lock.write().await;
        for candidate in candidates {
            match ledger.is_claimed(&candidate.id).await {
                Ok(true) => {}
                Ok(false) => {
                    return match ledger.record_submitted(generation, &candidate.id).await {
                        Ok(_) => Reconciled::Adopted(Box::new(candidate)),
                        Err(error) => Reconciled::LedgerFailed(error),
                    };
                }
                Err(error) => return Reconciled::LedgerFailed(error),
            }
        }
        // Every match was taken by a sibling meanwhile: look again, without the lock.
    }
}

/// The generations in the upstream's list that match `request`, were created at or after the
/// intent (less the clock skew) and were unclaimed when read, newest first. The walk stops at the
/// end of the first page that holds one. `Err` is [`Reconciled::Unreadable`] or
/// [`Reconciled::LedgerFailed`].
async fn search(
    client: &dyn Provider,
    ledger: &Ledger,
    request: &CreateRequest,
    intent_at_ms: i64,
) -> Result<Vec<Generation>, Reconciled> {
    let earliest = intent_at_ms - CLOCK_SKEW_MS;
    let mut cursor = None;
    let mut candidates = Vec::new();
    for _ in 0..MAX_PAGES {
        let list = client
            .list_since(earliest, cursor.as_ref())
            .await
            .map_err(Reconciled::Unreadable)?;
        for generation in list.generations {
            let created_ms = generation.created_at_ms();
            if created_ms.is_some_and(|c| c < earliest) || !generation.matches_request(request) {
                continue;
            }
            // A claim is never undone, so a match claimed now is no candidate later.
            if !ledger
                .is_claimed(&generation.id)
                .await
                .map_err(Reconciled::LedgerFailed)?
            {
                candidates.push(generation);
            }
        }
        cursor = list.next;
        if cursor.is_none() || !candidates.is_empty() {
            break;
        }
    }
    Ok(candidates)
}

/// Abandoned generations looked at per run at most, and at once.
const ABANDONED_PER_RUN: i64 = 1_000;
const ABANDONED_AT_ONCE: usize = 8;

/// Reads again the generations this pass abandoned as stuck on `client`'s provider while they still
/// hold a charge: one the
/// upstream failed since has been refunded, so the ledger refunds it too; one it finished is marked
/// `extra` (paid, not kept). Those still unfinished are left for the next run. Returns how many were
/// refunded. Best effort: a read that fails is simply tried again next time.
pub async fn settle_abandoned(
    ledger: &Ledger,
    client: &Arc<dyn Provider>,
    job_id: i64,
    pass: darkroom_jobs::Pass,
) -> Result<u64, darkroom_ledger::LedgerError> {
    use futures::StreamExt;
    let abandoned = ledger
        .charged_abandoned(job_id, pass, client.name(), ABANDONED_PER_RUN)
        .await?;
    let reads: Vec<_> = abandoned
        .into_iter()
        .map(|(generation, upstream_id)| {
            let client = client.clone();
            async move { (generation, client.get(&upstream_id).await) }
        })
        .collect();
    let answers: Vec<_> = futures::stream::iter(reads)
        .buffer_unordered(ABANDONED_AT_ONCE)
        .collect()
        .await;
    let mut refunded = 0;
    for (generation, answer) in answers {
        let Ok(found) = answer else { continue };
        match found.state {
            GenerationState::Failed => {
                let reason = found
                    .failure_reason
                    .as_deref()
                    .unwrap_or("failed after it was abandoned");
                ledger.settle_abandoned(generation, Some(reason)).await?;
                refunded += 1;
            }
            GenerationState::Completed => ledger.settle_abandoned(generation, None).await?,
            _ => {}
        }
    }
    Ok(refunded)
}
