//! Promotion: finals with Photon 1 for chosen previews.
//!
//! A final copies its preview's request (prompt, aspect ratio, format, references), switches the
//! model to the final pass's, and adds the preview's upstream image as a reference so the final
//! keeps its composition. When the preview's URL no longer resolves (upstream URLs expire), the
//! final is made from the prompt alone and its `reference_note` says so. Finals are ordinary tasks
//! of the `final` pass, linked to their preview, so `run_pass` makes them under every rule of a
//! run: reservation against the final budget, resume, no double pay.

use std::collections::BTreeSet;
use std::sync::Arc;

use darkroom_jobs::{ChoiceScope, Metadata, Model, Money, Pass, PriceTable, RoutingChoices};
use darkroom_ledger::{Ledger, NewFinal, PassRecord, TaskState, TileRecord};
use darkroom_provider::Provider;
use futures::StreamExt;
use serde_json::{json, Value};

mod select_file;

#[cfg(test)]
use select_file::is_kept;
pub(crate) use select_file::ByTaskKey;
pub use select_file::{read_selection, read_selection_lines, SelectedId, SelectionError};

use crate::requests::body_fingerprint;
use crate::EngineError;

/// How a final uses its preview.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PreviewReference {
    /// `modify_image_ref`: the final is the preview, redone by Photon 1 (keeps the composition).
    ModifyImageRef,
    /// One more `image_ref`: the preview guides the final.
    ImageRef,
    /// Not at all: the final is made from the prompt alone.
    None,
}

/// What promotion makes (from `[promote]` and the final pass's routing in the config).
#[derive(Debug, Clone)]
pub struct PromoteOptions {
    /// How a final uses its preview's image.
    pub reference: PreviewReference,
    /// The reference's weight, 0 to 1.
    pub weight: f64,
    /// The final pass's model.
    pub model: Model,
    /// The price of one final, reserved against the final budget.
    pub price: Money,
    /// The price table, for a final the routing choices make with another model than `model`.
    pub prices: PriceTable,
    /// The routing choices made after a trial of the job (`Ledger::routing_choices`): a preview
    /// whose row or `group` has one is promoted with the model chosen (as `run --pass final`
    /// makes that row's final). Read them just before promoting; empty: every final is `model`.
    pub choices: RoutingChoices,
}

impl PromoteOptions {
    /// The model and price a final of `preview` is made with: its row's choice, else its
    /// group's, else the final pass's model; and which choice decided, if one did.
    pub fn route(&self, preview: &TileRecord) -> (Model, Money, Option<ChoiceScope>) {
        let metadata = crate::trial::figures::metadata(&preview.metadata_json);
        self.route_row(&preview.row_id, &metadata)
    }

    /// [`PromoteOptions::route`] for a row given by its id and metadata.
    pub fn route_row(&self, row_id: &str, metadata: &Metadata) -> (Model, Money, Option<ChoiceScope>) {
        match self.choices.chosen(Pass::Final, row_id, metadata) {
            Some((model, _)) if model == self.model => (model, self.price, None),
            Some((model, scope)) => (model, self.prices.price(model), Some(scope)),
            None => (self.model, self.price, None),
        }
    }
}

/// The previews a selection names, checked against the ledger.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Done previews without a final yet.
    pub chosen: Vec<TileRecord>,
    /// Chosen previews that already have a final (promoting again resumes them).
    pub already: Vec<String>,
    /// Those finals, in any state: what a run of this selection resumes.
    pub already_finals: Vec<TileRecord>,
    /// Ids that match no preview of the job.
    pub unknown: Vec<String>,
    /// Previews that have no image to promote (failed, blocked, skipped, not yet done): each id
    /// with its state as the ledger stores it.
    pub not_done: Vec<(String, String)>,
}

impl Plan {
    /// Whether the selection has ids that can't be promoted: then nothing is spent.
    pub fn has_errors(&self) -> bool {
        !self.unknown.is_empty() || !self.not_done.is_empty()
    }

    /// What the new finals cost at `price` each.
    pub fn cost(&self, price: Money) -> Money {
        Money::from_micros(
            price
                .micros()
                .saturating_mul(i64::try_from(self.chosen.len()).unwrap_or(i64::MAX)),
        )
    }

    /// What the new finals cost, each at the price of the model its routing makes it with
    /// ([`PromoteOptions::route`]).
    pub fn routed_cost(&self, options: &PromoteOptions) -> Money {
        self.chosen
            .iter()
            .map(|p| options.route(p).1)
            .fold(Money::ZERO, |sum, price| sum + price)
    }

    /// The chosen previews a routing choice sends to another model than the final pass's, with
    /// that model: what a caller says before spending.
    pub fn rerouted(&self, options: &PromoteOptions) -> Vec<(String, Model)> {
        self.chosen
            .iter()
            .filter_map(|p| match options.route(p) {
                (model, _, Some(_)) => Some((p.task_key.clone(), model)),
                _ => None,
            })
            .collect()
    }

    /// Finals of this selection the pass has and this run will send: pending, or ended skipped,
    /// cancelled or failed (reopened by the run).
    pub fn to_resend(&self) -> impl Iterator<Item = &TileRecord> {
        self.already_finals.iter().filter(|t| {
            matches!(
                t.state,
                TaskState::Pending | TaskState::Skipped | TaskState::Cancelled | TaskState::Failed
            )
        })
    }

    /// Finals of this selection sent by an earlier run and not finished yet: finished by the run
    /// without a new create.
    pub fn in_flight(&self) -> impl Iterator<Item = &TileRecord> {
        self.already_finals.iter().filter(|t| t.state.is_in_flight())
    }

    /// Finals of this selection already made (done).
    pub fn made(&self) -> impl Iterator<Item = &TileRecord> {
        self.already_finals.iter().filter(|t| t.state == TaskState::Done)
    }

    /// What this run will send, new and resent finals together: how many, and their cost at the
    /// run's price table (`options.prices`, the provider's it runs on): new ones at the price of
    /// the model their routing makes them with, resent ones at their model's price, as the pass
    /// re-prices every task not yet sent before it starts.
    pub fn to_make(&self, options: &PromoteOptions) -> (usize, Money) {
        let resent = self.to_resend().fold(0_i64, |sum, t| {
            let price = Model::parse(&t.model).map_or(t.price_micros, |m| options.prices.price(m).micros());
            sum.saturating_add(price)
        });
        let cost = self.routed_cost(options).micros().saturating_add(resent);
        (
            self.chosen.len() + self.to_resend().count(),
            Money::from_micros(cost),
        )
    }

    /// The finals' task keys this selection asks for, new and existing: the run's scope, so a
    /// promotion makes only its own finals and not another selection's left unmade.
    pub fn keys(&self) -> Vec<String> {
        let new = self.chosen.iter().map(|p| p.task_key.clone());
        new.chain(self.already.iter().cloned()).collect()
    }

    /// Why each chosen id that can't be promoted can't, one line each naming the id: unknown ids
    /// first, then previews with no image.
    pub fn problems(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .unknown
            .iter()
            .map(|id| format!("{id}: no preview with this id in the job"))
            .collect();
        lines.extend(
            self.not_done
                .iter()
                .map(|(id, state)| format!("{id}: the preview is {state}, so there is no image to promote")),
        );
        lines
    }
}

/// Which previews to promote.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Every done preview.
    All,
    /// These task ids (`ROWID` or `ROWID-VARIANT`, as in `manifest.csv`).
    Ids(Vec<String>),
}

/// Checks a selection against the job's previews and finals: each id once, in the selection's
/// order (`Selection::All`: the done previews in file order).
///
/// # Errors
/// A ledger failure (`EngineError::Ledger`).
pub async fn plan(ledger: &Ledger, job_id: i64, selection: &Selection) -> Result<Plan, EngineError> {
    let previews = ledger.tiles(job_id, Pass::Preview).await?;
    let finals = ledger.tiles(job_id, Pass::Final).await?;
    let promoted: BTreeSet<i64> = finals.iter().filter_map(|f| f.preview_task_id).collect();
    let final_keys: BTreeSet<&str> = finals.iter().map(|f| f.task_key.as_str()).collect();
    let by_key = select_file::ByTaskKey::new(&previews, |p: &TileRecord| p.task_key.as_str());

    let mut plan = Plan::default();
    let wanted: Vec<&TileRecord> = match selection {
        Selection::All => previews.iter().filter(|p| p.state == TaskState::Done).collect(),
        Selection::Ids(ids) => {
            let mut seen = BTreeSet::new();
            let mut wanted = Vec::new();
            for id in ids {
                match by_key.get(id) {
                    // The same preview named twice (perhaps in another case) counts once.
                    Some(p) if !seen.insert(p.id) => {}
                    None => plan.unknown.push(id.clone()),
                    Some(p) if p.state != TaskState::Done => {
                        plan.not_done.push((id.clone(), p.state.to_string()))
                    }
                    Some(p) => wanted.push(p),
                }
            }
            wanted
        }
    };
    for preview in wanted {
        if promoted.contains(&preview.id) || final_keys.contains(preview.task_key.as_str()) {
            plan.already.push(preview.task_key.clone());
            let final_of = finals
                .iter()
                .find(|f| f.preview_task_id == Some(preview.id) || f.task_key == preview.task_key);
            plan.already_finals.extend(final_of.cloned());
        } else {
            plan.chosen.push(preview.clone());
        }
    }
    Ok(plan)
}

/// Finals added to the ledger by [`prepare_finals`], ready for the final pass.
#[derive(Debug)]
pub struct FinalsAdded {
    /// The final pass after the budget policy (its budget, spend and deadline).
    pub pass: PassRecord,
    /// Task ids of the finals made from the prompt alone: their preview can't be sent.
    pub without_reference: Vec<String>,
    /// The same finals, each `KEY: why` (the URL no longer resolves, or the ledger has none).
    pub without_reference_why: Vec<String>,
}

/// Promoting, as `darkroom promote` and the review page both do it: applies the budget policy to
/// the final pass (`given` USD if given, else `default` for a pass that has no budget yet), then
/// adds a pending final for each chosen preview. The caller holds the job's lock
/// (`crate::lock::JobLock`) and runs the final pass afterwards (`crate::run_pass`).
///
/// # Errors
/// A ledger failure (`EngineError::Ledger`; a `given` budget below spend is
/// `LedgerError::BudgetBelowSpend`).
pub async fn prepare_finals(
    ledger: &Ledger,
    client: &Arc<dyn Provider>,
    job_id: i64,
    plan: &Plan,
    options: &PromoteOptions,
    budget: (Option<Money>, Money),
) -> Result<FinalsAdded, EngineError> {
    let (given, default) = budget;
    let pass = crate::budget::apply_budget(ledger, job_id, Pass::Final, given, default).await?;
    let without = add_finals(ledger, client, job_id, plan, options).await?;
    Ok(FinalsAdded {
        pass,
        without_reference: without.iter().map(|(key, _)| key.clone()).collect(),
        without_reference_why: without
            .into_iter()
            .map(|(key, why)| format!("{key}: {why}"))
            .collect(),
    })
}

/// Adds a pending final for each chosen preview; returns the finals made without their preview
/// (it can't be sent), by task id, each with why. Run the final pass afterwards to make them.
async fn add_finals(
    ledger: &Ledger,
    client: &Arc<dyn Provider>,
    job_id: i64,
    plan: &Plan,
    options: &PromoteOptions,
) -> Result<Vec<(String, String)>, EngineError> {
    let checks = check_references(client, plan, options.reference).await;
    let mut finals = Vec::with_capacity(checks.len());
    let mut without = Vec::new();
    for (preview, resolves) in checks {
        if let Some(Err(why)) = &resolves {
            without.push((preview.task_key.clone(), why.clone()));
        }
        finals.push(new_final(&preview, resolves, options));
    }
    ledger.add_finals(job_id, &finals).await?;
    Ok(without)
}

/// Whether each chosen preview's image still resolves, eight downloads at a time: `None` when
/// the final takes no reference, else the URL or why it can't be used.
async fn check_references(
    client: &Arc<dyn Provider>,
    plan: &Plan,
    reference: PreviewReference,
) -> Vec<(TileRecord, Option<Result<String, String>>)> {
    // Each check owns what it uses, so the future stays `Send` for any caller.
    let probes: Vec<_> = plan
        .chosen
        .iter()
        .cloned()
        .map(|preview| {
            let client = client.clone();
            async move {
                let resolves = match (&preview.image_url, reference) {
                    (_, PreviewReference::None) => None,
                    (Some(url), _) => Some(match client.download(url, 64 << 20).await {
                        Ok(_) => Ok(url.clone()),
                        Err(error) => Err(format!("its upstream URL no longer resolves: {error}")),
                    }),
                    (None, _) => Some(Err(
                        "the ledger has no upstream URL for its image (a copy whose source's URL is not known)"
                            .to_string(),
                    )),
                };
                (preview, resolves)
            }
        })
        .collect();
    futures::stream::iter(probes).buffered(8).collect().await
}

/// The final of `preview`, given whether its image resolves (see `check_references`): its request,
/// fingerprint, price and a note on its reference for people.
fn new_final(
    preview: &TileRecord,
    resolves: Option<Result<String, String>>,
    options: &PromoteOptions,
) -> NewFinal {
    let reference_lost = matches!(resolves, Some(Err(_)));
    let (url, note) = match resolves {
        None => (
            None,
            "none: made from the prompt alone (promote.reference = none)".to_string(),
        ),
        Some(Ok(url)) => {
            let field = match options.reference {
                PreviewReference::ImageRef => "image_ref",
                _ => "modify_image_ref",
            };
            (
                Some(url),
                format!(
                    "{field} = preview {} (weight {})",
                    preview.task_key, options.weight
                ),
            )
        }
        Some(Err(why)) => (
            None,
            format!("the preview can't be sent as a reference ({why}); made from the prompt alone"),
        ),
    };
    let (model, price, _) = options.route(preview);
    let request_json = final_request(&preview.request_json, model, options, url.as_deref());
    NewFinal {
        preview_task_id: preview.id,
        task_key: preview.task_key.clone(),
        row_id: preview.row_id.clone(),
        line: preview.line,
        variant: preview.variant,
        variants: preview.variants,
        model: model.as_str().to_string(),
        fingerprint: body_fingerprint(&format!("{}|{request_json}", preview.variant)),
        request_json,
        prompt: preview.prompt.clone(),
        aspect_ratio: preview.aspect_ratio.clone(),
        format: preview.format.clone(),
        metadata_json: preview.metadata_json.clone(),
        price,
        reference_lost,
        reference_note: note,
    }
}

/// The final's create body: the preview's, with the final's model and the preview as a reference.
fn final_request(
    preview_request: &str,
    model: Model,
    options: &PromoteOptions,
    preview_url: Option<&str>,
) -> String {
    let mut body: serde_json::Map<String, Value> = serde_json::from_str(preview_request).unwrap_or_default();
    body.insert("model".into(), json!(model.as_str()));
    if let Some(url) = preview_url {
        let reference = json!({ "url": url, "weight": options.weight });
        match options.reference {
            // The preview was made from the row's own modify_image_ref: it takes that place.
            PreviewReference::ModifyImageRef => {
                body.insert("modify_image_ref".into(), reference);
            }
            PreviewReference::ImageRef => {
                let refs = body.entry("image_ref").or_insert_with(|| json!([]));
                if let Some(list) = refs.as_array_mut() {
                    // Luma takes at most 4: the preview replaces the last when the row has 4.
                    list.truncate(3);
                    list.push(reference);
                }
            }
            PreviewReference::None => {}
        }
    }
    Value::Object(body).to_string()
}

#[cfg(test)]
mod tests;
