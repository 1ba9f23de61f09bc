//! The scheduler: runs passes on an interval, never two at once, with a two-phase
//! shutdown, and keeps a [`SchedulerStatus`] (running or not, the last completed pass)
//! that `/health` reads without touching the database. Library crates never install
//! signal handlers: the binary owns them and calls [`Scheduler::shutdown`].

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use tokio::sync::watch;

use crate::Runner;

/// A scheduler that completed no pass within this many intervals is reported stale
/// (`/health` answers 503).
pub const STALE_AFTER_INTERVALS: u32 = 3;

/// The last pass the scheduler completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastPass {
    pub finished_at: DateTime<Utc>,
    pub duration: Duration,
    /// False when the pass itself failed (refresh or due listing failed, or a panic was
    /// caught); failed single missions do not count.
    pub ok: bool,
    /// Entries in the pass's `errors` list.
    pub errors: usize,
}

#[derive(Debug, Default)]
struct StatusState {
    started_at: Option<DateTime<Utc>>,
    running: bool,
    last: Option<LastPass>,
}

/// What the scheduler reports about itself; cheap to read (one uncontended mutex).
#[derive(Debug)]
pub struct SchedulerStatus {
    interval: Duration,
    state: Mutex<StatusState>,
}

impl SchedulerStatus {
    /// The status of a scheduler that runs every `interval` (not started yet).
    pub fn new(interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            interval,
            state: Mutex::new(StatusState::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, StatusState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// True while the scheduler's task runs (started, not stopped, not ended).
    pub fn running(&self) -> bool {
        self.state().running
    }

    pub fn last_pass(&self) -> Option<LastPass> {
        self.state().last.clone()
    }

    /// True when the scheduler was started and no pass has completed within
    /// [`STALE_AFTER_INTERVALS`] intervals before `now` (counted from the start until the
    /// first pass completes). A scheduler never started is not stale.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        let s = self.state();
        let Some(started) = s.started_at else {
            return false;
        };
        let since = s.last.as_ref().map_or(started, |p| p.finished_at);
        let limit = self.interval.saturating_mul(STALE_AFTER_INTERVALS);
        let limit = chrono::Duration::from_std(limit).unwrap_or(chrono::Duration::MAX);
        now.signed_duration_since(since) > limit
    }

    fn mark_started(&self, now: DateTime<Utc>) {
        let mut s = self.state();
        s.started_at = Some(now);
        s.running = true;
    }

    fn record(&self, pass: LastPass) {
        self.state().last = Some(pass);
    }
}

/// Marks the status not running when the scheduler's task ends, however it ends.
struct RunningGuard(Arc<SchedulerStatus>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.state().running = false;
    }
}

/// Runs passes on an interval: the first at start, then every `interval` after the
/// previous pass *started* (a pass longer than the interval delays the next one; passes
/// never overlap). Stops taking work on [`Scheduler::shutdown`]. A panic inside a pass is
/// caught (by the runner, and once more here): the next pass runs.
pub struct Scheduler {
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
    status: Arc<SchedulerStatus>,
}

impl Scheduler {
    pub fn start(runner: Arc<Runner>, interval: Duration) -> Self {
        Self::start_reporting(runner, SchedulerStatus::new(interval))
    }

    /// Starts with a status the caller already shares (e.g. with `/health`); the
    /// interval is the status's.
    pub fn start_reporting(runner: Arc<Runner>, status: Arc<SchedulerStatus>) -> Self {
        let (stop, mut stop_rx) = watch::channel(false);
        status.mark_started(Utc::now());
        let task_status = Arc::clone(&status);
        let handle = tokio::spawn(async move {
            let _running = RunningGuard(Arc::clone(&task_status));
            let mut ticker = tokio::time::interval(task_status.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stop_rx.changed() => break,
                }
                if *stop_rx.borrow() {
                    break;
                }
                run_one(&runner, &task_status).await;
            }
        });
        Self {
            stop,
            handle,
            status,
        }
    }

    /// The status this scheduler reports.
    pub fn status(&self) -> Arc<SchedulerStatus> {
        Arc::clone(&self.status)
    }

    /// Two-phase shutdown: no new pass starts; a pass in flight gets `grace` to finish,
    /// then it is cancelled (its open transactions roll back; a mission interrupted
    /// before its write-back is simply still due). Returns true if it finished in time.
    pub async fn shutdown(self, grace: Duration) -> bool {
        // No new pass will start: report it right away, as the original did.
        self.status.state().running = false;
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

/// One scheduled pass, recorded in the status.
async fn run_one(runner: &Runner, status: &SchedulerStatus) {
    let started = Instant::now();
    let pass = std::panic::AssertUnwindSafe(runner.tick())
        .catch_unwind()
        .await;
    let finished_at = Utc::now();
    let Ok(stats) = pass else {
        tracing::error!("tick pass panicked; the next pass runs as scheduled");
        status.record(LastPass {
            finished_at,
            duration: started.elapsed(),
            ok: false,
            errors: 1,
        });
        return;
    };
    let overlapped = stats.errors.iter().any(|e| e == "overlap-skipped");
    if !overlapped {
        status.record(LastPass {
            finished_at,
            duration: started.elapsed(),
            ok: !stats.pass_failed,
            errors: stats.errors.len(),
        });
    }
    tracing::info!(
        due = stats.due_mission_count,
        planned = stats.plans_written_back,
        failed = stats.failed,
        errors = stats.errors.len(),
        ms = stats.duration_ms,
        "tick pass finished"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn stale_after_three_intervals_without_a_completed_pass() {
        let status = SchedulerStatus::new(Duration::from_secs(60));
        // Never started: never stale.
        assert!(!status.is_stale(at("2030-01-01T00:00:00Z")));
        status.mark_started(at("2026-01-01T00:00:00Z"));
        assert!(!status.is_stale(at("2026-01-01T00:03:00Z")));
        assert!(status.is_stale(at("2026-01-01T00:03:00.001Z")));
        status.record(LastPass {
            finished_at: at("2026-01-01T00:10:00Z"),
            duration: Duration::from_secs(1),
            ok: false,
            errors: 1,
        });
        assert!(!status.is_stale(at("2026-01-01T00:13:00Z")));
        assert!(status.is_stale(at("2026-01-01T00:13:01Z")));
    }
}
