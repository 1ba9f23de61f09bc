//! Every event of the runner in one place: each event is a type whose [`Emit::emit`]
//! writes its log line and moves its metrics together, so the two never drift. Label
//! values come from the typed enums of [`crate::outcome`] or from bounded label helpers;
//! metric names, label names and label values are a contract (docs/metrics.md, checked by
//! `tests/metrics_doc.rs`).

use std::fmt::Display;
use std::time::Duration;

use mana_ai_core::catalog::Catalog;
use mana_ai_core::plan::{CallOutcome, IterationPhase, PlanOutcome};

use crate::outcome::{failure_phase_label, AgentDecision};
use crate::Metrics;

mod research;
pub(crate) use research::*;

/// An event: its log line (if any) and its metrics.
pub(crate) trait Emit {
    fn emit(self, metrics: &Metrics);
}

// ----------------------------------------------------------------------------- the pass

/// A pass ran (not counted for overlap-skipped calls).
pub(crate) struct PassFinished {
    pub elapsed: Duration,
}

impl Emit for PassFinished {
    fn emit(self, m: &Metrics) {
        m.ticks_total.inc();
        m.tick_duration_seconds.observe(self.elapsed.as_secs_f64());
    }
}

/// The snapshot refresh folded rows; `lag` is how far its cursor trails the clock.
pub(crate) struct SnapshotsRefreshed {
    pub new_snapshots: usize,
    pub updated_snapshots: usize,
    pub rows_applied: usize,
    pub lag: Option<Duration>,
}

impl Emit for SnapshotsRefreshed {
    fn emit(self, m: &Metrics) {
        m.snapshots_new_total.inc_by(self.new_snapshots as u64);
        m.snapshots_updated_total
            .inc_by(self.updated_snapshots as u64);
        m.snapshot_rows_applied_total
            .inc_by(self.rows_applied as u64);
        if let Some(lag) = self.lag {
            m.refresh_lag_seconds.set(lag.as_millis() as f64 / 1000.0);
        }
    }
}

/// The pass listed its due missions: the age of the oldest one (0 when none is due).
pub(crate) struct DueListed {
    pub oldest_age: Duration,
}

impl Emit for DueListed {
    fn emit(self, m: &Metrics) {
        m.due_oldest_age_seconds
            .set(self.oldest_age.as_millis() as f64 / 1000.0);
    }
}

/// The refresh quarantined rows (skipped and recorded them; the store logged their ids).
pub(crate) struct RowsQuarantined<'a> {
    pub by_reason: &'a std::collections::BTreeMap<mana_ai_store::QuarantineReason, usize>,
}

impl Emit for RowsQuarantined<'_> {
    fn emit(self, m: &Metrics) {
        for (reason, n) in self.by_reason {
            m.rows_quarantined_total
                .with_label_values(&[reason.as_str()])
                .inc_by(*n as u64);
        }
    }
}

/// Where in a pass a panic was caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PanicStage {
    /// The snapshot refresh (the pass goes on from the stored snapshots).
    Refresh,
    /// One mission task (the other missions go on).
    Mission,
    /// Anywhere else in the pass (maintenance, due listing, bookkeeping): the pass ends.
    Pass,
}

impl PanicStage {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PanicStage::Refresh => "refresh",
            PanicStage::Mission => "mission",
            PanicStage::Pass => "pass",
        }
    }
}

/// A panic was caught inside a pass.
pub(crate) struct PassPanicked {
    pub stage: PanicStage,
}

impl Emit for PassPanicked {
    fn emit(self, m: &Metrics) {
        tracing::error!(stage = self.stage.as_str(), "panic caught in a tick pass");
        m.pass_panics_total
            .with_label_values(&[self.stage.as_str()])
            .inc();
    }
}

/// The snapshot refresh failed.
pub(crate) struct RefreshFailed<'a, E: Display> {
    pub error: &'a E,
}

impl<E: Display> Emit for RefreshFailed<'_, E> {
    fn emit(self, _: &Metrics) {
        tracing::error!(error = %self.error, "snapshot refresh failed");
    }
}

/// The refresh step ended (done, busy or failed).
pub(crate) struct RefreshTimed {
    pub elapsed: Duration,
}

impl Emit for RefreshTimed {
    fn emit(self, m: &Metrics) {
        m.refresh_duration_seconds
            .observe(self.elapsed.as_secs_f64());
    }
}

/// Listing the due missions failed: the pass ends.
pub(crate) struct ListDueFailed<'a, E: Display> {
    pub error: &'a E,
}

impl<E: Display> Emit for ListDueFailed<'_, E> {
    fn emit(self, _: &Metrics) {
        tracing::error!(error = %self.error, "listing due missions failed");
    }
}

/// A mission run ended with an internal error; nothing was written.
pub(crate) struct MissionErrored<'a, E: Display> {
    pub mission_id: &'a str,
    pub error: &'a E,
}

impl<E: Display> Emit for MissionErrored<'_, E> {
    fn emit(self, m: &Metrics) {
        m.mission_errors_total.inc();
        m.mission_failures_total
            .with_label_values(&[failure_phase_label(None)])
            .inc();
        tracing::error!(mission = %self.mission_id, error = %self.error, "mission run error");
    }
}

// -------------------------------------------------------------------------- maintenance

/// A research job of an inactive mission was dropped; unfinished ones count as abandoned.
pub(crate) struct InactiveResearchJobAbandoned<'a> {
    pub provider: &'a str,
}

impl Emit for InactiveResearchJobAbandoned<'_> {
    fn emit(self, m: &Metrics) {
        tracing::info!(provider = %self.provider, "research job of an inactive mission abandoned");
        m.research_jobs_abandoned_total
            .with_label_values(&["mission-inactive"])
            .inc();
    }
}

/// A maintenance step failed (`what` names it: the log line's message).
pub(crate) struct MaintenanceFailed<'a, E: Display> {
    pub what: MaintenanceStep,
    pub error: &'a E,
}

/// The maintenance steps that can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MaintenanceStep {
    ResearchJobCleanup,
    TokenBudgetPruning,
    AuditRetention,
}

impl<E: Display> Emit for MaintenanceFailed<'_, E> {
    fn emit(self, _: &Metrics) {
        let e = self.error;
        match self.what {
            MaintenanceStep::ResearchJobCleanup => {
                tracing::warn!(error = %e, "research job cleanup failed")
            }
            MaintenanceStep::TokenBudgetPruning => {
                tracing::warn!(error = %e, "token budget pruning failed")
            }
            MaintenanceStep::AuditRetention => {
                tracing::warn!(error = %e, "decrypt audit retention failed")
            }
        }
    }
}

// ------------------------------------------------------------------------- mission run

/// The agent gate decided (`ran` once the claim is held).
pub(crate) struct AgentDecided(pub AgentDecision);

impl Emit for AgentDecided {
    fn emit(self, m: &Metrics) {
        m.agent_decisions_total
            .with_label_values(&[self.0.as_str()])
            .inc();
    }
}

/// Planning of a claimed mission starts (`entered`) or ends. Emitted by [`InFlight`].
struct MissionInFlight {
    entered: bool,
}

/// A claimed mission in flight: entered when made, left when dropped — also when its task
/// panics or is cancelled, so `mana_ai_missions_in_flight` never stays raised.
pub(crate) struct InFlight<'m>(&'m Metrics);

impl<'m> InFlight<'m> {
    pub(crate) fn enter(m: &'m Metrics) -> Self {
        MissionInFlight { entered: true }.emit(m);
        Self(m)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        MissionInFlight { entered: false }.emit(self.0);
    }
}

impl Emit for MissionInFlight {
    fn emit(self, m: &Metrics) {
        if self.entered {
            m.missions_in_flight.inc();
        } else {
            m.missions_in_flight.dec();
        }
    }
}

/// A write-back reached the database and went this way.
pub(crate) struct WroteBack(pub mana_ai_store::WritePath);

impl Emit for WroteBack {
    fn emit(self, m: &Metrics) {
        m.write_backs_total
            .with_label_values(&[self.0.as_str()])
            .inc();
    }
}

/// The research gate answered `Pending`: the run waits for a later pass.
pub(crate) struct ResearchPendingSkip;

impl Emit for ResearchPendingSkip {
    fn emit(self, m: &Metrics) {
        m.research_jobs_pending_skips_total.inc();
    }
}

/// A plan was written back. This is also the one place `agent_decisions_total{decision=
/// "ran"}` counts: once per written plan (not at claim time, not for a deferred, failed
/// or lost run).
pub(crate) struct PlanWritten;

impl Emit for PlanWritten {
    fn emit(self, m: &Metrics) {
        m.plans_produced_total.inc();
        m.plans_written_back_total.inc();
        m.agent_decisions_total
            .with_label_values(&[AgentDecision::Ran.as_str()])
            .inc();
    }
}

/// A failed iteration was written back.
pub(crate) struct MissionFailed {
    pub phase: IterationPhase,
    pub nothing_valid: bool,
}

impl Emit for MissionFailed {
    fn emit(self, m: &Metrics) {
        m.mission_errors_total.inc();
        m.mission_failures_total
            .with_label_values(&[failure_phase_label(Some(self.phase))])
            .inc();
        if self.nothing_valid {
            m.parse_failures_total.inc();
        }
    }
}

/// A run found no room for its iteration under the row limit (the mission holds too many
/// unfinished iterations): only the schedule was written. Counted as a failed run in
/// phase `finalizing`.
pub(crate) struct HistoryFull<'a> {
    pub mission_id: &'a str,
    /// The size the row would have had.
    pub bytes: usize,
}

impl Emit for HistoryFull<'_> {
    fn emit(self, m: &Metrics) {
        MissionFailed {
            phase: IterationPhase::Finalizing,
            nothing_valid: false,
        }
        .emit(m);
        tracing::warn!(
            mission = %self.mission_id,
            bytes = self.bytes,
            "iteration history full: no iteration written"
        );
    }
}

/// The planning loop ended in an LLM error.
pub(crate) struct ProviderFailed<'a> {
    pub mission_id: &'a str,
    /// The text before the first `/` of the configured model.
    pub provider: &'a str,
    pub kind: &'a str,
}

impl Emit for ProviderFailed<'_> {
    fn emit(self, m: &Metrics) {
        m.provider_errors_total
            .with_label_values(&[self.provider, self.kind])
            .inc();
        tracing::warn!(mission = %self.mission_id, kind = self.kind, "planner failed");
    }
}

/// The metric label of a call outcome (`mana_ai_tool_calls_total{outcome}`).
pub(crate) fn call_outcome_label(o: &CallOutcome) -> &'static str {
    match o {
        CallOutcome::Accepted => "deferred",
        CallOutcome::Rejected(_) => "rejected",
        CallOutcome::Duplicate => "duplicate",
        CallOutcome::OverCap => "over-cap",
        CallOutcome::Flagged(_) => "flagged",
        CallOutcome::Blocked(_) => "blocked",
    }
}

/// A planning loop completed: rounds, every call, reminders and compactions.
pub(crate) struct PlanObserved<'a> {
    pub catalog: &'a Catalog,
    pub outcome: &'a PlanOutcome,
}

impl Emit for PlanObserved<'_> {
    fn emit(self, m: &Metrics) {
        let outcome = self.outcome;
        m.planner_rounds.observe(f64::from(outcome.rounds));
        for call in &outcome.call_log {
            let (tool, policy) = match self.catalog.get(&call.tool) {
                Some(t) => (t.name.as_str(), t.default_policy.as_str()),
                None => ("unknown", "unknown"),
            };
            m.tool_calls_total
                .with_label_values(&[tool, policy, call_outcome_label(&call.outcome)])
                .inc();
        }
        for (producer, severity) in &outcome.reminders {
            m.reminders_emitted_total
                .with_label_values(&[producer, severity.as_str()])
                .inc();
        }
        if outcome.compactions > 0 {
            m.compactions_triggered_total
                .inc_by(u64::from(outcome.compactions));
            m.compacted_turns
                .observe(f64::from(outcome.compacted_turns));
        }
    }
}

// ------------------------------------------------------------------------------ budget

/// One LLM call returned (after all of the client's attempts).
pub(crate) struct LlmCallTimed {
    pub elapsed: Duration,
}

impl Emit for LlmCallTimed {
    fn emit(self, m: &Metrics) {
        m.planner_request_duration_seconds
            .observe(self.elapsed.as_secs_f64());
    }
}

/// Tokens booked to an agent.
pub(crate) struct TokensUsed<'a> {
    pub agent_id: &'a str,
    pub tokens: u64,
}

impl Emit for TokensUsed<'_> {
    fn emit(self, m: &Metrics) {
        if self.tokens > 0 {
            m.add_tokens_used(self.agent_id, self.tokens);
        }
    }
}

/// A reservation was denied: the call is not made.
pub(crate) struct BudgetExhausted<'a> {
    pub agent_id: &'a str,
    pub mission_id: &'a str,
    pub committed: u64,
    pub cap: u64,
}

impl Emit for BudgetExhausted<'_> {
    fn emit(self, _: &Metrics) {
        tracing::info!(
            agent = %self.agent_id,
            mission = %self.mission_id,
            committed = self.committed,
            cap = self.cap,
            "token budget exhausted; call not made"
        );
    }
}

// ------------------------------------------------------------------------------ inputs

/// An input names a module without a resolver: skipped.
pub(crate) struct UnknownInputModule<'a> {
    pub mission_id: &'a str,
}

impl Emit for UnknownInputModule<'_> {
    fn emit(self, m: &Metrics) {
        m.resolver_failures_total
            .with_label_values(&["unknown"])
            .inc();
        tracing::debug!(mission = %self.mission_id, "input with an unknown module skipped");
    }
}

/// A resolver failed (database): its input is dropped, the mission continues.
pub(crate) struct ResolverFailed<'a, E: Display> {
    pub mission_id: &'a str,
    pub module: &'static str,
    pub error: &'a E,
}

impl<E: Display> Emit for ResolverFailed<'_, E> {
    fn emit(self, m: &Metrics) {
        m.resolver_failures_total
            .with_label_values(&[self.module])
            .inc();
        tracing::warn!(
            mission = %self.mission_id,
            module = self.module,
            error = %self.error,
            "input resolver failed; input dropped"
        );
    }
}

/// The mission's key grant could not be unwrapped: encrypted inputs are skipped.
pub(crate) struct GrantUnusable<'a> {
    pub mission_id: &'a str,
    pub reason: &'static str,
}

impl Emit for GrantUnusable<'_> {
    fn emit(self, m: &Metrics) {
        m.grant_skips_total.with_label_values(&[self.reason]).inc();
        tracing::warn!(
            mission = %self.mission_id,
            reason = self.reason,
            "mission grant unusable; encrypted inputs are skipped"
        );
    }
}

/// An encrypted input outside the grant's allowlist was refused.
pub(crate) struct GrantScopeViolation<'a> {
    pub mission_id: &'a str,
    pub table: &'static str,
}

impl Emit for GrantScopeViolation<'_> {
    fn emit(self, m: &Metrics) {
        m.grant_scope_violations_total
            .with_label_values(&[self.table])
            .inc();
        tracing::warn!(
            mission = %self.mission_id,
            table = self.table,
            "input outside the grant allowlist refused"
        );
    }
}

/// An encrypted input could not be decrypted (audited): dropped.
pub(crate) struct DecryptFailed<'a> {
    pub mission_id: &'a str,
    pub table: &'static str,
    pub reason: &'static str,
}

impl Emit for DecryptFailed<'_> {
    fn emit(self, _: &Metrics) {
        tracing::warn!(
            mission = %self.mission_id,
            table = self.table,
            reason = self.reason,
            "input could not be decrypted; input dropped"
        );
    }
}

/// Fields of one input were decrypted under the grant.
pub(crate) struct FieldsDecrypted {
    pub table: &'static str,
    pub fields: usize,
}

impl Emit for FieldsDecrypted {
    fn emit(self, m: &Metrics) {
        if self.fields > 0 {
            m.decrypts_total
                .with_label_values(&[self.table])
                .inc_by(self.fields as u64);
        }
    }
}
