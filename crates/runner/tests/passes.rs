//! Paths of a pass seen only from outside (TickStats, metrics, rows): the mission
//! deadline, a panicking mission task, a mission that stops being due mid-pass, claims
//! held elsewhere / already done / lost before the write-back, refresh and due-listing
//! errors that do not end the pass, and the due limit. Time comes from a test clock.

use std::sync::Arc;
use std::time::Duration;

use mana_ai_core::iso::{parse_iso, to_iso_ms};
use mana_ai_core::plan::iteration_id_for;
use mana_ai_core::records::DEFAULT_AGENT_ID;
use mana_ai_runner::testkit::{
    metric_value, FakeLlm, OnFirstCall, Reply, RunnerBuilder, TestClock,
};
use mana_ai_runner::{Clock, Runner};
use mana_ai_store::testkit::faults::{break_due_listing, break_refresh, reassign_running_claims};
use mana_ai_store::testkit::rows::{
    mission_record, run_count, run_statuses, runner_data, runner_row_count, written_run,
};
use mana_ai_store::testkit::{fresh_db, push_mission, Change, TestDb};
use mana_ai_store::{AgentSlot, Claim, ClaimRequest, RefreshOptions, Store, WriteOutcome};
use serde_json::{json, Value};

const DUE: &str = "2026-01-05T06:00:00.000Z";
/// The pinned "now" of every pass here: after every due time, 10:00 in Berlin.
const NOW: &str = "2026-01-05T09:00:00Z";

fn mission(next: &str) -> Value {
    mission_record(json!({
        "title": "Wochenplan", "objective": "Propose tasks", "nextRunAt": next,
        "cadence": {"kind": "interval", "everyMinutes": 60}
    }))
}

fn runner(db: &TestDb, llm: Arc<dyn mana_ai_core::chat::LlmClient>) -> RunnerBuilder {
    RunnerBuilder::new(db)
        .llm(llm)
        .clock(TestClock::at_iso(NOW))
}

fn counter(r: &Runner, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metric_value(&r.metrics().render(), name, labels)
}

fn decisions(r: &Runner, decision: &str) -> u64 {
    r.metrics()
        .agent_decisions_total
        .with_label_values(&[decision])
        .get()
}

async fn refresh(store: &Store) {
    let opts = RefreshOptions {
        batch_rows: 5_000,
        safety_margin: Duration::ZERO,
    };
    store.refresh_snapshots(opts).await.expect("refresh");
}

/// Claims m1's run due at [`DUE`] as another runner, for the default agent.
/// One tick (room for 5 concurrent runs) that finds the one due run and skips it without
/// calling the LLM or writing a plan; returns the runner.
async fn tick_skips_the_one_due_run(db: &TestDb) -> Runner {
    let llm = FakeLlm::replying(Reply::text("ok"));
    let r = runner(db, llm.clone())
        .config(|c| c.default_agent_max_concurrent = 5)
        .build();
    let stats = r.tick().await;
    assert_eq!(
        (stats.due_mission_count, stats.skipped),
        (1, 1),
        "{stats:?}"
    );
    assert_eq!(stats.plans_written_back, 0);
    assert!(stats.errors.is_empty(), "{stats:?}");
    assert_eq!(llm.calls(), 0);
    r
}

async fn claim_elsewhere(store: &Store) {
    let due = parse_iso(DUE).unwrap();
    let claim = store
        .claim_run(&ClaimRequest {
            user_id: "u1",
            mission_id: "m1",
            due_at: due,
            iteration_id: &iteration_id_for("m1", DUE),
            runner_id: "other-runner",
            lease: Duration::from_secs(300),
            slot: AgentSlot {
                agent_id: DEFAULT_AGENT_ID.into(),
                max_concurrent: 5,
            },
        })
        .await
        .unwrap();
    assert_eq!(claim, Claim::Claimed);
}

#[tokio::test]
async fn a_mission_past_its_deadline_fails_while_calling_the_llm() {
    let db = fresh_db("pass_deadline").await;
    let admin = db.admin().await;
    push_mission(&admin, "u1", "m1", mission(DUE)).await;
    let llm = FakeLlm::replying(Reply::hang());
    let clock = TestClock::at_iso(NOW);
    let r = RunnerBuilder::new(&db)
        .llm(llm.clone())
        .clock(clock.clone())
        .config(|c| c.mission_deadline = Duration::from_secs(1))
        .build();
    let stats = r.tick().await;
    assert_eq!(
        (stats.failed, stats.plans_written_back),
        (1, 0),
        "{stats:?}"
    );
    assert_eq!(stats.errors, ["mission=m1: failed in calling-llm"]);
    // The call was made and never answered: the deadline, not the model, ended the run.
    assert_eq!((llm.calls(), llm.peak_in_flight()), (1, 1));
    let data = &runner_data(&admin, "m1").await[0];
    let it = &data["iterations"][0];
    assert_eq!(it["overallStatus"], "failed");
    assert_eq!(it["errorDetails"]["phase"], "calling-llm");
    let msg = it["errorDetails"]["message"].as_str().unwrap();
    assert!(msg.contains("mission deadline of 1 s exceeded"), "{msg}");
    // A retry is scheduled (base 60 s ± 20 %), before the next regular hourly run.
    let next = parse_iso(data["nextRunAt"].as_str().unwrap()).unwrap();
    let delay = (next - clock.now()).num_seconds();
    assert!((47..=73).contains(&delay), "delay {delay}");
    assert_eq!(
        counter(
            &r,
            "mana_ai_mission_failures_total",
            &[("phase", "calling-llm")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_panicking_mission_task_is_reported_and_the_pass_goes_on() {
    let db = fresh_db("pass_panic").await;
    let admin = db.admin().await;
    push_mission(&admin, "u1", "m1", mission(DUE)).await;
    push_mission(&admin, "u2", "m2", mission("2026-01-05T06:30:00.000Z")).await;
    // The first call (m1's, the older due run) panics; m2's is answered.
    let llm = FakeLlm::script(vec![Reply::panic("fake model exploded"), Reply::text("ok")]);
    let r = runner(&db, llm.clone())
        .config(|c| c.max_concurrent_plans = 1)
        .build();
    let stats = r.tick().await;
    assert_eq!(stats.due_mission_count, 2, "{stats:?}");
    assert_eq!(
        stats.errors,
        ["mission=m1: mission task panicked"],
        "{stats:?}"
    );
    assert_eq!(
        (stats.plans_written_back, stats.failed),
        (1, 0),
        "{stats:?}"
    );
    assert_eq!(llm.calls(), 2);
    assert_eq!(runner_row_count(&admin, Some("m1")).await, 0);
    assert_eq!(runner_row_count(&admin, Some("m2")).await, 1);
    assert_eq!(counter(&r, "mana_ai_mission_errors_total", &[]), Some(1.0));
    assert_eq!(
        counter(
            &r,
            "mana_ai_mission_failures_total",
            &[("phase", "internal")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_mission_paused_after_the_listing_is_skipped_as_no_longer_due() {
    let db = fresh_db("pass_nolonger").await;
    let admin = Arc::new(db.admin().await);
    push_mission(&*admin, "u1", "m-a", mission(DUE)).await;
    push_mission(&*admin, "u2", "m-b", mission("2026-01-05T06:30:00.000Z")).await;
    // While m-a is planning (one mission at a time), m-b is paused and the snapshots
    // refreshed: by the time its turn comes, it is no longer due.
    let store = db.service_store();
    let pauser = Arc::clone(&admin);
    let hook = async move {
        Change::new("u2", "aiMissions", "m-b", json!({"state": "paused"}))
            .op("update")
            .field_meta(json!({"state": "2030-01-01T00:00:00.000Z"}))
            .push(&*pauser)
            .await;
        refresh(&store).await;
    };
    let llm = FakeLlm::replying(Reply::text("ok"));
    let r = runner(&db, OnFirstCall::new(llm.clone(), hook))
        .config(|c| c.max_concurrent_plans = 1)
        .build();
    let stats = r.tick().await;
    assert_eq!(stats.due_mission_count, 2, "{stats:?}");
    assert_eq!(
        (stats.plans_written_back, stats.skipped),
        (1, 1),
        "{stats:?}"
    );
    assert!(stats.errors.is_empty(), "{stats:?}");
    assert_eq!(llm.calls(), 1);
    // m-b was never claimed, and no gate decision was counted for it.
    assert_eq!(run_count(&*admin, None).await, 1);
    assert_eq!(run_statuses(&*admin, "m-b").await, Vec::<String>::new());
    assert_eq!(decisions(&r, "ran"), 1);
}

#[tokio::test]
async fn a_run_claimed_by_another_runner_is_skipped_as_held_elsewhere() {
    let db = fresh_db("pass_held").await;
    let admin = db.admin().await;
    push_mission(&admin, "u1", "m1", mission(DUE)).await;
    claim_elsewhere(&db.service_store()).await;
    let r = tick_skips_the_one_due_run(&db).await;
    assert_eq!(decisions(&r, "ran"), 0);
    // The other runner's claim is untouched.
    assert_eq!(run_statuses(&admin, "m1").await, ["running"]);
    assert_eq!(runner_row_count(&admin, None).await, 0);
}

#[tokio::test]
async fn a_run_written_by_another_runner_is_skipped_as_already_done() {
    let db = fresh_db("pass_done").await;
    let admin = db.admin().await;
    push_mission(&admin, "u1", "m1", mission(DUE)).await;
    let store = db.service_store();
    claim_elsewhere(&store).await;
    // The other runner writes the run back but leaves the mission due at the same time
    // (as a user edit racing the write could): the run itself is done.
    let stamp = to_iso_ms(parse_iso(NOW).unwrap());
    let iteration = json!({"id": "other", "plan": [], "startedAt": stamp});
    let actor = json!({"kind": "ai", "principalId": DEFAULT_AGENT_ID});
    let written = store
        .write_back(&written_run(
            ("u1", "m1", parse_iso(DUE).unwrap()),
            "other-runner",
            &iteration,
            parse_iso(DUE),
            &actor,
        ))
        .await
        .unwrap();
    assert_eq!(written, WriteOutcome::Written);
    let _r = tick_skips_the_one_due_run(&db).await;
    assert_eq!(run_statuses(&admin, "m1").await, ["written"]);
    // The mission was still due at the done run's time: its next run is written once
    // (the self-healing schedule), nothing else.
    let rows = runner_data(&admin, "m1").await;
    assert_eq!(rows.len(), 2, "the other's row and the heal");
    assert_eq!(rows[1], json!({"nextRunAt": "2026-01-05T10:00:00.000Z"}));
}

#[tokio::test]
async fn a_claim_lost_before_the_write_back_writes_nothing() {
    let db = fresh_db("pass_lost").await;
    let admin = Arc::new(db.admin().await);
    push_mission(&*admin, "u1", "m1", mission(DUE)).await;
    // While the run is planning, its claim passes to another runner.
    let thief = Arc::clone(&admin);
    let hook = async move { reassign_running_claims(&*thief, "m1", "thief").await };
    let llm = FakeLlm::replying(Reply::text("ok"));
    let r = runner(&db, OnFirstCall::new(llm.clone(), hook)).build();
    let stats = r.tick().await;
    assert_eq!(
        (stats.due_mission_count, stats.skipped),
        (1, 1),
        "{stats:?}"
    );
    assert_eq!(
        (stats.plans_written_back, stats.failed),
        (0, 0),
        "{stats:?}"
    );
    assert!(stats.errors.is_empty(), "{stats:?}");
    assert_eq!(llm.calls(), 1);
    // `ran` counts written plans only: this run wrote nothing.
    assert_eq!(decisions(&r, "ran"), 0);
    assert_eq!(runner_row_count(&*admin, None).await, 0);
    assert_eq!(
        run_statuses(&*admin, "m1").await,
        ["running"],
        "the thief's claim"
    );
    assert_eq!(
        counter(&r, "mana_ai_plans_written_back_total", &[]),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_failing_refresh_is_reported_and_the_pass_plans_from_the_snapshots() {
    let db = fresh_db("pass_refresh_err").await;
    let admin = db.admin().await;
    push_mission(&admin, "u1", "m1", mission(DUE)).await;
    refresh(&db.service_store()).await;
    break_refresh(&admin).await;
    let llm = FakeLlm::replying(Reply::text("ok"));
    let r = runner(&db, llm.clone()).build();
    let stats = r.tick().await;
    assert_eq!(stats.errors.len(), 1, "{stats:?}");
    assert!(stats.errors[0].starts_with("refresh: "), "{stats:?}");
    assert_eq!((stats.due_mission_count, stats.plans_written_back), (1, 1));
    assert_eq!(llm.calls(), 1);
}

#[tokio::test]
async fn a_failing_due_listing_is_reported_and_ends_the_pass() {
    let db = fresh_db("pass_due_err").await;
    let admin = db.admin().await;
    push_mission(&admin, "u1", "m1", mission(DUE)).await;
    break_due_listing(&admin).await;
    let llm = FakeLlm::replying(Reply::text("ok"));
    let r = runner(&db, llm.clone()).build();
    let stats = r.tick().await;
    assert!(
        stats.errors.iter().any(|e| e.starts_with("list-due: ")),
        "{stats:?}"
    );
    assert_eq!(stats.due_mission_count, 0, "{stats:?}");
    assert_eq!(llm.calls(), 0);
    assert_eq!(counter(&r, "mana_ai_ticks_total", &[]), Some(1.0));
}

#[tokio::test]
async fn a_pass_takes_at_most_the_due_limit_oldest_first() {
    let db = fresh_db("pass_limit").await;
    let admin = db.admin().await;
    for i in 0..5 {
        let due = format!("2026-01-05T06:0{i}:00.000Z");
        push_mission(&admin, &format!("u{i}"), &format!("m{i}"), mission(&due)).await;
    }
    let llm = FakeLlm::replying(Reply::text("ok"));
    let r = runner(&db, llm.clone()).config(|c| c.due_limit = 2).build();
    let mut written = Vec::new();
    for want in [2, 2, 1] {
        let stats = r.tick().await;
        assert_eq!(stats.due_mission_count, want, "{stats:?}");
        assert_eq!(stats.plans_written_back, want, "{stats:?}");
        let mut now = Vec::new();
        for i in 0..5 {
            if runner_row_count(&admin, Some(&format!("m{i}"))).await > 0 {
                now.push(i);
            }
        }
        written.push(now);
    }
    assert_eq!(written, [vec![0, 1], vec![0, 1, 2, 3], vec![0, 1, 2, 3, 4]]);
    assert_eq!(llm.calls(), 5);
}
