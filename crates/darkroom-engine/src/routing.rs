//! A pass routed over several providers: `routing = "cheapest"` (each task to the cheapest
//! provider that can make it) and failover (a provider that refuses the run hands its tasks never
//! sent to the next one that can make them).
//!
//! A routed pass is a sequence of ordinary runs (`run_pass`) of the same pass, one provider at a
//! time, each scoped to the tasks routed to it (`RunSettings::scope`), so each provider keeps its
//! own create rate, in-flight cap, account, reconciliation, balance observer and end-of-run audit,
//! and the pass's one budget covers them all: every reservation is taken against it at the price
//! of the provider that sends the task. Before each run, reservations a stopped run took but sent
//! nothing for are given back (`Ledger::release_unsent`), and the tasks holding no create are routed
//! again among the providers that have not refused. A create whose outcome is unknown stays with
//! the provider that received it: each run is given the other providers as earlier ones, so such a
//! create is settled there and never sent again.
//!
//! The choice of a task's provider is [`choose`]; this file leaves the runs themselves to the
//! scheduler and every statement to the ledger.

use std::collections::HashSet;
use std::sync::Arc;

use darkroom_jobs::{AspectRatio, Model, Money, PriceTable};
use darkroom_ledger::{Ledger, TaskRecord, TaskScope, TaskState};
use darkroom_provider::{CreateRequest, Provider};
use tokio::sync::mpsc;

use crate::capable::Incapable;
use crate::events::Event;
use crate::scheduler::Shutdown;
use crate::{EngineError, Outcome, RunSettings, StopReason};

/// Tasks read from the ledger at a time while routing.
const PAGE: i64 = 1000;

/// One provider a routed pass may send to, with what a run on it needs of its own.
#[derive(Debug, Clone)]
pub struct Route {
    /// The provider's client.
    pub client: Arc<dyn Provider>,
    /// Its price table: what a task routed to it is priced and reserved at (micro-dollars).
    pub prices: PriceTable,
    /// Its account's create limit, per minute (`None`: no limit).
    pub creates_per_minute: Option<u32>,
    /// The account a run on it shares limits with (`RunSettings::account`).
    pub account: Option<crate::account::Account>,
}

/// How a routed pass picks each task's provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Routing {
    /// Every task on the first route; the others only take over, in order, when it refuses.
    #[default]
    Fixed,
    /// Each task on the cheapest route that can make it (a tie goes to the earlier route).
    Cheapest,
}

/// The providers a pass may use and how it picks among them.
#[derive(Debug, Clone)]
pub struct RoutePlan {
    /// The routes, in order of preference: with `Fixed`, the first is the pass's provider and the
    /// rest the failover order; with `Cheapest`, every provider with a key.
    pub routes: Vec<Route>,
    /// How a task's provider is picked.
    pub routing: Routing,
    /// Whether a refusal moves the refused provider's tasks never sent to another route. Off, the
    /// run stops on a refusal as a single-provider run does.
    pub failover: bool,
}

/// The route that makes a task: the cheapest (`Cheapest`) or first (`Fixed`) of the `usable`
/// routes whose capabilities make `request` whole; `None` when none can.
pub fn choose(
    plan: &RoutePlan,
    usable: &[bool],
    request: &CreateRequest,
    model: Model,
    aspect: AspectRatio,
) -> Option<usize> {
    let capable = plan
        .routes
        .iter()
        .enumerate()
        .filter(|(i, _)| usable.get(*i).copied().unwrap_or(false))
        .filter(|(_, route)| can_make(route.client.as_ref(), request));
    match plan.routing {
        // The pass's own provider takes every task while it is usable: its run refuses what it
        // can't make, as a single-provider run does.
        Routing::Fixed if usable.first() == Some(&true) => Some(0),
        Routing::Fixed => capable.map(|(i, _)| i).next(),
        Routing::Cheapest => cheapest(capable.map(|(i, route)| (i, route.prices.price_of(model, aspect)))),
    }
}

/// The cheapest of `(candidate, price)` pairs, the earlier one on a tie (the order of
/// preference); `None` when there are none. The one rule both routing and `estimate`'s cheapest
/// mix pick by.
pub fn cheapest<T>(candidates: impl IntoIterator<Item = (T, Money)>) -> Option<T> {
    // `min_by_key` keeps the first of equal keys.
    candidates
        .into_iter()
        .min_by_key(|(_, price)| *price)
        .map(|(candidate, _)| candidate)
}

/// Whether `provider` makes `request` whole: every part of it within its capabilities, and a
/// reframe only on a provider that reframes.
fn can_make(provider: &dyn Provider, request: &CreateRequest) -> bool {
    provider.capabilities().refusals(request).is_empty()
        && (request.reframe.is_none() || provider.can_reframe())
}

/// The tasks routed to one provider, and what they cost at its prices.
#[derive(Debug, Default)]
struct Group {
    keys: Vec<String>,
    cost: Money,
}

/// The pass's tasks holding no create, each routed: a group per route, and the tasks no usable
/// route can make.
async fn route_unsent(
    ledger: &Ledger,
    plan: &RoutePlan,
    usable: &[bool],
    settings: &RunSettings,
    finished: &HashSet<String>,
    job_id: i64,
) -> Result<(Vec<Group>, Vec<Incapable>), EngineError> {
    let mut groups: Vec<Group> = plan.routes.iter().map(|_| Group::default()).collect();
    let mut nowhere = Vec::new();
    let mut after = 0;
    loop {
        let page = ledger
            .unsent_tasks(job_id, settings.pass, settings.scope.as_ref(), after, PAGE)
            .await?;
        for task in page.iter().filter(|t| !finished.contains(&t.task_key)) {
            let (request, model, aspect) = parts_of(task)?;
            match choose(plan, usable, &request, model, aspect) {
                Some(i) => {
                    groups[i].cost += plan.routes[i].prices.price_of(model, aspect);
                    groups[i].keys.push(task.task_key.clone());
                }
                None => nowhere.push(Incapable {
                    row_id: task.row_id.clone(),
                    line: task.line,
                    task_key: task.task_key.clone(),
                    reasons: why_not(plan, usable, &request),
                }),
            }
        }
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => after = last.id,
            _ => break,
        }
    }
    Ok((groups, nowhere))
}

/// Why each usable route can't make `request`: `NAME: REASON`, one per route (the bare reasons
/// when one route is usable, since the refusal names it).
fn why_not(plan: &RoutePlan, usable: &[bool], request: &CreateRequest) -> Vec<String> {
    let alone = usable.iter().filter(|u| **u).count() == 1;
    plan.routes
        .iter()
        .zip(usable)
        .filter(|(_, usable)| **usable)
        .map(|(route, _)| {
            let mut reasons = route.client.capabilities().refusals(request);
            if request.reframe.is_some() && !route.client.can_reframe() {
                reasons.push("a reframe".to_string());
            }
            if alone {
                reasons.join(", ")
            } else {
                format!("{}: {}", route.client.name(), reasons.join(", "))
            }
        })
        .collect()
}

/// The usable routes' names, for a refusal: `replicate`, or `any of luma, replicate`.
fn usable_names(plan: &RoutePlan, usable: &[bool]) -> String {
    let names: Vec<&str> = plan
        .routes
        .iter()
        .zip(usable)
        .filter(|(_, usable)| **usable)
        .map(|(route, _)| route.client.name())
        .collect();
    match names.as_slice() {
        [one] => (*one).to_string(),
        [] => "no provider with a key".to_string(),
        many => format!("any of {}", many.join(", ")),
    }
}

/// A task's stored request, model and aspect ratio.
fn parts_of(task: &TaskRecord) -> Result<(CreateRequest, Model, AspectRatio), EngineError> {
    let request = serde_json::from_str(&task.request_json).map_err(|source| EngineError::CorruptRequest {
        task_key: task.task_key.clone(),
        source,
    })?;
    let bad = |column: &'static str, value: &str| {
        EngineError::Ledger(darkroom_ledger::LedgerError::BadValue {
            column,
            value: value.to_string(),
        })
    };
    let model = Model::parse(&task.model).ok_or_else(|| bad("tasks.model", &task.model))?;
    let aspect = AspectRatio::parse(&task.aspect_ratio)
        .ok_or_else(|| bad("tasks.aspect_ratio", &task.aspect_ratio))?;
    Ok((request, model, aspect))
}

/// Where a routed pass stands between its runs.
#[derive(Default)]
struct Progress {
    /// Routes that refused the run: never used again by this command.
    refused: Vec<bool>,
    /// Tasks a run ended without a stop was given: a leftover (a failed task) waits for the next
    /// command rather than being routed again.
    finished: HashSet<String>,
    /// The last refusal not yet announced as a failover: (route, reason).
    refusal: Option<(usize, String)>,
    /// The last refusal of the pass, announced or not: (route, reason).
    refused_last: Option<(usize, String)>,
}

/// Runs `settings.pass` over the plan's providers until every task routed somewhere was tried,
/// a stop other than a refusal ended it, or a refusal left no provider for the rest; returns how
/// the pass ended (its counts, spend and budget are the whole pass's, all providers together).
///
/// # Errors
/// As [`crate::run_pass`]; also [`EngineError::Incapable`] before anything is sent when a
/// cheapest-routed pass has tasks no route can make.
pub async fn run_routed(
    ledger: &Ledger,
    plan: &RoutePlan,
    settings: &RunSettings,
    job_id: i64,
    events: mpsc::Sender<Event>,
    shutdown: Shutdown,
) -> Result<Outcome, EngineError> {
    let mut progress = Progress {
        refused: vec![false; plan.routes.len()],
        ..Progress::default()
    };
    let mut last: Option<Outcome> = None;
    loop {
        let first = last.is_none();
        ledger.release_unsent(job_id, settings.pass).await?;
        let usable: Vec<bool> = progress.refused.iter().map(|r| !r).collect();
        let (groups, nowhere) =
            route_unsent(ledger, plan, &usable, settings, &progress.finished, job_id).await?;
        if first && plan.routing == Routing::Cheapest && !nowhere.is_empty() {
            return Err(EngineError::Incapable {
                provider: usable_names(plan, &usable),
                tasks: nowhere,
            });
        }
        announce_failover(&events, plan, &mut progress, &groups).await;
        let next = (0..groups.len()).find(|&i| usable[i] && !groups[i].keys.is_empty());
        let (route, scope) = match (next, last) {
            // A fixed pass's first run is the single-provider run it always was, scope and all.
            (_, None) if plan.routing == Routing::Fixed => (0, settings.scope.clone()),
            (Some(i), _) => (i, Some(scoped(settings, &groups[i].keys))),
            // Nothing to send: the first run still resumes and settles what is in flight.
            (None, None) => (0, Some(TaskScope::of_keys(Vec::<String>::new()))),
            (None, Some(outcome)) => return Ok(ended(plan, &progress, &nowhere, outcome)),
        };
        if let Some(group) = groups.get(route).filter(|g| !g.keys.is_empty()) {
            let _ = events
                .send(Event::Routed {
                    provider: plan.routes[route].client.name().to_string(),
                    tasks: group.keys.len() as u64,
                    cost: group.cost,
                })
                .await;
        }
        let run_settings = settings_for(ledger, plan, route, settings, scope, job_id).await?;
        let outcome = crate::run_pass(
            ledger,
            &plan.routes[route].client,
            &run_settings,
            job_id,
            events.clone(),
            shutdown.clone(),
        )
        .await?;
        match &outcome.stop {
            Some(StopReason::Refused(reason)) if plan.failover => {
                progress.refused[route] = true;
                progress.refusal = Some((route, reason.clone()));
                progress.refused_last = Some((route, reason.clone()));
            }
            None => {
                let given = groups.into_iter().nth(route).map(|g| g.keys).unwrap_or_default();
                progress.finished.extend(given);
            }
            Some(_) => return end_rest(ledger, settings, job_id, outcome).await,
        }
        last = Some(outcome);
    }
}

/// How a routed pass ended once nothing is left to route: the last run's outcome, or, when a
/// refusal left tasks (`nowhere`) that no other provider with a key can make, that refusal
/// naming how many and the first of them.
fn ended(plan: &RoutePlan, progress: &Progress, nowhere: &[Incapable], mut outcome: Outcome) -> Outcome {
    let Some((route, reason)) = &progress.refused_last else {
        return outcome;
    };
    if nowhere.is_empty() {
        return outcome;
    }
    let from = plan.routes[*route].client.name();
    let first = nowhere.first().map_or_else(String::new, |task| {
        format!(" (first: line {} (id {:?}))", task.line, task.row_id)
    });
    outcome.stop = Some(StopReason::Refused(format!(
        "{from}: {reason}; {} task(s) can be made by no other provider with a key{first}",
        nowhere.len()
    )));
    outcome
}

/// `keys` within the command's own scope, if it has one.
fn scoped(settings: &RunSettings, keys: &[String]) -> TaskScope {
    let keys = keys
        .iter()
        .filter(|k| settings.scope.as_ref().is_none_or(|s| s.contains(k)));
    TaskScope::of_keys(keys.cloned())
}

/// The failover events of the last refusal, one per provider its tasks move to.
async fn announce_failover(
    events: &mpsc::Sender<Event>,
    plan: &RoutePlan,
    progress: &mut Progress,
    groups: &[Group],
) {
    let Some((from, reason)) = &progress.refusal else {
        return;
    };
    let mut moved = false;
    for (i, group) in groups.iter().enumerate() {
        if group.keys.is_empty() || progress.refused[i] {
            continue;
        }
        moved = true;
        let _ = events
            .send(Event::Failover {
                from: plan.routes[*from].client.name().to_string(),
                to: plan.routes[i].client.name().to_string(),
                tasks: group.keys.len() as u64,
                reason: reason.clone(),
            })
            .await;
    }
    if moved {
        progress.refusal = None;
    }
}

/// The settings of the run on route `i`: its prices, create limit and account, the scope of its
/// tasks, and every other provider that holds an unsettled create of the pass, to settle it there.
async fn settings_for(
    ledger: &Ledger,
    plan: &RoutePlan,
    i: usize,
    settings: &RunSettings,
    scope: Option<TaskScope>,
    job_id: i64,
) -> Result<RunSettings, EngineError> {
    let route = &plan.routes[i];
    let mut run = settings.clone();
    run.prices = route.prices;
    run.creates_per_minute = route.creates_per_minute;
    run.account.clone_from(&route.account);
    run.scope = scope;
    let unsettled = ledger.unsettled_by_provider(job_id, settings.pass).await?;
    let name = route.client.name();
    let known = plan
        .routes
        .iter()
        .map(|r| &r.client)
        .chain(&settings.earlier_providers);
    let mut earlier: Vec<Arc<dyn Provider>> = Vec::new();
    for client in known {
        let other = client.name();
        if other != name
            && unsettled.iter().any(|u| u.provider == other)
            && !earlier.iter().any(|e| e.name() == other)
        {
            earlier.push(client.clone());
        }
    }
    run.earlier_providers = earlier;
    Ok(run)
}

/// A run stopped by the budget, a spending limit or the deadline ends the pass: the tasks routed
/// to providers that did not run yet end `skipped` for that reason, as the stopped run's own did.
async fn end_rest(
    ledger: &Ledger,
    settings: &RunSettings,
    job_id: i64,
    mut outcome: Outcome,
) -> Result<Outcome, EngineError> {
    let reason = match &outcome.stop {
        Some(StopReason::BudgetExhausted) => "budget",
        Some(StopReason::Deadline) => "deadline",
        Some(StopReason::SpendingLimit(_)) => "spending limit",
        _ => return Ok(outcome),
    };
    ledger.release_unsent(job_id, settings.pass).await?;
    ledger
        .end_pending(
            job_id,
            settings.pass,
            settings.scope.as_ref(),
            TaskState::Skipped,
            reason,
        )
        .await?;
    outcome.counts = ledger.counts(job_id, settings.pass).await?;
    Ok(outcome)
}

#[cfg(test)]
mod tests;
