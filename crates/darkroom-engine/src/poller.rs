//! Batched polling of generations in flight, under a read rate of its own.
//!
//! A task hands the poller its generation id and how long the model usually takes; the poller
//! looks first soon after that, then at a growing interval. When several generations are due at
//! once, one list call (newest first) reports on all of them; only those it does not cover are
//! read one by one, several at a time. So 40 generations in flight cost about one request per poll
//! tick, not 40. Reads run beside the loop in a few sweeps, so one slow answer delays only the
//! generations it was about.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use darkroom_provider::{Generation, GenerationState, Provider};
use futures::StreamExt;
use governor::Quota;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{TokioClock, TokioLimiter};
use crate::retry::{poll_schedule, Backoff};

/// The poller's read rate, on tokio's clock.
struct Limiter {
    limiter: TokioLimiter,
    clock: TokioClock,
}

/// How a watched generation ended.
#[derive(Debug, Clone)]
pub enum Polled {
    /// Completed with an image.
    Completed {
        /// Where the image can be downloaded (a signed URL that expires).
        image_url: String,
    },
    /// The upstream failed it (moderation or otherwise; the charge is refunded).
    Failed {
        /// The upstream's `failure_reason`, or "failed without a reason".
        reason: String,
    },
    /// The upstream no longer knows the generation (deleted, or 404).
    Gone,
    /// A terminal answer that cannot be used (completed without an image): a failed attempt.
    Unusable {
        /// Why the answer can't be used.
        reason: String,
    },
    /// The poller is shutting down.
    Stopped,
}

/// A handle to the polling loop.
#[derive(Debug, Clone)]
pub struct Poller {
    tx: mpsc::Sender<Message>,
    /// The longest interval between two reads of one generation.
    max_interval: Duration,
}

#[derive(Debug)]
enum Message {
    Watch {
        id: String,
        first_after: Duration,
        reply: oneshot::Sender<Polled>,
    },
    /// A callback said this generation changed: read it now.
    Nudge(String),
}

#[derive(Debug)]
struct Entry {
    due: Instant,
    /// The waits between reads while it is not finished (`retry::poll_schedule`).
    backoff: Backoff,
    reply: oneshot::Sender<Polled>,
    /// A sweep is reading it now.
    reading: bool,
    /// A callback came while it was being read: that read may predate the change, read again.
    nudged_while_reading: bool,
    /// A callback asked for it to be read: the next sweep takes it, whenever that sweep is due.
    nudged: bool,
}

/// The reason recorded for a generation that ended `completed` with no image URL.
pub const COMPLETED_WITHOUT_IMAGE: &str = "completed without an image";

/// Why a completed generation has no image: [`COMPLETED_WITHOUT_IMAGE`], with the provider's
/// reason when it gave one.
pub fn without_image(generation: &Generation) -> String {
    match &generation.failure_reason {
        Some(reason) => format!("{COMPLETED_WITHOUT_IMAGE}: {reason}"),
        None => COMPLETED_WITHOUT_IMAGE.to_string(),
    }
}

/// The first retry interval after the expected latency has passed, and the longest.
const MIN_INTERVAL: Duration = Duration::from_millis(250);
/// The longest wait between two reads of one generation when polling is the only way to learn of
/// its end.
pub const MAX_INTERVAL: Duration = Duration::from_secs(5);
/// A nudged generation is read this long after its callback, with every other generation nudged
/// meanwhile: one list call then reports on all of them. Callbacks arrive one by one; reading each
/// at once would cost a read per generation, as polling does.
pub const NUDGE_GATHER: Duration = Duration::from_millis(200);
/// How long a nudge for a generation not watched yet is remembered (its create's answer may still
/// be on its way when the callback arrives).
const EARLY_NUDGE: Duration = Duration::from_secs(60);
/// Generations one sweep reports on at most.
const MAX_PER_SWEEP: usize = 64;
/// Single reads a sweep has open at once.
const READS_AT_ONCE: usize = 8;
/// Sweeps running at once; a slow upstream answer holds only its own sweep.
const MAX_SWEEPS: usize = 4;

impl Poller {
    /// Starts the polling loop on `tracker`; it stops when `stop` is cancelled. `max_interval` is
    /// the longest wait between two reads of a generation ([`MAX_INTERVAL`] when polling is the only
    /// way to learn of an end; longer when callbacks nudge it).
    pub fn spawn(
        client: Arc<dyn Provider>,
        polls_per_second: u32,
        max_interval: Duration,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Poller {
        let (tx, rx) = mpsc::channel(1024);
        let rate = NonZeroU32::new(polls_per_second).unwrap_or(NonZeroU32::MIN);
        let clock = TokioClock::new();
        let limiter = Limiter {
            limiter: crate::clock::limiter(Quota::per_second(rate), clock.clone()),
            clock,
        };
        let max_interval = max_interval.max(MIN_INTERVAL);
        tracker.spawn(poll_loop(client, limiter, max_interval, rx, stop));
        Poller { tx, max_interval }
    }

    /// Waits until the generation is completed or failed. The first read is after `first_after`
    /// (or at once when a callback nudges it).
    pub async fn wait(&self, id: &str, first_after: Duration) -> Polled {
        let (reply, answer) = oneshot::channel();
        let watch = Message::Watch {
            id: id.to_string(),
            first_after,
            reply,
        };
        if self.tx.send(watch).await.is_err() {
            return Polled::Stopped;
        }
        answer.await.unwrap_or(Polled::Stopped)
    }

    /// Asks for the generation to be read now (a callback said it changed). Never blocks: when the
    /// loop is busy the hint is dropped, and the generation is read on its schedule.
    pub fn nudge(&self, id: &str) {
        let _ = self.tx.try_send(Message::Nudge(id.to_string()));
    }

    /// The longest interval between two reads of one generation.
    pub fn max_interval(&self) -> Duration {
        self.max_interval
    }
}

/// What one read said about one generation.
enum Read {
    Found(Box<Generation>),
    NotFound,
    Failed,
}

async fn poll_loop(
    client: Arc<dyn Provider>,
    limiter: Limiter,
    max_interval: Duration,
    mut rx: mpsc::Receiver<Message>,
    stop: CancellationToken,
) {
    let limiter = Arc::new(limiter);
    let mut watches: HashMap<String, Entry> = HashMap::new();
    // Nudges for generations not watched yet, by when they came.
    let mut early: HashMap<String, Instant> = HashMap::new();
    // Sweeps run beside the loop, so a slow answer never delays the other generations; each
    // sweep's generations are remembered by its task id, so one that ends without an answer (a
    // panic) still puts them back on their schedule.
    let mut sweeps: JoinSet<Vec<(String, Read)>> = JoinSet::new();
    let mut swept: HashMap<tokio::task::Id, Vec<String>> = HashMap::new();
    loop {
        let next_due = if sweeps.len() < MAX_SWEEPS {
            watches.values().filter(|e| !e.reading).map(|e| e.due).min()
        } else {
            None
        };
        tokio::select! {
            () = stop.cancelled() => break,
            message = rx.recv() => match message {
                Some(Message::Watch { id, first_after, reply }) => {
                    let backoff = poll_schedule(first_after, MIN_INTERVAL, max_interval).start();
                    let now = Instant::now();
                    let nudged = early.remove(&id).is_some_and(|at| now.duration_since(at) < EARLY_NUDGE);
                    let due = if nudged { now + NUDGE_GATHER } else { now + first_after };
                    watches.insert(id, Entry { due, backoff, reply, reading: false, nudged_while_reading: false, nudged });
                }
                Some(Message::Nudge(id)) => match watches.get_mut(&id) {
                    Some(entry) if entry.reading => entry.nudged_while_reading = true,
                    // Read with the next sweep, at the latest shortly; a duplicate changes nothing.
                    Some(entry) => {
                        entry.nudged = true;
                        entry.due = entry.due.min(Instant::now() + NUDGE_GATHER);
                    }
                    None => {
                        let now = Instant::now();
                        early.retain(|_, at| now.duration_since(*at) < EARLY_NUDGE);
                        early.insert(id, now);
                    }
                },
                None => break,
            },
            () = sleep_until_opt(next_due) => {
                start_sweep(&client, &limiter, &mut watches, &mut sweeps, &mut swept);
            }
            Some(done) = sweeps.join_next_with_id(), if !sweeps.is_empty() => {
                let reads = match done {
                    Ok((task, reads)) => {
                        swept.remove(&task);
                        reads
                    }
                    // Every generation of a sweep that gave no answer is read again on schedule.
                    Err(error) => swept
                        .remove(&error.id())
                        .unwrap_or_default()
                        .into_iter()
                        .map(|id| (id, Read::Failed))
                        .collect(),
                };
                for (id, read) in reads {
                    apply(&mut watches, &id, read, max_interval);
                }
            }
        }
    }
    sweeps.abort_all();
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

/// Marks the due generations as being read and starts one sweep over them.
fn start_sweep(
    client: &Arc<dyn Provider>,
    limiter: &Arc<Limiter>,
    watches: &mut HashMap<String, Entry>,
    sweeps: &mut JoinSet<Vec<(String, Read)>>,
    swept: &mut HashMap<tokio::task::Id, Vec<String>>,
) {
    let now = Instant::now();
    // Drop watches whose waiter is gone (its task was aborted).
    watches.retain(|_, e| !e.reply.is_closed());
    let due: Vec<String> = watches
        .iter_mut()
        .filter(|(_, e)| !e.reading && (e.due <= now || e.nudged))
        .take(MAX_PER_SWEEP)
        .map(|(id, e)| {
            e.reading = true;
            e.nudged = false;
            id.clone()
        })
        .collect();
    if due.is_empty() {
        return;
    }
    let handle = sweeps.spawn(sweep(client.clone(), Arc::clone(limiter), due.clone()));
    swept.insert(handle.id(), due);
}

/// One list call for the newest generations when several are due, then single reads, side by
/// side, for those the list did not cover.
async fn sweep(
    client: Arc<dyn Provider>,
    limiter: Arc<Limiter>,
    mut due: Vec<String>,
) -> Vec<(String, Read)> {
    let mut reads = Vec::with_capacity(due.len());
    if due.len() >= 2 {
        wait_for(&limiter).await;
        // One list call covers the provider's first page of the newest generations.
        match client.list_since(i64::MIN, None).await {
            Ok(list) => {
                for generation in list.generations {
                    if let Some(pos) = due.iter().position(|id| *id == generation.id) {
                        reads.push((due.swap_remove(pos), Read::Found(Box::new(generation))));
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "list failed; reading generations one by one"),
        }
    }
    let singles = futures::stream::iter(due)
        .map(|id| {
            let (client, limiter) = (client.clone(), Arc::clone(&limiter));
            async move {
                wait_for(&limiter).await;
                let read = match client.get(&id).await {
                    Ok(generation) => Read::Found(Box::new(generation)),
                    Err(error) if error.is_not_found() => Read::NotFound,
                    Err(error) => {
                        tracing::debug!(%error, id, "status read failed; will read again");
                        Read::Failed
                    }
                };
                (id, read)
            }
        })
        .buffer_unordered(READS_AT_ONCE)
        .collect::<Vec<_>>()
        .await;
    reads.extend(singles);
    reads
}

fn apply(watches: &mut HashMap<String, Entry>, id: &str, read: Read, max_interval: Duration) {
    if let Some(entry) = watches.get_mut(id) {
        entry.reading = false;
    }
    match read {
        // Settled under the id that was read: an answer naming the generation differently must
        // not leave the watch without a next read.
        Read::Found(generation) => settle(watches, id, &generation, max_interval),
        Read::NotFound => {
            if let Some(entry) = watches.remove(id) {
                let _ = entry.reply.send(Polled::Gone);
            }
        }
        Read::Failed => reschedule(watches, id, max_interval),
    }
}

fn settle(watches: &mut HashMap<String, Entry>, id: &str, generation: &Generation, max_interval: Duration) {
    let outcome = match &generation.state {
        // Completed is an end: with no image it is a failed attempt, not something to wait out.
        GenerationState::Completed => Some(match generation.image_url() {
            Some(url) => Polled::Completed {
                image_url: url.to_string(),
            },
            // The provider's own reason when it gave one (Replicate: the output was deleted).
            None => Polled::Unusable {
                reason: without_image(generation),
            },
        }),
        GenerationState::Failed => Some(Polled::Failed {
            reason: generation
                .failure_reason
                .clone()
                .unwrap_or_else(|| "failed without a reason".into()),
        }),
        // Queued, dreaming, or a state this version does not know: not an end. An unknown state is
        // more likely a new step on the way than a new end, and giving up on a generation that is
        // still working would pay for it twice; `stuck_after` bounds the wait.
        GenerationState::Queued | GenerationState::Dreaming | GenerationState::Unknown(_) => None,
    };
    match outcome {
        Some(outcome) => {
            if let Some(entry) = watches.remove(id) {
                let _ = entry.reply.send(outcome);
            }
        }
        None => reschedule(watches, id, max_interval),
    }
}

fn reschedule(watches: &mut HashMap<String, Entry>, id: &str, max_interval: Duration) {
    if let Some(entry) = watches.get_mut(id) {
        if std::mem::take(&mut entry.nudged_while_reading) {
            entry.nudged = true;
            entry.due = Instant::now() + NUDGE_GATHER;
            return;
        }
        entry.due = Instant::now() + entry.backoff.next_delay().unwrap_or(max_interval);
    }
}

async fn wait_for(limiter: &Limiter) {
    crate::clock::until_ready(&limiter.limiter, &limiter.clock).await;
}
