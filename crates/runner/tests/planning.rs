//! Planning and write-back against a real PostgreSQL and a fake OpenAI-compatible
//! server: the written row field by field, exactly-once across ticks and runners,
//! next-run scheduling, validation feedback, failures with backoff.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mana_ai_core::chat::LlmClient;
use mana_ai_core::iso::{parse_iso, to_iso_ms};
use mana_ai_core::plan::iteration_id_for;
use mana_ai_llm::{HttpLlmClient, HttpLlmConfig};
use mana_ai_runner::{Metrics, Runner, RunnerConfig, RunnerDeps, SystemClock};
use mana_ai_store::testkit::{fresh_db, TestDb};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Answers chat completions from a script, one entry per call (the last repeats).
struct Script {
    replies: Vec<ResponseTemplate>,
    calls: AtomicUsize,
}

impl Respond for Script {
    fn respond(&self, _req: &Request) -> ResponseTemplate {
        let i = self.calls.fetch_add(1, Ordering::SeqCst);
        self.replies[i.min(self.replies.len() - 1)].clone()
    }
}

fn tool_reply(calls: &[(&str, Value)]) -> ResponseTemplate {
    let tool_calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, (name, args))| {
            json!({"id": format!("call_{i}"), "type": "function",
                   "function": {"name": name, "arguments": args.to_string()}})
        })
        .collect();
    ResponseTemplate::new(200).set_body_json(json!({
        "choices": [{"message": {"role": "assistant", "content": null, "tool_calls": tool_calls},
                     "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    }))
}

fn stop_reply(text: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 150, "completion_tokens": 10, "total_tokens": 160}
    }))
}

async fn fake_llm(replies: Vec<ResponseTemplate>) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(Script {
            replies,
            calls: AtomicUsize::new(0),
        })
        .mount(&server)
        .await;
    server
}

fn runner(db: &TestDb, llm_url: &str, tweak: impl FnOnce(&mut RunnerConfig)) -> Runner {
    let mut lc = HttpLlmConfig::new(llm_url, "test-key");
    lc.max_attempts = 2;
    lc.backoff_base = Duration::from_millis(10);
    lc.backoff_cap = Duration::from_millis(20);
    lc.call_deadline = Duration::from_secs(5);
    let llm: Arc<dyn LlmClient> = Arc::new(HttpLlmClient::new(lc).unwrap());
    let mut cfg = RunnerConfig {
        refresh_safety_margin: Duration::ZERO,
        ..RunnerConfig::default()
    };
    tweak(&mut cfg);
    Runner::new(
        RunnerDeps {
            store: db.service_store(),
            metrics: Metrics::new(),
            llm,
            clock: Arc::new(SystemClock),
        },
        cfg,
    )
}

async fn push(c: &tokio_postgres::Client, user: &str, table: &str, id: &str, data: Value) {
    c.execute(
        "INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta, client_id)
         VALUES ('ai', $1, $2, $3, 'insert', $4, '{}', 'webapp')",
        &[&table, &id, &user, &data],
    )
    .await
    .unwrap();
}

fn mission(next: &str, cadence: Value, agent: Option<&str>) -> Value {
    let mut m = json!({
        "title": "Wochenplan", "conceptMarkdown": "Plan the week", "objective": "Propose today's tasks",
        "state": "active", "nextRunAt": next, "cadence": cadence, "inputs": [], "iterations": []
    });
    if let Some(a) = agent {
        m["agentId"] = json!(a);
    }
    m
}

async fn server_rows(admin: &tokio_postgres::Client, mission: &str) -> Vec<tokio_postgres::Row> {
    admin
        .query(
            "SELECT app_id, table_name, record_id, user_id, op, data, field_meta, client_id,
                    schema_version, actor, origin, space_id
               FROM sync_changes WHERE record_id = $1 AND client_id = 'mana-ai-runner'
              ORDER BY created_at",
            &[&mission],
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn written_row_matches_the_contract_and_a_second_tick_writes_nothing() {
    let db = fresh_db("plan_row").await;
    let admin = db.admin().await;
    let llm = fake_llm(vec![
        tool_reply(&[(
            "create_task",
            json!({"title": "Einkaufen", "priority": "high"}),
        )]),
        stop_reply("Einkauf als Task vorgeschlagen."),
    ])
    .await;
    push(
        &admin,
        "u1",
        "agents",
        "a1",
        json!({"name": "Planner", "role": "Organiser", "state": "active",
        "maxConcurrentMissions": 1, "policy": {"tools": {}, "defaultForAi": "propose"}}),
    )
    .await;
    let due = "2026-01-05T06:00:00.000Z";
    push(
        &admin,
        "u1",
        "aiMissions",
        "m1",
        mission(
            due,
            json!({"kind": "interval", "everyMinutes": 60}),
            Some("a1"),
        ),
    )
    .await;
    let r = runner(&db, &llm.uri(), |_| {});
    let before = Utc::now();
    let stats = r.tick().await;
    assert_eq!(stats.due_mission_count, 1, "{stats:?}");
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    assert!(stats.errors.is_empty(), "{stats:?}");

    let rows = server_rows(&admin, "m1").await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.get::<_, String>("app_id"), "ai");
    assert_eq!(row.get::<_, String>("table_name"), "aiMissions");
    assert_eq!(row.get::<_, String>("user_id"), "u1");
    assert_eq!(row.get::<_, String>("op"), "update");
    assert_eq!(row.get::<_, String>("client_id"), "mana-ai-runner");
    assert_eq!(row.get::<_, i32>("schema_version"), 1);
    assert_eq!(
        row.get::<_, Option<String>>("origin").as_deref(),
        Some("agent")
    );
    assert_eq!(row.get::<_, Option<String>>("space_id"), None);
    let iteration_id = iteration_id_for("m1", due);
    let actor: Value = row.get("actor");
    assert_eq!(
        actor,
        json!({"kind": "ai", "principalId": "a1", "displayName": "Planner", "missionId": "m1",
               "iterationId": iteration_id, "rationale": "Propose today's tasks"})
    );
    let data: Value = row.get("data");
    let fm: Value = row.get("field_meta");
    let iters = data["iterations"].as_array().unwrap();
    assert_eq!(iters.len(), 1);
    let it = &iters[0];
    assert_eq!(it["id"], json!(iteration_id));
    assert_eq!(it["source"], "server");
    assert_eq!(it["overallStatus"], "awaiting-review");
    assert_eq!(it["plan"][0]["id"], json!(format!("{iteration_id}-0")));
    assert_eq!(it["plan"][0]["status"], "planned");
    assert_eq!(
        it["plan"][0]["intent"],
        json!({"kind": "toolCall", "toolName": "create_task",
               "params": {"title": "Einkaufen", "priority": "high"}})
    );
    assert_eq!(it["summary"], "Einkauf als Task vorgeschlagen.");
    // field_meta: string stamps only, for both written fields.
    assert!(
        fm["iterations"].is_string() && fm["nextRunAt"].is_string(),
        "{fm}"
    );
    // nextRunAt advanced past now, keeping the interval's phase (06:00 + k hours).
    let next = parse_iso(data["nextRunAt"].as_str().unwrap()).unwrap();
    assert!(next > before, "{next} not after {before}");
    let due_t: DateTime<Utc> = parse_iso(due).unwrap();
    assert_eq!((next - due_t).num_seconds() % 3600, 0);

    // Token usage booked for the agent.
    let used: i64 = admin
        .query_one("SELECT COALESCE(SUM(tokens_used),0)::bigint FROM mana_ai.token_usage WHERE agent_id='a1'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(used, 120 + 160);

    // A second tick: the refresh folds in our row, nothing is due, nothing is written.
    let stats = r.tick().await;
    assert_eq!(stats.due_mission_count, 0, "{stats:?}");
    assert_eq!(server_rows(&admin, "m1").await.len(), 1);
    let metrics = r.metrics().render();
    assert!(metrics.contains("mana_ai_plans_written_back_total{service=\"mana-ai\"} 1"));
    assert!(metrics.contains("tool=\"create_task\""));
}

#[tokio::test]
async fn hallucinated_and_bad_calls_are_fed_back_and_never_recorded() {
    let db = fresh_db("plan_valid").await;
    let admin = db.admin().await;
    let llm = fake_llm(vec![
        tool_reply(&[
            ("create_taks", json!({"title": "x"})),
            ("create_task", json!({"priority": "high"})),
        ]),
        tool_reply(&[("create_task", json!({"title": "Fixed"}))]),
        stop_reply("done"),
    ])
    .await;
    push(
        &admin,
        "u1",
        "aiMissions",
        "m1",
        mission("2026-01-05T06:00:00.000Z", json!({"kind": "manual"}), None),
    )
    .await;
    let r = runner(&db, &llm.uri(), |_| {});
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    let rows = server_rows(&admin, "m1").await;
    let data: Value = rows[0].get("data");
    let plan = data["iterations"][0]["plan"].as_array().unwrap();
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0]["intent"]["params"], json!({"title": "Fixed"}));
    // Manual cadence: served once, no next run.
    assert!(data["nextRunAt"].is_null());
    // The second request told the model what was wrong with each call.
    let reqs = llm.received_requests().await.unwrap();
    assert!(reqs.len() >= 2);
    let second: Value = serde_json::from_slice(&reqs[1].body).unwrap();
    let tool_msgs: Vec<&Value> = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .collect();
    assert_eq!(tool_msgs.len(), 2);
    for m in &tool_msgs {
        let body: Value = serde_json::from_str(m["content"].as_str().unwrap()).unwrap();
        assert_eq!(body["success"], false, "{body}");
    }
    // Legacy mission: runs as the default agent.
    let actor: Value = rows[0].get("actor");
    assert_eq!(actor["principalId"], "legacy:ai-default");
    assert_eq!(actor["displayName"], "Mana");
}

#[tokio::test]
async fn a_denied_tool_is_never_offered_and_is_rejected() {
    let db = fresh_db("plan_deny").await;
    let admin = db.admin().await;
    let llm = fake_llm(vec![
        tool_reply(&[("create_task", json!({"title": "x"}))]),
        stop_reply("cannot"),
    ])
    .await;
    push(
        &admin,
        "u1",
        "agents",
        "a1",
        json!({"name": "Careful", "role": "", "state": "active",
        "policy": {"tools": {"create_task": "deny"}, "defaultForAi": "propose"}}),
    )
    .await;
    push(
        &admin,
        "u1",
        "aiMissions",
        "m1",
        mission(
            "2026-01-05T06:00:00.000Z",
            json!({"kind": "manual"}),
            Some("a1"),
        ),
    )
    .await;
    let r = runner(&db, &llm.uri(), |_| {});
    let stats = r.tick().await;
    assert_eq!(stats.failed, 1, "nothing valid ⇒ failed: {stats:?}");
    assert_eq!(stats.parse_failures, 1);
    let reqs = llm.received_requests().await.unwrap();
    let first: Value = serde_json::from_slice(&reqs[0].body).unwrap();
    let names: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"create_task"));
    assert!(names.contains(&"create_note"));
    let data: Value = server_rows(&admin, "m1").await[0].get("data");
    assert_eq!(data["iterations"][0]["overallStatus"], "failed");
}

#[tokio::test]
async fn provider_failure_writes_a_failed_iteration_and_backs_off() {
    let db = fresh_db("plan_fail").await;
    let admin = db.admin().await;
    let llm = fake_llm(vec![ResponseTemplate::new(500).set_body_json(
        json!({"detail": {"kind": "no_healthy_provider", "message": "all down"}}),
    )])
    .await;
    push(
        &admin,
        "u1",
        "aiMissions",
        "m1",
        mission(
            "2026-01-05T06:00:00.000Z",
            json!({"kind": "daily", "atHour": 7, "atMinute": 0}),
            None,
        ),
    )
    .await;
    let r = runner(&db, &llm.uri(), |c| {
        c.retry_base = Duration::from_secs(600);
        c.retry_cap = Duration::from_secs(3600);
    });
    let now = Utc::now();
    let stats = r.tick().await;
    assert_eq!(stats.failed, 1, "{stats:?}");
    assert_eq!(stats.plans_written_back, 0);
    // Bounded retries: max_attempts = 2 requests, no more.
    assert_eq!(llm.received_requests().await.unwrap().len(), 2);
    let data: Value = server_rows(&admin, "m1").await[0].get("data");
    let it = &data["iterations"][0];
    assert_eq!(it["overallStatus"], "failed");
    assert_eq!(it["errorDetails"]["phase"], "calling-llm");
    let msg = it["errorDetails"]["message"].as_str().unwrap();
    assert!(msg.contains("no_healthy_provider"), "{msg}");
    assert!(!msg.contains("test-key"));
    // Retry scheduled with backoff (600 s ± 20 %), not on the next tick, and never later
    // than the next regular daily run.
    let next = parse_iso(data["nextRunAt"].as_str().unwrap()).unwrap();
    let delay = (next - now).num_seconds();
    assert!((400..=900).contains(&delay), "delay {delay}");
    let m = r.metrics().render();
    assert!(
        m.contains("mana_ai_mission_errors_total{service=\"mana-ai\"} 1"),
        "{m}"
    );
    assert!(m.contains("kind=\"no_healthy_provider\""));
    // Next tick: not due, no new call.
    let stats = r.tick().await;
    assert_eq!(stats.due_mission_count, 0);
    assert_eq!(llm.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn two_runners_plan_each_due_run_exactly_once() {
    let db = fresh_db("plan_two").await;
    let admin = db.admin().await;
    let slow = |r: ResponseTemplate| r.set_delay(Duration::from_millis(200));
    let llm = fake_llm(vec![slow(stop_reply("nothing to do today"))]).await;
    for i in 0..6 {
        push(
            &admin,
            &format!("u{i}"),
            "aiMissions",
            &format!("m{i}"),
            mission(
                "2026-01-05T06:00:00.000Z",
                json!({"kind": "interval", "everyMinutes": 30}),
                None,
            ),
        )
        .await;
    }
    let a = Arc::new(runner(&db, &llm.uri(), |_| {}));
    let b = Arc::new(runner(&db, &llm.uri(), |_| {}));
    let (sa, sb) = tokio::join!(a.tick(), b.tick());
    assert_eq!(
        sa.plans_written_back + sb.plans_written_back,
        6,
        "{sa:?} {sb:?}"
    );
    let n: i64 = admin
        .query_one(
            "SELECT count(*) FROM sync_changes WHERE client_id = 'mana-ai-runner'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 6);
    // Ticks after that, from either runner, write nothing more.
    let (sa, sb) = tokio::join!(a.tick(), b.tick());
    assert_eq!(sa.plans_written_back + sb.plans_written_back, 0);
    let n: i64 = admin
        .query_one(
            "SELECT count(*) FROM sync_changes WHERE client_id = 'mana-ai-runner'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 6);
    let _ = to_iso_ms(Utc::now());
}

#[tokio::test]
async fn missions_are_planned_concurrently() {
    let db = fresh_db("plan_conc").await;
    let admin = db.admin().await;
    let llm = fake_llm(vec![stop_reply("ok").set_delay(Duration::from_millis(300))]).await;
    for i in 0..20 {
        push(
            &admin,
            &format!("u{i}"),
            "aiMissions",
            &format!("m{i}"),
            mission("2026-01-05T06:00:00.000Z", json!({"kind": "manual"}), None),
        )
        .await;
    }
    let r = runner(&db, &llm.uri(), |c| c.max_concurrent_plans = 20);
    let t = std::time::Instant::now();
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 20, "{stats:?}");
    // Sequential would take ≥ 6 s.
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}
