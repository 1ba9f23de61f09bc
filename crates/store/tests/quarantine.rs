//! Hostile `sync_changes` rows: each is quarantined (skipped, recorded, counted) while
//! everything else in the same window — the same user's other records, other users — is
//! folded in, the cursor passes it, and a later refresh (or a restarted one) is fine.
//! Also: a panic inside the refresh leaves no lock behind.

use std::time::{Duration, Instant};

use futures::FutureExt;
use mana_ai_store::quarantine::{MAX_ID_BYTES, MAX_JSON_DEPTH, MAX_ROW_BYTES, MAX_STRING_BYTES};
use mana_ai_store::testkit::faults::{panic_refresh_on_user, stop_refresh_panics};
use mana_ai_store::testkit::rows::{mission_record, scalar};
use mana_ai_store::testkit::{fresh_db, push_mission};
use mana_ai_store::{QuarantineReason, RefreshOptions, RefreshOutcome, RefreshStats, Store};
use serde_json::json;

fn opts() -> RefreshOptions {
    RefreshOptions {
        batch_rows: 5_000,
        safety_margin: Duration::ZERO,
    }
}

async fn refresh(store: &Store) -> RefreshStats {
    match store.refresh_snapshots(opts()).await.expect("refresh") {
        RefreshOutcome::Done(s) => s,
        RefreshOutcome::Busy => panic!("refresh busy"),
    }
}

/// Inserts a row whose `data` / `field_meta` are given as JSON text (so values serde
/// cannot represent, such as `1e400`, reach the table as a device could write them).
async fn push_raw(
    c: &tokio_postgres::Client,
    user: &str,
    table: &str,
    record: &str,
    data: &str,
    meta: &str,
) {
    c.execute(
        "INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta,
                                   client_id)
         VALUES ('ai', $1, $2, $3, 'insert', $4::text::jsonb, $5::text::jsonb, 'webapp')",
        &[&table, &record, &user, &data, &meta],
    )
    .await
    .expect("push raw row");
}

fn nested(depth: usize) -> String {
    format!(
        "{{\"title\":\"deep\",\"x\":{}{}}}",
        "[".repeat(depth - 1),
        "]".repeat(depth - 1)
    )
}

/// JSON text of an object whose `jsonb` rendering (what the refresh reads) is exactly
/// `bytes` long, made of strings no longer than the string limit.
async fn sized_object(c: &tokio_postgres::Client, bytes: usize) -> String {
    let render = |z: usize| {
        let fields: Vec<String> = (0..bytes.div_ceil(MAX_STRING_BYTES) - 1)
            .map(|i| format!("\"f{i}\":\"{}\"", "b".repeat(MAX_STRING_BYTES)))
            .collect();
        format!("{{{},\"z\":\"{}\"}}", fields.join(","), "b".repeat(z))
    };
    let mut z = MAX_STRING_BYTES / 2;
    for _ in 0..3 {
        let text = render(z);
        let len: i32 = c
            .query_one("SELECT octet_length($1::text::jsonb::text)", &[&text])
            .await
            .unwrap()
            .get(0);
        let len = len as usize;
        if len == bytes {
            return text;
        }
        z = z + bytes - len;
    }
    panic!("could not size the object to {bytes} bytes");
}

fn good_mission() -> serde_json::Value {
    mission_record(json!({"nextRunAt": "2026-01-05T06:00:00.000Z"}))
}

#[tokio::test]
async fn a_200_deep_mission_is_quarantined_and_everyone_else_is_folded_in() {
    let db = fresh_db("q_deep").await;
    let admin = db.admin().await;
    let store = db.service_store();
    // One window: A's hostile row, A's other mission, B's mission.
    push_raw(&admin, "qa", "aiMissions", "m-deep", &nested(200), "{}").await;
    push_mission(&admin, "qa", "m-a", good_mission()).await;
    push_mission(&admin, "qb", "m-b", good_mission()).await;
    let stats = refresh(&store).await;
    assert_eq!(
        stats.quarantined.get(&QuarantineReason::TooDeep),
        Some(&1),
        "{stats:?}"
    );
    assert_eq!(stats.rows_applied, 2, "{stats:?}");
    let due = store
        .list_due_keys("2026-01-05T09:00:00Z".parse().unwrap(), 10)
        .await
        .unwrap();
    let ids: Vec<&str> = due.iter().map(|k| k.mission_id.as_str()).collect();
    assert_eq!(ids, ["m-a", "m-b"]);
    // The cursor passed the row: nothing is left to read, nothing is recorded twice.
    let again = refresh(&store).await;
    assert_eq!((again.rows_applied, again.quarantined.len()), (0, 0));
    // A restarted runner (a new pool) is fine too.
    let restarted = db.service_store();
    let after_restart = refresh(&restarted).await;
    assert_eq!(after_restart.rows_applied, 0);
    let listed = restarted.list_quarantined(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    let q = &listed[0];
    assert_eq!(
        (
            q.user_id.as_str(),
            q.table_name.as_str(),
            q.record_id.as_str(),
            q.reason.as_str()
        ),
        ("qa", "aiMissions", "m-deep", "too-deep")
    );
    assert!(!q.detail.contains('['), "{q:?}");
    let snapshots: i64 = scalar(
        &admin,
        "SELECT count(*) FROM mana_ai.mission_snapshots WHERE mission_id = 'm-deep'",
    )
    .await;
    assert_eq!(snapshots, 0);
}

#[tokio::test]
async fn every_limit_is_enforced_at_its_edge() {
    let db = fresh_db("q_edges").await;
    let admin = db.admin().await;
    let store = db.service_store();
    let at_depth = nested(MAX_JSON_DEPTH);
    let over_depth = nested(MAX_JSON_DEPTH + 1);
    let string = |n: usize| format!("{{\"title\":\"{}\"}}", "s".repeat(n));
    let row_ok = sized_object(&admin, MAX_ROW_BYTES - 2).await;
    let row_over = sized_object(&admin, MAX_ROW_BYTES - 1).await;
    let long_id = "i".repeat(MAX_ID_BYTES + 1);
    let ok_id = "j".repeat(MAX_ID_BYTES);
    // (record id, data, field_meta, expected refusal)
    let cases: Vec<(&str, String, &str, Option<QuarantineReason>)> = vec![
        ("depth-ok", at_depth, "{}", None),
        (
            "depth-over",
            over_depth,
            "{}",
            Some(QuarantineReason::TooDeep),
        ),
        ("string-ok", string(MAX_STRING_BYTES), "{}", None),
        (
            "string-over",
            string(MAX_STRING_BYTES + 1),
            "{}",
            Some(QuarantineReason::FieldTooLarge),
        ),
        // `field_meta` is `{}`: 2 bytes of the row.
        ("row-ok", row_ok, "{}", None),
        ("row-over", row_over, "{}", Some(QuarantineReason::TooLarge)),
        (
            "array",
            "[1,2]".into(),
            "{}",
            Some(QuarantineReason::NotAnObject),
        ),
        (
            "text",
            "\"x\"".into(),
            "{}",
            Some(QuarantineReason::NotAnObject),
        ),
        (
            "meta",
            "{}".into(),
            "[\"t\"]",
            Some(QuarantineReason::NotAnObject),
        ),
        (
            "huge-number",
            "{\"title\":1e400}".into(),
            "{}",
            Some(QuarantineReason::Undecodable),
        ),
        ("null-data", "null".into(), "null", None),
        (ok_id.as_str(), "{}".into(), "{}", None),
        (
            long_id.as_str(),
            "{}".into(),
            "{}",
            Some(QuarantineReason::IdTooLong),
        ),
    ];
    for (id, data, meta, _) in &cases {
        push_raw(&admin, "qe", "aiMissions", id, data, meta).await;
    }
    push_mission(&admin, "qf", "m-ok", good_mission()).await;
    let stats = refresh(&store).await;
    let refused = cases.iter().filter(|c| c.3.is_some()).count();
    assert_eq!(
        stats.quarantined.values().sum::<usize>(),
        refused,
        "{stats:?}"
    );
    assert_eq!(stats.rows_applied, cases.len() - refused + 1, "{stats:?}");
    let listed = store.list_quarantined(100).await.unwrap();
    for (id, _, _, expected) in &cases {
        let clipped = &id[..id.len().min(MAX_ID_BYTES)];
        let got = listed
            .iter()
            .find(|q| q.record_id == clipped)
            .map(|q| q.reason.clone());
        assert_eq!(
            got.as_deref(),
            expected.map(QuarantineReason::as_str),
            "record {}",
            &id[..id.len().min(20)]
        );
    }
    let snapshot_ids: Vec<String> = store
        .user_missions("qe")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.mission_id)
        .collect();
    assert_eq!(
        snapshot_ids.len(),
        cases.len() - refused,
        "{snapshot_ids:?}"
    );
    assert_eq!(store.user_missions("qf").await.unwrap().len(), 1);
}

#[tokio::test]
async fn infinite_times_neither_stop_the_refresh_nor_anyone_else() {
    let db = fresh_db("q_times").await;
    let admin = db.admin().await;
    let store = db.service_store();
    for (id, at) in [("m-past", "-infinity"), ("m-future", "infinity")] {
        admin
            .execute(
                "INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data,
                                           client_id, created_at)
                 VALUES ('ai', 'aiMissions', $1, 'qt', 'insert', '{}', 'webapp', $2::text::timestamptz)",
                &[&id, &at],
            )
            .await
            .unwrap();
    }
    let hostile_times = mission_record(
        json!({"nextRunAt": "-infinity", "createdAt": "+275760-09-13T00:00:00.000Z"}),
    );
    push_mission(&admin, "qt", "m-times", hostile_times).await;
    push_mission(&admin, "qu", "m-ok", good_mission()).await;
    let stats = refresh(&store).await;
    assert_eq!(stats.rows_applied, 2, "{stats:?}");
    assert_eq!(store.user_missions("qu").await.unwrap().len(), 1);
    let again = refresh(&store).await;
    assert_eq!(again.rows_applied, 0);
}

/// Polls until `store` can refresh (not `Busy`); answers how long that took.
async fn refresh_soon(store: &Store, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        match store.refresh_snapshots(opts()).await.expect("refresh") {
            RefreshOutcome::Done(_) => return started.elapsed(),
            RefreshOutcome::Busy if started.elapsed() < within => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            RefreshOutcome::Busy => panic!("the refresh lock is still held after {within:?}"),
        }
    }
}

#[tokio::test]
async fn a_panic_inside_the_refresh_leaves_no_lock_behind() {
    let db = fresh_db("q_panic").await;
    let admin = db.admin().await;
    // One pooled connection: a connection that kept the lock would be reused.
    let mut cfg = mana_ai_store::StoreConfig::new(db.service_url.clone());
    cfg.max_connections = 1;
    let first = Store::connect(&cfg).unwrap();
    push_mission(&admin, "q-panic-user", "m-p", good_mission()).await;
    panic_refresh_on_user("q-panic-user");
    let caught = std::panic::AssertUnwindSafe(first.refresh_snapshots(opts()))
        .catch_unwind()
        .await;
    stop_refresh_panics("q-panic-user");
    assert!(caught.is_err(), "the injected panic did not happen");
    // Another instance can refresh right after (the discarded session ends at once).
    let other = db.service_store();
    let took = refresh_soon(&other, Duration::from_secs(2)).await;
    eprintln!("another instance refreshed {took:?} after the panic");
    // And the instance that panicked keeps working with its (new) pooled connection.
    push_mission(&admin, "q-other", "m-o", good_mission()).await;
    let took = refresh_soon(&first, Duration::from_secs(2)).await;
    assert!(took < Duration::from_secs(2));
    let held: i64 = scalar(
        &admin,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
    )
    .await;
    assert_eq!(held, 0);
}

#[tokio::test]
async fn a_cancelled_refresh_leaves_no_lock_behind() {
    let db = fresh_db("q_cancel").await;
    let admin = db.admin().await;
    let mut cfg = mana_ai_store::StoreConfig::new(db.service_url.clone());
    cfg.max_connections = 1;
    let first = Store::connect(&cfg).unwrap();
    // Hold the cursor row so the refresh blocks in its write, lock held.
    push_mission(&admin, "q-c", "m-c", good_mission()).await;
    let mut holder = db.admin().await;
    let tx = holder.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO mana_ai.refresh_cursor (stream, position) VALUES ('ai', 'epoch')
         ON CONFLICT (stream) DO UPDATE SET position = mana_ai.refresh_cursor.position",
        &[],
    )
    .await
    .unwrap();
    let cancelled =
        tokio::time::timeout(Duration::from_millis(300), first.refresh_snapshots(opts())).await;
    assert!(cancelled.is_err(), "the refresh should have been blocked");
    tx.rollback().await.unwrap();
    let other = db.service_store();
    refresh_soon(&other, Duration::from_secs(2)).await;
    refresh_soon(&first, Duration::from_secs(2)).await;
}
