//! Fair due listing, deferrals and the self-healing schedule (issue 12, points 3, 7, 8),
//! on a real PostgreSQL with a pinned test clock:
//! * gated missions of one user never hide another user's due mission (the listing
//!   shares `MANA_AI_DUE_LIMIT` round-robin by user);
//! * a gated run is deferred (not listed again at once) and comes back as soon as its
//!   agent changes, or after its backoff;
//! * repeated store errors back off through the same deferral, doubling up to the cap;
//! * a run already done whose `nextRunAt` a device re-stamped to the served time gets
//!   its next run written once, and runs again then.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mana_ai_core::iso::parse_iso;
use mana_ai_core::plan::iteration_id_for;
use mana_ai_runner::testkit::{FakeLlm, Reply, RunnerBuilder, TestClock};
use mana_ai_runner::{DeferPolicy, Runner};
use mana_ai_store::testkit::rows::{
    agent_record, mission_record, run_statuses, runner_data, runner_row_count,
};
use mana_ai_store::testkit::{fresh_db, push_agent, push_mission, Change, TestDb, SERVICE_ROLE};
use mana_ai_store::{Heal, ScheduleHeal};
use serde_json::{json, Value};

/// The pinned "now" of every pass: after every due time below.
const NOW: &str = "2026-01-05T09:00:00Z";
const CLAIM_FN: &str =
    "mana_ai.claim_run(TEXT, TEXT, TIMESTAMPTZ, TEXT, TEXT, BIGINT, TEXT, FLOAT8)";

fn at(iso: &str) -> DateTime<Utc> {
    parse_iso(iso).expect("iso time")
}

/// An hourly mission due at `next`, run by `agent` (or the default agent).
fn mission(next: &str, agent: Option<&str>) -> Value {
    let mut m = mission_record(json!({
        "title": "Plan", "objective": "Propose tasks", "nextRunAt": next,
        "cadence": {"kind": "interval", "everyMinutes": 60}
    }));
    if let Some(a) = agent {
        m["agentId"] = json!(a);
    }
    m
}

fn paused_agent() -> Value {
    agent_record(json!({"state": "paused", "maxConcurrentMissions": 5}))
}

/// A runner with deferral on (the defaults), the given due limit and a pinned clock.
fn runner(db: &TestDb, clock: &Arc<TestClock>, due_limit: i64) -> (Runner, Arc<FakeLlm>) {
    runner_with(db, clock, due_limit, |_| {})
}

fn runner_with(
    db: &TestDb,
    clock: &Arc<TestClock>,
    due_limit: i64,
    tweak: impl FnOnce(&mut mana_ai_runner::RunnerConfig),
) -> (Runner, Arc<FakeLlm>) {
    let llm = FakeLlm::replying(Reply::text("Nichts zu tun."));
    let r = RunnerBuilder::new(db)
        .llm(llm.clone())
        .clock(clock.clone())
        .config(|c| {
            c.due_limit = due_limit;
            c.defer = DeferPolicy::default();
            c.default_agent_max_concurrent = 5;
            tweak(c);
        })
        .build();
    (r, llm)
}

/// `(reason, attempts, seconds from the pinned now to not_before)` of a mission's deferral.
async fn deferral(admin: &tokio_postgres::Client, mission_id: &str) -> Option<(String, i32, i64)> {
    admin
        .query_opt(
            "SELECT reason, attempts, extract(epoch FROM not_before - $2)::bigint
               FROM mana_ai.mission_deferrals WHERE mission_id = $1",
            &[&mission_id, &at(NOW)],
        )
        .await
        .expect("read deferral")
        .map(|r| (r.get(0), r.get(1), r.get(2)))
}

#[tokio::test]
async fn three_gated_missions_of_one_user_do_not_hide_another_users_mission() {
    let db = fresh_db("fair_three").await;
    let admin = db.admin().await;
    push_agent(&admin, "uA", "ag-a", paused_agent()).await;
    for (i, due) in ["06:00", "06:01", "06:02"].iter().enumerate() {
        let next = format!("2026-01-05T{due}:00.000Z");
        push_mission(
            &admin,
            "uA",
            &format!("ma{i}"),
            mission(&next, Some("ag-a")),
        )
        .await;
    }
    // User B's mission is due later than all three of A's.
    push_mission(
        &admin,
        "uB",
        "mb",
        mission("2026-01-05T08:00:00.000Z", None),
    )
    .await;
    let clock = TestClock::at_iso(NOW);
    let (r, llm) = runner(&db, &clock, 3);

    let stats = r.tick().await;
    assert_eq!(stats.due_mission_count, 3, "{stats:?}");
    assert_eq!(
        (stats.plans_written_back, stats.skipped),
        (1, 2),
        "{stats:?}"
    );
    assert_eq!(
        runner_row_count(&admin, Some("mb")).await,
        1,
        "B planned in tick 1"
    );
    assert_eq!(llm.calls(), 1);
    // A's two listed missions are deferred; the third (not listed yet) comes next pass.
    let d = deferral(&admin, "ma0").await.expect("ma0 deferred");
    assert_eq!((d.0.as_str(), d.1, d.2), ("skipped-paused", 1, 30));
    let stats = r.tick().await;
    assert_eq!(
        (stats.due_mission_count, stats.skipped),
        (1, 1),
        "{stats:?}"
    );
    assert!(deferral(&admin, "ma2").await.is_some());
    // Everything of A is deferred now: nothing is listed until the backoff ends.
    assert_eq!(r.tick().await.due_mission_count, 0);
    clock.advance(Duration::from_secs(31));
    let stats = r.tick().await;
    assert_eq!(stats.due_mission_count, 3, "all of A again: {stats:?}");
    // The second deferral of the same due run doubles the backoff.
    let d = deferral(&admin, "ma0").await.expect("ma0 deferred");
    assert_eq!((d.1, d.2), (2, 31 + 60));
}

#[tokio::test]
async fn a_thousand_gated_missions_delay_another_user_by_at_most_one_tick() {
    let db = fresh_db("fair_thousand").await;
    let admin = db.admin().await;
    push_agent(&admin, "uA", "ag-a", paused_agent()).await;
    admin
        .execute(
            "INSERT INTO sync_changes
                 (app_id, table_name, record_id, user_id, op, data, field_meta, client_id)
             SELECT 'ai', 'aiMissions', 'ma' || i, 'uA', 'insert',
                    $1::jsonb || jsonb_build_object('nextRunAt',
                        to_char((timestamptz '2026-01-05 05:00:00+00' + i * interval '1 second')
                                AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')),
                    '{}', 'device-1'
               FROM generate_series(1, 1000) i",
            &[&mission("", Some("ag-a"))],
        )
        .await
        .expect("1,000 gated missions");
    push_mission(
        &admin,
        "uB",
        "mb1",
        mission("2026-01-05T08:59:00.000Z", None),
    )
    .await;
    let clock = TestClock::at_iso(NOW);

    // At the default limit (1,000) every one of A's missions is due too.
    let (r, _llm) = runner(&db, &clock, mana_ai_runner::defaults::DUE_LIMIT);
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    assert_eq!(runner_row_count(&admin, Some("mb1")).await, 1);

    // With a small limit, a mission of B that becomes due is planned in the next pass.
    let (r, _llm) = runner(&db, &clock, 10);
    push_mission(
        &admin,
        "uB",
        "mb2",
        mission("2026-01-05T08:59:30.000Z", None),
    )
    .await;
    let stats = r.tick().await;
    assert_eq!(runner_row_count(&admin, Some("mb2")).await, 1, "{stats:?}");
    // The deferred ones were not listed again: only A's one not yet deferred, and mb2.
    assert_eq!(stats.due_mission_count, 2, "{stats:?}");
    let deferred: i64 = admin
        .query_one("SELECT count(*) FROM mana_ai.mission_deferrals", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(deferred, 999 + 1, "all but one of A's, then one more");
}

#[tokio::test]
async fn a_deferred_mission_comes_back_when_its_agent_is_resumed() {
    let db = fresh_db("fair_resume").await;
    let admin = db.admin().await;
    push_agent(&admin, "uA", "ag-a", paused_agent()).await;
    push_mission(
        &admin,
        "uA",
        "m1",
        mission("2026-01-05T06:00:00.000Z", Some("ag-a")),
    )
    .await;
    let clock = TestClock::at_iso(NOW);
    let (r, llm) = runner(&db, &clock, 100);
    assert_eq!(r.tick().await.skipped, 1);
    assert_eq!(r.tick().await.due_mission_count, 0, "deferred");
    // An unrelated edit of another agent does not lift the deferral.
    push_agent(&admin, "uA", "ag-b", agent_record(json!({}))).await;
    assert_eq!(r.tick().await.due_mission_count, 0, "still deferred");
    Change::new("uA", "agents", "ag-a", json!({"state": "active"}))
        .op("update")
        .field_meta(json!({"state": "2030-01-01T00:00:00.000Z"}))
        .push(&admin)
        .await;
    let stats = r.tick().await;
    assert_eq!(
        (stats.due_mission_count, stats.plans_written_back),
        (1, 1),
        "{stats:?}"
    );
    assert_eq!(llm.calls(), 1);
}

#[tokio::test]
async fn repeated_claim_errors_back_off_and_an_edit_of_the_mission_retries_at_once() {
    let db = fresh_db("fair_errors").await;
    let admin = db.admin().await;
    push_mission(
        &admin,
        "u1",
        "m1",
        mission("2026-01-05T06:00:00.000Z", None),
    )
    .await;
    admin
        .batch_execute(&format!(
            "REVOKE EXECUTE ON FUNCTION {CLAIM_FN} FROM {SERVICE_ROLE}"
        ))
        .await
        .unwrap();
    let clock = TestClock::at_iso(NOW);
    let cap = Duration::from_secs(200);
    let (r, llm) = runner_with(&db, &clock, 100, |c| c.defer.error_cap = cap);
    let stats = r.tick().await;
    assert!(
        stats.errors[0].starts_with("mission=m1: claim: "),
        "{stats:?}"
    );
    assert_eq!(deferral(&admin, "m1").await.map(|d| d.1), Some(1));
    let mut listed = Vec::new();
    // One pass every 10 s for 10 minutes: the run is tried again after 30, 60, 120 s,
    // then every 200 s (the error cap) instead of 240, 480 ….
    for _ in 0..60 {
        clock.advance(Duration::from_secs(10));
        listed.push(r.tick().await.due_mission_count);
    }
    let tries: Vec<usize> = (0..60)
        .filter(|&i| listed[i] == 1)
        .map(|i| (i + 1) * 10)
        .collect();
    assert_eq!(tries, [30, 90, 210, 410], "{listed:?}");
    let d = deferral(&admin, "m1").await.unwrap();
    assert_eq!((d.0.as_str(), d.1, d.2), ("error", 5, 610));
    admin
        .batch_execute(&format!(
            "GRANT EXECUTE ON FUNCTION {CLAIM_FN} TO {SERVICE_ROLE}"
        ))
        .await
        .unwrap();
    // An edit of the mission lifts an error deferral too.
    Change::new("u1", "aiMissions", "m1", json!({"title": "Plan 2"}))
        .op("update")
        .field_meta(json!({"title": "2030-01-01T00:00:00.000Z"}))
        .push(&admin)
        .await;
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    assert_eq!(llm.calls(), 1);
}

#[tokio::test]
async fn a_done_run_re_stamped_by_a_device_gets_its_next_run_written_once() {
    let db = fresh_db("fair_heal").await;
    let admin = db.admin().await;
    let due = "2026-01-05T06:00:00.000Z";
    push_mission(&admin, "u1", "m1", mission(due, None)).await;
    let clock = TestClock::at_iso(NOW);
    let (r, llm) = runner(&db, &clock, 100);
    assert_eq!(r.tick().await.plans_written_back, 1);
    assert_eq!(
        runner_data(&admin, "m1").await[0]["nextRunAt"],
        "2026-01-05T10:00:00.000Z"
    );
    // A device (clock far ahead) writes the served time back into nextRunAt.
    Change::new("u1", "aiMissions", "m1", json!({"nextRunAt": due}))
        .op("update")
        .field_meta(json!({"nextRunAt": "2030-01-01T00:00:00.000Z"}))
        .push(&admin)
        .await;
    let stats = r.tick().await;
    assert_eq!(
        (stats.due_mission_count, stats.skipped),
        (1, 1),
        "{stats:?}"
    );
    assert_eq!(run_statuses(&admin, "m1").await, ["written"]);
    let rows = runner_data(&admin, "m1").await;
    assert_eq!(rows.len(), 2, "the plan and the heal");
    assert_eq!(rows[1], json!({"nextRunAt": "2026-01-05T10:00:00.000Z"}));
    // Written once: asking again before the refresh folded the heal writes nothing.
    let store = db.service_store();
    let (data, meta) = (json!({"nextRunAt": "x"}), json!({"nextRunAt": NOW}));
    let again = ScheduleHeal {
        user_id: "u1",
        mission_id: "m1",
        due_at: at(due),
        data: &data,
        field_meta: &meta,
        actor: &json!({"kind": "ai"}),
    };
    assert_eq!(
        store.heal_schedule(&again).await.unwrap(),
        Heal::AlreadyHealed
    );
    // The heal wins over the device's stamp: the mission is no longer due …
    assert_eq!(r.tick().await.due_mission_count, 0);
    assert_eq!(runner_row_count(&admin, Some("m1")).await, 2);
    // … and runs at its next run.
    clock.set(at("2026-01-05T10:00:01.000Z"));
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    assert_eq!(llm.calls(), 2);
    let ids: Vec<String> = runner_data(&admin, "m1").await[2]["iterations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|it| it["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        ids.contains(&iteration_id_for("m1", "2026-01-05T10:00:00.000Z")),
        "{ids:?}"
    );
}
