//! `darkroom export JOB`: the job's deliverable as a folder (`OUT/JOB/export/`) or a zip file:
//! the images, `manifest.csv` and `report.html`. Glue only: the choice of images, the checks and
//! the atomic writing are `darkroom_engine::export`'s, the report `darkroom_review::report`'s.

use std::path::{Path, PathBuf};

use darkroom_engine::export::{self, Destination, ExportError};

use crate::commands::hints;
use crate::commands::select::SelectFile;
use crate::exit::{Exit, Failure};

/// The flags of `darkroom export` (its help text is on `Command::Export` in `main.rs`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job's name (as `darkroom status` lists it).
    pub job: String,
    /// Only the previews kept in review's export, OUT/JOB/select.csv (each as its done final when
    /// it has one).
    #[arg(long)]
    pub kept: bool,
    /// Like --kept, with another select file (review's export, or manifest.csv with its keep
    /// column filled).
    #[arg(long, value_name = "FILE", conflicts_with = "kept")]
    pub select: Option<PathBuf>,
    /// Write one zip file instead of the folder OUT/JOB/export/ (its files under a folder named
    /// after the job).
    #[arg(long, value_name = "FILE")]
    pub zip: Option<PathBuf>,
    /// The output directory the job ran with: select.csv and the export folder are under OUT/JOB/.
    #[arg(long, value_name = "DIR", env = crate::config::env::OUT, default_value = "out")]
    pub out: PathBuf,
    /// The ledger file.
    #[arg(long, value_name = "PATH", env = crate::config::env::DB, default_value = "darkroom.db")]
    pub db: PathBuf,
}

pub fn run(_config: Option<&Path>, args: Args) -> anyhow::Result<Exit> {
    // Before the job's lock, whose file would otherwise appear beside the missing ledger.
    crate::commands::require_ledger(&args.db)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<Exit> {
    let job_dir = args.out.join(&args.job);
    let select = match (&args.select, args.kept) {
        (Some(file), _) => Some(file.clone()),
        (None, true) => Some(job_dir.join("select.csv")),
        (None, false) => None,
    };
    let file = match &select {
        Some(path) => Some(SelectFile::read(path, &job_dir, "image", "nothing was written")?),
        None => None,
    };
    let kept = file.as_ref().map(SelectFile::ids);
    // A run or a promotion of the job replaces images: none runs while they are copied.
    let _lock = crate::commands::lock_job(&args.db, &args.job)?;
    let (ledger, job_id) = crate::commands::promote::open_job(&args.db, &args.job).await?;
    let chosen = export::choose(&ledger, job_id, &args.job, kept.as_deref()).await;
    let chosen = chosen.map_err(|e| refusal(e, &args, file.as_ref()))?;
    let columns = ledger.metadata_keys(job_id).await?;
    let mut report = darkroom_review::report::build(&ledger, job_id, &args.job).await?;
    ledger.close().await;
    report.pin_to_last_change();
    let html = {
        let job_dir = job_dir.clone();
        tokio::task::spawn_blocking(move || report.to_html(&job_dir)).await?
    };
    let destination = match &args.zip {
        Some(file) => Destination::Zip(file.clone()),
        None => Destination::Folder(job_dir.join("export")),
    };
    let extra = vec![("report.html".to_string(), html.into_bytes())];
    let exported = export::write(chosen, columns, extra, destination.clone(), args.job.clone())
        .await
        .map_err(|e| refusal(e, &args, None))?;
    let reframes = match exported.reframes {
        0 => String::new(),
        n => format!("{n} reframe(s), "),
    };
    eprintln!(
        "export: {} final(s), {} preview(s), {reframes}{} bytes of images, manifest.csv, report.html",
        exported.finals, exported.previews, exported.bytes
    );
    println!("{}", destination.path().display());
    Ok(Exit::Done)
}

/// The exit code and hint for an export that wrote nothing.
fn refusal(error: ExportError, args: &Args, file: Option<&SelectFile>) -> anyhow::Error {
    let message = match (&error, file) {
        // Each id the ledger can't use, named with its line in the select file.
        (ExportError::BadSelection { problems }, Some(file)) => {
            let lines: Vec<String> = problems.iter().map(|p| file.locate(p)).collect();
            format!("the selection can't be exported:\n  {}", lines.join("\n  "))
        }
        _ => error.to_string(),
    };
    let situation = hints::db_flag(&args.db);
    match error {
        ExportError::Selection(_) | ExportError::BadSelection { .. } => Failure::new(Exit::BadInput, message)
            .with_hint(select_hint(args))
            .into(),
        ExportError::Nothing { .. } => Failure::new(Exit::BadInput, message)
            .with_hint(format!(
                "`darkroom status {}{situation}` shows where the job stands",
                args.job
            ))
            .into(),
        ExportError::Damaged { .. } => Failure::new(Exit::SomeFailed, message)
            .with_hint(format!(
                "`darkroom verify {}{situation}` marks them; the job's next run (or promote) restores them",
                args.job
            ))
            .into(),
        ExportError::Destination { .. } => Failure::new(Exit::BadInput, message)
            .with_hint("nothing was written or replaced")
            .into(),
        ExportError::Engine(_) | ExportError::Write { .. } => anyhow::Error::new(error),
    }
}

fn select_hint(args: &Args) -> String {
    format!(
        "ids are previews of the job; {}",
        crate::commands::select::writer_hint(&args.out.join(&args.job))
    )
}
