//! Batched polling of generations in flight, under a read rate of its own.
//!
//! A task hands the poller its generation id and how long the model usually takes; the poller
//! looks first soon after that, then at a growing interval. When several generations are due at
//! once, one list call (newest first) reports on all of them; only those it does not cover are
//! read one by one. So 40 generations in flight cost about one request per poll tick, not 40.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use darkroom_luma::{Client, Generation, GenerationState};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How a watched generation ended.
#[derive(Debug, Clone)]
pub enum Polled {
    Completed {
        image_url: String,
    },
    Failed {
        reason: String,
    },
    /// The upstream no longer knows the generation (deleted, or 404).
    Gone,
    /// The poller is shutting down.
    Stopped,
}

/// A handle to the polling loop.
#[derive(Debug, Clone)]
pub struct Poller {
    tx: mpsc::Sender<Watch>,
}

#[derive(Debug)]
struct Watch {
    id: String,
    first_after: Duration,
    reply: oneshot::Sender<Polled>,
}

#[derive(Debug)]
struct Entry {
    due: Instant,
    interval: Duration,
    reply: oneshot::Sender<Polled>,
}

/// The first retry interval after the expected latency has passed, and the longest.
const MIN_INTERVAL: Duration = Duration::from_millis(250);
const MAX_INTERVAL: Duration = Duration::from_secs(5);
/// One list call covers this many of the newest generations.
const LIST_PAGE: u32 = 100;
/// Single reads per tick at most, so one tick never stalls the loop for long.
const MAX_GETS_PER_TICK: usize = 16;

impl Poller {
    /// Starts the polling loop on `tracker`; it stops when `stop` is cancelled.
    pub fn spawn(
        client: Client,
        polls_per_second: u32,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Poller {
        let (tx, rx) = mpsc::channel(256);
        let rate = NonZeroU32::new(polls_per_second).unwrap_or(NonZeroU32::MIN);
        let limiter = RateLimiter::direct(Quota::per_second(rate));
        tracker.spawn(poll_loop(client, limiter, rx, stop));
        Poller { tx }
    }

    /// Waits until the generation is completed or failed.
    pub async fn wait(&self, id: &str, first_after: Duration) -> Polled {
        let (reply, answer) = oneshot::channel();
        let watch = Watch {
            id: id.to_string(),
            first_after,
            reply,
        };
        if self.tx.send(watch).await.is_err() {
            return Polled::Stopped;
        }
        answer.await.unwrap_or(Polled::Stopped)
    }
}

async fn poll_loop(
    client: Client,
    limiter: DefaultDirectRateLimiter,
    mut rx: mpsc::Receiver<Watch>,
    stop: CancellationToken,
) {
    let mut watches: HashMap<String, Entry> = HashMap::new();
    loop {
        let next_due = watches.values().map(|e| e.due).min();
        tokio::select! {
            () = stop.cancelled() => break,
            watch = rx.recv() => match watch {
                Some(Watch { id, first_after, reply }) => {
                    let interval = (first_after / 4).clamp(MIN_INTERVAL, MAX_INTERVAL);
                    watches.insert(id, Entry { due: Instant::now() + first_after, interval, reply });
                }
                None => break,
            },
            () = sleep_until_opt(next_due) => {
                poll_due(&client, &limiter, &mut watches).await;
            }
        }
    }
    for (_, entry) in watches.drain() {
        let _ = entry.reply.send(Polled::Stopped);
    }
}

async fn sleep_until_opt(when: Option<Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}

async fn poll_due(client: &Client, limiter: &DefaultDirectRateLimiter, watches: &mut HashMap<String, Entry>) {
    let now = Instant::now();
    // Drop watches whose waiter is gone (its task was aborted).
    watches.retain(|_, e| !e.reply.is_closed());
    let mut due: Vec<String> = watches
        .iter()
        .filter(|(_, e)| e.due <= now)
        .map(|(id, _)| id.clone())
        .collect();
    if due.is_empty() {
        return;
    }
    if due.len() >= 2 {
        wait_for(limiter).await;
        match client.list(LIST_PAGE, 0).await {
            Ok(list) => {
                for generation in list.generations {
                    if let Some(pos) = due.iter().position(|id| *id == generation.id) {
                        due.swap_remove(pos);
                        settle(watches, &generation);
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "list failed; reading generations one by one"),
        }
    }
    for id in due.iter().take(MAX_GETS_PER_TICK) {
        wait_for(limiter).await;
        match client.get(id).await {
            Ok(generation) => settle(watches, &generation),
            Err(error) if error.is_not_found() => {
                if let Some(entry) = watches.remove(id) {
                    let _ = entry.reply.send(Polled::Gone);
                }
            }
            Err(error) => {
                tracing::debug!(%error, id, "status read failed; will read again");
                reschedule(watches, id);
            }
        }
    }
    // Those not read this tick are due again at once.
}

fn settle(watches: &mut HashMap<String, Entry>, generation: &Generation) {
    let outcome = match &generation.state {
        GenerationState::Completed => {
            // Completed without an image yet: read again shortly.
            generation.image_url().map(|url| Polled::Completed {
                image_url: url.to_string(),
            })
        }
        GenerationState::Failed => Some(Polled::Failed {
            reason: generation
                .failure_reason
                .clone()
                .unwrap_or_else(|| "failed without a reason".into()),
        }),
        _ => None,
    };
    match outcome {
        Some(outcome) => {
            if let Some(entry) = watches.remove(&generation.id) {
                let _ = entry.reply.send(outcome);
            }
        }
        None => reschedule(watches, &generation.id),
    }
}

fn reschedule(watches: &mut HashMap<String, Entry>, id: &str) {
    if let Some(entry) = watches.get_mut(id) {
        entry.due = Instant::now() + entry.interval;
        entry.interval = entry.interval.mul_f64(1.5).min(MAX_INTERVAL);
    }
}

async fn wait_for(limiter: &DefaultDirectRateLimiter) {
    use governor::clock::{Clock, DefaultClock};
    let clock = DefaultClock::default();
    while let Err(not_until) = limiter.check() {
        tokio::time::sleep(not_until.wait_time_from(clock.now())).await;
    }
}
