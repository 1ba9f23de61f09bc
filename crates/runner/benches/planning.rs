//! Planning benchmark (issue 3): how long a tick takes to plan and write back many due
//! missions against a slow fake LLM, and what one mission costs apart from the LLM.
//!
//! Run with `cargo bench --workspace --bench planning`. Without `--bench` on the command
//! line (as under `cargo test --benches`) it runs a small smoke version so the code
//! stays exercised without the full cost.
//! `PLANNING_BENCH_PART=throughput|sweep|non-llm|native|tracing` runs one part only.
//!
//! Parts:
//! 1. Throughput: N due missions, a fake OpenAI-compatible server answering after
//!    200 ms (first request of a mission: one valid `create_task` call; second: stop),
//!    so one mission costs 400 ms of LLM time. Reports the tick's wall time, missions
//!    written and per-mission latency (claim → write-back, from `mana_ai.mission_runs`).
//!    Variants: one mission per user, five per user without agents (the default
//!    agent's per-user limit of 1 applies), five per user with agents.
//! 2. Sweep: `max_concurrent_plans` × DB pool size, to find the bottleneck.
//! 3. Non-LLM work per mission: the real mission path (`Runner::run_mission`: gates,
//!    claim, inputs, research, prompt, the planning loop with validation, the budget
//!    bookings, the write-back) against an instant in-process LLM, one mission at a time,
//!    timed per mission (wall time and this thread's CPU time, which leaves out the
//!    database's work); the DB write-back (`Store::write_back` after `Store::claim_run`)
//!    timed on its own; and the whole pipeline through HTTP and PostgreSQL with a 0 ms
//!    fake at concurrency 1.
//! 4. Native throughput (issue 17): N due missions (one per user) planned by full ticks
//!    through the real mission path with the in-process zero-latency LLM, at several
//!    concurrencies and pool sizes: missions per second on this host, and CPU per mission
//!    split into the runner process (`/proc/self/stat`) and the PostgreSQL cluster (its
//!    postmaster and backends, from `/proc`).
//! 5. Tracing overhead: the real mission path of part 3, first with no trace exporter,
//!    then with the OTLP/HTTP exporter of `mana-ai-telemetry` on (always sampled, batch
//!    every 200 ms, to a local sink that accepts the export). Compares the per-mission wall
//!    time and the runner thread's CPU time (the exporter's own thread is not included).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mana_ai_core::catalog::{function_specs, Catalog};
use mana_ai_core::chat::{ChatRequest, ChatResponse, LlmClient, LlmError, Role, ToolCall, Usage};
use mana_ai_core::iso::{parse_iso, to_iso_ms};
use mana_ai_core::iterations::HistoryLimits;
use mana_ai_core::plan::{build_iteration, iteration_id_for, run_planner, PlannerInput};
use mana_ai_core::policy::{filter_offered, AgentPolicy};
use mana_ai_core::records::MissionView;
use mana_ai_llm::{HttpLlmClient, HttpLlmConfig};
use mana_ai_runner::mission::OfferedTools;
use mana_ai_runner::{
    Metrics, MissionOutcome, Runner, RunnerConfig, RunnerDeps, SystemClock, TickStats,
};
use mana_ai_store::testkit::{fresh_db, TestDb};
use mana_ai_store::{
    AgentSlot, Claim, ClaimRequest, DueKey, Loaded, RefreshOptions, Store, StoreConfig, WriteBack,
    WriteOutcome, WritePath,
};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const DUE_AT: &str = "2026-01-05T06:00:00.000Z";
const TOOL_ARGS: &str = r#"{"title":"Einkaufen","priority":"high"}"#;

// ---------------------------------------------------------------------------------------
// Fake LLMs
// ---------------------------------------------------------------------------------------

/// True when the conversation already holds a tool result, i.e. this is the second
/// request of a mission run. Decided per request, so concurrent missions never share
/// a script position.
fn is_follow_up(body: &Value) -> bool {
    body["messages"]
        .as_array()
        .is_some_and(|ms| ms.iter().any(|m| m["role"] == "tool"))
}

/// The HTTP fake: one valid tool call first, then a stop, each after `delay`.
struct TwoStep {
    delay: Duration,
}

impl Respond for TwoStep {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let reply = if is_follow_up(&body) {
            json!({
                "choices": [{"message": {"role": "assistant", "content": "Einkauf als Aufgabe vorgeschlagen."},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 150, "completion_tokens": 10, "total_tokens": 160}
            })
        } else {
            json!({
                "choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_0", "type": "function",
                     "function": {"name": "create_task", "arguments": TOOL_ARGS}}]},
                             "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
            })
        };
        ResponseTemplate::new(200)
            .set_body_json(reply)
            .set_delay(self.delay)
    }
}

async fn fake_llm(delay: Duration) -> MockServer {
    let server = MockServer::builder()
        .disable_request_recording()
        .start()
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(TwoStep { delay })
        .mount(&server)
        .await;
    server
}

/// The in-process fake for the core measurement: answers instantly, same script.
struct InstantLlm;

#[async_trait::async_trait]
impl LlmClient for InstantLlm {
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let follow_up = request.messages.iter().any(|m| m.role == Role::Tool);
        Ok(if follow_up {
            ChatResponse {
                content: Some("Einkauf als Aufgabe vorgeschlagen.".into()),
                tool_calls: Vec::new(),
                finish_reason: Some("stop".into()),
                usage: Usage {
                    prompt_tokens: 150,
                    completion_tokens: 10,
                    total_tokens: 160,
                },
            }
        } else {
            ChatResponse {
                content: None,
                tool_calls: vec![ToolCall {
                    id: "call_0".into(),
                    name: "create_task".into(),
                    arguments: TOOL_ARGS.into(),
                }],
                finish_reason: Some("tool_calls".into()),
                usage: Usage {
                    prompt_tokens: 100,
                    completion_tokens: 20,
                    total_tokens: 120,
                },
            }
        })
    }
}

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

/// Which missions a scenario seeds.
#[derive(Clone, Copy)]
struct Shape {
    missions: usize,
    users: usize,
    with_agents: bool,
}

/// Earlier iterations every seeded mission carries (none for the throughput parts).
type History<'a> = &'a [Value];

fn mission_record(agent: Option<&str>, iterations: Vec<Value>) -> Value {
    let mut m = json!({
        "title": "Wochenplan",
        "conceptMarkdown": "Plane die Woche: Einkäufe, Termine, offene Aufgaben.",
        "objective": "Schlage die Aufgaben für heute vor",
        "state": "active", "nextRunAt": DUE_AT,
        "cadence": {"kind": "interval", "everyMinutes": 60},
        "inputs": [], "iterations": iterations
    });
    if let Some(a) = agent {
        m["agentId"] = json!(a);
    }
    m
}

fn user_id(i: usize) -> String {
    format!("user-{i:05}")
}

fn agent_id(u: usize) -> String {
    format!("agent-{u:05}")
}

/// Inserts the scenario's rows into `sync_changes` (one statement per table).
async fn seed(admin: &tokio_postgres::Client, shape: Shape, history: History<'_>) {
    let insert = "INSERT INTO sync_changes
                    (app_id, table_name, record_id, user_id, op, data, field_meta, client_id)
                  SELECT 'ai', $1, r, u, 'insert', d, '{}', 'webapp'
                    FROM unnest($2::text[], $3::text[], $4::jsonb[]) AS t(r, u, d)";
    if shape.with_agents {
        let per_user = shape.missions.div_ceil(shape.users) as u64;
        let (mut ids, mut users, mut data) = (Vec::new(), Vec::new(), Vec::new());
        for u in 0..shape.users {
            ids.push(agent_id(u));
            users.push(user_id(u));
            data.push(json!({
                "name": "Planer", "role": "Organisiert den Alltag", "state": "active",
                "maxConcurrentMissions": per_user, "maxTokensPerDay": 1_000_000,
                "policy": {"tools": {}, "defaultForAi": "propose"}
            }));
        }
        admin
            .execute(insert, &[&"agents", &ids, &users, &data])
            .await
            .expect("seed agents");
    }
    let (mut ids, mut users, mut data) = (Vec::new(), Vec::new(), Vec::new());
    for m in 0..shape.missions {
        let u = m % shape.users;
        let agent = shape.with_agents.then(|| agent_id(u));
        ids.push(format!("mission-{m:05}"));
        users.push(user_id(u));
        data.push(mission_record(agent.as_deref(), history.to_vec()));
    }
    admin
        .execute(insert, &[&"aiMissions", &ids, &users, &data])
        .await
        .expect("seed missions");
}

fn runner(store: Store, llm_url: &str, tweak: impl FnOnce(&mut RunnerConfig)) -> Runner {
    let mut lc = HttpLlmConfig::new(llm_url, "bench-key");
    lc.max_attempts = 1;
    lc.call_deadline = Duration::from_secs(30);
    let llm: Arc<dyn LlmClient> = Arc::new(HttpLlmClient::new(lc).expect("llm client"));
    runner_with(store, llm, tweak)
}

fn runner_with(
    store: Store,
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
            store,
            metrics: Metrics::new(),
            llm,
            clock: Arc::new(SystemClock),
        },
        cfg,
    )
}

fn store_with_pool(db: &TestDb, pool: usize) -> Store {
    let mut cfg = StoreConfig::new(db.service_url.clone());
    cfg.max_connections = pool;
    Store::connect(&cfg).expect("service pool")
}

// ---------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------

/// Nearest-rank percentile of an ascending slice (`q` in 0..=100).
fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// CPU time the calling thread has run, in ms (`/proc/thread-self/schedstat`, first
/// field, nanoseconds), so the core measurement can be read apart from waiting for a
/// core on a busy host. `None` where the file does not exist.
fn thread_cpu_ms() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e6)
}

/// The host's 1-minute load average, to judge how contended a measurement was.
fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Per-run latencies (claim → write-back, ms) of every closed run, ascending.
async fn run_latencies(admin: &tokio_postgres::Client) -> Vec<f64> {
    let rows = admin
        .query(
            "SELECT (extract(epoch FROM finished_at - started_at) * 1000)::float8
               FROM mana_ai.mission_runs WHERE finished_at IS NOT NULL",
            &[],
        )
        .await
        .expect("run latencies");
    sorted(rows.iter().map(|r| r.get::<_, f64>(0)).collect())
}

async fn iteration_rows(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM sync_changes WHERE client_id = 'mana-ai-runner'",
            &[],
        )
        .await
        .expect("count iteration rows")
        .get(0)
}

// ---------------------------------------------------------------------------------------
// Part 1 and 2: throughput
// ---------------------------------------------------------------------------------------

struct Throughput {
    refresh_ms: f64,
    ticks: usize,
    first_tick: TickStats,
    wall_ms: f64,
    written: i64,
    p50: f64,
    p95: f64,
    max: f64,
}

/// Folds the whole seeded log into snapshots (no safety margin), as a first pass would.
async fn initial_refresh(store: &Store) {
    store
        .refresh_snapshots(RefreshOptions {
            batch_rows: 5_000,
            safety_margin: Duration::ZERO,
        })
        .await
        .expect("initial refresh");
}

/// Seeds a fresh DB, folds the log into snapshots, then ticks until nothing is due
/// (at most `max_ticks`). Wall time covers the ticks only.
async fn throughput(
    label: &str,
    shape: Shape,
    llm_delay: Duration,
    pool: usize,
    tweak: impl FnOnce(&mut RunnerConfig),
    max_ticks: usize,
) -> Throughput {
    let db = fresh_db("bench_plan").await;
    let admin = db.admin().await;
    seed(&admin, shape, &[]).await;
    let llm = fake_llm(llm_delay).await;
    let r = runner(store_with_pool(&db, pool), &llm.uri(), tweak);
    let t = Instant::now();
    initial_refresh(r.store()).await;
    let refresh_ms = ms(t.elapsed());

    let t = Instant::now();
    let mut ticks = 0;
    let mut first_tick = None;
    loop {
        let stats = r.tick().await;
        ticks += 1;
        assert!(
            stats.failed == 0 && stats.errors.is_empty(),
            "{label}: tick {ticks} had failures: {:?}",
            &stats.errors[..stats.errors.len().min(5)]
        );
        let done = stats.due_mission_count == 0 || ticks >= max_ticks;
        first_tick.get_or_insert(stats);
        if done {
            break;
        }
    }
    let wall_ms = ms(t.elapsed());
    let written = iteration_rows(&admin).await;
    let lat = run_latencies(&admin).await;
    Throughput {
        refresh_ms,
        ticks,
        first_tick: first_tick.expect("at least one tick ran"),
        wall_ms,
        written,
        p50: pct(&lat, 50.0),
        p95: pct(&lat, 95.0),
        max: pct(&lat, 100.0),
    }
}

fn print_throughput(label: &str, t: &Throughput) {
    println!(
        "{label:<44} | {:>7.0} | {:>5} | {:>9.0} | {:>8.0} | {:>7} | {:>5.0} | {:>5.0} | {:>5.0}",
        t.refresh_ms,
        t.ticks,
        t.first_tick.duration_ms as f64,
        t.wall_ms,
        t.written,
        t.p50,
        t.p95,
        t.max
    );
}

fn throughput_header() {
    println!(
        "{:<44} | refresh | ticks | tick1 ms  | total ms | written | p50ms | p95ms | maxms",
        "scenario"
    );
}

// ---------------------------------------------------------------------------------------
// Part 3: non-LLM work
// ---------------------------------------------------------------------------------------

/// A mission with three earlier iterations (what the prompt shows at most).
async fn mission_with_history() -> Value {
    let policy = AgentPolicy::from_value(&json!({"tools": {}, "defaultForAi": "propose"}));
    let bare = mission_record(Some("agent-00000"), Vec::new());
    let catalog = Catalog::builtin();
    let server = catalog.server_tools();
    let offered = filter_offered(&server, Some(&policy));
    let validator = OfferedTools::new(offered.clone());
    let input = PlannerInput::new("s", "u", function_specs(&offered), &validator);
    let outcome = run_planner(&InstantLlm, input)
        .await
        .expect("instant planner run");
    let history: Vec<Value> = (0..3)
        .map(|i| build_iteration(&format!("earlier-{i}"), &outcome, Utc::now()))
        .collect();
    let mut m = bare;
    m["iterations"] = Value::Array(history);
    m
}

/// The real mission path, one mission at a time: `n` seeded missions (with agents and
/// three earlier iterations), each run through `Runner::run_mission` against the instant
/// in-process LLM. Returns the per-mission wall times (ms, ascending) and the mean CPU
/// time of this thread per mission (ms): the runner's own work, without the database's.
/// The CPU clock ticks too coarsely for single runs, so only the total is read.
async fn non_llm_mission_path(n: usize) -> (Vec<f64>, Option<f64>) {
    let db = fresh_db("bench_path").await;
    let admin = db.admin().await;
    let history = mission_with_history().await["iterations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let shape = Shape {
        missions: n,
        users: n.min(200),
        with_agents: true,
    };
    seed(&admin, shape, &history).await;
    let r = runner_with(db.service_store(), Arc::new(InstantLlm), |_| {});
    initial_refresh(r.store()).await;
    let keys = r
        .store()
        .list_due_keys(Utc::now(), n as i64)
        .await
        .expect("due missions");
    assert_eq!(keys.len(), n, "every seeded mission is due");
    let mut wall = Vec::with_capacity(n);
    let mut cpu_total = Some(0.0);
    for key in &keys {
        let due = r
            .store()
            .load_due_mission(key)
            .await
            .expect("load mission")
            .expect("still due");
        let cpu_before = thread_cpu_ms();
        let t = Instant::now();
        let outcome = r.run_mission(due).await;
        wall.push(ms(t.elapsed()));
        cpu_total = cpu_total
            .zip(cpu_before.zip(thread_cpu_ms()))
            .map(|(sum, (before, after))| sum + (after - before));
        assert!(
            matches!(outcome, MissionOutcome::Planned { steps: 1 }),
            "the fake's call must be accepted and written: {outcome:?}"
        );
    }
    assert_eq!(iteration_rows(&admin).await, n as i64);
    (sorted(wall), cpu_total.map(|c| c / n as f64))
}

/// `claim_run` then `write_back` for `n` runs, one at a time; both timed separately.
/// `changed`: a device row for each mission lands after its snapshot was loaded, so every
/// write-back takes the merged path (read and merge inside the transaction); otherwise
/// nothing changed since the load and every write-back is the direct one-statement write.
async fn write_back_costs(n: usize, changed: bool) -> (Vec<f64>, Vec<f64>) {
    let db = fresh_db("bench_wb").await;
    let store = db.service_store();
    let admin = db.admin().await;
    let record = mission_with_history().await;
    let due: DateTime<Utc> = parse_iso(DUE_AT).expect("valid due time");
    // Representative payload: the write-back merges one iteration into the mission's
    // history (three earlier iterations), as the runner loaded it from its snapshot.
    let mission = MissionView::from_record("user-00000", &record);
    let shape = Shape {
        missions: n,
        users: n.min(200),
        with_agents: false,
    };
    seed(&admin, shape, &mission.iterations).await;
    initial_refresh(&store).await;
    let mut claims = Vec::with_capacity(n);
    let mut writes = Vec::with_capacity(n);
    let mut paths = (0, 0);
    for i in 0..n {
        let user = user_id(i % 200);
        let mission_id = format!("mission-{i:05}");
        let iteration_id = iteration_id_for(&mission_id, DUE_AT);
        let loaded = store
            .load_due_mission(&DueKey {
                user_id: user.clone(),
                mission_id: mission_id.clone(),
                next_run_at: due,
            })
            .await
            .expect("load mission")
            .expect("due");
        if changed {
            admin
                .execute(
                    "INSERT INTO sync_changes
                       (app_id, table_name, record_id, user_id, op, data, field_meta, client_id)
                     VALUES ('ai', 'aiMissions', $1, $2, 'update', '{\"title\": \"x\"}', '{}',
                             'webapp')",
                    &[&mission_id, &user],
                )
                .await
                .expect("device edit");
        }
        let t = Instant::now();
        let claim = store
            .claim_run(&ClaimRequest {
                user_id: &user,
                mission_id: &mission_id,
                due_at: due,
                iteration_id: &iteration_id,
                runner_id: "bench-runner",
                lease: Duration::from_secs(360),
                slot: AgentSlot {
                    agent_id: "agent-bench".into(),
                    max_concurrent: 1,
                },
            })
            .await
            .expect("claim");
        claims.push(ms(t.elapsed()));
        assert_eq!(claim, Claim::Claimed);
        let now_iso = to_iso_ms(Utc::now());
        let iteration = json!({"id": iteration_id, "source": "server",
                               "overallStatus": "awaiting-review",
                               "startedAt": now_iso, "finishedAt": now_iso, "plan": []});
        let actor = json!({"kind": "ai", "principalId": "agent-bench", "displayName": "Planer",
                           "missionId": mission_id, "iterationId": iteration_id,
                           "rationale": mission.objective});
        let t = Instant::now();
        let (outcome, path) = store
            .write_back_with_path(&WriteBack {
                user_id: &user,
                mission_id: &mission_id,
                due_at: due,
                runner_id: "bench-runner",
                iteration: &iteration,
                next_run_at: Some(Utc::now()),
                actor: &actor,
                history: HistoryLimits::new(mana_ai_runner::defaults::ITERATION_HISTORY),
                failed: false,
                error: None,
                space_id: None,
                loaded: Some(Loaded {
                    record: &loaded.record,
                    version: loaded.version,
                }),
            })
            .await
            .expect("write-back");
        writes.push(ms(t.elapsed()));
        assert_eq!(outcome, WriteOutcome::Written);
        match path {
            WritePath::Direct => paths.0 += 1,
            WritePath::Merged => paths.1 += 1,
        }
    }
    assert_eq!(iteration_rows(&admin).await, n as i64);
    let expected = if changed { (0, n) } else { (n, 0) };
    assert_eq!(paths, expected, "(direct, merged) write-backs");
    (sorted(claims), sorted(writes))
}

fn print_dist(label: &str, v: &[f64]) {
    println!(
        "{label:<52} | n={:<5} | p50 {:>7.3} ms | p95 {:>7.3} ms | max {:>7.3} ms",
        v.len(),
        pct(v, 50.0),
        pct(v, 95.0),
        pct(v, 100.0)
    );
}

// ---------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(bench(full));
}

/// Whether `part` is selected by `PLANNING_BENCH_PART` (unset or empty: every part).
fn part_selected(part: &str) -> bool {
    match std::env::var("PLANNING_BENCH_PART") {
        Ok(p) if !p.is_empty() => p == part,
        _ => true,
    }
}

async fn bench(full: bool) {
    let n = if full { 1_000 } else { 50 };
    let users = if full { 200 } else { 10 };
    let delay = Duration::from_millis(200);
    let defaults = RunnerConfig::default();
    println!(
        "planning benchmark ({} mode): {n} missions, fake LLM {} ms per call, 2 calls per mission; \
         default max_concurrent_plans = {}, default pool = {}; host cores = {}",
        if full { "full" } else { "smoke" },
        delay.as_millis(),
        defaults.max_concurrent_plans,
        StoreConfig::new("").max_connections,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if part_selected("throughput") {
        throughput_part(n, users, delay).await;
    }
    if full && part_selected("sweep") {
        sweep_part(n, delay).await;
    }
    if part_selected("non-llm") {
        non_llm_part(full).await;
    }
    if part_selected("native") {
        native_part(full).await;
    }
    // Last: it installs the process-wide trace subscriber.
    if part_selected("tracing") {
        tracing_part(full).await;
    }
}

async fn native_part(full: bool) {
    println!();
    println!("## Native zero-latency LLM: missions per second (full ticks, real mission path)");
    println!("(load average at start: {})", load_avg());
    let n = if full { 2_000 } else { 50 };
    println!(
        "{:<28} | {:>6} | {:>9} | {:>10} | {:>14} | {:>12}",
        "concurrency / pool", "missions", "wall ms", "missions/s", "runner CPU/m ms", "PG CPU/m ms"
    );
    for (concurrency, pool) in [(8, 8), (32, 8), (64, 8), (64, 16)] {
        let db = fresh_db("bench_native").await;
        let admin = db.admin().await;
        let shape = Shape {
            missions: n,
            users: n,
            with_agents: false,
        };
        seed(&admin, shape, &[]).await;
        let r = runner_with(store_with_pool(&db, pool), Arc::new(InstantLlm), |c| {
            c.max_concurrent_plans = concurrency;
            c.due_limit = n as i64;
        });
        initial_refresh(r.store()).await;
        let pg_before = postgres_cpu_ms(&admin).await;
        let cpu_before = process_cpu_ms();
        let t = Instant::now();
        let stats = r.tick().await;
        let wall = ms(t.elapsed());
        let runner_cpu = process_cpu_ms() - cpu_before;
        let pg_cpu = postgres_cpu_ms(&admin).await - pg_before;
        assert_eq!(
            stats.plans_written_back,
            n,
            "every mission is planned in one tick: {:?}",
            &stats.errors[..stats.errors.len().min(3)]
        );
        println!(
            "{:<28} | {:>6} | {:>9.0} | {:>10.0} | {:>14.3} | {:>12.3}",
            format!("{concurrency} / {pool}"),
            n,
            wall,
            n as f64 / (wall / 1000.0),
            runner_cpu / n as f64,
            pg_cpu / n as f64
        );
    }
    println!("(target: >= 1,000 missions/s on 2 cores; CPU clocks tick at 10 ms)");
}

/// CPU time (user + system) of this process so far, in ms.
fn process_cpu_ms() -> f64 {
    proc_stat_cpu_ms("self").map_or(f64::NAN, |(own, _, _)| own)
}

/// `(own CPU, reaped children's CPU, parent pid)` of a process from `/proc/<pid>/stat`, ms.
fn proc_stat_cpu_ms(pid: &str) -> Option<(f64, f64, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    let tick_ms = 1000.0 / 100.0; // USER_HZ is 100 on Linux
    let own = (num(11)? + num(12)?) * tick_ms;
    let children = (num(13)? + num(14)?) * tick_ms;
    Some((own, children, num(1)? as u32))
}

/// CPU time of the PostgreSQL cluster behind `admin` (its postmaster, live children and
/// reaped children), in ms.
async fn postgres_cpu_ms(admin: &tokio_postgres::Client) -> f64 {
    let backend: i32 = admin
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("backend pid")
        .get(0);
    let Some((_, _, postmaster)) = proc_stat_cpu_ms(&backend.to_string()) else {
        return f64::NAN;
    };
    let mut total =
        proc_stat_cpu_ms(&postmaster.to_string()).map_or(0.0, |(own, reaped, _)| own + reaped);
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            if let Some((own, _, parent)) = proc_stat_cpu_ms(pid) {
                if parent == postmaster {
                    total += own;
                }
            }
        }
    }
    total
}

async fn tracing_part(full: bool) {
    use mana_ai_telemetry::{OtelConfig, SamplerChoice};
    println!();
    println!("## Tracing overhead (real mission path, in-process 0 ms LLM)");
    println!("(load average at start: {})", load_avg());
    let n = if full { 300 } else { 20 };
    // A warm-up run, then the measured run without an exporter.
    let _ = non_llm_mission_path(n).await;
    let (off, off_cpu) = non_llm_mission_path(n).await;
    let sink = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&sink)
        .await;
    let cfg = OtelConfig {
        traces_url: Some(format!("{}/v1/traces", sink.uri())),
        headers: Vec::new(),
        service_name: "mana-ai-bench".into(),
        sampler: SamplerChoice::AlwaysOn,
        batch_delay: Duration::from_millis(200),
        export_timeout: Duration::from_secs(10),
    };
    let telemetry =
        mana_ai_telemetry::init(false, Some("warn"), &cfg).expect("trace pipeline builds");
    let (on, on_cpu) = non_llm_mission_path(n).await;
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .expect("flush");
    let exports = sink.received_requests().await.map_or(0, |r| r.len());
    assert!(exports > 0, "the exporter sent the spans");
    print_dist("mission run, exporter off", &off);
    print_dist("mission run, exporter on", &on);
    let (off_cpu, on_cpu) = (off_cpu.unwrap_or(f64::NAN), on_cpu.unwrap_or(f64::NAN));
    let wall_growth = pct(&on, 50.0) / pct(&off, 50.0) - 1.0;
    let cpu_growth = on_cpu / off_cpu - 1.0;
    println!(
        "runner thread CPU per mission: off {off_cpu:.3} ms, on {on_cpu:.3} ms ({:+.1} %); \
         wall p50 {:+.1} %; {exports} export requests; target <= +10 %: {}",
        cpu_growth * 100.0,
        wall_growth * 100.0,
        if cpu_growth <= 0.10 && wall_growth <= 0.10 {
            "OK"
        } else {
            "MISSED"
        }
    );
}

async fn throughput_part(n: usize, users: usize, delay: Duration) {
    println!();
    println!("## Throughput (default RunnerConfig, pool 8)");
    println!("(load average at start: {})", load_avg());
    throughput_header();

    let one_per_user = Shape {
        missions: n,
        users: n,
        with_agents: false,
    };
    let t = throughput(
        "1 mission/user, no agents",
        one_per_user,
        delay,
        8,
        |_| {},
        1,
    )
    .await;
    print_throughput("1 mission/user, no agents", &t);
    assert_eq!(t.written, n as i64, "every mission written in one tick");

    let agents = Shape {
        missions: n,
        users,
        with_agents: true,
    };
    let label = format!("{} missions/user, agents (limit {})", n / users, n / users);
    let t = throughput(&label, agents, delay, 8, |_| {}, 1).await;
    print_throughput(&label, &t);
    assert_eq!(t.written, n as i64, "every mission written in one tick");

    let no_agents = Shape {
        missions: n,
        users,
        with_agents: false,
    };
    let label = format!("{} missions/user, no agents (default limit 1)", n / users);
    let t = throughput(&label, no_agents, delay, 8, |_| {}, 20).await;
    print_throughput(&label, &t);
    println!(
        "    first tick: due {}, written {}, skipped (agent busy) {}",
        t.first_tick.due_mission_count, t.first_tick.plans_written_back, t.first_tick.skipped
    );
    assert_eq!(
        t.written, n as i64,
        "every mission written within the ticks"
    );
}

async fn sweep_part(n: usize, delay: Duration) {
    let one_per_user = Shape {
        missions: n,
        users: n,
        with_agents: false,
    };
    println!();
    println!("## Sweep: max_concurrent_plans x pool size (1 mission/user, no agents)");
    println!("(load average at start: {})", load_avg());
    throughput_header();
    for (conc, pool) in [
        (16, 8),
        (32, 8),
        (128, 8),
        (256, 8),
        (64, 16),
        (128, 16),
        (256, 32),
    ] {
        let label = format!("concurrency {conc}, pool {pool}");
        let t = throughput(
            &label,
            one_per_user,
            delay,
            pool,
            |c| c.max_concurrent_plans = conc,
            1,
        )
        .await;
        print_throughput(&label, &t);
    }
}

async fn non_llm_part(full: bool) {
    println!();
    println!("## Non-LLM work per mission");
    println!("(load average at start: {})", load_avg());
    let (path, path_cpu) = non_llm_mission_path(if full { 300 } else { 20 }).await;
    print_dist("mission run (real path), in-process 0 ms LLM", &path);
    if let Some(cpu) = path_cpu {
        println!(
            "{:<52} | mean {cpu:.3} ms per mission",
            "mission run, runner thread CPU time only"
        );
    }
    let (claims, writes) = write_back_costs(if full { 1_000 } else { 50 }, false).await;
    print_dist("db: claim_run (sequential)", &claims);
    print_dist("db: write_back (sequential, direct)", &writes);
    let (_, merged) = write_back_costs(if full { 1_000 } else { 50 }, true).await;
    print_dist(
        "db: write_back (sequential, mission changed: merged)",
        &merged,
    );

    // The whole pipeline with a 0 ms LLM, one mission at a time: every DB round trip
    // (agent/budget lookups, claim, token booking, write-back) and the HTTP encoding.
    let m = if full { 300 } else { 20 };
    let e2e = throughput(
        "pipeline, 0 ms LLM, concurrency 1",
        Shape {
            missions: m,
            users: m,
            with_agents: false,
        },
        Duration::ZERO,
        8,
        |c| c.max_concurrent_plans = 1,
        1,
    )
    .await;
    assert_eq!(e2e.written, m as i64);
    println!(
        "{:<52} | n={:<5} | p50 {:>7.3} ms | p95 {:>7.3} ms | max {:>7.3} ms | wall/mission {:.3} ms",
        "pipeline claim->write-back, 0 ms LLM over HTTP",
        m,
        e2e.p50,
        e2e.p95,
        e2e.max,
        e2e.wall_ms / m as f64
    );
    let cpu = path_cpu.unwrap_or(f64::NAN);
    println!();
    println!(
        "non-LLM median per mission (real path, wall): {:.3} ms; runner CPU per mission: {cpu:.3} ms (target < 2 ms): {}",
        pct(&path, 50.0),
        if cpu < 2.0 { "OK" } else { "MISSED" }
    );
}
