//! The plan stage: builds the prompts and the planner input for the offered tools, runs
//! the planning loop through the budgeted client under the mission deadline, and judges
//! the result into an [`Attempt`] (a plan, or a failed run to write back) or a [`Stop`]
//! (budget skip, internal error: nothing is written).

use std::borrow::Cow;
use std::sync::Arc;

use mana_ai_core::catalog::{Catalog, Tool};
use mana_ai_core::chat::LlmError;
use mana_ai_core::iterations;
use mana_ai_core::lang::Lang;
use mana_ai_core::limits::{
    truncated, truncated_opt, AGENT_NAME_MAX_CHARS, AGENT_ROLE_MAX_CHARS, CONCEPT_MAX_CHARS,
    INPUT_CONTENT_MAX_CHARS, INPUT_TITLE_MAX_CHARS, MEMORY_MAX_CHARS, OBJECTIVE_MAX_CHARS,
    PERSONA_MAX_CHARS, TITLE_MAX_CHARS,
};
use mana_ai_core::plan::{
    run_planner, BudgetContext, CallOutcome, CallValidator, IterationPhase, PlanFailure,
    PlanOutcome, PlannerInput, Rejection, StopReason,
};
use mana_ai_core::prompt::{
    build_prompts_in, language_of, render_tool_block_in, AgentPrompt, MissionPrompt, ResolvedInput,
};
use mana_ai_store::StoreError;
use serde_json::{Map, Value};

use super::tools::{carries_untrusted, injection_mode, offered_tools, ToolSpecs};
use super::{Attempt, ClaimedRun, MissionRunner, RunFailure, Stop};
use crate::budget::{BudgetScope, BudgetedLlm};
use crate::error::RunError;
use crate::events::{self, Emit};
use crate::outcome::AgentSkip;

/// Validates tool calls against the tools offered to this run (public for the planning
/// bench, which validates as the runner does).
pub struct OfferedTools<'a> {
    tools: Vec<&'a Tool>,
}

impl<'a> OfferedTools<'a> {
    /// A validator for calls to these offered tools.
    pub fn new(tools: Vec<&'a Tool>) -> Self {
        Self { tools }
    }
}

impl CallValidator for OfferedTools<'_> {
    fn validate(&self, name: &str, raw_args: &str) -> Result<Map<String, Value>, Rejection> {
        Catalog::builtin()
            .validate_call(&self.tools, name, raw_args)
            .map_err(|r| Rejection {
                label: r.label(),
                message: r.to_string(),
            })
    }
}

/// The resolved inputs with their title and content bounded
/// ([`INPUT_TITLE_MAX_CHARS`], [`INPUT_CONTENT_MAX_CHARS`]); borrowed when all fit.
fn bounded_inputs(inputs: &[ResolvedInput]) -> Cow<'_, [ResolvedInput]> {
    let fits = |i: &ResolvedInput| {
        i.content.chars().nth(INPUT_CONTENT_MAX_CHARS).is_none()
            && i.title
                .as_deref()
                .is_none_or(|t| t.chars().nth(INPUT_TITLE_MAX_CHARS).is_none())
    };
    if inputs.iter().all(fits) {
        return Cow::Borrowed(inputs);
    }
    Cow::Owned(
        inputs
            .iter()
            .map(|i| ResolvedInput {
                title: truncated_opt(i.title.as_deref(), INPUT_TITLE_MAX_CHARS),
                content: truncated(&i.content, INPUT_CONTENT_MAX_CHARS),
                ..i.clone()
            })
            .collect(),
    )
}

/// How the budgeted planning loop ended.
enum LoopEnd {
    Done(Result<PlanOutcome, PlanFailure>),
    /// The mission deadline passed first.
    DeadlineExceeded,
    /// The budget store failed while reserving tokens.
    StoreFailed(StoreError),
}

impl MissionRunner {
    /// Runs the planning loop through the budgeted client (every call reserves, then
    /// books its usage) and judges its result.
    pub(super) async fn plan(
        &self,
        run: &ClaimedRun<'_>,
        inputs: &[ResolvedInput],
        used_before: u64,
    ) -> Result<Attempt, Stop> {
        let catalog = Catalog::builtin();
        let server = catalog.server_tools();
        let untrusted = carries_untrusted(inputs);
        let offered = offered_tools(&server, run.agent.policy.as_ref(), untrusted);
        let m = run.mission;
        let lang = language_of(
            [&m.title, &m.objective, &m.concept_markdown].map(String::as_str),
            self.cfg.default_language,
        );
        let specs = self.tool_specs.get(&offered, lang);
        let validator = OfferedTools::new(offered.clone());
        let mut input = self.planner_input(run, inputs, used_before, (&specs, lang), &validator);
        input.policy_mode = injection_mode(
            self.cfg.policy_mode,
            self.cfg.untrusted_policy_mode,
            untrusted,
        );
        match self.run_budgeted(run, input, specs).await {
            LoopEnd::DeadlineExceeded => Ok(Attempt::Failed(RunFailure {
                phase: IterationPhase::CallingLlm,
                message: format!(
                    "mission deadline of {} s exceeded",
                    self.cfg.mission_deadline.as_secs()
                ),
                nothing_valid: false,
            })),
            LoopEnd::StoreFailed(e) => Err(RunError::TokenReservation(e).into()),
            LoopEnd::Done(Err(failure)) => self.loop_failed(run, failure),
            LoopEnd::Done(Ok(outcome)) => {
                events::PlanObserved {
                    catalog,
                    outcome: &outcome,
                }
                .emit(&self.metrics);
                self.judge_plan(outcome)
            }
        }
    }

    /// The prompts and settings of this run's planning loop.
    fn planner_input<'v>(
        &self,
        run: &ClaimedRun<'_>,
        inputs: &[ResolvedInput],
        used_before: u64,
        (specs, lang): (&ToolSpecs, Lang),
        validator: &'v OfferedTools<'_>,
    ) -> PlannerInput<'v> {
        let (mission, agent) = (run.mission, run.agent);
        // Every free text is bounded before it enters the prompt (core's `limits`).
        let prompts = build_prompts_in(
            lang,
            &MissionPrompt {
                title: truncated(&mission.title, TITLE_MAX_CHARS),
                concept_markdown: truncated(&mission.concept_markdown, CONCEPT_MAX_CHARS),
                objective: truncated(&mission.objective, OBJECTIVE_MAX_CHARS),
                iterations: iterations::for_prompt(&mission.iterations),
            },
            &bounded_inputs(inputs),
            Some(&AgentPrompt {
                name: truncated(&agent.name, AGENT_NAME_MAX_CHARS),
                role: truncated(&agent.role, AGENT_ROLE_MAX_CHARS),
                persona: truncated_opt(agent.persona.as_deref(), PERSONA_MAX_CHARS),
                memory: truncated_opt(agent.memory.as_deref(), MEMORY_MAX_CHARS),
            }),
            self.clock.now(),
            self.cfg.json_plan_fallback,
        );
        let mut system = prompts.system;
        if self.cfg.json_plan_fallback {
            system.push_str("\n\n");
            system.push_str(&render_tool_block_in(&specs.specs, lang));
        }
        let mut input =
            PlannerInput::new(system, prompts.user, Arc::clone(&specs.specs), validator);
        input.model = Some(self.cfg.llm_model.clone());
        input.compaction_model = Some(self.cfg.compact_model.clone());
        input.lang = lang;
        input.policy_mode = self.cfg.policy_mode;
        input.json_plan_fallback = self.cfg.json_plan_fallback;
        input.context_window_tokens =
            (self.cfg.context_window_tokens > 0).then_some(self.cfg.context_window_tokens);
        input.budget = agent.max_tokens_per_day.map(|cap| BudgetContext {
            agent_name: agent.name.clone(),
            cap_tokens: cap,
            used_before,
        });
        input
    }

    /// The loop through the budgeted client, until the run's deadline; a budget-store
    /// failure ends it at once. Reservations of calls cut off are booked afterwards.
    async fn run_budgeted(
        &self,
        run: &ClaimedRun<'_>,
        input: PlannerInput<'_>,
        specs: ToolSpecs,
    ) -> LoopEnd {
        let budgeted = BudgetedLlm::new(
            self.llm.as_ref(),
            &self.store,
            &self.metrics,
            BudgetScope {
                user_id: run.due.user_id.clone(),
                agent_id: run.agent.id.clone(),
                mission_id: run.due.mission_id.clone(),
                cap: run.agent.max_tokens_per_day,
                reservation_ttl: self.cfg.claim_lease(),
                max_completion_tokens: self.cfg.max_completion_tokens,
            },
        )
        .with_known_tools(specs.specs, specs.json_chars);
        let planning = async {
            tokio::select! {
                done = run_planner(&budgeted, input) => LoopEnd::Done(done),
                e = budgeted.store_failure() => LoopEnd::StoreFailed(e),
            }
        };
        let end = tokio::time::timeout_at(run.deadline, planning)
            .await
            .unwrap_or(LoopEnd::DeadlineExceeded);
        budgeted.finish().await;
        end
    }

    /// The loop ended in an LLM error: a budget refusal before any round is a skip (the
    /// run stays due); any other error is a failed run.
    fn loop_failed(&self, run: &ClaimedRun<'_>, failure: PlanFailure) -> Result<Attempt, Stop> {
        if failure.error == LlmError::BudgetExhausted {
            return Err(Stop::Skip(self.agent_skip(AgentSkip::Budget)));
        }
        let provider = self.cfg.llm_model.split('/').next().unwrap_or("unknown");
        events::ProviderFailed {
            mission_id: &run.due.mission_id,
            provider,
            kind: failure.error.kind_label(),
        }
        .emit(&self.metrics);
        Ok(Attempt::Failed(RunFailure {
            phase: failure.phase,
            message: user_visible(&failure.error),
            nothing_valid: false,
        }))
    }

    /// A completed loop: nothing to show for a budget-ended run is a skip; no valid step
    /// when the model tried (rejected calls, an unreadable JSON plan) is a failed run.
    fn judge_plan(&self, outcome: PlanOutcome) -> Result<Attempt, Stop> {
        if outcome.stop_reason == StopReason::BudgetExhausted && outcome.steps.is_empty() {
            // Nothing to show for the run: leave it due for when budget frees up.
            return Err(Stop::Skip(self.agent_skip(AgentSkip::Budget)));
        }
        let rejected = outcome.call_log.iter().any(|c| {
            matches!(
                c.outcome,
                CallOutcome::Rejected(_) | CallOutcome::Blocked(_)
            )
        });
        if outcome.steps.is_empty() && (rejected || outcome.json_plan_error.is_some()) {
            let why = match &outcome.json_plan_error {
                Some(e) => format!("no valid plan: {e}"),
                None => "no valid tool call: every call was rejected".to_string(),
            };
            return Ok(Attempt::Failed(RunFailure {
                phase: IterationPhase::ParsingResponse,
                message: why,
                nothing_valid: true,
            }));
        }
        Ok(Attempt::Planned(outcome))
    }
}

/// The text of an LLM error written into the user-visible `errorDetails`: a transport
/// error names the endpoint it could not reach (an internal URL) and the network error,
/// so users get a fixed text and the details go to the log only.
fn user_visible(error: &LlmError) -> String {
    match error {
        LlmError::Transport(detail) => {
            tracing::warn!(error = %detail, "LLM transport error");
            "LLM unreachable (transport error; details in the service log)".to_owned()
        }
        other => other.to_string(),
    }
}
