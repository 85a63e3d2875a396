//! The create step: a reservation, an in-flight permit, the create gate, the intent recorded
//! under the create lock, the POST, and its charge recorded before the lock is let go. A failed
//! create is classified: a 429 pauses every create and sends this one again, a failure before
//! sending is retried, an unknown outcome is reconciled, a refusal stops the run.

use darkroom_ledger::{Reservation, TaskState};
use tokio::sync::OwnedSemaphorePermit;

use super::{Step, TaskRun};
use crate::account::Intent;
use crate::events::Event;
use crate::retry::{classify, Decision};
use crate::run_context::{RunContext, StopReason};

use crate::EngineError;

/// The create lock held for a send: no reconciliation search runs meanwhile.
type CreateGuard<'a> = tokio::sync::RwLockReadGuard<'a, ()>;

impl TaskRun {
    /// Sends the task's create under its reservation, an in-flight permit and the create gate,
    /// and goes on by the answer: poll what was made, or handle the failure (`create_failed`).
    pub(super) async fn create(&mut self, permit: Option<OwnedSemaphorePermit>) -> Result<Step, EngineError> {
        if self.upstream.client.name() != self.shared.client.name() {
            self.move_to_run_provider().await?;
        }
        if !self.holds_reservation {
            match self.shared.ledger.reserve(self.task.id).await? {
                Reservation::Reserved => self.holds_reservation = true,
                Reservation::OverBudget => {
                    self.shared.stop(StopReason::BudgetExhausted);
                    return Ok(Step::End);
                }
                Reservation::OverLimit(limit) => {
                    crate::scheduler::over_limit(&self.shared, &self.task, &limit).await?;
                    return Ok(Step::End);
                }
                Reservation::NotPending => return Ok(Step::End),
            }
        }
        let permit = match permit {
            Some(p) => p,
            None => match self.permit().await {
                Some(p) => p,
                None => return self.release(TaskState::Pending, None).await,
            },
        };
        let shared = self.shared.clone();
        let (guard, generation) = match self.clear_to_send(&shared).await? {
            Ok(cleared) => cleared,
            Err(step) => return Ok(step),
        };
        let intent_at = darkroom_ledger::now_ms();
        self.attempts += 1;
        // Strict pacing spaces the next create from this instant, however late it is.
        self.shared.gate.on_sent();
        let result = self.send().await;
        // The charge is recorded before the create lock is let go, so a balance reading (taken
        // holding it alone) never sees a charge the ledger does not have yet.
        if let (Ok(created), Some((receiver, token))) = (&result, &self.callback_token) {
            receiver.bind_generation(token, &created.id);
        }
        let recorded = match &result {
            Ok(created) => Some(
                self.shared
                    .ledger
                    .record_submitted_with_basis(generation, &created.id, &self.charge_basis())
                    .await,
            ),
            Err(_) => None,
        };
        drop(guard);
        match result {
            Ok(created) => {
                let charged = match recorded {
                    Some(Ok(charged)) => Some(charged),
                    Some(Err(error)) => {
                        // Another task adopted this id while our answer was on its way: settle
                        // ours by reconciliation like any other unknown outcome.
                        tracing::warn!(task = self.key(), %error, "recording the create failed; reconciling");
                        self.shared.ledger.record_outcome_unknown(generation).await?;
                        return Ok(Step::Reconcile {
                            generation,
                            intent_at,
                            permit: Some(permit),
                        });
                    }
                    None => None,
                };
                self.holds_reservation = false;
                self.shared.charged.notify_one();
                self.shared.gate.on_accepted();
                self.shared.create_succeeded();
                if let Some(charged) = charged {
                    self.shared.check_budget_warning(charged).await;
                }
                Ok(Step::Poll {
                    generation,
                    upstream_id: created.id,
                    permit: Some(permit),
                    stuck_at: tokio::time::Instant::now() + self.shared.settings.stuck_after,
                })
            }
            Err(error) => self.create_failed(generation, intent_at, error, permit).await,
        }
    }

    /// Waits until a create may be sent (the gate, no pause) and records the intent holding the
    /// create lock; returns the lock's guard and the generation row. A 429 to another create while
    /// this one waited for the lock, or while it wrote its intent, pauses this one too: it waits
    /// again. `Err(step)`: the run stopped or gave up first and the task was put back.
    async fn clear_to_send<'a>(
        &mut self,
        shared: &'a RunContext,
    ) -> Result<Result<(CreateGuard<'a>, i64), Step>, EngineError> {
        loop {
            tokio::select! {
                ready = self.shared.gate.ready() => {
                    if let Err(gave_up) = ready {
                        self.shared.stop(StopReason::Refused(gave_up.to_string()));
                        return self.release(TaskState::Pending, None).await.map(Err);
                    }
                }
                () = self.shared.stop_dispatch.cancelled() => return self.release(TaskState::Pending, None).await.map(Err),
            }
            // With an account shared by other runs, one task of this run asks it at a time.
            let turn = shared.account_turn().await;
            let guard = shared.create_lock.read().await;
            // A 429 to another create while this one waited for the lock pauses this one too:
            // wait again, writing nothing.
            if self.shared.gate.paused_until().is_some() {
                drop(guard);
                continue;
            }
            // A price raised since this task reserved (the balance observer, which reads and
            // re-prices holding this lock alone) must still fit in the budget, or nothing is sent.
            if shared.repriced.load(std::sync::atomic::Ordering::Acquire) {
                if let Err(price) = shared.ledger.cover_reservation(self.task.id).await? {
                    drop(guard);
                    drop(turn);
                    crate::scheduler::over_budget_repriced(shared, &self.task, price).await;
                    return self.release(TaskState::Pending, None).await.map(Err);
                }
            }
            let generation = match shared
                .record_intent(
                    self.task.id,
                    &self.request_fingerprint,
                    self.upstream.client.name(),
                )
                .await?
            {
                Intent::Recorded(generation) => generation,
                Intent::Later(wait) => {
                    // The account is at its cap, its rate or a pause: nothing was written.
                    drop(guard);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.shared.stop_dispatch.cancelled() => {}
                    }
                    drop(turn);
                    continue;
                }
            };
            drop(turn);
            // The last instant before sending: a 429 that came while the intent was written.
            if self.shared.gate.paused_until().is_none() {
                return Ok(Ok((guard, generation)));
            }
            drop(guard);
            self.shared.ledger.record_not_created(generation, false).await?;
        }
    }

    /// Sends the create; with callbacks on, it names its own URL (the stored body never has one),
    /// and the token is kept for the generation it makes.
    async fn send(&mut self) -> Result<darkroom_provider::Generation, darkroom_provider::ProviderError> {
        // With callbacks on, each create names its own URL (the stored body never has one).
        let client = &self.upstream.client;
        let callback = self.shared.settings.callbacks.as_ref().and_then(|receiver| {
            let (token, url) = receiver.new_token_for(client.name())?;
            Some((receiver.clone(), token, url))
        });
        let result = match &callback {
            Some((_, _, url)) => {
                let mut request = self.request.clone();
                request.callback_url = Some(url.clone());
                send_to(client, &request).await
            }
            None => send_to(client, &self.request).await,
        };
        self.callback_token = callback.map(|(receiver, token, _)| (receiver, token));
        result
    }

    /// The task's last create went to an earlier run's provider and was settled as never made
    /// there: it moves to the run's provider, its reservation given back and its price that
    /// provider's, and is then reserved again like a task never sent.
    async fn move_to_run_provider(&mut self) -> Result<(), EngineError> {
        let price = self.shared.settings.prices.price_of(self.model, self.aspect);
        tracing::info!(
            task = self.key(),
            from = self.upstream.client.name(),
            to = self.shared.client.name(),
            "sending again on the run's provider"
        );
        self.shared.ledger.move_unsent(self.task.id, price).await?;
        self.task.price_micros = price.micros();
        self.holds_reservation = false;
        self.upstream = self.shared.own_upstream();
        Ok(())
    }

    async fn create_failed(
        &mut self,
        generation: i64,
        intent_at: i64,
        error: darkroom_provider::ProviderError,
        permit: OwnedSemaphorePermit,
    ) -> Result<Step, EngineError> {
        match classify(&error) {
            Decision::RetryNow { retry_after } => {
                self.shared.ledger.record_not_created(generation, false).await?;
                self.attempts -= 1;
                let pause = self.shared.gate.on_rate_limited(retry_after);
                self.shared.share_pause(pause.until).await?;
                self.shared.emit(Event::rate_limited(retry_after, &pause)).await;
                if let Some(gave_up) = self.shared.gate.given_up() {
                    self.shared.stop(StopReason::Refused(gave_up.to_string()));
                    return self.release(TaskState::Pending, None).await;
                }
                Ok(Step::Create(Some(permit)))
            }
            Decision::RetryAfterBackoff => {
                self.shared.ledger.record_not_created(generation, true).await?;
                self.shared.create_failed(&error.to_string());
                drop(permit);
                Ok(Step::Retry {
                    reason: error.to_string(),
                })
            }
            Decision::Reconcile => {
                self.shared.ledger.record_outcome_unknown(generation).await?;
                self.shared.create_failed(&error.to_string());
                Ok(Step::Reconcile {
                    generation,
                    intent_at,
                    permit: Some(permit),
                })
            }
            Decision::GiveUp { refusal } => {
                self.shared.ledger.record_not_created(generation, true).await?;
                let reason = error.to_string();
                if refusal {
                    self.shared.stop(StopReason::Refused(reason));
                    self.release(TaskState::Pending, None).await
                } else {
                    self.release(TaskState::Failed, Some(&reason)).await
                }
            }
        }
    }
}

/// Sends `request` to `client`: a reframe through the provider's reframe call, never as a plain
/// create; anything else as a create.
async fn send_to(
    client: &std::sync::Arc<dyn darkroom_provider::Provider>,
    request: &darkroom_provider::CreateRequest,
) -> Result<darkroom_provider::Generation, darkroom_provider::ProviderError> {
    if request.reframe.is_some() {
        client.reframe(request).await
    } else {
        client.create(request).await
    }
}
