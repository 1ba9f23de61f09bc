//! Strict parser for a plan written as JSON text (models without tool calling).
//!
//! Shape: `{"summary"?: string, "steps": [{"toolName": string, "params"?: object,
//! "rationale": string, "summary"?: string}]}`. Compared with the original parser it
//! fixes the known gaps: params must be an object (arrays are refused), every fenced block
//! is tried (any info string, case-insensitive, so ```` ```JSON ```` works), a bare object
//! is accepted as the whole text or embedded in prose, and a step cap applies. Tool names
//! and required parameters are not checked here: the planner runs every step through the
//! [`CallValidator`](super::CallValidator), which knows the tools the agent may use.

use serde_json::{Map, Value};

/// One step of a parsed JSON plan (not yet validated against the catalog).
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedStep {
    pub tool_name: String,
    pub params: Map<String, Value>,
    pub rationale: String,
    pub summary: Option<String>,
}

/// A parsed JSON plan.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedPlan {
    pub summary: Option<String>,
    pub steps: Vec<ParsedStep>,
}

/// Why a text is not a usable JSON plan. When several candidate blocks exist, the error
/// of the first candidate that parsed as JSON is reported (else the first JSON error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanParseError {
    #[error("no JSON block found")]
    NoJsonBlock,
    #[error("JSON parse failed: {0}")]
    Json(String),
    #[error("top-level value is not an object")]
    NotAnObject,
    #[error("`steps` must be an array")]
    StepsNotArray,
    #[error("plan has {count} steps, more than the cap of {cap}")]
    TooManySteps { count: usize, cap: usize },
    #[error("step[{0}] is not an object")]
    StepNotObject(usize),
    #[error("step[{0}].toolName missing or not a string")]
    ToolNameMissing(usize),
    #[error("step[{0}].rationale is required (user will see this)")]
    RationaleMissing(usize),
    #[error("step[{0}].params must be an object")]
    ParamsNotObject(usize),
}

/// Candidate JSON texts in priority order: every fenced block (in order of appearance),
/// then the whole trimmed text if it is a bare object, then the span from the first `{`
/// to the last `}`.
fn candidates(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after_fence = &rest[open + 3..];
        // The info string runs to the end of the line; a block without a newline has none.
        let body_start = match after_fence.find('\n') {
            Some(nl) if !after_fence[..nl].contains("```") => nl + 1,
            _ => 0,
        };
        let body = &after_fence[body_start..];
        let Some(close) = body.find("```") else {
            break;
        };
        out.push(body[..close].trim());
        rest = &body[close + 3..];
    }
    let trimmed = text.trim();
    if trimmed.starts_with('{') && trimmed.ends_with('}') {
        out.push(trimmed);
    }
    if let (Some(start), Some(end)) = (text.find('{'), text.rfind('}')) {
        if start < end {
            let span = &text[start..=end];
            if span != trimmed {
                out.push(span);
            }
        }
    }
    out
}

fn non_empty_str(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn plan_from_value(value: &Value, max_steps: usize) -> Result<ParsedPlan, PlanParseError> {
    let obj = value.as_object().ok_or(PlanParseError::NotAnObject)?;
    let steps = obj
        .get("steps")
        .and_then(Value::as_array)
        .ok_or(PlanParseError::StepsNotArray)?;
    if steps.len() > max_steps {
        return Err(PlanParseError::TooManySteps {
            count: steps.len(),
            cap: max_steps,
        });
    }
    let mut parsed = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        let step = step.as_object().ok_or(PlanParseError::StepNotObject(i))?;
        let tool_name =
            non_empty_str(step.get("toolName")).ok_or(PlanParseError::ToolNameMissing(i))?;
        let rationale =
            non_empty_str(step.get("rationale")).ok_or(PlanParseError::RationaleMissing(i))?;
        let params = match step.get("params") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(PlanParseError::ParamsNotObject(i)),
        };
        parsed.push(ParsedStep {
            tool_name,
            params,
            rationale,
            summary: non_empty_str(step.get("summary")),
        });
    }
    Ok(ParsedPlan {
        summary: non_empty_str(obj.get("summary")),
        steps: parsed,
    })
}

/// Parses `text` as a JSON plan with at most `max_steps` steps. The first candidate block
/// that yields a valid plan wins.
pub fn parse_json_plan(text: &str, max_steps: usize) -> Result<ParsedPlan, PlanParseError> {
    let mut first_json_error = None;
    let mut first_shape_error = None;
    for candidate in candidates(text) {
        match serde_json::from_str::<Value>(candidate) {
            Ok(value) => match plan_from_value(&value, max_steps) {
                Ok(plan) => return Ok(plan),
                Err(e) => {
                    first_shape_error.get_or_insert(e);
                }
            },
            Err(e) => {
                first_json_error.get_or_insert(PlanParseError::Json(e.to_string()));
            }
        }
    }
    Err(first_shape_error
        .or(first_json_error)
        .unwrap_or(PlanParseError::NoJsonBlock))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PLAN: &str = r#"{"summary":"S","steps":[{"toolName":"create_task","params":{"title":"A"},"rationale":"R"}]}"#;

    #[test]
    fn accepted_shapes() {
        let texts = [
            format!("```json\n{PLAN}\n```"),
            format!("```JSON\n{PLAN}\n```"),
            format!("```jsonc\n{PLAN}\n```"),
            format!("Here you go:\n```\n{PLAN}\n```\nDone."),
            format!("```{PLAN}```"),
            PLAN.to_string(),
            format!("  {PLAN}\n"),
            format!("Here: {PLAN} thanks"),
            format!("```text\nnot json\n```\n```json\n{PLAN}\n```"),
        ];
        for text in &texts {
            let plan = parse_json_plan(text, 25).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(plan.summary.as_deref(), Some("S"));
            assert_eq!(plan.steps.len(), 1);
            assert_eq!(plan.steps[0].tool_name, "create_task");
            assert_eq!(plan.steps[0].params["title"], "A");
            assert_eq!(plan.steps[0].rationale, "R");
        }
    }

    #[test]
    fn rejections_table() {
        let step = |s: &str| format!(r#"{{"steps":[{s}]}}"#);
        let cases: Vec<(String, PlanParseError)> = vec![
            ("no json here".into(), PlanParseError::NoJsonBlock),
            ("null".into(), PlanParseError::NoJsonBlock),
            ("```json\nnull\n```".into(), PlanParseError::NotAnObject),
            ("```json\n[1]\n```".into(), PlanParseError::NotAnObject),
            (r#"{"steps":{}}"#.into(), PlanParseError::StepsNotArray),
            (step("1"), PlanParseError::StepNotObject(0)),
            (
                step(r#"{"toolName":"","rationale":"r"}"#),
                PlanParseError::ToolNameMissing(0),
            ),
            (
                step(r#"{"toolName":"t","rationale":"  "}"#),
                PlanParseError::RationaleMissing(0),
            ),
            (
                step(r#"{"toolName":"t","rationale":"r","params":["a"]}"#),
                PlanParseError::ParamsNotObject(0),
            ),
            (
                step(r#"{"toolName":"t","rationale":"r","params":"x"}"#),
                PlanParseError::ParamsNotObject(0),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_json_plan(&text, 25), Err(want), "{text}");
        }
        assert!(matches!(
            parse_json_plan("```json\n{bad\n```", 25),
            Err(PlanParseError::Json(_))
        ));
    }

    #[test]
    fn step_cap_and_defaults() {
        let steps: Vec<String> = (0..3)
            .map(|i| format!(r#"{{"toolName":"t{i}","rationale":"r"}}"#))
            .collect();
        let text = format!(r#"{{"steps":[{}]}}"#, steps.join(","));
        assert_eq!(
            parse_json_plan(&text, 2),
            Err(PlanParseError::TooManySteps { count: 3, cap: 2 })
        );
        let plan = parse_json_plan(&text, 3).unwrap();
        assert_eq!(plan.summary, None);
        assert!(plan.steps.iter().all(|s| s.params.is_empty()));
        assert_eq!(
            plan.steps
                .iter()
                .map(|s| s.tool_name.as_str())
                .collect::<Vec<_>>(),
            ["t0", "t1", "t2"]
        );
    }

    proptest! {
        #[test]
        fn never_panics(text in ".{0,200}") {
            let _ = parse_json_plan(&text, 5);
        }

        #[test]
        fn fenced_label_is_irrelevant(label in "[a-zA-Z]{0,10}", title in "[a-z ]{0,20}") {
            let body = serde_json::json!({"steps":[{"toolName":"x","params":{"title":title},"rationale":"r"}]});
            let text = format!("intro\n```{label}\n{body}\n```\noutro");
            let plan = parse_json_plan(&text, 5).unwrap();
            prop_assert_eq!(&plan.steps[0].params["title"], &serde_json::Value::String(title));
        }
    }
}
