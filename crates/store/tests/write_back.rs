//! Real PostgreSQL, as the least-privilege service role: the write-back merges the run's
//! iteration into the mission's *current* iterations (device edits made after the
//! snapshot survive), stamps with the database clock, keeps a rescheduled `nextRunAt`,
//! bounds the history, never writes a row over the limit, and skips undecodable rows.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use mana_ai_core::iso::{parse_iso, to_iso_ms};
use mana_ai_core::iterations::HistoryLimits;
use mana_ai_core::limits::ROW_MAX_BYTES;
use mana_ai_core::records::DEFAULT_AGENT_ID;
use mana_ai_store::testkit::rows::{
    merged_mission, mission_record, run_statuses, runner_data, runner_rows, written_run,
};
use mana_ai_store::testkit::{fresh_db, push_mission, Change, TestDb};
use mana_ai_store::{AgentSlot, Claim, ClaimRequest, RefreshOptions, Store, WriteOutcome};
use serde_json::{json, Value};

const USER: &str = "user-w";
const RUNNER: &str = "runner-w";

fn due() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 6, 0, 0).single().unwrap()
}

fn iteration(id: &str, overall: &str, step: &str) -> Value {
    json!({"id": id, "source": "server", "overallStatus": overall, "startedAt": "2026-01-04T06:00:00.000Z",
           "plan": [{"id": format!("{id}-0"), "summary": "s", "status": step,
                     "intent": {"kind": "toolCall", "toolName": "create_task", "params": {"title": "t"}}}]})
}

/// A due mission with `iterations`, folded into a snapshot, and its run claimed.
async fn due_mission(
    prefix: &str,
    iterations: Vec<Value>,
) -> (TestDb, Store, tokio_postgres::Client) {
    let db = fresh_db(prefix).await;
    let (store, admin) = (db.service_store(), db.admin().await);
    let record = mission_record(json!({
        "nextRunAt": to_iso_ms(due()), "iterations": iterations,
        "cadence": {"kind": "interval", "everyMinutes": 60}
    }));
    push_mission(&admin, USER, "m1", record).await;
    let opts = RefreshOptions {
        safety_margin: Duration::ZERO,
        ..RefreshOptions::default()
    };
    store.refresh_snapshots(opts).await.expect("refresh");
    let claim = store
        .claim_run(&ClaimRequest {
            user_id: USER,
            mission_id: "m1",
            due_at: due(),
            iteration_id: "new",
            runner_id: RUNNER,
            lease: Duration::from_secs(300),
            slot: AgentSlot {
                agent_id: DEFAULT_AGENT_ID.into(),
                max_concurrent: 1,
            },
        })
        .await
        .expect("claim");
    assert_eq!(claim, Claim::Claimed);
    (db, store, admin)
}

/// A device's update of `fields`, each stamped `stamp`.
async fn device_update(admin: &tokio_postgres::Client, fields: Value, stamp: &str) {
    let meta: serde_json::Map<String, Value> = fields
        .as_object()
        .unwrap()
        .keys()
        .map(|k| (k.clone(), json!(stamp)))
        .collect();
    Change::new(USER, "aiMissions", "m1", fields)
        .op("update")
        .field_meta(Value::Object(meta))
        .push(admin)
        .await;
}

async fn write(store: &Store, new: &Value, limits: HistoryLimits) -> WriteOutcome {
    let actor = json!({"kind": "ai", "principalId": DEFAULT_AGENT_ID});
    let next = due() + chrono::Duration::hours(1);
    let mut wb = written_run((USER, "m1", due()), RUNNER, new, Some(next), &actor);
    wb.history = limits;
    store.write_back(&wb).await.expect("write-back")
}

fn ids(v: &Value) -> Vec<String> {
    v["iterations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[tokio::test]
async fn a_device_edit_after_the_snapshot_survives_the_write_back() {
    let old = iteration("old", "awaiting-review", "planned");
    let (_db, store, admin) = due_mission("wb_edit", vec![old.clone()]).await;
    // The device executes the step and leaves feedback while the runner plans.
    let mut edited = old.clone();
    edited["plan"][0]["status"] = json!("approved");
    edited["overallStatus"] = json!("approved");
    edited["userFeedback"] = json!("gut so");
    device_update(
        &admin,
        json!({"iterations": [edited]}),
        &to_iso_ms(Utc::now()),
    )
    .await;

    let new = iteration("new", "awaiting-review", "planned");
    assert_eq!(
        write(&store, &new, HistoryLimits::new(50)).await,
        WriteOutcome::Written
    );
    let data = runner_data(&admin, "m1").await.remove(0);
    assert_eq!(data["iterations"], json!([edited, new]));
    assert_eq!(data["nextRunAt"], "2026-01-05T07:00:00.000Z");
    // What every device converges to: the edit is intact, the step is not `planned` again.
    let merged = merged_mission(&admin, USER, "m1").await.unwrap();
    assert_eq!(merged["iterations"], json!([edited, new]));
    assert_eq!(run_statuses(&admin, "m1").await, ["written"]);
}

#[tokio::test]
async fn stamps_come_from_the_database_clock_and_beat_a_fast_device_clock() {
    let (_db, store, admin) = due_mission("wb_clock", vec![]).await;
    let before = Utc::now() - chrono::Duration::seconds(5);
    assert_eq!(
        write(
            &store,
            &iteration("a", "approved", "approved"),
            HistoryLimits::new(50)
        )
        .await,
        WriteOutcome::Written
    );
    let meta: Value = runner_rows(&admin, "m1").await[0].get("field_meta");
    let stamp = parse_iso(meta["iterations"].as_str().unwrap()).unwrap();
    assert!(
        stamp >= before && stamp <= Utc::now(),
        "{stamp}: the database clock"
    );

    // A device one hour ahead edits meanwhile: our write must still win the merge.
    let (_db, store, admin) = due_mission("wb_clock_ahead", vec![]).await;
    let ahead = to_iso_ms(Utc::now() + chrono::Duration::hours(1));
    let theirs = iteration("theirs", "approved", "approved");
    device_update(&admin, json!({"iterations": [theirs]}), &ahead).await;
    let new = iteration("new", "awaiting-review", "planned");
    assert_eq!(
        write(&store, &new, HistoryLimits::new(50)).await,
        WriteOutcome::Written
    );
    let meta: Value = runner_rows(&admin, "m1").await[0].get("field_meta");
    assert!(
        meta["iterations"].as_str().unwrap() > ahead.as_str(),
        "{meta}"
    );
    let merged = merged_mission(&admin, USER, "m1").await.unwrap();
    assert_eq!(merged["iterations"], json!([theirs, new]));
}

#[tokio::test]
async fn a_rescheduled_next_run_is_kept() {
    let (_db, store, admin) = due_mission("wb_resched", vec![]).await;
    let chosen = "2026-02-01T08:00:00.000Z";
    device_update(&admin, json!({"nextRunAt": chosen}), &to_iso_ms(Utc::now())).await;
    let new = iteration("new", "awaiting-review", "planned");
    assert_eq!(
        write(&store, &new, HistoryLimits::new(50)).await,
        WriteOutcome::Written
    );
    let row = runner_rows(&admin, "m1").await.remove(0);
    let (data, meta): (Value, Value) = (row.get("data"), row.get("field_meta"));
    assert!(
        data.get("nextRunAt").is_none() && meta.get("nextRunAt").is_none(),
        "{data}"
    );
    let merged = merged_mission(&admin, USER, "m1").await.unwrap();
    assert_eq!(merged["nextRunAt"], chosen);
    assert_eq!(ids(&merged), ["new"]);
}

#[tokio::test]
async fn a_mission_deleted_meanwhile_gets_no_row() {
    let (_db, store, admin) = due_mission("wb_deleted", vec![]).await;
    Change::new(
        USER,
        "aiMissions",
        "m1",
        json!({"deletedAt": to_iso_ms(Utc::now())}),
    )
    .op("delete")
    .push(&admin)
    .await;
    let new = iteration("new", "awaiting-review", "planned");
    assert_eq!(
        write(&store, &new, HistoryLimits::new(50)).await,
        WriteOutcome::MissionDeleted
    );
    assert!(runner_rows(&admin, "m1").await.is_empty());
    assert_eq!(run_statuses(&admin, "m1").await, ["failed"]);
}

#[tokio::test]
async fn another_runners_claim_writes_nothing() {
    let (_db, store, admin) = due_mission("wb_lost", vec![]).await;
    let actor = json!({});
    let new = iteration("new", "awaiting-review", "planned");
    let wb = written_run((USER, "m1", due()), "someone-else", &new, None, &actor);
    assert_eq!(
        store.write_back(&wb).await.unwrap(),
        WriteOutcome::ClaimLost
    );
    assert!(runner_rows(&admin, "m1").await.is_empty());
    assert_eq!(run_statuses(&admin, "m1").await, ["running"]);
    // The connection went back to the pool usable: the real write still lands.
    assert_eq!(
        write(&store, &new, HistoryLimits::new(50)).await,
        WriteOutcome::Written
    );
}

#[tokio::test]
async fn four_hundred_iterations_keep_fifty_and_the_old_planned_one() {
    let filler = "x".repeat(1_900);
    let mut history: Vec<Value> = (0..400)
        .map(|i| {
            let mut it = iteration(&format!("i{i}"), "approved", "approved");
            it["summary"] = json!(filler);
            it
        })
        .collect();
    history[3]["plan"][0]["status"] = json!("planned");
    let (_db, store, admin) = due_mission("wb_400", history).await;
    let new = iteration("new", "awaiting-review", "planned");
    assert_eq!(
        write(&store, &new, HistoryLimits::new(50)).await,
        WriteOutcome::Written
    );
    let data = runner_data(&admin, "m1").await.remove(0);
    let kept = ids(&data);
    assert_eq!(kept.len(), 50, "{kept:?}");
    assert_eq!(kept[0], "i3", "the old iteration with a planned step stays");
    assert_eq!(kept[1], "i352");
    assert_eq!(kept[49], "new");
    let bytes = data.to_string().len();
    assert!(bytes < 150_000, "{bytes} bytes");
    assert!(data["iterations"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["plan"].is_array()));
}

#[tokio::test]
async fn unfinished_work_over_the_row_limit_writes_no_iteration() {
    let big = "y".repeat(3_000);
    let pending: Vec<Value> = (0..10)
        .map(|i| {
            let mut it = iteration(&format!("p{i}"), "awaiting-review", "planned");
            it["summary"] = json!(big);
            it
        })
        .collect();
    let (_db, store, admin) = due_mission("wb_full", pending).await;
    let limits = HistoryLimits {
        row_max_bytes: 20_000,
        ..HistoryLimits::new(50)
    };
    assert!(limits.row_max_bytes < ROW_MAX_BYTES);
    let new = iteration("new", "awaiting-review", "planned");
    match write(&store, &new, limits).await {
        WriteOutcome::HistoryFull { bytes } => assert!(bytes > 30_000, "{bytes}"),
        other => panic!("{other:?}"),
    }
    let data = runner_data(&admin, "m1").await;
    assert_eq!(data, [json!({"nextRunAt": "2026-01-05T07:00:00.000Z"})]);
    assert_eq!(run_statuses(&admin, "m1").await, ["failed"]);
    let merged = merged_mission(&admin, USER, "m1").await.unwrap();
    assert_eq!(merged["iterations"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn an_undecodable_row_is_left_out_of_the_merge() {
    let old = iteration("old", "approved", "approved");
    let (_db, store, admin) = due_mission("wb_deep", vec![old.clone()]).await;
    let mut deep = json!("bottom");
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let future = to_iso_ms(Utc::now() + chrono::Duration::hours(1));
    device_update(&admin, json!({"iterations": [deep]}), &future).await;
    let new = iteration("new", "awaiting-review", "planned");
    assert_eq!(
        write(&store, &new, HistoryLimits::new(50)).await,
        WriteOutcome::Written
    );
    let row = runner_rows(&admin, "m1").await.remove(0);
    let (data, meta): (Value, Value) = (row.get("data"), row.get("field_meta"));
    assert_eq!(data["iterations"], json!([old, new]));
    // Stamped after the left-out value, so the merged array replaces it everywhere.
    assert!(
        meta["iterations"].as_str().unwrap() > future.as_str(),
        "{meta}"
    );
}
