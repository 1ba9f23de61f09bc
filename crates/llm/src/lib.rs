//! OpenAI-compatible chat-completions client for mana-ai.
//!
//! [`HttpLlmClient`] implements [`mana_ai_core::chat::LlmClient`] over HTTP
//! (`POST <base>/v1/chat/completions`), with a deadline that covers the whole response,
//! bounded retries with jittered exponential backoff (honouring `Retry-After`), typed
//! errors that never carry the bearer key, and a per-attempt hook for metrics.

mod client;
mod config;
mod retry;
mod wire;

pub use client::HttpLlmClient;
pub use config::{
    AttemptHook, AttemptOutcome, AttemptReport, ConfigError, HttpLlmConfig, DEFAULT_BACKOFF_BASE,
    DEFAULT_BACKOFF_CAP, DEFAULT_CALL_DEADLINE, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MODEL, DEFAULT_TEMPERATURE,
};
