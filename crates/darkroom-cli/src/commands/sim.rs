//! `darkroom sim`: a Luma-compatible simulator on loopback, until Ctrl-C. Prints the base URL to use
//! as its first line on stdout.

use std::time::Duration;

use darkroom_jobs::Money;
use darkroom_sim::{Faults, RateLimitOnce, RateWindow, RefuseCreates, SimConfig};

use crate::config::env;
use crate::exit::{Exit, Failure};

/// Run a Luma-compatible simulator on 127.0.0.1: for tests, demos and dry runs at zero cost.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The port (0 picks a free one).
    #[arg(long, default_value_t = 8765)]
    pub port: u16,
    /// Accept only this bearer token (any token otherwise).
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Creates per minute per account (0 turns the limit off).
    #[arg(long, default_value_t = 80)]
    pub rate_per_minute: u32,
    /// How the per-minute limit counts: a continuously refilling token bucket, at most N in any 60 s,
    /// or one create every 60/N s with no burst (spacing).
    #[arg(long, value_enum, default_value_t = WindowArg::Bucket)]
    pub rate_window: WindowArg,
    /// Concurrent non-terminal generations (0 turns the limit off).
    #[arg(long, default_value_t = 40)]
    pub max_concurrent: u32,
    /// Don't send Retry-After with 429s.
    #[arg(long)]
    pub no_retry_after: bool,
    /// Multiplies every latency and the rate window (0.1: ten times faster).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// photon-flash-1 latency range in seconds, MIN-MAX.
    #[arg(long, value_name = "MIN-MAX", default_value = "0.1-0.5")]
    pub flash_latency: String,
    /// photon-1 latency range in seconds, MIN-MAX.
    #[arg(long, value_name = "MIN-MAX", default_value = "2-5")]
    pub photon_latency: String,
    /// The account's starting credit in USD.
    #[arg(long, value_name = "USD", default_value = "100")]
    pub credits: String,
    /// What the account is billed per photon-1 image, USD (to run against prices other than
    /// darkroom's table).
    #[arg(long, value_name = "USD", default_value = "0.015")]
    pub price_photon_1: String,
    /// What the account is billed per photon-flash-1 image, USD.
    #[arg(long, value_name = "USD", default_value = "0.004")]
    pub price_photon_flash_1: String,
    /// The status for a create the credit can't pay for.
    #[arg(long, value_parser = ["400", "402"], default_value = "402")]
    pub insufficient_credit_status: String,
    /// A fault profile: none, flaky or hostile. Single rates below override it.
    #[arg(long, value_parser = ["none", "flaky", "hostile"], default_value = "none")]
    pub faults: String,
    /// Rate of 500s on create before accepting (0 to 1).
    #[arg(long, value_name = "P")]
    pub create_5xx: Option<f64>,
    /// Rate of creates accepted and charged, then the connection dropped.
    #[arg(long, value_name = "P")]
    pub create_dropped: Option<f64>,
    /// Rate of 500s on get and list.
    #[arg(long, value_name = "P")]
    pub get_5xx: Option<f64>,
    /// Rate of slow gets and lists.
    #[arg(long, value_name = "P")]
    pub get_slow: Option<f64>,
    /// Rate of generations failing with a retryable reason.
    #[arg(long, value_name = "P")]
    pub generation_failed: Option<f64>,
    /// Rate of generations blocked by moderation.
    #[arg(long, value_name = "P")]
    pub moderation: Option<f64>,
    /// Rate of generations stuck in dreaming forever.
    #[arg(long, value_name = "P")]
    pub stuck: Option<f64>,
    /// Rate of truncated image downloads.
    #[arg(long, value_name = "P")]
    pub download_truncated: Option<f64>,
    /// Rate of failed (500) image downloads.
    #[arg(long, value_name = "P")]
    pub download_failed: Option<f64>,
    /// Rate of creates that start a storm of 429s.
    #[arg(long, value_name = "P")]
    pub rate_limit_storm: Option<f64>,
    /// Rate of callback deliveries never sent.
    #[arg(long, value_name = "P")]
    pub callback_lost: Option<f64>,
    /// Rate of callback deliveries sent twice.
    #[arg(long, value_name = "P")]
    pub callback_duplicated: Option<f64>,
    /// Rate of signed webhook deliveries (Replicate's, fal's) sent without their signature.
    #[arg(long, value_name = "P")]
    pub webhook_unsigned: Option<f64>,
    /// Rate of signed webhook deliveries sent with a signature made by another key.
    #[arg(long, value_name = "P")]
    pub webhook_forged: Option<f64>,
    /// Rate of signed webhook deliveries sent as replays: validly signed, ten minutes old.
    #[arg(long, value_name = "P")]
    pub webhook_replayed: Option<f64>,
    /// Answer every create 429 with a monthly-usage-limit body and `Retry-After: 1`, as an account
    /// over its monthly spend cap (darkroom ends the run with exit 5).
    #[arg(long, conflicts_with = "rate_limited_forever")]
    pub monthly_limit_exceeded: bool,
    /// Answer every create 429 `Too many requests` with this Retry-After (e.g. 1s): rate limiting
    /// that never lets up.
    #[arg(long, value_name = "DURATION")]
    pub rate_limited_forever: Option<String>,
    /// Answer one create 429 with this Retry-After (e.g. 10s), and every create inside that pause
    /// too; `/sim/stats` counts creates that arrive inside a pause (`creates_inside_pause`).
    #[arg(long, value_name = "DURATION")]
    pub rate_limit_once: Option<String>,
    /// With --rate-limit-once: after this many creates were accepted.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "rate_limit_once")]
    pub rate_limit_once_after: u64,
    /// With --rate-limit-once: send the Retry-After as an HTTP date instead of seconds.
    #[arg(long, requires = "rate_limit_once")]
    pub rate_limit_once_as_date: bool,
    /// Rate of creates committed late: held unanswered for --late-commit-delay, then listed and
    /// billed (whether or not the client is still waiting).
    #[arg(long, value_name = "P")]
    pub create_late: Option<f64>,
    /// How long a late create is held before it commits, in seconds (not scaled by --time-scale).
    #[arg(long, value_name = "SECONDS", default_value_t = 65.0)]
    pub late_commit_delay: f64,
    /// Rate of generations completed with no image (`assets.image: null`; the charge is kept).
    #[arg(long, value_name = "P")]
    pub completed_without_image: Option<f64>,
    /// Rate of completed generations whose image URL answers 404 forever (the charge is kept).
    #[arg(long, value_name = "P")]
    pub image_missing: Option<f64>,
    /// Rate of completed generations whose image URL serves an HTML page (the charge is kept).
    #[arg(long, value_name = "P")]
    pub not_an_image: Option<f64>,
    /// Rate of generations failed with `failure_reason: null` (refunded).
    #[arg(long, value_name = "P")]
    pub failed_without_reason: Option<f64>,
    /// Rate of generations reporting an undocumented state ("rendering") until they complete.
    #[arg(long, value_name = "P")]
    pub unknown_state: Option<f64>,
    /// Seed for every random choice (latencies, faults, ids).
    #[arg(long, default_value_t = 0x5eed)]
    pub seed: u64,
    /// Keep the account (generations, images, billing, credit) in this directory: loaded at start,
    /// saved as it changes, so a restarted simulator is the same account (darkroom's --sim keeps
    /// its account in .darkroom/sim/ beside the ledger). Without it the account lives in memory.
    #[arg(long, value_name = "DIR")]
    pub state: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WindowArg {
    Bucket,
    Sliding,
    Spacing,
}

impl Args {
    /// The fault profile with each single rate given over it; a rate outside 0 to 1 is bad input.
    fn fault_rates(&self) -> anyhow::Result<Faults> {
        let bad = |message: String| Failure::new(Exit::BadInput, message);
        let mut faults = Faults::profile(&self.faults)
            .ok_or_else(|| bad(format!("unknown fault profile {:?}", self.faults)))?;
        let overrides = [
            (&mut faults.create_5xx, self.create_5xx),
            (&mut faults.create_dropped, self.create_dropped),
            (&mut faults.get_5xx, self.get_5xx),
            (&mut faults.get_slow, self.get_slow),
            (&mut faults.generation_failed, self.generation_failed),
            (&mut faults.moderation, self.moderation),
            (&mut faults.stuck, self.stuck),
            (&mut faults.download_truncated, self.download_truncated),
            (&mut faults.download_failed, self.download_failed),
            (&mut faults.rate_limit_storm, self.rate_limit_storm),
            (&mut faults.callback_lost, self.callback_lost),
            (&mut faults.callback_duplicated, self.callback_duplicated),
            (&mut faults.webhook_unsigned, self.webhook_unsigned),
            (&mut faults.webhook_forged, self.webhook_forged),
            (&mut faults.webhook_replayed, self.webhook_replayed),
            (&mut faults.create_late, self.create_late),
            (&mut faults.completed_without_image, self.completed_without_image),
            (&mut faults.image_missing, self.image_missing),
            (&mut faults.not_an_image, self.not_an_image),
            (&mut faults.failed_without_reason, self.failed_without_reason),
            (&mut faults.unknown_state, self.unknown_state),
        ];
        for (slot, value) in overrides {
            if let Some(p) = value {
                if !(0.0..=1.0).contains(&p) {
                    return Err(bad(format!("fault rates are from 0 to 1; got {p}")).into());
                }
                *slot = p;
            }
        }
        Ok(faults)
    }

    /// The simulator configuration these flags describe.
    pub fn to_config(&self) -> anyhow::Result<SimConfig> {
        let bad = |message: String| Failure::new(Exit::BadInput, message);
        let faults = self.fault_rates()?;
        let credits = Money::parse_usd(&self.credits).map_err(|e| bad(format!("--credits: {e}")))?;
        let price_photon_1 =
            Money::parse_usd(&self.price_photon_1).map_err(|e| bad(format!("--price-photon-1: {e}")))?;
        let price_photon_flash_1 = Money::parse_usd(&self.price_photon_flash_1)
            .map_err(|e| bad(format!("--price-photon-flash-1: {e}")))?;
        if !(self.time_scale.is_finite() && self.time_scale >= 0.0) {
            return Err(bad(format!("--time-scale must be 0 or more; got {}", self.time_scale)).into());
        }
        if !(self.late_commit_delay.is_finite() && self.late_commit_delay >= 0.0) {
            return Err(bad(format!(
                "--late-commit-delay must be 0 or more seconds; got {}",
                self.late_commit_delay
            ))
            .into());
        }
        let wait = |flag: &str, text: &str| retry_after(text).map_err(|m| bad(format!("--{flag}: {m}")));
        let refuse_creates = if self.monthly_limit_exceeded {
            Some(RefuseCreates::monthly_usage_limit())
        } else {
            match &self.rate_limited_forever {
                Some(text) => Some(RefuseCreates::rate_limited(wait("rate-limited-forever", text)?)),
                None => None,
            }
        };
        let rate_limit_once = match &self.rate_limit_once {
            Some(text) => Some(RateLimitOnce {
                after_creates: self.rate_limit_once_after,
                retry_after: wait("rate-limit-once", text)?,
                as_http_date: self.rate_limit_once_as_date,
            }),
            None => None,
        };
        Ok(SimConfig {
            port: self.port,
            refuse_creates,
            rate_limit_once,
            api_key: self.api_key.clone(),
            creates_per_minute: (self.rate_per_minute > 0).then_some(self.rate_per_minute),
            rate_window: match self.rate_window {
                WindowArg::Bucket => RateWindow::Bucket,
                WindowArg::Sliding => RateWindow::Sliding,
                WindowArg::Spacing => RateWindow::Spacing,
            },
            max_concurrent: (self.max_concurrent > 0).then_some(self.max_concurrent),
            retry_after: !self.no_retry_after,
            latency_photon_1: range(&self.photon_latency)
                .map_err(|m| bad(format!("--photon-latency: {m}")))?,
            latency_photon_flash_1: range(&self.flash_latency)
                .map_err(|m| bad(format!("--flash-latency: {m}")))?,
            time_scale: self.time_scale,
            credits_micros: credits.micros(),
            price_photon_1_micros: price_photon_1.micros(),
            price_photon_flash_1_micros: price_photon_flash_1.micros(),
            insufficient_credit_status: if self.insufficient_credit_status == "400" {
                400
            } else {
                402
            },
            faults,
            seed: self.seed,
            slow_delay: Duration::from_secs(2),
            late_commit_delay: Duration::from_secs_f64(self.late_commit_delay),
            state_dir: self.state.clone(),
            distinct_pictures: true,
            ..SimConfig::default()
        })
    }
}

/// A `Retry-After` to send: `10` (seconds) or a duration such as `10s` or `2m`.
fn retry_after(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.trim().parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    darkroom_engine::schedule_times::parse_duration(text).map_err(|e| e.to_string())
}

fn range(text: &str) -> Result<(f64, f64), String> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let low: f64 = low
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not MIN-MAX in seconds"))?;
    let high: f64 = high
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not MIN-MAX in seconds"))?;
    if !(low >= 0.0 && high >= low && high.is_finite()) {
        return Err(format!("{text:?} is not MIN-MAX with 0 ≤ MIN ≤ MAX"));
    }
    Ok((low, high))
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let config = args.to_config()?;
    let state = args.state.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let handle = darkroom_sim::spawn(config).await.map_err(|e| {
            let cause = std::error::Error::source(&e).map_or_else(String::new, |s| format!(": {s}"));
            let hint = match &e {
                darkroom_sim::SimError::Bind { .. } => "choose another port with --port N (0 picks a free one)",
                darkroom_sim::SimError::State(_) => {
                    "give --state a directory darkroom can write, or remove a damaged account.json to start afresh"
                }
            };
            Failure::new(Exit::BadInput, format!("{e}{cause}")).with_hint(hint)
        })?;
        println!("simulator listening: {}", handle.base_url());
        if let Some(dir) = &state {
            eprintln!("account kept in {}", dir.display());
        }
        eprintln!("point darkroom or the official SDK at it:");
        eprintln!("  export LUMAAI_BASE_URL={}", handle.base_url());
        eprintln!("  export LUMAAI_API_KEY=any-key");
        eprintln!("or, for --provider replicate (Replicate's API under /replicate/v1):");
        eprintln!("  export REPLICATE_BASE_URL=http://{}/replicate", handle.addr());
        eprintln!("  export REPLICATE_API_TOKEN=any-token");
        eprintln!("or, for --provider fal (fal's queue and platform API under /fal):");
        eprintln!("  export {}={}", env::FAL_QUEUE_URL, handle.fal_queue_url());
        eprintln!("  export {}={}", env::FAL_API_URL, handle.fal_api_url());
        eprintln!("  export {}={}", env::FAL_JWKS_URL, handle.fal_jwks_url());
        eprintln!("  export {}=any-key", env::FAL_KEY);
        eprintln!(
            "billing: http://{addr}/sim/billing (Luma and Replicate), http://{addr}/sim/fal/billing (fal)   \
             stats: http://{addr}/sim/stats",
            addr = handle.addr()
        );
        let _ = tokio::signal::ctrl_c().await;
        handle.shutdown().await;
        Ok(Exit::Done)
    })
}
