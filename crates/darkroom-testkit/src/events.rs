//! Where a pass's events go in a test or a benchmark: dropped, or collected.

use darkroom_engine::Event;
use tokio::sync::mpsc::{self, Sender};
use tokio::task::JoinHandle;

/// How many events a channel holds before the pass waits for its reader.
const CAPACITY: usize = 100_000;

/// A sender whose events are read and dropped. Call inside a tokio runtime.
pub fn discard() -> Sender<Event> {
    let (tx, mut rx) = mpsc::channel(CAPACITY);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    tx
}

/// A sender and a task that collects every event sent until all senders are dropped; await the
/// task for them, in the order sent. Call inside a tokio runtime.
pub fn collect() -> (Sender<Event>, JoinHandle<Vec<Event>>) {
    let (tx, mut rx) = mpsc::channel(CAPACITY);
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        events
    });
    (tx, collector)
}
