//! Configuration of [`crate::HttpLlmClient`] and the per-attempt observability hook.
//!
//! The configuration holds the bearer key as a plain `String` so callers can build it
//! from their own settings; its `Debug` output never shows the key, and the client moves
//! the key into a zeroizing buffer as soon as it is constructed.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Model alias used when a request names none (`MANA_LLM.REASONING`).
pub const DEFAULT_MODEL: &str = mana_ai_core::chat::DEFAULT_MODEL;
/// Sampling temperature used when a request sets none.
pub const DEFAULT_TEMPERATURE: f32 = 0.3;
/// Default deadline of one attempt, covering connect, headers and the whole body.
pub const DEFAULT_CALL_DEADLINE: Duration = Duration::from_secs(120);
/// Default number of attempts per call (first try included).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default base of the exponential backoff.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Default cap of one backoff sleep (a `Retry-After` may ask for up to four times this).
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(8);
/// Default limit on the size of a successful response body.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Callback invoked after every attempt, successful or not.
pub type AttemptHook = Arc<dyn Fn(&AttemptReport) + Send + Sync>;

/// How one attempt ended, as a bounded label suitable for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// A usable chat completion was received.
    Ok,
    /// The provider answered with a non-2xx status.
    ProviderError,
    /// The attempt's deadline passed.
    Timeout,
    /// The provider could not be reached or the connection broke.
    Transport,
    /// A 2xx answer that was not a usable chat completion.
    InvalidResponse,
}

impl AttemptOutcome {
    /// Stable lowercase label (`ok`, `provider_error`, `timeout`, `transport`,
    /// `invalid_response`).
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::ProviderError => "provider_error",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::Transport => "transport",
            AttemptOutcome::InvalidResponse => "invalid_response",
        }
    }
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the attempt hook is told about one HTTP attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptReport {
    /// 1-based attempt number within the call.
    pub attempt: u32,
    /// Wall time the attempt took (request, headers and body).
    pub duration: Duration,
    /// How the attempt ended.
    pub outcome: AttemptOutcome,
    /// HTTP status, when response headers were received before the attempt ended.
    pub status: Option<u16>,
    /// Whether the client will make another attempt after this one.
    pub will_retry: bool,
}

/// Settings of [`crate::HttpLlmClient`]. Build it with [`HttpLlmConfig::new`] and adjust
/// the public fields; [`crate::HttpLlmClient::new`] validates them.
#[derive(Clone)]
pub struct HttpLlmConfig {
    /// Provider base URL, e.g. `http://localhost:3020`. One trailing `/` is removed.
    pub base_url: String,
    /// Bearer token sent as `authorization: Bearer <key>`. Never logged or shown.
    pub api_key: String,
    /// Model used when a request names none or an empty one.
    pub default_model: String,
    /// Temperature used when a request sets none. Must be finite.
    pub temperature: f32,
    /// Deadline of one attempt, including reading the whole response body.
    pub call_deadline: Duration,
    /// Optional deadline of the whole call, retries and backoff sleeps included.
    pub overall_deadline: Option<Duration>,
    /// Attempts per call, first try included. Must be at least 1.
    pub max_attempts: u32,
    /// Base of the exponential backoff (`base · 2^(retry-1)`, full jitter).
    pub backoff_base: Duration,
    /// Cap of one jittered backoff sleep; `Retry-After` is honoured up to `4 · cap`.
    pub backoff_cap: Duration,
    /// Largest successful response body accepted, in bytes.
    pub max_response_bytes: usize,
    /// Called after every attempt.
    pub on_attempt: Option<AttemptHook>,
}

impl HttpLlmConfig {
    /// A configuration with every default filled in.
    pub fn new(base_url: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: api_key.into(),
            default_model: DEFAULT_MODEL.to_owned(),
            temperature: DEFAULT_TEMPERATURE,
            call_deadline: DEFAULT_CALL_DEADLINE,
            overall_deadline: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_cap: DEFAULT_BACKOFF_CAP,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            on_attempt: None,
        }
    }

    /// Installs the per-attempt hook.
    pub fn with_attempt_hook(
        mut self,
        hook: impl Fn(&AttemptReport) + Send + Sync + 'static,
    ) -> Self {
        self.on_attempt = Some(Arc::new(hook));
        self
    }
}

impl fmt::Debug for HttpLlmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpLlmConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"[redacted]")
            .field("default_model", &self.default_model)
            .field("temperature", &self.temperature)
            .field("call_deadline", &self.call_deadline)
            .field("overall_deadline", &self.overall_deadline)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_cap", &self.backoff_cap)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("on_attempt", &self.on_attempt.as_ref().map(|_| "<hook>"))
            .finish()
    }
}

/// Why [`crate::HttpLlmClient::new`] rejected a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The base URL does not parse as an absolute `http`/`https` URL.
    #[error("invalid LLM base URL: {0}")]
    InvalidBaseUrl(String),
    /// The key is empty or holds characters not allowed in an HTTP header.
    #[error("invalid LLM api key (empty or not a valid header value)")]
    InvalidApiKey,
    /// A numeric setting is out of range.
    #[error("invalid LLM client setting: {0}")]
    InvalidSetting(&'static str),
    /// The HTTP stack could not be initialised.
    #[error("could not build the HTTP client: {0}")]
    Http(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let cfg = HttpLlmConfig::new("http://x", "k");
        assert_eq!(cfg.default_model, "mana/reasoning");
        assert_eq!(cfg.temperature, 0.3);
        assert_eq!(cfg.call_deadline, Duration::from_secs(120));
        assert_eq!(cfg.max_attempts, 3);
        assert_eq!(cfg.backoff_base, Duration::from_millis(500));
        assert_eq!(cfg.backoff_cap, Duration::from_secs(8));
        assert!(cfg.overall_deadline.is_none());
        assert!(cfg.on_attempt.is_none());
    }

    #[test]
    fn debug_redacts_the_key() {
        let cfg = HttpLlmConfig::new("http://x", "sk-very-secret-value").with_attempt_hook(|_| {});
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("sk-very-secret-value"), "{shown}");
        assert!(shown.contains("[redacted]"));
        assert!(shown.contains("<hook>"));
    }

    #[test]
    fn outcome_labels_are_stable() {
        let table = [
            (AttemptOutcome::Ok, "ok"),
            (AttemptOutcome::ProviderError, "provider_error"),
            (AttemptOutcome::Timeout, "timeout"),
            (AttemptOutcome::Transport, "transport"),
            (AttemptOutcome::InvalidResponse, "invalid_response"),
        ];
        for (outcome, label) in table {
            assert_eq!(outcome.as_str(), label);
            assert_eq!(outcome.to_string(), label);
        }
    }
}
