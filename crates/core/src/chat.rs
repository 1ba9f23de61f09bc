//! Chat message types shared by the planner (core), the LLM adapters and the tick.
//!
//! They model the OpenAI chat-completions conversation without any wire concerns:
//! the `mana-ai-llm` crate maps them to and from JSON.

use serde::{Deserialize, Serialize};

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    /// The wire and prompt spelling (`system`, `user`, `assistant`, `tool`); the same as
    /// the serde name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One function call the model asked for. `arguments` is the raw JSON text the model
/// produced; it is validated by the planner, never trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    /// `None` is sent as JSON `null` (an assistant turn that only calls tools).
    pub content: Option<String>,
    /// Set on `tool` messages: the id of the call this message answers.
    pub tool_call_id: Option<String>,
    /// Set on `assistant` messages that call tools.
    pub tool_calls: Vec<ToolCall>,
}

impl ChatMessage {
    pub fn system(text: impl Into<String>) -> Self {
        Self::plain(Role::System, text)
    }
    pub fn user(text: impl Into<String>) -> Self {
        Self::plain(Role::User, text)
    }
    pub fn assistant(content: Option<String>, tool_calls: Vec<ToolCall>) -> Self {
        Self {
            role: Role::Assistant,
            content,
            tool_call_id: None,
            tool_calls,
        }
    }
    pub fn tool_result(call_id: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            role: Role::Tool,
            content: Some(text.into()),
            tool_call_id: Some(call_id.into()),
            tool_calls: Vec::new(),
        }
    }
    fn plain(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(text.into()),
            tool_call_id: None,
            tool_calls: Vec::new(),
        }
    }
}

/// The model alias the service plans with unless configured otherwise
/// (`MANA_LLM.REASONING` in the original; `MANA_AI_LLM_MODEL`).
pub const DEFAULT_MODEL: &str = "mana/reasoning";

/// Token usage reported by a provider for one call (or summed over several).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    /// The one rule for a call's total: never below `prompt + completion` (providers may
    /// omit `total_tokens`, or report one that undercounts). Budgets, the planner's sums
    /// and the LLM adapters all book this value.
    pub fn normalised(self) -> Usage {
        let sum = self.prompt_tokens.saturating_add(self.completion_tokens);
        Usage {
            total_tokens: self.total_tokens.max(sum),
            ..self
        }
    }

    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
    }
}

/// What one chat-completion call asks for. `tools` are OpenAI function specs
/// (`{"type":"function","function":{...}}`) as produced by the catalog, shared (`Arc`):
/// every round of a run, and every run of the same policy, reuses one list instead of
/// copying it. Build it from a `Vec` with `.into()`; `Default::default()` is empty.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// `None` or empty means the client's default model.
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    pub tools: std::sync::Arc<[serde_json::Value]>,
    pub temperature: Option<f32>,
}

/// What one chat-completion call answered.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<String>,
    pub usage: Usage,
}

/// Why a chat-completion call failed. Adapters map their transport details onto these
/// kinds; the planner and the metrics only ever see this type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// The provider answered with a non-2xx status. `kind` is the provider's
    /// `detail.kind` when present (`rate_limit`, `auth`, `blocked`, …), else `unknown`.
    #[error("provider error {status} ({kind}): {message}")]
    Provider {
        status: u16,
        kind: String,
        message: String,
    },
    /// The whole-response deadline passed.
    #[error("LLM call timed out after {0} ms")]
    Timeout(u64),
    /// Connection refused, reset, DNS, TLS…
    #[error("LLM unreachable: {0}")]
    Transport(String),
    /// A 2xx answer that is not a usable chat completion.
    #[error("invalid LLM response: {0}")]
    InvalidResponse(String),
    /// The local backend (embedded model) failed.
    #[error("local model error: {0}")]
    Local(String),
    /// The call was not made: the agent's daily token budget could not be reserved.
    /// The planner ends a run gracefully on it once at least one round was answered.
    #[error("the agent's daily token budget is exhausted")]
    BudgetExhausted,
}

impl LlmError {
    /// A short, bounded label for metrics (`provider_errors_total{kind}`).
    pub fn kind_label(&self) -> &str {
        match self {
            LlmError::Provider { kind, .. } => kind.as_str(),
            LlmError::Timeout(_) => "timeout",
            LlmError::Transport(_) => "transport",
            LlmError::InvalidResponse(_) => "invalid-response",
            LlmError::Local(_) => "local",
            LlmError::BudgetExhausted => "budget-exhausted",
        }
    }
}

/// Anything that can answer a chat-completion request: the HTTP client, the embedded
/// local model, or a scripted fake in tests.
#[async_trait::async_trait]
pub trait LlmClient: Send + Sync {
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_match_the_serde_names() {
        for role in [Role::System, Role::User, Role::Assistant, Role::Tool] {
            let json = serde_json::to_value(role).unwrap();
            assert_eq!(json, serde_json::Value::from(role.as_str()));
        }
    }

    #[test]
    fn usage_total_is_never_below_the_sum() {
        let u = |p, c, t| Usage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: t,
        };
        for (given, want) in [
            (u(10, 5, 0), 15),
            (u(10, 5, 40), 40),
            (u(10, 5, 3), 15),
            (u(7, 0, 7), 7),
            (u(0, 0, 0), 0),
            (u(u64::MAX, 1, 0), u64::MAX),
        ] {
            let got = given.normalised();
            assert_eq!(got.total_tokens, want, "{given:?}");
            assert_eq!(got.prompt_tokens, given.prompt_tokens);
            assert_eq!(got.completion_tokens, given.completion_tokens);
        }
    }
}
