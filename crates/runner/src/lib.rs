//! The runner: one tick pass = refresh snapshots → list due missions → run each due
//! mission (concurrently, bounded) → report stats. Also the scheduler that runs passes
//! on an interval, never two at once, with a two-phase shutdown.
//!
//! Library crates never install signal handlers: the binary owns them and calls
//! [`Scheduler::shutdown`].

pub mod budget;
mod inputs;
pub mod metrics;
pub mod mission;
pub mod research;
#[cfg(feature = "testkit")]
pub mod testkit;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use mana_ai_core::chat::LlmClient;
use mana_ai_store::{RefreshOutcome, Store};
use serde::Serialize;
use tokio::sync::{watch, Mutex, Semaphore};
use tokio::task::JoinSet;

pub use metrics::Metrics;
pub use mission::MissionOutcome;

/// Runner settings (validated by the binary's config).
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub due_limit: i64,
    pub refresh_batch_rows: i32,
    pub max_concurrent_plans: usize,
    pub mission_deadline: Duration,
    pub refresh_safety_margin: Duration,
    /// Identifies this process in mission claims.
    pub runner_id: String,
    pub llm_model: String,
    pub policy_mode: mana_ai_core::plan::PolicyMode,
    /// Model context window for compaction; 0 disables compaction.
    pub context_window_tokens: u64,
    pub default_timezone: chrono_tz::Tz,
    pub json_plan_fallback: bool,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Limits of missions without an agent (the default agent "Mana").
    pub default_agent_max_concurrent: u32,
    pub default_agent_tokens_per_day: Option<u64>,
    /// The service's RSA private key for unwrapping mission key grants
    /// (`MANA_AI_PRIVATE_KEY_PEM`); `None` disables encrypted inputs (grants are skipped
    /// with reason `not-configured`). Its `Debug` output is redacted.
    pub grant_key: Option<Arc<mana_ai_core::crypto::GrantPrivateKey>>,
    /// Base URL of mana-api for shallow news research (`MANA_API_URL`); `None`: off.
    pub news_api_url: Option<String>,
    /// Base URL of mana-research (`MANA_RESEARCH_URL`); `None`: no deep research at
    /// all (not even polling of existing jobs).
    pub research_url: Option<String>,
    /// Submit new deep-research jobs (`MANA_AI_DEEP_RESEARCH_ENABLED`).
    pub deep_research_enabled: bool,
    /// `MANA_SERVICE_KEY`, sent to mana-api and mana-research.
    pub service_key: research::ServiceKey,
    /// Words that trigger shallow research (word-start, case-insensitive); empty: off.
    pub shallow_research_triggers: Vec<String>,
    /// Phrases that trigger deep research (whole words, case-insensitive).
    pub deep_research_triggers: Vec<String>,
    /// Header carrying the service key to mana-api; `None`: not sent.
    pub news_service_key_header: Option<String>,
    /// Header carrying the mission owner's id to mana-api; `None`: not sent.
    pub news_user_id_header: Option<String>,
    /// A deep-research job older than this is abandoned (shallow fallback).
    pub research_job_max_age: Duration,
    /// A job whose polls (or submits) fail this many times in a row is abandoned.
    pub research_max_poll_failures: u32,
    pub research_timeouts: research::ResearchTimeouts,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            due_limit: 1_000,
            refresh_batch_rows: 5_000,
            max_concurrent_plans: 64,
            mission_deadline: Duration::from_secs(300),
            refresh_safety_margin: Duration::from_millis(250),
            runner_id: format!("runner-{}", uuid::Uuid::new_v4()),
            llm_model: "mana/reasoning".into(),
            policy_mode: mana_ai_core::plan::PolicyMode::LogOnly,
            context_window_tokens: 1_000_000,
            default_timezone: chrono_tz::Europe::Berlin,
            json_plan_fallback: false,
            retry_base: Duration::from_secs(60),
            retry_cap: Duration::from_secs(6 * 3600),
            default_agent_max_concurrent: 1,
            default_agent_tokens_per_day: Some(200_000),
            grant_key: None,
            news_api_url: None,
            research_url: None,
            deep_research_enabled: false,
            service_key: research::ServiceKey::default(),
            shallow_research_triggers: research::DEFAULT_SHALLOW_TRIGGERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            deep_research_triggers: research::DEFAULT_DEEP_TRIGGERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            news_service_key_header: Some("X-Service-Key".into()),
            news_user_id_header: Some("X-User-Id".into()),
            research_job_max_age: Duration::from_secs(2 * 3600),
            research_max_poll_failures: 10,
            research_timeouts: research::ResearchTimeouts::default(),
        }
    }
}

/// What one refresh did, as reported by `/internal/tick`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RefreshReport {
    pub users_processed: usize,
    pub new_snapshots: usize,
    pub updated_snapshots: usize,
    pub rows_applied: usize,
    pub busy: bool,
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
        }
    }

    /// The answer to a pass requested while another is running.
    pub fn overlap(now: DateTime<Utc>) -> Self {
        let mut s = Self::empty(now);
        s.errors.push("overlap-skipped".into());
        s
    }
}

/// A source of "now" (injected so tests can pin time).
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// What a runner is built from.
pub struct RunnerDeps {
    pub store: Store,
    pub metrics: Metrics,
    pub llm: Arc<dyn LlmClient>,
    pub clock: Arc<dyn Clock>,
}

/// Runs tick passes. Cheap to share (`Arc`).
pub struct Runner {
    shared: Arc<Shared>,
    pass_lock: Mutex<()>,
}

/// What every mission task of a pass needs: shared by the runner and its tasks, so a
/// mission can run as its own tokio task (on any worker thread).
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) metrics: Metrics,
    pub(crate) llm: Arc<dyn LlmClient>,
    pub(crate) cfg: RunnerConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) research_http: research::ResearchHttp,
    /// OpenAI tool specs per offered tool set (i.e. per effective policy), built once.
    pub(crate) tool_specs: mission::ToolSpecCache,
}

impl Runner {
    pub fn new(deps: RunnerDeps, cfg: RunnerConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                store: deps.store,
                metrics: deps.metrics,
                llm: deps.llm,
                cfg,
                clock: deps.clock,
                research_http: research::ResearchHttp::new(),
                tool_specs: mission::ToolSpecCache::default(),
            }),
            pass_lock: Mutex::new(()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Runs one due mission (see [`MissionOutcome`]). Never panics; every path is
    /// reported.
    pub async fn run_mission(&self, due: mana_ai_store::DueMission) -> MissionOutcome {
        self.shared.run_mission(due).await
    }

    /// True while a pass is executing.
    pub fn pass_in_flight(&self) -> bool {
        self.pass_lock.try_lock().is_err()
    }

    /// Runs one pass unless one is already running (then answers `overlap-skipped`).
    /// Never fails: every error is counted and reported in the stats.
    pub async fn tick(&self) -> TickStats {
        let Ok(_guard) = self.pass_lock.try_lock() else {
            return TickStats::overlap(self.shared.clock.now());
        };
        let started = Instant::now();
        let now = self.shared.clock.now();
        let mut stats = TickStats::empty(now);
        Shared::pass(&self.shared, now, &mut stats).await;
        stats.duration_ms = started.elapsed().as_millis() as u64;
        self.shared.metrics.ticks_total.inc();
        self.shared
            .metrics
            .tick_duration_seconds
            .observe(started.elapsed().as_secs_f64());
        stats
    }

    /// Waits until no pass is running (or the deadline passes). Used by shutdown.
    pub async fn wait_idle(&self, deadline: Duration) -> bool {
        tokio::time::timeout(deadline, self.pass_lock.lock())
            .await
            .is_ok()
    }
}

impl Shared {
    async fn pass(self: &Arc<Self>, now: DateTime<Utc>, stats: &mut TickStats) {
        let refresh_started = Instant::now();
        let opts = mana_ai_store::RefreshOptions {
            batch_rows: self.cfg.refresh_batch_rows,
            safety_margin: self.cfg.refresh_safety_margin,
        };
        match self.store.refresh_snapshots(opts).await {
            Ok(RefreshOutcome::Done(r)) => {
                self.metrics
                    .snapshots_new_total
                    .inc_by(r.new_snapshots as u64);
                self.metrics
                    .snapshots_updated_total
                    .inc_by(r.updated_snapshots as u64);
                self.metrics
                    .snapshot_rows_applied_total
                    .inc_by(r.rows_applied as u64);
                if let Some(pos) = r.position {
                    let lag = (Utc::now() - pos).num_milliseconds().max(0) as f64 / 1000.0;
                    self.metrics.refresh_lag_seconds.set(lag);
                }
                stats.refresh = RefreshReport {
                    users_processed: r.users_processed,
                    new_snapshots: r.new_snapshots,
                    updated_snapshots: r.updated_snapshots,
                    rows_applied: r.rows_applied,
                    busy: false,
                };
            }
            Ok(RefreshOutcome::Busy) => stats.refresh.busy = true,
            Err(e) => {
                tracing::error!(error = %e, "snapshot refresh failed");
                stats.errors.push(format!("refresh: {e}"));
            }
        }
        self.metrics
            .refresh_duration_seconds
            .observe(refresh_started.elapsed().as_secs_f64());
        self.research_housekeeping().await;
        // Token budget housekeeping: usage older than 48 h, expired reservations.
        if let Err(e) = self.store.prune_token_budget().await {
            tracing::warn!(error = %e, "token budget pruning failed");
        }
        // Keys only: the record is loaded when the mission is about to run.
        let due = match self.store.list_due_keys(now, self.cfg.due_limit).await {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "listing due missions failed");
                stats.errors.push(format!("list-due: {e}"));
                return;
            }
        };
        stats.due_mission_count = due.len();
        // Plan concurrently, bounded by `max_concurrent_plans`: every mission is its own
        // task, so their CPU work spreads over every worker thread and one slow mission
        // never holds up the rest; each has its own deadline inside `run_mission`.
        // Dropping the pass (shutdown after the grace period) drops the JoinSet, which
        // aborts the missions still in flight.
        let slots = Arc::new(Semaphore::new(self.cfg.max_concurrent_plans.max(1)));
        let mut tasks: JoinSet<(String, MissionOutcome)> = JoinSet::new();
        for key in due {
            // Acquire before spawning, so at most `max_concurrent_plans` tasks exist.
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                // Unreachable: the semaphore is never closed.
                break;
            };
            let shared = Arc::clone(self);
            tasks.spawn(async move {
                let _permit = permit;
                let id = key.mission_id.clone();
                let run = async {
                    match shared.store.load_due_mission(&key).await {
                        Ok(Some(d)) => shared.run_mission(d).await,
                        // Paused, deleted or rescheduled since it was listed.
                        Ok(None) => MissionOutcome::Skipped("no-longer-due"),
                        Err(e) => MissionOutcome::Error(format!("load mission: {e}")),
                    }
                };
                let outcome = std::panic::AssertUnwindSafe(run)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| MissionOutcome::Error("mission task panicked".into()));
                (id, outcome)
            });
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
                MissionOutcome::Error(format!("mission task ended: {e}")),
            ),
        };
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
                stats
                    .errors
                    .push(format!("mission={mission_id}: failed in {phase}"));
            }
            MissionOutcome::Skipped(_) => stats.skipped += 1,
            MissionOutcome::Error(e) => {
                self.metrics.mission_errors_total.inc();
                self.metrics
                    .mission_failures_total
                    .with_label_values(&["internal"])
                    .inc();
                tracing::error!(mission = %mission_id, error = %e, "mission run error");
                stats.errors.push(format!("mission={mission_id}: {e}"));
            }
        }
    }
}

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
