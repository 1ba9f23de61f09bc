//! The planning loop as named steps. Each round: compact the history when the context is
//! nearly full ([`Loop::compact_if_needed`]), add the transient reminders
//! ([`Loop::request_messages`]), make the LLM call ([`Loop::call`]), then either read an
//! answer without tool calls ([`Loop::answer_without_calls`]: a closing summary or a JSON
//! plan) or judge every tool call ([`Loop::judge_calls`]). [`Judge`] decides each call.

use serde_json::{Map, Value};
use std::collections::HashSet;
use std::sync::Arc;

use super::{
    compact, detect_injection_marker, non_empty, parse_json_plan, reminders, tool_result,
    CallOutcome, CallRecord, IterationPhase, ParsedPlan, PlanFailure, PlanOutcome, PlanParseError,
    PlannedStep, PlannerInput, PolicyMode, ReminderSeverity, StopReason, ACCEPTED_MESSAGE,
};
use crate::chat::{ChatMessage, ChatRequest, ChatResponse, LlmClient, LlmError, ToolCall, Usage};
use crate::limits::{PLAN_STEPS_MAX, TOOL_ARGS_MAX_BYTES};
use crate::lww::canonical_json;

/// Rejection label of a call whose arguments exceed [`TOOL_ARGS_MAX_BYTES`].
pub const TOO_LARGE_LABEL: &str = "too_large";

/// The calls as kept in the conversation: arguments over [`TOOL_ARGS_MAX_BYTES`] are
/// replaced by a short note (the call is rejected anyway), so one huge call cannot
/// inflate every later round's request.
fn bounded_calls(calls: &[ToolCall]) -> Vec<ToolCall> {
    calls
        .iter()
        .map(|call| {
            if call.arguments.len() <= TOOL_ARGS_MAX_BYTES {
                return call.clone();
            }
            let note = format!("{} bytes, not kept", call.arguments.len());
            ToolCall {
                id: call.id.clone(),
                name: crate::limits::truncated(&call.name, 200),
                arguments: serde_json::json!({ "omitted": note }).to_string(),
            }
        })
        .collect()
}

/// The duplicate-detection key of a call: the tool name, a NUL, and the canonical JSON of
/// its validated arguments (object keys sorted recursively). Returns the arguments back.
pub(super) fn call_key(name: &str, params: Map<String, Value>) -> (String, Map<String, Value>) {
    let value = Value::Object(params);
    let key = format!("{name}\u{0}{}", canonical_json(&value));
    match value {
        Value::Object(params) => (key, params),
        _ => (key, Map::new()),
    }
}

/// Judges the calls of one run: validation, injection policy, duplicates, step cap.
pub(super) struct Judge<'i, 'a> {
    input: &'i PlannerInput<'a>,
    steps: Vec<PlannedStep>,
    seen: HashSet<String>,
    call_log: Vec<CallRecord>,
    call_success: Vec<bool>,
}

impl<'i, 'a> Judge<'i, 'a> {
    /// The step cap: the configured one, never above [`PLAN_STEPS_MAX`].
    fn step_cap(&self) -> usize {
        self.input.max_steps.min(PLAN_STEPS_MAX)
    }

    fn new(input: &'i PlannerInput<'a>) -> Self {
        Self {
            input,
            steps: Vec::new(),
            seen: HashSet::new(),
            call_log: Vec::new(),
            call_success: Vec::new(),
        }
    }

    /// Judges one call and returns `(success, message)` for the tool result.
    fn process(
        &mut self,
        round: u32,
        name: &str,
        raw_args: &str,
        rationale: &str,
        summary: Option<String>,
    ) -> (bool, String) {
        let (outcome, success, message) = self.judge(name, raw_args, rationale, summary);
        self.call_log.push(CallRecord {
            round,
            tool: name.to_string(),
            outcome,
        });
        self.call_success.push(success);
        (success, message)
    }

    fn judge(
        &mut self,
        name: &str,
        raw_args: &str,
        rationale: &str,
        summary: Option<String>,
    ) -> (CallOutcome, bool, String) {
        if raw_args.len() > TOOL_ARGS_MAX_BYTES {
            let message = format!(
                "rejected ({TOO_LARGE_LABEL}): the arguments are {} bytes, more than the \
                 limit of {TOOL_ARGS_MAX_BYTES}. The call was not recorded; send shorter \
                 arguments.",
                raw_args.len()
            );
            return (CallOutcome::Rejected(TOO_LARGE_LABEL), false, message);
        }
        let params = match self.input.validator.validate(name, raw_args) {
            Ok(params) => params,
            Err(rejection) => {
                let message = format!(
                    "rejected ({}): {}. The call was not recorded; fix it or use another offered tool.",
                    rejection.label, rejection.message
                );
                return (CallOutcome::Rejected(rejection.label), false, message);
            }
        };
        // Same walk as over the whole object: its values, in order.
        let marker = match self.input.policy_mode {
            PolicyMode::Off => None,
            PolicyMode::LogOnly | PolicyMode::Enforce => {
                params.values().find_map(detect_injection_marker)
            }
        };
        if let (Some(marker), PolicyMode::Enforce) = (marker, self.input.policy_mode) {
            return (
                CallOutcome::Blocked(marker),
                false,
                "blocked by policy: the arguments contain text that looks like a prompt \
                 injection. The call was not recorded."
                    .to_string(),
            );
        }
        let (key, params) = call_key(name, params);
        if self.seen.contains(&key) {
            return (
                CallOutcome::Duplicate,
                false,
                "duplicate: an identical call is already recorded in this run; it was not \
                 recorded again."
                    .to_string(),
            );
        }
        if self.steps.len() >= self.step_cap() {
            return (
                CallOutcome::OverCap,
                false,
                format!(
                    "step limit of {} reached: the call was not recorded. Do not call more \
                     tools; reply with a short summary.",
                    self.step_cap()
                ),
            );
        }
        self.seen.insert(key);
        self.steps.push(PlannedStep {
            tool_name: name.to_string(),
            params,
            rationale: rationale.to_string(),
            summary,
        });
        let outcome = marker.map_or(CallOutcome::Accepted, CallOutcome::Flagged);
        (outcome, true, ACCEPTED_MESSAGE.to_string())
    }
}

/// Whether the loop goes on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Next,
    Stop,
}

/// The state of one planning run.
struct Loop<'i, 'a> {
    input: &'i PlannerInput<'a>,
    judge: Judge<'i, 'a>,
    messages: Vec<ChatMessage>,
    usage: Usage,
    reminders_log: Vec<(&'static str, ReminderSeverity)>,
    compactions: u32,
    compacted_turns: u32,
    context_tokens: u64,
    summary: Option<String>,
    stop_reason: StopReason,
    json_plan_error: Option<PlanParseError>,
    json_plan_seen: bool,
    rounds: u32,
}

/// Runs the planning loop against `llm`.
pub async fn run_planner(
    llm: &dyn LlmClient,
    input: PlannerInput<'_>,
) -> Result<PlanOutcome, PlanFailure> {
    let mut run = Loop::new(&input);
    while run.rounds < input.max_rounds {
        run.rounds += 1;
        if run.compact_if_needed(llm).await? == Step::Stop {
            break;
        }
        let (request_messages, last_round) = run.request_messages();
        let Some(response) = run.call(llm, request_messages).await? else {
            break;
        };
        if response.tool_calls.is_empty() {
            match run.answer_without_calls(&response, last_round) {
                Step::Next => continue,
                Step::Stop => break,
            }
        }
        run.judge_calls(&response);
        if run.round_ends_run(last_round) == Step::Stop {
            break;
        }
    }
    Ok(run.finish())
}

impl<'i, 'a> Loop<'i, 'a> {
    fn new(input: &'i PlannerInput<'a>) -> Self {
        let messages = vec![
            ChatMessage::system(input.system.clone()),
            ChatMessage::user(input.user.clone()),
        ];
        Self {
            input,
            judge: Judge::new(input),
            context_tokens: compact::estimate_tokens(&messages),
            messages,
            usage: Usage::default(),
            reminders_log: Vec::new(),
            compactions: 0,
            compacted_turns: 0,
            summary: None,
            stop_reason: StopReason::MaxRounds,
            json_plan_error: None,
            json_plan_seen: false,
            rounds: 0,
        }
    }

    /// A failed LLM call. The budget running out after the first round keeps what earlier
    /// rounds produced (`Ok`: the run stops); in the first round there is nothing to keep,
    /// so it is a failure the caller treats as a budget skip.
    fn call_failed(&mut self, error: LlmError, during_compaction: bool) -> Result<(), PlanFailure> {
        if error == LlmError::BudgetExhausted && self.rounds > 1 {
            self.rounds -= 1;
            self.stop_reason = StopReason::BudgetExhausted;
            return Ok(());
        }
        Err(PlanFailure {
            error,
            usage_so_far: self.usage,
            rounds: self.rounds,
            phase: IterationPhase::CallingLlm,
            during_compaction,
        })
    }

    /// Compaction on the current context size, at most once per run.
    async fn compact_if_needed(&mut self, llm: &dyn LlmClient) -> Result<Step, PlanFailure> {
        let window = self.input.context_window_tokens.unwrap_or(0);
        if self.compactions > 0
            || window == 0
            || (self.context_tokens as f64) < compact::COMPACT_THRESHOLD * window as f64
        {
            return Ok(Step::Next);
        }
        let Some(split) = compact::split_history(&self.messages, compact::COMPACT_KEEP_RECENT)
        else {
            return Ok(Step::Next);
        };
        let request = ChatRequest {
            model: self
                .input
                .compaction_model
                .clone()
                .or_else(|| self.input.model.clone()),
            messages: compact::compaction_request(&self.messages, split, self.input.lang),
            tools: Arc::default(),
            temperature: Some(compact::COMPACT_TEMPERATURE),
            max_tokens: None,
        };
        let response = match llm.complete(&request).await {
            Ok(response) => response,
            Err(error) => {
                self.call_failed(error, true)?;
                return Ok(Step::Stop);
            }
        };
        self.usage.add(response.usage.normalised());
        let parsed = compact::parse_compact_summary(response.content.as_deref().unwrap_or(""));
        self.messages = compact::apply_compaction(&self.messages, split, &parsed, self.input.lang);
        self.compactions += 1;
        self.compacted_turns = (split.tail_start - split.head_end) as u32;
        Ok(Step::Next)
    }

    /// The conversation plus this round's transient reminders, and whether the budget
    /// reminder escalated (this round is the last).
    fn request_messages(&mut self) -> (Vec<ChatMessage>, bool) {
        let mut pending = Vec::new();
        pending.extend(reminders::compacted_reminder(
            self.compactions,
            self.input.lang,
        ));
        let budget_reminder = self.input.budget.as_ref().and_then(|b| {
            reminders::token_budget_reminder(b, self.usage.total_tokens, self.input.lang)
        });
        let last_round = budget_reminder
            .as_ref()
            .is_some_and(|r| r.severity == ReminderSeverity::Escalate);
        pending.extend(budget_reminder);
        pending.extend(reminders::retry_loop_reminder(
            self.rounds,
            &self.judge.call_success,
            self.input.lang,
        ));
        let mut request_messages = self.messages.clone();
        for reminder in &pending {
            self.reminders_log
                .push((reminder.producer, reminder.severity));
            request_messages.push(ChatMessage::system(format!(
                "<reminder>{}</reminder>",
                reminder.text
            )));
        }
        (request_messages, last_round)
    }

    /// The round's LLM call; `None` when the budget ran out mid-run (the run stops).
    async fn call(
        &mut self,
        llm: &dyn LlmClient,
        messages: Vec<ChatMessage>,
    ) -> Result<Option<ChatResponse>, PlanFailure> {
        let request = ChatRequest {
            model: self.input.model.clone(),
            messages,
            tools: self.input.tools.clone(),
            temperature: self.input.temperature,
            max_tokens: None,
        };
        let response = match llm.complete(&request).await {
            Ok(response) => response,
            Err(error) => {
                self.call_failed(error, false)?;
                return Ok(None);
            }
        };
        let response_usage = response.usage.normalised();
        self.usage.add(response_usage);
        self.messages.push(ChatMessage::assistant(
            response.content.clone(),
            bounded_calls(&response.tool_calls),
        ));
        let reported = response_usage.prompt_tokens + response_usage.completion_tokens;
        self.context_tokens = if reported > 0 {
            reported
        } else {
            compact::estimate_tokens(&self.messages)
        };
        Ok(Some(response))
    }

    /// No tool calls: a closing summary, or a JSON plan. `Next` only after a JSON plan
    /// with refused steps, when the model gets a round to correct them.
    fn answer_without_calls(&mut self, response: &ChatResponse, last_round: bool) -> Step {
        let content = response.content.as_deref().unwrap_or("");
        let parsed = if content.trim().is_empty() {
            Err(PlanParseError::NoJsonBlock)
        } else {
            parse_json_plan(content, self.judge.step_cap())
        };
        match parsed {
            Ok(plan) => return self.apply_json_plan(plan, last_round),
            Err(_) if self.json_plan_seen => {
                // A prose answer to the correction request: the plan stands.
                self.summary = self
                    .summary
                    .take()
                    .or_else(|| non_empty(response.content.as_deref()));
            }
            Err(error) => {
                // Only a failure when the run produced no calls at all: a closing prose
                // summary after tool calls is the normal end of a run.
                if self.input.json_plan_fallback && self.judge.call_log.is_empty() {
                    self.json_plan_error = Some(error);
                }
                self.summary = non_empty(response.content.as_deref());
                self.stop_reason = if response.finish_reason.as_deref() == Some("stop") {
                    StopReason::AssistantStop
                } else {
                    StopReason::NoToolCalls
                };
            }
        }
        Step::Stop
    }

    /// Records the steps of a JSON plan; refused steps are fed back for one more round
    /// when rounds (and budget) remain.
    fn apply_json_plan(&mut self, plan: ParsedPlan, last_round: bool) -> Step {
        let mut refused = Vec::new();
        for (i, step) in plan.steps.into_iter().enumerate() {
            let raw = Value::Object(step.params).to_string();
            let (ok, message) = self.judge.process(
                self.rounds,
                &step.tool_name,
                &raw,
                &step.rationale,
                step.summary,
            );
            if !ok {
                refused.push(format!("- step {} ({}): {message}", i + 1, step.tool_name));
            }
        }
        self.summary = plan.summary.or(self.summary.take());
        self.stop_reason = StopReason::JsonPlan;
        self.json_plan_seen = true;
        if refused.is_empty() || self.rounds >= self.input.max_rounds || last_round {
            return Step::Stop;
        }
        let feedback = format!(
            "Some steps of your plan were not recorded:\n{}\nThe other steps are \
             recorded. Reply with corrected replacement steps only, in the same \
             JSON format, or with an empty `steps` array if none are needed.",
            refused.join("\n")
        );
        self.context_tokens +=
            compact::estimate_tokens(std::slice::from_ref(&ChatMessage::user(feedback.clone())));
        self.messages.push(ChatMessage::user(feedback));
        Step::Next
    }

    /// Judges every call in order; each gets exactly one tool result.
    fn judge_calls(&mut self, response: &ChatResponse) {
        let rationale = non_empty(response.content.as_deref()).unwrap_or_default();
        let before = self.messages.len();
        for call in &response.tool_calls {
            let (ok, message) =
                self.judge
                    .process(self.rounds, &call.name, &call.arguments, &rationale, None);
            self.messages.push(ChatMessage::tool_result(
                call.id.clone(),
                tool_result(ok, &message),
            ));
        }
        self.context_tokens += compact::estimate_tokens(&self.messages[before..]);
    }

    /// After a round of tool calls: the run ends on an escalated budget or the last round.
    fn round_ends_run(&mut self, last_round: bool) -> Step {
        if last_round {
            self.stop_reason = StopReason::BudgetExhausted;
            return Step::Stop;
        }
        if self.rounds >= self.input.max_rounds {
            self.stop_reason = StopReason::MaxRounds;
            return Step::Stop;
        }
        Step::Next
    }

    fn finish(self) -> PlanOutcome {
        PlanOutcome {
            steps: self.judge.steps,
            summary: self.summary,
            rounds: self.rounds,
            stop_reason: self.stop_reason,
            usage: self.usage,
            call_log: self.judge.call_log,
            reminders: self.reminders_log,
            compactions: self.compactions,
            compacted_turns: self.compacted_turns,
            json_plan_error: self.json_plan_error,
            messages: self.messages,
        }
    }
}
