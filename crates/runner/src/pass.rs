//! The runner and its tick pass: refresh snapshots → maintenance → list due missions →
//! run each due mission as its own task (concurrently, bounded) → report stats.
//!
//! A panic never escapes a pass: one in the refresh is reported like a refresh error (the
//! pass goes on from the stored snapshots), one in a mission task ends that mission (its
//! claim is given back), one anywhere else ends the pass with an error. Each is counted
//! in `mana_ai_pass_panics_total{stage}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use mana_ai_store::{DueKey, DueMission, RefreshOutcome, Store};
use serde::Serialize;
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::error::RunError;
use crate::events::{self, Emit, PanicStage};
use crate::maintenance::Maintenance;
use crate::mission::MissionRunner;
use crate::outcome::{MissionOutcome, SkipReason};
use crate::{Clock, Metrics, RunnerConfig, RunnerDeps};

/// What one refresh did, as reported by `/internal/tick`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RefreshReport {
    pub users_processed: usize,
    pub new_snapshots: usize,
    pub updated_snapshots: usize,
    pub rows_applied: usize,
    pub busy: bool,
    /// Rows skipped and recorded in the quarantine (all reasons).
    pub rows_quarantined: usize,
}

/// The stats of one tick pass: the original's `TickStats` fields first, extensions after.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TickStats {
    pub scanned_at: String,
    pub due_mission_count: usize,
    pub plans_produced: usize,
    pub plans_written_back: usize,
    pub parse_failures: usize,
    pub errors: Vec<String>,
    pub skipped: usize,
    pub failed: usize,
    pub refresh: RefreshReport,
    pub duration_ms: u64,
    /// The pass itself failed (refresh or due listing failed, or a panic was caught), as
    /// opposed to single missions failing. Reported by `/health`, not in the JSON.
    #[serde(skip)]
    pub pass_failed: bool,
}

impl TickStats {
    fn empty(now: DateTime<Utc>) -> Self {
        Self {
            scanned_at: mana_ai_core::iso::to_iso_ms(now),
            due_mission_count: 0,
            plans_produced: 0,
            plans_written_back: 0,
            parse_failures: 0,
            errors: Vec::new(),
            skipped: 0,
            failed: 0,
            refresh: RefreshReport::default(),
            duration_ms: 0,
            pass_failed: false,
        }
    }

    /// The answer to a pass requested while another is running.
    pub fn overlap(now: DateTime<Utc>) -> Self {
        let mut s = Self::empty(now);
        s.errors.push("overlap-skipped".into());
        s
    }
}

/// Runs tick passes. Cheap to share (`Arc`).
pub struct Runner {
    store: Store,
    metrics: Metrics,
    cfg: Arc<RunnerConfig>,
    clock: Arc<dyn Clock>,
    maintenance: Maintenance,
    missions: Arc<MissionRunner>,
    pass_lock: Mutex<()>,
}

impl Runner {
    pub fn new(deps: RunnerDeps, cfg: RunnerConfig) -> Self {
        let cfg = Arc::new(cfg);
        let missions = MissionRunner::new(
            deps.store.clone(),
            deps.metrics.clone(),
            deps.llm,
            Arc::clone(&cfg),
            Arc::clone(&deps.clock),
        );
        Self {
            maintenance: Maintenance::new(deps.store.clone(), deps.metrics.clone()),
            missions: Arc::new(missions),
            store: deps.store,
            metrics: deps.metrics,
            cfg,
            clock: deps.clock,
            pass_lock: Mutex::new(()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The housekeeping jobs of this runner (also used for the audit retention task).
    pub fn maintenance(&self) -> &Maintenance {
        &self.maintenance
    }

    /// Runs one due mission (see [`MissionOutcome`]). Never panics; every path is
    /// reported.
    pub async fn run_mission(&self, due: DueMission) -> MissionOutcome {
        self.missions.run(due).await
    }

    /// True while a pass is executing.
    pub fn pass_in_flight(&self) -> bool {
        self.pass_lock.try_lock().is_err()
    }

    /// Runs one pass unless one is already running (then answers `overlap-skipped`).
    /// Never fails: every error is counted and reported in the stats.
    pub async fn tick(&self) -> TickStats {
        let Ok(_guard) = self.pass_lock.try_lock() else {
            return TickStats::overlap(self.clock.now());
        };
        let started = Instant::now();
        let now = self.clock.now();
        let mut stats = TickStats::empty(now);
        let pass = std::panic::AssertUnwindSafe(
            self.pass(now, &mut stats)
                .instrument(tracing::info_span!("tick.pass")),
        );
        if pass.catch_unwind().await.is_err() {
            events::PassPanicked {
                stage: PanicStage::Pass,
            }
            .emit(&self.metrics);
            stats.errors.push("pass: panicked".into());
            stats.pass_failed = true;
        }

        stats.duration_ms = started.elapsed().as_millis() as u64;
        events::PassFinished {
            elapsed: started.elapsed(),
        }
        .emit(&self.metrics);
        stats
    }

    /// Waits until no pass is running (or the deadline passes). Used by shutdown.
    pub async fn wait_idle(&self, deadline: Duration) -> bool {
        tokio::time::timeout(deadline, self.pass_lock.lock())
            .await
            .is_ok()
    }

    async fn pass(&self, now: DateTime<Utc>, stats: &mut TickStats) {
        self.refresh(stats)
            .instrument(tracing::info_span!("tick.refresh"))
            .await;
        self.maintenance.before_pass().await;
        // Keys only: the record is loaded when the mission is about to run.
        let due = match self.store.list_due_keys(now, self.cfg.due_limit).await {
            Ok(due) => due,
            Err(e) => {
                events::ListDueFailed { error: &e }.emit(&self.metrics);
                stats.errors.push(format!("list-due: {e}"));
                stats.pass_failed = true;
                return;
            }
        };
        stats.due_mission_count = due.len();
        let oldest_age = due
            .iter()
            .map(|k| k.next_run_at)
            .min()
            .and_then(|oldest| (now - oldest).to_std().ok())
            .unwrap_or_default();
        events::DueListed { oldest_age }.emit(&self.metrics);
        self.run_due(due, stats).await;
    }

    /// Folds new `sync_changes` rows into snapshots; reports it in the stats.
    async fn refresh(&self, stats: &mut TickStats) {
        let started = Instant::now();
        let opts = mana_ai_store::RefreshOptions {
            batch_rows: self.cfg.refresh_batch_rows,
            safety_margin: self.cfg.refresh_safety_margin,
        };
        let refresh = std::panic::AssertUnwindSafe(self.store.refresh_snapshots(opts));
        let Ok(result) = refresh.catch_unwind().await else {
            // The store discarded the connection that held the refresh lock.
            events::PassPanicked {
                stage: PanicStage::Refresh,
            }
            .emit(&self.metrics);
            stats.errors.push("refresh: panicked".into());
            stats.pass_failed = true;
            events::RefreshTimed {
                elapsed: started.elapsed(),
            }
            .emit(&self.metrics);
            return;
        };
        match result {
            Ok(RefreshOutcome::Done(r)) => {
                let lag = r.position.map(|pos| {
                    let ms = (Utc::now() - pos).num_milliseconds().max(0);
                    Duration::from_millis(ms as u64)
                });
                events::SnapshotsRefreshed {
                    new_snapshots: r.new_snapshots,
                    updated_snapshots: r.updated_snapshots,
                    rows_applied: r.rows_applied,
                    lag,
                }
                .emit(&self.metrics);
                events::RowsQuarantined {
                    by_reason: &r.quarantined,
                }
                .emit(&self.metrics);
                stats.refresh = RefreshReport {
                    users_processed: r.users_processed,
                    new_snapshots: r.new_snapshots,
                    updated_snapshots: r.updated_snapshots,
                    rows_applied: r.rows_applied,
                    busy: false,
                    rows_quarantined: r.quarantined.values().sum(),
                };
            }
            Ok(RefreshOutcome::Busy) => stats.refresh.busy = true,
            Err(e) => {
                events::RefreshFailed { error: &e }.emit(&self.metrics);
                stats.errors.push(format!("refresh: {e}"));
                stats.pass_failed = true;
            }
        }
        events::RefreshTimed {
            elapsed: started.elapsed(),
        }
        .emit(&self.metrics);
    }

    /// Plans concurrently, bounded by `max_concurrent_plans`: every mission is its own
    /// task, so their CPU work spreads over every worker thread and one slow mission never
    /// holds up the rest; each has its own deadline inside the mission run. Dropping the
    /// pass (shutdown after the grace period) drops the JoinSet, which aborts the missions
    /// still in flight.
    async fn run_due(&self, due: Vec<DueKey>, stats: &mut TickStats) {
        let slots = Arc::new(Semaphore::new(self.cfg.max_concurrent_plans.max(1)));
        let mut tasks: JoinSet<(String, MissionOutcome)> = JoinSet::new();
        for key in due {
            // Acquire before spawning, so at most `max_concurrent_plans` tasks exist.
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                // Unreachable: the semaphore is never closed.
                break;
            };
            let missions = Arc::clone(&self.missions);
            let store = self.store.clone();
            let runner_id = self.cfg.runner_id.clone();
            // The task runs inside the pass's span (the mission's own span is made by
            // `MissionRunner::run`).
            tasks.spawn(
                async move {
                    let _permit = permit;
                    let id = key.mission_id.clone();
                    let outcome = run_task(&store, &missions, &key, &runner_id).await;
                    (id, outcome)
                }
                .in_current_span(),
            );
            while let Some(done) = tasks.try_join_next() {
                self.record_outcome(done, stats);
            }
        }
        while let Some(done) = tasks.join_next().await {
            self.record_outcome(done, stats);
        }
    }

    /// Adds one finished mission task to the pass's stats and metrics.
    fn record_outcome(
        &self,
        done: Result<(String, MissionOutcome), tokio::task::JoinError>,
        stats: &mut TickStats,
    ) {
        let (mission_id, outcome) = match done {
            Ok(r) => r,
            // Panics are caught inside the task; this is a cancelled task.
            Err(e) => (
                "unknown".to_string(),
                MissionOutcome::Error(RunError::TaskEnded(e)),
            ),
        };
        if matches!(outcome, MissionOutcome::Error(RunError::Panicked)) {
            events::PassPanicked {
                stage: PanicStage::Mission,
            }
            .emit(&self.metrics);
        }
        match outcome {
            MissionOutcome::Planned { .. } => {
                stats.plans_produced += 1;
                stats.plans_written_back += 1;
            }
            MissionOutcome::Failed {
                nothing_valid,
                phase,
            } => {
                stats.failed += 1;
                if nothing_valid {
                    stats.parse_failures += 1;
                }
                stats.errors.push(format!(
                    "mission={mission_id}: failed in {}",
                    phase.as_str()
                ));
            }
            MissionOutcome::Skipped(_) | MissionOutcome::Deferred => stats.skipped += 1,
            MissionOutcome::Error(e) => {
                events::MissionErrored {
                    mission_id: &mission_id,
                    error: &e,
                }
                .emit(&self.metrics);
                stats.errors.push(format!("mission={mission_id}: {e}"));
            }
        }
    }
}

/// One mission task: loads the due mission and runs it; a panic becomes an error, and the
/// claim the run may hold is given back (the next pass may claim it again).
async fn run_task(
    store: &Store,
    missions: &MissionRunner,
    key: &DueKey,
    runner_id: &str,
) -> MissionOutcome {
    let run = async {
        match store.load_due_mission(key).await {
            Ok(Some(d)) => missions.run(d).await,
            // Paused, deleted or rescheduled since it was listed.
            Ok(None) => MissionOutcome::Skipped(SkipReason::NoLongerDue),
            Err(e) => {
                missions.defer_unloaded(key).await;
                MissionOutcome::Error(RunError::LoadMission(e))
            }
        }
    };
    match std::panic::AssertUnwindSafe(run).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(_) => {
            let released = store
                .release_run(&key.user_id, &key.mission_id, key.next_run_at, runner_id)
                .await;
            if let Err(e) = released {
                tracing::warn!(error = %e, "could not release the claim of a panicked mission; it expires with its lease");
            }
            MissionOutcome::Error(RunError::Panicked)
        }
    }
}
