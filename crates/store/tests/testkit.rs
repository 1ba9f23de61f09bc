//! The test kit's databases (moved from the pgcluster crate with their SQL): isolated
//! fresh databases in the one shared cluster, templates built once, row fixtures.

use mana_ai_store::testkit::rows::{mission_record, runner_row_count, scalar};
use mana_ai_store::testkit::{
    create_template, fresh_database, fresh_database_from, fresh_db, push_agent, push_mission,
    Change,
};
use serde_json::json;

async fn client(url: &str) -> tokio_postgres::Client {
    mana_ai_store::connect_once(url).await.unwrap()
}

async fn count_tables(url: &str, table: &str) -> i64 {
    client(url)
        .await
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = $1",
            &[&table],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn two_fresh_databases_are_distinct_and_isolated() {
    let a = fresh_database("kit").await;
    let b = fresh_database("kit").await;
    assert_ne!(a.name, b.name);
    assert!(a.name.starts_with("kit_"), "{}", a.name);

    let ca = client(&a.superuser_url()).await;
    let current: String = scalar(&ca, "SELECT current_database()").await;
    assert_eq!(current, a.name);
    ca.batch_execute("CREATE TABLE only_in_a (v int)")
        .await
        .unwrap();

    assert_eq!(count_tables(&a.superuser_url(), "only_in_a").await, 1);
    assert_eq!(count_tables(&b.superuser_url(), "only_in_a").await, 0);
}

#[tokio::test]
async fn fresh_databases_live_in_the_shared_cluster() {
    let port = mana_ai_pgcluster::testkit::shared_cluster().port();
    let db = fresh_database("same").await;
    assert_eq!(db.cluster().port(), port);
    assert!(db.superuser_url().contains(&format!(":{port}/")));
}

async fn migrate_once(counter: &'static std::sync::atomic::AtomicUsize) {
    create_template("kit_tpl", |url| async move {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let c = client(&url).await;
        c.batch_execute("CREATE TABLE migrated (v int); INSERT INTO migrated VALUES (7);")
            .await
    })
    .await;
}

static SETUP_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[tokio::test]
async fn template_setup_runs_once_and_copies_are_independent() {
    // Concurrent callers on different runtimes: setup must still run exactly once.
    let threads: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(migrate_once(&SETUP_RUNS))
            })
        })
        .collect();
    migrate_once(&SETUP_RUNS).await;
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(SETUP_RUNS.load(std::sync::atomic::Ordering::SeqCst), 1);

    let x = fresh_database_from("copy", "kit_tpl").await;
    let y = fresh_database_from("copy", "kit_tpl").await;
    let cx = client(&x.superuser_url()).await;
    let cy = client(&y.superuser_url()).await;
    cx.batch_execute("INSERT INTO migrated VALUES (8)")
        .await
        .unwrap();
    let nx: i64 = scalar(&cx, "SELECT count(*) FROM migrated").await;
    let ny: i64 = scalar(&cy, "SELECT count(*) FROM migrated").await;
    assert_eq!((nx, ny), (2, 1));
}

#[tokio::test]
#[should_panic(expected = "setup of template")]
async fn failing_template_setup_panics_with_its_error() {
    create_template("kit_broken", |_url| async move { Err::<(), _>("boom") }).await;
}

#[tokio::test]
async fn row_fixtures_land_as_the_sync_server_writes_them() {
    let db = fresh_db("kit_rows").await;
    let admin = db.admin().await;
    push_mission(&admin, "u1", "m1", mission_record(json!({"title": "T"}))).await;
    push_agent(&admin, "u1", "a1", json!({"name": "A"})).await;
    Change::new("u1", "notes", "n1", json!({"title": "N"}))
        .app("notes")
        .op("update")
        .field_meta(json!({"title": "2026-01-01T00:00:00.000Z"}))
        .client("device-1")
        .space("sp-1")
        .push(&admin)
        .await;
    let rows = admin
        .query(
            "SELECT app_id, table_name, record_id, user_id, op, data->>'title', field_meta,
                    client_id, space_id
               FROM sync_changes ORDER BY created_at",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, String, String, String, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    let s = |x: &str| x.to_string();
    assert_eq!(
        got,
        vec![
            (
                s("ai"),
                s("aiMissions"),
                s("m1"),
                s("u1"),
                s("insert"),
                Some(s("T"))
            ),
            (s("ai"), s("agents"), s("a1"), s("u1"), s("insert"), None),
            (
                s("notes"),
                s("notes"),
                s("n1"),
                s("u1"),
                s("update"),
                Some(s("N"))
            ),
        ]
    );
    let notes = &rows[2];
    assert_eq!(
        notes.get::<_, serde_json::Value>(6),
        json!({"title": "2026-01-01T00:00:00.000Z"})
    );
    assert_eq!(notes.get::<_, String>(7), "device-1");
    assert_eq!(notes.get::<_, Option<String>>(8).as_deref(), Some("sp-1"));
    assert_eq!(rows[0].get::<_, String>(7), "webapp");
    assert_eq!(runner_row_count(&admin, None).await, 0);
}
