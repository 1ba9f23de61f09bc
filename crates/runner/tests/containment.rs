//! One user's data never stops the runner for anyone (issue 12, points 1 and 2): a
//! hostile row is quarantined and everyone else is planned, before and after a restart;
//! a panic in a pass — in the refresh, in a mission — is caught, counted, releases its
//! locks and claims, and the next pass (of this or another instance) runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mana_ai_runner::testkit::{metric_value, FakeLlm, Reply, RunnerBuilder, TestClock};
use mana_ai_runner::{Runner, Scheduler};
use mana_ai_store::testkit::faults::{panic_refresh_on_user, stop_refresh_panics};
use mana_ai_store::testkit::rows::{mission_record, run_count, runner_row_count};
use mana_ai_store::testkit::{fresh_db, push_mission, Change, TestDb};
use serde_json::{json, Value};

const DUE: &str = "2026-01-05T06:00:00.000Z";
const NOW: &str = "2026-01-05T09:00:00Z";

fn mission() -> Value {
    mission_record(json!({
        "title": "Wochenplan", "objective": "Propose tasks", "nextRunAt": DUE,
        "cadence": {"kind": "interval", "everyMinutes": 60}
    }))
}

fn runner(db: &TestDb) -> RunnerBuilder {
    RunnerBuilder::new(db)
        .llm(FakeLlm::replying(Reply::text("ok")))
        .clock(TestClock::at_iso(NOW))
}

fn counter(r: &Runner, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(&r.metrics().render(), name, labels).unwrap_or(0.0)
}

/// A mission record nested `depth` levels deep (the `Row::get` panic of issue 12).
fn deep_mission(depth: usize) -> Value {
    let mut v = json!("bottom");
    for _ in 0..depth - 1 {
        v = json!([v]);
    }
    let mut m = mission();
    m["conceptMarkdown"] = v;
    m
}

#[tokio::test]
async fn a_200_deep_row_of_one_user_does_not_stop_another_users_mission() {
    let db = fresh_db("contain_deep").await;
    let admin = db.admin().await;
    push_mission(&admin, "ua", "m-hostile", deep_mission(200)).await;
    push_mission(&admin, "ub", "m-b", mission()).await;
    let r = runner(&db).build();
    let stats = r.tick().await;
    assert!(stats.errors.is_empty(), "{stats:?}");
    assert_eq!(stats.refresh.rows_quarantined, 1, "{stats:?}");
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    assert_eq!(runner_row_count(&admin, Some("m-b")).await, 1);
    assert_eq!(
        counter(
            &r,
            "mana_ai_rows_quarantined_total",
            &[("reason", "too-deep")]
        ),
        1.0
    );
    // Restart: a new runner on a new pool passes the row again without trouble.
    push_mission(&admin, "ub", "m-b2", mission()).await;
    let restarted = runner(&db).build();
    let stats = restarted.tick().await;
    assert!(stats.errors.is_empty(), "{stats:?}");
    assert_eq!(stats.refresh.rows_quarantined, 0, "{stats:?}");
    assert_eq!(runner_row_count(&admin, Some("m-b2")).await, 1);
}

#[tokio::test]
async fn a_panicking_refresh_is_counted_the_pass_goes_on_and_another_instance_refreshes() {
    let db = fresh_db("contain_refresh").await;
    let admin = db.admin().await;
    push_mission(&admin, "ub", "m-b", mission()).await;
    let r = runner(&db).build();
    // m-b is in the snapshots; then a row that makes the refresh panic arrives.
    let first = r.store().refresh_snapshots(refresh_opts()).await.unwrap();
    assert!(matches!(first, mana_ai_store::RefreshOutcome::Done(_)));
    push_mission(&admin, "u-refresh-panics", "m-p", mission()).await;
    panic_refresh_on_user("u-refresh-panics");
    let stats = r.tick().await;
    stop_refresh_panics("u-refresh-panics");
    assert_eq!(stats.errors, ["refresh: panicked"], "{stats:?}");
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    assert_eq!(
        counter(&r, "mana_ai_pass_panics_total", &[("stage", "refresh")]),
        1.0
    );
    // Another instance takes the refresh lock right away and folds the row in.
    let other = runner(&db).build();
    let started = Instant::now();
    loop {
        let stats = other.tick().await;
        if !stats.refresh.busy {
            assert!(stats.errors.is_empty(), "{stats:?}");
            assert_eq!(stats.plans_written_back, 1, "{stats:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "refresh lock still held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "another instance refreshed {:?} after the panic",
        started.elapsed()
    );
}

fn refresh_opts() -> mana_ai_store::RefreshOptions {
    mana_ai_store::RefreshOptions {
        batch_rows: 5_000,
        safety_margin: Duration::ZERO,
    }
}

#[tokio::test]
async fn a_panicking_mission_gives_its_claim_back_and_is_counted() {
    let db = fresh_db("contain_mission").await;
    let admin = db.admin().await;
    push_mission(&admin, "u1", "m1", mission()).await;
    let llm = FakeLlm::script(vec![Reply::panic("fake model exploded"), Reply::text("ok")]);
    let r = RunnerBuilder::new(&db)
        .llm(llm)
        .clock(TestClock::at_iso(NOW))
        .build();
    let stats = r.tick().await;
    assert_eq!(stats.errors, ["mission=m1: mission task panicked"]);
    assert_eq!(
        counter(&r, "mana_ai_pass_panics_total", &[("stage", "mission")]),
        1.0
    );
    assert_eq!(run_count(&admin, Some("running")).await, 0);
    assert_eq!(
        counter(&r, "mana_ai_missions_in_flight", &[]),
        0.0,
        "the panicked mission is no longer in flight"
    );
    // The claim is free: the next pass plans the mission.
    let stats = r.tick().await;
    assert_eq!(stats.plans_written_back, 1, "{stats:?}");
    assert_eq!(
        counter(&r, "mana_ai_write_backs_total", &[("path", "direct")]),
        1.0,
        "nothing changed the mission during planning: one direct write"
    );
}

#[tokio::test]
async fn the_scheduler_keeps_running_after_a_panicking_pass() {
    let db = fresh_db("contain_sched").await;
    let admin = db.admin().await;
    push_mission(&admin, "u-sched-panics", "m-p", mission()).await;
    panic_refresh_on_user("u-sched-panics");
    let r: Arc<Runner> = runner(&db).build_arc();
    let scheduler = Scheduler::start(r.clone(), Duration::from_millis(100));
    let status = scheduler.status();
    let started = Instant::now();
    while status.last_pass().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no pass completed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status.last_pass().map(|p| p.ok), Some(false));
    assert!(status.running());
    stop_refresh_panics("u-sched-panics");
    while status.last_pass().map(|p| p.ok) != Some(true) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no good pass followed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(counter(&r, "mana_ai_ticks_total", &[]) >= 2.0);
    assert!(scheduler.shutdown(Duration::from_secs(5)).await);
    assert!(!status.running());
    assert_eq!(runner_row_count(&admin, Some("m-p")).await, 1);
}

#[tokio::test]
async fn hostile_shapes_of_every_kind_are_quarantined_and_counted_by_reason() {
    let db = fresh_db("contain_kinds").await;
    let admin = db.admin().await;
    Change::new("uk", "aiMissions", "m-array", json!([1, 2]))
        .push(&admin)
        .await;
    Change::new("uk", "agents", "a-text", json!("agent"))
        .push(&admin)
        .await;
    Change::new("uk", "aiMissions", "m-meta", mission())
        .field_meta(json!(["2026-01-01T00:00:00.000Z"]))
        .push(&admin)
        .await;
    push_mission(&admin, "uk", "m-deep", deep_mission(40)).await;
    push_mission(&admin, "ul", "m-l", mission()).await;
    let r = runner(&db).build();
    let stats = r.tick().await;
    assert!(stats.errors.is_empty(), "{stats:?}");
    assert_eq!(stats.refresh.rows_quarantined, 4, "{stats:?}");
    assert_eq!(
        counter(
            &r,
            "mana_ai_rows_quarantined_total",
            &[("reason", "not-an-object")]
        ),
        3.0
    );
    assert_eq!(runner_row_count(&admin, Some("m-l")).await, 1);
    let listed = r.store().list_quarantined(10).await.unwrap();
    assert_eq!(listed.len(), 4);
}
