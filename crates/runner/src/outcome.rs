//! How a mission run ends: one closed enum ([`MissionOutcome`]) with typed reasons. Each
//! reason enum has an `as_str()` giving its label, the exact string used in metric labels
//! (`mana_ai_agent_decisions_total{decision}`, `mana_ai_mission_failures_total{phase}`) and
//! in the pass stats; those strings are a compatibility contract.

use mana_ai_core::plan::IterationPhase;

use crate::error::RunError;

/// How one due mission ended in this pass.
#[derive(Debug)]
pub enum MissionOutcome {
    /// A plan was written back (`steps` may be 0: the model found nothing to do).
    Planned { steps: usize },
    /// The run failed; a `failed` iteration was written and a retry scheduled.
    /// `nothing_valid`: the model produced nothing usable (a parse failure).
    Failed {
        phase: IterationPhase,
        nothing_valid: bool,
    },
    /// Not run this pass (agent gate, claim held elsewhere, already done…).
    Skipped(SkipReason),
    /// A deep-research job for this due run is still pending: the run waits for a later
    /// pass (counted with the skipped runs).
    Deferred,
    /// Something outside the plan failed (database); nothing was written.
    Error(RunError),
}

impl MissionOutcome {
    /// The outcome's label: `planned`, `failed`, the skip reason, `research-pending` or
    /// `error`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Planned { .. } => "planned",
            Self::Failed { .. } => "failed",
            Self::Skipped(reason) => reason.as_str(),
            Self::Deferred => "research-pending",
            Self::Error(_) => "error",
        }
    }
}

/// Why an agent gate stopped a run (`mana_ai_agent_decisions_total{decision}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentSkip {
    /// The mission names an agent that does not exist or is deleted.
    MissingAgent,
    Archived,
    Paused,
    /// The agent already runs `maxConcurrentMissions` missions.
    Concurrency,
    /// The agent's daily token budget is used up.
    Budget,
}

impl AgentSkip {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingAgent => "skipped-missing-agent",
            Self::Archived => "skipped-archived",
            Self::Paused => "skipped-paused",
            Self::Concurrency => "skipped-concurrency",
            Self::Budget => "skipped-budget",
        }
    }
}

/// The agent gate's decision for one run (`mana_ai_agent_decisions_total{decision}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentDecision {
    /// The claim is held: the run goes ahead.
    Ran,
    Skipped(AgentSkip),
}

impl AgentDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ran => "ran",
            Self::Skipped(s) => s.as_str(),
        }
    }
}

/// Why a due mission was not run this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// An agent gate said no.
    Agent(AgentSkip),
    /// Paused, deleted or rescheduled since it was listed.
    NoLongerDue,
    /// This due run was already written.
    AlreadyDone,
    /// Another runner holds the claim of this due run.
    HeldElsewhere,
    /// The claim expired before the write-back.
    ClaimLost,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent(s) => s.as_str(),
            Self::NoLongerDue => "no-longer-due",
            Self::AlreadyDone => "already-done",
            Self::HeldElsewhere => "held-elsewhere",
            Self::ClaimLost => "claim-lost",
        }
    }
}

/// The `mana_ai_mission_failures_total{phase}` label of a failed run: the failed
/// iteration's phase, or `internal` for an error before anything was written.
pub(crate) fn failure_phase_label(phase: Option<IterationPhase>) -> &'static str {
    phase.map_or("internal", IterationPhase::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_contract_strings() {
        let cases: Vec<(&str, &str)> = vec![
            (AgentDecision::Ran.as_str(), "ran"),
            (AgentSkip::MissingAgent.as_str(), "skipped-missing-agent"),
            (AgentSkip::Archived.as_str(), "skipped-archived"),
            (AgentSkip::Paused.as_str(), "skipped-paused"),
            (AgentSkip::Concurrency.as_str(), "skipped-concurrency"),
            (AgentSkip::Budget.as_str(), "skipped-budget"),
            (
                SkipReason::Agent(AgentSkip::Budget).as_str(),
                "skipped-budget",
            ),
            (SkipReason::NoLongerDue.as_str(), "no-longer-due"),
            (SkipReason::AlreadyDone.as_str(), "already-done"),
            (SkipReason::HeldElsewhere.as_str(), "held-elsewhere"),
            (SkipReason::ClaimLost.as_str(), "claim-lost"),
            (MissionOutcome::Deferred.as_str(), "research-pending"),
            (failure_phase_label(None), "internal"),
            (
                failure_phase_label(Some(IterationPhase::CallingLlm)),
                "calling-llm",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }
}
