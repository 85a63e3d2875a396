//! `darkroom audit`: the account's generations matched against the ledger on demand, the same
//! check every run ends with. Also the summary lines and JSON of an audit, which `run` and `promote`
//! print too.

use std::path::Path;

use darkroom_engine::audit::{Audit, Pricing};
use darkroom_jobs::Pass;

use crate::commands::{connect, PassArg, Upstream};
use crate::exit::{Exit, Failure};

/// Match the account's generations against the ledger: a generation the ledger does not know is
/// adopted by its task if that still needs an image, else recorded on it as an extra charge, so the
/// ledger equals the bill. Exits 0 when nothing was missing, 1 when something was recorded.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job to audit [default: every job of the ledger].
    pub job: Option<String>,
    /// Only this pass [default: every pass that has sent anything].
    #[arg(long, value_enum)]
    pub pass: Option<PassArg>,
    /// Read generations created since this time: RFC 3339 (2026-11-30T09:00:00Z) or a duration ago
    /// (90m, 2h) [default: the pass's first create].
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Print the findings as JSON lines (one per job and pass) on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub upstream: Upstream,
}

pub fn run(config_file: Option<&Path>, args: Args) -> anyhow::Result<Exit> {
    let since = match &args.since {
        None => None,
        Some(text) => Some(parse_since(text).map_err(|message| Failure::new(Exit::BadInput, message))?),
    };
    // The config says how the upstream is reached (`[luma]` timeouts).
    let settings = crate::config::resolve(config_file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(audit_async(args, since, settings))
}

/// `--since` as Unix milliseconds: an RFC 3339 time, or a duration before now.
fn parse_since(text: &str) -> Result<i64, String> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(at.timestamp_millis());
    }
    match darkroom_engine::schedule_times::parse_duration(text) {
        Ok(ago) => Ok(darkroom_ledger::now_ms() - i64::try_from(ago.as_millis()).unwrap_or(i64::MAX / 2)),
        Err(_) => Err(format!(
            "--since {text:?} is neither an RFC 3339 time (2026-11-30T09:00:00Z) nor a duration ago (90m, 2h)"
        )),
    }
}

async fn audit_async(
    args: Args,
    since: Option<i64>,
    settings: crate::config::Settings,
) -> anyhow::Result<Exit> {
    let db = &args.upstream.db;
    let (ledger, jobs) = crate::commands::find_jobs(db, args.job.as_deref()).await?;
    let connection = connect(&args.upstream, &settings).await?;
    let passes: Vec<Pass> = match args.pass {
        Some(pass) => vec![pass.into()],
        None => Pass::ALL.to_vec(),
    };
    let mut recorded = false;
    for job in &jobs {
        // A run of this job settles its own creates; auditing beside it could take one in flight.
        let _lock = crate::commands::lock_job(db, &job.name)?;
        for pass in &passes {
            let Some(from) = (match since {
                // A job's reframe pass is audited only once it sent something.
                Some(_)
                    if *pass == Pass::Reframe && ledger.first_intent_at(job.id, *pass).await?.is_none() =>
                {
                    None
                }
                Some(since) => Some(since),
                None => ledger.first_intent_at(job.id, *pass).await?,
            }) else {
                continue; // this pass never sent anything
            };
            for (client, pricing) in clients_for(&ledger, &connection, &settings, job.id, *pass).await? {
                let audit =
                    darkroom_engine::audit::audit(&ledger, client.as_ref(), job.id, *pass, from, pricing)
                        .await?;
                recorded |= audit.record.recorded_anything();
                if args.json {
                    let mut line = audit_json(&audit);
                    line["job"] = job.name.clone().into();
                    line["provider"] = client.name().into();
                    println!("{line}");
                }
                eprintln!(
                    "{} {} on {}: {}",
                    job.name,
                    pass.as_str(),
                    client.name(),
                    describe(&audit)
                );
            }
        }
    }
    ledger.close().await;
    connection.stop().await;
    Ok(if recorded { Exit::SomeFailed } else { Exit::Done })
}

/// The providers to audit a pass on, each reading its own list for its own creates: the
/// connection's (charged at the tasks' prices), then every other provider the pass sent creates to
/// (charged at that provider's table). A provider whose key is not set is refused (exit 2).
async fn clients_for(
    ledger: &darkroom_ledger::Ledger,
    connection: &crate::commands::Connection,
    settings: &crate::config::Settings,
    job_id: i64,
    pass: Pass,
) -> anyhow::Result<Vec<(std::sync::Arc<dyn darkroom_provider::Provider>, Pricing)>> {
    use crate::config::provider::ProviderName;
    let mut clients = vec![(connection.client.clone(), Pricing::InForce)];
    let used = ledger.providers_used(job_id, pass).await?;
    for name in ProviderName::ALL {
        if name.as_str() == connection.client.name() || !used.iter().any(|u| u == name.as_str()) {
            continue;
        }
        let client = connection.client_for(name, settings).map_err(|error| {
            let why = error
                .downcast_ref::<Failure>()
                .map_or_else(|| format!("{error:#}"), |f| f.message.clone());
            Failure::new(
                Exit::BadInput,
                format!(
                    "this pass sent creates to {} and {why}, so its list can't be audited",
                    name.as_str()
                ),
            )
            .with_hint(format!(
                "give darkroom {0}'s key, or audit another pass (--pass)",
                name.as_str()
            ))
        })?;
        clients.push((client, Pricing::Table));
    }
    Ok(clients)
}

/// An audit's findings as JSON (stable field names: fields are only added).
pub fn audit_json(audit: &Audit) -> serde_json::Value {
    let r = &audit.record;
    serde_json::json!({
        "pass": r.pass,
        "since_ms": r.since_ms,
        "read": r.read_count,
        "adopted": r.adopted,
        "extra": r.extra,
        "extra_charged": audit.extra_charged(),
        "foreign": r.foreign_count,
        "foreign_ids": audit.foreign_ids,
        "left_to_open_creates": r.left_count,
        "complete": r.complete,
        "stopped_early": audit.stopped_early,
    })
}

/// One line saying what an audit found.
pub fn describe(audit: &Audit) -> String {
    let r = &audit.record;
    let mut text = if r.adopted == 0 && r.extra == 0 {
        format!(
            "audit read {} generations; the ledger knew every one of ours",
            r.read_count
        )
    } else {
        format!(
            "audit read {} generations; {} adopted, {} recorded as extra charges ({}) that the upstream committed after we stopped waiting",
            r.read_count,
            r.adopted,
            r.extra,
            audit.extra_charged()
        )
    };
    if r.foreign_count > 0 {
        text.push_str(&format!(
            "; {} are not this job's (no create of this ledger matches them; not charged to it): {}",
            r.foreign_count,
            audit.foreign_ids.join(", ")
        ));
    }
    if r.left_count > 0 {
        text.push_str(&format!(
            "; {} left to the creates still open for them",
            r.left_count
        ));
    }
    if let Some(why) = &audit.stopped_early {
        text.push_str(&format!("; stopped early: {why}"));
    }
    text
}
