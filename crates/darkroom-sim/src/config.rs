//! What a simulated account looks like: its limits, prices, credit, latencies and failure modes.

use std::time::Duration;

/// How the per-minute create limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateWindow {
    /// A token bucket of N refilling continuously at N per minute.
    Bucket,
    /// At most N creates in any 60 seconds.
    Sliding,
    /// One create per 60/N seconds, with no burst at all: a create sooner than that after the
    /// last accepted one is refused, with a `Retry-After` until the next slot.
    Spacing,
}

/// The simulated Replicate account (served under `/replicate/v1` on the same port, sharing the
/// account's credit, billing record and fault rates): its own create limit, prices and retention.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicateSim {
    /// Creates a minute (a sliding window, scaled by `time_scale`); `None` for no limit.
    /// Replicate documents 600.
    pub creates_per_minute: Option<u32>,
    /// What a `luma/photon` output is billed, micro-dollars (Replicate's $0.03).
    pub price_photon_1_micros: i64,
    /// What a `luma/photon-flash` output is billed, micro-dollars (Replicate's $0.01).
    pub price_photon_flash_1_micros: i64,
    /// How long after it ends a prediction keeps its input, output and files (Replicate: one
    /// hour for API predictions). Not scaled: it is on the simulator's (tokio's) clock.
    pub retention: Duration,
}

impl Default for ReplicateSim {
    /// Replicate's documented limit, prices and retention: 600 creates a minute, $0.03 and $0.01
    /// an image, one hour.
    fn default() -> Self {
        ReplicateSim {
            creates_per_minute: Some(600),
            price_photon_1_micros: 30_000,
            price_photon_flash_1_micros: 10_000,
            retention: Duration::from_secs(3600),
        }
    }
}

/// Fault rates, each a probability per event (0 to 1).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// A create answered 500 before anything was accepted.
    pub create_5xx: f64,
    /// A create accepted and charged, then the connection dropped before the answer.
    pub create_dropped: f64,
    /// A status read (get or list) answered 500.
    pub get_5xx: f64,
    /// A status read answered slowly (`slow_delay`).
    pub get_slow: f64,
    /// A generation that ends `failed` for a reason worth retrying ("Job failed", ...).
    pub generation_failed: f64,
    /// A generation blocked by moderation.
    pub moderation: f64,
    /// A generation that stays `dreaming` forever.
    pub stuck: f64,
    /// An image download cut short (Content-Length promises more than is sent).
    pub download_truncated: f64,
    /// An image download answered 500.
    pub download_failed: f64,
    /// A create that starts a storm of 429s (`storm_length` long).
    pub rate_limit_storm: f64,
    /// A callback delivery never sent (Luma's are retried only 3 times, 100 ms apart).
    pub callback_lost: f64,
    /// A callback delivered twice.
    pub callback_duplicated: f64,
    /// A signed delivery (Replicate's, fal's) sent without its signature headers.
    pub webhook_unsigned: f64,
    /// A signed delivery sent with a signature that does not verify (made with another key).
    pub webhook_forged: f64,
    /// A signed delivery sent as a replay of an old one: validly signed, its timestamp ten
    /// minutes in the past.
    pub webhook_replayed: f64,
    /// A create the upstream commits late: the request is accepted and held unanswered for
    /// `late_commit_delay` (past a client's timeout), and only then does the generation appear in
    /// the list and get billed. The answer is sent if the client is still listening.
    pub create_late: f64,
    /// A generation that ends `completed` with `assets.image: null`. Billed like any completed
    /// generation (the charge is kept).
    pub completed_without_image: f64,
    /// A generation that ends `completed` whose image URL answers 404 forever (charge kept).
    pub image_missing: f64,
    /// A generation that ends `completed` whose image URL serves bytes that are not an image
    /// (an HTML error page; charge kept).
    pub not_an_image: f64,
    /// A generation that ends `failed` with `failure_reason: null` (refunded, as failures are).
    pub failed_without_reason: f64,
    /// A generation that reports an undocumented state (`"rendering"`) instead of `queued` and
    /// `dreaming` until it completes normally.
    pub unknown_state: f64,
}

impl Faults {
    /// `none`, `flaky` (occasional trouble of every kind) or `hostile` (a lot of it).
    pub fn profile(name: &str) -> Option<Faults> {
        Some(match name {
            "none" => Faults::default(),
            "flaky" => Faults {
                create_5xx: 0.02,
                create_dropped: 0.02,
                get_5xx: 0.02,
                get_slow: 0.01,
                generation_failed: 0.02,
                moderation: 0.01,
                stuck: 0.0,
                download_truncated: 0.02,
                download_failed: 0.01,
                rate_limit_storm: 0.002,
                callback_lost: 0.02,
                callback_duplicated: 0.02,
                ..Faults::default()
            },
            "hostile" => Faults {
                create_5xx: 0.10,
                create_dropped: 0.05,
                get_5xx: 0.10,
                get_slow: 0.05,
                generation_failed: 0.05,
                moderation: 0.02,
                stuck: 0.02,
                download_truncated: 0.05,
                download_failed: 0.03,
                rate_limit_storm: 0.01,
                callback_lost: 0.10,
                callback_duplicated: 0.10,
                webhook_unsigned: 0.03,
                webhook_forged: 0.03,
                webhook_replayed: 0.03,
                ..Faults::default()
            },
            _ => return None,
        })
    }
}

/// Every create answered 429 with this detail and `Retry-After`: a refusal that never clears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefuseCreates {
    /// The 429's `detail`.
    pub detail: String,
    /// The `Retry-After` sent with it (whole seconds, at least one).
    pub retry_after: Duration,
}

impl RefuseCreates {
    /// The account's monthly usage limit is spent (Luma caps monthly spend): 429, `Retry-After: 1`.
    pub fn monthly_usage_limit() -> RefuseCreates {
        RefuseCreates {
            detail: "Monthly usage limit exceeded: this account has reached its monthly spend cap. \
                     Upgrade your plan or wait for the next billing cycle."
                .into(),
            retry_after: Duration::from_secs(1),
        }
    }

    /// Plain rate limiting that never lets up: `Too many requests` with this `Retry-After`.
    pub fn rate_limited(retry_after: Duration) -> RefuseCreates {
        RefuseCreates {
            detail: "Too many requests".into(),
            retry_after,
        }
    }
}

/// One 429 with a given `Retry-After` once `after_creates` creates have been accepted; creates that
/// arrive before the pause it announces is over are answered 429 too (and counted in
/// `Stats::creates_inside_pause`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitOnce {
    /// The 429 comes once this many creates were accepted.
    pub after_creates: u64,
    /// Not scaled by `time_scale`: a header value is what it is.
    pub retry_after: Duration,
    /// Send `Retry-After` as an HTTP date (rounded up to the next whole second) instead of seconds.
    pub as_http_date: bool,
}

/// The simulated account and server.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// 0 picks a free port.
    pub port: u16,
    /// Only this key is accepted when set; any bearer token otherwise.
    pub api_key: Option<String>,
    /// Creates per minute; `None` for no limit.
    pub creates_per_minute: Option<u32>,
    /// How the per-minute limit counts.
    pub rate_window: RateWindow,
    /// Non-terminal generations at once; `None` for no limit.
    pub max_concurrent: Option<u32>,
    /// Send `Retry-After` with 429s.
    pub retry_after: bool,
    /// photon-1's latency range, seconds (before `time_scale`).
    pub latency_photon_1: (f64, f64),
    /// photon-flash-1's latency range, seconds (before `time_scale`).
    pub latency_photon_flash_1: (f64, f64),
    /// Multiplies every latency and the rate window: 0.01 makes a minute last 0.6 s.
    pub time_scale: f64,
    /// Starting balance in micro-dollars.
    pub credits_micros: i64,
    /// What a photon-1 image is billed, micro-dollars.
    pub price_photon_1_micros: i64,
    /// What a photon-flash-1 image is billed, micro-dollars.
    pub price_photon_flash_1_micros: i64,
    /// The status for a create the balance can't pay for: 400 or 402.
    pub insufficient_credit_status: u16,
    /// How often each failure mode happens.
    pub faults: Faults,
    /// Every create answered 429 (a quota refusal or an endless rate limit).
    pub refuse_creates: Option<RefuseCreates>,
    /// A single 429 with a chosen `Retry-After`.
    pub rate_limit_once: Option<RateLimitOnce>,
    /// How long a slow read takes (before `time_scale`... not scaled: it is a network delay).
    pub slow_delay: Duration,
    /// How long a 429 storm lasts (scaled).
    pub storm_length: Duration,
    /// How long a late create (`Faults::create_late`) is held before it commits. Not scaled: it
    /// races the client's request timeout, which is not scaled either.
    pub late_commit_delay: Duration,
    /// At most this many creates are committed late (`None`: as many as `Faults::create_late`
    /// picks), so a test can make exactly the first create late.
    pub late_commit_limit: Option<u64>,
    /// Seeds every random choice (latencies, faults, ids), so a seed replays a run's faults.
    pub seed: u64,
    /// Images kept in memory once rendered.
    pub image_cache: usize,
    /// Where the account lives between simulators (`None`: in memory only, gone when this one
    /// stops). With a directory, the account (generations, billing, credit) is loaded at start and
    /// saved as it changes; with `port` 0 the simulator listens again on the ports the account's
    /// image URLs were handed out on, where they are free, so those URLs keep resolving.
    pub state_dir: Option<std::path::PathBuf>,
    /// Every generation draws a picture of its own, as the real upstream does: a request sent
    /// twice (the variants of a row) gives two different pictures. Off, the picture is a function
    /// of the request alone, so a test can tell which request an image answers; `darkroom sim`
    /// and `--sim` turn it on. A prompt containing `[sim:duplicate]` always gets the request's
    /// own picture, so its variants come out identical (see [`crate::picture::Look`] for the other
    /// pictures a prompt can ask for).
    pub distinct_pictures: bool,
    /// The Replicate side of the account.
    pub replicate: ReplicateSim,
}

impl Default for SimConfig {
    /// Luma's Build tier: 80 creates a minute, 40 concurrent, $100 of credit, published prices and
    /// latencies, no faults.
    fn default() -> Self {
        SimConfig {
            port: 0,
            api_key: None,
            creates_per_minute: Some(80),
            rate_window: RateWindow::Bucket,
            max_concurrent: Some(40),
            retry_after: true,
            latency_photon_1: (2.0, 5.0),
            latency_photon_flash_1: (0.1, 0.5),
            time_scale: 1.0,
            credits_micros: 100_000_000,
            price_photon_1_micros: 15_000,
            price_photon_flash_1_micros: 4_000,
            insufficient_credit_status: 402,
            faults: Faults::default(),
            refuse_creates: None,
            rate_limit_once: None,
            slow_delay: Duration::from_secs(2),
            storm_length: Duration::from_secs(5),
            late_commit_delay: Duration::from_secs(65),
            late_commit_limit: None,
            seed: 0x5eed,
            image_cache: 512,
            state_dir: None,
            distinct_pictures: false,
            replicate: ReplicateSim::default(),
        }
    }
}

impl SimConfig {
    /// No limits, no latency to speak of: for tests and overhead benchmarks.
    pub fn unlimited() -> SimConfig {
        SimConfig {
            creates_per_minute: None,
            max_concurrent: None,
            time_scale: 0.0,
            ..SimConfig::default()
        }
    }
}
