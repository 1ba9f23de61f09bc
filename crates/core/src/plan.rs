//! The planning loop: ask the LLM for tool calls round by round, validate each call, and
//! collect the accepted ones as plan steps. Nothing is executed; every accepted call is
//! recorded as a proposal the user's device applies later.
//!
//! Compared with the original loop this version validates every call (unknown or denied
//! tools, malformed or incomplete arguments are rejected and fed back so the model can
//! correct itself), records identical calls once, caps the number of steps, really blocks
//! calls with injection markers in `enforce` mode, sums every token spent (including the
//! compaction call and rounds before a failure), compacts on the *current* context size
//! without orphaning tool messages, and accepts a JSON plan written as text.

pub mod compact;
pub mod injection;
pub mod iteration;
pub mod parser;
pub mod planner;
pub mod reminders;

pub use injection::{detect_injection_marker, PolicyMode, PolicyModeError};
pub use iteration::{build_failed_iteration, build_iteration, iteration_id_for, IterationPhase};
pub use parser::{parse_json_plan, ParsedPlan, ParsedStep, PlanParseError};
pub use planner::run_planner;
pub use reminders::{Reminder, ReminderSeverity};

use serde_json::{json, Map, Value};
use std::sync::Arc;

use crate::chat::{ChatMessage, LlmError, Usage};

/// Default number of LLM rounds per run.
pub const DEFAULT_MAX_ROUNDS: u32 = 5;
/// Default cap on accepted steps per run.
pub const DEFAULT_MAX_STEPS: usize = crate::limits::PLAN_STEPS_MAX;
/// Tool-result message of an accepted call (contains U+2014).
pub const ACCEPTED_MESSAGE: &str = "recorded — pending client application";

/// Why a tool call was refused by the validator. `label` is a short, bounded metric label
/// (`unknown-tool`, `denied`, `bad-json`, `missing-param`, …); `message` is fed back to
/// the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub label: &'static str,
    pub message: String,
}

/// Checks one tool call against the tools the agent may use and their parameter schemas.
/// On success it returns the (possibly normalised) arguments object.
pub trait CallValidator: Send + Sync {
    fn validate(&self, name: &str, raw_args: &str) -> Result<Map<String, Value>, Rejection>;
}

/// The owning agent's daily token budget, for the budget reminder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetContext {
    pub agent_name: String,
    /// `maxTokensPerDay`; 0 disables the reminder.
    pub cap_tokens: u64,
    /// Tokens the agent used in the rolling 24 h before this run.
    pub used_before: u64,
}

/// Everything one planning run needs.
pub struct PlannerInput<'a> {
    pub system: String,
    pub user: String,
    /// OpenAI function specs offered to the model (shared, never copied per round).
    pub tools: Arc<[Value]>,
    /// `None` ⇒ the client's default model.
    pub model: Option<String>,
    pub temperature: Option<f32>,
    /// Maximum LLM calls of the loop proper (compaction calls are not counted).
    pub max_rounds: u32,
    /// Maximum accepted steps; further calls are refused.
    pub max_steps: usize,
    pub policy_mode: PolicyMode,
    pub validator: &'a dyn CallValidator,
    pub budget: Option<BudgetContext>,
    /// The model's context window; compaction fires at 0.92 of it. `None`/0 disables it.
    pub context_window_tokens: Option<u64>,
    /// Model for the compaction call; `None` ⇒ the planning model.
    pub compaction_model: Option<String>,
    /// Language of the reminders and the compaction request (the prompts are built by the
    /// caller, in the same language).
    pub lang: crate::lang::Lang,
    /// Parse answers without tool calls as JSON plans (and report parse failures).
    pub json_plan_fallback: bool,
}

impl<'a> PlannerInput<'a> {
    /// An input with the defaults: 5 rounds, 25 steps, `log-only`, no budget, no
    /// compaction, no JSON fallback, the client's default model and temperature, English
    /// reminders.
    pub fn new(
        system: impl Into<String>,
        user: impl Into<String>,
        tools: impl Into<Arc<[Value]>>,
        validator: &'a dyn CallValidator,
    ) -> Self {
        Self {
            system: system.into(),
            user: user.into(),
            tools: tools.into(),
            model: None,
            temperature: None,
            max_rounds: DEFAULT_MAX_ROUNDS,
            max_steps: DEFAULT_MAX_STEPS,
            policy_mode: PolicyMode::default(),
            validator,
            budget: None,
            context_window_tokens: None,
            compaction_model: None,
            lang: crate::lang::Lang::En,
            json_plan_fallback: false,
        }
    }
}

/// One accepted step of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedStep {
    pub tool_name: String,
    /// The validated arguments.
    pub params: Map<String, Value>,
    /// Why the model chose the step: the JSON-plan `rationale`, or the text the model sent
    /// along with its tool calls; empty when it gave none.
    pub rationale: String,
    /// A step summary, when the model gave one (JSON plans only).
    pub summary: Option<String>,
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// No tool calls and `finish_reason == "stop"`.
    AssistantStop,
    /// No tool calls with another finish reason (`length`, `content_filter`, …).
    NoToolCalls,
    /// The last allowed round still had tool calls.
    MaxRounds,
    /// The answer was a JSON plan (fallback mode).
    JsonPlan,
    /// The agent's daily budget was used up: the escalation round was the last, or a
    /// later call could not reserve budget ([`LlmError::BudgetExhausted`]).
    BudgetExhausted,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::AssistantStop => "assistant-stop",
            StopReason::NoToolCalls => "no-tool-calls",
            StopReason::MaxRounds => "max-rounds",
            StopReason::JsonPlan => "json-plan",
            StopReason::BudgetExhausted => "budget-exhausted",
        }
    }
}

/// What happened to one tool call (or JSON-plan step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// Recorded as a step.
    Accepted,
    /// Refused by the validator; the label is [`Rejection::label`].
    Rejected(&'static str),
    /// Same tool and arguments as an already recorded step.
    Duplicate,
    /// Valid, but the step cap was reached.
    OverCap,
    /// Recorded as a step, but an injection marker was found (`log-only`).
    Flagged(&'static str),
    /// Dropped because of an injection marker (`enforce`).
    Blocked(&'static str),
}

impl CallOutcome {
    /// Whether the call became a step.
    pub fn is_recorded(&self) -> bool {
        matches!(self, CallOutcome::Accepted | CallOutcome::Flagged(_))
    }
}

/// Log entry for one tool call, for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// The round (1-based) the call came from.
    pub round: u32,
    /// The tool name as the model wrote it (unvalidated for rejected calls).
    pub tool: String,
    pub outcome: CallOutcome,
}

/// Result of a successful planning run.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanOutcome {
    pub steps: Vec<PlannedStep>,
    /// The model's closing text (or the JSON plan's summary).
    pub summary: Option<String>,
    /// LLM rounds made (compaction calls excluded).
    pub rounds: u32,
    pub stop_reason: StopReason,
    /// Every token of every call, compaction included. `total_tokens` per call is the
    /// provider's total when it reported one at least as large as prompt + completion.
    pub usage: Usage,
    pub call_log: Vec<CallRecord>,
    /// Every reminder emitted, once per round it was sent: `(producer, severity)`.
    pub reminders: Vec<(&'static str, ReminderSeverity)>,
    pub compactions: u32,
    pub compacted_turns: u32,
    /// Set when `json_plan_fallback` was on and the final answer was not a valid plan.
    pub json_plan_error: Option<PlanParseError>,
    /// The final conversation (without transient reminders).
    pub messages: Vec<ChatMessage>,
}

/// A run that ended with an LLM error. Tokens spent before the error are preserved so
/// the caller can still book them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("planning failed ({}) in round {rounds}: {error}", .phase.as_str())]
pub struct PlanFailure {
    pub error: LlmError,
    pub usage_so_far: Usage,
    /// Rounds started, including the failing one.
    pub rounds: u32,
    pub phase: IterationPhase,
    /// True when the compaction call failed rather than a planning call.
    pub during_compaction: bool,
}

fn tool_result(success: bool, message: &str) -> String {
    json!({"success": success, "message": message}).to_string()
}

fn non_empty(text: Option<&str>) -> Option<String> {
    text.map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{ChatRequest, ChatResponse, LlmClient};

    #[test]
    fn canonical_json_sorts_keys_recursively() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[{"d":1,"c":2}],"x":"s"}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":"s","y":[{"c":2,"d":1}]},"b":1}"#).unwrap();
        let object = |v: Value| match v {
            Value::Object(m) => m,
            _ => unreachable!("an object literal"),
        };
        let (ka, params) = planner::call_key("t", object(a.clone()));
        let (kb, _) = planner::call_key("t", object(b));
        assert_eq!(ka, kb);
        assert_eq!(
            ka,
            format!("t\u{0}{}", r#"{"a":{"x":"s","y":[{"c":2,"d":1}]},"b":1}"#)
        );
        assert_eq!(
            Value::Object(params),
            a,
            "the arguments come back unchanged"
        );
    }

    #[test]
    fn usage_total_never_below_parts() {
        for (reported_total, want) in [(0, 15), (40, 40)] {
            let u = Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                total_tokens: reported_total,
            }
            .normalised();
            assert_eq!(u.total_tokens, want);
        }
    }

    /// Answers from a script; an entry of `None` refuses with `BudgetExhausted`.
    struct BudgetScript {
        replies: std::sync::Mutex<Vec<Option<ChatResponse>>>,
    }

    #[async_trait::async_trait]
    impl LlmClient for BudgetScript {
        async fn complete(&self, _request: &ChatRequest) -> Result<ChatResponse, LlmError> {
            let mut replies = self.replies.lock().unwrap();
            assert!(!replies.is_empty(), "more calls than scripted");
            replies.remove(0).ok_or(LlmError::BudgetExhausted)
        }
    }

    struct AcceptAll;

    impl CallValidator for AcceptAll {
        fn validate(&self, _name: &str, raw: &str) -> Result<Map<String, Value>, Rejection> {
            Ok(serde_json::from_str(raw).unwrap())
        }
    }

    /// A reply with `n` tool calls `t{first}`.. and the given prompt usage.
    fn calls_from(first: usize, n: usize, prompt_tokens: u64) -> ChatResponse {
        ChatResponse {
            content: None,
            tool_calls: (first..first + n)
                .map(|i| crate::chat::ToolCall {
                    id: format!("c{i}"),
                    name: "create_task".into(),
                    arguments: format!("{{\"title\":\"t{i}\"}}"),
                })
                .collect(),
            finish_reason: Some("tool_calls".into()),
            usage: Usage {
                prompt_tokens,
                completion_tokens: 5,
                total_tokens: prompt_tokens + 5,
            },
        }
    }

    fn calls(n: usize) -> ChatResponse {
        calls_from(0, n, 10)
    }

    fn run(script: Vec<Option<ChatResponse>>) -> Result<PlanOutcome, PlanFailure> {
        let llm = BudgetScript {
            replies: std::sync::Mutex::new(script),
        };
        let input = PlannerInput::new("s", "u", Vec::new(), &AcceptAll);
        futures::executor::block_on(run_planner(&llm, input))
    }

    #[test]
    fn budget_refusal_in_the_first_round_is_a_failure_without_usage() {
        let failure = run(vec![None]).unwrap_err();
        assert_eq!(failure.error, LlmError::BudgetExhausted);
        assert_eq!(failure.rounds, 1);
        assert_eq!(failure.usage_so_far, Usage::default());
        assert!(!failure.during_compaction);
    }

    #[test]
    fn budget_refusal_after_a_round_keeps_the_steps_so_far() {
        let out = run(vec![Some(calls(1)), Some(calls(2)), None]).unwrap();
        assert_eq!(out.stop_reason, StopReason::BudgetExhausted);
        assert_eq!(out.rounds, 2, "the refused call is not a round");
        // Round 2 repeats t0 (duplicate) and adds t1.
        assert_eq!(out.steps.len(), 2);
        assert_eq!(out.usage.total_tokens, 30);
    }

    #[test]
    fn budget_refusal_of_a_compaction_call_ends_the_run_gracefully() {
        // Three one-call rounds give a history that can be split; the third reports a
        // large prompt, so round 4 starts with a compaction call, which is refused.
        let llm = BudgetScript {
            replies: std::sync::Mutex::new(vec![
                Some(calls_from(0, 1, 10)),
                Some(calls_from(1, 1, 10)),
                Some(calls_from(2, 1, 1_000)),
                None,
            ]),
        };
        let mut input = PlannerInput::new("s", "u", Vec::new(), &AcceptAll);
        input.context_window_tokens = Some(100);
        let out = futures::executor::block_on(run_planner(&llm, input)).unwrap();
        assert_eq!(out.stop_reason, StopReason::BudgetExhausted);
        assert_eq!(out.rounds, 3);
        assert_eq!(out.steps.len(), 3);
        assert_eq!(out.compactions, 0);
        assert!(
            llm.replies.lock().unwrap().is_empty(),
            "the refusal was consumed"
        );
    }

    #[test]
    fn tool_result_key_order_and_dash() {
        assert_eq!(
            tool_result(true, ACCEPTED_MESSAGE),
            "{\"success\":true,\"message\":\"recorded \u{2014} pending client application\"}"
        );
    }
}
