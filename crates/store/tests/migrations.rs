//! Numbered migrations on real PostgreSQL: a fresh database; every earlier schema of
//! this service (fixtures reconstructed from git history, `fixtures/schema_history/`)
//! and the original TypeScript service's (`fixtures/original_mana_ai.sql`) all migrate
//! to exactly the schema a fresh database gets, keep their rows, and then work; a current
//! database gets no DDL at all; a newer one is refused; concurrent migrators apply each
//! migration once; the lock wait and the DDL lock timeout are bounded; an invalid index
//! left by an interrupted concurrent build is rebuilt.

use std::time::{Duration, Instant};

use chrono::Utc;
use mana_ai_store::schema::{self, Compatibility, MigrateOptions, LATEST_VERSION, MIGRATIONS};
use mana_ai_store::testkit::{fresh_database, push_mission, SERVICE_ROLE};
use mana_ai_store::{connect_once, RefreshOptions, Store, StoreConfig, StoreError};
use serde_json::json;
use tokio_postgres::Client;

const SVC_PASSWORD: &str = "svc-test-password";

/// An empty database with `sync_changes` (as the sync server makes it) and the service
/// role, but no `mana_ai` schema. Answers (admin client, superuser URL, service URL).
async fn bare_db(prefix: &str) -> (Client, String, String) {
    let db = fresh_database(prefix).await;
    let url = db.superuser_url();
    let admin = admin_connection(&url).await;
    schema::ensure_service_role(&admin, SERVICE_ROLE, SVC_PASSWORD)
        .await
        .expect("service role");
    schema::create_sync_changes_for_dev(&admin)
        .await
        .expect("sync_changes");
    let service = format!(
        "postgresql://{SERVICE_ROLE}:{SVC_PASSWORD}@127.0.0.1:{}/{}",
        db.cluster().port(),
        db.name
    );
    (admin, url, service)
}

/// A superuser connection; retried briefly, as the parallel tests of this binary may
/// momentarily use up the test cluster's connection slots.
async fn admin_connection(url: &str) -> Client {
    let mut last = None;
    for _ in 0..5 {
        match connect_once(url).await {
            Ok(c) => return c,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("admin connection: {last:?}");
}

/// Everything about the service's schema that matters, as sorted lines: columns,
/// constraints, indexes (also ours on `sync_changes`), functions with a hash of their
/// bodies, policies, triggers, RLS flags and the service role's privileges.
async fn fingerprint(c: &Client) -> Vec<String> {
    let sql = "
      SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
             || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
             || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
       WHERE n.nspname = 'mana_ai' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
      UNION ALL
      SELECT 'constraint ' || conrelid::regclass || ' ' || pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'mana_ai'::regnamespace
      UNION ALL
      SELECT 'index ' || indexdef || ' valid=' || i.indisvalid
        FROM pg_indexes x JOIN pg_class ic ON ic.relname = x.indexname
        JOIN pg_namespace n ON n.oid = ic.relnamespace AND n.nspname = x.schemaname
        JOIN pg_index i ON i.indexrelid = ic.oid
       WHERE x.schemaname = 'mana_ai' OR x.indexname LIKE 'mana_ai%'
      UNION ALL
      SELECT 'function ' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ') '
             || md5(p.prosrc) || ' definer=' || p.prosecdef || ' owner=' || pg_get_userbyid(p.proowner)
             || ' svc_exec=' || has_function_privilege('mana_ai_svc', p.oid, 'EXECUTE')
        FROM pg_proc p WHERE p.pronamespace = 'mana_ai'::regnamespace
      UNION ALL
      SELECT 'policy ' || tablename || ' ' || policyname || ' ' || cmd || ' ' || coalesce(qual, '')
        FROM pg_policies WHERE schemaname = 'mana_ai'
      UNION ALL
      SELECT 'trigger ' || tgname || ' ' || tgrelid::regclass
        FROM pg_trigger WHERE NOT tgisinternal AND tgrelid IN
          (SELECT oid FROM pg_class WHERE relnamespace = 'mana_ai'::regnamespace)
      UNION ALL
      SELECT 'rls ' || relname || ' ' || relrowsecurity || ' force=' || relforcerowsecurity
        FROM pg_class WHERE relnamespace = 'mana_ai'::regnamespace AND relkind = 'r'
      UNION ALL
      SELECT 'grant ' || c.relname || ' ' || p.priv
        FROM pg_class c CROSS JOIN (VALUES ('SELECT'), ('INSERT'), ('UPDATE'), ('DELETE')) p(priv)
       WHERE c.relnamespace = 'mana_ai'::regnamespace AND c.relkind = 'r'
         AND has_table_privilege('mana_ai_svc', c.oid, p.priv)
      ORDER BY 1";
    c.query(sql, &[])
        .await
        .expect("fingerprint")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The fingerprint of a freshly migrated database (computed once per test).
async fn fresh_fingerprint() -> Vec<String> {
    let (admin, _, _) = bare_db("mig_reference").await;
    schema::migrate(&admin, Some(SERVICE_ROLE))
        .await
        .expect("fresh migration");
    fingerprint(&admin).await
}

fn diff(want: &[String], got: &[String]) -> String {
    let missing: Vec<_> = want.iter().filter(|l| !got.contains(l)).collect();
    let extra: Vec<_> = got.iter().filter(|l| !want.contains(l)).collect();
    format!("missing: {missing:#?}\nextra: {extra:#?}")
}

/// After migrating: the service role refreshes, sees the due mission and claims it.
async fn service_works(service_url: &str, user: &str, mission: &str) {
    let mut cfg = StoreConfig::new(service_url);
    cfg.max_connections = 2;
    let store = Store::connect(&cfg).expect("pool");
    store.verify_discovery().await.expect("discovery");
    store
        .refresh_snapshots(RefreshOptions {
            batch_rows: 1000,
            safety_margin: Duration::ZERO,
        })
        .await
        .expect("refresh");
    let due = store
        .list_due_keys(Utc::now() + chrono::Duration::days(1), 100)
        .await
        .expect("due listing");
    assert!(
        due.iter()
            .any(|k| k.user_id == user && k.mission_id == mission),
        "{mission} of {user} is due: {due:?}"
    );
    store.close();
}

async fn recorded(admin: &Client) -> Vec<(i32, Option<String>)> {
    admin
        .query(
            "SELECT version, checksum FROM mana_ai.schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("schema_migrations")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn all_recorded() -> Vec<(i32, Option<String>)> {
    MIGRATIONS
        .iter()
        .map(|m| (m.version, Some(m.checksum())))
        .collect()
}

#[tokio::test]
async fn a_fresh_database_gets_every_migration_recorded_and_then_nothing() {
    let (admin, _, service) = bare_db("mig_fresh").await;
    let applied = schema::migrate(&admin, Some(SERVICE_ROLE)).await.unwrap();
    assert_eq!(applied, (1..=LATEST_VERSION).collect::<Vec<_>>());
    assert_eq!(recorded(&admin).await, all_recorded());
    let state = schema::read_state(&connect_once(&service).await.unwrap())
        .await
        .expect("the service role reads the version");
    assert_eq!(state.compatibility(), Compatibility::Current);

    // Current: no DDL at all. Another session holds ACCESS EXCLUSIVE locks on the tables
    // any DDL would touch; a migration that tried would wait (and fail on lock_timeout).
    let mut holder = connect_once(&admin_url(&admin).await).await.unwrap();
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute(
        "LOCK TABLE public.sync_changes, mana_ai.mission_snapshots, mana_ai.agent_snapshots,
                    mana_ai.mission_runs, mana_ai.decrypt_audit IN ACCESS EXCLUSIVE MODE",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let again = schema::migrate(&admin, Some(SERVICE_ROLE)).await.unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    tx.rollback().await.unwrap();
}

/// The URL of the database `admin` is connected to (as superuser).
async fn admin_url(admin: &Client) -> String {
    let db: String = admin
        .query_one("SELECT current_database()::text", &[])
        .await
        .unwrap()
        .get(0);
    mana_ai_pgcluster::testkit::shared_cluster().superuser_url(&db)
}

#[tokio::test]
async fn every_earlier_schema_of_ours_migrates_to_the_current_one_and_works() {
    let want = fresh_fingerprint().await;
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema_history");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 14, "{files:?}");
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let (admin, _, service) = bare_db("mig_history").await;
        let sql = std::fs::read_to_string(&file)
            .unwrap()
            .replace("{role}", &schema::quote_ident(SERVICE_ROLE));
        admin
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{name}: {}", mana_ai_store::db_message(&e)));
        // A snapshot as that build wrote it, without derived columns: the backfill must
        // fill them. (Every build had these five columns.)
        admin
            .batch_execute(
                "INSERT INTO mana_ai.mission_snapshots (user_id, mission_id, record, last_applied_at)
                 VALUES ('old-user', 'old-mission',
                         '{\"id\":\"old-mission\",\"state\":\"active\",\"nextRunAt\":\"2026-01-01T06:00:00Z\"}',
                         now())",
            )
            .await
            .unwrap();
        let state = schema::read_state(&admin).await.unwrap();
        assert_eq!(
            state.compatibility(),
            Compatibility::Behind {
                pending: (1..=LATEST_VERSION).collect()
            },
            "{name}: a pre-numbering version row proves nothing"
        );
        let applied = schema::migrate(&admin, Some(SERVICE_ROLE))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(applied, (1..=LATEST_VERSION).collect::<Vec<_>>(), "{name}");
        assert_eq!(recorded(&admin).await, all_recorded(), "{name}");
        let got = fingerprint(&admin).await;
        assert!(got == want, "{name}: {}", diff(&want, &got));
        push_mission(
            &admin,
            "new-user",
            "new-mission",
            json!({"id": "new-mission", "state": "active", "nextRunAt": "2026-01-01T07:00:00Z"}),
        )
        .await;
        service_works(&service, "old-user", "old-mission").await;
        service_works(&service, "new-user", "new-mission").await;
    }
}

#[tokio::test]
async fn the_original_services_schema_migrates_and_keeps_its_rows() {
    let want = fresh_fingerprint().await;
    let (admin, _, service) = bare_db("mig_original").await;
    admin
        .batch_execute(include_str!("fixtures/original_mana_ai.sql"))
        .await
        .expect("the original's schema");
    admin
        .batch_execute(
            "INSERT INTO mana_ai.mission_snapshots (user_id, mission_id, record, last_applied_at)
             VALUES ('ts-user', 'ts-mission',
                     '{\"id\":\"ts-mission\",\"state\":\"active\",\"nextRunAt\":\"2026-01-01T06:00:00Z\",\"agentId\":\"a1\"}',
                     now());
             INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, tokens_used)
             VALUES ('ts-user', 'a1', 'ts-mission', 1234);
             INSERT INTO mana_ai.decrypt_audit (user_id, mission_id, table_name, record_id, status)
             VALUES ('ts-user', 'ts-mission', 'notes', 'n1', 'ok');
             INSERT INTO mana_ai.mission_research_jobs (user_id, mission_id, task_id, provider_id)
             VALUES ('ts-user', 'ts-mission', 'task-1', 'gemini');",
        )
        .await
        .unwrap();
    assert_eq!(
        schema::read_state(&admin).await.unwrap().database_version(),
        0,
        "the original kept no version"
    );
    schema::migrate(&admin, Some(SERVICE_ROLE)).await.unwrap();
    assert_eq!(recorded(&admin).await, all_recorded());
    // The original's two extra expression indexes stay; everything else is ours.
    let got: Vec<String> = fingerprint(&admin)
        .await
        .into_iter()
        .filter(|l| {
            !l.contains("idx_mission_snapshots_due ") && !l.contains("idx_agent_snapshots_state")
        })
        .collect();
    assert!(got == want, "{}", diff(&want, &got));
    let kept: (String, String, i64, i64) = {
        let r = admin
            .query_one(
                "SELECT s.state, s.agent_id,
                        (SELECT sum(tokens_used) FROM mana_ai.token_usage)::bigint,
                        (SELECT count(*) FROM mana_ai.decrypt_audit)
                   FROM mana_ai.mission_snapshots s WHERE s.mission_id = 'ts-mission'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    assert_eq!(kept, ("active".into(), "a1".into(), 1234, 1));
    let job_state: String = admin
        .query_one("SELECT state FROM mana_ai.mission_research_jobs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(job_state, "pending");
    service_works(&service, "ts-user", "ts-mission").await;
}

#[tokio::test]
async fn a_database_newer_than_the_binary_is_refused_without_ddl() {
    let (admin, _, _) = bare_db("mig_ahead").await;
    schema::migrate(&admin, Some(SERVICE_ROLE)).await.unwrap();
    admin
        .execute(
            "INSERT INTO mana_ai.schema_migrations (version, name, checksum) VALUES ($1, 'future', 'x')",
            &[&(LATEST_VERSION + 1)],
        )
        .await
        .unwrap();
    let before = fingerprint(&admin).await;
    let e = schema::migrate(&admin, Some(SERVICE_ROLE))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Schema(_)), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("version {}", LATEST_VERSION + 1)),
        "{msg}"
    );
    assert!(msg.contains("refusing to start"), "{msg}");
    assert_eq!(fingerprint(&admin).await, before);
    let state = schema::read_state(&admin).await.unwrap();
    assert_eq!(
        state.compatibility(),
        Compatibility::Ahead {
            database: LATEST_VERSION + 1
        }
    );
    assert!(state
        .describe()
        .iter()
        .any(|l| l.contains("unknown to this binary")));
}

#[tokio::test]
async fn concurrent_migrators_apply_each_migration_once() {
    let (_, url, _) = bare_db("mig_concurrent").await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let c = connect_once(&url).await.unwrap();
            schema::migrate(&c, Some(SERVICE_ROLE)).await
        }));
    }
    let mut applied = Vec::new();
    for t in tasks {
        applied.push(t.await.unwrap().expect("every migrator succeeds"));
    }
    applied.sort();
    let all: Vec<i32> = (1..=LATEST_VERSION).collect();
    assert_eq!(
        applied,
        vec![vec![], vec![], vec![], all],
        "exactly one applied"
    );
    let admin = connect_once(&url).await.unwrap();
    assert_eq!(recorded(&admin).await, all_recorded());
}

#[tokio::test]
async fn the_migration_lock_wait_and_the_ddl_lock_timeout_are_bounded() {
    let (admin, url, _) = bare_db("mig_bounded").await;
    // Another instance holds the migration lock: give up after the wait.
    let other = connect_once(&url).await.unwrap();
    other
        .execute("SELECT pg_advisory_lock(7366720001)", &[])
        .await
        .unwrap();
    let opts = MigrateOptions {
        service_role: Some(SERVICE_ROLE.into()),
        lock_wait: Duration::from_millis(300),
        ddl_lock_timeout: Duration::from_millis(200),
    };
    let started = Instant::now();
    let e = schema::migrate_with(&admin, &opts).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        e.to_string().contains("MANA_AI_MIGRATION_LOCK_WAIT_MS"),
        "{e}"
    );
    drop(other);

    // A table lock held elsewhere: the DDL gives up after lock_timeout instead of
    // queueing every statement on that table behind it.
    schema::migrate_with(&admin, &opts).await.unwrap();
    admin
        .batch_execute("DELETE FROM mana_ai.schema_migrations")
        .await
        .unwrap();
    let mut holder = connect_once(&url).await.unwrap();
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE mana_ai.mission_snapshots IN ACCESS SHARE MODE")
        .await
        .unwrap();
    let started = Instant::now();
    let e = schema::migrate_with(&admin, &opts).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(e.to_string().contains("lock timeout"), "{e}");
    tx.rollback().await.unwrap();
    schema::migrate_with(&admin, &opts).await.unwrap();
    assert_eq!(recorded(&admin).await, all_recorded());
}

#[tokio::test]
async fn an_invalid_index_left_by_an_interrupted_build_is_rebuilt() {
    let (admin, _, _) = bare_db("mig_invalid_index").await;
    schema::migrate(&admin, Some(SERVICE_ROLE)).await.unwrap();
    // What an interrupted CREATE INDEX CONCURRENTLY leaves: the index, marked invalid.
    admin
        .batch_execute(
            "UPDATE pg_index SET indisvalid = false
              WHERE indexrelid = 'public.mana_ai_sync_changes_ai_position'::regclass;
             DELETE FROM mana_ai.schema_migrations;",
        )
        .await
        .unwrap();
    schema::migrate(&admin, Some(SERVICE_ROLE)).await.unwrap();
    let valid: bool = admin
        .query_one(
            "SELECT indisvalid FROM pg_index
              WHERE indexrelid = 'public.mana_ai_sync_changes_ai_position'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(valid, "the index was rebuilt");
    assert_eq!(recorded(&admin).await, all_recorded());
}

/// Instances (or test binaries) booting at once all set the cluster-wide service role's
/// password; PostgreSQL fails all but one concurrent update of a role with "tuple
/// concurrently updated". Every one of them must still succeed.
#[tokio::test]
async fn concurrent_service_role_updates_all_succeed() {
    let db = fresh_database("role_race").await;
    let url = db.superuser_url();
    let role = "mana_ai_role_race";
    for round in 0..3 {
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let admin = admin_connection(&url).await;
                schema::ensure_service_role(&admin, role, "pw").await
            }));
        }
        for t in tasks {
            let result = t.await.expect("task");
            assert!(result.is_ok(), "round {round}: {result:?}");
        }
    }
}
