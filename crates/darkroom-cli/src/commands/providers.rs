//! What the chosen provider can make, said before anything is sent: a pass whose tasks ask for
//! what the provider can't do whole is refused (exit 2), each task named with its line and row.

use darkroom_jobs::Pass;
use darkroom_ledger::Ledger;

use crate::commands::{Connection, MAX_ERRORS_SHOWN};
use crate::exit::{Exit, Failure};

/// Refuses the pass (exit 2, nothing sent) when the provider can't make some of its tasks as
/// asked, printing each on stderr: `line N, row ID: PROVIDER can't make REASON; REASON`.
pub async fn refuse_incapable(
    ledger: &Ledger,
    connection: &Connection,
    job_id: i64,
    pass: Pass,
) -> anyhow::Result<()> {
    let provider = connection.client.as_ref();
    let incapable = darkroom_engine::capable::check_pass(ledger, provider, job_id, pass).await?;
    if incapable.is_empty() {
        return Ok(());
    }
    for task in incapable.iter().take(MAX_ERRORS_SHOWN) {
        let variant = if task.task_key == task.row_id {
            String::new()
        } else {
            format!(" ({})", task.task_key)
        };
        eprintln!(
            "line {}, row {}{variant}: {} can't make {}",
            task.line,
            task.row_id,
            provider.name(),
            task.reasons.join("; ")
        );
    }
    if incapable.len() > MAX_ERRORS_SHOWN {
        eprintln!("... and {} more", incapable.len() - MAX_ERRORS_SHOWN);
    }
    Err(Failure::new(
        Exit::BadInput,
        format!(
            "{} task(s) ask for what {} can't make; nothing was sent",
            incapable.len(),
            provider.name()
        ),
    )
    .with_hint("run them on a provider that can (`darkroom estimate FILE` lists which), or change those rows")
    .into())
}
