//! The test kit: one shared cluster per binary, isolated fresh databases, templates.

use mana_ai_pgcluster::testkit::{
    create_template, fresh_database, fresh_database_from, shared_cluster,
};

async fn client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
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
    let current: String = ca
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(current, a.name);
    ca.batch_execute("CREATE TABLE only_in_a (v int)")
        .await
        .unwrap();

    assert_eq!(count_tables(&a.superuser_url(), "only_in_a").await, 1);
    assert_eq!(count_tables(&b.superuser_url(), "only_in_a").await, 0);
}

#[tokio::test]
async fn shared_cluster_is_one_cluster_across_runtimes() {
    let port = shared_cluster().port();
    let other = std::thread::spawn(|| shared_cluster().port())
        .join()
        .unwrap();
    assert_eq!(port, other);
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
    let nx: i64 = cx
        .query_one("SELECT count(*) FROM migrated", &[])
        .await
        .unwrap()
        .get(0);
    let ny: i64 = cy
        .query_one("SELECT count(*) FROM migrated", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((nx, ny), (2, 1));
}

#[tokio::test]
#[should_panic(expected = "setup of template")]
async fn failing_template_setup_panics_with_its_error() {
    create_template("kit_broken", |_url| async move { Err::<(), _>("boom") }).await;
}
