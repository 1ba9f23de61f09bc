//! One due mission, start to finish, as named stages, each with a typed result:
//!
//! 1. **gate** ([`gate`]): the agent the mission runs as (missing, archived, paused ⇒
//!    skip), then its token budget (used up ⇒ skip);
//! 2. **claim**: the due run is claimed for this runner (already done, held elsewhere,
//!    agent busy ⇒ skip); the agent decision `ran` is counted only when a plan is
//!    written (stage 6);
//! 3. **resolve inputs** ([`crate::inputs`]);
//! 4. **research** ([`crate::research`]): a pending deep-research job defers the run;
//! 5. **plan** ([`plan`]): the planning loop through the budgeted client, judged into a
//!    plan or a failed attempt;
//! 6. **write back** ([`write`]): the iteration row with the next run, written exactly
//!    once;
//! 7. **outcome**: a [`MissionOutcome`].
//!
//! A stage that ends the run early answers a [`Stop`]; after the claim, every stop
//! releases it. Every failure is visible: a failed run writes a `failed` iteration with
//! `errorDetails` and schedules a backoff retry through `nextRunAt`.

mod gate;
mod plan;
pub(crate) mod tools;
mod write;
mod zone;

/// The runner's validator of tool calls against the offered tools.
pub use plan::OfferedTools;

use std::sync::Arc;

use mana_ai_core::cadence::Cadence;
use mana_ai_core::chat::LlmClient;
use mana_ai_core::iso::to_iso_ms;
use mana_ai_core::plan::{iteration_id_for, IterationPhase, PlanOutcome};
use mana_ai_core::records::MissionView;
use mana_ai_store::{AgentSlot, Claim, ClaimRequest, DueMission, Store};

use crate::error::RunError;
use crate::events::{self, Emit};
use crate::inputs::InputResolver;
/// The outcome of a mission run (also at the crate root).
pub use crate::outcome::MissionOutcome;
use crate::outcome::{AgentDecision, AgentSkip, SkipReason};
use crate::research::{ResearchGate, Researcher};
use crate::{Clock, Metrics, RunnerConfig};
use gate::RunAgent;
use tools::ToolSpecCache;

/// Why a stage ended the run before an outcome was written.
#[derive(Debug)]
pub(crate) enum Stop {
    Skip(SkipReason),
    /// Deep research is pending: try again in a later pass.
    Defer,
    Error(RunError),
}

impl From<RunError> for Stop {
    fn from(e: RunError) -> Self {
        Stop::Error(e)
    }
}

impl From<Stop> for MissionOutcome {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::Skip(reason) => MissionOutcome::Skipped(reason),
            Stop::Defer => MissionOutcome::Deferred,
            Stop::Error(e) => MissionOutcome::Error(e),
        }
    }
}

/// A run that went wrong in a way the user sees: written as a `failed` iteration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunFailure {
    pub phase: IterationPhase,
    pub message: String,
    /// The model produced nothing valid (counted as a parse failure).
    pub nothing_valid: bool,
}

/// What a claimed run produced, to be written back.
#[derive(Debug)]
pub(crate) enum Attempt {
    Planned(PlanOutcome),
    Failed(RunFailure),
}

/// Runs due missions: owns what a mission run needs (shared by the pass's tasks, so each
/// mission runs as its own tokio task on any worker thread).
pub(crate) struct MissionRunner {
    store: Store,
    metrics: Metrics,
    llm: Arc<dyn LlmClient>,
    cfg: Arc<RunnerConfig>,
    clock: Arc<dyn Clock>,
    inputs: InputResolver,
    research: Researcher,
    /// OpenAI tool specs per offered tool set (i.e. per effective policy), built once.
    tool_specs: ToolSpecCache,
}

/// The ids of one claimed run.
struct ClaimedRun<'a> {
    due: &'a DueMission,
    mission: &'a MissionView,
    agent: &'a RunAgent,
    iteration_id: &'a str,
}

impl MissionRunner {
    pub(crate) fn new(
        store: Store,
        metrics: Metrics,
        llm: Arc<dyn LlmClient>,
        cfg: Arc<RunnerConfig>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            inputs: InputResolver::new(
                store.clone(),
                metrics.clone(),
                Arc::clone(&clock),
                cfg.grant_key.clone(),
            ),
            research: Researcher::new(
                store.clone(),
                metrics.clone(),
                Arc::clone(&clock),
                Arc::clone(&cfg),
            ),
            store,
            metrics,
            llm,
            cfg,
            clock,
            tool_specs: ToolSpecCache::default(),
        }
    }

    /// Runs one due mission. Never panics; every path is reported.
    pub(crate) async fn run(&self, due: DueMission) -> MissionOutcome {
        let mission = MissionView::from_record(&due.user_id, &due.record);
        match self.run_stages(&due, &mission).await {
            Ok(outcome) => outcome,
            Err(stop) => stop.into(),
        }
    }

    async fn run_stages(
        &self,
        due: &DueMission,
        mission: &MissionView,
    ) -> Result<MissionOutcome, Stop> {
        let agent = self.gate_agent(&due.user_id, mission).await?;
        let used_before = self.gate_budget(&due.user_id, &agent).await?;
        let iteration_id = self.claim(due, &agent).await?;
        let run = ClaimedRun {
            due,
            mission,
            agent: &agent,
            iteration_id: &iteration_id,
        };
        events::MissionInFlight { entered: true }.emit(&self.metrics);
        let result = self.run_claimed(&run, used_before).await;
        events::MissionInFlight { entered: false }.emit(&self.metrics);
        if result.is_err() {
            self.release(due).await;
        }
        result
    }

    /// Claims the due run; answers the iteration id of this run.
    async fn claim(&self, due: &DueMission, agent: &RunAgent) -> Result<String, Stop> {
        let iteration_id = iteration_id_for(&due.mission_id, &to_iso_ms(due.next_run_at));
        let claim = self
            .store
            .claim_run(&ClaimRequest {
                user_id: &due.user_id,
                mission_id: &due.mission_id,
                due_at: due.next_run_at,
                iteration_id: &iteration_id,
                runner_id: &self.cfg.runner_id,
                lease: self.cfg.claim_lease(),
                slot: AgentSlot {
                    agent_id: agent.id.clone(),
                    max_concurrent: agent.max_concurrent,
                },
            })
            .await
            .map_err(RunError::Claim)?;
        let stop = match claim {
            Claim::Claimed => return Ok(iteration_id),
            Claim::AlreadyDone => SkipReason::AlreadyDone,
            Claim::HeldElsewhere => SkipReason::HeldElsewhere,
            Claim::AgentBusy => self.agent_skip(AgentSkip::Concurrency),
        };
        Err(Stop::Skip(stop))
    }

    /// Counts an agent gate's refusal and answers the skip reason.
    fn agent_skip(&self, skip: AgentSkip) -> SkipReason {
        events::AgentDecided(AgentDecision::Skipped(skip)).emit(&self.metrics);
        SkipReason::Agent(skip)
    }

    /// The stages after the claim: inputs → research → plan → write back.
    async fn run_claimed(
        &self,
        run: &ClaimedRun<'_>,
        used_before: u64,
    ) -> Result<MissionOutcome, Stop> {
        let cadence = Cadence::from_json(&run.mission.cadence);
        let attempt = match &cadence {
            Err(e) => Attempt::Failed(RunFailure {
                phase: IterationPhase::ResolvingInputs,
                message: format!("invalid cadence: {e}"),
                nothing_valid: false,
            }),
            Ok(_) => {
                let mut inputs = self
                    .inputs
                    .resolve(run.due, run.mission, run.iteration_id)
                    .await;
                self.research_gate(run, &mut inputs).await?;
                self.plan(run, &inputs, used_before).await?
            }
        };
        self.write_back(run, cadence.ok().as_ref(), attempt).await
    }

    /// Research; a pending deep-research job defers the run.
    async fn research_gate(
        &self,
        run: &ClaimedRun<'_>,
        inputs: &mut Vec<mana_ai_core::prompt::ResolvedInput>,
    ) -> Result<(), Stop> {
        match self.research.research(run.due, run.mission, inputs).await {
            ResearchGate::Proceed => Ok(()),
            ResearchGate::Pending => {
                events::ResearchPendingSkip.emit(&self.metrics);
                Err(Stop::Defer)
            }
        }
    }

    /// Gives the claim back after a run that wrote nothing.
    async fn release(&self, due: &DueMission) {
        if let Err(e) = self
            .store
            .release_run(
                &due.user_id,
                &due.mission_id,
                due.next_run_at,
                &self.cfg.runner_id,
            )
            .await
        {
            tracing::warn!(error = %e, "could not release a mission claim; it expires with its lease");
        }
    }
}

/// Compile-time check: a mission run can move between worker threads.
#[allow(dead_code)]
fn assert_send(
    r: &MissionRunner,
    d: DueMission,
) -> impl std::future::Future<Output = MissionOutcome> + Send + '_ {
    r.run(d)
}
