//! Planning and write-back against a real PostgreSQL and a fake LLM: the written row
//! field by field, exactly-once across ticks and runners, next-run scheduling,
//! validation feedback, failures with backoff (through the real HTTP client).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mana_ai_core::chat::{LlmClient, Role};
use mana_ai_core::iso::parse_iso;
use mana_ai_core::plan::iteration_id_for;
use mana_ai_llm::{HttpLlmClient, HttpLlmConfig};
use mana_ai_runner::testkit::http::chat_server;
use mana_ai_runner::testkit::{metric_value, FakeLlm, Reply, RunnerBuilder, TestClock};
use mana_ai_runner::{Clock, Runner, RunnerConfig};
use mana_ai_store::testkit::rows::{
    mission_record, runner_data, runner_row_count, runner_rows, token_usage_sum,
};
use mana_ai_store::testkit::{fresh_db, push_agent, push_mission, TestDb};
use mana_ai_store::RefreshOptions;
use serde_json::{json, Value};
use wiremock::ResponseTemplate;

const DUE: &str = "2026-01-05T06:00:00.000Z";

/// A tool-call round reporting 120 tokens.
fn tool_reply(calls: &[(&str, Value)]) -> Reply {
    Reply::tool_calls(calls).usage(100, 20)
}

/// A closing round reporting 160 tokens.
fn stop_reply(text: &str) -> Reply {
    Reply::text(text).usage(150, 10)
}

fn runner(db: &TestDb, llm: Arc<dyn LlmClient>, tweak: impl FnOnce(&mut RunnerConfig)) -> Runner {
    RunnerBuilder::new(db).llm(llm).config(tweak).build()
}

fn mission(next: &str, cadence: Value, agent: Option<&str>) -> Value {
    let mut m = mission_record(json!({
        "title": "Wochenplan", "conceptMarkdown": "Plan the week",
        "objective": "Propose today's tasks", "nextRunAt": next, "cadence": cadence
    }));
    if let Some(a) = agent {
        m["agentId"] = json!(a);
    }
    m
}

#[tokio::test]
async fn written_row_matches_the_contract_and_a_second_tick_writes_nothing() {
    let db = fresh_db("plan_row").await;
    let admin = db.admin().await;
    let llm = FakeLlm::script(vec![
        tool_reply(&[(
            "create_task",
            json!({"title": "Einkaufen", "priority": "high"}),
        )]),
        stop_reply("Einkauf als Task vorgeschlagen."),
    ]);
    push_agent(
        &admin,
        "u1",
        "a1",
        json!({"name": "Planner", "role": "Organiser", "state": "active",
        "maxConcurrentMissions": 1, "policy": {"tools": {}, "defaultForAi": "propose"}}),
    )
    .await;
    let due = DUE;
    push_mission(
        &admin,
        "u1",
        "m1",
        mission(
            due,
            json!({"kind": "interval", "everyMinutes": 60}),
            Some("a1"),
        ),
    )
    .await;
    let r = runner(&db, llm, |_| {});
    let before = Utc::now();
    let stats = r.tick().await;
    assert_eq!(stats.due_mission_count, 1, "{stats:?}");
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    assert!(stats.errors.is_empty(), "{stats:?}");

    let rows = runner_rows(&admin, "m1").await;
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
    assert_eq!(token_usage_sum(&admin, "a1").await, 120 + 160);

    // A second tick: the refresh folds in our row, nothing is due, nothing is written.
    let stats = r.tick().await;
    assert_eq!(stats.due_mission_count, 0, "{stats:?}");
    assert_eq!(runner_rows(&admin, "m1").await.len(), 1);
    let metrics = r.metrics().render();
    assert_eq!(
        metric_value(
            &metrics,
            "mana_ai_plans_written_back_total",
            &[("service", "mana-ai")]
        ),
        Some(1.0)
    );
    assert!(metric_value(
        &metrics,
        "mana_ai_tool_calls_total",
        &[("tool", "create_task")]
    )
    .is_some());
}

#[tokio::test]
async fn hallucinated_and_bad_calls_are_fed_back_and_never_recorded() {
    let db = fresh_db("plan_valid").await;
    let admin = db.admin().await;
    let llm = FakeLlm::script(vec![
        tool_reply(&[
            ("create_taks", json!({"title": "x"})),
            ("create_task", json!({"priority": "high"})),
        ]),
        tool_reply(&[("create_task", json!({"title": "Fixed"}))]),
        stop_reply("done"),
    ]);
    push_mission(
        &admin,
        "u1",
        "m1",
        mission(DUE, json!({"kind": "manual"}), None),
    )
    .await;
    let r = runner(&db, llm.clone(), |_| {});
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    let rows = runner_rows(&admin, "m1").await;
    let data: Value = rows[0].get("data");
    let plan = data["iterations"][0]["plan"].as_array().unwrap();
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0]["intent"]["params"], json!({"title": "Fixed"}));
    // Manual cadence: served once, no next run.
    assert!(data["nextRunAt"].is_null());
    // The second request told the model what was wrong with each call.
    let reqs = llm.requests();
    assert!(reqs.len() >= 2);
    let tool_msgs: Vec<_> = reqs[1]
        .messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .collect();
    assert_eq!(tool_msgs.len(), 2);
    for m in &tool_msgs {
        let body: Value = serde_json::from_str(m.content.as_deref().unwrap()).unwrap();
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
    let llm = FakeLlm::script(vec![
        tool_reply(&[("create_task", json!({"title": "x"}))]),
        stop_reply("cannot"),
    ]);
    push_agent(
        &admin,
        "u1",
        "a1",
        json!({"name": "Careful", "role": "", "state": "active",
        "policy": {"tools": {"create_task": "deny"}, "defaultForAi": "propose"}}),
    )
    .await;
    push_mission(
        &admin,
        "u1",
        "m1",
        mission(DUE, json!({"kind": "manual"}), Some("a1")),
    )
    .await;
    let r = runner(&db, llm.clone(), |_| {});
    let stats = r.tick().await;
    assert_eq!(stats.failed, 1, "nothing valid ⇒ failed: {stats:?}");
    assert_eq!(stats.parse_failures, 1);
    let first = &llm.requests()[0];
    let names: Vec<&str> = first
        .tools
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"create_task"));
    assert!(names.contains(&"create_note"));
    let data = &runner_data(&admin, "m1").await[0];
    assert_eq!(data["iterations"][0]["overallStatus"], "failed");
}

/// The real HTTP client (two attempts, short backoff) against `url`.
fn http_llm(url: &str) -> Arc<dyn LlmClient> {
    let mut lc = HttpLlmConfig::new(url, "test-key");
    lc.max_attempts = 2;
    lc.backoff_base = Duration::from_millis(10);
    lc.backoff_cap = Duration::from_millis(20);
    lc.call_deadline = Duration::from_secs(5);
    Arc::new(HttpLlmClient::new(lc).unwrap())
}

/// A daily 07:00 (Berlin) mission whose provider is down, failing at a pinned 10:00
/// Berlin time: the retry (600 s ± 20 %) comes before the next regular run whatever the
/// wall clock says.
#[tokio::test]
async fn provider_failure_writes_a_failed_iteration_and_backs_off() {
    let db = fresh_db("plan_fail").await;
    let admin = db.admin().await;
    let llm = chat_server(vec![ResponseTemplate::new(500).set_body_json(
        json!({"detail": {"kind": "no_healthy_provider", "message": "all down"}}),
    )])
    .await;
    push_mission(
        &admin,
        "u1",
        "m1",
        mission(
            DUE,
            json!({"kind": "daily", "atHour": 7, "atMinute": 0}),
            None,
        ),
    )
    .await;
    let clock = TestClock::at_iso("2026-01-05T09:00:00Z");
    let r = RunnerBuilder::new(&db)
        .llm(http_llm(&llm.uri()))
        .clock(clock.clone())
        .config(|c| {
            c.retry_base = Duration::from_secs(600);
            c.retry_cap = Duration::from_secs(3600);
        })
        .build();
    let now = clock.now();
    let stats = r.tick().await;
    assert_eq!(stats.failed, 1, "{stats:?}");
    assert_eq!(stats.plans_written_back, 0);
    // Bounded retries: max_attempts = 2 requests, no more.
    assert_eq!(llm.received_requests().await.unwrap().len(), 2);
    let data = &runner_data(&admin, "m1").await[0];
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
    assert_eq!(
        metric_value(
            &m,
            "mana_ai_mission_errors_total",
            &[("service", "mana-ai")]
        ),
        Some(1.0),
        "{m}"
    );
    assert!(metric_value(
        &m,
        "mana_ai_provider_errors_total",
        &[("kind", "no_healthy_provider")]
    )
    .is_some());
    // Next tick: not due, no new call.
    let stats = r.tick().await;
    assert_eq!(stats.due_mission_count, 0);
    assert_eq!(llm.received_requests().await.unwrap().len(), 2);
}

/// Consecutive failures back off further: the second failed run in a row waits about
/// twice the base (1200 s ± 20 %), the third four times (capped here at 3600 s).
#[tokio::test]
async fn consecutive_failures_back_off_exponentially_up_to_the_cap() {
    let db = fresh_db("plan_backoff").await;
    let admin = db.admin().await;
    let llm = FakeLlm::replying(Reply::provider_error(503, "no_healthy_provider", "down"));
    push_mission(
        &admin,
        "u1",
        "m1",
        mission(DUE, json!({"kind": "interval", "everyMinutes": 1440}), None),
    )
    .await;
    let clock = TestClock::at_iso("2026-01-05T09:00:00Z");
    let r = RunnerBuilder::new(&db)
        .llm(llm.clone())
        .clock(clock.clone())
        .config(|c| {
            c.retry_base = Duration::from_secs(600);
            c.retry_cap = Duration::from_secs(2000);
        })
        .build();
    let mut delays = Vec::new();
    for attempt in 1..=3 {
        let now = clock.now();
        let stats = r.tick().await;
        assert_eq!(stats.failed, 1, "attempt {attempt}: {stats:?}");
        let rows = runner_data(&admin, "m1").await;
        assert_eq!(rows.len(), attempt);
        let data = rows.last().unwrap();
        let failed = data["iterations"].as_array().unwrap();
        assert_eq!(failed.len(), attempt, "history keeps every failed run");
        let next = parse_iso(data["nextRunAt"].as_str().unwrap()).unwrap();
        delays.push((next - now).num_seconds());
        // Not due before the retry; due at it.
        clock.set(next - chrono::Duration::seconds(1));
        assert_eq!(r.tick().await.due_mission_count, 0, "attempt {attempt}");
        clock.set(next);
    }
    assert!((479..=721).contains(&delays[0]), "{delays:?}");
    assert!((959..=1441).contains(&delays[1]), "{delays:?}");
    assert!(
        (1599..=2401).contains(&delays[2]),
        "capped at 2000 s ± 20 %: {delays:?}"
    );
    assert_eq!(llm.calls(), 3);
}

#[tokio::test]
async fn two_runners_plan_each_due_run_exactly_once() {
    let db = fresh_db("plan_two").await;
    let admin = db.admin().await;
    // Every call waits (up to 5 s) until two are in flight: the runners must overlap.
    let llm = FakeLlm::hold_until_in_flight(
        2,
        Duration::from_secs(5),
        vec![stop_reply("nothing to do today").delay(Duration::from_millis(200))],
    );
    for i in 0..6 {
        push_mission(
            &admin,
            &format!("u{i}"),
            &format!("m{i}"),
            mission(DUE, json!({"kind": "interval", "everyMinutes": 30}), None),
        )
        .await;
    }
    let build = || {
        RunnerBuilder::new(&db)
            .llm(llm.clone())
            .config(|c| c.max_concurrent_plans = 1)
            .build_arc()
    };
    let (a, b) = (build(), build());
    // Snapshots first, so a runner whose refresh finds the other's running still sees
    // every due run.
    let opts = RefreshOptions {
        batch_rows: 5_000,
        safety_margin: Duration::ZERO,
    };
    db.service_store().refresh_snapshots(opts).await.unwrap();
    let (sa, sb) = tokio::join!(a.tick(), b.tick());
    assert_eq!(
        sa.plans_written_back + sb.plans_written_back,
        6,
        "{sa:?} {sb:?}"
    );
    // Both runners contended: each saw all six due runs, each planned some of them, the
    // other's claims made it skip the rest, and no due run reached the model twice.
    assert_eq!((sa.due_mission_count, sb.due_mission_count), (6, 6));
    assert!(
        sa.plans_written_back > 0 && sb.plans_written_back > 0,
        "{sa:?} {sb:?}"
    );
    assert_eq!(sa.skipped + sb.skipped, 6, "{sa:?} {sb:?}");
    assert_eq!(llm.peak_in_flight(), 2);
    assert_eq!(llm.calls(), 6);
    assert_eq!(runner_row_count(&admin, None).await, 6);
    // Ticks after that, from either runner, write nothing more.
    let (sa, sb) = tokio::join!(a.tick(), b.tick());
    assert_eq!(sa.plans_written_back + sb.plans_written_back, 0);
    assert_eq!(runner_row_count(&admin, None).await, 6);
}

#[tokio::test]
async fn missions_are_planned_concurrently() {
    let db = fresh_db("plan_conc").await;
    let admin = db.admin().await;
    // Every call waits until all 20 are in flight (or 10 s pass): sequential planning
    // could never get there.
    let llm = FakeLlm::hold_until_in_flight(20, Duration::from_secs(10), vec![stop_reply("ok")]);
    for i in 0..20 {
        push_mission(
            &admin,
            &format!("u{i}"),
            &format!("m{i}"),
            mission(DUE, json!({"kind": "manual"}), None),
        )
        .await;
    }
    let r = runner(&db, llm.clone(), |c| c.max_concurrent_plans = 20);
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 20, "{stats:?}");
    assert_eq!(llm.peak_in_flight(), 20, "all twenty were planned at once");
}
