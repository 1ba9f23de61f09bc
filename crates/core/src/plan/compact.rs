//! History compaction: folding older turns of a planning conversation into one summary.
//!
//! Fixes over the original: the trigger is the *current* context size, not cumulative
//! usage (the loop decides that); the kept tail always starts at a user or assistant
//! message, so a `tool` message is never separated from the assistant message that called
//! it; and the compaction request sends the folded turns as a plain-text transcript inside
//! one user message, so no `tool`/`tool_calls` messages travel with `tools: []`.

use regex::Regex;
use std::fmt::Write as _;
use std::sync::OnceLock;

use crate::chat::{ChatMessage, Role};
use crate::lang::Lang;
use crate::prompt::{text, truncate_chars};

/// Fraction of the context window at which compaction fires.
pub const COMPACT_THRESHOLD: f64 = 0.92;
/// Number of most recent messages kept verbatim (extended backwards to a turn boundary).
pub const COMPACT_KEEP_RECENT: usize = 4;
/// Temperature of the compaction call.
pub const COMPACT_TEMPERATURE: f32 = 0.2;
/// Longest transcript entry (chars) sent to the compaction call.
const TRANSCRIPT_ENTRY_MAX: usize = 2000;

/// Instructions of the compaction call, in English ([`text::compaction`] has both
/// languages).
pub const COMPACT_SYSTEM_PROMPT: &str = text::compaction(Lang::En).system;

/// The four sections of a compaction summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactSummary {
    pub goal: String,
    pub decisions: String,
    pub tools_called: String,
    pub current_progress: String,
}

fn section_regexes() -> &'static [Regex; 4] {
    static RES: OnceLock<[Regex; 4]> = OnceLock::new();
    RES.get_or_init(|| {
        ["Goal", "Decisions", "Tools Called", "Current Progress"].map(|h| {
            let pattern = format!(r"(?is)##[ \t]+{h}[ \t]*\r?\n(.*?)(?:\n##\s|\z)");
            // Built from fixed literal headings: the pattern is always valid.
            Regex::new(&pattern).unwrap()
        })
    })
}

/// Extracts the four sections (case-insensitive headings); a missing section is empty.
/// Never fails.
pub fn parse_compact_summary(raw: &str) -> CompactSummary {
    let [goal, decisions, tools, progress] = section_regexes().each_ref().map(|re| {
        re.captures(raw)
            .and_then(|c| c.get(1))
            .map(|m| m.as_str().trim().to_string())
            .unwrap_or_default()
    });
    CompactSummary {
        goal,
        decisions,
        tools_called: tools,
        current_progress: progress,
    }
}

fn or<'a>(value: &'a str, fallback: &'a str) -> &'a str {
    if value.is_empty() {
        fallback
    } else {
        value
    }
}

/// Renders the summary as the `<compact-summary>` block that replaces the folded turns
/// (English placeholders for empty sections).
pub fn render_compact_summary(s: &CompactSummary) -> String {
    render_compact_summary_in(s, Lang::En)
}

/// [`render_compact_summary`] with the placeholders of `lang`.
pub fn render_compact_summary_in(s: &CompactSummary, lang: Lang) -> String {
    let w = text::compaction(lang);
    format!(
        "<compact-summary>\n## Goal\n{}\n\n## Decisions\n{}\n\n## Tools Called\n{}\n\n## Current Progress\n{}\n</compact-summary>",
        or(&s.goal, w.unclear),
        or(&s.decisions, w.none),
        or(&s.tools_called, w.none),
        or(&s.current_progress, w.unclear),
    )
}

/// The one token-estimate rule of the service: characters / 4, rounded up. The
/// compaction trigger and the runner's budget reservations both count with it.
pub fn tokens_for_chars(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

/// Rough token estimate of a conversation: [`tokens_for_chars`] of its text.
pub fn estimate_tokens(messages: &[ChatMessage]) -> u64 {
    let chars: usize = messages
        .iter()
        .map(|m| {
            m.content.as_deref().map_or(0, |c| c.chars().count())
                + m.tool_calls
                    .iter()
                    .map(|c| c.name.len() + c.arguments.chars().count() + c.id.len())
                    .sum::<usize>()
        })
        .sum();
    tokens_for_chars(chars)
}

/// Where a history can be split: `head_end` = index after the first user message
/// (system and mission message stay), `tail_start` = first kept message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub head_end: usize,
    pub tail_start: usize,
}

/// Chooses the split, or `None` when there is nothing to fold. The tail holds at least
/// `keep_recent` messages and starts at a user/assistant message (never a `tool` message),
/// so every tool result stays with the assistant message that requested it.
pub fn split_history(messages: &[ChatMessage], keep_recent: usize) -> Option<Split> {
    let head_end = messages
        .iter()
        .position(|m| m.role == Role::User)
        .map_or(0, |i| i + 1);
    let mut tail_start = messages.len().checked_sub(keep_recent)?;
    while tail_start > head_end
        && messages
            .get(tail_start)
            .is_some_and(|m| m.role == Role::Tool)
    {
        tail_start -= 1;
    }
    (tail_start > head_end).then_some(Split {
        head_end,
        tail_start,
    })
}

/// The two messages of the compaction call: instructions, then one user message with the
/// mission message and the folded turns as a transcript.
pub fn compaction_request(messages: &[ChatMessage], split: Split, lang: Lang) -> Vec<ChatMessage> {
    let w = text::compaction(lang);
    let mut text = String::new();
    if let Some(first_user) = messages[..split.head_end]
        .iter()
        .rfind(|m| m.role == Role::User)
    {
        text.push_str(w.original_message);
        text.push_str(first_user.content.as_deref().unwrap_or(""));
        text.push_str("\n\n");
    }
    text.push_str(w.conversation);
    for m in &messages[split.head_end..split.tail_start] {
        let content = m
            .content
            .as_deref()
            .map(|c| truncate_chars(c, TRANSCRIPT_ENTRY_MAX));
        match m.role {
            Role::Assistant => {
                if let Some(c) = content.filter(|c| !c.trim().is_empty()) {
                    let _ = writeln!(text, "[assistant] {c}");
                }
                for call in &m.tool_calls {
                    let _ = writeln!(
                        text,
                        "[assistant calls {} (id {})] {}",
                        call.name,
                        call.id,
                        truncate_chars(&call.arguments, TRANSCRIPT_ENTRY_MAX)
                    );
                }
            }
            Role::Tool => {
                let _ = writeln!(
                    text,
                    "[tool result for {}] {}",
                    m.tool_call_id.as_deref().unwrap_or("?"),
                    content.unwrap_or_default()
                );
            }
            Role::User => {
                let _ = writeln!(text, "[user] {}", content.unwrap_or_default());
            }
            Role::System => {
                let _ = writeln!(text, "[system] {}", content.unwrap_or_default());
            }
        }
    }
    text.push_str(w.closing);
    vec![ChatMessage::system(w.system), ChatMessage::user(text)]
}

/// Replaces the folded middle with one assistant message holding the rendered summary.
pub fn apply_compaction(
    messages: &[ChatMessage],
    split: Split,
    summary: &CompactSummary,
    lang: Lang,
) -> Vec<ChatMessage> {
    let mut out = Vec::with_capacity(split.head_end + 1 + messages.len() - split.tail_start);
    out.extend_from_slice(&messages[..split.head_end]);
    out.push(ChatMessage::assistant(
        Some(render_compact_summary_in(summary, lang)),
        Vec::new(),
    ));
    out.extend_from_slice(&messages[split.tail_start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ToolCall;
    use proptest::prelude::*;

    fn call(id: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: "t".into(),
            arguments: "{}".into(),
        }
    }

    #[test]
    fn parse_and_render_roundtrip() {
        let raw = "## goal\nPlan the week\n\n## Decisions\n- a\n- b\n## TOOLS CALLED\n- x() -> ok\n## Current Progress\nhalf done";
        let s = parse_compact_summary(raw);
        assert_eq!(s.goal, "Plan the week");
        assert_eq!(s.decisions, "- a\n- b");
        assert_eq!(s.tools_called, "- x() -> ok");
        assert_eq!(s.current_progress, "half done");
        assert_eq!(parse_compact_summary("nothing"), CompactSummary::default());
        assert_eq!(
            render_compact_summary(&CompactSummary::default()),
            "<compact-summary>\n## Goal\nunclear\n\n## Decisions\n(none)\n\n## Tools Called\n(none)\n\n## Current Progress\nunclear\n</compact-summary>"
        );
    }

    #[test]
    fn split_moves_back_over_tool_messages() {
        let msgs = vec![
            ChatMessage::system("s"),
            ChatMessage::user("u"),
            ChatMessage::assistant(None, vec![call("a")]),
            ChatMessage::tool_result("a", "r"),
            ChatMessage::assistant(None, vec![call("b"), call("c"), call("d")]),
            ChatMessage::tool_result("b", "r"),
            ChatMessage::tool_result("c", "r"),
            ChatMessage::tool_result("d", "r"),
        ];
        // len 8, keep 4 → index 4 is an assistant: fine.
        assert_eq!(
            split_history(&msgs, 4),
            Some(Split {
                head_end: 2,
                tail_start: 4
            })
        );
        // keep 3 → index 5 is a tool message: move back to 4.
        assert_eq!(split_history(&msgs, 3).map(|s| s.tail_start), Some(4));
        // keep 6 → index 2: nothing to fold.
        assert_eq!(split_history(&msgs, 6), None);
        assert_eq!(split_history(&msgs, 20), None);
    }

    fn arb_history() -> impl Strategy<Value = Vec<ChatMessage>> {
        // Each turn: an assistant message with n calls followed by their n results,
        // or a plain assistant/user message.
        prop::collection::vec(0usize..4, 0..10).prop_map(|turns| {
            let mut msgs = vec![ChatMessage::system("s"), ChatMessage::user("u")];
            for (t, n) in turns.into_iter().enumerate() {
                if n == 0 {
                    msgs.push(ChatMessage::user(format!("feedback {t}")));
                } else {
                    let calls: Vec<ToolCall> = (0..n).map(|i| call(&format!("c{t}_{i}"))).collect();
                    msgs.push(ChatMessage::assistant(None, calls.clone()));
                    for c in calls {
                        msgs.push(ChatMessage::tool_result(c.id, "ok"));
                    }
                }
            }
            msgs
        })
    }

    proptest! {
        #[test]
        fn compaction_never_orphans_tool_messages(msgs in arb_history(), keep in 0usize..6) {
            if let Some(split) = split_history(&msgs, keep) {
                prop_assert!(split.tail_start > split.head_end);
                prop_assert!(msgs.len() - split.tail_start >= keep);
                let out = apply_compaction(&msgs, split, &CompactSummary::default(), Lang::En);
                // Every tool message answers a call of the nearest preceding assistant message.
                let mut open: Vec<String> = Vec::new();
                for m in &out {
                    match m.role {
                        Role::Assistant => open = m.tool_calls.iter().map(|c| c.id.clone()).collect(),
                        Role::Tool => {
                            let id = m.tool_call_id.clone().unwrap_or_default();
                            prop_assert!(open.contains(&id), "orphan tool message {}", id);
                        }
                        _ => open.clear(),
                    }
                }
                prop_assert_eq!(out[0].role, Role::System);
                prop_assert_eq!(out[1].role, Role::User);
                let rendered = out[2].content.as_deref().unwrap_or_default();
                prop_assert!(rendered.starts_with("<compact-summary>"));
            }
        }
    }

    #[test]
    fn request_is_a_plain_transcript() {
        let msgs = vec![
            ChatMessage::system("s"),
            ChatMessage::user("mission text"),
            ChatMessage::assistant(Some("thinking".into()), vec![call("a")]),
            ChatMessage::tool_result("a", "{\"success\":true}"),
            ChatMessage::assistant(Some("done".into()), vec![]),
            ChatMessage::user("more"),
            ChatMessage::assistant(None, vec![call("b")]),
            ChatMessage::tool_result("b", "r"),
        ];
        let split = split_history(&msgs, 3).unwrap();
        let req = compaction_request(&msgs, split, Lang::En);
        assert_eq!(req.len(), 2);
        assert_eq!(req[0].content.as_deref(), Some(COMPACT_SYSTEM_PROMPT));
        assert!(req
            .iter()
            .all(|m| m.tool_calls.is_empty() && m.tool_call_id.is_none()));
        let text = req[1].content.as_deref().unwrap();
        assert_eq!(
            text,
            "Original mission message:\nmission text\n\nConversation to compress:\n\
             [assistant] thinking\n[assistant calls t (id a)] {}\n[tool result for a] {\"success\":true}\n\
             [assistant] done\n\nCompress the conversation above into the sections ## Goal / \
             ## Decisions / ## Tools Called / ## Current Progress, as Markdown without any introduction."
        );
    }

    #[test]
    fn german_request_keeps_the_section_headings() {
        let msgs = vec![
            ChatMessage::system("s"),
            ChatMessage::user("Mission"),
            ChatMessage::assistant(Some("a".into()), vec![]),
            ChatMessage::user("b"),
        ];
        let split = split_history(&msgs, 1).unwrap();
        let req = compaction_request(&msgs, split, Lang::De);
        let system = req[0].content.as_deref().unwrap();
        for h in [
            "## Goal",
            "## Decisions",
            "## Tools Called",
            "## Current Progress",
        ] {
            assert!(system.contains(h), "{h}");
        }
        assert!(system.contains("Schreib auf Deutsch"));
        let user = req[1].content.as_deref().unwrap();
        assert!(user.starts_with(
            "Ursprüngliche Missionsnachricht:\nMission\n\nZu verdichtendes Gespräch:\n"
        ));
        assert_eq!(
            render_compact_summary_in(&CompactSummary::default(), Lang::De),
            "<compact-summary>\n## Goal\nunklar\n\n## Decisions\n(keine)\n\n## Tools Called\n(keine)\n\n## Current Progress\nunklar\n</compact-summary>"
        );
    }

    #[test]
    fn token_estimate_rounds_up() {
        assert_eq!(estimate_tokens(&[]), 0);
        assert_eq!(estimate_tokens(&[ChatMessage::user("abcde")]), 2);
        assert_eq!(estimate_tokens(&[ChatMessage::user("abcd")]), 1);
        assert_eq!(tokens_for_chars(0), 0);
        assert_eq!(tokens_for_chars(4), 1);
        assert_eq!(tokens_for_chars(5), 2);
    }
}
