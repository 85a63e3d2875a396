//! Reframes (`darkroom reframe`): chosen images extended by the upstream to other aspect ratios.
//!
//! Each reframe is one task of the `reframe` pass: one source image (a done final or preview of
//! the job) in one target aspect ratio, linked to its source's task (`source_task_id`, migration
//! 0009), with the source's model, prompt and format, and the upstream's own URL of the source as
//! the request's [`ReframeSource`]. So `run_pass` makes them under every rule of a run: the budget
//! reserved before each create, the intent before the create, reconciliation, the audit, resume
//! with the same command, and verification of the result's format and aspect ratio.
//!
//! A target equal to the source's own aspect ratio is skipped. A source whose upstream URL no
//! longer resolves (or that has none, a cache copy) is skipped with the reason, per image: the
//! upstream can only fetch a URL, and a local path is never sent. Nothing is spent on it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use darkroom_jobs::{AspectRatio, Money, Pass, PriceTable};
use darkroom_ledger::{Ledger, NewReframe, PassRecord, TaskState, TileRecord};
use darkroom_provider::{CreateRequest, Provider, ReframeSource};
use futures::StreamExt;

use crate::promote::ByTaskKey;
use crate::requests::body_fingerprint;
use crate::EngineError;

/// Which images are reframed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// The job's done finals, else (a job with none) its done previews.
    Default,
    /// The job's done finals.
    Final,
    /// The job's done previews.
    Preview,
}

/// The reframes a request asks for, checked against the ledger. Nothing is spent by planning.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// New reframes to add: each source with one target.
    pub new: Vec<(TileRecord, AspectRatio)>,
    /// Reframes of this request the pass already has (asking again resumes them), in any state.
    pub already: Vec<TileRecord>,
    /// Reframes the pass has that this request does not ask for and that are not made (pending,
    /// skipped for budget or deadline, failed): left as they are, for the command that asked.
    pub others_waiting: Vec<TileRecord>,
    /// Source and target pairs left out because the source already has that aspect ratio, as
    /// `KEY (W:H)`.
    pub same_shape: Vec<String>,
    /// Why the selection can't be used, one line per id, naming it: nothing is spent when any.
    pub problems: Vec<String>,
}

impl Plan {
    /// What the new reframes cost per `prices`, each at its source model's price.
    pub fn cost(&self, prices: &PriceTable) -> Money {
        let micros = self.new.iter().fold(0_i64, |sum, (source, _)| {
            let model = darkroom_jobs::Model::parse(&source.model).unwrap_or(darkroom_jobs::Model::Photon1);
            sum.saturating_add(prices.price(model).micros())
        });
        Money::from_micros(micros)
    }

    /// Reframes of this request the pass has and this run will send: pending, or ended skipped,
    /// cancelled or failed (reopened by the run).
    pub fn to_resend(&self) -> impl Iterator<Item = &TileRecord> {
        self.already.iter().filter(|t| will_send(t.state))
    }

    /// Reframes of this request sent by an earlier run and not finished yet: the run finishes
    /// them, without a new create.
    pub fn in_flight(&self) -> impl Iterator<Item = &TileRecord> {
        self.already.iter().filter(|t| t.state.is_in_flight())
    }

    /// Reframes of this request already made (done).
    pub fn made(&self) -> impl Iterator<Item = &TileRecord> {
        self.already.iter().filter(|t| t.state == TaskState::Done)
    }

    /// What this run will send, new and resent together: how many, and their cost (new ones per
    /// `prices`, resent ones at the price they were added with). New reframes of the sources in
    /// `unreachable` (task row ids: [`ReframesAdded::unreachable_sources`]) were not added and
    /// are not counted.
    pub fn to_make(&self, prices: &PriceTable, unreachable: &BTreeSet<i64>) -> (usize, Money) {
        let added: Vec<&(TileRecord, AspectRatio)> = self
            .new
            .iter()
            .filter(|(source, _)| !unreachable.contains(&source.id))
            .collect();
        let new_cost = added.iter().fold(0_i64, |sum, (source, _)| {
            let model = darkroom_jobs::Model::parse(&source.model).unwrap_or(darkroom_jobs::Model::Photon1);
            sum.saturating_add(prices.price(model).micros())
        });
        let cost = self
            .to_resend()
            .fold(new_cost, |sum, t| sum.saturating_add(t.price_micros));
        (added.len() + self.to_resend().count(), Money::from_micros(cost))
    }

    /// The task keys this request asks for, new and existing: the run's scope.
    pub fn keys(&self) -> Vec<String> {
        let new = self
            .new
            .iter()
            .map(|(source, target)| reframe_key(source, *target));
        new.chain(self.already.iter().map(|t| t.task_key.clone()))
            .collect()
    }
}

/// Whether a run reopens and sends a task in this state.
fn will_send(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Pending | TaskState::Skipped | TaskState::Cancelled | TaskState::Failed
    )
}

/// A reframe's task key and file stem: its source's key, `preview` for a preview, and the target,
/// `jar-9-16` (a final's), `jar-preview-9-16` (a preview's).
pub fn reframe_key(source: &TileRecord, target: AspectRatio) -> String {
    let (w, h) = target.parts();
    if source.pass == Pass::Preview.as_str() {
        format!("{}-preview-{w}-{h}", source.task_key)
    } else {
        format!("{}-{w}-{h}", source.task_key)
    }
}

/// Parses `--to`: aspect ratios separated by commas (`1:1,9:16,16:9`), each once, in order.
///
/// # Errors
/// The text naming each value that is no aspect ratio the upstream makes, and the ones it makes.
pub fn parse_targets(text: &str) -> Result<Vec<AspectRatio>, String> {
    let mut targets = Vec::new();
    let mut bad = Vec::new();
    for part in text.split(',').map(str::trim) {
        match AspectRatio::parse(part) {
            Some(ratio) if !targets.contains(&ratio) => targets.push(ratio),
            Some(_) => {}
            None => bad.push(format!("{part:?}")),
        }
    }
    if !bad.is_empty() {
        let known: Vec<&str> = AspectRatio::ALL.iter().map(|a| a.as_str()).collect();
        return Err(format!(
            "{} is not an aspect ratio (expected a comma-separated list of {})",
            bad.join(", "),
            known.join(", ")
        ));
    }
    if targets.is_empty() {
        return Err("no aspect ratio given (expected e.g. 1:1,9:16,16:9)".to_string());
    }
    Ok(targets)
}

/// Chooses the sources (`from`, narrowed to `ids` when given: row ids as `manifest.csv` and the
/// review page's export give them, each naming its final or preview) and pairs each with every
/// target it does not already have.
///
/// # Errors
/// A ledger failure.
pub async fn plan(
    ledger: &Ledger,
    job_id: i64,
    from: From,
    ids: Option<&[String]>,
    targets: &[AspectRatio],
) -> Result<Plan, EngineError> {
    let previews = ledger.tiles(job_id, Pass::Preview).await?;
    let finals = ledger.tiles(job_id, Pass::Final).await?;
    let existing = ledger.tiles(job_id, Pass::Reframe).await?;
    let mut plan = Plan::default();
    let sources = sources(&previews, &finals, from, ids, &mut plan.problems);
    let by_key: HashMap<&str, &TileRecord> = existing.iter().map(|t| (t.task_key.as_str(), t)).collect();
    let mut asked = BTreeSet::new();
    for source in sources {
        for &target in targets {
            if source.aspect_ratio == target.as_str() {
                plan.same_shape
                    .push(format!("{} ({})", source.task_key, target.as_str()));
                continue;
            }
            let key = reframe_key(source, target);
            asked.insert(key.clone());
            match by_key.get(key.as_str()) {
                Some(task) if task.source_task_id == Some(source.id) => plan.already.push((*task).clone()),
                Some(_) => plan.problems.push(format!(
                    "{}: the reframe {key} already exists for another image of that name",
                    source.task_key
                )),
                None => plan.new.push((source.clone(), target)),
            }
        }
    }
    plan.others_waiting = existing
        .into_iter()
        .filter(|t| will_send(t.state) && !asked.contains(&t.task_key))
        .collect();
    Ok(plan)
}

/// The source tiles, in file order, finals before previews of the same selection; each problem of
/// a selection pushed to `problems`.
fn sources<'a>(
    previews: &'a [TileRecord],
    finals: &'a [TileRecord],
    from: From,
    ids: Option<&[String]>,
    problems: &mut Vec<String>,
) -> Vec<&'a TileRecord> {
    let done = |t: &&TileRecord| t.state == TaskState::Done;
    let pool: Vec<&TileRecord> = match from {
        From::Final => finals.iter().filter(done).collect(),
        From::Preview => previews.iter().filter(done).collect(),
        From::Default if finals.iter().any(|f| f.state == TaskState::Done) => {
            finals.iter().filter(done).collect()
        }
        From::Default => previews.iter().filter(done).collect(),
    };
    let Some(ids) = ids else { return pool };
    let which = match from {
        From::Preview => "preview",
        _ => "final",
    };
    let by_key = ByTaskKey::new(pool.iter().copied(), |t: &TileRecord| t.task_key.as_str());
    let any_state = ByTaskKey::new(
        match from {
            From::Preview => previews,
            _ => finals,
        },
        |t: &TileRecord| t.task_key.as_str(),
    );
    let mut seen = BTreeSet::new();
    let mut chosen = Vec::new();
    for id in ids {
        match (by_key.get(id), any_state.get(id)) {
            // The same image named twice (perhaps in another case) counts once.
            (Some(tile), _) if !seen.insert(tile.id) => {}
            (Some(tile), _) => chosen.push(tile),
            (None, Some(tile)) => problems.push(format!(
                "{id}: the {which} is {}, so there is no image to reframe",
                tile.state
            )),
            (None, None) => problems.push(format!("{id}: no {which} with this id in the job")),
        }
    }
    chosen
}

/// Reframes added by [`prepare_reframes`], ready for the reframe pass.
#[derive(Debug)]
pub struct ReframesAdded {
    /// The reframe pass after the budget policy (its budget, spend and deadline).
    pub pass: PassRecord,
    /// How many reframes were added.
    pub added: u64,
    /// Sources skipped because the upstream can't fetch them, each `KEY: why`; nothing was spent
    /// on them.
    pub unreachable: Vec<String>,
    /// The same sources, by task row id.
    pub unreachable_sources: BTreeSet<i64>,
}

/// Prepares the reframes of `plan`: applies the budget policy to the reframe pass (`given` USD if
/// given, else `default` for a pass with no budget yet), checks each source's upstream URL (eight
/// at a time), and adds a pending reframe for each reachable source and target. The caller holds
/// the job's lock and runs the reframe pass afterwards (`crate::run_pass`).
///
/// # Errors
/// A ledger failure (`EngineError::Ledger`; a `given` budget below spend is
/// `LedgerError::BudgetBelowSpend`).
pub async fn prepare_reframes(
    ledger: &Ledger,
    client: &Arc<dyn Provider>,
    job_id: i64,
    plan: &Plan,
    prices: &PriceTable,
    budget: (Option<Money>, Money),
) -> Result<ReframesAdded, EngineError> {
    let (given, default) = budget;
    let pass = crate::budget::apply_budget(ledger, job_id, Pass::Reframe, given, default).await?;
    let reachable = check_sources(client, plan).await;
    let mut unreachable = Vec::new();
    let mut unreachable_sources = BTreeSet::new();
    let mut reframes = Vec::new();
    for (source, target) in &plan.new {
        match reachable.get(&source.id) {
            Some(Ok(url)) => reframes.push(new_reframe(source, *target, url, prices)),
            Some(Err(why)) => {
                unreachable_sources.insert(source.id);
                let line = format!("{}: {why}; not reframed, nothing spent", source.task_key);
                if !unreachable.contains(&line) {
                    unreachable.push(line);
                }
            }
            None => {}
        }
    }
    let added = ledger.add_reframes(job_id, &reframes).await?;
    Ok(ReframesAdded {
        pass,
        added,
        unreachable,
        unreachable_sources,
    })
}

/// Whether each planned source's upstream URL still resolves, by task row id: the URL, or why
/// it can't be sent.
async fn check_sources(client: &Arc<dyn Provider>, plan: &Plan) -> HashMap<i64, Result<String, String>> {
    let mut seen = BTreeSet::new();
    let probes: Vec<_> = plan
        .new
        .iter()
        .filter(|(source, _)| seen.insert(source.id))
        .map(|(source, _)| {
            let (client, id, url) = (client.clone(), source.id, source.image_url.clone());
            async move {
                let reachable = match url {
                    None => Err("the ledger has no upstream URL for its image (a cached copy)".to_string()),
                    Some(url) => match client.download(&url, 64 << 20).await {
                        Ok(_) => Ok(url),
                        Err(error) => Err(format!("its upstream URL no longer resolves ({error})")),
                    },
                };
                (id, reachable)
            }
        })
        .collect();
    futures::stream::iter(probes).buffered(8).collect().await
}

/// The reframe of `source` to `target`: the source's model, prompt and format, the upstream URL.
fn new_reframe(source: &TileRecord, target: AspectRatio, url: &str, prices: &PriceTable) -> NewReframe {
    let model = darkroom_jobs::Model::parse(&source.model).unwrap_or(darkroom_jobs::Model::Photon1);
    let mut request = CreateRequest::new(model.as_str(), source.prompt.clone());
    request.aspect_ratio = Some(target.as_str().to_string());
    request.format = Some(source.format.clone());
    request.reframe = Some(ReframeSource { url: url.to_string() });
    let request_json = serde_json::to_string(&request).unwrap_or_default();
    NewReframe {
        source_task_id: source.id,
        task_key: reframe_key(source, target),
        row_id: source.row_id.clone(),
        line: source.line,
        variant: source.variant,
        variants: source.variants,
        model: model.as_str().to_string(),
        fingerprint: body_fingerprint(&request_json),
        request_json,
        prompt: source.prompt.clone(),
        aspect_ratio: target.as_str().to_string(),
        format: source.format.clone(),
        metadata_json: source.metadata_json.clone(),
        price: prices.price(model),
    }
}

#[cfg(test)]
mod tests;
