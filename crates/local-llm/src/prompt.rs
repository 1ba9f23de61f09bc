//! ChatML prompt rendering (`<|im_start|>role\n…<|im_end|>\n`), the chat template of
//! SmolLM2 and other ChatML models.
//!
//! The prompt is built as segments: role markers are inserted as special token ids and all
//! message text is encoded as plain text, so content can never forge a role marker.

use mana_ai_core::chat::{ChatMessage, Role};

use crate::constrain::ToolMode;
use crate::schema::{Kind, ToolSchema};

/// One piece of a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Start of a turn for this role name.
    Open(&'static str),
    /// End of a turn.
    Close,
    /// Plain text.
    Text(String),
}

/// Longest tool description kept in the tool list.
const MAX_TOOL_DESCRIPTION: usize = 90;
/// Above this many tools only signatures are listed (keeps the prompt short).
const DESCRIBE_UP_TO: usize = 24;

fn kind_hint(kind: &Kind) -> String {
    match kind {
        Kind::String { enum_values } if !enum_values.is_empty() => enum_values.join("|"),
        Kind::String { .. } => "text".into(),
        Kind::Number | Kind::Integer => "number".into(),
        Kind::Boolean => "true|false".into(),
        Kind::Array(_) => "list".into(),
        Kind::Object(_) => "object".into(),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The instructions and tool list appended to the system turn.
pub fn tool_instructions(tools: &[ToolSchema], mode: &ToolMode) -> String {
    let mut s = String::new();
    let can_call = !tools.is_empty() && *mode != ToolMode::None;
    if can_call {
        s.push_str(
            "Answer with one JSON object. To use a tool write {\"tool\": NAME, \"arguments\": {...}}. ",
        );
        if matches!(mode, ToolMode::Auto) {
            s.push_str("When the work is done write {\"final\": \"short summary\"}. ");
        }
        s.push_str("Tools:\n");
        for t in tools {
            let params: Vec<String> = t
                .properties
                .iter()
                .map(|p| {
                    let opt = if p.required { "" } else { "?" };
                    format!("{}{opt}: {}", p.name, kind_hint(&p.kind))
                })
                .collect();
            s.push_str(&format!("- {}({})", t.name, params.join(", ")));
            if tools.len() <= DESCRIBE_UP_TO && !t.description.is_empty() {
                s.push_str(": ");
                s.push_str(truncate(&t.description, MAX_TOOL_DESCRIPTION));
            }
            s.push('\n');
        }
    } else {
        s.push_str("Answer with {\"final\": \"your answer\"}.\n");
    }
    s
}

fn assistant_text(m: &ChatMessage) -> String {
    if let Some(call) = m.tool_calls.first() {
        let args = if call.arguments.trim().is_empty() {
            "{}"
        } else {
            call.arguments.as_str()
        };
        let name = serde_json::to_string(&call.name).unwrap_or_default();
        format!("{{\"tool\": {name}, \"arguments\": {args}}}")
    } else {
        let text = serde_json::to_string(m.content.as_deref().unwrap_or("")).unwrap_or_default();
        format!("{{\"final\": {text}}}")
    }
}

/// Renders a conversation plus tool instructions, ending with an open assistant turn.
pub fn render(messages: &[ChatMessage], tools: &[ToolSchema], mode: &ToolMode) -> Vec<Segment> {
    let mut system = String::new();
    for m in messages.iter().filter(|m| m.role == Role::System) {
        if let Some(c) = &m.content {
            system.push_str(c);
            system.push('\n');
        }
    }
    if system.is_empty() {
        system.push_str("You are a careful planning assistant.\n");
    }
    system.push_str(&tool_instructions(tools, mode));
    let mut out = vec![
        Segment::Open("system"),
        Segment::Text(system),
        Segment::Close,
    ];
    for m in messages.iter().filter(|m| m.role != Role::System) {
        let text = match m.role {
            Role::Assistant => assistant_text(m),
            _ => m.content.clone().unwrap_or_default(),
        };
        out.push(Segment::Open(m.role.as_str()));
        out.push(Segment::Text(text));
        out.push(Segment::Close);
    }
    out.push(Segment::Open("assistant"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mana_ai_core::chat::ToolCall;

    fn flat(segs: &[Segment]) -> String {
        segs.iter()
            .map(|s| match s {
                Segment::Open(r) => format!("<|im_start|>{r}\n"),
                Segment::Close => "<|im_end|>\n".into(),
                Segment::Text(t) => t.clone(),
            })
            .collect()
    }

    #[test]
    fn chatml_shape() {
        let tools = vec![ToolSchema::from_spec(&serde_json::json!({"function":{"name":"ping",
            "description":"Ping it","parameters":{"properties":{"n":{"type":"number"}},"required":["n"]}}}))
            .unwrap_or_else(|e| panic!("{e}"))];
        let msgs = vec![
            ChatMessage::system("Be brief."),
            ChatMessage::user("hi"),
            ChatMessage::assistant(
                None,
                vec![ToolCall {
                    id: "c1".into(),
                    name: "ping".into(),
                    arguments: "{\"n\":1}".into(),
                }],
            ),
            ChatMessage::tool_result("c1", "pong"),
        ];
        let text = flat(&render(&msgs, &tools, &ToolMode::Auto));
        assert!(text.starts_with("<|im_start|>system\nBe brief.\nAnswer with one JSON object."));
        assert!(text.contains("- ping(n: number): Ping it\n"));
        assert!(text.contains("<|im_start|>user\nhi<|im_end|>\n"));
        assert!(text.contains(
            "<|im_start|>assistant\n{\"tool\": \"ping\", \"arguments\": {\"n\":1}}<|im_end|>\n"
        ));
        assert!(text.contains("<|im_start|>tool\npong<|im_end|>\n"));
        assert!(text.ends_with("<|im_start|>assistant\n"));
    }

    #[test]
    fn none_mode_lists_no_tools() {
        let text = tool_instructions(&[], &ToolMode::None);
        assert!(!text.contains("Tools:"));
        assert!(text.contains("final"));
    }
}
