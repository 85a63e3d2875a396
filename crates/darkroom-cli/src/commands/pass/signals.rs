//! Waiting inside a pass: Ctrl-C (stop taking work, then abort) and `--start-at`'s countdown.

use std::time::Duration;

use darkroom_engine::scheduler::Shutdown;

/// First Ctrl-C: stop taking work and let in-flight generations finish. Second: abort.
pub(super) async fn watch_signals(shutdown: Shutdown) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    eprintln!("stopping: no new creates; waiting for in-flight generations (Ctrl-C again to abort)");
    shutdown.stop.cancel();
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!("aborting; the ledger is consistent and the next run resumes");
        shutdown.abort.cancel();
    }
}

/// Waits until `at`, showing a countdown on stderr; false if Ctrl-C came first.
pub(super) async fn wait_until(at: chrono::DateTime<chrono::Utc>, shutdown: &Shutdown) -> bool {
    loop {
        let left = darkroom_engine::schedule_times::until(at, chrono::Utc::now());
        if left.is_zero() {
            return true;
        }
        let (h, m, s) = (
            left.as_secs() / 3600,
            left.as_secs() / 60 % 60,
            left.as_secs() % 60,
        );
        eprintln!(
            "starting at {} (in {h}h{m:02}m{s:02}s); Ctrl-C cancels",
            at.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M")
        );
        let step = if left > Duration::from_secs(600) {
            Duration::from_secs(300)
        } else {
            left.min(Duration::from_secs(60))
        };
        tokio::select! {
            () = tokio::time::sleep(step) => {}
            () = shutdown.stop.cancelled() => return false,
        }
    }
}
