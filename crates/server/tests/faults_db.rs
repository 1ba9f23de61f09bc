//! Database faults against the real `mana-ai serve` binary and a real PostgreSQL (this
//! binary's own throwaway cluster, restarted and stopped by the tests):
//!
//! * PostgreSQL restarts between passes and during a pass: the pass in flight ends, the
//!   next pass works without restarting the service;
//! * PostgreSQL down: `/health` answers 503 and recovers when it is back;
//! * a TCP proxy between the service and PostgreSQL black-holes the traffic while a
//!   pass is in its refresh: the pass ends within the documented bound
//!   (docs/reliability.md), and the first pass after the proxy heals works.
//!
//! The tests share the cluster, so they run one at a time ([`serial`]).

mod support;

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mana_ai_pgcluster::testkit::shared_cluster;
use mana_ai_store::testkit::proxy::Proxy;
use mana_ai_store::testkit::{fresh_db, TestDb};
use serde_json::{json, Value};
use support::{closed_port, hold_refresh_cursor, wait_for_lock_waiter};
use tokio::sync::{Mutex, MutexGuard};

const BIN: &str = env!("CARGO_BIN_EXE_mana-ai");
const KEY: &str = "faults-key";

/// One test at a time: they restart the shared cluster.
async fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::const_new(());
    LOCK.lock().await
}

/// Runs `pg_ctl <action>` on this binary's cluster, as the OS user that owns it.
fn pg_ctl(action: &str) {
    let c = shared_cluster();
    let meta = std::fs::metadata(c.data_dir()).expect("data dir");
    let mut cmd = Command::new(c.bindir().join("pg_ctl"));
    cmd.arg("-D")
        .arg(c.data_dir())
        .arg("-l")
        .arg(c.log_file())
        .args(["-w", "-t", "60", "-m", "fast", action])
        .current_dir("/")
        .stdin(Stdio::null());
    if meta.uid() != nix::unistd::Uid::effective().as_raw() {
        cmd.uid(meta.uid()).gid(meta.gid());
    }
    let out = cmd.output().expect("run pg_ctl");
    assert!(
        out.status.success(),
        "pg_ctl {action}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills the service on drop (only the process this test started, by its handle).
struct Service {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    async fn start(service_url: &str, admin_url: &str, extra: &[(&str, &str)]) -> Service {
        let port = closed_port().to_string();
        let llm = format!("http://127.0.0.1:{}", closed_port());
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .env_clear()
            .env("SYNC_DATABASE_URL", service_url)
            .env("MANA_AI_MIGRATION_DATABASE_URL", admin_url)
            .env("MANA_LLM_URL", &llm)
            .env("PORT", &port)
            .env("MANA_AI_BIND", "127.0.0.1")
            .env("TICK_ENABLED", "false")
            .env("MANA_SERVICE_KEY", KEY)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn serve");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        support::wait_healthy(
            &http,
            &format!("{base}/health"),
            Duration::from_secs(60),
            || child.try_wait().ok().flatten().map(|s| s.to_string()),
        )
        .await;
        Service { child, base, http }
    }

    /// One pass through `POST /internal/tick`: its stats and how long it took.
    async fn tick(&self) -> (Value, Duration) {
        let started = Instant::now();
        let stats: Value = self
            .http
            .post(format!("{}/internal/tick", self.base))
            .header("X-Service-Key", KEY)
            .send()
            .await
            .expect("tick answered")
            .json()
            .await
            .expect("tick stats");
        (stats, started.elapsed())
    }

    /// `/health`'s status code (0 when it did not answer within 5 s).
    async fn health(&self) -> u16 {
        match self
            .http
            .get(format!("{}/health", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Polls `/health` until it answers `want`; answers how long that took.
    async fn health_becomes(&self, want: u16, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.health().await == want {
                return started.elapsed();
            }
            assert!(started.elapsed() < limit, "/health never answered {want}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn assert_clean(stats: &Value, what: &str) {
    assert_eq!(stats["errors"], json!([]), "{what}: {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_between_and_during_passes_and_health_follows_an_outage() {
    let _serial = serial().await;
    let db = fresh_db("faults_restart").await;
    let svc = Service::start(&db.service_url, &db.superuser_url, &[]).await;
    let (stats, _) = svc.tick().await;
    assert_clean(&stats, "first pass");

    // Between passes: the pooled connections die with the server; the next pass works.
    pg_ctl("restart");
    let (stats, took) = svc.tick().await;
    assert_clean(&stats, "first pass after a restart");
    eprintln!("restart between passes: next pass clean in {took:?}");

    // During a pass: the pass waits on a row lock when the server restarts.
    let mut holder = db.admin().await;
    let tx = hold_refresh_cursor(&mut holder).await;
    let svc = Arc::new(svc);
    let pass = tokio::spawn({
        let svc = Arc::clone(&svc);
        async move { svc.tick().await }
    });
    wait_for_lock_waiter(&db.admin().await).await;
    let restarted = Instant::now();
    pg_ctl("restart");
    drop(tx);
    let (stats, _) = pass.await.unwrap();
    let ended = restarted.elapsed();
    eprintln!("restart during a pass: pass ended {ended:?} after the restart began: {stats}");
    assert!(ended < Duration::from_secs(20), "the pass hung: {ended:?}");
    let (stats, _) = svc.tick().await;
    assert_clean(&stats, "the pass after a restart during a pass");

    // Down: /health says so within seconds, and recovers when the server is back.
    pg_ctl("stop");
    let down = svc.health_becomes(503, Duration::from_secs(15)).await;
    let (stats, took) = svc.tick().await;
    assert_ne!(
        stats["errors"],
        json!([]),
        "a pass without a database reports it"
    );
    assert!(
        took < Duration::from_secs(30),
        "a pass while down took {took:?}"
    );
    pg_ctl("start");
    let up = svc.health_becomes(200, Duration::from_secs(30)).await;
    eprintln!(
        "health: 503 after {down:?}, 200 again {up:?} after the start; pass while down {took:?}"
    );
    let (stats, _) = svc.tick().await;
    assert_clean(&stats, "the pass after the outage");
}

/// Test settings: 1 s statement timeout + 1 s grace, 1 s connect timeout, 3 attempts.
const STATEMENT_MS: u64 = 1_000;
const GRACE_MS: u64 = 1_000;
const CONNECT_MS: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_database_ends_the_pass_within_the_bound_and_recovers() {
    let _serial = serial().await;
    let db: TestDb = fresh_db("faults_blackhole").await;
    let proxy = Proxy::start(shared_cluster().port()).await;
    let via_proxy = db.service_url.replace(
        &format!("127.0.0.1:{}/", shared_cluster().port()),
        &format!("127.0.0.1:{}/", proxy.port()),
    );
    assert_ne!(via_proxy, db.service_url);
    let settings = [
        ("MANA_AI_DB_STATEMENT_TIMEOUT_MS", STATEMENT_MS.to_string()),
        ("MANA_AI_DB_RESPONSE_GRACE_MS", GRACE_MS.to_string()),
        ("MANA_AI_DB_CONNECT_TIMEOUT_MS", CONNECT_MS.to_string()),
        ("MANA_AI_DB_RETRY_ATTEMPTS", "3".to_string()),
    ];
    let extra: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let svc = Arc::new(Service::start(&via_proxy, &db.superuser_url, &extra).await);
    let (stats, _) = svc.tick().await;
    assert_clean(&stats, "first pass through the proxy");

    // Mid-refresh: the pass waits on the refresh cursor's row lock when the network goes.
    let mut holder = db.admin().await;
    let tx = hold_refresh_cursor(&mut holder).await;
    let pass = tokio::spawn({
        let svc = Arc::clone(&svc);
        async move { svc.tick().await }
    });
    wait_for_lock_waiter(&db.admin().await).await;
    let holed = Instant::now();
    proxy.black_hole();
    let (stats, _) = pass.await.unwrap();
    let ended = holed.elapsed();
    eprintln!("black hole mid-refresh: the pass ended after {ended:?}: {stats}");
    let errors = stats["errors"].to_string();
    assert!(errors.contains("refresh"), "{stats}");
    // The bound of docs/reliability.md for these settings: the stuck statement
    // (statement + grace), two more refresh attempts and the later steps' attempts, each
    // at most a connect timeout, plus backoff — 20 s leaves room for a slow machine.
    assert!(ended < Duration::from_secs(20), "the pass hung: {ended:?}");
    svc.health_becomes(503, Duration::from_secs(10)).await;
    tx.rollback().await.unwrap();

    proxy.heal();
    let (stats, took) = svc.tick().await;
    assert_clean(&stats, "the first pass after the proxy healed");
    eprintln!("after healing: first pass clean in {took:?}");
    svc.health_becomes(200, Duration::from_secs(10)).await;
}
