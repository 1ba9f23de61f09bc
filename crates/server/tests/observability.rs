//! Operator tooling of the real binary. `mana-ai health` (the container health check).
//! Traces over OTLP/HTTP: the real binary (`mana-ai tick`) plans one mission against a
//! fake chat-completions server and exports its spans to an in-process OTLP receiver that
//! decodes the protobuf. Asserts the span tree of one planned mission, its attributes,
//! that no input text leaks into attributes, that the batch is flushed at exit, and that
//! the LLM request carried the `traceparent` of its `llm.call` span.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use mana_ai_runner::testkit::http::{chat_server, ok_json};
use mana_ai_store::testkit::fresh_db;
use mana_ai_store::testkit::rows::{agent_record, mission_record, push_agent, push_mission};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use support::text;

const BIN: &str = env!("CARGO_BIN_EXE_mana-ai");

type Received = Arc<Mutex<Vec<(BTreeMap<String, String>, Span)>>>;

/// An OTLP/HTTP receiver on loopback; returns its base URL and what it received
/// (resource attributes, span) in arrival order.
async fn otlp_receiver() -> (String, Received) {
    async fn export(State(received): State<Received>, body: Bytes) -> Vec<u8> {
        let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
        let mut out = received.lock().unwrap();
        for rs in request.resource_spans {
            let resource = rs
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    out.push((resource.clone(), span));
                }
            }
        }
        ExportTraceServiceResponse::default().encode_to_vec()
    }
    let received: Received = Arc::default();
    let app = Router::new()
        .route("/v1/traces", post(export))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

fn attributes(
    kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const SECRET_OBJECTIVE: &str = "Plan the surprise party for Ada (do not tell her)";

#[tokio::test]
async fn one_planned_mission_exports_its_span_tree() {
    let db = fresh_db("traces_tree").await;
    let admin = db.admin().await;
    push_agent(
        &admin,
        "user-1",
        "agent-1",
        agent_record(json!({"name": "Scout"})),
    )
    .await;
    let mut mission = mission_record(json!({
        "title": "Morning plan", "objective": SECRET_OBJECTIVE,
        "nextRunAt": "2020-01-01T06:00:00.000Z",
        "cadence": {"kind": "interval", "everyMinutes": 1440}
    }));
    mission["agentId"] = json!("agent-1");
    push_mission(&admin, "user-1", "mission-1", mission).await;
    let tool_call = json!({
        "id": "c1", "object": "chat.completion", "model": "test-model",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null,
            "tool_calls": [{"id": "call-1", "type": "function", "function": {
                "name": "create_task", "arguments": "{\"title\":\"Buy balloons\"}"}}]}}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132}
    });
    let done = json!({
        "id": "c2", "object": "chat.completion", "model": "test-model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Planned."}}],
        "usage": {"prompt_tokens": 150, "completion_tokens": 3, "total_tokens": 153}
    });
    let llm = chat_server(vec![ok_json(tool_call), ok_json(done)]).await;
    let (otlp, received) = otlp_receiver().await;
    // Rows become visible to the refresh after its safety margin.
    tokio::time::sleep(Duration::from_millis(600)).await;

    let mut c = Command::new(BIN);
    c.arg("tick")
        .env_clear()
        .env("SYNC_DATABASE_URL", &db.service_url)
        .env("MANA_AI_MIGRATION_DATABASE_URL", &db.superuser_url)
        .env("MANA_LLM_URL", llm.uri())
        .env("MANA_AI_LLM_MODEL", "test-model")
        // A trailing slash must not produce `//v1/traces` (the original's weakness).
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("{otlp}/"))
        .env("OTEL_SERVICE_NAME", "mana-ai-test")
        // A long batch delay: the spans can only arrive through the flush at exit.
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .stdin(Stdio::null());
    let out = tokio::task::spawn_blocking(move || c.output().expect("run mana-ai tick"))
        .await
        .unwrap();
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let stats: serde_json::Value = serde_json::from_str(&stdout).expect("stats JSON");
    assert_eq!(stats["plansWrittenBack"], json!(1), "{stats}\n{stderr}");
    assert!(
        stderr.contains("tracing enabled") && stderr.contains("/v1/traces"),
        "one boot line names the exporter: {stderr}"
    );

    let spans = received.lock().unwrap().clone();
    assert!(!spans.is_empty(), "spans were flushed at exit");
    for (resource, _) in &spans {
        assert_eq!(
            resource.get("service.name").map(String::as_str),
            Some("mana-ai-test")
        );
    }
    let by_name = |name: &str| -> Vec<&Span> {
        spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.name == name)
            .collect()
    };
    let plan = by_name("tick.planMission");
    assert_eq!(
        plan.len(),
        1,
        "one span per planned mission: {:?}",
        names(&spans)
    );
    let plan = plan[0];
    let attrs = attributes(&plan.attributes);
    for (key, want) in [
        ("mission.id", "mission-1"),
        ("mission.title", "Morning plan"),
        ("user.id", "user-1"),
        ("agent.id", "agent-1"),
        ("agent.name", "Scout"),
    ] {
        assert_eq!(
            attrs.get(key).map(String::as_str),
            Some(want),
            "{key}: {attrs:?}"
        );
    }
    let pass = by_name("tick.pass");
    assert_eq!(pass.len(), 1, "{:?}", names(&spans));
    assert_eq!(
        plan.parent_span_id, pass[0].span_id,
        "the mission span is a child of the pass"
    );
    assert!(pass[0].parent_span_id.is_empty(), "the pass is a root span");
    let refresh = by_name("tick.refresh");
    assert_eq!(refresh.len(), 1);
    assert_eq!(refresh[0].parent_span_id, pass[0].span_id);

    // Stage spans under the mission span (directly or deeper).
    let parents: BTreeMap<Vec<u8>, Vec<u8>> = spans
        .iter()
        .map(|(_, s)| (s.span_id.clone(), s.parent_span_id.clone()))
        .collect();
    let under_plan = |s: &Span| {
        let mut at = s.parent_span_id.clone();
        while !at.is_empty() {
            if at == plan.span_id {
                return true;
            }
            at = parents.get(&at).cloned().unwrap_or_default();
        }
        false
    };
    for stage in ["mission.claim", "mission.inputs", "mission.writeBack"] {
        let found = by_name(stage);
        assert_eq!(found.len(), 1, "{stage}: {:?}", names(&spans));
        assert!(under_plan(found[0]), "{stage} is inside tick.planMission");
    }
    let calls = by_name("llm.call");
    assert_eq!(calls.len(), 2, "one span per LLM call: {:?}", names(&spans));
    for call in &calls {
        assert!(under_plan(call));
        let a = attributes(&call.attributes);
        assert_eq!(
            a.get("llm.model").map(String::as_str),
            Some("test-model"),
            "{a:?}"
        );
        assert!(
            a.contains_key("llm.tokens.prompt") && a.contains_key("llm.tokens.total"),
            "{a:?}"
        );
    }
    // Every span of the run shares one trace.
    for (_, s) in &spans {
        assert_eq!(
            s.trace_id, plan.trace_id,
            "{} is in the pass's trace",
            s.name
        );
    }
    // No plaintext input or objective in any attribute.
    for (_, s) in &spans {
        for (k, v) in attributes(&s.attributes) {
            assert!(
                !v.contains("surprise party"),
                "{}: {k} leaks the objective",
                s.name
            );
        }
    }

    // The LLM requests carried the traceparent of their llm.call spans.
    let requests = llm.received_requests().await.expect("recorded");
    assert_eq!(requests.len(), 2);
    let call_ids: Vec<String> = calls.iter().map(|s| hex(&s.span_id)).collect();
    for request in requests {
        let header = request
            .headers
            .get("traceparent")
            .expect("traceparent on the LLM request")
            .to_str()
            .unwrap()
            .to_string();
        let parts: Vec<&str> = header.split('-').collect();
        assert_eq!(parts.len(), 4, "{header}");
        assert_eq!(parts[1], hex(&plan.trace_id), "{header}");
        assert!(
            call_ids.contains(&parts[2].to_string()),
            "{header} vs {call_ids:?}"
        );
    }
}

#[tokio::test]
async fn without_an_endpoint_tracing_is_disabled_and_says_so() {
    let db = fresh_db("traces_off").await;
    let mut c = Command::new(BIN);
    c.arg("tick")
        .env_clear()
        .env("SYNC_DATABASE_URL", &db.service_url)
        .env("MANA_AI_MIGRATION_DATABASE_URL", &db.superuser_url)
        .env(
            "MANA_LLM_URL",
            format!("http://127.0.0.1:{}", support::closed_port()),
        )
        .stdin(Stdio::null());
    let out = tokio::task::spawn_blocking(move || c.output().expect("run mana-ai tick"))
        .await
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("tracing disabled"), "{stderr}");
}

#[test]
fn a_bad_otel_variable_stops_boot_with_exit_2() {
    let out = Command::new(BIN)
        .arg("tick")
        .env_clear()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "tempo:4318")
        .stdin(Stdio::null())
        .output()
        .expect("run mana-ai");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("OTEL_EXPORTER_OTLP_ENDPOINT"));
}

fn names(spans: &[(BTreeMap<String, String>, Span)]) -> Vec<String> {
    spans.iter().map(|(_, s)| s.name.clone()).collect()
}

/// A stand-in for the service's `/health` on a free loopback port answering `status`.
async fn health_stub(status: u16) -> u16 {
    let app = Router::new().route(
        "/health",
        axum::routing::get(move || async move {
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                format!("{{\"ok\":{}}}", status == 200),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

async fn health_command(port: u16) -> std::process::Output {
    let mut c = Command::new(BIN);
    c.arg("health")
        .env_clear()
        .env("PORT", port.to_string())
        .stdin(Stdio::null());
    tokio::task::spawn_blocking(move || c.output().expect("run mana-ai health"))
        .await
        .unwrap()
}

#[tokio::test]
async fn health_command_succeeds_only_on_a_healthy_answer() {
    let healthy = health_command(health_stub(200).await).await;
    assert_eq!(healthy.status.code(), Some(0), "{}", text(&healthy.stderr));
    assert!(text(&healthy.stdout).contains("\"ok\":true"));

    let unhealthy = health_command(health_stub(503).await).await;
    assert_eq!(unhealthy.status.code(), Some(1));
    assert!(
        text(&unhealthy.stderr).contains("503"),
        "{}",
        text(&unhealthy.stderr)
    );

    let started = std::time::Instant::now();
    let nobody = health_command(support::closed_port()).await;
    assert_eq!(nobody.status.code(), Some(1));
    assert!(
        text(&nobody.stderr).contains("not answering"),
        "{}",
        text(&nobody.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the check's timeout"
    );
}
