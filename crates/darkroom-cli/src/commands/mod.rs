//! One module per command: argument structs (clap) and the glue that runs them, plus the pieces
//! several commands share (the pass flag, the upstream connection, job names, row errors).

pub mod audit;
pub mod budget;
pub mod callbacks;
pub mod completions;
pub mod config;
pub mod estimate;
pub mod export;
pub mod fal;
pub mod hints;
pub mod man;
pub mod pass;
pub mod prices;
pub mod progress;
pub mod promote;
pub mod providers;
pub mod reframe;
pub mod report;
pub mod review;
pub mod route;
pub mod run;
pub mod select;
pub mod sim;
pub mod status;
pub mod trial;
pub mod validate;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use darkroom_jobs::Pass;
use darkroom_luma::{ApiKey, ClientConfig, LumaProvider};
use darkroom_provider::Provider;

use crate::exit::{Exit, Failure};

/// The upstream's documented base URL.
pub const LUMA_BASE_URL: &str = "https://api.lumalabs.ai/dream-machine/v1";

/// Errors printed before "... and N more".
pub const MAX_ERRORS_SHOWN: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PassArg {
    Preview,
    Final,
}

impl From<PassArg> for Pass {
    fn from(pass: PassArg) -> Pass {
        match pass {
            PassArg::Preview => Pass::Preview,
            PassArg::Final => Pass::Final,
        }
    }
}

/// Where the ledger is and which upstream to talk to.
#[derive(Debug, Clone, clap::Args)]
pub struct Upstream {
    /// The ledger file. Any number of different jobs, in as many processes, may share one.
    #[arg(long, value_name = "PATH", env = crate::config::env::DB, default_value = "darkroom.db")]
    pub db: PathBuf,
    /// Luma's API base URL (Replicate's comes from REPLICATE_BASE_URL) [default: Luma's].
    #[arg(long, value_name = "URL", env = crate::config::env::BASE_URL)]
    pub base_url: Option<String>,
    /// Start the built-in simulator and run against it: no key, no cost (any base URL is ignored).
    /// Its account is kept in .darkroom/sim/ beside the ledger, so commands on one ledger share it.
    #[arg(long)]
    pub sim: bool,
    /// The provider: luma (LUMAAI_API_KEY), replicate (REPLICATE_API_TOKEN, REPLICATE_BASE_URL) or fal
    /// (FAL_KEY; hosts from DARKROOM_FAL_QUEUE_URL and DARKROOM_FAL_API_URL; priced per megapixel);
    /// rows it can't make whole are refused before anything is sent [default: config provider.default]
    #[arg(long, value_enum, value_name = "NAME")]
    pub provider: Option<crate::config::provider::ProviderName>,
}

/// The provider, and the in-process simulator when `--sim` started one.
#[derive(Debug)]
pub struct Connection {
    pub client: Arc<dyn Provider>,
    /// The account the key and base URL make (never the key itself); `None` for a provider whose
    /// runs don't share limits through the ledger yet (fal.ai).
    pub account: Option<darkroom_engine::account::Account>,
    sim: Option<darkroom_sim::SimHandle>,
    /// How it was reached, so a client for another provider is reached the same way.
    upstream: Upstream,
}

impl Connection {
    /// The client of provider `name` reached as this connection is (the same simulator with
    /// `--sim`, else its key from the environment: exit 2 naming the variable when it is unset).
    pub fn client_for(
        &self,
        name: crate::config::provider::ProviderName,
        settings: &crate::config::Settings,
    ) -> anyhow::Result<Arc<dyn Provider>> {
        client_for(name, &self.upstream, settings, self.sim.as_ref())
    }

    /// The account provider `name`'s key and base URL make, reached as this connection is
    /// (`None` for fal.ai, or when its key is not set).
    pub fn account_of(
        &self,
        name: crate::config::provider::ProviderName,
    ) -> Option<darkroom_engine::account::Account> {
        account_for(name, &self.upstream, self.sim.as_ref())
    }

    /// The provider `--provider` named, if it named one.
    pub fn provider_flag(&self) -> Option<crate::config::provider::ProviderName> {
        self.upstream.provider
    }

    pub async fn stop(self) {
        if let Some(sim) = self.sim {
            sim.shutdown().await;
        }
    }
}

/// Connects to the provider the flags name (`--provider`, else `[provider] default`): the
/// simulator with `--sim`, else the provider's API with its key from the environment
/// (`LUMAAI_API_KEY`, `REPLICATE_API_TOKEN`) and the timeouts of its config section. darkroom never
/// falls back to the simulator silently.
pub async fn connect(upstream: &Upstream, settings: &crate::config::Settings) -> anyhow::Result<Connection> {
    let sim = if upstream.sim {
        Some(spawn_sim(&upstream.db).await?)
    } else {
        None
    };
    let client = client_for(
        settings.provider_name(upstream.provider),
        upstream,
        settings,
        sim.as_ref(),
    )?;
    let account = account_for(settings.provider_name(upstream.provider), upstream, sim.as_ref());
    Ok(Connection {
        client,
        account,
        sim,
        upstream: upstream.clone(),
    })
}

/// The client of provider `name`: the simulator's with `sim`, else the provider's API with its key
/// from the environment (exit 2, naming the variable, when it is not set).
pub fn client_for(
    name: crate::config::provider::ProviderName,
    upstream: &Upstream,
    settings: &crate::config::Settings,
    sim: Option<&darkroom_sim::SimHandle>,
) -> anyhow::Result<Arc<dyn Provider>> {
    use crate::config::provider::{self as choice, ProviderName};
    Ok(match (name, sim) {
        (ProviderName::Luma, Some(sim)) => {
            eprintln!("simulator: {}", sim.base_url());
            provider(sim.base_url(), ApiKey::new("simulator".to_string()), settings)?
        }
        (ProviderName::Luma, None) => {
            let key = crate::config::api_key().ok_or_else(|| {
                Failure::new(Exit::BadInput, "LUMAAI_API_KEY is not set").with_hint(
                    "export LUMAAI_API_KEY=..., or add --sim to run against the built-in simulator at no cost",
                )
            })?;
            let base_url = upstream
                .base_url
                .clone()
                .unwrap_or_else(|| LUMA_BASE_URL.to_string());
            provider(base_url, key, settings)?
        }
        (ProviderName::Replicate, Some(sim)) => {
            eprintln!("simulator: {}", sim.replicate_base_url());
            let token = darkroom_replicate::ApiToken::new("simulator".to_string());
            replicate_provider(sim.replicate_base_url(), token, settings)?
        }
        (ProviderName::Fal, _) => fal::provider(sim, settings.fal.prices())?,
        (ProviderName::Replicate, None) => {
            let token = choice::replicate_token().ok_or_else(|| {
                Failure::new(Exit::BadInput, "REPLICATE_API_TOKEN is not set").with_hint(
                    "export REPLICATE_API_TOKEN=..., or add --sim to run against the built-in simulator at no cost",
                )
            })?;
            replicate_provider(choice::replicate_base_url(), token, settings)?
        }
    })
}

/// The account a connection's key and base URL make (the key is hashed, never kept): fal.ai's by
/// its key and queue host, as Luma's and Replicate's by theirs.
fn account_for(
    name: crate::config::provider::ProviderName,
    upstream: &Upstream,
    sim: Option<&darkroom_sim::SimHandle>,
) -> Option<darkroom_engine::account::Account> {
    use crate::config::provider::{self as choice, ProviderName};
    use darkroom_engine::account::Account;
    match (name, sim) {
        (ProviderName::Luma, Some(sim)) => Some(Account::new(None, "luma", &sim.base_url(), "simulator")),
        (ProviderName::Luma, None) => {
            let base_url = upstream.base_url.as_deref().unwrap_or(LUMA_BASE_URL);
            crate::config::api_key_text().map(|key| Account::new(None, "luma", base_url, &key))
        }
        (ProviderName::Replicate, Some(sim)) => Some(Account::new(
            None,
            "replicate",
            &sim.replicate_base_url(),
            "simulator",
        )),
        (ProviderName::Replicate, None) => choice::replicate_token_text()
            .map(|token| Account::new(None, "replicate", &choice::replicate_base_url(), &token)),
        (ProviderName::Fal, Some(sim)) => Some(Account::new(None, "fal", &sim.fal_queue_url(), "simulator")),
        (ProviderName::Fal, None) => crate::commands::fal::key_text()
            .map(|(key, queue_url)| Account::new(None, "fal", &queue_url, &key)),
    }
}

/// Starts the simulator of `--sim`, its account kept beside the ledger `db`.
async fn spawn_sim(db: &Path) -> anyhow::Result<darkroom_sim::SimHandle> {
    let state_dir = crate::config::sim_state_dir(db);
    darkroom_sim::spawn(crate::config::sim_config(db)?)
        .await
        .map_err(|e| match e {
            darkroom_sim::SimError::State(darkroom_sim::StateError::Unreadable { .. }) => anyhow::Error::new(
                Failure::new(Exit::RecordsFailed, e.to_string()).with_hint(format!(
                    "the simulated account is damaged; delete {} to start a fresh one (the ledger \
                         is untouched; its simulated generations are forgotten)",
                    state_dir.display()
                )),
            ),
            e => e.into(),
        })
}

/// The provider for `base_url` and `api_key`, with the resolved settings' timeouts (`[luma]`) and
/// price table. A base URL that is no `http(s)` URL is bad input (exit 2).
pub fn provider(
    base_url: String,
    api_key: ApiKey,
    settings: &crate::config::Settings,
) -> anyhow::Result<Arc<dyn Provider>> {
    let timeouts = &settings.luma;
    let config = ClientConfig {
        connect_timeout: timeouts.connect_timeout,
        request_timeout: timeouts.request_timeout,
        download_timeout: timeouts.download_timeout,
        ..ClientConfig::new(base_url, api_key)
    };
    let provider = LumaProvider::new(config).map_err(|e| {
        Failure::new(Exit::BadInput, e.to_string())
            .with_hint("--base-url or LUMAAI_BASE_URL is the API's base URL, e.g. http://127.0.0.1:8765/dream-machine/v1")
    })?;
    Ok(Arc::new(
        provider.with_prices(settings.luma_prices.unwrap_or(settings.prices)),
    ))
}

/// Replicate at `base_url` with `token`, with `[replicate]`'s timeouts and price table. A base URL
/// that is no `http(s)` URL is bad input (exit 2).
pub fn replicate_provider(
    base_url: String,
    token: darkroom_replicate::ApiToken,
    settings: &crate::config::Settings,
) -> anyhow::Result<Arc<dyn Provider>> {
    let section = &settings.replicate;
    let config = darkroom_replicate::ClientConfig {
        connect_timeout: section.connect_timeout,
        request_timeout: section.request_timeout,
        download_timeout: section.download_timeout,
        ..darkroom_replicate::ClientConfig::new(base_url, token)
    };
    let provider = darkroom_replicate::ReplicateProvider::new(config).map_err(|e| {
        Failure::new(Exit::BadInput, e.to_string())
            .with_hint("REPLICATE_BASE_URL is the API's root, e.g. https://api.replicate.com")
    })?;
    Ok(Arc::new(provider.with_prices(section.prices)))
}

/// The job's name: `--job`, else the file's stem. Names become directory names, so they follow
/// the rule of row ids (`darkroom_jobs::valid_id`, device names such as `CON` included).
pub fn job_name_for(flag: Option<&str>, file: &Path) -> anyhow::Result<String> {
    let name = match flag {
        Some(name) => name.to_string(),
        None => file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    if !darkroom_jobs::valid_id(&name) {
        return Err(Failure::new(
            Exit::BadInput,
            format!("job name {name:?} is not usable as a directory name"),
        )
        .with_hint(
            "use --job NAME with letters, digits, '-', '_' and '.' (no leading dot, not a device name such as CON)",
        )
        .into());
    }
    Ok(name)
}

/// Takes the job's run lock beside the ledger: another process running the job is the user's to
/// resolve (exit 2); a lock file that can't be created is a disk failure (exit 7).
pub fn lock_job(db: &Path, job: &str) -> anyhow::Result<darkroom_engine::lock::JobLock> {
    use darkroom_engine::lock::{JobLock, LockError};
    JobLock::acquire(db, job).map_err(|e| match e {
        LockError::Busy { .. } => Failure::new(Exit::BadInput, e.to_string())
            .with_hint("wait for it to finish, or stop it with Ctrl-C")
            .into(),
        LockError::Io { .. } => anyhow::Error::new(e),
    })
}

/// Opens the ledger, naming it in the error; a ledger that can't be opened exits 7.
pub async fn open_ledger(db: &Path) -> anyhow::Result<darkroom_ledger::Ledger> {
    use anyhow::Context as _;
    darkroom_ledger::Ledger::open(db)
        .await
        .with_context(|| format!("could not open the ledger {}", db.display()))
}

/// Refuses a `--db` that does not exist (exit 2, naming the path) for the commands that read a job
/// already made: opening it would create an empty ledger (and its lock file) where the user meant
/// another one. Only `run` (and `prices --check`, which records what it observes) make a ledger.
pub fn require_ledger(db: &Path) -> anyhow::Result<()> {
    if db.exists() {
        return Ok(());
    }
    Err(
        Failure::new(Exit::BadInput, format!("no ledger at {}", db.display()))
            .with_hint("run a job first, or point --db at its ledger")
            .into(),
    )
}

/// Opens the ledger and finds the named job, or every job when none is named: a missing ledger or
/// an unknown job is bad input (exit 2), a ledger that fails is the ledger's (exit 7). A missing
/// ledger is never created.
pub async fn find_jobs(
    db: &Path,
    job: Option<&str>,
) -> anyhow::Result<(darkroom_ledger::Ledger, Vec<darkroom_ledger::JobRecord>)> {
    require_ledger(db)?;
    let ledger = open_ledger(db).await?;
    let jobs = match job {
        Some(name) => match ledger.job(name).await {
            Ok(record) => vec![record],
            Err(darkroom_ledger::LedgerError::NoSuchJob(_)) => {
                return Err(Failure::new(
                    Exit::BadInput,
                    format!("no job named {name:?} in {}", db.display()),
                )
                .with_hint(format!(
                    "`darkroom status{}` lists the jobs of a ledger",
                    hints::db_flag(db)
                ))
                .into())
            }
            Err(e) => return Err(e.into()),
        },
        None => ledger.jobs().await?,
    };
    Ok((ledger, jobs))
}

/// The exit a failed budget policy (`darkroom_engine::budget`) takes: a budget below what is
/// already spent is bad input (exit 2), any other ledger error is the ledger's (exit 7).
pub fn budget_error(error: darkroom_ledger::LedgerError) -> anyhow::Error {
    match error {
        e @ darkroom_ledger::LedgerError::BudgetBelowSpend { .. } => {
            Failure::new(Exit::BadInput, e.to_string())
                .with_hint("a budget can be raised, not lowered below spend")
                .into()
        }
        e => e.into(),
    }
}

/// Parses a `--budget`-style amount of USD exactly (clap value parser; a bad value exits 2).
pub fn parse_usd(text: &str) -> Result<darkroom_jobs::Money, String> {
    darkroom_jobs::Money::parse_usd(text).map_err(|e| e.to_string())
}

/// Prints on stderr the rows whose derived name darkroom made unique: the first 50, then how many
/// more. Their images are written under the new names.
pub fn print_renamed(file: &Path, report: &darkroom_jobs::Report) {
    for notice in report.renamed.iter().take(MAX_ERRORS_SHOWN) {
        eprintln!("{}: note: {notice}", file.display());
    }
    let shown = report.renamed.len().min(MAX_ERRORS_SHOWN) as u64;
    if report.renamed_count > shown {
        eprintln!("... and {} more renamed", report.renamed_count - shown);
    }
}

/// Prints a job file's row errors on stderr: the first 50, then how many more.
/// What is wrong with an invalid job file, in one phrase after its name: `has no rows` when it
/// holds none (its header alone, or nothing), else `has N invalid row(s)`.
pub fn invalid_file(file: &Path, report: &darkroom_jobs::Report) -> String {
    if report.records == 0 {
        format!("{} has no rows", file.display())
    } else {
        format!("{} has {} invalid row(s)", file.display(), report.error_count)
    }
}

pub fn print_row_errors(file: &Path, report: &darkroom_jobs::Report) {
    for error in report.errors.iter().take(MAX_ERRORS_SHOWN) {
        eprintln!("{}: {error}", file.display());
    }
    let shown = report.errors.len().min(MAX_ERRORS_SHOWN) as u64;
    if report.error_count > shown {
        eprintln!("... and {} more", report.error_count - shown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_name_follows_the_row_id_rule_device_names_included() {
        let file = Path::new("jobs/vases.csv");
        assert_eq!(job_name_for(None, file).unwrap(), "vases");
        assert_eq!(
            job_name_for(Some("spring-2026.v2"), file).unwrap(),
            "spring-2026.v2"
        );
        for bad in [
            "CON",
            "nul",
            "com1.txt",
            "LPT9",
            ".hidden",
            "a/b",
            "",
            &"x".repeat(101),
        ] {
            let error = job_name_for(Some(bad), file).unwrap_err();
            let failure = error.downcast_ref::<Failure>().expect("bad input");
            assert_eq!(failure.exit, Exit::BadInput, "{bad:?}");
        }
        // A file named like a device gives no usable name either.
        assert!(job_name_for(None, Path::new("jobs/aux.csv")).is_err());
    }
}
