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

/// Token usage reported by a provider for one call (or summed over several).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
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
