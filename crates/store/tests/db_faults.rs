//! The pool under database faults, on real PostgreSQL as the service role: the session
//! settings are in force (`lock_timeout`, `statement_timeout`); the response watchdog
//! ends a call on a black-holed connection within `statement_timeout + grace` and the
//! pool works again once the network heals; killed connections are replaced; transient
//! errors (40001, 40P01) are retried and others are not.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use mana_ai_store::retry::{retry_with, Idempotent, RetryPolicy};
use mana_ai_store::testkit::proxy::Proxy;
use mana_ai_store::testkit::{fresh_db, TestDb};
use mana_ai_store::{RefreshOptions, Store, StoreConfig, StoreError};

fn opts() -> RefreshOptions {
    RefreshOptions {
        batch_rows: 1000,
        safety_margin: Duration::ZERO,
    }
}

fn store(url: &str, tune: impl FnOnce(&mut StoreConfig)) -> Store {
    let mut cfg = StoreConfig::new(url);
    cfg.retry = RetryPolicy {
        attempts: 1,
        ..RetryPolicy::default()
    };
    tune(&mut cfg);
    Store::connect(&cfg).expect("pool")
}

/// Holds the refresh cursor's row lock until the returned transaction ends.
async fn hold_cursor(holder: &mut tokio_postgres::Client) -> tokio_postgres::Transaction<'_> {
    let tx = holder.transaction().await.unwrap();
    tx.query("SELECT 1 FROM mana_ai.refresh_cursor FOR UPDATE", &[])
        .await
        .unwrap();
    tx
}

/// Waits until a backend of `db` waits on a lock.
async fn wait_for_lock_waiter(db: &TestDb) {
    let admin = db.admin().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "nothing waits on the lock");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn prepared(db: &TestDb) -> Store {
    // One refresh so the cursor row exists.
    let s = db.service_store();
    s.refresh_snapshots(opts()).await.expect("first refresh");
    s
}

#[tokio::test]
async fn lock_and_statement_timeouts_are_in_force_on_every_session() {
    let db = fresh_db("faults_timeouts").await;
    prepared(&db).await;
    let mut holder = db.admin().await;
    let tx = hold_cursor(&mut holder).await;

    let s = store(&db.service_url, |c| {
        c.lock_timeout = Duration::from_millis(300)
    });
    let started = Instant::now();
    let e = s.refresh_snapshots(opts()).await.unwrap_err();
    assert!(e.to_string().contains("lock timeout"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let s = store(&db.service_url, |c| {
        c.lock_timeout = Duration::ZERO;
        c.statement_timeout = Duration::from_millis(400);
    });
    let started = Instant::now();
    let e = s.refresh_snapshots(opts()).await.unwrap_err();
    assert!(e.to_string().contains("statement timeout"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    tx.rollback().await.unwrap();
    s.refresh_snapshots(opts())
        .await
        .expect("works once the lock is gone");
}

#[tokio::test]
async fn a_black_holed_connection_ends_within_the_bound_and_the_pool_recovers() {
    let db = fresh_db("faults_watchdog").await;
    prepared(&db).await;
    let port = mana_ai_pgcluster::testkit::shared_cluster().port();
    let proxy = Proxy::start(port).await;
    let via = db
        .service_url
        .replace(&format!(":{port}/"), &format!(":{}/", proxy.port()));
    let statement = Duration::from_millis(500);
    let grace = Duration::from_millis(500);
    let s = store(&via, |c| {
        c.statement_timeout = statement;
        c.response_grace = grace;
        c.connect_timeout = Duration::from_millis(500);
    });
    s.ping().await.expect("through the proxy");

    // A statement in flight (waiting on a row lock) when the network goes.
    let mut holder = db.admin().await;
    let tx = hold_cursor(&mut holder).await;
    let call = tokio::spawn({
        let s = s.clone();
        async move {
            let started = Instant::now();
            (s.refresh_snapshots(opts()).await, started.elapsed())
        }
    });
    wait_for_lock_waiter(&db).await;
    proxy.black_hole();
    let (result, took) = call.await.unwrap();
    let e = result.unwrap_err();
    assert!(e.connection_lost(), "{e:?}");
    assert!(
        took < statement + grace + Duration::from_secs(1),
        "took {took:?}"
    );
    assert!(
        took >= statement + grace - Duration::from_millis(150),
        "took {took:?}"
    );

    // New connections cannot get through either: bounded by the connect timeout.
    let started = Instant::now();
    let ping = tokio::time::timeout(Duration::from_secs(10), s.ping()).await;
    assert!(!matches!(ping, Ok(Ok(()))), "{ping:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    tx.rollback().await.unwrap();

    proxy.heal();
    s.refresh_snapshots(opts())
        .await
        .expect("works after healing");
    let ping = tokio::time::timeout(Duration::from_secs(2), s.ping()).await;
    assert!(matches!(ping, Ok(Ok(()))), "{ping:?}");
}

#[tokio::test]
async fn killed_connections_are_replaced_and_the_next_call_works() {
    let db = fresh_db("faults_killed").await;
    let s = prepared(&db).await;
    s.list_due_keys(Utc::now(), 10).await.unwrap();
    let admin = db.admin().await;
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
              WHERE usename = 'mana_ai_svc' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 1);
    // The default retry covers the race of a connection whose death is not yet seen.
    s.list_due_keys(Utc::now(), 10)
        .await
        .expect("next call works");
    s.refresh_snapshots(opts()).await.expect("refresh works");
}

/// An operation that fails with SQLSTATE `code` on its first `fails` attempts.
async fn flaky(
    db: &TestDb,
    code: &str,
    fails: u32,
    idem: Idempotent,
) -> (Result<(), StoreError>, u32) {
    let calls = AtomicU32::new(0);
    let policy = RetryPolicy {
        attempts: 3,
        base: Duration::from_millis(5),
        cap: Duration::from_millis(20),
    };
    let client = db.service_client().await;
    let sql = format!("DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{code}'; END $$");
    let result = retry_with(&policy, "flaky", idem, || {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let (client, sql) = (&client, &sql);
        async move {
            if n < fails {
                client.batch_execute(sql).await?;
            }
            Ok(())
        }
    })
    .await;
    (result, calls.load(Ordering::SeqCst))
}

#[tokio::test]
async fn serialization_failures_and_deadlocks_are_retried_other_errors_are_not() {
    let db = fresh_db("faults_retry").await;
    for code in ["40001", "40P01"] {
        let (r, calls) = flaky(&db, code, 2, Idempotent::No).await;
        assert!(r.is_ok(), "{code}: {r:?}");
        assert_eq!(calls, 3, "{code}");
        let (r, calls) = flaky(&db, code, 5, Idempotent::No).await;
        assert!(r.is_err(), "{code}: gives up after the attempts");
        assert_eq!(calls, 3, "{code}");
    }
    for code in ["23505", "42501", "57014", "55P03"] {
        let (r, calls) = flaky(&db, code, 1, Idempotent::Yes).await;
        let e = r.unwrap_err();
        assert_eq!(calls, 1, "{code} is not retried: {e}");
        assert!(!e.is_transient(), "{code}");
    }
}
