//! Lifecycle of real clusters: throwaway start/connect/drop, persistent restart reuse,
//! and the watchdog that outlives a SIGKILLed owner.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mana_ai_pgcluster::{Cluster, ClusterConfig, ClusterError};

const CHILD_ENV: &str = "MANA_AI_PGCLUSTER_TEST_CHILD_DIR";

async fn query_one_i32(url: &str, sql: &str) -> i32 {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    let value: i32 = client.query_one(sql, &[]).await.unwrap().get(0);
    drop(client);
    driver.await.unwrap().unwrap();
    value
}

async fn execute(url: &str, sql: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    client.batch_execute(sql).await.unwrap();
    drop(client);
    driver.await.unwrap().unwrap();
}

/// Alive and not a zombie (the postmaster may be reparented to a pid 1 that never reaps).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.trim().chars().next());
            !matches!(state, Some('Z' | 'X'))
        }
        Err(_) => false,
    }
}

fn wait_until_dead(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    !alive(pid)
}

/// Stops a persistent test cluster even when an assertion fails half-way.
struct StopOnDrop(PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let pidfile = self.0.join("postmaster.pid");
        if let Some(pid) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGQUIT,
            );
        }
    }
}

#[tokio::test]
async fn throwaway_cluster_answers_select_1_and_drop_removes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cluster = Cluster::start(ClusterConfig::throwaway(&data)).unwrap();
    assert!(cluster.port() > 0);
    assert!(!cluster.is_persistent());
    let url = cluster.superuser_url("postgres");
    assert!(url.starts_with("postgresql://postgres:"));
    assert!(url.ends_with(&format!("@127.0.0.1:{}/postgres", cluster.port())));
    assert_eq!(query_one_i32(&url, "SELECT 1").await, 1);
    // The password is not kept on disk for throwaway clusters.
    assert!(!tmp.path().join("data.superuser-password").exists());
    let pid = cluster.postmaster_pid().expect("postmaster running");
    drop(cluster);
    assert!(
        wait_until_dead(pid, Duration::from_secs(10)),
        "postmaster {pid} survived drop"
    );
    assert!(!data.exists(), "data dir left behind");
    assert!(!tmp.path().join("data.log").exists(), "log left behind");
}

#[tokio::test]
async fn wrong_password_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(ClusterConfig::throwaway(tmp.path().join("d"))).unwrap();
    let url = format!(
        "postgresql://postgres:wrong@127.0.0.1:{}/postgres",
        cluster.port()
    );
    let err = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .err()
        .expect("a wrong password must not connect");
    let code = err.as_db_error().map(|db| db.code().clone());
    assert_eq!(
        code,
        Some(tokio_postgres::error::SqlState::INVALID_PASSWORD),
        "{err:?}"
    );
    cluster.stop().unwrap();
    assert!(!tmp.path().join("d").exists());
}

#[test]
fn throwaway_refuses_a_non_empty_directory_and_leaves_it_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("busy");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("keep-me"), "x").unwrap();
    let err = Cluster::start(ClusterConfig::throwaway(&data)).unwrap_err();
    assert!(matches!(err, ClusterError::DataDirNotEmpty { .. }), "{err}");
    assert!(data.join("keep-me").exists());
}

#[tokio::test]
async fn persistent_cluster_restart_keeps_data_and_port() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev").join("pgdata");
    let _guard = StopOnDrop(data.clone());

    let first = Cluster::start(ClusterConfig::persistent(&data)).unwrap();
    let port = first.port();
    let password_file = tmp.path().join("dev/pgdata.superuser-password");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&password_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("dev/pgdata.port"))
            .unwrap()
            .trim(),
        port.to_string()
    );
    let url = first.superuser_url("postgres");
    execute(
        &url,
        "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42);",
    )
    .await;
    let pid = first.postmaster_pid().unwrap();

    // A second start while it runs reuses the same server.
    let again = Cluster::start(ClusterConfig::persistent(&data)).unwrap();
    assert_eq!(again.port(), port);
    assert_eq!(again.postmaster_pid(), Some(pid));
    // Dropping a persistent handle leaves the server running.
    drop(again);
    assert!(alive(pid));

    // Asking for another port while it runs is an error, not a silent switch.
    let mut other = ClusterConfig::persistent(&data);
    other.port = Some(if port == 65_535 { 65_534 } else { port + 1 });
    let err = Cluster::start(other).unwrap_err();
    assert!(
        matches!(err, ClusterError::PortMismatch { running, .. } if running == port),
        "{err}"
    );

    first.stop().unwrap();
    assert!(wait_until_dead(pid, Duration::from_secs(10)));
    assert!(
        data.join("PG_VERSION").exists(),
        "persistent data must survive stop"
    );

    // Restart from the stopped state: same port, same data, same password.
    let second = Cluster::start(ClusterConfig::persistent(&data)).unwrap();
    assert_eq!(second.port(), port);
    assert_eq!(second.superuser_url("postgres"), url);
    assert_eq!(query_one_i32(&url, "SELECT v FROM kept").await, 42);
    assert_ne!(second.postmaster_pid(), Some(pid));
    second.stop().unwrap();
}

#[test]
fn persistent_cluster_without_password_file_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("pg");
    let _guard = StopOnDrop(data.clone());
    Cluster::start(ClusterConfig::persistent(&data))
        .unwrap()
        .stop()
        .unwrap();
    std::fs::remove_file(tmp.path().join("pg.superuser-password")).unwrap();
    let err = Cluster::start(ClusterConfig::persistent(&data)).unwrap_err();
    assert!(
        matches!(err, ClusterError::PasswordFileMissing { .. }),
        "{err}"
    );
}

/// Not a test on its own: the body of the child process for the watchdog test.
#[test]
#[ignore = "run only as a child of watchdog_cleans_up_after_sigkill"]
fn watchdog_child() {
    let dir = std::env::var_os(CHILD_ENV).expect("child needs its directory");
    let cluster = Cluster::start(ClusterConfig::throwaway(PathBuf::from(dir))).unwrap();
    println!(
        "READY {} {}",
        cluster.postmaster_pid().unwrap(),
        cluster.port()
    );
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn start_child(data: &Path) -> (std::process::Child, u32, u16) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "watchdog_child", "--nocapture"])
        .env(CHILD_ENV, data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("READY ") {
            let mut parts = rest.split_whitespace();
            let pid = parts.next().unwrap().parse().unwrap();
            let port = parts.next().unwrap().parse().unwrap();
            return (child, pid, port);
        }
    }
    let status = child.wait().unwrap();
    panic!("child exited without starting a cluster: {status}");
}

#[test]
fn watchdog_cleans_up_after_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("orphan");
    let (mut child, postmaster, port) = start_child(&data);
    assert!(alive(postmaster));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    child.kill().unwrap(); // SIGKILL: no destructor, no panic handler runs.
    child.wait().unwrap();

    assert!(
        wait_until_dead(postmaster, Duration::from_secs(10)),
        "postmaster {postmaster} outlived its SIGKILLed owner by 10 s"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while data.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!data.exists(), "watchdog did not delete {data:?}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
