//! End-to-end behaviour of `HttpLlmClient` against mock HTTP servers (wiremock and a raw
//! TCP server for a stalled body).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mana_ai_core::chat::{
    ChatMessage, ChatRequest, ChatResponse, LlmClient, LlmError, ToolCall, Usage,
};
use mana_ai_llm::{AttemptOutcome, AttemptReport, HttpLlmClient, HttpLlmConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "sk-test-Zq8vN3kP0wR7";

fn config(base: &str) -> HttpLlmConfig {
    let mut cfg = HttpLlmConfig::new(base, KEY);
    cfg.backoff_base = Duration::from_millis(5);
    cfg.backoff_cap = Duration::from_millis(20);
    cfg.call_deadline = Duration::from_secs(5);
    cfg
}

fn client(base: &str) -> HttpLlmClient {
    HttpLlmClient::new(config(base)).unwrap()
}

fn simple_request() -> ChatRequest {
    ChatRequest {
        model: None,
        messages: vec![ChatMessage::system("sys"), ChatMessage::user("hi")],
        tools: Default::default(),
        temperature: None,
        max_tokens: None,
    }
}

fn ok_body() -> serde_json::Value {
    json!({"choices":[{"message":{"role":"assistant","content":"done"},"finish_reason":"stop"}],
           "usage":{"prompt_tokens":3,"completion_tokens":2}})
}

async fn mount(server: &MockServer, template: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(template)
        .mount(server)
        .await;
}

/// A server answering every chat completion with `template`.
async fn serving(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    mount(&server, template).await;
    server
}

/// A server answering the first chat completion with `first`, every later one with
/// `ok_body`.
async fn once_then_ok(first: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(first)
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    mount(&server, ResponseTemplate::new(200).set_body_json(ok_body())).await;
    server
}

/// The error of one call (default client) to `server`.
async fn error_from(server: &MockServer) -> LlmError {
    client(&server.uri())
        .complete(&simple_request())
        .await
        .unwrap_err()
}

/// An answer with `ok_body` that arrives after `delay`.
fn ok_after(delay: Duration) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(ok_body())
        .set_delay(delay)
}

/// A usage with these three counts.
fn usage(prompt_tokens: u64, completion_tokens: u64, total_tokens: u64) -> Usage {
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens,
    }
}

/// One call (simple request) with a client of this config; it must succeed.
async fn call_ok(cfg: HttpLlmConfig) -> ChatResponse {
    let llm = HttpLlmClient::new(cfg).unwrap();
    llm.complete(&simple_request()).await.unwrap()
}

/// One call (simple request) with a client of this config; it must fail.
async fn call_err(cfg: HttpLlmConfig) -> LlmError {
    let llm = HttpLlmClient::new(cfg).unwrap();
    llm.complete(&simple_request()).await.unwrap_err()
}

async fn received(server: &MockServer) -> usize {
    server.received_requests().await.unwrap_or_default().len()
}

/// Asserts the key appears in none of the error's renderings.
fn assert_no_key(error: &LlmError) {
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(KEY), "key leaked: {shown}");
}

#[tokio::test]
async fn sends_exact_body_and_headers() {
    let server = serving(ResponseTemplate::new(200).set_body_json(ok_body())).await;
    let base = format!("{}/", server.uri());
    let llm = client(&base);

    let tool = json!({"type":"function","function":{"name":"create_task","description":"d",
        "parameters":{"type":"object","properties":{"title":{"type":"string"}},"required":["title"]}}});
    let request = ChatRequest {
        model: Some(String::new()),
        messages: vec![
            ChatMessage::system("sys"),
            ChatMessage::user("go"),
            ChatMessage::assistant(
                None,
                vec![ToolCall {
                    id: "call_a".into(),
                    name: "create_task".into(),
                    arguments: r#"{"title":"Milch"}"#.into(),
                }],
            ),
            ChatMessage::tool_result("call_a", "ok"),
        ],
        tools: vec![tool].into(),
        temperature: Some(0.0),
        max_tokens: None,
    };
    let response = llm.complete(&request).await.unwrap();
    assert_eq!(response.content.as_deref(), Some("done"));

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.url.path(), "/v1/chat/completions");
    assert_eq!(sent.method.as_str(), "POST");
    let header = |name: &str| {
        sent.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header("authorization"), format!("Bearer {KEY}"));
    assert_eq!(
        header("user-agent"),
        format!("mana-ai/{}", env!("CARGO_PKG_VERSION"))
    );
    let body = String::from_utf8(sent.body.clone()).unwrap();
    let expected = concat!(
        r#"{"model":"mana/reasoning","messages":["#,
        r#"{"role":"system","content":"sys"},"#,
        r#"{"role":"user","content":"go"},"#,
        r#"{"role":"assistant","content":null,"tool_calls":[{"id":"call_a","type":"function","function":{"name":"create_task","arguments":"{\"title\":\"Milch\"}"}}]},"#,
        r#"{"role":"tool","content":"ok","tool_call_id":"call_a"}],"#,
        r#""tools":[{"type":"function","function":{"name":"create_task","description":"d","parameters":{"type":"object","properties":{"title":{"type":"string"}},"required":["title"]}}}],"#,
        r#""tool_choice":"auto","temperature":0.0,"stream":false}"#
    );
    assert_eq!(body, expected);
}

#[tokio::test]
async fn maps_tool_calls_and_usage_from_the_response() {
    let server = MockServer::start().await;
    let body = json!({
        "choices":[{"finish_reason":"tool_calls","message":{"role":"assistant","content":null,"tool_calls":[
            {"id":"c1","type":"function","function":{"name":"create_task","arguments":"{\"title\":\"A\"}"}},
            {"type":"function","function":{"name":"add_note","arguments":"{oops"}}
        ]}}],
        "usage":{"prompt_tokens":100,"completion_tokens":20,"total_tokens":125}
    });
    mount(&server, ResponseTemplate::new(200).set_body_json(body)).await;
    let response = call_ok(config(&server.uri())).await;
    assert_eq!(
        response.tool_calls,
        vec![
            ToolCall {
                id: "c1".into(),
                name: "create_task".into(),
                arguments: r#"{"title":"A"}"#.into()
            },
            ToolCall {
                id: "call_1".into(),
                name: "add_note".into(),
                arguments: "{oops".into()
            },
        ]
    );
    assert_eq!(response.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(response.content, None);
    assert_eq!(response.usage, usage(100, 20, 125));
}

#[tokio::test]
async fn usage_total_defaults_to_the_sum() {
    let server = serving(ResponseTemplate::new(200).set_body_json(ok_body())).await;
    let response = call_ok(config(&server.uri())).await;
    assert_eq!(response.usage, usage(3, 2, 5));
    assert_eq!(response.finish_reason.as_deref(), Some("stop"));
}

#[tokio::test]
async fn retries_a_500_then_succeeds_and_reports_each_attempt() {
    let server = once_then_ok(ResponseTemplate::new(500).set_body_string("boom")).await;
    let reports: Arc<Mutex<Vec<AttemptReport>>> = Arc::default();
    let sink = Arc::clone(&reports);
    let cfg =
        config(&server.uri()).with_attempt_hook(move |r| sink.lock().unwrap().push(r.clone()));
    let response = call_ok(cfg).await;
    assert_eq!(response.content.as_deref(), Some("done"));
    assert_eq!(received(&server).await, 2);
    let reports = reports.lock().unwrap();
    let summary: Vec<_> = reports
        .iter()
        .map(|r| (r.attempt, r.outcome, r.status, r.will_retry))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, AttemptOutcome::ProviderError, Some(500), true),
            (2, AttemptOutcome::Ok, Some(200), false),
        ]
    );
}

#[tokio::test]
async fn honours_retry_after_seconds() {
    let server = once_then_ok(
        ResponseTemplate::new(429)
            .insert_header("retry-after", "1")
            .set_body_json(json!({"detail":{"kind":"rate_limit","message":"slow"}})),
    )
    .await;
    let mut cfg = config(&server.uri());
    cfg.backoff_cap = Duration::from_secs(1); // Retry-After may ask for up to 4 s.
    let llm = HttpLlmClient::new(cfg).unwrap();
    let started = Instant::now();
    llm.complete(&simple_request()).await.unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(950), "waited {waited:?}");
    assert!(waited < Duration::from_millis(2500), "waited {waited:?}");
    assert_eq!(received(&server).await, 2);
}

#[tokio::test]
async fn retry_after_is_capped_at_four_backoff_caps() {
    let server =
        once_then_ok(ResponseTemplate::new(503).insert_header("retry-after", "3600")).await;
    let mut cfg = config(&server.uri());
    cfg.backoff_cap = Duration::from_millis(50);
    let started = Instant::now();
    call_ok(cfg).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(190), "waited {waited:?}");
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
}

#[tokio::test]
async fn stops_after_max_attempts() {
    let server = MockServer::start().await;
    for attempts in [1u32, 3, 4] {
        server.reset().await;
        mount(
            &server,
            ResponseTemplate::new(503).set_body_json(
                json!({"detail":{"kind":"no_healthy_provider","message":"none up"}}),
            ),
        )
        .await;
        let mut cfg = config(&server.uri());
        cfg.max_attempts = attempts;
        let error = call_err(cfg).await;
        assert_eq!(
            error,
            LlmError::Provider {
                status: 503,
                kind: "no_healthy_provider".into(),
                message: "none up".into()
            }
        );
        assert_eq!(received(&server).await, attempts as usize);
    }
}

#[tokio::test]
async fn permanent_provider_errors_are_not_retried() {
    let cases = [
        (422, json!({"detail":{"kind":"blocked","message":"nope"}})),
        (
            502,
            json!({"detail":{"kind":"auth","message":"bad upstream key"}}),
        ),
        (502, json!({"detail":{"kind":"truncated","message":"cut"}})),
        (
            400,
            json!({"detail":{"kind":"capability","message":"no tools"}}),
        ),
        (400, json!({"detail":"bad request"})),
    ];
    for (status, body) in cases {
        let server = serving(ResponseTemplate::new(status).set_body_json(body.clone())).await;
        let error = error_from(&server).await;
        assert!(
            matches!(&error, LlmError::Provider { status: s, .. } if *s == status),
            "{error:?}"
        );
        assert_eq!(received(&server).await, 1, "{status} {body}");
    }
}

#[tokio::test]
async fn blocked_error_keeps_kind_and_message() {
    let server = serving(
        ResponseTemplate::new(422)
            .set_body_json(json!({"detail":{"kind":"blocked","message":"content policy"}})),
    )
    .await;
    let error = error_from(&server).await;
    assert_eq!(error.kind_label(), "blocked");
    assert_eq!(
        error.to_string(),
        "provider error 422 (blocked): content policy"
    );
}

#[tokio::test]
async fn delayed_response_times_out() {
    let server = serving(ok_after(Duration::from_secs(3))).await;
    let mut cfg = config(&server.uri());
    cfg.call_deadline = Duration::from_millis(200);
    cfg.max_attempts = 2;
    let started = Instant::now();
    let error = call_err(cfg).await;
    assert_eq!(error, LlmError::Timeout(200));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(received(&server).await, 2, "timeouts are retried");
}

/// Serves one response whose headers arrive at once but whose body stalls.
async fn stalled_body_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{\"choices\":";
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.flush().await;
                tokio::time::sleep(Duration::from_secs(10)).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn deadline_covers_the_body_read() {
    let base = stalled_body_server().await;
    let mut cfg = config(&base);
    cfg.call_deadline = Duration::from_millis(300);
    cfg.max_attempts = 1;
    let started = Instant::now();
    let error = call_err(cfg).await;
    assert_eq!(error, LlmError::Timeout(300));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn overall_deadline_bounds_retries() {
    let server = serving(ok_after(Duration::from_secs(5))).await;
    let mut cfg = config(&server.uri());
    cfg.call_deadline = Duration::from_secs(2);
    cfg.overall_deadline = Some(Duration::from_millis(300));
    cfg.max_attempts = 5;
    let started = Instant::now();
    let error = call_err(cfg).await;
    assert!(
        matches!(error, LlmError::Timeout(ms) if ms <= 300),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(received(&server).await, 1);
}

#[tokio::test]
async fn non_json_error_body_is_kept_in_the_message() {
    let server = serving(
        ResponseTemplate::new(400).set_body_raw("upstream said: model not found", "text/plain"),
    )
    .await;
    let error = error_from(&server).await;
    assert_eq!(
        error,
        LlmError::Provider {
            status: 400,
            kind: "unknown".into(),
            message: "upstream said: model not found".into()
        }
    );
}

#[tokio::test]
async fn bad_json_on_success_is_invalid_and_not_retried() {
    let server =
        serving(ResponseTemplate::new(200).set_body_raw("{\"choices\":[", "application/json"))
            .await;
    let error = error_from(&server).await;
    assert!(matches!(error, LlmError::InvalidResponse(_)), "{error:?}");
    assert_eq!(received(&server).await, 1);

    let server = serving(ResponseTemplate::new(200).set_body_json(json!({"choices":[]}))).await;
    let error = error_from(&server).await;
    assert!(matches!(error, LlmError::InvalidResponse(_)), "{error:?}");
}

#[tokio::test]
async fn oversized_success_body_is_rejected() {
    let server = serving(ResponseTemplate::new(200).set_body_json(ok_body())).await;
    let mut cfg = config(&server.uri());
    cfg.max_response_bytes = 16;
    let error = call_err(cfg).await;
    assert_eq!(error, LlmError::ResponseTooLarge(16));
    assert_eq!(error.kind_label(), "oversize");
}

async fn refused_base() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test]
async fn connection_refused_is_transport_and_retried() {
    let base = refused_base().await;
    let reports: Arc<Mutex<Vec<AttemptReport>>> = Arc::default();
    let sink = Arc::clone(&reports);
    let mut cfg = config(&base).with_attempt_hook(move |r| sink.lock().unwrap().push(r.clone()));
    cfg.max_attempts = 2;
    let error = call_err(cfg).await;
    match &error {
        // The provider's address is internal: never in the error text (users see it).
        LlmError::Transport(message) => {
            assert!(!message.contains(&base), "{message}");
            assert!(message.contains("Connection refused"), "{message}");
        }
        other => panic!("expected Transport, got {other:?}"),
    }
    assert_eq!(error.kind_label(), "transport");
    let outcomes: Vec<_> = reports
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.outcome, r.status))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (AttemptOutcome::Transport, None),
            (AttemptOutcome::Transport, None)
        ]
    );
}

#[tokio::test]
async fn api_key_never_appears_in_errors() {
    let mut errors = Vec::new();

    // A provider (or proxy) that echoes the authorization header back in its error body.
    let server = serving(ResponseTemplate::new(401).set_body_json(
        json!({"detail":{"kind":"auth","message":format!("bad token Bearer {KEY}")}}),
    ))
    .await;
    errors.push(error_from(&server).await);

    let server =
        serving(ResponseTemplate::new(500).set_body_raw(format!("echo: {KEY}"), "text/plain"))
            .await;
    errors.push(error_from(&server).await);

    let server =
        serving(ResponseTemplate::new(200).set_body_raw(format!("{KEY} not json"), "text/plain"))
            .await;
    errors.push(error_from(&server).await);

    errors.push(
        client(&refused_base().await)
            .complete(&simple_request())
            .await
            .unwrap_err(),
    );

    let base = stalled_body_server().await;
    let mut cfg = config(&base);
    cfg.call_deadline = Duration::from_millis(100);
    cfg.max_attempts = 1;
    errors.push(call_err(cfg).await);

    assert_eq!(errors.len(), 5);
    for error in &errors {
        assert_no_key(error);
    }
    assert!(
        matches!(&errors[0], LlmError::Provider { message, .. } if message.contains("[redacted]")),
        "{:?}",
        errors[0]
    );

    let cfg = config("http://localhost:1");
    assert!(!format!("{cfg:?}").contains(KEY));
    let llm = HttpLlmClient::new(cfg).unwrap();
    assert!(!format!("{llm:?}").contains(KEY));
    let mut bad = config("http://localhost:1");
    bad.api_key = format!("{KEY}\n");
    let config_error = HttpLlmClient::new(bad).unwrap_err();
    assert!(!format!("{config_error} {config_error:?}").contains(KEY));
}
