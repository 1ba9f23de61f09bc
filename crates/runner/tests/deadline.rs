//! The whole run inside its deadline and lease (issue 12, point 9): a mission linking
//! 20,000 inputs with a 1 s deadline and a model that never answers ends within its
//! deadline (inputs are capped at `max_inputs`, the model is told how many were left
//! out), its claim's lease is the deadline plus the claim grace, and a second runner
//! never plans it again. Without the cap, the input stage itself is cut off by the
//! deadline.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mana_ai_runner::testkit::{FakeLlm, Reply, RunnerBuilder, TestClock};
use mana_ai_store::testkit::rows::{mission_record, runner_data, runner_row_count};
use mana_ai_store::testkit::{fresh_db, push_mission, Change, TestDb};
use serde_json::{json, Value};

const DUE: &str = "2026-01-05T06:00:00.000Z";
const NOW: &str = "2026-01-05T09:00:00Z";
const INPUTS: usize = 20_000;
const DEADLINE: Duration = Duration::from_secs(1);
const GRACE: Duration = Duration::from_secs(2);

async fn mission_with_many_inputs(db: &TestDb) -> tokio_postgres::Client {
    let admin = db.admin().await;
    let inputs: Vec<Value> = (0..INPUTS)
        .map(|i| json!({"module": "goals", "table": "goals", "id": format!("g{i}")}))
        .collect();
    let record = mission_record(json!({
        "title": "Viele Ziele", "objective": "Plane", "nextRunAt": DUE,
        "cadence": {"kind": "interval", "everyMinutes": 60}, "inputs": inputs
    }));
    push_mission(&admin, "u1", "m1", record).await;
    Change::new("u1", "goals", "g0", json!({"title": "Erstes Ziel"}))
        .app("companion")
        .push(&admin)
        .await;
    admin
}

fn runner(db: &TestDb, llm: std::sync::Arc<FakeLlm>, max_inputs: usize) -> mana_ai_runner::Runner {
    RunnerBuilder::new(db)
        .llm(llm)
        .clock(TestClock::at_iso(NOW))
        .config(|c| {
            c.mission_deadline = DEADLINE;
            c.claim_grace = GRACE;
            c.max_inputs = max_inputs;
        })
        .build()
}

/// `(lease_until - started_at, finished_at <= lease_until)` of m1's run.
async fn lease(admin: &tokio_postgres::Client) -> (f64, bool) {
    let row = admin
        .query_one(
            "SELECT extract(epoch FROM lease_until - started_at)::float8, finished_at, lease_until
               FROM mana_ai.mission_runs WHERE mission_id = 'm1'",
            &[],
        )
        .await
        .expect("the run");
    let finished: Option<DateTime<Utc>> = row.get(1);
    let until: DateTime<Utc> = row.get(2);
    (row.get(0), finished.is_some_and(|f| f <= until))
}

#[tokio::test]
async fn twenty_thousand_inputs_end_within_the_deadline_and_a_second_runner_never_replans() {
    let db = fresh_db("deadline_inputs").await;
    let admin = mission_with_many_inputs(&db).await;
    let llm_a = FakeLlm::replying(Reply::hang());
    let llm_b = FakeLlm::replying(Reply::text("ok"));
    let a = runner(&db, llm_a.clone(), mana_ai_runner::defaults::MAX_INPUTS);
    let b = runner(&db, llm_b.clone(), mana_ai_runner::defaults::MAX_INPUTS);
    let started = Instant::now();
    let (stats_a, stats_b) = tokio::join!(a.tick(), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.tick().await
    });
    let elapsed = started.elapsed();
    assert_eq!(stats_a.failed, 1, "{stats_a:?}");
    assert_eq!(
        stats_b.plans_written_back + stats_b.failed,
        0,
        "{stats_b:?}"
    );
    assert!(elapsed < DEADLINE + GRACE, "the run took {elapsed:?}");
    // The model was asked once (by A), with the first 100 inputs and a note on the rest.
    assert_eq!((llm_a.calls(), llm_b.calls()), (1, 0));
    let prompt = &llm_a.user_prompts()[0];
    assert!(
        prompt.contains("verknuepft 20000 Eingaben"),
        "no truncation note"
    );
    assert!(prompt.contains("Erstes Ziel"));
    let data = runner_data(&admin, "m1").await;
    assert_eq!(data.len(), 1);
    let it = &data[0]["iterations"][0];
    assert_eq!(it["errorDetails"]["phase"], "calling-llm");
    let (lease_secs, within) = lease(&admin).await;
    assert!((lease_secs - 3.0).abs() < 0.01, "lease {lease_secs}");
    assert!(within, "written back after the lease ran out");
    // Later passes of B find nothing to do.
    let stats = b.tick().await;
    assert_eq!(stats.due_mission_count, 0, "{stats:?}");
    assert_eq!(runner_row_count(&admin, Some("m1")).await, 1);
    assert_eq!(llm_b.calls(), 0);
}

#[tokio::test]
async fn without_the_cap_the_input_stage_is_cut_off_by_the_deadline() {
    let db = fresh_db("deadline_uncapped").await;
    let admin = mission_with_many_inputs(&db).await;
    let llm = FakeLlm::replying(Reply::hang());
    let r = runner(&db, llm, INPUTS);
    let started = Instant::now();
    let stats = r.tick().await;
    let elapsed = started.elapsed();
    assert_eq!(stats.failed, 1, "{stats:?}");
    assert!(elapsed < DEADLINE + GRACE, "the run took {elapsed:?}");
    let data = runner_data(&admin, "m1").await;
    let details = &data[0]["iterations"][0]["errorDetails"];
    let message = details["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("mission deadline of 1 s exceeded"),
        "{details}"
    );
    let (_, within) = lease(&admin).await;
    assert!(within);
}

/// While a deep-research job is pending, the run stops before it resolves any input: no
/// replay, no decrypt, no audit row per pass (an input of an unknown module, counted each
/// time the inputs are resolved, shows it).
#[tokio::test]
async fn a_pending_deep_research_job_resolves_no_inputs() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let db = fresh_db("deadline_research_first").await;
    let admin = db.admin().await;
    let record = mission_record(json!({
        "title": "Recherche", "objective": "Deep research: Wärmepumpen", "nextRunAt": DUE,
        "cadence": {"kind": "interval", "everyMinutes": 60},
        "inputs": [{"module": "no-such-module", "table": "x", "id": "x1"}]
    }));
    push_mission(&admin, "u1", "m1", record).await;
    let research = MockServer::start().await;
    let job = json!({"taskId": "task-1", "status": "running",
                     "providerId": "gemini-deep-research-max"});
    Mock::given(method("POST"))
        .and(path("/api/v1/internal/research/async"))
        .respond_with(ResponseTemplate::new(200).set_body_json(job.clone()))
        .mount(&research)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/internal/research/async/task-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(job))
        .mount(&research)
        .await;
    let r = RunnerBuilder::new(&db)
        .llm(FakeLlm::replying(Reply::text("ok")))
        .clock(TestClock::at_iso(NOW))
        .config(|c| {
            c.research_url = Some(research.uri());
            c.deep_research_enabled = true;
        })
        .build();
    for _ in 0..3 {
        assert_eq!(r.tick().await.skipped, 1);
    }
    let unknown = r
        .metrics()
        .resolver_failures_total
        .with_label_values(&["unknown"])
        .get();
    assert_eq!(
        unknown, 0,
        "inputs were resolved while research was pending"
    );
}
