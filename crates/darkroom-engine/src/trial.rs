//! `darkroom trial`: a sample of a job's rows made on both models, to choose between them before
//! the whole job is paid for.
//!
//! A trial is a job of its own in the ledger, `JOB-trial`: its file is the sample written as JSONL
//! beside its outputs (`OUT/JOB-trial/trial-rows.jsonl`, one image per row), its preview pass makes
//! every row with photon-flash-1 and its final pass makes the same rows with photon-1 from the
//! prompt (not from the preview). Both passes run through `run_pass` under the usual budget and
//! guarantees, so running the same command again resumes it and pays for nothing twice; the same
//! file, size and seed write the same rows file, whose load is then recognised as unchanged.
//! `sample` draws the rows, `figures` reads the outcome back from the ledger.

pub mod figures;
pub mod sample;

use std::path::{Path, PathBuf};

use darkroom_jobs::{Model, Money, Pass, PriceTable, ReadOptions, Routing, Row};
use darkroom_ledger::Ledger;
use serde_json::{json, Map, Value};

use crate::load::LoadError;
use crate::prepare::{prepare_job, JobFile};
use sample::{Sample, SampleSpec};

/// The rows file's name inside the trial's output directory.
pub const ROWS_FILE: &str = "trial-rows.jsonl";

/// How a trial runs its two models: previews with Flash, finals with Photon 1.
pub const TRIAL_ROUTING: Routing = Routing {
    preview: Model::PhotonFlash1,
    final_: Model::Photon1,
};

/// The trial job's name for the job `job`: `JOB-trial`.
pub fn trial_name(job: &str) -> String {
    format!("{job}-trial")
}

/// A trial to record and load.
#[derive(Debug)]
pub struct TrialJob<'a> {
    /// The job the trial samples (its later runs honour the trial's choices).
    pub of_job: &'a str,
    /// The trial job's name ([`trial_name`]).
    pub name: &'a str,
    /// The sampled rows.
    pub sample: &'a Sample,
    /// The size and seed the sample was drawn with.
    pub spec: SampleSpec,
    /// `OUT/JOB-trial`: the rows file is written there.
    pub dir: &'a Path,
    /// The trial's budget across both models, if given (split in proportion to each model's cost
    /// of the sample); without one each pass follows the budget policy with its share of
    /// `default_budget`.
    pub budget: Option<Money>,
    /// The whole trial's budget when none is given and its passes have none yet: split between
    /// the models as a given budget is, so the trial never spends more than it.
    pub default_budget: Money,
    /// Prices per model, micro-dollars per image.
    pub prices: PriceTable,
    /// How rows are read.
    pub read: ReadOptions,
}

/// A trial ready to run: its job's id and its rows file.
#[derive(Debug)]
pub struct PreparedTrial {
    /// The trial job's id in the ledger.
    pub job_id: i64,
    /// The rows file both passes were loaded from.
    pub rows_file: PathBuf,
}

/// Writes the rows file, prepares both passes (budget policy and load, as `prepare_job` does for a
/// run) and records the trial. Nothing is sent.
///
/// # Errors
/// [`LoadError::Io`] when the rows file can't be written, the others as [`prepare_job`] (a budget
/// below what a pass already spent is `LedgerError::BudgetBelowSpend` inside `Ledger`).
pub async fn prepare_trial(ledger: &Ledger, trial: TrialJob<'_>) -> Result<PreparedTrial, LoadError> {
    let rows_file = trial.dir.join(ROWS_FILE);
    let text = rows_file_text(&trial.sample.rows);
    let written = rows_file.clone();
    tokio::task::spawn_blocking(move || {
        if let Some(parent) = written.parent() {
            std::fs::create_dir_all(parent)?;
        }
        crate::files::write_atomically(&written, text.as_bytes())
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    .map_err(|source| LoadError::Io {
        path: rows_file.display().to_string(),
        source,
    })?;
    let rows = trial.sample.rows.len() as u64;
    let budgets = split_budget(trial.budget, rows, trial.prices);
    let defaults = split_budget(Some(trial.default_budget), rows, trial.prices);
    let passes = [
        (Pass::Preview, budgets.0, defaults.0),
        (Pass::Final, budgets.1, defaults.1),
    ];
    let mut job_id = 0;
    for (pass, budget, default_budget) in passes {
        let prepared = prepare_job(
            ledger,
            JobFile {
                name: trial.name,
                file: &rows_file,
                pass,
                budget,
                default_budget: default_budget.unwrap_or(Money::ZERO),
                routing: TRIAL_ROUTING,
                prices: trial.prices,
                read: trial.read,
            },
        )
        .await?;
        job_id = prepared.job_id;
    }
    ledger
        .record_trial(job_id, trial.of_job, trial.spec.size, trial.spec.seed)
        .await?;
    Ok(PreparedTrial { job_id, rows_file })
}

/// A trial budget split between the models in proportion to each one's table cost of `rows`
/// images (Flash's share rounded down to a whole cent, so both shares read as people write
/// amounts; Photon 1 gets the rest), so a short budget trims both models' samples alike and the
/// pairs stay pairs.
pub fn split_budget(budget: Option<Money>, rows: u64, prices: PriceTable) -> (Option<Money>, Option<Money>) {
    let Some(budget) = budget else {
        return (None, None);
    };
    let flash = i128::from(prices.photon_flash_1.times(rows).micros());
    let photon = i128::from(prices.photon_1.times(rows).micros());
    let total = flash + photon;
    let flash_share = if total == 0 {
        0
    } else {
        let exact = i64::try_from(i128::from(budget.micros()) * flash / total).unwrap_or(0);
        // A budget given in fractions of a cent keeps its exact share rather than none.
        let cent = 10_000;
        if exact >= cent {
            exact - exact % cent
        } else {
            exact
        }
    };
    let flash_share = Money::from_micros(flash_share);
    (Some(flash_share), Some(budget.saturating_sub(flash_share)))
}

/// The sampled rows as a JSONL job file: one image per row (`variants` 1), no model (the passes'
/// routing decides), the prompt's braces and bars escaped so it reads back as it is.
pub fn rows_file_text(rows: &[Row]) -> String {
    let mut text = String::new();
    for row in rows {
        let mut object = Map::new();
        object.insert("id".into(), json!(row.id));
        object.insert("prompt".into(), json!(escape_prompt(&row.prompt)));
        object.insert("aspect_ratio".into(), json!(row.aspect_ratio.as_str()));
        object.insert("variants".into(), json!(1));
        object.insert("format".into(), json!(row.format.as_str()));
        let refs = &row.refs;
        if !refs.image_ref.is_empty() {
            object.insert("image_ref".into(), json!(refs.image_ref));
        }
        if let Some(style) = &refs.style_ref {
            object.insert("style_ref".into(), json!(style));
        }
        if !refs.character_ref.is_empty() {
            object.insert(
                "character_ref".into(),
                json!({"identity0": {"images": refs.character_ref}}),
            );
        }
        if let Some(modify) = &refs.modify_image_ref {
            object.insert("modify_image_ref".into(), json!(modify));
        }
        if !row.metadata.is_empty() {
            object.insert("metadata".into(), json!(row.metadata));
        }
        text.push_str(&Value::Object(object).to_string());
        text.push('\n');
    }
    text
}

/// The prompt with `{`, `}` and `|` escaped, so the reader's prompt variables don't expand it again.
fn escape_prompt(prompt: &str) -> String {
    let mut escaped = String::with_capacity(prompt.len());
    for c in prompt.chars() {
        if matches!(c, '{' | '}' | '|') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rows_file_reads_back_as_the_rows_it_was_written_from() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("job.csv");
        std::fs::write(
            &file,
            "id,prompt,aspect_ratio,variants,model,group\n\
             a,\"a {red|blue} chair\",1:1,3,photon-1,g1\n\
             b,\"a lamp \\{lit\\}, a | bar\",9:16,1,,g2\n",
        )
        .unwrap();
        let options = ReadOptions::default();
        let mut rows = Vec::new();
        darkroom_jobs::read_job(&file, &options, |row| rows.push(row)).unwrap();
        let back_file = dir.path().join("back.jsonl");
        std::fs::write(&back_file, rows_file_text(&rows)).unwrap();
        let mut back = Vec::new();
        let report = darkroom_jobs::read_job(&back_file, &options, |row| back.push(row)).unwrap();
        assert_eq!(report.error_count, 0, "{report:?}");
        assert_eq!(back.len(), rows.len());
        for (before, after) in rows.iter().zip(&back) {
            assert_eq!(
                (&after.id, &after.prompt, after.aspect_ratio, &after.metadata),
                (&before.id, &before.prompt, before.aspect_ratio, &before.metadata)
            );
            assert_eq!((after.variants, after.model), (1, None));
        }
    }

    #[test]
    fn a_budget_is_split_in_proportion_and_adds_up_to_the_whole() {
        let prices = PriceTable::default();
        let budget = Money::from_micros(1_000_000);
        let (flash, photon) = split_budget(Some(budget), 10, prices);
        let (flash, photon) = (flash.unwrap(), photon.unwrap());
        assert_eq!(flash + photon, budget);
        let exact = 1_000_000 * prices.photon_flash_1.micros()
            / (prices.photon_flash_1.micros() + prices.photon_1.micros());
        assert_eq!(flash.micros(), exact - exact % 10_000, "rounded down to a cent");
        assert!(exact - flash.micros() < 10_000);
        assert_eq!(split_budget(None, 10, prices), (None, None));
    }
}
