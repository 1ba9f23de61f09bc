//! The scheduler: runs passes on an interval, never two at once, with a two-phase
//! shutdown. Library crates never install signal handlers: the binary owns them and calls
//! [`Scheduler::shutdown`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::Runner;

/// Runs passes on an interval: the first at start, then every `interval` after the
/// previous pass *started* (a pass longer than the interval delays the next one; passes
/// never overlap). Stops taking work on [`Scheduler::shutdown`].
pub struct Scheduler {
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl Scheduler {
    pub fn start(runner: Arc<Runner>, interval: Duration) -> Self {
        let (stop, mut stop_rx) = watch::channel(false);
        let handle = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stop_rx.changed() => break,
                }
                if *stop_rx.borrow() {
                    break;
                }
                let stats = runner.tick().await;
                tracing::info!(
                    due = stats.due_mission_count,
                    planned = stats.plans_written_back,
                    failed = stats.failed,
                    errors = stats.errors.len(),
                    ms = stats.duration_ms,
                    "tick pass finished"
                );
            }
        });
        Self { stop, handle }
    }

    /// Two-phase shutdown: no new pass starts; a pass in flight gets `grace` to finish,
    /// then it is cancelled (its open transactions roll back; a mission interrupted
    /// before its write-back is simply still due). Returns true if it finished in time.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let _ = self.stop.send(true);
        let mut handle = self.handle;
        match tokio::time::timeout(grace, &mut handle).await {
            Ok(_) => true,
            Err(_) => {
                handle.abort();
                let _ = handle.await;
                false
            }
        }
    }
}
