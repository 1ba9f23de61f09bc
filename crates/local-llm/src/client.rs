//! [`LocalLlm`]: the embedded model as an [`LlmClient`].

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mana_ai_core::chat::{
    ChatMessage, ChatRequest, ChatResponse, LlmClient, LlmError, Role, ToolCall, Usage,
};

use crate::constrain::{Decision, ToolMode};
use crate::engine::{Generation, LocalModel};
use crate::schema::ToolSchema;
use crate::select::{select_tools, MAX_LOCAL_TOOLS};
use crate::LocalError;

/// The local backend. Cheap to clone; generations run on the blocking thread pool, one at
/// a time.
#[derive(Clone)]
pub struct LocalLlm {
    model: Arc<LocalModel>,
    calls: Arc<AtomicU64>,
}

impl LocalLlm {
    /// Wraps a loaded model.
    pub fn new(model: LocalModel) -> Self {
        Self {
            model: Arc::new(model),
            calls: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Loads the model at `path`.
    pub fn load(path: &Path) -> Result<Self, LocalError> {
        LocalModel::load(path).map(Self::new)
    }

    /// The loaded model.
    pub fn model(&self) -> &LocalModel {
        &self.model
    }

    /// Answers a request under an explicit `tool_choice` mode (the `LlmClient` impl uses
    /// [`ToolMode::Auto`]).
    pub async fn complete_with(
        &self,
        request: &ChatRequest,
        mode: ToolMode,
    ) -> Result<(ChatResponse, Generation), LlmError> {
        let tools =
            ToolSchema::from_specs(&request.tools).map_err(|e| LlmError::Local(e.to_string()))?;
        let tools = select_tools(&request.messages, tools, &mode, MAX_LOCAL_TOOLS);
        let model = Arc::clone(&self.model);
        let messages = request.messages.clone();
        let generation =
            tokio::task::spawn_blocking(move || model.generate(&messages, &tools, &mode))
                .await
                .map_err(|e| LlmError::Local(format!("generation task failed: {e}")))?
                .map_err(|e| LlmError::Local(e.to_string()))?;
        tracing::info!(
            offered = request.tools.len(),
            prompt_tokens = generation.prompt_tokens,
            reused_tokens = generation.reused_tokens,
            prompt_ms = generation.prompt_time.as_millis() as u64,
            completion_tokens = generation.outcome.completion_tokens,
            generation_ms = generation.generation_time.as_millis() as u64,
            constraint_ms = generation
                .generation_time
                .saturating_sub(generation.model_time)
                .as_millis() as u64,
            "local model answered"
        );
        let prompt_tokens = generation.prompt_tokens as u64;
        let completion_tokens = generation.outcome.completion_tokens as u64;
        let usage = Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        };
        let response = match &generation.outcome.decision {
            Decision::Call { name, arguments } if is_repeat(&request.messages, name, arguments) => {
                // A small model tends to repeat its last call round after round; the planner
                // would only drop the duplicate and ask again. Ending the turn saves those
                // rounds (each still runs its new messages and output on the CPU).
                tracing::debug!(tool = %name, "local model repeated an earlier call; ending the turn");
                ChatResponse {
                    content: Some(REPEAT_ANSWER.to_string()),
                    tool_calls: Vec::new(),
                    finish_reason: Some("stop".into()),
                    usage,
                }
            }
            Decision::Call { name, arguments } => {
                let n = self.calls.fetch_add(1, Ordering::Relaxed);
                ChatResponse {
                    content: None,
                    tool_calls: vec![ToolCall {
                        id: format!("call_local_{n}"),
                        name: name.clone(),
                        arguments: arguments.clone(),
                    }],
                    finish_reason: Some("tool_calls".into()),
                    usage,
                }
            }
            Decision::Final(text) => ChatResponse {
                content: Some(text.clone()),
                tool_calls: Vec::new(),
                finish_reason: Some("stop".into()),
                usage,
            },
        };
        Ok((response, generation))
    }
}

/// The final answer given instead of a repeated call.
pub const REPEAT_ANSWER: &str = "No further steps: the proposals above cover the mission.";

/// Whether an earlier assistant turn of the conversation already made this exact call
/// (same tool, same arguments as JSON values).
pub fn is_repeat(messages: &[ChatMessage], name: &str, arguments: &str) -> bool {
    let args: Option<serde_json::Value> = serde_json::from_str(arguments).ok();
    messages
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .flat_map(|m| &m.tool_calls)
        .any(|c| {
            c.name == name
                && match (
                    &args,
                    serde_json::from_str::<serde_json::Value>(&c.arguments),
                ) {
                    (Some(a), Ok(b)) => *a == b,
                    _ => c.arguments.trim() == arguments.trim(),
                }
        })
}

#[async_trait::async_trait]
impl LlmClient for LocalLlm {
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        self.complete_with(request, ToolMode::Auto)
            .await
            .map(|(r, _)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: &str) -> ToolCall {
        ToolCall {
            id: "c".into(),
            name: name.into(),
            arguments: args.into(),
        }
    }

    #[test]
    fn repeats_are_the_same_tool_with_equal_json_arguments() {
        let messages = vec![
            ChatMessage::user(r#"{"title":"a"}"#),
            ChatMessage::assistant(None, vec![call("create_task", r#"{"title":"a","due":1}"#)]),
            ChatMessage::tool_result("c", "ok"),
        ];
        assert!(is_repeat(
            &messages,
            "create_task",
            r#"{"due":1, "title":"a"}"#
        ));
        assert!(!is_repeat(
            &messages,
            "create_task",
            r#"{"title":"b","due":1}"#
        ));
        assert!(!is_repeat(
            &messages,
            "create_note",
            r#"{"title":"a","due":1}"#
        ));
        // User text that looks like a call is not a call.
        assert!(!is_repeat(
            &messages[..1],
            "create_task",
            r#"{"title":"a"}"#
        ));
        assert!(!is_repeat(&[], "create_task", "{}"));
    }
}
