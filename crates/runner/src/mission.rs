//! One due mission, start to finish: agent gates → claim the due run → prompt → the
//! planning loop (validated tool calls) → the iteration row with the next run, written
//! exactly once → metrics. Every failure is visible: a failed run writes a `failed`
//! iteration with `errorDetails` and schedules a backoff retry through `nextRunAt`.

use mana_ai_core::actor::{make_agent_actor, AgentActorParts};
use mana_ai_core::cadence::{self, Cadence};
use mana_ai_core::catalog::{function_specs, Catalog, Tool};
use mana_ai_core::chat::LlmError;
use mana_ai_core::iso::to_iso_ms;
use mana_ai_core::plan::{
    build_failed_iteration, build_iteration, iteration_id_for, run_planner, BudgetContext,
    CallOutcome, CallValidator, IterationPhase, PlanOutcome, PlannerInput, Rejection, StopReason,
};
use mana_ai_core::policy::{filter_offered, AgentPolicy};
use mana_ai_core::prompt::{
    build_prompts, render_tool_block, AgentPrompt, MissionPrompt, ResolvedInput,
};
use mana_ai_core::records::{
    AgentState, AgentView, MissionView, DEFAULT_AGENT_ID, DEFAULT_AGENT_NAME,
};
use mana_ai_store::{AgentSlot, Claim, ClaimRequest, DueMission, WriteBack, WriteOutcome};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

use crate::budget::{BudgetScope, BudgetedLlm};
use crate::research::ResearchGate;
use crate::Shared;

/// How one due mission ended in this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissionOutcome {
    /// A plan was written back (`steps` may be 0: the model found nothing to do).
    Planned { steps: usize },
    /// The run failed; a `failed` iteration was written and a retry scheduled.
    Failed {
        phase: &'static str,
        nothing_valid: bool,
    },
    /// Not run this pass (gate, claim held elsewhere, already done…).
    Skipped(&'static str),
    /// Something outside the plan failed (database); nothing was written.
    Error(String),
}

/// Decision label of a mission skipped for lack of token budget.
const SKIPPED_BUDGET: &str = "skipped-budget";

/// The agent a mission runs as.
struct RunAgent {
    id: String,
    name: String,
    role: String,
    persona: Option<String>,
    memory: Option<String>,
    policy: Option<AgentPolicy>,
    max_concurrent: i64,
    max_tokens_per_day: Option<u64>,
}

/// Validates tool calls against the tools offered to this run.
struct OfferedTools<'a> {
    tools: Vec<&'a Tool>,
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

fn outcome_label(o: &CallOutcome) -> &'static str {
    match o {
        CallOutcome::Accepted => "deferred",
        CallOutcome::Rejected(_) => "rejected",
        CallOutcome::Duplicate => "duplicate",
        CallOutcome::OverCap => "over-cap",
        CallOutcome::Flagged(_) => "flagged",
        CallOutcome::Blocked(_) => "blocked",
    }
}

/// Most distinct offered tool sets kept in a [`ToolSpecCache`]; when full it starts over.
const TOOL_SPEC_CACHE_MAX: usize = 256;

/// The OpenAI tool specs of one offered tool set, built once and shared by every round
/// of every run that offers exactly this set.
#[derive(Clone)]
pub(crate) struct ToolSpecs {
    pub(crate) specs: Arc<[Value]>,
    /// Characters of the specs' JSON, for the token estimate of each call.
    pub(crate) json_chars: usize,
}

/// Tool specs per offered tool set (the catalog is fixed, so the set of offered names
/// determines the specs; each distinct agent policy yields one entry at most).
#[derive(Default)]
pub(crate) struct ToolSpecCache {
    by_names: std::sync::Mutex<HashMap<String, ToolSpecs>>,
}

impl ToolSpecCache {
    /// The specs of `offered`, built on first use.
    pub(crate) fn get(&self, offered: &[&Tool]) -> ToolSpecs {
        let mut key = String::with_capacity(offered.len() * 16);
        for t in offered {
            key.push_str(&t.name);
            key.push('\u{1f}');
        }
        if let Some(hit) = self.lock().get(&key) {
            return hit.clone();
        }
        // Built outside the lock; two runs racing on a new set build it twice, harmlessly.
        let specs: Arc<[Value]> = function_specs(offered).into();
        let json_chars = specs.iter().map(|s| s.to_string().chars().count()).sum();
        let built = ToolSpecs { specs, json_chars };
        let mut map = self.lock();
        if map.len() >= TOOL_SPEC_CACHE_MAX {
            map.clear();
        }
        map.insert(key, built.clone());
        built
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ToolSpecs>> {
        // A panic while holding the lock cannot leave the map inconsistent (inserts and
        // clears are single calls), so a poisoned lock is used as is.
        self.by_names.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Number of consecutive failed server iterations at the end of the history.
fn trailing_failures(iterations: &[Value]) -> u32 {
    iterations
        .iter()
        .rev()
        .take_while(|it| it.get("overallStatus").and_then(Value::as_str) == Some("failed"))
        .count() as u32
}

impl Shared {
    /// Runs one due mission. Never panics; every path is reported.
    pub async fn run_mission(&self, due: DueMission) -> MissionOutcome {
        let mission = MissionView::from_record(&due.user_id, &due.record);
        let agent = match self.resolve_agent(&due.user_id, &mission).await {
            Ok(Ok(a)) => a,
            Ok(Err(decision)) => {
                self.metrics
                    .agent_decisions_total
                    .with_label_values(&[decision])
                    .inc();
                return MissionOutcome::Skipped(decision);
            }
            Err(e) => return MissionOutcome::Error(format!("agent lookup: {e}")),
        };
        // Token budget gate (rolling 24 h): booked usage plus the reservations of calls
        // in flight in other runs. Each call reserves again before it is made.
        let used_before = if agent.max_tokens_per_day.is_some() {
            match self.store.agent_budget_use(&due.user_id, &agent.id).await {
                Ok(u) => u.committed(),
                Err(e) => return MissionOutcome::Error(format!("budget lookup: {e}")),
            }
        } else {
            0
        };
        if let Some(cap) = agent.max_tokens_per_day {
            if used_before >= cap {
                self.metrics
                    .agent_decisions_total
                    .with_label_values(&[SKIPPED_BUDGET])
                    .inc();
                return MissionOutcome::Skipped(SKIPPED_BUDGET);
            }
        }

        let due_iso = to_iso_ms(due.next_run_at);
        let iteration_id = iteration_id_for(&due.mission_id, &due_iso);
        let lease = self.cfg.mission_deadline + std::time::Duration::from_secs(60);
        let claim = self
            .store
            .claim_run(&ClaimRequest {
                user_id: &due.user_id,
                mission_id: &due.mission_id,
                due_at: due.next_run_at,
                iteration_id: &iteration_id,
                runner_id: &self.cfg.runner_id,
                lease,
                slot: AgentSlot {
                    agent_id: agent.id.clone(),
                    max_concurrent: agent.max_concurrent,
                    explicit_agent: mission.agent_id.is_some(),
                },
            })
            .await;
        match claim {
            Ok(Claim::Claimed) => {}
            Ok(Claim::AlreadyDone) => return MissionOutcome::Skipped("already-done"),
            Ok(Claim::HeldElsewhere) => return MissionOutcome::Skipped("held-elsewhere"),
            Ok(Claim::AgentBusy) => {
                self.metrics
                    .agent_decisions_total
                    .with_label_values(&["skipped-concurrency"])
                    .inc();
                return MissionOutcome::Skipped("skipped-concurrency");
            }
            Err(e) => return MissionOutcome::Error(format!("claim: {e}")),
        }
        self.metrics
            .agent_decisions_total
            .with_label_values(&["ran"])
            .inc();
        self.metrics.missions_in_flight.inc();
        let result = self
            .plan_and_write(&due, &mission, &agent, &iteration_id, used_before)
            .await;
        self.metrics.missions_in_flight.dec();
        if matches!(
            result,
            MissionOutcome::Error(_) | MissionOutcome::Skipped(_)
        ) {
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
        result
    }

    async fn resolve_agent(
        &self,
        user_id: &str,
        mission: &MissionView,
    ) -> Result<Result<RunAgent, &'static str>, mana_ai_store::StoreError> {
        let Some(agent_id) = mission.agent_id.as_deref() else {
            return Ok(Ok(RunAgent {
                id: DEFAULT_AGENT_ID.to_string(),
                name: DEFAULT_AGENT_NAME.to_string(),
                role: String::new(),
                persona: None,
                memory: None,
                policy: None,
                max_concurrent: i64::from(self.cfg.default_agent_max_concurrent),
                max_tokens_per_day: self.cfg.default_agent_tokens_per_day,
            }));
        };
        let Some(snap) = self.store.agent(user_id, agent_id).await? else {
            return Ok(Err("skipped-missing-agent"));
        };
        let v = AgentView::from_record(user_id, &snap.record);
        if v.is_deleted() {
            return Ok(Err("skipped-missing-agent"));
        }
        match v.state {
            AgentState::Archived => return Ok(Err("skipped-archived")),
            AgentState::Paused => return Ok(Err("skipped-paused")),
            _ => {}
        }
        Ok(Ok(RunAgent {
            id: agent_id.to_string(),
            name: v.name,
            role: v.role,
            persona: v.system_prompt,
            memory: v.memory,
            policy: v.policy.as_ref().map(AgentPolicy::from_value),
            max_concurrent: i64::from(v.max_concurrent_missions),
            max_tokens_per_day: v.max_tokens_per_day,
        }))
    }

    async fn plan_and_write(
        &self,
        due: &DueMission,
        mission: &MissionView,
        agent: &RunAgent,
        iteration_id: &str,
        used_before: u64,
    ) -> MissionOutcome {
        let tz = cadence::resolve_timezone(mission.timezone.as_deref(), self.cfg.default_timezone);
        let cadence = Cadence::from_json(&mission.cadence);
        let planned: Result<PlanOutcome, (IterationPhase, String, bool)> = match &cadence {
            Err(e) => Err((
                IterationPhase::ResolvingInputs,
                format!("invalid cadence: {e}"),
                false,
            )),
            Ok(_) => {
                let mut inputs = self.resolve_inputs(due, mission, iteration_id).await;
                if self.research(due, mission, &mut inputs).await == ResearchGate::Pending {
                    self.metrics.research_jobs_pending_skips_total.inc();
                    return MissionOutcome::Skipped("research-pending");
                }
                match self.plan(due, mission, agent, &inputs, used_before).await {
                    Ok(outcome) => outcome,
                    Err(stop) => {
                        if stop == MissionOutcome::Skipped(SKIPPED_BUDGET) {
                            self.metrics
                                .agent_decisions_total
                                .with_label_values(&[SKIPPED_BUDGET])
                                .inc();
                        }
                        return stop;
                    }
                }
            }
        };
        let now = self.clock.now();
        let jitter: f64 = rand::random();
        let (iteration, next, failed_phase) = match &planned {
            Ok(outcome) => {
                let next = cadence
                    .as_ref()
                    .ok()
                    .and_then(|c| cadence::next_run_after_serving(c, due.next_run_at, now, tz));
                (build_iteration(iteration_id, outcome, now), next, None)
            }
            Err((phase, message, _)) => {
                let next = match &cadence {
                    Ok(c) => {
                        let attempt = trailing_failures(&mission.iterations) + 1;
                        Some(cadence::next_run_after_failure(
                            c,
                            now,
                            attempt,
                            self.cfg.retry_base,
                            self.cfg.retry_cap,
                            jitter,
                            tz,
                        ))
                    }
                    // A cadence we cannot read: stop until the user fixes it.
                    Err(_) => None,
                };
                (
                    build_failed_iteration(iteration_id, *phase, message, now),
                    next,
                    Some(*phase),
                )
            }
        };
        let mut iterations = mission.iterations.clone();
        iterations.push(iteration);
        let now_iso = to_iso_ms(now);
        let data = json!({
            "iterations": iterations,
            "nextRunAt": next.map(to_iso_ms),
        });
        let field_meta = json!({ "iterations": now_iso, "nextRunAt": now_iso });
        let actor = make_agent_actor(AgentActorParts {
            agent_id: &agent.id,
            display_name: &agent.name,
            mission_id: &due.mission_id,
            iteration_id,
            rationale: &mission.objective,
        })
        .to_json();
        let error_text = planned.as_ref().err().map(|(_, m, _)| m.as_str());
        let wb = WriteBack {
            user_id: &due.user_id,
            mission_id: &due.mission_id,
            due_at: due.next_run_at,
            runner_id: &self.cfg.runner_id,
            data: &data,
            field_meta: &field_meta,
            actor: &actor,
            failed: planned.is_err(),
            error: error_text,
        };
        match self.store.write_back(&wb).await {
            Ok(WriteOutcome::Written) => {}
            Ok(WriteOutcome::ClaimLost) => return MissionOutcome::Skipped("claim-lost"),
            Err(e) => return MissionOutcome::Error(format!("write-back: {e}")),
        }
        match planned {
            Ok(outcome) => {
                self.metrics.plans_produced_total.inc();
                self.metrics.plans_written_back_total.inc();
                MissionOutcome::Planned {
                    steps: outcome.steps.len(),
                }
            }
            Err((_, _, nothing_valid)) => {
                let phase = failed_phase.map_or("unknown", IterationPhase::as_str);
                self.metrics.mission_errors_total.inc();
                self.metrics
                    .mission_failures_total
                    .with_label_values(&[phase])
                    .inc();
                if nothing_valid {
                    self.metrics.parse_failures_total.inc();
                }
                MissionOutcome::Failed {
                    phase,
                    nothing_valid,
                }
            }
        }
    }

    /// Runs the planning loop through the budgeted client (every call reserves, then
    /// books its usage). `Err` ends the run without writing anything: the budget ran out
    /// before any step (`skipped-budget`) or the budget store failed.
    async fn plan(
        &self,
        due: &DueMission,
        mission: &MissionView,
        agent: &RunAgent,
        inputs: &[ResolvedInput],
        used_before: u64,
    ) -> Result<Result<PlanOutcome, (IterationPhase, String, bool)>, MissionOutcome> {
        let catalog = Catalog::builtin();
        let server = catalog.server_tools();
        let offered = filter_offered(&server, agent.policy.as_ref());
        let ToolSpecs { specs, json_chars } = self.tool_specs.get(&offered);
        let validator = OfferedTools {
            tools: offered.clone(),
        };
        let prompts = build_prompts(
            &MissionPrompt {
                title: mission.title.clone(),
                concept_markdown: mission.concept_markdown.clone(),
                objective: mission.objective.clone(),
                iterations: mission.iterations.clone(),
            },
            inputs,
            Some(&AgentPrompt {
                name: agent.name.clone(),
                role: agent.role.clone(),
                persona: agent.persona.clone(),
                memory: agent.memory.clone(),
            }),
            self.clock.now(),
            self.cfg.json_plan_fallback,
        );
        let mut system = prompts.system;
        if self.cfg.json_plan_fallback {
            system.push_str("\n\n");
            system.push_str(&render_tool_block(&specs));
        }
        let mut input = PlannerInput::new(system, prompts.user, Arc::clone(&specs), &validator);
        input.model = Some(self.cfg.llm_model.clone());
        input.policy_mode = self.cfg.policy_mode;
        input.json_plan_fallback = self.cfg.json_plan_fallback;
        input.context_window_tokens =
            (self.cfg.context_window_tokens > 0).then_some(self.cfg.context_window_tokens);
        input.budget = agent.max_tokens_per_day.map(|cap| BudgetContext {
            agent_name: agent.name.clone(),
            cap_tokens: cap,
            used_before,
        });
        let budgeted = BudgetedLlm::new(
            self.llm.as_ref(),
            &self.store,
            &self.metrics,
            BudgetScope {
                user_id: due.user_id.clone(),
                agent_id: agent.id.clone(),
                mission_id: due.mission_id.clone(),
                cap: agent.max_tokens_per_day,
                reservation_ttl: self.cfg.mission_deadline + std::time::Duration::from_secs(60),
            },
        )
        .with_known_tools(specs, json_chars);
        let run =
            tokio::time::timeout(self.cfg.mission_deadline, run_planner(&budgeted, input)).await;
        budgeted.finish().await;
        if let Some(e) = budgeted.store_error() {
            return Err(MissionOutcome::Error(e));
        }
        Ok(match run {
            Err(_) => Err((
                IterationPhase::CallingLlm,
                format!(
                    "mission deadline of {} s exceeded",
                    self.cfg.mission_deadline.as_secs()
                ),
                false,
            )),
            Ok(Err(failure)) if failure.error == LlmError::BudgetExhausted => {
                return Err(MissionOutcome::Skipped(SKIPPED_BUDGET));
            }
            Ok(Err(failure)) => {
                let provider = self
                    .cfg
                    .llm_model
                    .split('/')
                    .next()
                    .unwrap_or("unknown")
                    .to_string();
                self.metrics
                    .provider_errors_total
                    .with_label_values(&[&provider, failure.error.kind_label()])
                    .inc();
                tracing::warn!(
                    mission = %due.mission_id,
                    kind = failure.error.kind_label(),
                    "planner failed"
                );
                Err((failure.phase, failure.error.to_string(), false))
            }
            Ok(Ok(outcome)) => {
                self.observe_plan(catalog, &outcome);
                if outcome.stop_reason == StopReason::BudgetExhausted && outcome.steps.is_empty() {
                    // Nothing to show for the run: leave it due for when budget frees up.
                    return Err(MissionOutcome::Skipped(SKIPPED_BUDGET));
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
                    return Ok(Err((IterationPhase::ParsingResponse, why, true)));
                }
                Ok(outcome)
            }
        })
    }

    fn observe_plan(&self, catalog: &Catalog, outcome: &PlanOutcome) {
        let m = &self.metrics;
        m.planner_rounds.observe(f64::from(outcome.rounds));
        for call in &outcome.call_log {
            let (tool, policy) = match catalog.get(&call.tool) {
                Some(t) => (t.name.as_str(), t.default_policy.as_str()),
                None => ("unknown", "unknown"),
            };
            m.tool_calls_total
                .with_label_values(&[tool, policy, outcome_label(&call.outcome)])
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

/// Compile-time check: a mission run can move between worker threads.
#[allow(dead_code)]
fn assert_send(
    r: &Shared,
    d: DueMission,
) -> impl std::future::Future<Output = MissionOutcome> + Send + '_ {
    r.run_mission(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_specs_are_built_once_per_offered_set() {
        let catalog = Catalog::builtin();
        let server = catalog.server_tools();
        let cache = ToolSpecCache::default();
        let all = cache.get(&server);
        assert_eq!(&*all.specs, function_specs(&server).as_slice());
        let chars: usize = all
            .specs
            .iter()
            .map(|s| s.to_string().chars().count())
            .sum();
        assert_eq!(all.json_chars, chars);
        assert!(
            Arc::ptr_eq(&all.specs, &cache.get(&server).specs),
            "same set: the same shared list"
        );
        let fewer: Vec<&Tool> = server[1..].to_vec();
        let part = cache.get(&fewer);
        assert_eq!(part.specs.len(), server.len() - 1);
        assert_eq!(&*part.specs, function_specs(&fewer).as_slice());
        assert!(!Arc::ptr_eq(&all.specs, &part.specs));
    }
}
