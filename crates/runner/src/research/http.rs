//! The bounded HTTP helper of the research calls: one deadline over connect, headers and
//! body, a body size cap, no redirects, and bounded failure labels ([`CallError`]).

use std::time::Duration;

use serde_json::Value;

/// Largest response body read from a research service.
const MAX_BODY_BYTES: usize = 4 << 20;

/// Why a research call produced nothing (bounded metric label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallError {
    Timeout,
    Network,
    Unauthorized,
    Status(u16),
    Invalid,
    Client,
}

impl CallError {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Network => "network-error",
            Self::Unauthorized => "unauthorized",
            Self::Status(_) => "http-error",
            Self::Invalid => "invalid-response",
            Self::Client => "client-error",
        }
    }

    /// A rejection that a retry with the same request will not change.
    pub(super) fn is_definitive(self) -> bool {
        match self {
            Self::Unauthorized | Self::Client => true,
            Self::Status(s) => (400..500).contains(&s) && !matches!(s, 408 | 409 | 425 | 429),
            _ => false,
        }
    }
}

/// The HTTP client shared by the research calls (no redirects: the service key must
/// never be forwarded to another host).
pub(super) struct ResearchHttp {
    client: Option<reqwest::Client>,
}

impl ResearchHttp {
    pub(super) fn new() -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("mana-ai")
            .build();
        match client {
            Ok(c) => Self { client: Some(c) },
            Err(e) => {
                tracing::error!(error = %e, "research HTTP client unavailable; research disabled");
                Self { client: None }
            }
        }
    }
}

/// Sends one request within `deadline` (connect, headers and body) and parses the JSON
/// body of a 2xx answer.
pub(super) async fn call_json(
    http: &ResearchHttp,
    request: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
    deadline: Duration,
    what: &'static str,
) -> Result<Value, CallError> {
    let client = http.client.as_ref().ok_or(CallError::Client)?;
    let exchange = async {
        let mut resp = request(client)
            .headers(trace_headers())
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    CallError::Timeout
                } else if e.is_builder() {
                    CallError::Client
                } else {
                    CallError::Network
                }
            })?;
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|_| CallError::Network)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(CallError::Invalid);
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let head: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            tracing::warn!(call = what, status = status.as_u16(), body = %head, "research call rejected");
            return Err(match status.as_u16() {
                401 | 403 => CallError::Unauthorized,
                s => CallError::Status(s),
            });
        }
        serde_json::from_slice::<Value>(&body).map_err(|_| CallError::Invalid)
    };
    match tokio::time::timeout(deadline, exchange).await {
        Ok(r) => {
            if let Err(e) = r {
                tracing::warn!(call = what, outcome = e.label(), "research call failed");
            }
            r
        }
        Err(_) => {
            tracing::warn!(call = what, "research call timed out");
            Err(CallError::Timeout)
        }
    }
}

pub(super) fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The W3C `traceparent` of the current span (empty when tracing is off).
fn trace_headers() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(value) = mana_ai_core::trace_context::traceparent()
        .and_then(|v| reqwest::header::HeaderValue::from_str(&v).ok())
    {
        headers.insert(mana_ai_core::trace_context::TRACEPARENT_HEADER, value);
    }
    headers
}
