//! Agents against a real PostgreSQL and a fake OpenAI-compatible server: the gates,
//! per-agent concurrency measured across two runner instances, oldest-due-first, token
//! budgets that hold under concurrency, usage of failed runs, budget reminders,
//! pruning, and the default agent's budget.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mana_ai_core::chat::{ChatRequest, ChatResponse, LlmClient, LlmError, Role};
use mana_ai_llm::{HttpLlmClient, HttpLlmConfig};
use mana_ai_runner::budget::estimate_call_tokens;
use mana_ai_runner::{Metrics, Runner, RunnerConfig, RunnerDeps, SystemClock};
use mana_ai_store::testkit::{fresh_db, TestDb};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

// ---------------------------------------------------------------------------------
// Fake LLM
// ---------------------------------------------------------------------------------

/// How the fake model answers.
#[derive(Clone, Copy)]
enum Mode {
    /// First call of a conversation: one `create_task` call; once a tool result is in
    /// the history: a closing summary.
    ToolThenStop,
    /// Always a closing summary without tool calls.
    Stop,
    /// First call: one tool call; every later call: HTTP 500.
    ToolThenFail,
}

/// Wiremock responder: answers by looking at the conversation, records every body.
struct FakeModel {
    mode: Mode,
    usage: u64,
    delay: Duration,
    bodies: Mutex<Vec<Value>>,
    calls: AtomicUsize,
}

fn usage_json(total: u64) -> Value {
    let completion = total / 10;
    json!({"prompt_tokens": total - completion, "completion_tokens": completion, "total_tokens": total})
}

impl Respond for FakeModel {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let has_tool_result = body["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
        self.bodies.lock().unwrap().push(body);
        let tool = !has_tool_result && !matches!(self.mode, Mode::Stop);
        let reply = if has_tool_result && matches!(self.mode, Mode::ToolThenFail) {
            ResponseTemplate::new(500).set_body_json(json!({"error": "boom"}))
        } else if tool {
            ResponseTemplate::new(200).set_body_json(json!({
                "choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_0", "type": "function",
                     "function": {"name": "create_task", "arguments": "{\"title\":\"Einkaufen\"}"}}]},
                    "finish_reason": "tool_calls"}],
                "usage": usage_json(self.usage)
            }))
        } else {
            ResponseTemplate::new(200).set_body_json(json!({
                "choices": [{"message": {"role": "assistant", "content": "Fertig."}, "finish_reason": "stop"}],
                "usage": usage_json(self.usage)
            }))
        };
        reply.set_delay(self.delay)
    }
}

/// Mounts the fake model; returns the server and a handle to its recordings.
async fn fake_llm(mode: Mode, usage: u64, delay: Duration) -> (MockServer, Arc<FakeModel>) {
    let model = Arc::new(FakeModel {
        mode,
        usage,
        delay,
        bodies: Mutex::new(Vec::new()),
        calls: AtomicUsize::new(0),
    });
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(SharedResponder(model.clone()))
        .mount(&server)
        .await;
    (server, model)
}

struct SharedResponder(Arc<FakeModel>);

impl Respond for SharedResponder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        self.0.respond(req)
    }
}

/// Wraps the HTTP client and measures how many *missions* have a conversation open at
/// once: a mission opens with its first call (no tool result yet) and closes when the
/// call that answers a tool result returns (or any call fails). Also records the
/// largest call estimate and the order in which missions started.
struct Probe {
    inner: HttpLlmClient,
    open: Mutex<HashMap<String, ()>>,
    peak: AtomicUsize,
    max_estimate: AtomicU64,
    started: Mutex<Vec<String>>,
}

impl Probe {
    fn new(inner: HttpLlmClient) -> Self {
        Self {
            inner,
            open: Mutex::new(HashMap::new()),
            peak: AtomicUsize::new(0),
            max_estimate: AtomicU64::new(0),
            started: Mutex::new(Vec::new()),
        }
    }
}

/// Identifies the mission of a call: its user prompt (unique per mission title).
fn mission_key(request: &ChatRequest) -> String {
    request
        .messages
        .iter()
        .find(|m| m.role == Role::User)
        .and_then(|m| m.content.clone())
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl LlmClient for Probe {
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        self.max_estimate
            .fetch_max(estimate_call_tokens(request), Ordering::SeqCst);
        let key = mission_key(request);
        let closing = request.messages.iter().any(|m| m.role == Role::Tool);
        if !closing {
            let mut open = self.open.lock().unwrap();
            open.insert(key.clone(), ());
            self.peak.fetch_max(open.len(), Ordering::SeqCst);
            self.started.lock().unwrap().push(key.clone());
        }
        let r = self.inner.complete(request).await;
        if closing || r.is_err() {
            self.open.lock().unwrap().remove(&key);
        }
        r
    }
}

fn http_client(url: &str) -> HttpLlmClient {
    let mut lc = HttpLlmConfig::new(url, "test-key");
    lc.max_attempts = 1;
    lc.backoff_base = Duration::from_millis(10);
    lc.backoff_cap = Duration::from_millis(20);
    lc.call_deadline = Duration::from_secs(10);
    HttpLlmClient::new(lc).unwrap()
}

fn runner_with(
    db: &TestDb,
    llm: Arc<dyn LlmClient>,
    tweak: impl FnOnce(&mut RunnerConfig),
) -> Runner {
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

fn runner(db: &TestDb, url: &str, tweak: impl FnOnce(&mut RunnerConfig)) -> Runner {
    runner_with(db, Arc::new(http_client(url)), tweak)
}

// ---------------------------------------------------------------------------------
// Data helpers
// ---------------------------------------------------------------------------------

async fn push(c: &tokio_postgres::Client, user: &str, table: &str, id: &str, data: Value) {
    c.execute(
        "INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta, client_id)
         VALUES ('ai', $1, $2, $3, 'insert', $4, '{}', 'webapp')",
        &[&table, &id, &user, &data],
    )
    .await
    .unwrap();
}

fn agent(extra: Value) -> Value {
    let mut a = json!({"name": "Scout", "role": "Researcher", "state": "active",
                       "maxConcurrentMissions": 1,
                       "policy": {"tools": {}, "defaultForAi": "propose"}});
    for (k, v) in extra.as_object().unwrap() {
        a[k] = v.clone();
    }
    a
}

/// An active mission due at `next`, once a day.
fn mission(title: &str, next: &str, agent: Option<&str>) -> Value {
    let mut m = json!({
        "title": title, "conceptMarkdown": "Plan", "objective": "Propose tasks",
        "state": "active", "nextRunAt": next,
        "cadence": {"kind": "interval", "everyMinutes": 1440},
        "inputs": [], "iterations": []
    });
    if let Some(a) = agent {
        m["agentId"] = json!(a);
    }
    m
}

fn decisions(r: &Runner, decision: &str) -> u64 {
    r.metrics()
        .agent_decisions_total
        .with_label_values(&[decision])
        .get()
}

async fn written(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM sync_changes WHERE client_id = 'mana-ai-runner'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn usage_sum(admin: &tokio_postgres::Client, agent: &str) -> i64 {
    admin
        .query_one(
            "SELECT COALESCE(SUM(tokens_used), 0)::bigint FROM mana_ai.token_usage WHERE agent_id = $1",
            &[&agent],
        )
        .await
        .unwrap()
        .get(0)
}

async fn insert_usage(
    admin: &tokio_postgres::Client,
    user: &str,
    agent: &str,
    tokens: i32,
    age: &str,
) {
    admin
        .execute(
            "INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, tokens_used, ts)
             VALUES ($1, $2, 'old-mission', $3, now() - $4::text::interval)",
            &[&user, &agent, &tokens, &age],
        )
        .await
        .unwrap();
}

/// Ticks both runners concurrently until `done` holds or the deadline passes.
async fn tick_until(
    runners: &[Arc<Runner>],
    deadline: Duration,
    mut done: impl FnMut() -> futures::future::BoxFuture<'static, bool>,
) -> bool {
    let end = std::time::Instant::now() + deadline;
    while std::time::Instant::now() < end {
        let ticks = runners.iter().map(|r| {
            let r = r.clone();
            tokio::spawn(async move { r.tick().await })
        });
        for t in futures::future::join_all(ticks).await {
            t.unwrap();
        }
        if done().await {
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn paused_archived_missing_deleted_and_zero_budget_agents_are_skipped() {
    let db = fresh_db("agents_gates").await;
    let admin = db.admin().await;
    let (llm, model) = fake_llm(Mode::Stop, 100, Duration::ZERO).await;
    let due = "2026-01-05T06:00:00.000Z";
    push(
        &admin,
        "u1",
        "agents",
        "paused",
        agent(json!({"state": "paused"})),
    )
    .await;
    push(
        &admin,
        "u1",
        "agents",
        "archived",
        agent(json!({"state": "archived"})),
    )
    .await;
    push(
        &admin,
        "u1",
        "agents",
        "gone",
        agent(json!({"deletedAt": "2026-01-01T00:00:00.000Z"})),
    )
    .await;
    push(
        &admin,
        "u1",
        "agents",
        "broke",
        agent(json!({"maxTokensPerDay": 0})),
    )
    .await;
    push(
        &admin,
        "u1",
        "aiMissions",
        "m-paused",
        mission("P", due, Some("paused")),
    )
    .await;
    push(
        &admin,
        "u1",
        "aiMissions",
        "m-archived",
        mission("A", due, Some("archived")),
    )
    .await;
    push(
        &admin,
        "u1",
        "aiMissions",
        "m-ghost",
        mission("G", due, Some("ghost")),
    )
    .await;
    push(
        &admin,
        "u1",
        "aiMissions",
        "m-gone",
        mission("D", due, Some("gone")),
    )
    .await;
    push(
        &admin,
        "u1",
        "aiMissions",
        "m-broke",
        mission("B", due, Some("broke")),
    )
    .await;
    let r = runner(&db, &llm.uri(), |_| {});
    let stats = r.tick().await;
    assert_eq!(stats.due_mission_count, 5, "{stats:?}");
    assert_eq!(stats.skipped, 5, "{stats:?}");
    assert_eq!(decisions(&r, "skipped-paused"), 1);
    assert_eq!(decisions(&r, "skipped-archived"), 1);
    assert_eq!(decisions(&r, "skipped-missing-agent"), 2);
    assert_eq!(decisions(&r, "skipped-budget"), 1);
    assert_eq!(decisions(&r, "ran"), 0);
    assert_eq!(
        model.calls.load(Ordering::SeqCst),
        0,
        "no LLM call for a gated mission"
    );
    assert_eq!(written(&admin).await, 0);
    let runs: i64 = admin
        .query_one("SELECT count(*) FROM mana_ai.mission_runs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs, 0, "gated missions never claim");
}

#[tokio::test]
async fn two_runners_never_run_more_than_max_concurrent_missions_of_one_agent() {
    let db = fresh_db("agents_conc").await;
    let admin = db.admin().await;
    let (llm, _model) = fake_llm(Mode::ToolThenStop, 100, Duration::from_millis(150)).await;
    push(
        &admin,
        "u1",
        "agents",
        "a1",
        agent(json!({"maxConcurrentMissions": 2})),
    )
    .await;
    // Another agent of the same user is not limited by a1's slots.
    push(
        &admin,
        "u1",
        "agents",
        "a2",
        agent(json!({"maxConcurrentMissions": 1})),
    )
    .await;
    for i in 0..6 {
        push(
            &admin,
            "u1",
            "aiMissions",
            &format!("m{i}"),
            mission(
                &format!("A1 mission {i}"),
                &format!("2026-01-05T06:0{i}:00.000Z"),
                Some("a1"),
            ),
        )
        .await;
    }
    let probe = Arc::new(Probe::new(http_client(&llm.uri())));
    let a = Arc::new(runner_with(&db, probe.clone(), |_| {}));
    let b = Arc::new(runner_with(&db, probe.clone(), |_| {}));
    let adm = Arc::new(admin);
    let check = adm.clone();
    let all = tick_until(
        &[a.clone(), b.clone()],
        Duration::from_secs(60),
        move || {
            let c = check.clone();
            Box::pin(async move { written(&c).await == 6 })
        },
    )
    .await;
    assert!(all, "every mission is eventually written");
    let peak = probe.peak.load(Ordering::SeqCst);
    assert_eq!(peak, 2, "peak concurrent missions of one agent");
    assert!(decisions(&a, "skipped-concurrency") + decisions(&b, "skipped-concurrency") > 0);
    assert_eq!(decisions(&a, "ran") + decisions(&b, "ran"), 6);
}

#[tokio::test]
async fn oldest_due_first_and_no_mission_starves() {
    let db = fresh_db("agents_fifo").await;
    let admin = db.admin().await;
    let (llm, _model) = fake_llm(Mode::ToolThenStop, 100, Duration::from_millis(100)).await;
    push(
        &admin,
        "u1",
        "agents",
        "a1",
        agent(json!({"maxConcurrentMissions": 1})),
    )
    .await;
    // Inserted newest first, so neither insertion order nor id order is the due order.
    let due = [
        ("m-a", "Mission C", "2026-01-05T08:00:00.000Z"),
        ("m-b", "Mission B", "2026-01-05T07:00:00.000Z"),
        ("m-c", "Mission A", "2026-01-05T06:00:00.000Z"),
    ];
    for (id, title, next) in due {
        push(
            &admin,
            "u1",
            "aiMissions",
            id,
            mission(title, next, Some("a1")),
        )
        .await;
    }
    let probe = Arc::new(Probe::new(http_client(&llm.uri())));
    let a = Arc::new(runner_with(&db, probe.clone(), |_| {}));
    let b = Arc::new(runner_with(&db, probe.clone(), |_| {}));
    let adm = Arc::new(admin);
    let check = adm.clone();
    let all = tick_until(&[a, b], Duration::from_secs(60), move || {
        let c = check.clone();
        Box::pin(async move { written(&c).await == 3 })
    })
    .await;
    assert!(all, "all three written over ticks");
    assert_eq!(probe.peak.load(Ordering::SeqCst), 1);
    let started = probe.started.lock().unwrap().clone();
    let order: Vec<&str> = started
        .iter()
        .map(|l| {
            ["Mission A", "Mission B", "Mission C"]
                .into_iter()
                .find(|t| l.contains(t))
                .unwrap_or("?")
        })
        .collect();
    assert_eq!(
        order,
        ["Mission A", "Mission B", "Mission C"],
        "{started:?}"
    );
}

#[tokio::test]
async fn ten_concurrent_missions_with_a_budget_of_two_calls_spend_at_most_two_calls() {
    let db = fresh_db("agents_budget").await;
    let admin = db.admin().await;
    // Each call really uses 1000 tokens; every estimate is larger (≥ the allowance).
    let (llm, model) = fake_llm(Mode::Stop, 1_000, Duration::from_millis(300)).await;
    push(
        &admin,
        "u1",
        "agents",
        "a1",
        agent(json!({"maxConcurrentMissions": 10, "maxTokensPerDay": 2000})),
    )
    .await;
    for i in 0..10 {
        push(
            &admin,
            "u1",
            "aiMissions",
            &format!("m{i}"),
            mission(
                &format!("Budget mission {i}"),
                "2026-01-05T06:00:00.000Z",
                Some("a1"),
            ),
        )
        .await;
    }
    let probe = Arc::new(Probe::new(http_client(&llm.uri())));
    let a = Arc::new(runner_with(&db, probe.clone(), |_| {}));
    let b = Arc::new(runner_with(&db, probe.clone(), |_| {}));
    for _ in 0..3 {
        let (sa, sb) = tokio::join!(a.tick(), b.tick());
        assert!(
            sa.errors.is_empty() && sb.errors.is_empty(),
            "{sa:?} {sb:?}"
        );
    }
    let spent = usage_sum(&admin, "a1").await;
    let max_estimate = probe.max_estimate.load(Ordering::SeqCst) as i64;
    assert!(max_estimate >= 1_024);
    assert!(
        spent <= 2_000 + max_estimate,
        "spent {spent}, estimate {max_estimate}"
    );
    // With real usage below the estimate the cap is not even overshot.
    assert_eq!(spent, 2_000);
    assert_eq!(model.calls.load(Ordering::SeqCst), 2);
    assert_eq!(written(&admin).await, 2);
    let skipped = decisions(&a, "skipped-budget") + decisions(&b, "skipped-budget");
    assert!(skipped >= 8, "{skipped}");
    // Nothing is left reserved, no claim is left behind, the metric matches the table.
    let reserved: i64 = admin
        .query_one("SELECT count(*) FROM mana_ai.token_reservations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(reserved, 0);
    let running: i64 = admin
        .query_one(
            "SELECT count(*) FROM mana_ai.mission_runs WHERE status = 'running'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(running, 0, "skipped missions released their claims");
    let metric = a
        .metrics()
        .tokens_used_total
        .with_label_values(&["a1"])
        .get()
        + b.metrics()
            .tokens_used_total
            .with_label_values(&["a1"])
            .get();
    assert_eq!(metric, 2_000);
}

#[tokio::test]
async fn a_run_that_runs_out_of_budget_mid_way_keeps_its_steps() {
    let db = fresh_db("agents_midway").await;
    let admin = db.admin().await;
    // The first call alone uses the whole cap: the second cannot reserve.
    let (llm, model) = fake_llm(Mode::ToolThenStop, 5_000, Duration::ZERO).await;
    push(
        &admin,
        "u1",
        "agents",
        "a1",
        agent(json!({"maxTokensPerDay": 5000})),
    )
    .await;
    push(
        &admin,
        "u1",
        "aiMissions",
        "m1",
        mission("Mid", "2026-01-05T06:00:00.000Z", Some("a1")),
    )
    .await;
    let r = runner(&db, &llm.uri(), |_| {});
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    assert_eq!(model.calls.load(Ordering::SeqCst), 1);
    let data: Value = admin
        .query_one(
            "SELECT data FROM sync_changes WHERE client_id = 'mana-ai-runner'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let it = &data["iterations"][0];
    assert_eq!(it["overallStatus"], "awaiting-review");
    assert_eq!(it["plan"].as_array().map(Vec::len), Some(1));
    assert_eq!(usage_sum(&admin, "a1").await, 5_000);
}

#[tokio::test]
async fn usage_of_a_failed_run_counts() {
    let db = fresh_db("agents_failed").await;
    let admin = db.admin().await;
    let (llm, model) = fake_llm(Mode::ToolThenFail, 700, Duration::ZERO).await;
    push(
        &admin,
        "u1",
        "agents",
        "a1",
        agent(json!({"maxTokensPerDay": 100000})),
    )
    .await;
    push(
        &admin,
        "u1",
        "aiMissions",
        "m1",
        mission("Fail", "2026-01-05T06:00:00.000Z", Some("a1")),
    )
    .await;
    let r = runner(&db, &llm.uri(), |_| {});
    let stats = r.tick().await;
    assert_eq!(stats.failed, 1, "{stats:?}");
    assert_eq!(model.calls.load(Ordering::SeqCst), 2);
    // The answered first call counts; the failed HTTP call reported nothing and books 0.
    assert_eq!(usage_sum(&admin, "a1").await, 700);
    let rows = admin
        .query(
            "SELECT user_id, agent_id, mission_id, tokens_used FROM mana_ai.token_usage",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), "u1");
    assert_eq!(rows[0].get::<_, String>(1), "a1");
    assert_eq!(rows[0].get::<_, String>(2), "m1");
    assert_eq!(rows[0].get::<_, i32>(3), 700);
    assert_eq!(
        r.metrics()
            .tokens_used_total
            .with_label_values(&["a1"])
            .get(),
        700
    );
    let reserved: i64 = admin
        .query_one("SELECT count(*) FROM mana_ai.token_reservations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(reserved, 0, "the failed call's reservation was released");
}

#[tokio::test]
async fn budget_reminder_at_75_percent_counts_other_runs_reservations() {
    let db = fresh_db("agents_reminder").await;
    let admin = db.admin().await;
    let (llm, model) = fake_llm(Mode::Stop, 10, Duration::ZERO).await;
    push(
        &admin,
        "u1",
        "agents",
        "a1",
        agent(json!({"name": "Kira", "maxTokensPerDay": 100000})),
    )
    .await;
    push(
        &admin,
        "u1",
        "aiMissions",
        "m1",
        mission("Remind", "2026-01-05T06:00:00.000Z", Some("a1")),
    )
    .await;
    // 50 % booked + 30 % held by another run's call in flight = 80 %.
    insert_usage(&admin, "u1", "a1", 50_000, "1 hour").await;
    admin
        .execute(
            "INSERT INTO mana_ai.token_reservations (user_id, agent_id, mission_id, tokens, expires_at)
             VALUES ('u1', 'a1', 'other', 30000, now() + interval '10 minutes')",
            &[],
        )
        .await
        .unwrap();
    let r = runner(&db, &llm.uri(), |_| {});
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    let bodies = model.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1);
    let reminders: Vec<String> = bodies[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "system")
        .filter_map(|m| m["content"].as_str())
        .filter(|c| c.starts_with("<reminder>"))
        .map(str::to_string)
        .collect();
    assert_eq!(reminders.len(), 1, "{reminders:?}");
    assert!(reminders[0].contains("Kira"), "{}", reminders[0]);
    assert!(reminders[0].contains("80%"), "{}", reminders[0]);
    assert!(reminders[0].contains("80000 / 100000"), "{}", reminders[0]);
    assert_eq!(
        r.metrics()
            .reminders_emitted_total
            .with_label_values(&["token-budget", "warn"])
            .get(),
        1
    );
}

#[tokio::test]
async fn pruning_removes_only_usage_older_than_48h_and_expired_reservations() {
    let db = fresh_db("agents_prune").await;
    let admin = db.admin().await;
    let (llm, _model) = fake_llm(Mode::Stop, 10, Duration::ZERO).await;
    insert_usage(&admin, "u1", "a1", 1, "49 hours").await;
    insert_usage(&admin, "u1", "a1", 2, "48 hours 1 minute").await;
    insert_usage(&admin, "u1", "a1", 4, "47 hours 59 minutes").await;
    insert_usage(&admin, "u1", "a1", 8, "1 hour").await;
    admin
        .execute(
            "INSERT INTO mana_ai.token_reservations (user_id, agent_id, mission_id, tokens, expires_at) VALUES
               ('u1', 'a1', 'm', 16, now() - interval '1 minute'),
               ('u1', 'a1', 'm', 32, now() + interval '10 minutes')",
            &[],
        )
        .await
        .unwrap();
    // The ops view's numbers before pruning: 24 h usage and live reservations only.
    let store = db.service_store();
    let before = store.user_budget_use("u1").await.unwrap();
    assert_eq!(before["a1"].used_24h, 8);
    assert_eq!(before["a1"].reserved, 32);
    assert_eq!(before["a1"].left(100), 60);
    assert_eq!(before["a1"].left(10), 0);
    let r = runner(&db, &llm.uri(), |_| {});
    r.tick().await;
    assert_eq!(
        usage_sum(&admin, "a1").await,
        12,
        "rows of 47 h 59 min and 1 h stay"
    );
    let reservations: Vec<i64> = admin
        .query("SELECT tokens FROM mana_ai.token_reservations", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(reservations, [32]);
    assert_eq!(store.user_budget_use("u1").await.unwrap(), before);
}

#[tokio::test]
async fn a_legacy_mission_runs_under_the_default_agent_budget() {
    let db = fresh_db("agents_legacy").await;
    let admin = db.admin().await;
    let (llm, model) = fake_llm(Mode::Stop, 300, Duration::ZERO).await;
    push(
        &admin,
        "u1",
        "aiMissions",
        "m1",
        mission("Legacy", "2026-01-05T06:00:00.000Z", None),
    )
    .await;
    insert_usage(&admin, "u1", "legacy:ai-default", 1_000, "2 hours").await;
    let r = runner(&db, &llm.uri(), |c| {
        c.default_agent_tokens_per_day = Some(1_000)
    });
    let stats = r.tick().await;
    assert_eq!(stats.skipped, 1, "{stats:?}");
    assert_eq!(decisions(&r, "skipped-budget"), 1);
    assert_eq!(model.calls.load(Ordering::SeqCst), 0);
    // Budget frees up: the mission runs and books its usage to the default agent.
    admin
        .execute("DELETE FROM mana_ai.token_usage", &[])
        .await
        .unwrap();
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    assert_eq!(usage_sum(&admin, "legacy:ai-default").await, 300);
    let actor: Value = admin
        .query_one(
            "SELECT actor FROM sync_changes WHERE client_id = 'mana-ai-runner'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(actor["principalId"], "legacy:ai-default");
    assert_eq!(actor["displayName"], "Mana");
}

#[tokio::test]
async fn concurrent_reservations_overshoot_the_cap_by_less_than_one_estimate() {
    use mana_ai_store::{Reservation, ReserveRequest};
    let db = fresh_db("agents_reserve").await;
    let store = db.service_store();
    // 20 calls race for a cap of 1000 with estimates of 300: 0, 300, 600 and 900 are
    // below the cap when checked, so exactly four are granted (1200 in total).
    let tries = (0..20).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .reserve_tokens(&ReserveRequest {
                    user_id: "u1",
                    agent_id: "a1",
                    mission_id: "m",
                    cap: 1_000,
                    estimate: 300,
                    ttl: Duration::from_secs(60),
                })
                .await
                .unwrap()
        })
    });
    let results: Vec<Reservation> = futures::future::join_all(tries)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let granted: Vec<i64> = results
        .iter()
        .filter_map(|r| match r {
            Reservation::Granted { id } => Some(*id),
            Reservation::Denied { .. } => None,
        })
        .collect();
    assert_eq!(granted.len(), 4, "{results:?}");
    let used = store.agent_budget_use("u1", "a1").await.unwrap();
    assert_eq!(used.reserved, 1_200);
    // Settling replaces a reservation by the real usage; other agents are unaffected.
    store
        .settle_tokens(Some(granted[0]), "u1", "a1", "m", 100)
        .await
        .unwrap();
    let used = store.agent_budget_use("u1", "a1").await.unwrap();
    assert_eq!((used.used_24h, used.reserved), (100, 900));
    assert_eq!(
        store
            .agent_budget_use("u1", "a2")
            .await
            .unwrap()
            .committed(),
        0
    );
    // An abandoned reservation is booked at its estimate, once.
    assert_eq!(
        store.book_abandoned_reservation(granted[1]).await.unwrap(),
        300
    );
    assert_eq!(
        store.book_abandoned_reservation(granted[1]).await.unwrap(),
        0
    );
    let used = store.agent_budget_use("u1", "a1").await.unwrap();
    assert_eq!((used.used_24h, used.reserved), (400, 600));
    // A zero cap is always denied.
    let zero = store
        .reserve_tokens(&ReserveRequest {
            user_id: "u9",
            agent_id: "a9",
            mission_id: "m",
            cap: 0,
            estimate: 1,
            ttl: Duration::from_secs(60),
        })
        .await
        .unwrap();
    assert_eq!(zero, Reservation::Denied { committed: 0 });
}
