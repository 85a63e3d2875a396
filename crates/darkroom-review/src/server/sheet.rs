//! The contact sheet as the review page reads it at scale: every pair (a preview, the final made
//! from it, the reframes of either) held in memory in display order, each stamped with the
//! revision at which it last changed, so the page loads it a page at a time and a poll carries
//! only the pairs changed since the revision the page last saw.
//!
//! A poll reads [`Ledger::task_versions`] (one narrow pass over the job's tasks) and compares it
//! with the versions the sheet was built from: only the tasks whose version moved are read whole
//! (`tiles_by_id`). A task that appears or disappears (finals added by a promotion, reframes, a job
//! file run again) rebuilds the sheet from the ledger; pairs that read the same keep their
//! revision. Filters, the page's queries and the change feed are answered from memory. The HTTP
//! side is `server::pages`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use darkroom_engine::promote::PromoteOptions;
use darkroom_engine::trial::figures::metadata;
use darkroom_jobs::{ChoiceScope, Metadata, Model, Pass};
use darkroom_ledger::{Ledger, StoredFlag, TaskState, TaskVersion, TileRecord};
use serde::Serialize;

use crate::report::{group_of, Tile};

/// Reads of the ledger at most this often, however many pages poll: answers in between come from
/// the sheet as last read.
const MIN_READ_INTERVAL: Duration = Duration::from_millis(500);
/// Ids read whole per statement when tiles changed.
const CHANGED_CHUNK: usize = 500;

/// One reframe of a pair's preview or final: its key, shape and tile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ReframeTile {
    /// The reframe's task key (`KEY-W-H`, a preview's `KEY-preview-W-H`): its thumbnail's name.
    pub(crate) key: String,
    /// The target aspect ratio, as the API spells it.
    pub(crate) aspect_ratio: String,
    /// `preview` or `final`: which image of the pair it extends.
    pub(crate) from: &'static str,
    /// The reframe's state, cost and flags.
    #[serde(flatten)]
    pub(crate) tile: Tile,
}

/// A pair as the page shows it: the prompt and metadata, the preview, its final and the reframes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct SheetPair {
    /// The task key the pair is shown under (the preview's, else the final's).
    pub(crate) id: String,
    /// The `group` metadata of its row, else the row id.
    pub(crate) group: String,
    /// The row id from the job file.
    pub(crate) row_id: String,
    /// The job file line its row starts on.
    pub(crate) line: i64,
    /// The prompt sent.
    pub(crate) prompt: String,
    /// The aspect ratio asked for.
    pub(crate) aspect_ratio: String,
    /// The row's metadata columns.
    pub(crate) metadata: Metadata,
    /// The preview, absent for a final made directly.
    pub(crate) preview: Option<Tile>,
    /// The final made from the preview (`final` in JSON).
    #[serde(rename = "final")]
    pub(crate) final_: Option<Tile>,
    /// Reframes of the preview or the final, in task order.
    pub(crate) reframes: Vec<ReframeTile>,
    /// What promoting the preview makes, by the routing choices: `None` when the preview is not
    /// done or already has its final.
    pub(crate) promote: Option<Promotion>,
}

/// What promoting a pair's preview makes (`PromoteOptions::route_row`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Promotion {
    /// The model the final is made with.
    pub(crate) model: Model,
    /// Its price, micro-dollars.
    pub(crate) price_micros: i64,
    /// The routing choice that decided (`row` or `group`), when one did.
    pub(crate) choice: Option<ChoiceScope>,
}

impl SheetPair {
    fn tiles(&self) -> impl Iterator<Item = &Tile> {
        self.preview
            .iter()
            .chain(self.final_.iter())
            .chain(self.reframes.iter().map(|r| &r.tile))
    }

    /// Whether the pair's preview is done: what choosing and promoting take.
    pub(crate) fn choosable(&self) -> bool {
        self.preview.as_ref().is_some_and(|p| p.state == "done")
    }
}

/// What the page filters by; `None` everywhere shows every pair.
#[derive(Debug, Default, Clone)]
pub(crate) struct Filter {
    /// Only this group.
    pub(crate) group: Option<String>,
    /// Only pairs with an image in this state: `done`, `unfinished` (pending or in flight),
    /// `failed`, `blocked`, `skipped`.
    pub(crate) state: Option<String>,
    /// Only pairs with an image carrying this quality-check flag (`flagged`: any flag).
    pub(crate) qc: Option<String>,
    /// Only these pair ids (the page's selection).
    pub(crate) ids: Option<HashSet<String>>,
}

impl Filter {
    fn admits(&self, pair: &SheetPair) -> bool {
        if self.group.as_ref().is_some_and(|g| *g != pair.group) {
            return false;
        }
        if self.ids.as_ref().is_some_and(|ids| !ids.contains(&pair.id)) {
            return false;
        }
        if let Some(state) = &self.state {
            let in_state = |t: &Tile| match state.as_str() {
                "unfinished" => TaskState::parse(&t.state).is_some_and(|s| !s.is_terminal()),
                wanted => t.state == wanted,
            };
            if !pair.tiles().any(in_state) {
                return false;
            }
        }
        if let Some(kind) = &self.qc {
            let flagged = |t: &Tile| {
                if kind == "flagged" {
                    !t.qc.is_empty()
                } else {
                    t.qc.iter().any(|f| f.kind.as_str() == kind)
                }
            };
            if !pair.tiles().any(flagged) {
                return false;
            }
        }
        true
    }
}

/// One pair and the revision at which it last changed.
#[derive(Debug)]
struct Entry {
    rev: u64,
    pair: SheetPair,
}

/// The sheet of one job (see the module's doc).
#[derive(Debug)]
pub(crate) struct Sheet {
    /// Names this server's revisions: a page that saw another server's reloads.
    pub(crate) epoch: String,
    /// Bumped whenever a pair changes.
    pub(crate) revision: u64,
    entries: Vec<Entry>,
    /// Task id → the entry showing it.
    by_task: HashMap<i64, usize>,
    versions: HashMap<i64, TaskVersion>,
    /// Pair ids gone from the sheet, with the revision they went at.
    removed: Vec<(u64, String)>,
    /// Group names in display order, with their pair counts.
    groups: Vec<(String, usize)>,
    read_at: Option<tokio::time::Instant>,
}

impl Sheet {
    /// An empty sheet, read from the ledger at the first [`Sheet::refresh`].
    pub(crate) fn new(epoch: String) -> Sheet {
        Sheet {
            epoch,
            revision: 0,
            entries: Vec::new(),
            by_task: HashMap::new(),
            versions: HashMap::new(),
            removed: Vec::new(),
            groups: Vec::new(),
            read_at: None,
        }
    }

    /// Brings the sheet up to date with the ledger, unless it was read less than
    /// `MIN_READ_INTERVAL` ago.
    ///
    /// # Errors
    /// A ledger read that fails (the sheet is left as it was).
    pub(crate) async fn refresh(
        &mut self,
        ledger: &Ledger,
        job_id: i64,
        options: &PromoteOptions,
    ) -> darkroom_ledger::Result<()> {
        let now = tokio::time::Instant::now();
        if self
            .read_at
            .is_some_and(|at| now.duration_since(at) < MIN_READ_INTERVAL)
        {
            return Ok(());
        }
        let versions = ledger.task_versions(job_id).await?;
        let same_tasks = self.read_at.is_some()
            && versions.len() == self.versions.len()
            && versions.iter().all(|v| self.versions.contains_key(&v.id));
        if same_tasks {
            self.update(ledger, job_id, &versions).await?;
        } else {
            self.rebuild(ledger, job_id).await?;
        }
        self.versions = versions.into_iter().map(|v| (v.id, v)).collect();
        self.read_at = Some(now);
        self.route(options);
        Ok(())
    }

    /// Sets what promoting each pair makes; a pair whose answer changed (a new routing choice, a
    /// preview done, a final added) is stamped with a new revision.
    fn route(&mut self, options: &PromoteOptions) {
        let next = self.revision + 1;
        let mut changed = false;
        for entry in &mut self.entries {
            let pair = &entry.pair;
            let promote = (pair.choosable() && pair.final_.is_none()).then(|| {
                let (model, price, choice) = options.route_row(&pair.row_id, &pair.metadata);
                Promotion {
                    model,
                    price_micros: price.micros(),
                    choice,
                }
            });
            if promote != entry.pair.promote {
                entry.pair.promote = promote;
                entry.rev = next;
                changed = true;
            }
        }
        if changed {
            self.revision = next;
        }
    }

    /// Reads the tiles whose version moved and stamps their pairs with a new revision.
    async fn update(
        &mut self,
        ledger: &Ledger,
        job_id: i64,
        versions: &[TaskVersion],
    ) -> darkroom_ledger::Result<()> {
        let changed: Vec<i64> = versions
            .iter()
            .filter(|v| self.versions.get(&v.id) != Some(v))
            .map(|v| v.id)
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let next = self.revision + 1;
        for chunk in changed.chunks(CHANGED_CHUNK) {
            let tiles = ledger.tiles_by_id(job_id, chunk).await?;
            let flags = by_task(ledger.qc_flags_by_id(job_id, chunk).await?);
            for record in &tiles {
                let Some(&at) = self.by_task.get(&record.id) else {
                    continue;
                };
                let entry = &mut self.entries[at];
                let tile = Tile::of(record, &flags);
                let pair = &mut entry.pair;
                if pair.preview.as_ref().is_some_and(|t| t.task == record.id) {
                    pair.preview = Some(tile);
                } else if pair.final_.as_ref().is_some_and(|t| t.task == record.id) {
                    pair.final_ = Some(tile);
                } else if let Some(r) = pair.reframes.iter_mut().find(|r| r.tile.task == record.id) {
                    r.tile = tile;
                }
                entry.rev = next;
            }
        }
        self.revision = next;
        Ok(())
    }

    /// Reads the whole sheet again; pairs that read the same keep their revision.
    async fn rebuild(&mut self, ledger: &Ledger, job_id: i64) -> darkroom_ledger::Result<()> {
        let previews = ledger.tiles(job_id, Pass::Preview).await?;
        let finals = ledger.tiles(job_id, Pass::Final).await?;
        let reframes = ledger.tiles(job_id, Pass::Reframe).await?;
        let mut flags = Vec::new();
        for pass in Pass::ALL {
            flags.extend(ledger.qc_flags(job_id, pass, 0, i64::MAX).await?);
        }
        let pairs = pair_up(&previews, &finals, &reframes, &by_task(flags));
        let next = self.revision + 1;
        let mut old: HashMap<String, Entry> =
            self.entries.drain(..).map(|e| (e.pair.id.clone(), e)).collect();
        let mut changed = false;
        self.entries = pairs
            .into_iter()
            .map(|pair| {
                let rev = match old.remove(&pair.id) {
                    Some(e) if e.pair == pair => e.rev,
                    _ => {
                        changed = true;
                        next
                    }
                };
                Entry { rev, pair }
            })
            .collect();
        for id in old.into_keys() {
            changed = true;
            self.removed.push((next, id));
        }
        if changed {
            self.revision = next;
        }
        self.index();
        Ok(())
    }

    /// Fills `by_task` and `groups` from the entries.
    fn index(&mut self) {
        self.by_task.clear();
        self.groups.clear();
        for (at, entry) in self.entries.iter().enumerate() {
            for tile in entry.pair.tiles() {
                self.by_task.insert(tile.task, at);
            }
            match self.groups.last_mut() {
                Some((name, count)) if *name == entry.pair.group => *count += 1,
                _ => self.groups.push((entry.pair.group.clone(), 1)),
            }
        }
    }

    /// The pairs the filter admits, from `offset`, at most `limit`, and how many it admits.
    pub(crate) fn page(&self, filter: &Filter, offset: usize, limit: usize) -> (usize, Vec<&SheetPair>) {
        let mut total = 0;
        let mut page = Vec::new();
        for entry in &self.entries {
            if filter.admits(&entry.pair) {
                if total >= offset && page.len() < limit {
                    page.push(&entry.pair);
                }
                total += 1;
            }
        }
        (total, page)
    }

    /// The pairs changed after revision `since`, and the ids of pairs removed after it.
    pub(crate) fn changes(&self, since: u64) -> (Vec<&SheetPair>, Vec<&str>) {
        let pairs = self
            .entries
            .iter()
            .filter(|e| e.rev > since)
            .map(|e| &e.pair)
            .collect();
        let removed = self
            .removed
            .iter()
            .filter(|(rev, _)| *rev > since)
            .map(|(_, id)| id.as_str())
            .collect();
        (pairs, removed)
    }

    /// The pairs the filter admits whose preview is done (what "select all" chooses): each id
    /// and what promoting it costs in micro-dollars (0 when it has its final).
    pub(crate) fn choosable(&self, filter: &Filter) -> Vec<(&str, i64)> {
        self.entries
            .iter()
            .map(|e| &e.pair)
            .filter(|p| p.choosable() && filter.admits(p))
            .map(|p| (p.id.as_str(), p.promote.as_ref().map_or(0, |m| m.price_micros)))
            .collect()
    }

    /// Group names in display order with their pair counts.
    pub(crate) fn groups(&self) -> &[(String, usize)] {
        &self.groups
    }

    /// Pairs on the sheet.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Quality-check flags by task id.
fn by_task(flags: Vec<StoredFlag>) -> HashMap<i64, Vec<StoredFlag>> {
    let mut by_task: HashMap<i64, Vec<StoredFlag>> = HashMap::new();
    for flag in flags {
        by_task.entry(flag.task_id).or_default().push(flag);
    }
    by_task
}

fn new_pair(t: &TileRecord) -> SheetPair {
    let meta = metadata(&t.metadata_json);
    SheetPair {
        id: t.task_key.clone(),
        group: group_of(&t.metadata_json, &t.row_id),
        row_id: t.row_id.clone(),
        line: t.line,
        prompt: t.prompt.clone(),
        aspect_ratio: t.aspect_ratio.clone(),
        metadata: meta,
        preview: None,
        final_: None,
        reframes: Vec::new(),
        promote: None,
    }
}

/// Previews beside their finals, the reframes of either under them, grouped by `group` in the
/// order groups first appear (file order within a group).
fn pair_up(
    previews: &[TileRecord],
    finals: &[TileRecord],
    reframes: &[TileRecord],
    flags: &HashMap<i64, Vec<StoredFlag>>,
) -> Vec<SheetPair> {
    let mut pairs: Vec<SheetPair> = Vec::new();
    let mut of_task: HashMap<i64, (usize, &'static str)> = HashMap::new();
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    for p in previews {
        let mut pair = new_pair(p);
        pair.preview = Some(Tile::of(p, flags));
        of_task.insert(p.id, (pairs.len(), "preview"));
        by_key.insert(p.task_key.as_str(), pairs.len());
        pairs.push(pair);
    }
    for f in finals {
        let at = f
            .preview_task_id
            .and_then(|id| of_task.get(&id).map(|(at, _)| *at))
            .or_else(|| by_key.get(f.task_key.as_str()).copied())
            .filter(|&at| pairs[at].final_.is_none());
        let at = at.unwrap_or_else(|| {
            pairs.push(new_pair(f));
            pairs.len() - 1
        });
        pairs[at].final_ = Some(Tile::of(f, flags));
        of_task.insert(f.id, (at, "final"));
    }
    for r in reframes {
        // A reframe whose source is gone from the sheet has nothing to be shown under.
        let Some(&(at, from)) = r.source_task_id.and_then(|id| of_task.get(&id)) else {
            continue;
        };
        pairs[at].reframes.push(ReframeTile {
            key: r.task_key.clone(),
            aspect_ratio: r.aspect_ratio.clone(),
            from,
            tile: Tile::of(r, flags),
        });
    }
    // Display order: groups in the order they first appear, file order within each.
    let mut order: BTreeMap<usize, Vec<SheetPair>> = BTreeMap::new();
    let mut first: HashMap<String, usize> = HashMap::new();
    for pair in pairs {
        let next = first.len();
        let at = *first.entry(pair.group.clone()).or_insert(next);
        order.entry(at).or_default().push(pair);
    }
    order.into_values().flatten().collect()
}
