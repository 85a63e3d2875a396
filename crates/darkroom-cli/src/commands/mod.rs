//! One module per command: argument structs (clap) and the glue that runs them, plus the pieces
//! several commands share (the pass flag, the upstream connection, job names, row errors).

pub mod audit;
pub mod estimate;
pub mod pass;
pub mod progress;
pub mod promote;
pub mod report;
pub mod review;
pub mod run;
pub mod sim;
pub mod status;
pub mod validate;

use std::path::{Path, PathBuf};
use std::time::Duration;

use darkroom_jobs::Pass;
use darkroom_luma::{ApiKey, Client, ClientConfig};

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
    /// The ledger file.
    #[arg(long, value_name = "PATH", env = crate::config::env::DB, default_value = "darkroom.db")]
    pub db: PathBuf,
    /// The API's base URL [default: Luma's].
    #[arg(long, value_name = "URL", env = crate::config::env::BASE_URL)]
    pub base_url: Option<String>,
    /// Start the built-in simulator and run against it: no key, no cost (any base URL is ignored).
    #[arg(long)]
    pub sim: bool,
}

/// A client, and the in-process simulator when `--sim` started one.
#[derive(Debug)]
pub struct Connection {
    pub client: Client,
    sim: Option<darkroom_sim::SimHandle>,
}

impl Connection {
    pub async fn stop(self) {
        if let Some(sim) = self.sim {
            sim.shutdown().await;
        }
    }
}

/// Connects to the upstream the flags name: the simulator with `--sim`, else the base URL with the
/// key from `LUMAAI_API_KEY`. darkroom never falls back to the simulator silently.
pub async fn connect(upstream: &Upstream) -> anyhow::Result<Connection> {
    let (base_url, api_key, sim) = if upstream.sim {
        let sim = darkroom_sim::spawn(darkroom_sim::SimConfig::default()).await?;
        eprintln!("simulator: {}", sim.base_url());
        (sim.base_url(), ApiKey::new("simulator".to_string()), Some(sim))
    } else {
        let key = crate::config::api_key().ok_or_else(|| {
            Failure::new(Exit::BadInput, "LUMAAI_API_KEY is not set").with_hint(
                "export LUMAAI_API_KEY=..., or add --sim to run against the built-in simulator at no cost",
            )
        })?;
        (
            upstream
                .base_url
                .clone()
                .unwrap_or_else(|| LUMA_BASE_URL.to_string()),
            key,
            None,
        )
    };
    let client = Client::new(ClientConfig {
        base_url,
        api_key,
        connect_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(60),
        download_timeout: Duration::from_secs(120),
        user_agent: format!("darkroom/{}", env!("CARGO_PKG_VERSION")),
    })?;
    Ok(Connection { client, sim })
}

/// The job's name: `--job`, else the file's stem. Names become directory names, so they are held
/// to the same characters as row ids.
pub fn job_name_for(flag: Option<&str>, file: &Path) -> anyhow::Result<String> {
    let name = match flag {
        Some(name) => name.to_string(),
        None => file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let valid = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(Failure::new(
            Exit::BadInput,
            format!("job name {name:?} is not usable as a directory name"),
        )
        .with_hint("use --job NAME with letters, digits, '-', '_' and '.' (no leading dot)")
        .into());
    }
    Ok(name)
}

/// Parses a `--budget`-style amount of USD exactly (clap value parser; a bad value exits 2).
pub fn parse_usd(text: &str) -> Result<darkroom_jobs::Money, String> {
    darkroom_jobs::Money::parse_usd(text).map_err(|e| e.to_string())
}

/// Prints a job file's row errors on stderr: the first 50, then how many more.
pub fn print_row_errors(file: &Path, report: &darkroom_jobs::Report) {
    for error in report.errors.iter().take(MAX_ERRORS_SHOWN) {
        eprintln!("{}: {error}", file.display());
    }
    let shown = report.errors.len().min(MAX_ERRORS_SHOWN) as u64;
    if report.error_count > shown {
        eprintln!("... and {} more", report.error_count - shown);
    }
}
