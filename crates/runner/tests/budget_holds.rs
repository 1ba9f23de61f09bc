//! Budgets that hold (issue 13.5) on a real PostgreSQL: every call carries `max_tokens`
//! and reserves prompt + that bound; concurrent runs of one agent whose calls each spend
//! their whole bound overshoot `maxTokensPerDay` by at most one call; every attempt of a
//! retried call is booked; a cancelled or panicking run books its reservations instead of
//! leaving them to expire; a completed deep-research job's reported tokens are booked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mana_ai_core::chat::{LlmClient, LlmError};
use mana_ai_core::records::DEFAULT_AGENT_ID;
use mana_ai_llm::{HttpLlmClient, HttpLlmConfig};
use mana_ai_runner::budget::estimate_call_tokens;
use mana_ai_runner::testkit::{metric_value, FakeLlm, Reply, RunnerBuilder};
use mana_ai_runner::Runner;
use mana_ai_store::testkit::rows::{
    agent_record, mission_record, reservation_tokens, runner_row_count, token_usage_rows,
    token_usage_sum,
};
use mana_ai_store::testkit::{fresh_db, push_agent, push_mission, TestDb};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const DUE: &str = "2026-01-05T06:00:00.000Z";

fn mission(title: &str, agent: Option<&str>) -> Value {
    let mut m = mission_record(json!({
        "title": title, "conceptMarkdown": "Plan", "objective": "Propose tasks",
        "nextRunAt": DUE, "cadence": {"kind": "interval", "everyMinutes": 1440}
    }));
    if let Some(a) = agent {
        m["agentId"] = json!(a);
    }
    m
}

async fn one_mission(db: &TestDb, cap: u64) -> tokio_postgres::Client {
    let admin = db.admin().await;
    push_agent(
        &admin,
        "u1",
        "a1",
        agent_record(json!({"maxTokensPerDay": cap, "maxConcurrentMissions": 20})),
    )
    .await;
    push_mission(&admin, "u1", "m1", mission("Budget", Some("a1"))).await;
    admin
}

/// Polls `check` until it holds (at most 5 s).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} did not happen within 5 s");
}

#[tokio::test]
async fn every_call_carries_max_tokens_and_reserves_prompt_plus_that_bound() {
    let db = fresh_db("budget_bound").await;
    let admin = one_mission(&db, 1_000_000).await;
    // A timeout books the call's estimate: the reservation it held.
    let llm = FakeLlm::replying(Reply::error(LlmError::Timeout(1)));
    let r = RunnerBuilder::new(&db)
        .llm(llm.clone())
        .config(|c| c.max_completion_tokens = 300)
        .build();
    let stats = r.tick().await;
    assert_eq!(stats.failed, 1, "{stats:?}");
    let requests = llm.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].max_tokens, Some(300));
    let estimate = estimate_call_tokens(&requests[0]) as i64;
    let prompt_only = {
        let mut r = requests[0].clone();
        r.max_tokens = Some(0);
        estimate_call_tokens(&r) as i64
    };
    assert_eq!(estimate, prompt_only + 300);
    assert_eq!(token_usage_sum(&admin, "a1").await, estimate);
}

#[tokio::test]
async fn concurrent_runs_spending_their_whole_bound_overshoot_by_at_most_one_call() {
    let db = fresh_db("budget_concurrent").await;
    let admin = db.admin().await;
    // About three and a half calls of ~8.8k tokens (prompt with the tool specs + bound).
    const CAP: u64 = 30_000;
    const BOUND: u32 = 500;
    push_agent(
        &admin,
        "u1",
        "a1",
        agent_record(json!({"maxTokensPerDay": CAP, "maxConcurrentMissions": 20})),
    )
    .await;
    for i in 0..12 {
        push_mission(
            &admin,
            "u1",
            &format!("m{i}"),
            mission(&format!("Concurrent {i}"), Some("a1")),
        )
        .await;
    }
    // Every call reports exactly what it reserved: the prompt estimate plus the whole
    // completion bound (the worst case `max_tokens` allows).
    let largest = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&largest);
    let llm = FakeLlm::responding(move |request| {
        let estimate = estimate_call_tokens(request);
        seen.fetch_max(estimate, Ordering::SeqCst);
        let completion = u64::from(request.max_tokens.unwrap_or(0));
        Reply::text("Fertig.")
            .usage(estimate - completion, completion)
            .delay(Duration::from_millis(100))
    });
    let build = || {
        Arc::new(
            RunnerBuilder::new(&db)
                .llm(llm.clone())
                .config(|c| {
                    c.max_completion_tokens = BOUND;
                    c.max_concurrent_plans = 12;
                })
                .build(),
        )
    };
    let (a, b): (Arc<Runner>, Arc<Runner>) = (build(), build());
    for _ in 0..3 {
        let (sa, sb) = tokio::join!(a.tick(), b.tick());
        assert!(
            sa.errors.is_empty() && sb.errors.is_empty(),
            "{sa:?} {sb:?}"
        );
    }
    let spent = token_usage_sum(&admin, "a1").await as u64;
    let one_call = largest.load(Ordering::SeqCst);
    assert!(one_call > u64::from(BOUND));
    assert!(
        spent <= CAP + one_call,
        "spent {spent} > cap {CAP} + one call {one_call}"
    );
    assert!(spent >= CAP, "the budget was used: {spent}");
    assert!(reservation_tokens(&admin).await.is_empty());
    eprintln!(
        "concurrent: cap {CAP}, one call ≤ {one_call}, booked {spent}, over by {}",
        spent.saturating_sub(CAP)
    );
}

#[tokio::test]
async fn a_timed_out_call_retried_three_times_is_booked_three_times() {
    let db = fresh_db("budget_retries").await;
    let admin = one_mission(&db, 1_000_000).await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"choices":[{"message":{"content":"late"}}]}))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let mut lc = HttpLlmConfig::new(server.uri(), "k");
    lc.max_attempts = 3;
    lc.call_deadline = Duration::from_millis(200);
    lc.backoff_base = Duration::from_millis(5);
    lc.backoff_cap = Duration::from_millis(10);
    let llm: Arc<dyn LlmClient> = Arc::new(HttpLlmClient::new(lc).unwrap());
    let r = RunnerBuilder::new(&db).llm(llm).build();
    let stats = r.tick().await;
    assert_eq!(stats.failed, 1, "{stats:?}");
    let rows = token_usage_rows(&admin).await;
    assert_eq!(rows.len(), 3, "one booking per attempt: {rows:?}");
    assert!(rows.iter().all(|r| r.3 == rows[0].3 && r.3 > 1_024));
    assert!(reservation_tokens(&admin).await.is_empty());
    let m = r.metrics().render();
    assert_eq!(
        metric_value(
            &m,
            "mana_ai_llm_attempt_failures_total",
            &[("kind", "timeout")]
        ),
        Some(3.0)
    );
    assert_eq!(
        metric_value(&m, "mana_ai_tokens_used_total", &[("agent_id", "a1")]),
        Some(f64::from(rows.iter().map(|r| r.3).sum::<i32>()))
    );
}

#[tokio::test]
async fn a_cancelled_run_books_its_reservation() {
    let db = fresh_db("budget_cancel").await;
    let admin = one_mission(&db, 1_000_000).await;
    let llm = FakeLlm::replying(Reply::hang());
    let r = Arc::new(RunnerBuilder::new(&db).llm(llm.clone()).build());
    let pass = tokio::spawn({
        let r = Arc::clone(&r);
        async move { r.tick().await }
    });
    eventually("a reservation", || async {
        !reservation_tokens(&admin).await.is_empty()
    })
    .await;
    let held = reservation_tokens(&admin).await[0];
    // Shutdown after the grace period: the pass is dropped mid-call.
    pass.abort();
    assert!(pass.await.unwrap_err().is_cancelled());
    eventually("the booking", || async {
        reservation_tokens(&admin).await.is_empty() && token_usage_sum(&admin, "a1").await == held
    })
    .await;
    assert_eq!(token_usage_rows(&admin).await.len(), 1);
    assert_eq!(runner_row_count(&admin, Some("m1")).await, 0);
}

#[tokio::test]
async fn a_panicking_run_books_its_reservation() {
    let db = fresh_db("budget_panic").await;
    let admin = one_mission(&db, 1_000_000).await;
    let llm = FakeLlm::replying(Reply::panic("injected panic inside the LLM call"));
    let r = RunnerBuilder::new(&db).llm(llm.clone()).build();
    let stats = r.tick().await;
    assert_eq!(stats.errors.len(), 1, "{stats:?}");
    eventually("the booking", || async {
        reservation_tokens(&admin).await.is_empty() && token_usage_sum(&admin, "a1").await > 0
    })
    .await;
    let rows = token_usage_rows(&admin).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].3 > 1_024, "booked at its estimate: {rows:?}");
}

#[tokio::test]
async fn a_completed_deep_research_job_is_booked_against_the_agent_once() {
    let db = fresh_db("budget_deep").await;
    let admin = db.admin().await;
    let research = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/internal/research/async"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "taskId": "t-1", "status": "queued", "providerId": "gemini-deep-research-max",
            "costCredits": 5})))
        .mount(&research)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/internal/research/async/t-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "taskId": "t-1", "status": "completed", "providerId": "gemini-deep-research-max",
            "result": {"answer": {"query": "q", "answer": "Antwort.", "citations": [],
                "tokenUsage": {"promptTokens": 3000, "completionTokens": 1321}}}})))
        .mount(&research)
        .await;
    let mut m = mission("Deep", None);
    m["objective"] = json!("Deep Dive: Wärmepumpen");
    push_mission(&admin, "u1", "m1", m).await;
    let llm = FakeLlm::replying(Reply::text("Fertig.").usage(10, 2));
    let r = RunnerBuilder::new(&db)
        .llm(llm)
        .config(|c| {
            c.research_url = Some(research.uri());
            c.deep_research_enabled = true;
        })
        .build();
    let first = r.tick().await;
    assert_eq!(first.skipped, 1, "submitted, pending: {first:?}");
    let second = r.tick().await;
    assert_eq!(second.plans_written_back, 1, "{second:?}");
    for _ in 0..2 {
        r.tick().await;
    }
    assert_eq!(token_usage_sum(&admin, DEFAULT_AGENT_ID).await, 4_321 + 12);
    let m = r.metrics().render();
    assert_eq!(
        metric_value(
            &m,
            "mana_ai_tokens_used_total",
            &[("agent_id", DEFAULT_AGENT_ID)]
        ),
        Some(4_333.0)
    );
}
