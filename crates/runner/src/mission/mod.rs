//! One due mission, start to finish, as named stages, each with a typed result:
//!
//! 1. **gate** ([`gate`]): the agent the mission runs as (missing, archived, paused ⇒
//!    skip), then its token budget (used up ⇒ skip);
//! 2. **claim**: the due run is claimed for this runner (already done, held elsewhere,
//!    agent busy ⇒ skip); the agent decision `ran` is counted only when a plan is
//!    written (stage 6). A run already done while the mission is still due at that time
//!    gets its next run written once ([`defer`], the self-healing schedule);
//! 3. **research** ([`crate::research`]): a pending deep-research job defers the run
//!    (asked first, so a pending job costs no input decrypts);
//! 4. **resolve inputs** ([`crate::inputs`]), at most `max_inputs`;
//! 5. **plan** ([`plan`]): the planning loop through the budgeted client, judged into a
//!    plan or a failed attempt;
//! 6. **write back** ([`write`]): the iteration row with the next run, written exactly
//!    once;
//! 7. **outcome**: a [`MissionOutcome`]; a skipped or erroring run is deferred
//!    ([`defer`]): not listed again before a backoff, unless its mission or agent changes.
//!
//! **Deadline and lease.** The mission deadline starts before the claim and bounds
//! research, inputs and planning together; a stage cut off by it writes a `failed`
//! iteration. The claim's lease is the deadline plus `claim_grace`, so it outlives the
//! run's work by construction and a crashed runner's claim is taken over right after.
//!
//! A stage that ends the run early answers a [`Stop`]; after the claim, every stop
//! releases it. Every failure is visible: a failed run writes a `failed` iteration with
//! `errorDetails` and schedules a backoff retry through `nextRunAt`.

mod defer;
mod gate;
mod plan;
pub(crate) mod tools;
mod write;
mod zone;

/// The runner's validator of tool calls against the offered tools.
pub use plan::OfferedTools;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use mana_ai_core::cadence::Cadence;
use mana_ai_core::chat::LlmClient;
use mana_ai_core::iso::to_iso_ms;
use mana_ai_core::plan::{iteration_id_for, IterationPhase, PlanOutcome};
use mana_ai_core::prompt::ResolvedInput;
use mana_ai_core::records::MissionView;
use mana_ai_store::{AgentSlot, Claim, ClaimRequest, DueMission, Store};
use tokio::time::{timeout_at, Instant};
use tracing::{info_span, Instrument};

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
    /// Research, inputs and planning end by this instant (set before the claim).
    deadline: Instant,
}

/// The agent a run looked up and its snapshot's version (`None`: it did not exist); what
/// a deferral remembers. `None` for the default agent.
pub(crate) type SeenAgent = Option<(String, Option<DateTime<Utc>>)>;

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

    /// Runs one due mission; a skipped or erroring run is deferred. Never panics; every
    /// path is reported.
    pub(crate) async fn run(&self, due: DueMission) -> MissionOutcome {
        let mission = MissionView::from_record(&due.user_id, &due.record);
        // The original's one span per mission; the agent is recorded by the agent gate.
        let span = info_span!(
            "tick.planMission",
            "mission.id" = %due.mission_id,
            "mission.title" = %mission.title,
            "user.id" = %due.user_id,
            "agent.id" = tracing::field::Empty,
            "agent.name" = tracing::field::Empty,
        );
        let mut seen_agent = None;
        let outcome = match self
            .run_stages(&due, &mission, &mut seen_agent)
            .instrument(span)
            .await
        {
            Ok(outcome) => outcome,
            Err(stop) => stop.into(),
        };
        self.defer_after(&due, seen_agent, &outcome).await;
        outcome
    }

    async fn run_stages(
        &self,
        due: &DueMission,
        mission: &MissionView,
        seen_agent: &mut SeenAgent,
    ) -> Result<MissionOutcome, Stop> {
        // Before the claim: the lease (deadline + grace, from the claim) ends after it.
        let deadline = Instant::now() + self.cfg.mission_deadline;
        let agent = self.gate_agent(&due.user_id, mission, seen_agent).await?;
        record_agent(&agent);
        let used_before = self.gate_budget(&due.user_id, &agent).await?;
        let iteration_id = self
            .claim(due, mission, &agent)
            .instrument(info_span!("mission.claim"))
            .await?;
        let run = ClaimedRun {
            due,
            mission,
            agent: &agent,
            iteration_id: &iteration_id,
            deadline,
        };
        let in_flight = events::InFlight::enter(&self.metrics);
        let result = self.run_claimed(&run, used_before).await;
        drop(in_flight);
        if result.is_err() {
            self.release(due).await;
        }
        result
    }

    /// Claims the due run; answers the iteration id of this run. A run already done while
    /// the mission is still due at its time gets its schedule healed.
    async fn claim(
        &self,
        due: &DueMission,
        mission: &MissionView,
        agent: &RunAgent,
    ) -> Result<String, Stop> {
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
            Claim::AlreadyDone => {
                self.heal_schedule(due, mission, agent, &iteration_id).await;
                SkipReason::AlreadyDone
            }
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

    /// The stages after the claim: research → inputs → plan → write back.
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
            Ok(_) => match self.gather(run).await? {
                Ok(inputs) => {
                    self.plan(run, &inputs, used_before)
                        .instrument(info_span!("mission.plan"))
                        .await?
                }
                Err(failure) => Attempt::Failed(failure),
            },
        };
        self.write_back(run, cadence.ok().as_ref(), attempt)
            .instrument(info_span!("mission.writeBack"))
            .await
    }

    /// Research (a pending deep-research job defers the run), then the inputs, both
    /// inside the mission deadline; a stage cut off by it is a failed run.
    async fn gather(
        &self,
        run: &ClaimedRun<'_>,
    ) -> Result<Result<Vec<ResolvedInput>, RunFailure>, Stop> {
        let research = self.research.research(run.due, run.mission);
        let research =
            timeout_at(run.deadline, research).instrument(info_span!("mission.research"));
        let found = match research.await {
            Err(_) => return Ok(Err(self.past_deadline("during research"))),
            Ok(ResearchGate::Pending) => {
                events::ResearchPendingSkip.emit(&self.metrics);
                return Err(Stop::Defer);
            }
            Ok(ResearchGate::Proceed(found)) => found,
        };
        let resolve =
            self.inputs
                .resolve(run.due, run.mission, run.iteration_id, self.cfg.max_inputs);
        let resolve = timeout_at(run.deadline, resolve).instrument(info_span!("mission.inputs"));
        let Ok(mut inputs) = resolve.await else {
            return Ok(Err(self.past_deadline("while resolving inputs")));
        };
        inputs.extend(found);
        Ok(Ok(inputs))
    }

    /// The failed run of a stage before planning that the mission deadline cut off.
    fn past_deadline(&self, stage: &str) -> RunFailure {
        RunFailure {
            phase: IterationPhase::ResolvingInputs,
            message: format!(
                "mission deadline of {} s exceeded {stage}",
                self.cfg.mission_deadline.as_secs()
            ),
            nothing_valid: false,
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

/// Records the agent on the mission's span as the original did: `legacy` / `Mana` for
/// missions without an agent.
fn record_agent(agent: &RunAgent) {
    let span = tracing::Span::current();
    if agent.id == mana_ai_core::records::DEFAULT_AGENT_ID {
        span.record("agent.id", "legacy");
        span.record("agent.name", "Mana");
    } else {
        span.record("agent.id", agent.id.as_str());
        span.record("agent.name", agent.name.as_str());
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
