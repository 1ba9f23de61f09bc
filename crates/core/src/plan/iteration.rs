//! Turning a planning outcome into the `MissionIteration` JSON written back to the log.
//!
//! Differences from the original `planToIteration`: the iteration id is deterministic per
//! due run (UUID v5 of mission id and due time), so a retried run cannot append a second
//! iteration with a fresh id; step summaries carry the model's rationale when it gave one;
//! and a failed run produces an explicit `failed` iteration with sanitised `errorDetails`.

use chrono::{DateTime, Utc};
use regex::Regex;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;
use uuid::Uuid;

use super::PlanOutcome;
use crate::iso::{parse_iso, to_iso_ms};
use crate::limits::{
    truncated, ERROR_MESSAGE_MAX_CHARS, ITERATION_SUMMARY_MAX_CHARS, PLAN_STEPS_MAX,
    STEP_SUMMARY_MAX_CHARS,
};

/// Namespace of [`iteration_id_for`]: UUID v5 of the URL
/// `https://mana.how/mana-ai/iteration` in the standard URL namespace
/// (`Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://mana.how/mana-ai/iteration")`).
pub const ITERATION_NAMESPACE: Uuid = Uuid::from_u128(0xadb9a1ce_e761_5b87_950f_447bba611941);

/// Where a run was when it failed (`IterationPhase` of the data model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IterationPhase {
    ResolvingInputs,
    CallingLlm,
    ParsingResponse,
    StagingProposals,
    Finalizing,
}

impl IterationPhase {
    /// The wire spelling (`resolving-inputs`, `calling-llm`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            IterationPhase::ResolvingInputs => "resolving-inputs",
            IterationPhase::CallingLlm => "calling-llm",
            IterationPhase::ParsingResponse => "parsing-response",
            IterationPhase::StagingProposals => "staging-proposals",
            IterationPhase::Finalizing => "finalizing",
        }
    }
}

/// The deterministic iteration id of the run of `mission_id` that was due at `due_at`.
/// `due_at` is normalised to `toISOString` form when it parses, so `…+01:00` and the
/// equivalent `…Z` give the same id. The name hashed is `"<len>:<mission_id>|<due_at>"`,
/// which is unambiguous for any mission id.
pub fn iteration_id_for(mission_id: &str, due_at: &str) -> String {
    let due = parse_iso(due_at).map_or_else(|| due_at.to_string(), to_iso_ms);
    let name = format!("{}:{}|{}", mission_id.len(), mission_id, due);
    Uuid::new_v5(&ITERATION_NAMESPACE, name.as_bytes()).to_string()
}

/// The success iteration: one `planned` tool-call step per accepted step, in order. Text
/// is bounded ([`crate::limits`]): at most [`PLAN_STEPS_MAX`] steps, step summaries of
/// [`STEP_SUMMARY_MAX_CHARS`] and an iteration summary of [`ITERATION_SUMMARY_MAX_CHARS`].
pub fn build_iteration(iteration_id: &str, outcome: &PlanOutcome, now: DateTime<Utc>) -> Value {
    let now = to_iso_ms(now);
    let plan: Vec<Value> = outcome
        .steps
        .iter()
        .take(PLAN_STEPS_MAX)
        .enumerate()
        .map(|(i, step)| {
            let summary = step
                .summary
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .or_else(|| Some(step.rationale.trim()).filter(|s| !s.is_empty()))
                .unwrap_or(step.tool_name.as_str());
            json!({
                "id": format!("{iteration_id}-{i}"),
                "summary": truncated(summary, STEP_SUMMARY_MAX_CHARS),
                "intent": {
                    "kind": "toolCall",
                    "toolName": step.tool_name,
                    "params": Value::Object(step.params.clone()),
                },
                "status": "planned",
            })
        })
        .collect();
    let overall = if plan.is_empty() {
        "approved"
    } else {
        "awaiting-review"
    };
    json!({
        "id": iteration_id,
        "startedAt": now,
        "finishedAt": now,
        "plan": plan,
        "summary": truncated(
            outcome.summary.as_deref().unwrap_or_default(),
            ITERATION_SUMMARY_MAX_CHARS
        ),
        "overallStatus": overall,
        "source": "server",
    })
}

fn secret_patterns() -> &'static [Regex] {
    static RES: OnceLock<Vec<Regex>> = OnceLock::new();
    RES.get_or_init(|| {
        [
            r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+",
            r"enc:1:[A-Za-z0-9._~+/=:-]+",
            r"\bsk-[A-Za-z0-9_-]{8,}",
            r"(?i)(api[_-]?key|token|secret|password)(\s*[=:]\s*)[^\s,;&]+",
        ]
        .iter()
        .filter_map(|p| Regex::new(p).ok())
        .collect()
    })
}

/// Removes things that look like credentials or ciphertext and bounds the length.
pub fn sanitise_error_message(message: &str) -> String {
    let mut out = message.to_string();
    for (i, re) in secret_patterns().iter().enumerate() {
        let replacement = if i == 3 {
            "$1$2[redacted]"
        } else {
            "[redacted]"
        };
        out = re.replace_all(&out, replacement).into_owned();
    }
    truncated(&out, ERROR_MESSAGE_MAX_CHARS)
}

/// A `failed` iteration for a run that could not produce a plan. The message is
/// sanitised ([`sanitise_error_message`]); no stack trace is written.
pub fn build_failed_iteration(
    iteration_id: &str,
    phase: IterationPhase,
    message: &str,
    now: DateTime<Utc>,
) -> Value {
    let now = to_iso_ms(now);
    let mut details = Map::new();
    details.insert("name".into(), json!("PlannerError"));
    details.insert("message".into(), json!(sanitise_error_message(message)));
    details.insert("phase".into(), json!(phase.as_str()));
    json!({
        "id": iteration_id,
        "startedAt": now,
        "finishedAt": now,
        "plan": [],
        "summary": format!("Planning failed ({})", phase.as_str()),
        "overallStatus": "failed",
        "source": "server",
        "errorDetails": Value::Object(details),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_is_the_documented_v5() {
        assert_eq!(
            ITERATION_NAMESPACE,
            Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://mana.how/mana-ai/iteration")
        );
    }

    #[test]
    fn iteration_ids_are_stable_and_distinct() {
        let a = iteration_id_for("m1", "2026-01-01T01:00:00.000+01:00");
        assert_eq!(a, iteration_id_for("m1", "2026-01-01T00:00:00Z"));
        assert_eq!(Uuid::parse_str(&a).unwrap().get_version_num(), 5);
        assert_ne!(a, iteration_id_for("m2", "2026-01-01T00:00:00Z"));
        assert_ne!(a, iteration_id_for("m1", "2026-01-01T00:01:00Z"));
        // Separator ambiguity is impossible thanks to the length prefix.
        assert_ne!(iteration_id_for("a|b", "c"), iteration_id_for("a", "b|c"));
        // Unparseable due times are hashed as given.
        assert_eq!(iteration_id_for("m", "soon"), iteration_id_for("m", "soon"));
    }

    #[test]
    fn sanitising_table() {
        let cases: &[(&str, &str)] = &[
            ("plain failure", "plain failure"),
            (
                "auth Bearer abc.def-123 rejected",
                "auth [redacted] rejected",
            ),
            ("key sk-1234567890abcdef leaked", "key [redacted] leaked"),
            ("bad enc:1:AAAA.BBBB:CC here", "bad [redacted] here"),
            ("api_key=xyz&x=1", "api_key=[redacted]&x=1"),
        ];
        for (input, want) in cases {
            assert_eq!(sanitise_error_message(input), *want, "{input}");
        }
        let at = "e".repeat(ERROR_MESSAGE_MAX_CHARS);
        assert_eq!(sanitise_error_message(&at), at);
        let over = sanitise_error_message(&"e".repeat(ERROR_MESSAGE_MAX_CHARS + 1));
        assert_eq!(over.chars().count(), ERROR_MESSAGE_MAX_CHARS);
        assert!(over.ends_with(crate::limits::TRUNCATION_MARKER));
    }
}
