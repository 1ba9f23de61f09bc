//! The limits on what a model may write into a row, at their edges (exactly at, one
//! over): tool-argument bytes, steps per iteration, step and iteration summaries.

use std::collections::VecDeque;
use std::sync::Mutex;

use chrono::{TimeZone, Utc};
use futures::executor::block_on;
use mana_ai_core::chat::{ChatRequest, ChatResponse, LlmClient, LlmError, ToolCall, Usage};
use mana_ai_core::limits::{
    ITERATION_SUMMARY_MAX_CHARS, PLAN_STEPS_MAX, PROMPT_ITERATIONS_MAX, STEP_SUMMARY_MAX_CHARS,
    TOOL_ARGS_MAX_BYTES, TRUNCATION_MARKER,
};
use mana_ai_core::plan::{
    build_iteration, run_planner, CallOutcome, CallValidator, PlanOutcome, PlannerInput, Rejection,
};
use serde_json::{Map, Value};

struct Script(Mutex<VecDeque<ChatResponse>>);

#[async_trait::async_trait]
impl LlmClient for Script {
    async fn complete(&self, _request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        self.0
            .lock()
            .unwrap()
            .pop_front()
            .ok_or_else(|| LlmError::InvalidResponse("script exhausted".into()))
    }
}

/// Accepts any JSON object.
struct AnyObject;

impl CallValidator for AnyObject {
    fn validate(&self, _name: &str, raw: &str) -> Result<Map<String, Value>, Rejection> {
        match serde_json::from_str(raw) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(Rejection {
                label: "bad",
                message: "not an object".into(),
            }),
        }
    }
}

fn calls(args: &[String], content: Option<&str>) -> ChatResponse {
    ChatResponse {
        content: content.map(str::to_string),
        tool_calls: args
            .iter()
            .enumerate()
            .map(|(i, a)| ToolCall {
                id: format!("c{i}"),
                name: "create_task".into(),
                arguments: a.clone(),
            })
            .collect(),
        finish_reason: Some("tool_calls".into()),
        usage: Usage::default(),
    }
}

fn stop(text: &str) -> ChatResponse {
    ChatResponse {
        content: Some(text.into()),
        tool_calls: Vec::new(),
        finish_reason: Some("stop".into()),
        usage: Usage::default(),
    }
}

fn plan(replies: Vec<ChatResponse>, max_steps: usize) -> PlanOutcome {
    let llm = Script(Mutex::new(replies.into()));
    let mut input = PlannerInput::new("s", "u", Vec::new(), &AnyObject);
    input.max_steps = max_steps;
    block_on(run_planner(&llm, input)).expect("planner run")
}

/// Arguments `{"title":"x…"}` of exactly `len` bytes.
fn args_of(len: usize) -> String {
    format!("{{\"title\":\"{}\"}}", "x".repeat(len - 12))
}

#[test]
fn tool_arguments_at_the_limit_pass_and_one_byte_over_are_rejected() {
    let at = args_of(TOOL_ARGS_MAX_BYTES);
    let over = args_of(TOOL_ARGS_MAX_BYTES + 1);
    assert_eq!(
        (at.len(), over.len()),
        (TOOL_ARGS_MAX_BYTES, TOOL_ARGS_MAX_BYTES + 1)
    );
    let out = plan(vec![calls(&[at, over], None), stop("done")], 25);
    assert_eq!(out.steps.len(), 1);
    assert_eq!(out.call_log[0].outcome, CallOutcome::Accepted);
    assert_eq!(out.call_log[1].outcome, CallOutcome::Rejected("too_large"));
    // The model is told why, and the huge arguments are not kept in the conversation.
    let texts: Vec<String> = out
        .messages
        .iter()
        .filter_map(|m| m.content.clone())
        .collect();
    assert!(texts.iter().any(|t| t.contains("too_large")), "{texts:?}");
    let kept: usize = out
        .messages
        .iter()
        .flat_map(|m| &m.tool_calls)
        .map(|c| c.arguments.len())
        .sum();
    assert!(kept < TOOL_ARGS_MAX_BYTES + 200, "{kept}");
}

#[test]
fn a_five_megabyte_argument_never_reaches_the_plan() {
    let huge = args_of(5 * 1024 * 1024);
    let out = plan(vec![calls(&[huge], None), stop("gave up")], 25);
    assert!(out.steps.is_empty());
    assert_eq!(out.call_log[0].outcome, CallOutcome::Rejected("too_large"));
    let written = build_iteration(
        "it",
        &out,
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
    );
    assert!(written.to_string().len() < 4_096);
}

#[test]
fn steps_are_capped_whatever_the_configured_cap() {
    let args: Vec<String> = (0..PLAN_STEPS_MAX + 1)
        .map(|i| format!("{{\"title\":\"t{i}\"}}"))
        .collect();
    let out = plan(vec![calls(&args, None), stop("done")], 1_000);
    assert_eq!(out.steps.len(), PLAN_STEPS_MAX);
    assert_eq!(out.call_log[PLAN_STEPS_MAX].outcome, CallOutcome::OverCap);
    let exactly = plan(
        vec![calls(&args[..PLAN_STEPS_MAX], None), stop("done")],
        1_000,
    );
    assert_eq!(exactly.steps.len(), PLAN_STEPS_MAX);
}

#[test]
fn summaries_are_cut_at_their_limits() {
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    for (len, cut) in [
        (ITERATION_SUMMARY_MAX_CHARS, false),
        (ITERATION_SUMMARY_MAX_CHARS + 1, true),
    ] {
        let text = "ä".repeat(len);
        let out = plan(vec![calls(&[args_of(20)], None), stop(&text)], 25);
        let it = build_iteration("it", &out, now);
        let summary = it["summary"].as_str().unwrap();
        assert_eq!(summary.chars().count(), ITERATION_SUMMARY_MAX_CHARS);
        assert_eq!(summary.ends_with(TRUNCATION_MARKER), cut, "{len}");
    }
    for (len, cut) in [
        (STEP_SUMMARY_MAX_CHARS, false),
        (STEP_SUMMARY_MAX_CHARS + 1, true),
    ] {
        let rationale = "€".repeat(len);
        let out = plan(
            vec![calls(&[args_of(20)], Some(&rationale)), stop("ok")],
            25,
        );
        let it = build_iteration("it", &out, now);
        let step = it["plan"][0]["summary"].as_str().unwrap();
        assert_eq!(step.chars().count(), STEP_SUMMARY_MAX_CHARS);
        assert_eq!(step.ends_with(TRUNCATION_MARKER), cut, "{len}");
    }
}

#[test]
fn the_prompt_sees_as_many_iterations_as_are_passed_to_it() {
    assert_eq!(
        PROMPT_ITERATIONS_MAX,
        mana_ai_core::prompt::ITERATION_HISTORY_LEN
    );
}
