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
    /// Most completion tokens the model may produce (`max_tokens` on the wire); `None`
    /// sends none. The runner's budgeted client sets it on every call, so the budget's
    /// reservation (prompt estimate + this bound) covers what a call can spend.
    pub max_tokens: Option<u32>,
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
    /// The provider answered with a non-2xx status (or a 2xx whose body is an error
    /// object). `kind` is the provider's `detail.kind` when present (`rate_limit`, `auth`,
    /// `blocked`, …), else `unknown`.
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
    /// A 2xx answer larger than the client's response limit (bytes); it was not read.
    #[error("LLM response exceeds {0} bytes")]
    ResponseTooLarge(usize),
    /// The local backend (embedded model) failed.
    #[error("local model error: {0}")]
    Local(String),
    /// The call was not made: the agent's daily token budget could not be reserved.
    /// The planner ends a run gracefully on it once at least one round was answered.
    #[error("the agent's daily token budget is exhausted")]
    BudgetExhausted,
}

/// Every value [`LlmError::kind_label`] can answer: the label set of
/// `mana_ai_provider_errors_total{kind}`. Closed, so a provider can never mint labels.
pub const ERROR_KINDS: [&str; 15] = [
    // mana-llm's own `detail.kind` values.
    "blocked",
    "truncated",
    "auth",
    "rate_limit",
    "capability",
    "no_healthy_provider",
    // Provider errors without a known kind, by status.
    "server-error",
    "client-error",
    "error-body",
    // Our own.
    "timeout",
    "transport",
    "invalid-response",
    "oversize",
    "local",
    "budget-exhausted",
];

impl LlmError {
    /// A label from the closed set [`ERROR_KINDS`] for metrics
    /// (`provider_errors_total{kind}`): a known provider kind as is; otherwise 429 is
    /// `rate_limit`, 401/403 `auth`, other 5xx `server-error`, a 2xx error object
    /// `error-body`, anything else `client-error`.
    pub fn kind_label(&self) -> &'static str {
        match self {
            LlmError::Provider { status, kind, .. } => provider_kind_label(*status, kind),
            LlmError::Timeout(_) => "timeout",
            LlmError::Transport(_) => "transport",
            LlmError::InvalidResponse(_) => "invalid-response",
            LlmError::ResponseTooLarge(_) => "oversize",
            LlmError::Local(_) => "local",
            LlmError::BudgetExhausted => "budget-exhausted",
        }
    }
}

fn provider_kind_label(status: u16, kind: &str) -> &'static str {
    if let Some(known) = ERROR_KINDS[..6].iter().copied().find(|k| *k == kind) {
        return known;
    }
    match status {
        429 => "rate_limit",
        401 | 403 => "auth",
        200..=299 => "error-body",
        500..=599 => "server-error",
        _ => "client-error",
    }
}

/// What one attempt of a call cost, as far as the client knows: the usage the provider
/// reported, or none (then `maybe_billed` says whether the provider may have produced
/// and billed an answer anyway: a timeout, or a 2xx body that could not be used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptCharge {
    /// 1-based attempt number within the call.
    pub attempt: u32,
    pub usage: Option<Usage>,
    pub maybe_billed: bool,
    /// [`LlmError::kind_label`] of a failed attempt; `None` when it answered.
    pub error_kind: Option<&'static str>,
}

impl AttemptCharge {
    /// The charge of an attempt that ended with `result` (the rule of clients that do
    /// not know more): the reported usage; with none, maybe billed when it timed out or
    /// answered something unusable, not when it was refused or never reached.
    pub fn of(attempt: u32, result: &Result<ChatResponse, LlmError>) -> Self {
        match result {
            Ok(r) => Self {
                attempt,
                usage: Some(r.usage.normalised()),
                maybe_billed: true,
                error_kind: None,
            },
            Err(e) => Self {
                attempt,
                usage: None,
                maybe_billed: matches!(
                    e,
                    LlmError::Timeout(_)
                        | LlmError::InvalidResponse(_)
                        | LlmError::ResponseTooLarge(_)
                ),
                error_kind: Some(e.kind_label()),
            },
        }
    }
}

/// Told about every attempt of a call (the budget books each one). `before_attempt` may
/// refuse an attempt: the call then ends with that error and makes no more attempts.
#[async_trait::async_trait]
pub trait AttemptMeter: Send + Sync {
    async fn before_attempt(&self, attempt: u32) -> Result<(), LlmError>;
    async fn after_attempt(&self, charge: AttemptCharge);
}

/// Anything that can answer a chat-completion request: the HTTP client, the embedded
/// local model, or a scripted fake in tests.
#[async_trait::async_trait]
pub trait LlmClient: Send + Sync {
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError>;

    /// [`Self::complete`], telling `meter` about every attempt. Clients that retry
    /// internally (the HTTP client) report each attempt; the default is one attempt.
    async fn complete_metered(
        &self,
        request: &ChatRequest,
        meter: &dyn AttemptMeter,
    ) -> Result<ChatResponse, LlmError> {
        meter.before_attempt(1).await?;
        let result = self.complete(request).await;
        meter.after_attempt(AttemptCharge::of(1, &result)).await;
        result
    }
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

    #[test]
    fn kind_labels_come_from_the_closed_set() {
        let p = |status, kind: &str| LlmError::Provider {
            status,
            kind: kind.into(),
            message: "m".into(),
        };
        let table = [
            (p(422, "blocked"), "blocked"),
            (p(503, "no_healthy_provider"), "no_healthy_provider"),
            (p(429, "unknown"), "rate_limit"),
            (p(429, "slow-down-please"), "rate_limit"),
            (p(401, "unknown"), "auth"),
            (p(500, "db-exploded"), "server-error"),
            (p(200, "quota"), "error-body"),
            (p(404, "unknown"), "client-error"),
            (LlmError::Timeout(1), "timeout"),
            (LlmError::Transport("x".into()), "transport"),
            (LlmError::InvalidResponse("x".into()), "invalid-response"),
            (LlmError::ResponseTooLarge(9), "oversize"),
            (LlmError::Local("x".into()), "local"),
            (LlmError::BudgetExhausted, "budget-exhausted"),
        ];
        for (error, want) in table {
            assert_eq!(error.kind_label(), want, "{error:?}");
            assert!(ERROR_KINDS.contains(&error.kind_label()));
        }
    }

    #[test]
    fn attempt_charges() {
        let ok: Result<ChatResponse, LlmError> = Ok(ChatResponse {
            content: None,
            tool_calls: vec![],
            finish_reason: None,
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
                total_tokens: 0,
            },
        });
        let c = AttemptCharge::of(1, &ok);
        assert_eq!(c.usage.map(|u| u.total_tokens), Some(5));
        for (error, billed) in [
            (LlmError::Timeout(1), true),
            (LlmError::InvalidResponse("x".into()), true),
            (LlmError::ResponseTooLarge(1), true),
            (LlmError::Transport("x".into()), false),
            (LlmError::BudgetExhausted, false),
        ] {
            let c = AttemptCharge::of(2, &Err(error));
            assert_eq!((c.attempt, c.usage, c.maybe_billed), (2, None, billed));
        }
    }
}
