//! Real PostgreSQL: row-level security under a least-privilege role, and the
//! incremental refresh (no lost rows, cost proportional to new rows, deletes final).

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use mana_ai_store::testkit::faults::{
    page_refresh_users, panic_refresh_on_user, stop_refresh_panics,
};
use mana_ai_store::testkit::rows::{first_column, mission_record, scalar};
use mana_ai_store::testkit::{fresh_db, Change, TestDb};
use mana_ai_store::{DueMission, RefreshOptions, RefreshOutcome, RefreshStats, Store};
use serde_json::{json, Value};

fn opts() -> RefreshOptions {
    RefreshOptions {
        batch_rows: 5_000,
        safety_margin: Duration::ZERO,
    }
}

async fn refresh(store: &Store) -> RefreshStats {
    refresh_in_batches(store, opts().batch_rows).await
}

/// A refresh with no safety margin and the given batch size; busy is a failure.
async fn refresh_in_batches(store: &Store, batch_rows: i32) -> RefreshStats {
    let opts = RefreshOptions {
        batch_rows,
        ..opts()
    };
    match store.refresh_snapshots(opts).await.expect("refresh") {
        RefreshOutcome::Done(s) => s,
        RefreshOutcome::Busy => panic!("unexpected busy"),
    }
}

/// Inserts a row the way the sync server does (it owns the table; superuser here).
async fn push(
    c: &tokio_postgres::Client,
    user: &str,
    table: &str,
    record: &str,
    op: &str,
    data: Value,
    field_meta: Value,
) {
    Change::new(user, table, record, data)
        .op(op)
        .field_meta(field_meta)
        .client("device-1")
        .push(c)
        .await;
}

/// Inserts a mission record from device 1.
async fn insert_mission(c: &tokio_postgres::Client, user: &str, id: &str, data: Value) {
    push(c, user, "aiMissions", id, "insert", data, json!({})).await;
}

/// Inserts an agent record from device 1.
async fn insert_agent(c: &tokio_postgres::Client, user: &str, id: &str, data: Value) {
    push(c, user, "agents", id, "insert", data, json!({})).await;
}

/// Renames a mission from device 1, its title stamped at `stamp`.
async fn retitle(c: &tokio_postgres::Client, user: &str, id: &str, title: &str, stamp: &str) {
    let (data, meta) = (json!({"title": title}), json!({"title": stamp}));
    push(c, user, "aiMissions", id, "update", data, meta).await;
}

/// The missions due now (at most 10).
async fn due_now(store: &Store) -> Vec<DueMission> {
    store.list_due_missions(Utc::now(), 10).await.unwrap()
}

/// The ids of the user's missions, as the store lists them.
async fn mission_ids(store: &Store, user: &str) -> Vec<String> {
    let missions = store.user_missions(user).await.unwrap();
    missions.into_iter().map(|m| m.mission_id).collect()
}

fn mission(title: &str, next_run_at: &str) -> Value {
    mission_record(json!({"title": title, "nextRunAt": next_run_at}))
}

async fn setup(prefix: &str) -> (TestDb, Store, tokio_postgres::Client) {
    let db = fresh_db(prefix).await;
    let store = db.service_store();
    let admin = db.admin().await;
    (db, store, admin)
}

#[tokio::test]
async fn service_role_is_least_privilege_and_rls_scopes_every_read() {
    let (_db, store, admin) = setup("rls").await;
    insert_mission(&admin, "u1", "m1", mission("a", "2020-01-01T00:00:00.000Z")).await;
    insert_mission(&admin, "u2", "m2", mission("b", "2020-01-01T00:00:00.000Z")).await;

    let tx = store.begin_user("u1").await.unwrap();
    let row = tx
        .client()
        .query_one(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0), "service role must not be superuser");
    assert!(!row.get::<_, bool>(1), "service role must not bypass RLS");
    let n: i64 = tx
        .client()
        .query_one("SELECT count(*) FROM sync_changes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "u1 sees only its own row");
    // Writing another user's row is refused by the policy's WITH CHECK.
    let err = tx
        .client()
        .execute(
            "INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, client_id)
             VALUES ('ai','aiMissions','x','u2','update','mana-ai-runner')",
            &[],
        )
        .await
        .unwrap_err();
    let msg = err
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("row-level security"), "{err:?}");
    drop(tx);

    assert!(matches!(
        store.begin_user("").await,
        Err(mana_ai_store::StoreError::Refused(_))
    ));
    // Outside withUser the service role sees nothing at all.
    let c = _db.service_client().await;
    let n: i64 = scalar(&c, "SELECT count(*) FROM sync_changes").await;
    assert_eq!(n, 0);
    // Yet discovery through the definer function finds both users' missions.
    let s = refresh(&store).await;
    assert_eq!(s.new_snapshots, 2);
    assert_eq!(s.users_processed, 2);
    store
        .verify_discovery()
        .await
        .expect("privileged discovery");
}

#[tokio::test]
async fn refresh_merges_missions_and_agents_and_lists_due() {
    let (_db, store, admin) = setup("merge").await;
    insert_mission(
        &admin,
        "u1",
        "m1",
        mission("first", "2020-01-01T00:00:00.000Z"),
    )
    .await;
    retitle(&admin, "u1", "m1", "second", "2026-01-01T00:00:00.000Z").await;
    insert_agent(
        &admin,
        "u1",
        "a1",
        json!({"name": "Scout", "role": "r", "state": "active", "maxConcurrentMissions": 1}),
    )
    .await;
    let s = refresh(&store).await;
    assert_eq!(s.rows_applied, 3);
    assert_eq!(s.new_snapshots, 2);

    let due = due_now(&store).await;
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].record["title"], "second");
    assert_eq!(
        due[0].record["__fieldMeta"],
        json!({"title": "2026-01-01T00:00:00.000Z"})
    );
    let agents = store.user_agents("u1").await.unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].record["name"], "Scout");
}

#[tokio::test]
async fn nothing_new_means_nothing_read_and_unchanged_content_is_not_rewritten() {
    let (_db, store, admin) = setup("incr").await;
    insert_mission(&admin, "u1", "m1", mission("t", "2020-01-01T00:00:00.000Z")).await;
    retitle(&admin, "u1", "m1", "t2", "2026-05-01T00:00:00.000Z").await;
    refresh(&store).await;
    let before = store.user_missions("u1").await.unwrap()[0].updated_at;

    let s = refresh(&store).await;
    assert_eq!(s.rows_applied, 0);
    assert_eq!(s.users_processed, 0);

    // A stale update (older stamp) changes nothing: no rewrite.
    retitle(&admin, "u1", "m1", "stale", "2026-04-01T00:00:00.000Z").await;
    let s = refresh(&store).await;
    assert_eq!(s.rows_applied, 1);
    assert_eq!(s.unchanged_snapshots, 1);
    assert_eq!(s.updated_snapshots, 0);
    let after = store.user_missions("u1").await.unwrap();
    assert_eq!(after[0].updated_at, before);
    assert_eq!(after[0].record["title"], "t2");
}

#[tokio::test]
async fn a_transaction_open_across_a_refresh_is_not_lost() {
    let (db, store, admin) = setup("gap").await;
    // Device A starts a transaction and inserts (created_at = its start time) but does
    // not commit yet.
    let mut slow = db.admin().await;
    let tx = slow.transaction().await.unwrap();
    Change::new(
        "u1",
        "aiMissions",
        "slow",
        mission("slow", "2020-01-01T00:00:00.000Z"),
    )
    .client("device-a")
    .push(&tx)
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Device B commits a later row; refreshes run while A is still open.
    insert_mission(
        &admin,
        "u1",
        "fast",
        mission("fast", "2020-01-01T00:00:00.000Z"),
    )
    .await;
    refresh(&store).await;
    refresh(&store).await;
    let ids = mission_ids(&store, "u1").await;
    assert!(
        !ids.contains(&"slow".to_string()),
        "uncommitted row cannot be visible"
    );
    // Now A commits: its created_at is older than B's row, which a max(created_at)
    // cursor would already have passed.
    tx.commit().await.unwrap();
    let s = refresh(&store).await;
    assert!(s.rows_applied >= 1);
    let ids = mission_ids(&store, "u1").await;
    assert!(
        ids.contains(&"slow".to_string()),
        "late-committing row was lost: {ids:?}"
    );
    assert!(ids.contains(&"fast".to_string()));
}

#[tokio::test]
async fn deletes_are_final_and_hide_the_mission() {
    let (_db, store, admin) = setup("del").await;
    insert_mission(&admin, "u1", "m1", mission("t", "2020-01-01T00:00:00.000Z")).await;
    refresh(&store).await;
    assert_eq!(due_now(&store).await.len(), 1);
    push(
        &admin,
        "u1",
        "aiMissions",
        "m1",
        "delete",
        json!({"deletedAt": "2026-01-01T00:00:00.000Z"}),
        json!({}),
    )
    .await;
    refresh(&store).await;
    assert!(due_now(&store).await.is_empty());
    // A later update must not resurrect it.
    push(
        &admin,
        "u1",
        "aiMissions",
        "m1",
        "update",
        json!({"title": "zombie", "state": "active"}),
        json!({"title": "2027-01-01T00:00:00.000Z", "state": "2027-01-01T00:00:00.000Z"}),
    )
    .await;
    refresh(&store).await;
    assert!(due_now(&store).await.is_empty());
    let snaps = store.user_missions("u1").await.unwrap();
    assert!(snaps[0].deleted);
}

#[tokio::test]
async fn due_missions_compare_instants_oldest_first_with_a_limit() {
    let (_db, store, admin) = setup("due").await;
    // 10:00+02:00 is 08:00Z: earlier than 09:00Z although it sorts later as text.
    insert_mission(
        &admin,
        "u1",
        "late",
        mission("late", "2026-01-01T09:00:00.000Z"),
    )
    .await;
    insert_mission(
        &admin,
        "u1",
        "early",
        mission("early", "2026-01-01T10:00:00+02:00"),
    )
    .await;
    insert_mission(
        &admin,
        "u2",
        "future",
        mission("future", "2999-01-01T00:00:00.000Z"),
    )
    .await;
    let mut paused = mission("paused", "2020-01-01T00:00:00.000Z");
    paused["state"] = json!("paused");
    insert_mission(&admin, "u2", "paused", paused).await;
    let mut no_next = mission("none", "x");
    no_next["nextRunAt"] = Value::Null;
    insert_mission(&admin, "u2", "none", no_next).await;
    insert_mission(&admin, "u2", "garbage", mission("garbage", "not-a-date")).await;
    refresh(&store).await;
    let now: DateTime<Utc> = "2026-06-01T00:00:00Z".parse().unwrap();
    let due = store.list_due_missions(now, 10).await.unwrap();
    let ids: Vec<&str> = due.iter().map(|d| d.mission_id.as_str()).collect();
    assert_eq!(ids, vec!["early", "late"]);
    let due = store.list_due_missions(now, 1).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].mission_id, "early");

    // The due query is served by the partial index.
    let c = mana_ai_store::connect_once(&_db.service_url).await.unwrap();
    c.batch_execute("SET enable_seqscan = off").await.unwrap();
    let plan: Vec<String> = first_column(&c, "EXPLAIN SELECT user_id, mission_id, record, next_run_at FROM mana_ai.mission_snapshots
              WHERE state = 'active' AND NOT deleted AND next_run_at IS NOT NULL AND next_run_at <= now()
              ORDER BY next_run_at, user_id, mission_id LIMIT 10").await;
    assert!(
        plan.iter()
            .any(|l| l.contains("idx_mission_snapshots_due_at")),
        "{plan:#?}"
    );
}

#[tokio::test]
async fn batches_walk_the_whole_range() {
    let (_db, store, admin) = setup("batch").await;
    for i in 0..25 {
        insert_mission(
            &admin,
            &format!("u{}", i % 4),
            &format!("m{i}"),
            mission("t", "2020-01-01T00:00:00.000Z"),
        )
        .await;
    }
    let s = refresh_in_batches(&store, 4).await;
    assert_eq!(s.rows_applied, 25);
    assert_eq!(s.new_snapshots, 25);
    // Each user has 6 or 7 rows, more than a batch's 4, so each is read alone; the
    // window (1,000 batches' worth of rows) holds all 25.
    assert_eq!(s.batches, 4, "{s:?}");
    assert_eq!(s.windows, 1, "{s:?}");
    assert_eq!(
        store
            .list_due_missions(Utc::now(), 100)
            .await
            .unwrap()
            .len(),
        25
    );
}

#[tokio::test]
async fn unprivileged_discovery_fails_loudly_instead_of_seeing_nothing() {
    let (_db, store, admin) = setup("unpriv").await;
    admin
        .batch_execute(
            "ALTER FUNCTION mana_ai.changed_ai_records(timestamptz, timestamptz) OWNER TO mana_ai_svc",
        )
        .await
        .unwrap();
    let err = store.verify_discovery().await.unwrap_err().to_string();
    assert!(err.contains("row-level security"), "{err}");
}

#[tokio::test]
async fn migration_is_idempotent_and_keeps_data() {
    let (db, store, admin) = setup("idem").await;
    insert_mission(&admin, "u1", "m1", mission("t", "2020-01-01T00:00:00.000Z")).await;
    refresh(&store).await;
    mana_ai_store::schema::migrate(&admin, Some(mana_ai_store::testkit::SERVICE_ROLE))
        .await
        .expect("second migration");
    mana_ai_store::schema::create_sync_changes_for_dev(&db.admin().await)
        .await
        .expect("second DDL");
    assert_eq!(due_now(&store).await.len(), 1);
}

/// The write-once backlog: users `<prefix>u0`…`u4`, each with an agent and two
/// missions, then 24 rounds of explicitly stamped edits interleaved across the users (as
/// many users' edits arrive): both missions' titles every round, the agent's memory
/// every 6th round, and `u4` deletes `m1` in round 20. `refresh_each_round` refreshes
/// after every round (a record is then rewritten once per round, as a refresh of many
/// windows would); the stamps are explicit, so every database merges to the same content.
async fn push_backlog(
    admin: &tokio_postgres::Client,
    prefix: &str,
    refresh_each_round: Option<&Store>,
) -> usize {
    let mut rows = 0;
    for u in 0..5 {
        let user = format!("{prefix}u{u}");
        insert_agent(
            admin,
            &user,
            "legacy:ai-default",
            json!({"name": "Mana", "role": "r", "state": "active"}),
        )
        .await;
        for m in 0..2 {
            let title = format!("t0 {user}");
            insert_mission(
                admin,
                &user,
                &format!("m{m}"),
                mission(&title, "2020-01-01T00:00:00.000Z"),
            )
            .await;
        }
        rows += 3;
    }
    for i in 1..=24 {
        let stamp = format!("2026-01-01T00:00:{i:02}.000Z");
        for u in 0..5 {
            let user = format!("{prefix}u{u}");
            for m in 0..2 {
                retitle(
                    admin,
                    &user,
                    &format!("m{m}"),
                    &format!("t{i} {user}"),
                    &stamp,
                )
                .await;
                rows += 1;
            }
            if i % 6 == 0 {
                let (data, meta) = (
                    json!({"memory": format!("round {i}")}),
                    json!({"memory": stamp}),
                );
                push(
                    admin,
                    &user,
                    "agents",
                    "legacy:ai-default",
                    "update",
                    data,
                    meta,
                )
                .await;
                rows += 1;
            }
            if i == 20 && u == 4 {
                push(
                    admin,
                    &user,
                    "aiMissions",
                    "m1",
                    "delete",
                    Value::Null,
                    json!({}),
                )
                .await;
                rows += 1;
            }
        }
        if let Some(store) = refresh_each_round {
            refresh_in_batches(store, 1).await;
        }
    }
    rows
}

/// Every snapshot's content (not its positions: the databases' rows carry different
/// `created_at`), with the user prefix removed, in a fixed order.
async fn snapshot_contents(c: &tokio_postgres::Client, prefix: &str) -> Vec<String> {
    let sql = "SELECT 'mission ' || user_id || ' ' || mission_id || ' ' || deleted || ' ' ||
                      coalesce(state, '-') || ' ' || coalesce(next_run_at::text, '-') || ' ' ||
                      coalesce(agent_id, '-') || ' ' || record::text
                 FROM mana_ai.mission_snapshots
               UNION ALL
               SELECT 'agent ' || user_id || ' ' || agent_id || ' ' || deleted || ' ' || record::text
                 FROM mana_ai.agent_snapshots
               ORDER BY 1";
    let rows: Vec<String> = first_column(c, sql).await;
    rows.into_iter().map(|r| r.replace(prefix, "")).collect()
}

async fn cursor(c: &tokio_postgres::Client) -> Option<DateTime<Utc>> {
    c.query_opt(
        "SELECT position FROM mana_ai.refresh_cursor WHERE stream = 'ai'",
        &[],
    )
    .await
    .unwrap()
    .map(|r| r.get(0))
}

#[tokio::test]
async fn a_catch_up_writes_each_record_once_with_the_same_result_and_survives_a_crash() {
    // Reference: the same backlog refreshed after every round, so each record is written
    // once per round — the result of a refresh that walks many windows.
    let (_ref_db, ref_store, ref_admin) = setup("once_ref").await;
    let total = push_backlog(&ref_admin, "once-ref-", Some(&ref_store)).await;
    let want = snapshot_contents(&ref_admin, "once-ref-").await;
    assert_eq!(want.len(), 15, "{want:#?}");

    // A catch-up of the whole backlog with batch_rows = 1: every user is a batch of its
    // own (55 or 56 rows), the backlog is 276 batches — and each of the 15 records
    // is written exactly once.
    let (_db, store, admin) = setup("once").await;
    assert_eq!(push_backlog(&admin, "once-", None).await, total);
    let s = refresh_in_batches(&store, 1).await;
    assert_eq!(s.rows_applied, total, "{s:?}");
    assert_eq!(s.batches, 5, "{s:?}");
    assert_eq!(s.windows, 1, "{s:?}");
    assert_eq!(s.new_snapshots, 15, "{s:?}");
    assert_eq!(s.updated_snapshots + s.unchanged_snapshots, 0, "{s:?}");
    assert_eq!(snapshot_contents(&admin, "once-").await, want);
    let again = refresh_in_batches(&store, 1).await;
    assert_eq!(again.rows_applied, 0, "{again:?}");

    // The same with the window's users listed two at a time (three pages): the same
    // batches, writes and result.
    let (_paged_db, paged_store, paged_admin) = setup("once_paged").await;
    assert_eq!(push_backlog(&paged_admin, "once-paged-", None).await, total);
    page_refresh_users(2);
    let paged = paged_store
        .refresh_snapshots(RefreshOptions {
            batch_rows: 1,
            ..opts()
        })
        .await;
    page_refresh_users(0);
    let RefreshOutcome::Done(p) = paged.expect("paged refresh") else {
        panic!("unexpected busy");
    };
    assert_eq!(
        (p.rows_applied, p.batches, p.windows),
        (total, 5, 1),
        "{p:?}"
    );
    assert_eq!((p.new_snapshots, p.updated_snapshots), (15, 0), "{p:?}");
    assert!(cursor(&paged_admin).await.is_some());
    assert_eq!(snapshot_contents(&paged_admin, "once-paged-").await, want);

    // A crash in the middle of the catch-up (a panic while reading u3, after u0…u2's
    // batches were written): the cursor has not moved, and the next refresh repeats the
    // catch-up — u0…u2 come out unchanged, nothing is lost, the result is the same.
    let (_crash_db, crash_store, crash_admin) = setup("once_crash").await;
    assert_eq!(push_backlog(&crash_admin, "once-crash-", None).await, total);
    panic_refresh_on_user("once-crash-u3");
    let caught = std::panic::AssertUnwindSafe(crash_store.refresh_snapshots(RefreshOptions {
        batch_rows: 1,
        ..opts()
    }))
    .catch_unwind()
    .await;
    stop_refresh_panics("once-crash-u3");
    assert!(caught.is_err(), "the injected panic did not happen");
    assert_eq!(cursor(&crash_admin).await, None);
    let written: i64 = scalar(
        &crash_admin,
        "SELECT (SELECT count(*) FROM mana_ai.mission_snapshots) + (SELECT count(*) FROM mana_ai.agent_snapshots)",
    )
    .await;
    assert_eq!(written, 9, "u0…u2's records are written before the crash");
    let s = refresh_in_batches(&crash_store, 1).await;
    assert_eq!(s.rows_applied, total, "{s:?}");
    assert_eq!(s.unchanged_snapshots, 9, "{s:?}");
    assert_eq!(s.new_snapshots, 6, "{s:?}");
    assert_eq!(s.updated_snapshots, 0, "{s:?}");
    assert!(cursor(&crash_admin).await.is_some());
    assert_eq!(snapshot_contents(&crash_admin, "once-crash-").await, want);
}

/// The refresh reads rows through `mana_ai.read_ai_rows`, a SECURITY INVOKER function:
/// row-level security still decides what the service role sees, per user.
#[tokio::test]
async fn refresh_reads_stay_under_row_level_security_per_user() {
    let (db, store, admin) = setup("invoker").await;
    // Two users with records of the same ids (the shared default agent id, and a
    // mission id), different contents.
    for (user, name) in [("ua", "Alpha"), ("ub", "Bravo")] {
        insert_agent(
            &admin,
            user,
            "legacy:ai-default",
            json!({"name": name, "role": "r", "state": "active"}),
        )
        .await;
        insert_mission(
            &admin,
            user,
            "same-id",
            mission(name, "2020-01-01T00:00:00.000Z"),
        )
        .await;
    }
    let s = refresh(&store).await;
    assert_eq!((s.new_snapshots, s.users_processed), (4, 2), "{s:?}");
    for (user, name) in [("ua", "Alpha"), ("ub", "Bravo")] {
        let agents = store.user_agents(user).await.unwrap();
        assert_eq!(agents.len(), 1);
        assert_eq!(agents[0].record["name"], name, "{user}");
        let missions = store.user_missions(user).await.unwrap();
        assert_eq!(missions.len(), 1);
        assert_eq!(missions[0].record["title"], name, "{user}");
    }

    // The function is not a definer function: it runs with the caller's rights.
    let definer: bool = scalar(
        &admin,
        "SELECT prosecdef FROM pg_proc
              WHERE oid = 'mana_ai.read_ai_rows(text[],timestamptz,timestamptz)'::regprocedure",
    )
    .await;
    assert!(!definer, "read_ai_rows must be SECURITY INVOKER");

    // A policy that hides ub's rows from the service role is obeyed inside the
    // function, whatever user list the caller forges.
    admin
        .batch_execute(
            "CREATE POLICY hide_ub ON sync_changes AS RESTRICTIVE FOR SELECT TO mana_ai_svc
               USING (user_id <> 'ub')",
        )
        .await
        .unwrap();
    let svc = mana_ai_store::connect_once(&db.service_url).await.unwrap();
    let read_users = |users: Vec<&'static str>| {
        let svc = &svc;
        async move {
            svc.query(
                "SELECT user_id FROM mana_ai.read_ai_rows($1::text[], '-infinity', 'infinity')",
                &[&users],
            )
            .await
            .map(|rows| {
                rows.iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<Vec<_>>()
            })
        }
    };
    assert_eq!(
        read_users(vec!["ua", "ub"]).await.unwrap(),
        vec!["ua".to_string(), "ua".to_string()]
    );
    assert!(read_users(vec!["ub"]).await.unwrap().is_empty());
    // An empty user id is refused, as by withUser.
    let err = read_users(vec!["ua", ""]).await.unwrap_err();
    assert!(
        mana_ai_store::db_message(&err).contains("empty userID"),
        "{err:?}"
    );

    // Space membership does not leak another user's rows into a user's answer.
    Change::new(
        "uc",
        "aiMissions",
        "in-space",
        mission("shared space", "2020-01-01T00:00:00.000Z"),
    )
    .client("device-1")
    .space("sp-shared")
    .push(&admin)
    .await;
    let mut svc_tx_client = mana_ai_store::connect_once(&db.service_url).await.unwrap();
    let tx = svc_tx_client.transaction().await.unwrap();
    tx.batch_execute(
        "SELECT set_config('app.current_user_id', 'ua', true),
                set_config('app.current_user_space_ids', 'sp-shared', true)",
    )
    .await
    .unwrap();
    let visible: i64 = scalar(
        &tx,
        "SELECT count(*) FROM sync_changes WHERE user_id = 'uc'",
    )
    .await;
    assert_eq!(visible, 1, "the space policy shows uc's row to a member");
    let leaked: i64 = scalar(
        &tx,
        "SELECT count(*) FROM mana_ai.read_ai_rows(ARRAY['ua'], '-infinity', 'infinity')
              WHERE user_id <> 'ua'",
    )
    .await;
    assert_eq!(leaked, 0, "another user's row came back in ua's answer");
    // The caller's scope is restored after the call.
    let read: i64 = scalar(
        &tx,
        "SELECT count(*) FROM mana_ai.read_ai_rows(ARRAY['uc'], '-infinity', 'infinity')",
    )
    .await;
    assert_eq!(read, 1);
    let scope: String = scalar(&tx, "SELECT current_setting('app.current_user_id', true)").await;
    assert_eq!(scope, "ua");
    tx.rollback().await.unwrap();

    // And the refresh itself obeys the hiding policy: ub's new row is not projected,
    // ua's is.
    for user in ["ua", "ub"] {
        retitle(
            &admin,
            user,
            "same-id",
            &format!("{user} renamed"),
            "2026-06-01T00:00:00.000Z",
        )
        .await;
    }
    let s = refresh(&store).await;
    assert_eq!(s.rows_applied, 2, "ua's update and uc's insert: {s:?}");
    assert_eq!(
        store.user_missions("ua").await.unwrap()[0].record["title"],
        "ua renamed"
    );
    assert_eq!(
        store.user_missions("ub").await.unwrap()[0].record["title"],
        "Bravo"
    );
}

/// The refresh changes its connection's plan cache mode only while it holds the lock;
/// the pooled connection goes back with the service's `force_custom_plan`, also when
/// another runner holds the lock.
#[tokio::test]
async fn refresh_restores_its_session_and_skips_while_another_holds_the_lock() {
    let (db, _store, admin) = setup("session").await;
    // One connection, so the refresh's connection is the one inspected afterwards.
    let store = Store::connect(&mana_ai_store::StoreConfig {
        max_connections: 1,
        ..mana_ai_store::StoreConfig::new(db.service_url.clone())
    })
    .unwrap();
    insert_mission(&admin, "u1", "m1", mission("t", "2020-01-01T00:00:00.000Z")).await;
    let mode = |store: Store| async move {
        let tx = store.begin_user("u1").await.unwrap();
        let mode: String = tx
            .client()
            .query_one("SHOW plan_cache_mode", &[])
            .await
            .unwrap()
            .get(0);
        tx.rollback().await.unwrap();
        mode
    };
    assert_eq!(refresh(&store).await.new_snapshots, 1);
    assert_eq!(mode(store.clone()).await, "force_custom_plan");

    let holder = db.admin().await;
    holder
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&mana_ai_store::locks::REFRESH],
        )
        .await
        .unwrap();
    assert_eq!(
        store.refresh_snapshots(opts()).await.unwrap(),
        RefreshOutcome::Busy
    );
    assert_eq!(mode(store.clone()).await, "force_custom_plan");
    holder
        .execute(
            "SELECT pg_advisory_unlock($1)",
            &[&mana_ai_store::locks::REFRESH],
        )
        .await
        .unwrap();
    assert_eq!(refresh(&store).await.rows_applied, 0);
}
