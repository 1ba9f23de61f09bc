//! Agents against a real PostgreSQL and a fake OpenAI-compatible server: the gates,
//! per-agent concurrency measured across two runner instances, oldest-due-first, token
//! budgets that hold under concurrency, usage of failed runs, budget reminders,
//! pruning, and the default agent's budget.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mana_ai_core::chat::{ChatRequest, ChatResponse, LlmClient, LlmError, Role};
use mana_ai_runner::budget::estimate_call_tokens;
use mana_ai_runner::testkit::{has_tool_result, FakeLlm, Reply, RunnerBuilder};
use mana_ai_runner::{Runner, RunnerConfig};
use mana_ai_store::testkit::rows::{
    agent_record, clear_token_usage, insert_reservation, insert_token_usage, mission_record,
    reservation_tokens, run_count, runner_data, runner_row_count, runner_rows, token_usage_rows,
    token_usage_sum,
};
use mana_ai_store::testkit::{fresh_db, push_agent, push_mission, TestDb};
use serde_json::{json, Value};

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
    /// First call: one tool call; every later call: a provider error (HTTP 500).
    ToolThenFail,
}

/// The fake model: answers by looking at the conversation, reporting `usage` tokens
/// per call (a tenth of them completion) after `delay`.
fn fake_llm(mode: Mode, usage: u64, delay: Duration) -> Arc<FakeLlm> {
    FakeLlm::responding(move |request| {
        let has_tool_result = has_tool_result(request);
        let completion = usage / 10;
        let reply = if has_tool_result && matches!(mode, Mode::ToolThenFail) {
            Reply::provider_error(500, "unknown", "boom")
        } else if !has_tool_result && !matches!(mode, Mode::Stop) {
            Reply::tool_calls(&[("create_task", json!({"title": "Einkaufen"}))])
                .usage(usage - completion, completion)
        } else {
            Reply::text("Fertig.").usage(usage - completion, completion)
        };
        reply.delay(delay)
    })
}

/// Wraps the fake model and measures how many *missions* have a conversation open at
/// once: a mission opens with its first call (no tool result yet) and closes when the
/// call that answers a tool result returns (or any call fails). Also records the
/// largest call estimate and the order in which missions started.
struct Probe {
    inner: Arc<FakeLlm>,
    open: Mutex<HashMap<String, ()>>,
    peak: AtomicUsize,
    max_estimate: AtomicU64,
    started: Mutex<Vec<String>>,
}

impl Probe {
    fn new(inner: Arc<FakeLlm>) -> Self {
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

fn runner(db: &TestDb, llm: Arc<dyn LlmClient>, tweak: impl FnOnce(&mut RunnerConfig)) -> Runner {
    RunnerBuilder::new(db).llm(llm).config(tweak).build()
}

// ---------------------------------------------------------------------------------
// Data helpers
// ---------------------------------------------------------------------------------

fn agent(extra: Value) -> Value {
    agent_record(extra)
}

/// An active mission due at `next`, once a day.
fn mission(title: &str, next: &str, agent: Option<&str>) -> Value {
    let mut m = mission_record(json!({
        "title": title, "conceptMarkdown": "Plan", "objective": "Propose tasks",
        "nextRunAt": next, "cadence": {"kind": "interval", "everyMinutes": 1440}
    }));
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
    runner_row_count(admin, None).await
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
    let model = fake_llm(Mode::Stop, 100, Duration::ZERO);
    let due = "2026-01-05T06:00:00.000Z";
    push_agent(&admin, "u1", "paused", agent(json!({"state": "paused"}))).await;
    push_agent(
        &admin,
        "u1",
        "archived",
        agent(json!({"state": "archived"})),
    )
    .await;
    push_agent(
        &admin,
        "u1",
        "gone",
        agent(json!({"deletedAt": "2026-01-01T00:00:00.000Z"})),
    )
    .await;
    push_agent(&admin, "u1", "broke", agent(json!({"maxTokensPerDay": 0}))).await;
    push_mission(&admin, "u1", "m-paused", mission("P", due, Some("paused"))).await;
    push_mission(
        &admin,
        "u1",
        "m-archived",
        mission("A", due, Some("archived")),
    )
    .await;
    push_mission(&admin, "u1", "m-ghost", mission("G", due, Some("ghost"))).await;
    push_mission(&admin, "u1", "m-gone", mission("D", due, Some("gone"))).await;
    push_mission(&admin, "u1", "m-broke", mission("B", due, Some("broke"))).await;
    let r = runner(&db, model.clone(), |_| {});
    let stats = r.tick().await;
    assert_eq!(stats.due_mission_count, 5, "{stats:?}");
    assert_eq!(stats.skipped, 5, "{stats:?}");
    assert_eq!(decisions(&r, "skipped-paused"), 1);
    assert_eq!(decisions(&r, "skipped-archived"), 1);
    assert_eq!(decisions(&r, "skipped-missing-agent"), 2);
    assert_eq!(decisions(&r, "skipped-budget"), 1);
    assert_eq!(decisions(&r, "ran"), 0);
    assert_eq!(model.calls(), 0, "no LLM call for a gated mission");
    assert_eq!(written(&admin).await, 0);
    let runs = run_count(&admin, None).await;
    assert_eq!(runs, 0, "gated missions never claim");
}

#[tokio::test]
async fn two_runners_never_run_more_than_max_concurrent_missions_of_one_agent() {
    let db = fresh_db("agents_conc").await;
    let admin = db.admin().await;
    let model = fake_llm(Mode::ToolThenStop, 100, Duration::from_millis(150));
    push_agent(
        &admin,
        "u1",
        "a1",
        agent(json!({"maxConcurrentMissions": 2})),
    )
    .await;
    // Another agent of the same user is not limited by a1's slots.
    push_agent(
        &admin,
        "u1",
        "a2",
        agent(json!({"maxConcurrentMissions": 1})),
    )
    .await;
    for i in 0..6 {
        push_mission(
            &admin,
            "u1",
            &format!("m{i}"),
            mission(
                &format!("A1 mission {i}"),
                &format!("2026-01-05T06:0{i}:00.000Z"),
                Some("a1"),
            ),
        )
        .await;
    }
    let probe = Arc::new(Probe::new(model.clone()));
    let a = Arc::new(runner(&db, probe.clone(), |_| {}));
    let b = Arc::new(runner(&db, probe.clone(), |_| {}));
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
    let model = fake_llm(Mode::ToolThenStop, 100, Duration::from_millis(100));
    push_agent(
        &admin,
        "u1",
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
        push_mission(&admin, "u1", id, mission(title, next, Some("a1"))).await;
    }
    let probe = Arc::new(Probe::new(model.clone()));
    let a = Arc::new(runner(&db, probe.clone(), |_| {}));
    let b = Arc::new(runner(&db, probe.clone(), |_| {}));
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
    let model = fake_llm(Mode::Stop, 1_000, Duration::from_millis(300));
    push_agent(
        &admin,
        "u1",
        "a1",
        agent(json!({"maxConcurrentMissions": 10, "maxTokensPerDay": 2000})),
    )
    .await;
    for i in 0..10 {
        push_mission(
            &admin,
            "u1",
            &format!("m{i}"),
            mission(
                &format!("Budget mission {i}"),
                "2026-01-05T06:00:00.000Z",
                Some("a1"),
            ),
        )
        .await;
    }
    let probe = Arc::new(Probe::new(model.clone()));
    let a = Arc::new(runner(&db, probe.clone(), |_| {}));
    let b = Arc::new(runner(&db, probe.clone(), |_| {}));
    for _ in 0..3 {
        let (sa, sb) = tokio::join!(a.tick(), b.tick());
        assert!(
            sa.errors.is_empty() && sb.errors.is_empty(),
            "{sa:?} {sb:?}"
        );
    }
    let spent = token_usage_sum(&admin, "a1").await;
    let max_estimate = probe.max_estimate.load(Ordering::SeqCst) as i64;
    assert!(max_estimate >= 1_024);
    assert!(
        spent <= 2_000 + max_estimate,
        "spent {spent}, estimate {max_estimate}"
    );
    // With real usage below the estimate the cap is not even overshot.
    assert_eq!(spent, 2_000);
    assert_eq!(model.calls(), 2);
    assert_eq!(written(&admin).await, 2);
    let skipped = decisions(&a, "skipped-budget") + decisions(&b, "skipped-budget");
    assert!(skipped >= 8, "{skipped}");
    // Nothing is left reserved, no claim is left behind, the metric matches the table.
    let reserved = reservation_tokens(&admin).await.len();
    assert_eq!(reserved, 0);
    let running = run_count(&admin, Some("running")).await;
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
    let model = fake_llm(Mode::ToolThenStop, 5_000, Duration::ZERO);
    push_agent(&admin, "u1", "a1", agent(json!({"maxTokensPerDay": 5000}))).await;
    push_mission(
        &admin,
        "u1",
        "m1",
        mission("Mid", "2026-01-05T06:00:00.000Z", Some("a1")),
    )
    .await;
    let r = runner(&db, model.clone(), |_| {});
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    assert_eq!(model.calls(), 1);
    let data = runner_data(&admin, "m1").await.remove(0);
    let it = &data["iterations"][0];
    assert_eq!(it["overallStatus"], "awaiting-review");
    assert_eq!(it["plan"].as_array().map(Vec::len), Some(1));
    assert_eq!(token_usage_sum(&admin, "a1").await, 5_000);
}

#[tokio::test]
async fn usage_of_a_failed_run_counts() {
    let db = fresh_db("agents_failed").await;
    let admin = db.admin().await;
    let model = fake_llm(Mode::ToolThenFail, 700, Duration::ZERO);
    push_agent(
        &admin,
        "u1",
        "a1",
        agent(json!({"maxTokensPerDay": 100000})),
    )
    .await;
    push_mission(
        &admin,
        "u1",
        "m1",
        mission("Fail", "2026-01-05T06:00:00.000Z", Some("a1")),
    )
    .await;
    let r = runner(&db, model.clone(), |_| {});
    let stats = r.tick().await;
    assert_eq!(stats.failed, 1, "{stats:?}");
    assert_eq!(model.calls(), 2);
    // The answered first call counts; the failed HTTP call reported nothing and books 0.
    assert_eq!(token_usage_sum(&admin, "a1").await, 700);
    let rows = token_usage_rows(&admin).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "u1");
    assert_eq!(rows[0].1, "a1");
    assert_eq!(rows[0].2, "m1");
    assert_eq!(rows[0].3, 700);
    assert_eq!(
        r.metrics()
            .tokens_used_total
            .with_label_values(&["a1"])
            .get(),
        700
    );
    let reserved = reservation_tokens(&admin).await.len();
    assert_eq!(reserved, 0, "the failed call's reservation was released");
}

#[tokio::test]
async fn budget_reminder_at_75_percent_counts_other_runs_reservations() {
    let db = fresh_db("agents_reminder").await;
    let admin = db.admin().await;
    let model = fake_llm(Mode::Stop, 10, Duration::ZERO);
    push_agent(
        &admin,
        "u1",
        "a1",
        agent(json!({"name": "Kira", "maxTokensPerDay": 100000})),
    )
    .await;
    push_mission(
        &admin,
        "u1",
        "m1",
        mission("Remind", "2026-01-05T06:00:00.000Z", Some("a1")),
    )
    .await;
    // 50 % booked + 30 % held by another run's call in flight = 80 %.
    insert_token_usage(&admin, "u1", "a1", 50_000, "1 hour").await;
    insert_reservation(&admin, "u1", "a1", "other", 30_000, "10 minutes").await;
    let r = runner(&db, model.clone(), |_| {});
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    let bodies = model.requests();
    assert_eq!(bodies.len(), 1);
    let reminders: Vec<String> = bodies[0]
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .filter_map(|m| m.content.as_deref())
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
    let model = fake_llm(Mode::Stop, 10, Duration::ZERO);
    insert_token_usage(&admin, "u1", "a1", 1, "49 hours").await;
    insert_token_usage(&admin, "u1", "a1", 2, "48 hours 1 minute").await;
    insert_token_usage(&admin, "u1", "a1", 4, "47 hours 59 minutes").await;
    insert_token_usage(&admin, "u1", "a1", 8, "1 hour").await;
    insert_reservation(&admin, "u1", "a1", "m", 16, "-1 minute").await;
    insert_reservation(&admin, "u1", "a1", "m", 32, "10 minutes").await;
    // The ops view's numbers before pruning: 24 h usage and live reservations only.
    let store = db.service_store();
    let before = store.user_budget_use("u1").await.unwrap();
    assert_eq!(before["a1"].used_24h, 8);
    assert_eq!(before["a1"].reserved, 32);
    assert_eq!(before["a1"].left(100), 60);
    assert_eq!(before["a1"].left(10), 0);
    let r = runner(&db, model.clone(), |_| {});
    r.tick().await;
    assert_eq!(
        token_usage_sum(&admin, "a1").await,
        12,
        "rows of 47 h 59 min and 1 h stay"
    );
    let reservations = reservation_tokens(&admin).await;
    assert_eq!(reservations, [32]);
    assert_eq!(store.user_budget_use("u1").await.unwrap(), before);
}

#[tokio::test]
async fn a_legacy_mission_runs_under_the_default_agent_budget() {
    let db = fresh_db("agents_legacy").await;
    let admin = db.admin().await;
    let model = fake_llm(Mode::Stop, 300, Duration::ZERO);
    push_mission(
        &admin,
        "u1",
        "m1",
        mission("Legacy", "2026-01-05T06:00:00.000Z", None),
    )
    .await;
    insert_token_usage(&admin, "u1", "legacy:ai-default", 1_000, "2 hours").await;
    let r = runner(&db, model.clone(), |c| {
        c.default_agent_tokens_per_day = Some(1_000)
    });
    let stats = r.tick().await;
    assert_eq!(stats.skipped, 1, "{stats:?}");
    assert_eq!(decisions(&r, "skipped-budget"), 1);
    assert_eq!(model.calls(), 0);
    // Budget frees up: the mission runs and books its usage to the default agent.
    clear_token_usage(&admin).await;
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    assert_eq!(token_usage_sum(&admin, "legacy:ai-default").await, 300);
    let actor: Value = runner_rows(&admin, "m1").await[0].get("actor");
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
