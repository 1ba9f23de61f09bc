//! The LLM faults of issue 13.4 against `HttpLlmClient`: each ends within a bounded time
//! as a typed error with a kind from the closed set (or a retried call), never a hang or a
//! panic, and every attempt is reported to the meter with what it may have cost.
//! wiremock for well-formed HTTP, a raw TCP server for trickling and endless bodies.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mana_ai_core::chat::{
    AttemptCharge, AttemptMeter, ChatMessage, ChatRequest, LlmClient, LlmError, ERROR_KINDS,
};
use mana_ai_llm::{HttpLlmClient, HttpLlmConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn config(base: &str) -> HttpLlmConfig {
    let mut cfg = HttpLlmConfig::new(base, "sk-faults");
    cfg.backoff_base = Duration::from_millis(5);
    cfg.backoff_cap = Duration::from_millis(50);
    cfg.call_deadline = Duration::from_secs(5);
    cfg
}

fn request() -> ChatRequest {
    ChatRequest {
        model: None,
        messages: vec![ChatMessage::system("sys"), ChatMessage::user("hi")],
        tools: Default::default(),
        temperature: None,
        max_tokens: Some(64),
    }
}

async fn serving(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

async fn received(server: &MockServer) -> usize {
    server.received_requests().await.unwrap_or_default().len()
}

/// Records every attempt; refuses attempts from `refuse_from` on.
#[derive(Default)]
struct Recorder {
    charges: Mutex<Vec<AttemptCharge>>,
    refuse_from: Option<u32>,
}

#[async_trait::async_trait]
impl AttemptMeter for Recorder {
    async fn before_attempt(&self, attempt: u32) -> Result<(), LlmError> {
        match self.refuse_from {
            Some(n) if attempt >= n => Err(LlmError::BudgetExhausted),
            _ => Ok(()),
        }
    }
    async fn after_attempt(&self, charge: AttemptCharge) {
        self.charges.lock().unwrap().push(charge);
    }
}

/// Calls through a recorder; answers the error, the charges and the elapsed time.
async fn metered_err(cfg: HttpLlmConfig) -> (LlmError, Vec<AttemptCharge>, Duration) {
    let client = HttpLlmClient::new(cfg).unwrap();
    let meter = Recorder::default();
    let started = Instant::now();
    let error = client
        .complete_metered(&request(), &meter)
        .await
        .expect_err("the fault must fail the call");
    let charges = meter.charges.lock().unwrap().clone();
    assert!(ERROR_KINDS.contains(&error.kind_label()), "{error:?}");
    (error, charges, started.elapsed())
}

// ---------------------------------------------------------------------------------
// A raw HTTP/1.1 server for bodies wiremock cannot produce.
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Raw {
    /// 200, chunked, one byte every 20 ms, forever.
    Trickle,
    /// 200, chunked, 64 KiB chunks as fast as the socket takes them, forever.
    Endless,
    /// 503 whose body trickles forever.
    TricklingErrorPage,
    /// 200 announcing 4000 bytes, sending 20 and closing.
    CutOff,
}

/// Serves `kind` on every connection; answers the base URL and the connection count.
async fn raw_server(kind: Raw) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                let _ = serve_raw(&mut socket, kind).await;
            });
        }
    });
    (format!("http://{addr}"), connections)
}

async fn serve_raw(socket: &mut tokio::net::TcpStream, kind: Raw) -> std::io::Result<()> {
    let chunked = |status: &str| {
        format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
    };
    match kind {
        Raw::Trickle | Raw::TricklingErrorPage => {
            let status = match kind {
                Raw::Trickle => "200 OK",
                _ => "503 Service Unavailable",
            };
            socket.write_all(chunked(status).as_bytes()).await?;
            loop {
                socket.write_all(b"1\r\n \r\n").await?;
                socket.flush().await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Raw::Endless => {
            socket.write_all(chunked("200 OK").as_bytes()).await?;
            let chunk = format!("10000\r\n{}\r\n", "a".repeat(0x10000));
            loop {
                socket.write_all(chunk.as_bytes()).await?;
            }
        }
        Raw::CutOff => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4000\r\n\r\n{\"choices\":[{\"mes";
            socket.write_all(head.as_bytes()).await?;
            socket.flush().await?;
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn unusable_200_bodies_are_invalid_responses_booked_and_not_retried() {
    let bodies: [(&[u8], &str); 5] = [
        (b"\xff\xfe\x00garbage\x01", "application/json"),
        (
            br#"{"choices":[{"message":{"content":"hel"#,
            "application/json",
        ),
        (
            b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>",
            "text/html",
        ),
        (b"", "application/json"),
        (
            br#"{"id":"x","object":"chat.completion"}"#,
            "application/json",
        ),
    ];
    for (body, mime) in bodies {
        let server = serving(ResponseTemplate::new(200).set_body_raw(body.to_vec(), mime)).await;
        let (error, charges, elapsed) = metered_err(config(&server.uri())).await;
        let shown = String::from_utf8_lossy(body);
        assert!(
            matches!(error, LlmError::InvalidResponse(_)),
            "{shown}: {error:?}"
        );
        assert_eq!(error.kind_label(), "invalid-response");
        assert_eq!(received(&server).await, 1, "{shown}: not retried");
        assert_eq!(charges.len(), 1);
        assert!(charges[0].maybe_billed, "a 2xx may have been billed");
        assert_eq!(charges[0].error_kind, Some("invalid-response"));
        assert!(elapsed < Duration::from_secs(2));
    }
}

#[tokio::test]
async fn html_error_page_is_a_retried_server_error() {
    let server = serving(ResponseTemplate::new(502).set_body_raw(
        "<html><head><title>502</title></head><body>nginx</body></html>",
        "text/html",
    ))
    .await;
    let mut cfg = config(&server.uri());
    cfg.max_attempts = 3;
    let (error, charges, _) = metered_err(cfg).await;
    assert!(
        matches!(&error, LlmError::Provider { status: 502, .. }),
        "{error:?}"
    );
    assert_eq!(error.kind_label(), "server-error");
    assert_eq!(received(&server).await, 3);
    assert_eq!(charges.len(), 3);
    assert!(charges.iter().all(|c| !c.maybe_billed && c.usage.is_none()));
}

#[tokio::test]
async fn an_error_object_with_status_200_is_a_provider_error() {
    let server = serving(ResponseTemplate::new(200).set_body_json(
        json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}}),
    ))
    .await;
    let (error, charges, _) = metered_err(config(&server.uri())).await;
    match &error {
        LlmError::Provider {
            status, message, ..
        } => {
            assert_eq!(*status, 200);
            assert_eq!(message, "You exceeded your current quota");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(error.kind_label(), "error-body");
    assert_eq!(received(&server).await, 1);
    assert!(!charges[0].maybe_billed);
}

#[tokio::test]
async fn a_body_trickling_forever_ends_at_the_attempt_deadline() {
    let (base, connections) = raw_server(Raw::Trickle).await;
    let mut cfg = config(&base);
    cfg.call_deadline = Duration::from_millis(400);
    cfg.max_attempts = 2;
    let (error, charges, elapsed) = metered_err(cfg).await;
    assert_eq!(error, LlmError::Timeout(400));
    assert_eq!(
        connections.load(Ordering::SeqCst),
        2,
        "timeouts are retried"
    );
    assert_eq!(charges.len(), 2);
    assert!(
        charges.iter().all(|c| c.maybe_billed),
        "a timed-out attempt is booked"
    );
    // Two deadlines plus one capped backoff, with slack for a loaded machine.
    assert!(elapsed < Duration::from_millis(2_500), "{elapsed:?}");
}

#[tokio::test]
async fn the_overall_deadline_ends_a_trickle_with_many_attempts() {
    let (base, _) = raw_server(Raw::Trickle).await;
    let mut cfg = config(&base);
    cfg.call_deadline = Duration::from_secs(30);
    cfg.overall_deadline = Some(Duration::from_millis(500));
    cfg.max_attempts = 10;
    let (error, _, elapsed) = metered_err(cfg).await;
    assert!(
        matches!(error, LlmError::Timeout(ms) if ms <= 500),
        "{error:?}"
    );
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[tokio::test]
async fn an_endless_body_is_cut_at_the_size_limit() {
    let (base, connections) = raw_server(Raw::Endless).await;
    let mut cfg = config(&base);
    cfg.max_response_bytes = 256 * 1024;
    cfg.max_attempts = 3;
    let (error, charges, elapsed) = metered_err(cfg).await;
    assert_eq!(error, LlmError::ResponseTooLarge(256 * 1024));
    assert_eq!(error.kind_label(), "oversize");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "an oversize answer is not retried"
    );
    assert!(charges[0].maybe_billed);
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[tokio::test]
async fn a_declared_oversize_body_is_refused_unread_and_the_limit_is_inclusive() {
    let body = json!({"choices":[{"message":{"content":"x"}}]}).to_string();
    let server =
        serving(ResponseTemplate::new(200).set_body_raw(body.clone(), "application/json")).await;
    // Exactly at the limit: accepted.
    let mut cfg = config(&server.uri());
    cfg.max_response_bytes = body.len();
    let client = HttpLlmClient::new(cfg).unwrap();
    assert!(client.complete(&request()).await.is_ok());
    // One byte below: refused.
    let mut cfg = config(&server.uri());
    cfg.max_response_bytes = body.len() - 1;
    let (error, _, _) = metered_err(cfg).await;
    assert_eq!(error, LlmError::ResponseTooLarge(body.len() - 1));
}

#[tokio::test]
async fn a_trickling_error_page_keeps_its_status() {
    let (base, _) = raw_server(Raw::TricklingErrorPage).await;
    let mut cfg = config(&base);
    cfg.call_deadline = Duration::from_secs(20);
    cfg.max_attempts = 1;
    let (error, _, elapsed) = metered_err(cfg).await;
    assert!(
        matches!(&error, LlmError::Provider { status: 503, .. }),
        "{error:?}"
    );
    assert_eq!(error.kind_label(), "server-error");
    // The error body gets a short wait of its own (2 s), not the attempt's 20 s.
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn a_body_cut_off_mid_json_is_a_transport_error_without_the_url() {
    let (base, connections) = raw_server(Raw::CutOff).await;
    let mut cfg = config(&base);
    cfg.max_attempts = 2;
    let (error, charges, elapsed) = metered_err(cfg).await;
    match &error {
        LlmError::Transport(message) => {
            assert!(!message.contains(&base), "{message}");
            assert!(!message.contains("127.0.0.1"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    assert!(
        charges.iter().all(|c| c.maybe_billed),
        "the 200 had started: the provider may have billed"
    );
    assert!(elapsed < Duration::from_secs(3));
}

#[tokio::test]
async fn a_429_storm_honours_retry_after_capped_and_ends() {
    let server = serving(
        ResponseTemplate::new(429)
            .insert_header("retry-after", "3600")
            .set_body_json(json!({"detail": {"kind": "rate_limit", "message": "slow down"}})),
    )
    .await;
    let mut cfg = config(&server.uri());
    cfg.max_attempts = 4;
    // Retry-After is honoured up to 4 × backoff_cap = 200 ms per wait.
    let (error, charges, elapsed) = metered_err(cfg).await;
    assert_eq!(error.kind_label(), "rate_limit");
    assert_eq!(received(&server).await, 4);
    assert_eq!(charges.len(), 4);
    assert!(charges
        .iter()
        .all(|c| c.error_kind == Some("rate_limit") && !c.maybe_billed));
    // Three capped waits of 200 ms: the storm took at least that, and not an hour.
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[tokio::test]
async fn retry_after_beyond_the_overall_deadline_ends_the_call_at_once() {
    let server = serving(ResponseTemplate::new(429).insert_header("retry-after", "5")).await;
    let mut cfg = config(&server.uri());
    cfg.backoff_cap = Duration::from_secs(10);
    cfg.overall_deadline = Some(Duration::from_secs(1));
    cfg.max_attempts = 5;
    let (error, _, elapsed) = metered_err(cfg).await;
    assert_eq!(error.kind_label(), "rate_limit");
    assert_eq!(received(&server).await, 1);
    assert!(elapsed < Duration::from_millis(900), "{elapsed:?}");
}

#[tokio::test]
async fn unknown_provider_kinds_never_become_labels() {
    let server = serving(
        ResponseTemplate::new(500)
            .set_body_json(json!({"detail": {"kind": "user-1234-secret-token", "message": "x"}})),
    )
    .await;
    let mut cfg = config(&server.uri());
    cfg.max_attempts = 1;
    let (error, charges, _) = metered_err(cfg).await;
    assert_eq!(error.kind_label(), "server-error");
    assert_eq!(charges[0].error_kind, Some("server-error"));
}

#[tokio::test]
async fn a_meter_refusal_stops_the_retries() {
    let server = serving(ResponseTemplate::new(503)).await;
    let mut cfg = config(&server.uri());
    cfg.max_attempts = 5;
    let client = HttpLlmClient::new(cfg).unwrap();
    let meter = Recorder {
        refuse_from: Some(2),
        ..Recorder::default()
    };
    let error = client
        .complete_metered(&request(), &meter)
        .await
        .unwrap_err();
    assert_eq!(error, LlmError::BudgetExhausted);
    assert_eq!(received(&server).await, 1);
    assert_eq!(meter.charges.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_successful_attempt_after_timeouts_reports_every_attempt() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"choices":[{"message":{"content":"late"}}]}))
                .set_delay(Duration::from_secs(2)),
        )
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "choices":[{"message":{"content":"ok"}}],
            "usage":{"prompt_tokens":7,"completion_tokens":3}})))
        .mount(&server)
        .await;
    let mut cfg = config(&server.uri());
    cfg.call_deadline = Duration::from_millis(200);
    cfg.max_attempts = 3;
    let client = HttpLlmClient::new(cfg).unwrap();
    let meter = Recorder::default();
    let answer = client.complete_metered(&request(), &meter).await.unwrap();
    assert_eq!(answer.content.as_deref(), Some("ok"));
    let charges = meter.charges.lock().unwrap().clone();
    let seen: Vec<_> = charges
        .iter()
        .map(|c| (c.attempt, c.usage.map(|u| u.total_tokens), c.error_kind))
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, None, Some("timeout")),
            (2, None, Some("timeout")),
            (3, Some(10), None)
        ]
    );
}

#[tokio::test]
async fn every_request_carries_its_max_tokens() {
    let server = serving(
        ResponseTemplate::new(200).set_body_json(json!({"choices":[{"message":{"content":"x"}}]})),
    )
    .await;
    let client = HttpLlmClient::new(config(&server.uri())).unwrap();
    client.complete(&request()).await.unwrap();
    let sent = server.received_requests().await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(body["max_tokens"], 64);
}
