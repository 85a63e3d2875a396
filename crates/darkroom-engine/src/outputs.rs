//! The job's output files in `OUT/JOB/`, rewritten from the ledger at the end of every run:
//! `results.jsonl` (one line per done task), `errors.jsonl` (failed, blocked and skipped tasks with
//! their reasons) and `manifest.csv` (one row per task, with a `keep` column for review: blank, or
//! what the user wrote in it, which a rewrite keeps).
//!
//! They are views of the ledger, so a killed run loses nothing: the next run writes them again.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use darkroom_jobs::{Metadata, Money, Pass};
use darkroom_ledger::{Ledger, ResultRecord};
use serde_json::json;

use crate::images::write_atomically;
use crate::EngineError;

/// The paths of the files written.
#[derive(Debug, Clone)]
pub struct OutputFiles {
    pub results: PathBuf,
    pub errors: PathBuf,
    pub manifest: PathBuf,
}

const PAGE: i64 = 5_000;

/// Rewrites the three output files of a job from the ledger, both passes.
pub async fn write_outputs(ledger: &Ledger, job_id: i64, job_dir: &Path) -> Result<OutputFiles, EngineError> {
    let mut results = Vec::new();
    let mut errors = Vec::new();
    let mut records = Vec::new();
    let mut metadata_columns = BTreeSet::new();
    for pass in [Pass::Preview, Pass::Final] {
        let mut after = 0;
        loop {
            let page = ledger.results(job_id, pass, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for record in page {
                let metadata: Metadata = serde_json::from_str(&record.metadata_json).unwrap_or_default();
                metadata_columns.extend(metadata.keys().cloned());
                match record.state.as_str() {
                    "done" => writeln!(results, "{}", result_line(&record, &metadata)).ok(),
                    "failed" | "blocked" | "skipped" => {
                        writeln!(errors, "{}", error_line(&record, &metadata)).ok()
                    }
                    _ => None,
                };
                records.push((record, metadata));
            }
        }
    }
    let files = OutputFiles {
        results: job_dir.join("results.jsonl"),
        errors: job_dir.join("errors.jsonl"),
        manifest: job_dir.join("manifest.csv"),
    };
    let keeps = existing_keeps(&files.manifest);
    let manifest = manifest_csv(&records, &metadata_columns, &keeps);
    for (path, bytes) in [
        (&files.results, &results),
        (&files.errors, &errors),
        (&files.manifest, &manifest),
    ] {
        write_atomically(path, bytes).map_err(|source| EngineError::Output {
            path: path.clone(),
            source,
        })?;
    }
    Ok(files)
}

fn result_line(r: &ResultRecord, metadata: &Metadata) -> serde_json::Value {
    let mut line = json!({
        "id": r.task_key,
        "row_id": r.row_id,
        "variant": r.variant,
        "pass": r.pass,
        "model": r.model,
        "status": if r.cached != 0 { "cached" } else { "done" },
        "path": r.output_path,
        "cost": Money::from_micros(r.cost_micros),
        "cost_micros": r.cost_micros,
        "generation_id": r.generation_id,
        "attempts": r.attempts,
        "latency_ms": r.latency_ms,
        "prompt": r.prompt,
        "aspect_ratio": r.aspect_ratio,
        "metadata": metadata,
    });
    if let Some(preview) = &r.preview_key {
        // A final made by promotion names its preview and how the preview was used.
        line["preview"] = json!(preview);
        line["reference"] = json!(r.reference_note);
    }
    line
}

fn error_line(r: &ResultRecord, metadata: &Metadata) -> serde_json::Value {
    json!({
        "id": r.task_key,
        "row_id": r.row_id,
        "pass": r.pass,
        "model": r.model,
        "status": r.state,
        "reason": r.reason,
        "attempts": r.attempts,
        "cost_micros": r.cost_micros,
        "prompt": r.prompt,
        "metadata": metadata,
    })
}

/// `keep` cells a user filled in the manifest already on disk, by (id, pass): a rewrite keeps them.
pub fn existing_keeps(manifest: &Path) -> HashMap<(String, String), String> {
    let mut keeps = HashMap::new();
    let Ok(mut reader) = csv::ReaderBuilder::new().flexible(true).from_path(manifest) else {
        return keeps;
    };
    let Ok(headers) = reader.headers().cloned() else {
        return keeps;
    };
    let column = |name: &str| headers.iter().position(|h| h == name);
    let (Some(id), Some(pass), Some(keep)) = (column("id"), column("pass"), column("keep")) else {
        return keeps;
    };
    for record in reader.records().flatten() {
        if let (Some(i), Some(p), Some(k)) = (record.get(id), record.get(pass), record.get(keep)) {
            if !k.trim().is_empty() {
                keeps.insert((i.to_string(), p.to_string()), k.to_string());
            }
        }
    }
    keeps
}

fn manifest_csv(
    records: &[(ResultRecord, Metadata)],
    metadata_columns: &BTreeSet<String>,
    keeps: &HashMap<(String, String), String>,
) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = [
        "id",
        "pass",
        "model",
        "status",
        "path",
        "cost",
        "prompt",
        "aspect_ratio",
        "reason",
    ]
    .map(String::from)
    .to_vec();
    header.extend(metadata_columns.iter().cloned());
    header.push("keep".into());
    let _ = writer.write_record(&header);
    for (r, metadata) in records {
        let mut row = vec![
            r.task_key.clone(),
            r.pass.clone(),
            r.model.clone(),
            if r.state == "done" && r.cached != 0 {
                "cached".into()
            } else {
                r.state.clone()
            },
            r.output_path.clone().unwrap_or_default(),
            Money::from_micros(r.cost_micros).to_decimal_string(),
            r.prompt.clone(),
            r.aspect_ratio.clone(),
            r.reason.clone().unwrap_or_default(),
        ];
        row.extend(
            metadata_columns
                .iter()
                .map(|c| metadata.get(c).cloned().unwrap_or_default()),
        );
        row.push(
            keeps
                .get(&(r.task_key.clone(), r.pass.clone()))
                .cloned()
                .unwrap_or_default(),
        );
        let _ = writer.write_record(&row);
    }
    writer.into_inner().unwrap_or_default()
}
