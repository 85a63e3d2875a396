//! Select files as `promote`, `reframe` and `export` read them (`--select FILE`, `export --kept`):
//! the file read with the OS's reason and a hint naming who writes it, a file that chooses nothing
//! refused, and each id the ledger can't use named with its line in the file.

use std::path::{Path, PathBuf};

use darkroom_engine::promote::{read_selection_lines, SelectedId};

use crate::exit::{Exit, Failure};

/// A select file read: its ids in file order, each with its line.
#[derive(Debug)]
pub struct SelectFile {
    path: PathBuf,
    ids: Vec<SelectedId>,
}

impl SelectFile {
    /// Reads `path`. `job_dir` is `OUT/JOB`, where the review page's Export writes `select.csv`;
    /// `what` names what an id chooses, for the message of a file that chooses nothing (`preview`,
    /// `image`); `nothing` ends that message (`nothing was spent`).
    ///
    /// # Errors
    /// Bad input (exit 2), nothing spent: the file can't be read (with the OS's reason), is not a
    /// select file, or chooses nothing.
    pub fn read(path: &Path, job_dir: &Path, what: &str, nothing: &str) -> anyhow::Result<SelectFile> {
        let ids = read_selection_lines(path)
            .map_err(|e| Failure::new(Exit::BadInput, e.to_string()).with_hint(writer_hint(job_dir)))?;
        if ids.is_empty() {
            return Err(Failure::new(
                Exit::BadInput,
                format!(
                    "the select file {} chooses no {what} (no id, or none marked in its keep column); {nothing}",
                    path.display()
                ),
            )
            .with_hint("mark rows with y in the keep column, or export a selection from `darkroom review`")
            .into());
        }
        Ok(SelectFile {
            path: path.to_path_buf(),
            ids,
        })
    }

    /// The ids, in file order.
    pub fn ids(&self) -> Vec<String> {
        self.ids.iter().map(|s| s.id.clone()).collect()
    }

    /// A problem line that begins with an id of the file (`ID: why`, or `id "ID": why`), prefixed
    /// with the file and the id's line: `select.csv, line 4: ID: why`. A line naming no id of the
    /// file is as given.
    pub fn locate(&self, problem: &str) -> String {
        let names = |id: &str| {
            problem.starts_with(&format!("{id}: ")) || problem.starts_with(&format!("id {id:?}: "))
        };
        let found = self
            .ids
            .iter()
            .filter(|s| names(&s.id))
            .max_by_key(|s| s.id.len());
        match found {
            Some(s) => format!("{}, line {}: {problem}", self.path.display(), s.line),
            None => problem.to_string(),
        }
    }
}

/// Where a select file comes from, for a hint: `job_dir` is `OUT/JOB`.
pub fn writer_hint(job_dir: &Path) -> String {
    let job = job_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(
        "the review page's Export button (`darkroom review {}`) writes {}; manifest.csv with its \
         keep column filled (y) works too",
        crate::commands::hints::quoted(&job),
        job_dir.join("select.csv").display()
    )
}
