//! Paused tokio time driven at a fixed multiple of real time, for tests that run the engine
//! against the simulator and a real SQLite ledger on paused time.
//!
//! Paused time normally leaps to the next timer whenever the runtime is idle, and the ledger's
//! SQLite connection works on a thread of its own: a leap while it works would fire the pool's
//! timeouts. [`drive_clock`] is a task that never lets the runtime idle and moves time forward at
//! `speed` times real time instead, so minutes of a run pass in seconds and a slow SQLite write is
//! at most a few virtual seconds.

use tokio::task::JoinHandle;

/// Moves paused time forward at `speed` times real time, never leaping while the ledger's thread
/// works. Runs until the handle is aborted. Needs a runtime started with paused time
/// (`#[tokio::test(start_paused = true)]`).
pub fn drive_clock(speed: u32) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = std::time::Instant::now();
        loop {
            tokio::task::yield_now().await;
            let now = std::time::Instant::now();
            tokio::time::advance((now - last) * speed).await;
            last = now;
        }
    })
}
