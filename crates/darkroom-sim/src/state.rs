//! The simulated account: generations and their lifecycle, limits, credit and the billing record.
//!
//! A generation's state is a function of time (queued until it starts dreaming, dreaming until its
//! end), so nothing ticks in the background; whatever reads the account first settles generations
//! whose end has passed (refunding failures). Time is tokio's, so tests can pause it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::config::SimConfig;

mod admission;

/// A failure reason worth retrying, as the API words them.
pub const RETRYABLE_REASONS: [&str; 3] = ["Job failed", "Error dispatching job", "Prompt processing failed"];
/// Moderation reasons, as the API words them.
pub const MODERATION_REASONS: [&str; 4] = [
    "Advanced prompt moderation failed",
    "Contains blacklisted words",
    "Frame moderation failed",
    "400: failed to moderate image",
];

/// How a generation ends (decided when it is accepted).
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Completed,
    Failed(&'static str),
    Stuck,
    /// `completed` with `assets.image: null`; the charge is kept.
    CompletedWithoutImage,
    /// `completed`, but its image URL answers 404; the charge is kept.
    ImageMissing,
    /// `completed`, but its image URL serves an HTML page; the charge is kept.
    NotAnImage,
    /// `failed` with `failure_reason: null`; refunded.
    FailedWithoutReason,
    /// Replicate's `aborted`: its `Cancel-After` deadline passed before it started; not charged
    /// (refunded).
    Aborted,
    /// Replicate's `canceled`: the client canceled it (`POST .../cancel`) before it ended; charged,
    /// as Replicate charges a canceled run of a public model; no output.
    Canceled,
}

impl Outcome {
    /// Whether the generation ends `failed` (and is refunded).
    pub(crate) fn is_failure(&self) -> bool {
        matches!(
            self,
            Outcome::Failed(_) | Outcome::FailedWithoutReason | Outcome::Aborted
        )
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Generation {
    pub id: String,
    pub created_at: OffsetDateTime,
    pub echo: Value,
    pub model: String,
    pub aspect_ratio: String,
    pub format: String,
    pub price: i64,
    pub dreaming_at: Instant,
    pub done_at: Instant,
    pub outcome: Outcome,
    pub settled: bool,
    pub deleted: bool,
    /// Reports the undocumented state `"rendering"` until it ends.
    pub unknown_state: bool,
    /// Seeds the picture: a hash of the request.
    pub image_seed: [u8; 32],
    /// Which API made it: [`LUMA`] or [`REPLICATE`]. Each API sees only its own.
    pub provider: String,
    /// A reframe's source picture's aspect ratio: the picture is that source (`image_seed`) drawn
    /// inside this generation's canvas, the rest extended from it. `None` for an ordinary image.
    pub source_aspect: Option<String>,
}

/// [`Generation::provider`] of a generation made through Luma's API.
pub(crate) const LUMA: &str = "luma";
/// [`Generation::provider`] of a prediction made through Replicate's API.
pub(crate) const REPLICATE: &str = "replicate";
/// [`Generation::provider`] of a request made through fal's queue API (kept in fal's account).
pub(crate) const FAL: &str = "fal";

impl Generation {
    pub(crate) fn state(&self, now: Instant) -> &'static str {
        let unfinished = matches!(self.outcome, Outcome::Stuck) || now < self.done_at;
        if unfinished && self.unknown_state {
            "rendering"
        } else if now < self.dreaming_at {
            "queued"
        } else if unfinished {
            "dreaming"
        } else if self.outcome.is_failure() {
            "failed"
        } else {
            "completed"
        }
    }

    /// The generation object exactly as the API documents it.
    pub(crate) fn to_json(&self, now: Instant, asset_base: &str) -> Value {
        let state = self.state(now);
        let image = (state == "completed" && !matches!(self.outcome, Outcome::CompletedWithoutImage))
            .then(|| format!("{asset_base}/{}.{}", self.id, self.format));
        let failure = match (&self.outcome, state) {
            (Outcome::Failed(reason), "failed") => Some(*reason),
            _ => None,
        };
        json!({
            "id": self.id,
            "generation_type": "image",
            "state": state,
            "failure_reason": failure,
            "created_at": format_time(self.created_at),
            "assets": {"image": image, "video": null, "progress_video": null},
            "model": self.model,
            "request": self.echo,
        })
    }
}

/// `2026-11-24T09:30:19.123456Z`, the documented form.
pub(crate) fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// One line of the billing record.
#[derive(Debug, Clone, Serialize)]
pub struct BillingEntry {
    /// The generation charged or refunded.
    pub generation_id: String,
    /// Its model (`photon-1`, `photon-flash-1`).
    pub model: String,
    /// `charge` or `refund`.
    pub kind: &'static str,
    /// The amount, micro-dollars (positive for both kinds).
    pub micros: i64,
    /// Which API the generation was made through: `luma` or `replicate`.
    pub provider: String,
    /// When, `2026-11-24T09:30:19.123456Z` (UTC).
    pub at: String,
}

/// Every charge and refund, with totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Billing {
    /// Every charge and refund, oldest first.
    pub entries: Vec<BillingEntry>,
    /// Every charge, micro-dollars.
    pub charged_micros: i64,
    /// Every refund, micro-dollars.
    pub refunded_micros: i64,
    /// Charged minus refunded: what the account paid.
    pub net_micros: i64,
    /// The credit left, micro-dollars: the opening credit minus `net_micros`.
    pub balance_micros: i64,
}

/// Requests by endpoint and status, 429s, and faults injected by kind.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Requests by `"METHOD /path STATUS"` (`"POST /generations/image 201"`).
    pub requests: BTreeMap<String, u64>,
    /// Requests answered 429.
    pub rate_limited: u64,
    /// Faults injected, by the name of their `Faults` field.
    pub faults: BTreeMap<String, u64>,
    /// Creates accepted (and charged).
    pub creates_accepted: u64,
    /// The most generations unfinished at once.
    pub peak_concurrent: u64,
    /// Creates that arrived while a `Retry-After` this simulator had sent was still running.
    pub creates_inside_pause: u64,
}

pub(crate) struct Account {
    pub rng: StdRng,
    /// Mixed into every generation id: ids never repeat across simulators, even with one seed, as
    /// Luma's never repeat (a ledger that outlives one simulator must not see an id twice).
    id_nonce: [u8; 16],
    pub generations: HashMap<String, Generation>,
    pub order: Vec<String>,
    pending: BinaryHeap<Reverse<(Instant, String)>>,
    in_flight: u64,
    pub balance: i64,
    pub billing: Billing,
    pub stats: Stats,
    bucket: (f64, Instant),
    window: VecDeque<Instant>,
    /// Replicate's creates in the last (scaled) minute.
    replicate_window: VecDeque<Instant>,
    /// When the last create passed the rate limit (`RateWindow::Spacing`).
    last_admitted: Option<Instant>,
    storm_until: Option<Instant>,
    /// The end of the longest pause a `Retry-After` has announced.
    pub announced_pause_until: Option<Instant>,
    /// The end of the pause of `SimConfig::rate_limit_once`, once it has fired.
    pub once_pause_until: Option<Instant>,
    /// The credit the account opened with, micro-dollars: the balance is this minus what it paid.
    pub opening_balance: i64,
    /// Counts changes worth saving (a generation accepted, settled or deleted).
    pub revision: u64,
}

/// Why a create is refused before it is accepted.
pub(crate) enum Refusal {
    RateLimited {
        retry_after: Duration,
        detail: &'static str,
    },
    NoCredit,
}

impl Account {
    pub(crate) fn new(config: &SimConfig, rng: StdRng) -> Account {
        Account {
            rng,
            id_nonce: rand::random(),
            generations: HashMap::new(),
            order: Vec::new(),
            pending: BinaryHeap::new(),
            in_flight: 0,
            balance: config.credits_micros,
            billing: Billing {
                balance_micros: config.credits_micros,
                ..Billing::default()
            },
            stats: Stats::default(),
            bucket: (f64::from(config.creates_per_minute.unwrap_or(0)), Instant::now()),
            window: VecDeque::new(),
            replicate_window: VecDeque::new(),
            last_admitted: None,
            storm_until: None,
            announced_pause_until: None,
            once_pause_until: None,
            opening_balance: config.credits_micros,
            revision: 0,
        }
    }

    /// Recomputes what is in flight and when each unsettled generation ends, from the generations
    /// themselves (after generations were loaded or merged in).
    pub(crate) fn reschedule(&mut self) {
        self.pending.clear();
        self.in_flight = 0;
        for generation in self.generations.values().filter(|g| !g.settled) {
            self.in_flight += 1;
            if !matches!(generation.outcome, Outcome::Stuck) {
                self.pending
                    .push(Reverse((generation.done_at, generation.id.clone())));
            }
        }
    }

    /// Recomputes the billing totals and the balance from the entries and the opening balance.
    pub(crate) fn recount_billing(&mut self) {
        let sum = |kind: &str| -> i64 {
            self.billing
                .entries
                .iter()
                .filter(|e| e.kind == kind)
                .map(|e| e.micros)
                .sum()
        };
        let (charged, refunded) = (sum("charge"), sum("refund"));
        self.billing.charged_micros = charged;
        self.billing.refunded_micros = refunded;
        self.billing.net_micros = charged - refunded;
        self.balance = self.opening_balance - (charged - refunded);
        self.billing.balance_micros = self.balance;
    }

    /// A new generation id: a UUID from the seeded RNG (so a seed replays the same faults), made
    /// unique to this simulator.
    pub(crate) fn new_id(&mut self) -> String {
        let mut bytes: [u8; 16] = self.rng.gen();
        for (byte, nonce) in bytes.iter_mut().zip(self.id_nonce) {
            *byte ^= nonce;
        }
        uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
    }

    pub(crate) fn count(&mut self, key: String) {
        *self.stats.requests.entry(key).or_default() += 1;
    }

    pub(crate) fn fault(&mut self, kind: &str) {
        *self.stats.faults.entry(kind.to_string()).or_default() += 1;
    }

    /// Whether an event with probability `p` happens now.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.gen_bool(p.clamp(0.0, 1.0))
    }

    /// Ends every generation whose time has come: failures are refunded.
    pub(crate) fn settle(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.pending.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, id))) = self.pending.pop() else {
                break;
            };
            self.in_flight = self.in_flight.saturating_sub(1);
            let Some(generation) = self.generations.get_mut(&id) else {
                continue;
            };
            generation.settled = true;
            self.revision += 1;
            if generation.outcome.is_failure() {
                let (price, model) = (generation.price, generation.model.clone());
                let provider = generation.provider.clone();
                self.balance += price;
                self.billing.refunded_micros += price;
                self.billing.net_micros -= price;
                self.billing.balance_micros = self.balance;
                self.billing.entries.push(BillingEntry {
                    generation_id: id,
                    model,
                    kind: "refund",
                    micros: price,
                    provider,
                    at: format_time(OffsetDateTime::now_utc()),
                });
            }
        }
    }

    /// Accepts a generation: charges it and schedules its end.
    pub(crate) fn accept(&mut self, generation: Generation) {
        self.balance -= generation.price;
        self.billing.charged_micros += generation.price;
        self.billing.net_micros += generation.price;
        self.billing.balance_micros = self.balance;
        self.billing.entries.push(BillingEntry {
            generation_id: generation.id.clone(),
            model: generation.model.clone(),
            kind: "charge",
            micros: generation.price,
            provider: generation.provider.clone(),
            at: format_time(generation.created_at),
        });
        self.stats.creates_accepted += 1;
        self.revision += 1;
        self.in_flight += 1;
        self.stats.peak_concurrent = self.stats.peak_concurrent.max(self.in_flight);
        if !matches!(generation.outcome, Outcome::Stuck) {
            self.pending
                .push(Reverse((generation.done_at, generation.id.clone())));
        }
        self.order.push(generation.id.clone());
        self.generations.insert(generation.id.clone(), generation);
    }
}
