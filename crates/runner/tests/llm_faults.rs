//! The LLM faults of issue 13.4 through the runner's real mission path: the real HTTP
//! client against wiremock or a raw TCP server, a real PostgreSQL. Each fault ends in
//! bounded time as exactly one `failed` iteration (no duplicate on the next tick), is
//! counted with its kind from the closed set, books what it may have cost, leaves no
//! reservation behind, and shows no internal URL in `errorDetails`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mana_ai_core::chat::{LlmClient, ERROR_KINDS};
use mana_ai_llm::{HttpLlmClient, HttpLlmConfig};
use mana_ai_runner::testkit::http::chat_server;
use mana_ai_runner::testkit::{metric_value, RunnerBuilder};
use mana_ai_store::testkit::rows::{
    agent_record, mission_record, reservation_tokens, runner_data, runner_row_count,
    token_usage_rows,
};
use mana_ai_store::testkit::{fresh_db, push_agent, push_mission};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::ResponseTemplate;

const DUE: &str = "2026-01-05T06:00:00.000Z";
/// Attempts of the test client; the deadline of one attempt.
const ATTEMPTS: u32 = 2;
const ATTEMPT_DEADLINE: Duration = Duration::from_millis(400);

fn http_llm(base: &str) -> Arc<dyn LlmClient> {
    let mut lc = HttpLlmConfig::new(base, "test-key-faults");
    lc.max_attempts = ATTEMPTS;
    lc.backoff_base = Duration::from_millis(10);
    lc.backoff_cap = Duration::from_millis(25);
    lc.call_deadline = ATTEMPT_DEADLINE;
    lc.max_response_bytes = 256 * 1024;
    Arc::new(HttpLlmClient::new(lc).unwrap())
}

/// A raw HTTP/1.1 server: `Trickle` sends a 200 whose chunked body gets one byte every
/// 20 ms forever; `Endless` a 200 whose chunked body never ends.
#[derive(Clone, Copy)]
enum Raw {
    Trickle,
    Endless,
}

async fn raw_server(kind: Raw) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = match kind {
                    Raw::Trickle => "1\r\n \r\n".to_string(),
                    Raw::Endless => format!("10000\r\n{}\r\n", "a".repeat(0x10000)),
                };
                loop {
                    if socket.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                    if matches!(kind, Raw::Trickle) {
                        let _ = socket.flush().await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// What a fault must end in.
struct Expect {
    /// `mana_ai_provider_errors_total{kind}`; `None` for a fault the planner handles
    /// (nothing valid), not the provider.
    kind: Option<&'static str>,
    phase: &'static str,
    /// HTTP attempts failed and counted in `mana_ai_llm_attempt_failures_total`.
    failed_attempts: u64,
    /// `token_usage` rows booked (each attempt that may have been billed); `None`: at
    /// least one.
    bookings: Option<usize>,
}

async fn chat(template: ResponseTemplate) -> (String, wiremock::MockServer) {
    let server = chat_server(vec![template]).await;
    (server.uri(), server)
}

fn broken_tool_args() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "choices": [{"finish_reason": "tool_calls", "message": {"content": null, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "create_task", "arguments": "{\"title\": \"Einkau"}}
        ]}}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 5}
    }))
}

/// Runs one due mission against the fault at `base` and checks the outcome.
async fn check_fault(name: &str, base: &str, expect: Expect) -> Value {
    let db = fresh_db(&format!("fault_{name}")).await;
    let admin = db.admin().await;
    push_agent(
        &admin,
        "u1",
        "a1",
        agent_record(json!({"maxTokensPerDay": 1_000_000})),
    )
    .await;
    let mut m = mission_record(json!({
        "title": "Fault", "conceptMarkdown": "Plan", "objective": "Propose tasks",
        "nextRunAt": DUE, "cadence": {"kind": "interval", "everyMinutes": 1440}
    }));
    m["agentId"] = json!("a1");
    push_mission(&admin, "u1", "m1", m).await;
    let r = RunnerBuilder::new(&db).llm(http_llm(base)).build();
    let started = Instant::now();
    let stats = r.tick().await;
    let took = started.elapsed();
    assert_eq!(stats.failed, 1, "{name}: {stats:?}");
    assert!(took < Duration::from_secs(10), "{name}: took {took:?}");
    // Exactly one iteration, and no duplicate on the next tick.
    assert_eq!(runner_row_count(&admin, Some("m1")).await, 1, "{name}");
    let again = r.tick().await;
    assert_eq!(again.due_mission_count, 0, "{name}: {again:?}");
    assert_eq!(runner_row_count(&admin, Some("m1")).await, 1, "{name}");
    let data = runner_data(&admin, "m1").await.remove(0);
    let it = &data["iterations"][0];
    assert_eq!(it["overallStatus"], "failed", "{name}");
    assert_eq!(it["errorDetails"]["phase"], expect.phase, "{name}");
    let message = it["errorDetails"]["message"].as_str().unwrap_or_default();
    assert!(!message.contains("127.0.0.1"), "{name}: {message}");
    assert!(!message.contains("test-key-faults"), "{name}: {message}");
    let metrics = r.metrics().render();
    if let Some(kind) = expect.kind {
        assert!(ERROR_KINDS.contains(&kind));
        assert_eq!(
            metric_value(&metrics, "mana_ai_provider_errors_total", &[("kind", kind)]),
            Some(1.0),
            "{name}: {metrics}"
        );
    }
    let attempt_failures = metric_value(&metrics, "mana_ai_llm_attempt_failures_total", &[]);
    assert_eq!(
        attempt_failures.unwrap_or(0.0) as u64,
        expect.failed_attempts,
        "{name}"
    );
    let booked = token_usage_rows(&admin).await;
    match expect.bookings {
        Some(n) => assert_eq!(booked.len(), n, "{name}: {booked:?}"),
        None => assert!(!booked.is_empty(), "{name}"),
    }
    assert!(reservation_tokens(&admin).await.is_empty(), "{name}");
    eprintln!(
        "fault {name}: failed iteration in {took:?}, {} booking(s) = {} tokens",
        booked.len(),
        booked.iter().map(|b| i64::from(b.3)).sum::<i64>()
    );
    data
}

#[tokio::test]
async fn garbage_truncated_and_html_200_bodies_fail_the_run_once() {
    let bodies: [(&str, &[u8], &str); 3] = [
        ("garbage", b"\xff\xfe\x00\x01 not json", "application/json"),
        (
            "truncated",
            br#"{"choices":[{"message":{"content":"hal"#,
            "application/json",
        ),
        (
            "html200",
            b"<!DOCTYPE html><html><body>Welcome to nginx</body></html>",
            "text/html",
        ),
    ];
    for (name, body, mime) in bodies {
        let (base, _server) =
            chat(ResponseTemplate::new(200).set_body_raw(body.to_vec(), mime)).await;
        check_fault(
            name,
            &base,
            Expect {
                kind: Some("invalid-response"),
                phase: "calling-llm",
                failed_attempts: 1,
                // A 2xx may have been billed: booked at its estimate; not retried.
                bookings: Some(1),
            },
        )
        .await;
    }
}

#[tokio::test]
async fn an_html_error_page_is_retried_then_fails_unbilled() {
    let (base, server) = chat(
        ResponseTemplate::new(502)
            .set_body_raw("<html><body>Bad Gateway</body></html>", "text/html"),
    )
    .await;
    check_fault(
        "html502",
        &base,
        Expect {
            kind: Some("server-error"),
            phase: "calling-llm",
            failed_attempts: u64::from(ATTEMPTS),
            bookings: Some(0),
        },
    )
    .await;
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_error_object_in_a_200_fails_the_run() {
    let (base, _server) = chat(ResponseTemplate::new(200).set_body_json(
        json!({"error": {"message": "quota exceeded", "type": "insufficient_quota"}}),
    ))
    .await;
    let data = check_fault(
        "error200",
        &base,
        Expect {
            kind: Some("error-body"),
            phase: "calling-llm",
            failed_attempts: 1,
            bookings: Some(0),
        },
    )
    .await;
    let message = data["iterations"][0]["errorDetails"]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("quota exceeded"), "{message}");
}

#[tokio::test]
async fn an_endless_trickle_ends_at_the_deadline_with_every_attempt_booked() {
    let base = raw_server(Raw::Trickle).await;
    check_fault(
        "trickle",
        &base,
        Expect {
            kind: Some("timeout"),
            phase: "calling-llm",
            failed_attempts: u64::from(ATTEMPTS),
            bookings: Some(ATTEMPTS as usize),
        },
    )
    .await;
}

#[tokio::test]
async fn an_endless_body_is_cut_at_the_size_limit() {
    let base = raw_server(Raw::Endless).await;
    check_fault(
        "oversize",
        &base,
        Expect {
            kind: Some("oversize"),
            phase: "calling-llm",
            failed_attempts: 1,
            bookings: Some(1),
        },
    )
    .await;
}

#[tokio::test]
async fn a_429_storm_with_long_retry_after_ends_bounded() {
    let (base, server) = chat(
        ResponseTemplate::new(429)
            .insert_header("retry-after", "86400")
            .set_body_json(json!({"detail": {"kind": "rate_limit", "message": "slow down"}})),
    )
    .await;
    check_fault(
        "storm429",
        &base,
        Expect {
            kind: Some("rate_limit"),
            phase: "calling-llm",
            failed_attempts: u64::from(ATTEMPTS),
            bookings: Some(0),
        },
    )
    .await;
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn tool_calls_with_broken_argument_json_end_as_nothing_valid() {
    let (base, _server) = chat(broken_tool_args()).await;
    let data = check_fault(
        "badargs",
        &base,
        Expect {
            kind: None,
            phase: "parsing-response",
            failed_attempts: 0,
            // Every answered round books its reported usage.
            bookings: None,
        },
    )
    .await;
    assert!(data["iterations"][0]["plan"]
        .as_array()
        .is_none_or(Vec::is_empty));
}

#[tokio::test]
async fn an_unreachable_provider_shows_no_internal_url() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    check_fault(
        "refused",
        &base,
        Expect {
            kind: Some("transport"),
            phase: "calling-llm",
            failed_attempts: u64::from(ATTEMPTS),
            bookings: Some(0),
        },
    )
    .await;
}
