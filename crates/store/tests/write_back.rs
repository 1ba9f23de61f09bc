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
use mana_ai_store::{
    AgentSlot, Claim, ClaimRequest, DueKey, DueMission, Loaded, RefreshOptions, Store,
    WriteOutcome, WritePath,
};
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
) -> (TestDb, Store, tokio_postgres::Client, DueMission) {
    let db = fresh_db(prefix).await;
    let (store, admin) = (db.service_store(), db.admin().await);
    let record = mission_record(json!({
        "nextRunAt": to_iso_ms(due()), "iterations": iterations,
        "cadence": {"kind": "interval", "everyMinutes": 60}
    }));
    push_mission(&admin, USER, "m1", record).await;
    refresh(&store).await;
    claim(&store, due(), "new").await;
    let loaded = load(&store).await;
    (db, store, admin, loaded)
}

/// The runner's load of the due mission (what it plans from).
async fn load(store: &Store) -> DueMission {
    let key = DueKey {
        user_id: USER.into(),
        mission_id: "m1".into(),
        next_run_at: due(),
    };
    store
        .load_due_mission(&key)
        .await
        .expect("load")
        .expect("due")
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

/// The write-back of `new` as the runner does it, over the snapshot it loaded.
async fn write(
    store: &Store,
    loaded: &DueMission,
    new: &Value,
    limits: HistoryLimits,
) -> (WriteOutcome, WritePath) {
    let actor = json!({"kind": "ai", "principalId": DEFAULT_AGENT_ID});
    let next = due() + chrono::Duration::hours(1);
    let mut wb = written_run((USER, "m1", due()), RUNNER, new, Some(next), &actor);
    wb.history = limits;
    wb.loaded = Some(Loaded {
        record: &loaded.record,
        version: loaded.version,
    });
    store.write_back_with_path(&wb).await.expect("write-back")
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
    let (_db, store, admin, snap) = due_mission("wb_edit", vec![old.clone()]).await;
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
        write(&store, &snap, &new, HistoryLimits::new(50)).await,
        (WriteOutcome::Written, WritePath::Merged)
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
    let (_db, store, admin, snap) = due_mission("wb_clock", vec![]).await;
    let before = Utc::now() - chrono::Duration::seconds(5);
    assert_eq!(
        write(
            &store,
            &snap,
            &iteration("a", "approved", "approved"),
            HistoryLimits::new(50)
        )
        .await,
        (WriteOutcome::Written, WritePath::Direct)
    );
    let meta: Value = runner_rows(&admin, "m1").await[0].get("field_meta");
    let stamp = parse_iso(meta["iterations"].as_str().unwrap()).unwrap();
    assert!(
        stamp >= before && stamp <= Utc::now(),
        "{stamp}: the database clock"
    );

    // A device one hour ahead edits meanwhile: our write must still win the merge.
    let (_db, store, admin, snap) = due_mission("wb_clock_ahead", vec![]).await;
    let ahead = to_iso_ms(Utc::now() + chrono::Duration::hours(1));
    let theirs = iteration("theirs", "approved", "approved");
    device_update(&admin, json!({"iterations": [theirs]}), &ahead).await;
    let new = iteration("new", "awaiting-review", "planned");
    assert_eq!(
        write(&store, &snap, &new, HistoryLimits::new(50)).await,
        (WriteOutcome::Written, WritePath::Merged)
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
    let (_db, store, admin, snap) = due_mission("wb_resched", vec![]).await;
    let chosen = "2026-02-01T08:00:00.000Z";
    device_update(&admin, json!({"nextRunAt": chosen}), &to_iso_ms(Utc::now())).await;
    let new = iteration("new", "awaiting-review", "planned");
    assert_eq!(
        write(&store, &snap, &new, HistoryLimits::new(50)).await,
        (WriteOutcome::Written, WritePath::Merged)
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
    let (_db, store, admin, snap) = due_mission("wb_deleted", vec![]).await;
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
        write(&store, &snap, &new, HistoryLimits::new(50)).await,
        (WriteOutcome::MissionDeleted, WritePath::Merged)
    );
    assert!(runner_rows(&admin, "m1").await.is_empty());
    assert_eq!(run_statuses(&admin, "m1").await, ["failed"]);
}

#[tokio::test]
async fn another_runners_claim_writes_nothing() {
    let (_db, store, admin, snap) = due_mission("wb_lost", vec![]).await;
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
        write(&store, &snap, &new, HistoryLimits::new(50)).await,
        (WriteOutcome::Written, WritePath::Direct)
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
    let (_db, store, admin, snap) = due_mission("wb_400", history).await;
    let new = iteration("new", "awaiting-review", "planned");
    assert_eq!(
        write(&store, &snap, &new, HistoryLimits::new(50)).await,
        (WriteOutcome::Written, WritePath::Direct)
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
    let (_db, store, admin, snap) = due_mission("wb_full", pending).await;
    let limits = HistoryLimits {
        row_max_bytes: 20_000,
        ..HistoryLimits::new(50)
    };
    assert!(limits.row_max_bytes < ROW_MAX_BYTES);
    let new = iteration("new", "awaiting-review", "planned");
    match write(&store, &snap, &new, limits).await {
        (WriteOutcome::HistoryFull { bytes }, WritePath::Direct) => {
            assert!(bytes > 30_000, "{bytes}")
        }
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
    let (_db, store, admin, snap) = due_mission("wb_deep", vec![old.clone()]).await;
    let mut deep = json!("bottom");
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let future = to_iso_ms(Utc::now() + chrono::Duration::hours(1));
    device_update(&admin, json!({"iterations": [deep]}), &future).await;
    let new = iteration("new", "awaiting-review", "planned");
    assert_eq!(
        write(&store, &snap, &new, HistoryLimits::new(50)).await,
        (WriteOutcome::Written, WritePath::Merged)
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

// ---- the direct (one-statement) path -------------------------------------------------

#[tokio::test]
async fn the_direct_write_is_stamped_with_the_database_clock_of_its_own_statement() {
    let (_db, store, admin, snap) = due_mission("wb_direct_clock", vec![]).await;
    let new = iteration("new", "awaiting-review", "planned");
    assert_eq!(
        write(&store, &snap, &new, HistoryLimits::new(50)).await,
        (WriteOutcome::Written, WritePath::Direct)
    );
    let row = admin
        .query_one(
            "SELECT field_meta, created_at FROM sync_changes WHERE client_id = 'mana-ai-runner'",
            &[],
        )
        .await
        .unwrap();
    let (meta, created): (Value, DateTime<Utc>) = (row.get(0), row.get(1));
    // The statement's transaction start, exactly as the row's created_at.
    let at = to_iso_ms(created);
    assert_eq!(meta, json!({"iterations": at, "nextRunAt": at}));
    assert_eq!(run_statuses(&admin, "m1").await, ["written"]);
}

#[tokio::test]
async fn a_fast_device_clock_in_the_loaded_snapshot_raises_the_direct_stamp() {
    let db = fresh_db("wb_direct_ahead").await;
    let (store, admin) = (db.service_store(), db.admin().await);
    // The device that wrote the mission runs a day ahead; its stamps are in the snapshot.
    let ahead = Utc::now() + chrono::Duration::days(1);
    let ahead_iso = to_iso_ms(ahead);
    let theirs = iteration("theirs", "approved", "approved");
    Change::new(
        USER,
        "aiMissions",
        "m1",
        mission_record(json!({
            "nextRunAt": to_iso_ms(due()), "iterations": [theirs],
            "cadence": {"kind": "interval", "everyMinutes": 60}
        })),
    )
    .field_meta(json!({"iterations": ahead_iso, "nextRunAt": ahead_iso}))
    .push(&admin)
    .await;
    refresh(&store).await;
    claim(&store, due(), "new").await;
    let snap = load(&store).await;
    let new = iteration("new", "awaiting-review", "planned");
    assert_eq!(
        write(&store, &snap, &new, HistoryLimits::new(50)).await,
        (WriteOutcome::Written, WritePath::Direct)
    );
    let meta: Value = runner_rows(&admin, "m1").await[0].get("field_meta");
    let one_after = to_iso_ms(parse_iso(&ahead_iso).unwrap() + chrono::Duration::milliseconds(1));
    assert_eq!(meta["iterations"], one_after.as_str(), "{meta}");
    assert_eq!(meta["nextRunAt"], one_after.as_str(), "{meta}");
    let merged = merged_mission(&admin, USER, "m1").await.unwrap();
    assert_eq!(merged["iterations"], json!([theirs, new]));
}

#[tokio::test]
async fn a_refresh_during_planning_sends_the_write_back_through_the_merge() {
    let old = iteration("old", "awaiting-review", "planned");
    let (_db, store, admin, snap) = due_mission("wb_refreshed", vec![old.clone()]).await;
    // The device approves the step and the next pass folds it in before the write-back:
    // the loaded snapshot is outdated although the log holds no unfolded row.
    let mut edited = old.clone();
    edited["plan"][0]["status"] = json!("approved");
    device_update(
        &admin,
        json!({"iterations": [edited]}),
        &to_iso_ms(Utc::now()),
    )
    .await;
    refresh(&store).await;
    assert_ne!(
        load(&store).await.version,
        snap.version,
        "snapshot rewritten"
    );
    let new = iteration("new", "awaiting-review", "planned");
    assert_eq!(
        write(&store, &snap, &new, HistoryLimits::new(50)).await,
        (WriteOutcome::Written, WritePath::Merged)
    );
    let merged = merged_mission(&admin, USER, "m1").await.unwrap();
    assert_eq!(merged["iterations"], json!([edited, new]));
}

#[tokio::test]
async fn two_write_backs_of_one_mission_at_once_keep_both_iterations() {
    for round in 0..5 {
        let (_db, store, admin, snap) = due_mission(&format!("wb_two_{round}"), vec![]).await;
        // A second run of the same mission (another due time), claimed by another runner.
        let later = due() + chrono::Duration::minutes(30);
        let other = "runner-other";
        let claimed = store
            .claim_run(&ClaimRequest {
                user_id: USER,
                mission_id: "m1",
                due_at: later,
                iteration_id: "second",
                runner_id: other,
                lease: Duration::from_secs(300),
                slot: AgentSlot {
                    agent_id: "agent-two".into(),
                    max_concurrent: 1,
                },
            })
            .await
            .expect("second claim");
        assert_eq!(claimed, Claim::Claimed);
        let first = iteration("new", "awaiting-review", "planned");
        let second = iteration("second", "awaiting-review", "planned");
        let actor = json!({"kind": "ai", "principalId": DEFAULT_AGENT_ID});
        let mut a = written_run((USER, "m1", due()), RUNNER, &first, None, &actor);
        let mut b = written_run((USER, "m1", later), other, &second, None, &actor);
        let loaded = Loaded {
            record: &snap.record,
            version: snap.version,
        };
        a.loaded = Some(loaded);
        b.loaded = Some(loaded);
        let (ra, rb) = tokio::join!(
            store.write_back_with_path(&a),
            store.write_back_with_path(&b)
        );
        let paths = [ra.unwrap(), rb.unwrap()];
        assert!(
            paths.iter().all(|(o, _)| *o == WriteOutcome::Written),
            "{paths:?}"
        );
        // At most one can write over the loaded snapshot; the other sees its row.
        assert!(
            paths.iter().any(|(_, p)| *p == WritePath::Merged),
            "{paths:?}"
        );
        let merged = merged_mission(&admin, USER, "m1").await.unwrap();
        let mut got = ids(&merged);
        got.sort();
        assert_eq!(got, ["new", "second"], "round {round}: {paths:?}");
    }
}

#[tokio::test]
async fn the_database_stamp_has_the_web_apps_iso_form() {
    let db = fresh_db("wb_stamp_form").await;
    let admin = db.admin().await;
    // Instants far enough ahead that the floor wins over the clock, with every kind of
    // fraction (whole, milliseconds, microseconds that must be truncated, .999999).
    let base = Utc::now() + chrono::Duration::days(400);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut instants = vec![
        Utc.with_ymd_and_hms(2099, 12, 31, 23, 59, 59)
            .single()
            .unwrap()
            + chrono::Duration::microseconds(999_999),
        Utc.with_ymd_and_hms(2096, 2, 29, 0, 0, 0).single().unwrap(),
    ];
    for _ in 0..300 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let micros = (seed >> 20) % (50 * 365 * 86_400 * 1_000_000);
        instants.push(base + chrono::Duration::microseconds(micros as i64));
    }
    for t in instants {
        let got: String = admin
            .query_one("SELECT mana_ai.write_stamp($1)", &[&t])
            .await
            .unwrap()
            .get(0);
        assert_eq!(got, to_iso_ms(t), "{t:?}");
    }
    // Below the clock, the clock wins.
    let past = Utc.with_ymd_and_hms(2001, 1, 1, 0, 0, 0).single().unwrap();
    let got: String = admin
        .query_one("SELECT mana_ai.write_stamp($1)", &[&past])
        .await
        .unwrap()
        .get(0);
    assert!(
        parse_iso(&got).unwrap() > Utc::now() - chrono::Duration::minutes(1),
        "{got}"
    );
}

async fn refresh(store: &Store) {
    let opts = RefreshOptions {
        safety_margin: Duration::ZERO,
        ..RefreshOptions::default()
    };
    store.refresh_snapshots(opts).await.expect("refresh");
}

async fn claim(store: &Store, due_at: DateTime<Utc>, iteration_id: &str) {
    let claim = store
        .claim_run(&ClaimRequest {
            user_id: USER,
            mission_id: "m1",
            due_at,
            iteration_id,
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
}
