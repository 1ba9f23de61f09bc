//! Narrowing a long tool list for the small model.
//!
//! The planner offers every tool the agent's policy allows (62 `propose` tools by
//! default). Listed in the prompt, that costs well over a thousand tokens per round, which a
//! 2-core CPU re-reads every round, and a 135M-parameter model cannot choose well among so
//! many anyway. So the local backend keeps the [`MAX_LOCAL_TOOLS`] tools whose names and
//! descriptions share the most words with the conversation before the model's first turn
//! (the mission, its inputs and any tool results given with it), in their offered order on
//! ties. Later turns do not count, so every round of one planning loop sees the same tool
//! list and the same prompt prefix, whose key/value cache the engine then reuses (issue 17).
//! It only ever drops tools: every
//! kept tool was offered, so calls stay valid for the planner; a tool named by
//! `tool_choice` is always kept.

use std::collections::HashSet;

use mana_ai_core::chat::{ChatMessage, Role};

use crate::constrain::ToolMode;
use crate::schema::ToolSchema;

/// How many tools the local backend shows the model at most.
pub const MAX_LOCAL_TOOLS: usize = 8;

/// Words that say nothing about which tool fits.
const STOP_WORDS: &[&str] = &[
    "the", "and", "for", "with", "from", "this", "that", "your", "you", "are", "into", "about",
    "has", "have", "was", "were", "will", "not", "but", "all", "any", "can", "its", "our", "their",
    "them", "then", "than", "when", "what", "which", "who", "how", "one", "new", "user", "users",
    "text", "optional", "given", "use", "used",
];

/// Lower-case words of at least three letters, with a plural `s` removed.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .map(|w| {
            let w = w.to_lowercase();
            match w.strip_suffix('s') {
                Some(stem) if stem.chars().count() >= 3 && !stem.ends_with('s') => stem.to_string(),
                _ => w,
            }
        })
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
}

/// Relevance of one tool: a shared word in its name counts three times one in its
/// description.
fn score(tool: &ToolSchema, context: &HashSet<String>) -> usize {
    let name: HashSet<String> = words(&tool.name.replace('_', " ")).collect();
    let description: HashSet<String> = words(&tool.description)
        .filter(|w| !name.contains(w))
        .collect();
    3 * name.intersection(context).count() + description.intersection(context).count()
}

/// Keeps at most `max` of `tools`, the most related to the messages before the first
/// assistant turn first; the result keeps the offered order.
pub fn select_tools(
    messages: &[ChatMessage],
    tools: Vec<ToolSchema>,
    mode: &ToolMode,
    max: usize,
) -> Vec<ToolSchema> {
    if tools.len() <= max {
        return tools;
    }
    let context: HashSet<String> = messages
        .iter()
        .take_while(|m| m.role != Role::Assistant)
        .filter(|m| matches!(m.role, Role::User | Role::Tool))
        .filter_map(|m| m.content.as_deref())
        .flat_map(words)
        .collect();
    let mut ranked: Vec<(usize, usize)> = tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let forced = matches!(mode, ToolMode::Named(n) if *n == t.name);
            (
                if forced {
                    usize::MAX
                } else {
                    score(t, &context)
                },
                i,
            )
        })
        .collect();
    // Highest score first; the offered order breaks ties (stable sort).
    ranked.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut keep: Vec<usize> = ranked.into_iter().take(max).map(|(_, i)| i).collect();
    keep.sort_unstable();
    let keep: HashSet<usize> = keep.into_iter().collect();
    tools
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, t)| t)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, description: &str) -> ToolSchema {
        ToolSchema {
            name: name.into(),
            description: description.into(),
            properties: Vec::new(),
        }
    }

    fn catalog() -> Vec<ToolSchema> {
        vec![
            tool("create_task", "Create a to-do task"),
            tool("list_tasks", "List open tasks"),
            tool("create_note", "Write a note"),
            tool(
                "create_journal_entry",
                "Write a journal entry about the day",
            ),
            tool("research_news", "Search recent news articles on a topic"),
            tool("create_goal", "Create a goal with a target"),
            tool("log_mood", "Record how the user feels"),
            tool("add_contact", "Add a person to contacts"),
        ]
    }

    fn names(tools: &[ToolSchema]) -> Vec<&str> {
        tools.iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn short_lists_are_kept_whole() {
        let out = select_tools(&[ChatMessage::user("x")], catalog(), &ToolMode::Auto, 8);
        assert_eq!(out.len(), 8);
    }

    #[test]
    fn the_most_related_tools_are_kept_in_offered_order() {
        let messages = vec![
            ChatMessage::system("You are an agent. Use tools: task, note, journal."),
            ChatMessage::user(
                "Mission: research the latest news about heat pumps; note the key points.",
            ),
        ];
        let out = select_tools(&messages, catalog(), &ToolMode::Auto, 2);
        assert_eq!(names(&out), ["create_note", "research_news"]);
        // The system message does not count (it names every kind of tool).
        let out = select_tools(&messages[..1], catalog(), &ToolMode::Auto, 2);
        assert_eq!(names(&out), ["create_task", "list_tasks"]);
    }

    #[test]
    fn plurals_match_and_tool_results_count() {
        let messages = vec![
            ChatMessage::user("Plan today."),
            ChatMessage::tool_result("c1", "3 open tasks; goals: run 5 km"),
        ];
        let out = select_tools(&messages, catalog(), &ToolMode::Auto, 3);
        assert_eq!(names(&out), ["create_task", "list_tasks", "create_goal"]);
    }

    /// Later rounds of a planning loop keep the first round's selection (a stable prompt
    /// prefix), whatever the tool results say.
    #[test]
    fn later_rounds_keep_the_first_rounds_tools() {
        let first = vec![ChatMessage::user("Plan today: tasks and goals.")];
        let before = select_tools(&first, catalog(), &ToolMode::Auto, 3);
        let mut later = first.clone();
        later.push(ChatMessage::assistant(None, Vec::new()));
        later.push(ChatMessage::tool_result(
            "c1",
            "journal entry, mood, contacts, news",
        ));
        let after = select_tools(&later, catalog(), &ToolMode::Auto, 3);
        assert_eq!(names(&before), names(&after));
        assert_eq!(names(&after), ["create_task", "list_tasks", "create_goal"]);
    }

    #[test]
    fn a_named_tool_is_always_kept() {
        let messages = vec![ChatMessage::user("Write a journal entry about the walk.")];
        let mode = ToolMode::Named("add_contact".into());
        let out = select_tools(&messages, catalog(), &mode, 1);
        assert_eq!(names(&out), ["add_contact"]);
        let out = select_tools(&messages, catalog(), &mode, 2);
        assert_eq!(names(&out), ["create_journal_entry", "add_contact"]);
    }

    #[test]
    fn every_kept_tool_was_offered_and_none_twice() {
        let messages = vec![ChatMessage::user(
            "tasks notes journal news goals mood contacts",
        )];
        for max in 0..10 {
            let out = select_tools(&messages, catalog(), &ToolMode::Auto, max);
            assert_eq!(out.len(), max.min(8));
            let set: HashSet<&str> = names(&out).into_iter().collect();
            assert_eq!(set.len(), out.len());
            assert!(out.iter().all(|t| catalog().contains(t)));
        }
    }
}
