//! Security suite, database side (issue 14, point 4): least privilege that holds, tried
//! as the service role would abuse it — a cross-app insert under an impersonated user, a
//! read of another app's rows, the audit prune with a chosen retention, the unused
//! discovery function, and the `mana_ai` tables from an unrelated role. Plus the timing
//! of the refresh and the due listing with and without the restrictive policies.

use std::time::{Duration, Instant};

use chrono::Utc;
use mana_ai_store::testkit::rows::mission_record;
use mana_ai_store::testkit::{fresh_db, TestDb};
use mana_ai_store::{db_message, RefreshOptions};
use serde_json::json;

/// A service-role connection with `app.current_user_id` set to `user` in an open
/// transaction (what any `withUser` does — and what an attacker holding the role would).
async fn impersonate(db: &TestDb, user: &str) -> tokio_postgres::Client {
    let c = db.service_client().await;
    c.batch_execute("BEGIN").await.unwrap();
    c.execute(
        "SELECT set_config('app.current_user_id', $1, true)",
        &[&user],
    )
    .await
    .unwrap();
    c
}

async fn insert_row(
    c: &tokio_postgres::Client,
    user: &str,
    app: &str,
    table: &str,
) -> Result<u64, tokio_postgres::Error> {
    c.execute(
        "INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id)
         VALUES ($1, $2, 'r1', $3, 'insert', '{\"title\":\"x\"}', 'attacker')",
        &[&app, &table, &user],
    )
    .await
}

#[tokio::test]
async fn the_service_role_inserts_only_mission_rows_whoever_it_claims_to_be() {
    let db = fresh_db("sec_insert").await;
    for (app, table) in [
        ("notes", "notes"),
        ("finance", "transactions"),
        ("ai", "agents"),
        ("ai", "aiMissions_other"),
    ] {
        let c = impersonate(&db, "victim").await;
        let e = insert_row(&c, "victim", app, table).await.unwrap_err();
        let msg = db_message(&e);
        assert!(msg.contains("row-level security"), "{app}/{table}: {msg}");
    }
    let c = impersonate(&db, "victim").await;
    assert_eq!(
        insert_row(&c, "victim", "ai", "aiMissions").await.unwrap(),
        1
    );
    // Other roles are unaffected: the sync server (here the superuser) writes any app.
    let admin = db.admin().await;
    assert_eq!(
        insert_row(&admin, "victim", "notes", "notes")
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn an_impersonated_read_sees_only_the_apps_the_service_needs() {
    let db = fresh_db("sec_read").await;
    let admin = db.admin().await;
    for (app, table) in [
        ("finance", "transactions"),
        ("contacts", "contacts"),
        ("ai", "aiChat"),
        ("notes", "notes"),
        ("companion", "companionGoals"),
        ("ai", "aiMissions"),
        ("ai", "agents"),
    ] {
        insert_row(&admin, "victim", app, table).await.unwrap();
    }
    let c = impersonate(&db, "victim").await;
    let rows = c
        .query(
            "SELECT app_id || '/' || table_name FROM sync_changes ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let seen: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        seen,
        [
            "ai/agents",
            "ai/aiMissions",
            "companion/companionGoals",
            "notes/notes"
        ]
    );
}

#[tokio::test]
async fn the_audit_prune_takes_no_retention_from_the_service_role() {
    let db = fresh_db("sec_prune").await;
    let admin = db.admin().await;
    admin
        .batch_execute(
            "INSERT INTO mana_ai.decrypt_audit (user_id, mission_id, table_name, record_id, status, ts)
             VALUES ('u1', 'm1', 'notes', 'old', 'ok', now() - interval '400 days'),
                    ('u1', 'm1', 'notes', 'week', 'ok', now() - interval '8 days')",
        )
        .await
        .unwrap();
    let svc = db.service_client().await;
    // The one-argument prune (choose the retention) is not the service role's to call.
    let e = svc
        .query_one("SELECT mana_ai.prune_decrypt_audit(7)", &[])
        .await
        .unwrap_err();
    assert!(db_message(&e).contains("permission denied"), "{e:?}");
    // Nor may it change the migration-owned setting.
    let e = svc
        .execute("UPDATE mana_ai.audit_retention SET days = 7", &[])
        .await
        .unwrap_err();
    assert!(db_message(&e).contains("permission denied"), "{e:?}");
    // The argument-less prune applies the configured retention (365 by default).
    let store = db.service_store();
    assert_eq!(store.prune_decrypt_audit().await.unwrap(), 1);
    mana_ai_store::schema::set_audit_retention(&admin, None)
        .await
        .unwrap();
    admin
        .batch_execute(
            "INSERT INTO mana_ai.decrypt_audit (user_id, mission_id, table_name, record_id, status, ts)
             VALUES ('u1', 'm1', 'notes', 'old', 'ok', now() - interval '4000 days')",
        )
        .await
        .unwrap();
    assert_eq!(
        store.prune_decrypt_audit().await.unwrap(),
        0,
        "kept forever"
    );
}

#[tokio::test]
async fn unused_grants_are_gone_and_no_other_role_reaches_mana_ai() {
    let db = fresh_db("sec_grants").await;
    let svc = db.service_client().await;
    let e = svc
        .query(
            "SELECT * FROM mana_ai.changed_ai_records(now() - interval '1 day', now())",
            &[],
        )
        .await
        .unwrap_err();
    assert!(db_message(&e).contains("permission denied"), "{e:?}");
    let admin = db.admin().await;
    // Every privilege on a mana_ai relation belongs to its owner or the service role.
    let strangers: Vec<String> = admin
        .query(
            "SELECT DISTINCT c.relname || ':' || coalesce(a.grantee::regrole::text, 'PUBLIC')
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               CROSS JOIN LATERAL aclexplode(c.relacl) a
              WHERE n.nspname = 'mana_ai' AND a.grantee <> c.relowner
                AND (a.grantee = 0 OR a.grantee::regrole::text <> $1)",
            &[&mana_ai_store::testkit::SERVICE_ROLE],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(strangers.is_empty(), "{strangers:?}");
    let public_usage: bool = admin
        .query_one(
            "SELECT has_schema_privilege('public', 'mana_ai', 'USAGE')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!public_usage);
}

/// Seeds `missions` due mission rows over 500 users, then times one full refresh and one
/// due listing as the service role.
async fn timed_refresh_and_due(db: &TestDb, missions: i64) -> (Duration, Duration, usize) {
    let admin = db.admin().await;
    let data = mission_record(json!({"nextRunAt": "2026-01-05T06:00:00.000Z"}));
    admin
        .execute(
            "INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta, client_id, created_at)
             SELECT 'ai', 'aiMissions', 'm' || g, 'u' || (g % 500), 'insert', $1, '{}', 'seed',
                    now() - interval '1 hour'
               FROM generate_series(1, $2::bigint) g",
            &[&data, &missions],
        )
        .await
        .unwrap();
    let store = db.service_store();
    let started = Instant::now();
    store
        .refresh_snapshots(RefreshOptions::default())
        .await
        .unwrap();
    let refresh = started.elapsed();
    let started = Instant::now();
    let due = store.list_due_keys(Utc::now(), 1_000).await.unwrap();
    (refresh, started.elapsed(), due.len())
}

#[tokio::test]
async fn the_policies_do_not_slow_the_refresh_or_the_due_listing() {
    const MISSIONS: i64 = 20_000;
    let with = fresh_db("sec_timing_with").await;
    let without = fresh_db("sec_timing_without").await;
    without
        .admin()
        .await
        .batch_execute(
            "DROP POLICY mana_ai_service_read_scope ON sync_changes;
             DROP POLICY mana_ai_service_insert_scope ON sync_changes;",
        )
        .await
        .unwrap();
    let (r0, d0, n0) = timed_refresh_and_due(&without, MISSIONS).await;
    let (r1, d1, n1) = timed_refresh_and_due(&with, MISSIONS).await;
    eprintln!(
        "timing ({MISSIONS} missions, 500 users): refresh without policies {r0:?}, with {r1:?}; \
         due listing without {d0:?}, with {d1:?}"
    );
    assert_eq!((n0, n1), (1_000, 1_000));
    // Generous: a real regression (a sequential scan per user) is many times slower.
    assert!(r1 < r0 * 3 + Duration::from_secs(2), "{r1:?} vs {r0:?}");
    assert!(d1 < d0 * 3 + Duration::from_secs(1), "{d1:?} vs {d0:?}");
}
