//! `mana-ai dev`: the zero-setup way to run the service locally.
//!
//! It starts (or reuses) a persistent private PostgreSQL cluster under the data dir
//! (`<dir>/pg`, see the pgcluster crate), prepares it the way a production deployment is
//! prepared — a `mana_sync` database with the sync server's `sync_changes` table and an
//! ordinary least-privilege login role `mana_ai` — and then runs the normal service
//! ([`crate::app::serve`]) as that role, with the cluster superuser as the migration role.
//! With `--demo` it first seeds one demo user's agent, goal and due mission as
//! `sync_changes` rows shaped like the web app's, runs one tick and prints the iteration
//! that tick wrote.
//!
//! Unless `MANA_AI_LLM` or `MANA_LLM_URL` is set, `dev` plans with the embedded local model
//! (`<data dir>/models/`, fetched with pip on first use; see `docs/local-model.md`).
//!
//! Files in the data dir: `pg/` (the cluster), `pg.log`, `pg.port`,
//! `pg.superuser-password` (written by pgcluster) and `mana_ai.password` (the service
//! role's password, mode 0600, reused on every start).
//!
//! The cluster deliberately keeps running after `mana-ai dev` exits so that the next start
//! is fast; the banner says how to stop it.

use std::fmt::Write as _;
use std::io::{ErrorKind, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Timelike, Utc};
use clap::Args;
use mana_ai_pgcluster::{Cluster, ClusterConfig, ClusterError, DEFAULT_OS_USER};
use mana_ai_store::{schema, StoreError};
use serde_json::{json, Value};

use std::sync::Arc;

use anyhow::Context;
use mana_ai_core::chat::LlmClient;
use mana_ai_runner::Metrics;
use mana_ai_store::RefreshOptions;

use crate::config::{mask_url, Config, LlmBackend};

/// Database the service uses inside the private cluster.
pub const DEV_DATABASE: &str = "mana_sync";
/// Least-privilege login role the service runs as.
pub const DEV_ROLE: &str = "mana_ai";
/// File (inside the data dir) holding the service role's password.
pub const PASSWORD_FILE: &str = "mana_ai.password";
/// Directory (inside the data dir) of the PostgreSQL cluster.
pub const CLUSTER_DIR: &str = "pg";
/// The demo user's id.
pub const DEMO_USER: &str = "demo-user";
/// Record ids of the demo data.
pub const DEMO_AGENT_ID: &str = "demo-agent";
pub const DEMO_GOAL_ID: &str = "demo-goal";
pub const DEMO_MISSION_ID: &str = "demo-mission";
/// The demo user's space (the web app stamps `spaceId` on every record it creates).
pub const DEMO_SPACE_ID: &str = "demo-space";
/// `client_id` of the seeded rows (the web app writes its device id there).
pub const DEMO_CLIENT_ID: &str = "mana-ai-dev-demo";
/// The service key the configuration falls back to.
const DEFAULT_SERVICE_KEY: &str = "dev-service-key";
/// Serialises concurrent seeders (two `mana-ai dev` on one data dir).
const SEED_LOCK_KEY: i64 = 7_366_720_002;

/// Arguments of `mana-ai dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Where the private cluster, the local model and other files live (created if
    /// missing; default: MANA_AI_DATA_DIR, else `.mana-ai`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seed a demo user, agent, goal and due mission (skips what already exists).
    #[arg(long)]
    pub demo: bool,
}

/// What can go wrong while preparing the dev environment.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// Starting or finding the PostgreSQL cluster failed (the message says what to do).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A file-system operation on the data dir failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A database step failed.
    #[error("{context}: {source}")]
    Db {
        context: &'static str,
        #[source]
        source: StoreError,
    },
    /// The password file exists but cannot be used.
    #[error("{path:?} {reason}; delete it to have a new password generated")]
    BadPasswordFile { path: PathBuf, reason: String },
    /// The blocking cluster task panicked or was cancelled.
    #[error("the PostgreSQL start task failed: {0}")]
    Task(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> DevError {
    let context = context.into();
    move |source| DevError::Io { context, source }
}

fn db_err<E: Into<StoreError>>(context: &'static str) -> impl FnOnce(E) -> DevError {
    move |e| DevError::Db {
        context,
        source: e.into(),
    }
}

/// The service role's password. Not `Debug`/`Display`: the bytes never reach a log.
pub struct DevPassword(String);

impl DevPassword {
    /// The secret itself (goes into a connection URL only).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Runs `mana-ai dev`: cluster, database, role, optional demo data, then the service.
pub async fn run(cfg: Config, args: DevArgs) -> anyhow::Result<()> {
    let data_dir = prepare_data_dir(args.data_dir.as_deref().unwrap_or(&cfg.data_dir))?;
    let cluster = start_cluster(data_dir.join(CLUSTER_DIR)).await?;
    let password = load_or_create_password(&data_dir.join(PASSWORD_FILE))?;
    let superuser_url = quiet(cluster.superuser_url(DEV_DATABASE));
    prepare_database(&cluster, &password).await?;
    let seeded = if args.demo {
        let admin = mana_ai_store::connect_once(&superuser_url)
            .await
            .map_err(db_err("connecting to mana_sync as the cluster superuser"))?;
        Some(seed_demo(admin, Utc::now()).await?)
    } else {
        None
    };
    let service_url = service_url(&password, cluster.port());
    let bind_explicit = std::env::var("MANA_AI_BIND").is_ok_and(|v| !v.trim().is_empty());
    let sync_url_given = std::env::var("SYNC_DATABASE_URL").is_ok_and(|v| !v.trim().is_empty());
    let dev_cfg = dev_config(&cfg, service_url, superuser_url, bind_explicit, &data_dir);
    let llm = dev_llm(&dev_cfg).await?;
    println!(
        "{}",
        banner(&BannerInfo {
            cfg: &dev_cfg,
            data_dir: &data_dir,
            pg_data_dir: cluster.data_dir(),
            pg_bindir: cluster.bindir(),
            pg_log: cluster.log_file(),
            pg_port: cluster.port(),
            running_as_root: running_as_root(),
            sync_url_ignored: sync_url_given,
            seeded: seeded.as_ref(),
        })
    );
    // The cluster handle only describes the server; dropping a persistent one leaves the
    // server running, which is what we want.
    drop(cluster);
    if args.demo {
        let report = demo_pass(&dev_cfg, llm.clone()).await?;
        println!("{report}");
    }
    crate::app::serve_with(dev_cfg, Some(llm)).await
}

/// The LLM `dev` plans with. The local model is fetched first when it is missing from the
/// data dir (and `MANA_AI_LOCAL_MODEL` does not name another file).
async fn dev_llm(cfg: &Config) -> anyhow::Result<Arc<dyn LlmClient>> {
    if cfg.llm_backend == LlmBackend::Local {
        let path = cfg.local_model_path();
        if cfg.local_model.is_none() && !path.is_file() {
            println!(
                "mana-ai dev: no local model at {}; fetching it with pip (once) — set \
                 MANA_LLM_URL to use an OpenAI-compatible server instead",
                path.display()
            );
            let dir = cfg.data_dir.clone();
            tokio::task::spawn_blocking(move || crate::local_cli::model_fetch(&dir))
                .await
                .context("model fetch task failed")?
                .context(
                    "fetching the local model failed; set MANA_LLM_URL to an OpenAI-compatible \
                     server, or MANA_AI_LOCAL_MODEL to a GGUF file",
                )?;
        }
        println!("mana-ai dev: loading the local model {}", path.display());
    }
    crate::app::llm_for(cfg).await
}

/// `--demo`: one tick now, then the demo mission's newest iteration as text.
pub async fn demo_pass(cfg: &Config, llm: Arc<dyn LlmClient>) -> anyhow::Result<String> {
    println!(
        "mana-ai dev: planning the demo mission with the {} model (one tick)…",
        match cfg.llm_backend {
            LlmBackend::Local => "local",
            LlmBackend::Http => "configured",
        }
    );
    crate::app::migrate(cfg).await.context("schema migration")?;
    let store = crate::app::store_for(cfg)?;
    store
        .verify_discovery()
        .await
        .context("checking change discovery")?;
    let runner = crate::app::runner_with_llm(cfg, store.clone(), Metrics::new(), llm)?;
    let stats = runner.tick().await;
    // The tick's refresh ran before the plan was written; one more refresh projects it
    // once the row is older than the refresh's safety margin.
    let opts = RefreshOptions::default();
    tokio::time::sleep(opts.safety_margin + std::time::Duration::from_millis(50)).await;
    store
        .refresh_snapshots(opts)
        .await
        .context("refreshing after the demo tick")?;
    let missions = store
        .user_missions(DEMO_USER)
        .await
        .context("reading the demo mission")?;
    store.close();
    let mission = missions.iter().find(|m| m.mission_id == DEMO_MISSION_ID);
    Ok(demo_report(
        &stats.errors,
        stats.duration_ms,
        mission.map(|m| &m.record),
        &http_base(cfg.bind, cfg.port),
    ))
}

/// Text for the demo pass: the newest iteration's steps (tool names, arguments), or why
/// there is none, and where to look next.
pub fn demo_report(
    errors: &[String],
    duration_ms: u64,
    mission: Option<&Value>,
    base: &str,
) -> String {
    let mut out = String::new();
    let iteration = mission
        .and_then(|m| m.get("iterations"))
        .and_then(Value::as_array)
        .and_then(|its| its.last());
    match iteration {
        None => {
            let _ = writeln!(
                out,
                "demo: the tick ({duration_ms} ms) wrote no iteration for {DEMO_MISSION_ID}"
            );
            for e in errors {
                let _ = writeln!(out, "   error      {e}");
            }
        }
        Some(it) => {
            let status = it
                .get("overallStatus")
                .and_then(Value::as_str)
                .unwrap_or("?");
            let _ = writeln!(
                out,
                "demo: tick took {duration_ms} ms; iteration {} of {DEMO_MISSION_ID}: {status}",
                it.get("id").and_then(Value::as_str).unwrap_or("?")
            );
            if let Some(summary) = it.get("summary").and_then(Value::as_str) {
                if !summary.is_empty() {
                    let _ = writeln!(out, "   summary    {summary}");
                }
            }
            let steps = it
                .get("plan")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (i, step) in steps.iter().enumerate() {
                let intent = step.get("intent").cloned().unwrap_or(Value::Null);
                let _ = writeln!(
                    out,
                    "   step {}     {} {}",
                    i + 1,
                    intent
                        .get("toolName")
                        .and_then(Value::as_str)
                        .unwrap_or("?"),
                    intent.get("params").cloned().unwrap_or(Value::Null)
                );
            }
            if let Some(details) = it.get("errorDetails") {
                let _ = writeln!(out, "   error      {details}");
            }
        }
    }
    let _ = writeln!(
        out,
        "   next       curl -H 'X-Service-Key: $MANA_SERVICE_KEY' {base}/internal/missions/{DEMO_USER}"
    );
    let _ = write!(out, "              curl {base}/metrics");
    out
}

/// Creates the data dir if needed and returns it as an absolute path.
pub fn prepare_data_dir(dir: &Path) -> Result<PathBuf, DevError> {
    std::fs::create_dir_all(dir).map_err(io_err(format!("could not create {dir:?}")))?;
    std::path::absolute(dir).map_err(io_err(format!("could not resolve {dir:?}")))
}

/// Starts or reuses the persistent cluster in `pg_dir` (blocking work off the runtime).
async fn start_cluster(pg_dir: PathBuf) -> Result<Cluster, DevError> {
    tokio::task::spawn_blocking(move || Cluster::start(ClusterConfig::persistent(pg_dir)))
        .await
        .map_err(|e| DevError::Task(e.to_string()))?
        .map_err(DevError::from)
}

/// Reads the service role's password from `path`, or creates the file (mode 0600) with a
/// fresh random password. A file readable by others is tightened to 0600.
///
/// The file appears atomically with its content (written to a private temporary file,
/// then hard-linked into place), so a concurrent `mana-ai dev` never reads it half-written.
pub fn load_or_create_password(path: &Path) -> Result<DevPassword, DevError> {
    if path.exists() {
        return read_password(path);
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let tmp = PathBuf::from(tmp_name);
    let password = generate_password();
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            // `mode` only applies to new files: make sure a stale temp file is private too.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            file.write_all(password.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(format!("could not write {tmp:?}"))(e));
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(DevPassword(password)),
        // Another `mana-ai dev` was faster: use its password.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => read_password(path),
        Err(e) => Err(io_err(format!("could not create {path:?}"))(e)),
    }
}

fn read_password(path: &Path) -> Result<DevPassword, DevError> {
    let meta = std::fs::metadata(path).map_err(io_err(format!("could not read {path:?}")))?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(format!("could not restrict {path:?} to mode 0600")))?;
    }
    let raw = std::fs::read_to_string(path).map_err(io_err(format!("could not read {path:?}")))?;
    let password = raw.trim();
    let bad = |reason: &str| DevError::BadPasswordFile {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    if password.is_empty() {
        return Err(bad("is empty"));
    }
    // It goes into a URL unescaped: only RFC 3986 unreserved characters.
    if !password
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    {
        return Err(bad(
            "contains characters other than letters, digits and -._~",
        ));
    }
    Ok(DevPassword(password.to_owned()))
}

/// 64 hex characters (two v4 UUIDs: 244 bits from the OS random source).
fn generate_password() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Creates `mana_sync`, the `sync_changes` table and the service role (all idempotent).
async fn prepare_database(cluster: &Cluster, password: &DevPassword) -> Result<(), DevError> {
    let admin = mana_ai_store::connect_once(&quiet(cluster.superuser_url("postgres")))
        .await
        .map_err(db_err("connecting to the private cluster as its superuser"))?;
    let exists = admin
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&DEV_DATABASE],
        )
        .await
        .map_err(db_err::<tokio_postgres::Error>(
            "looking up the mana_sync database",
        ))?
        .is_some();
    if !exists {
        let sql = format!("CREATE DATABASE {}", schema::quote_ident(DEV_DATABASE));
        if let Err(e) = admin.batch_execute(&sql).await {
            // 42P04 duplicate_database: another `mana-ai dev` was faster.
            if e.code().map(|c| c.code()) != Some("42P04") {
                return Err(db_err("creating the mana_sync database")(e));
            }
        }
    }
    schema::ensure_service_role(&admin, DEV_ROLE, password.expose())
        .await
        .map_err(db_err("creating the mana_ai login role"))?;
    drop(admin);
    let sync = mana_ai_store::connect_once(&quiet(cluster.superuser_url(DEV_DATABASE)))
        .await
        .map_err(db_err("connecting to mana_sync as the cluster superuser"))?;
    schema::create_sync_changes_for_dev(&sync)
        .await
        .map_err(db_err("creating sync_changes"))?;
    Ok(())
}

/// Adds `client_min_messages=warning` to a (query-less) URL: the idempotent DDL that runs
/// on every start would otherwise log a NOTICE per existing object.
fn quiet(url: String) -> String {
    format!("{url}?options=-c%20client_min_messages%3Dwarning")
}

/// `postgresql://mana_ai:<password>@127.0.0.1:<port>/mana_sync`. Contains the secret.
pub fn service_url(password: &DevPassword, port: u16) -> String {
    format!(
        "postgresql://{DEV_ROLE}:{}@127.0.0.1:{port}/{DEV_DATABASE}",
        password.expose()
    )
}

/// The configuration `dev` serves with: the base configuration with the service running
/// as the least-privilege role, migrating as the superuser, and listening on loopback
/// unless `MANA_AI_BIND` was set explicitly.
pub fn dev_config(
    base: &Config,
    service_url: String,
    superuser_url: String,
    bind_explicit: bool,
    data_dir: &Path,
) -> Config {
    let mut cfg = base.clone();
    cfg.data_dir = data_dir.to_owned();
    if !cfg.llm_backend_explicit {
        cfg.llm_backend = LlmBackend::Local;
    }
    cfg.sync_database_url = service_url;
    cfg.migration_database_url = Some(superuser_url);
    if !bind_explicit {
        cfg.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    }
    cfg
}

/// Whether this process runs as root (then the cluster runs as [`DEFAULT_OS_USER`]).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// One demo record: where it goes and its JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoRecord {
    pub app_id: &'static str,
    pub table_name: &'static str,
    pub record_id: &'static str,
    pub kind: &'static str,
    pub data: Value,
}

/// The demo agent, goal and mission as the web app would push them on create, stamped
/// with `now` (the mission is due at `now`).
pub fn demo_records(now: DateTime<Utc>) -> Vec<DemoRecord> {
    let at = mana_ai_core::iso::to_iso_ms(now);
    let day_start = now
        .with_hour(0)
        .and_then(|t| t.with_minute(0))
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now);
    let day_start = mana_ai_core::iso::to_iso_ms(day_start);
    let agent = json!({
        "id": DEMO_AGENT_ID,
        "createdAt": at,
        "updatedAt": at,
        "name": "Mana Demo",
        "avatar": "🗓️",
        "role": "Daily planner: turns your goals into a short, realistic plan for today.",
        "policy": {"tools": {}, "defaultsByModule": {}, "defaultForAi": "propose"},
        "maxTokensPerDay": 50000,
        "maxConcurrentMissions": 1,
        "state": "active",
        "spaceId": DEMO_SPACE_ID,
        "authorId": DEMO_USER,
        "visibility": "space",
    });
    let goal = json!({
        "id": DEMO_GOAL_ID,
        "title": "Finish three focused tasks a day",
        "description": "Small steady progress beats heroic days.",
        "metric": {"source": "event_count", "eventType": "TaskCompleted"},
        "target": {"value": 3, "period": "day", "comparison": "gte"},
        "moduleId": "todo",
        "status": "active",
        "currentValue": 1,
        "currentPeriodStart": day_start,
        "createdAt": at,
        "updatedAt": at,
        "spaceId": DEMO_SPACE_ID,
        "authorId": DEMO_USER,
        "visibility": "space",
    });
    let mission = json!({
        "id": DEMO_MISSION_ID,
        "createdAt": at,
        "updatedAt": at,
        "title": "Plan today's tasks",
        "objective": "Propose at most three concrete tasks for today that move the goal \"Finish three focused tasks a day\" forward, given today's progress.",
        "conceptMarkdown": "## Plan today\n\nEvery morning, look at the goal and its progress so far, then propose a short list of tasks for today:\n\n- at most three tasks, each doable in one focused block;\n- prefer tasks that close something rather than start something new;\n- if the goal is already met today, propose nothing and say so.\n",
        "inputs": [{"module": "goals", "table": "companionGoals", "id": DEMO_GOAL_ID}],
        "cadence": {"kind": "daily", "atHour": 7, "atMinute": 0},
        "state": "active",
        "nextRunAt": at,
        "iterations": [],
        "agentId": DEMO_AGENT_ID,
        "spaceId": DEMO_SPACE_ID,
        "authorId": DEMO_USER,
        "visibility": "space",
    });
    vec![
        DemoRecord {
            app_id: "ai",
            table_name: "agents",
            record_id: DEMO_AGENT_ID,
            kind: "agent",
            data: agent,
        },
        DemoRecord {
            app_id: "companion",
            table_name: "companionGoals",
            record_id: DEMO_GOAL_ID,
            kind: "goal",
            data: goal,
        },
        DemoRecord {
            app_id: "ai",
            table_name: "aiMissions",
            record_id: DEMO_MISSION_ID,
            kind: "mission",
            data: mission,
        },
    ]
}

/// The actor the web app attaches to a signed-in user's own writes.
fn demo_actor() -> Value {
    json!({"kind": "user", "principalId": DEMO_USER, "displayName": "Du"})
}

/// What [`seed_demo`] did, per record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// `(kind, record id)` of rows inserted now.
    pub inserted: Vec<(&'static str, &'static str)>,
    /// `(kind, record id)` of records that already had rows (left untouched).
    pub existing: Vec<(&'static str, &'static str)>,
}

/// Inserts the demo records as `insert` rows of [`DEMO_USER`], skipping every record that
/// already has a row (any op): idempotent, and it never overwrites later edits.
/// `admin` must bypass row-level security (the cluster superuser).
pub async fn seed_demo(
    mut admin: tokio_postgres::Client,
    now: DateTime<Utc>,
) -> Result<SeedReport, DevError> {
    let tx = admin
        .transaction()
        .await
        .map_err(db_err::<tokio_postgres::Error>(
            "starting the demo seed transaction",
        ))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SEED_LOCK_KEY])
        .await
        .map_err(db_err::<tokio_postgres::Error>("locking the demo seed"))?;
    let actor = demo_actor();
    let mut report = SeedReport::default();
    for rec in demo_records(now) {
        let inserted = tx
            .execute(
                "INSERT INTO public.sync_changes
                   (app_id, table_name, record_id, user_id, op, data, field_meta, client_id,
                    schema_version, actor, origin, space_id)
                 SELECT $1, $2, $3, $4, 'insert', $5, '{}'::jsonb, $6, 1, $7, 'user', $8
                  WHERE NOT EXISTS (
                    SELECT 1 FROM public.sync_changes
                     WHERE user_id = $4 AND app_id = $1 AND table_name = $2 AND record_id = $3)",
                &[
                    &rec.app_id,
                    &rec.table_name,
                    &rec.record_id,
                    &DEMO_USER,
                    &rec.data,
                    &DEMO_CLIENT_ID,
                    &actor,
                    &DEMO_SPACE_ID,
                ],
            )
            .await
            .map_err(db_err::<tokio_postgres::Error>("inserting demo rows"))?;
        let entry = (rec.kind, rec.record_id);
        if inserted == 1 {
            report.inserted.push(entry);
        } else {
            report.existing.push(entry);
        }
    }
    tx.commit()
        .await
        .map_err(db_err::<tokio_postgres::Error>("committing the demo seed"))?;
    Ok(report)
}

/// Everything the start-up banner shows.
pub struct BannerInfo<'a> {
    pub cfg: &'a Config,
    pub data_dir: &'a Path,
    /// The cluster's data directory, binaries, log file and port.
    pub pg_data_dir: &'a Path,
    pub pg_bindir: &'a Path,
    pub pg_log: &'a Path,
    pub pg_port: u16,
    pub running_as_root: bool,
    pub sync_url_ignored: bool,
    pub seeded: Option<&'a SeedReport>,
}

/// The start-up banner (no secrets: the database URL is masked, the service key is only
/// shown when it is the public default).
pub fn banner(info: &BannerInfo<'_>) -> String {
    let cfg = info.cfg;
    let base = http_base(cfg.bind, cfg.port);
    let key_hint = if cfg.service_key == DEFAULT_SERVICE_KEY {
        format!("X-Service-Key: {DEFAULT_SERVICE_KEY}   (the default; set MANA_SERVICE_KEY to change it)")
    } else {
        "X-Service-Key: <your MANA_SERVICE_KEY>".to_owned()
    };
    let pg_ctl = info.pg_bindir.join("pg_ctl");
    let stop_db = format!(
        "{}{} -D {} stop",
        if info.running_as_root {
            format!("runuser -u {DEFAULT_OS_USER} -- ")
        } else {
            String::new()
        },
        pg_ctl.display(),
        info.pg_data_dir.display()
    );
    let rule = "=".repeat(72);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(out, " mana-ai dev");
    let _ = writeln!(out, "   data dir   {}", info.data_dir.display());
    let _ = writeln!(
        out,
        "   database   {}   (PostgreSQL {} on port {}, log {})",
        mask_url(&cfg.sync_database_url),
        info.pg_bindir.display(),
        info.pg_port,
        info.pg_log.display()
    );
    let _ = writeln!(
        out,
        "   HTTP       {base}   (health: {base}/health, metrics: {base}/metrics)"
    );
    let _ = writeln!(out, "   service    {key_hint}");
    let _ = writeln!(
        out,
        "   tick       {}",
        if cfg.tick_enabled {
            format!("every {} ms", cfg.tick_interval.as_millis())
        } else {
            "off (TICK_ENABLED=false); POST /internal/tick runs a pass".to_owned()
        }
    );
    if info.sync_url_ignored {
        let _ = writeln!(
            out,
            "   note       SYNC_DATABASE_URL is ignored by `dev` (it uses its own cluster)"
        );
    }
    if let Some(seed) = info.seeded {
        let list = |items: &[(&str, &str)]| {
            items
                .iter()
                .map(|(kind, id)| format!("{kind} {id}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !seed.inserted.is_empty() {
            let _ = writeln!(
                out,
                "   demo       seeded for user {DEMO_USER}: {}",
                list(&seed.inserted)
            );
        }
        if !seed.existing.is_empty() {
            let _ = writeln!(
                out,
                "   demo       already present for user {DEMO_USER}: {}",
                list(&seed.existing)
            );
        }
        let key = if cfg.service_key == DEFAULT_SERVICE_KEY {
            DEFAULT_SERVICE_KEY
        } else {
            "$MANA_SERVICE_KEY"
        };
        let _ = writeln!(
            out,
            "   look       curl -H 'X-Service-Key: {key}' {base}/internal/missions/{DEMO_USER}"
        );
        let _ = writeln!(
            out,
            "              (missions appear after the first tick; curl -X POST -H 'X-Service-Key: {key}' {base}/internal/tick runs one now)"
        );
    }
    let _ = writeln!(
        out,
        "   stop       Ctrl-C (or SIGTERM). PostgreSQL keeps running for a fast restart;"
    );
    let _ = writeln!(out, "              stop it with: {stop_db}");
    let _ = write!(out, "{rule}");
    out
}

/// The URL clients use: loopback when listening on all interfaces.
fn http_base(bind: IpAddr, port: u16) -> String {
    let host = if bind.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        bind
    };
    format!("http://{}", SocketAddr::new(host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn base_config() -> Config {
        Config::from_env(&BTreeMap::new()).unwrap()
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "mana-ai-dev-unit-{tag}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn dev_config_uses_service_role_superuser_migration_and_loopback() {
        let base = base_config();
        assert!(base.bind.is_unspecified());
        let cfg = dev_config(
            &base,
            "postgresql://svc".into(),
            "postgresql://su".into(),
            false,
            Path::new("/srv/dev"),
        );
        assert_eq!(cfg.sync_database_url, "postgresql://svc");
        assert_eq!(
            cfg.migration_database_url.as_deref(),
            Some("postgresql://su")
        );
        assert_eq!(cfg.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(cfg.port, base.port);
        assert_eq!(cfg.service_key, base.service_key);
        let explicit = dev_config(&base, "a".into(), "b".into(), true, Path::new("/d"));
        assert_eq!(explicit.bind, base.bind);
        // No LLM chosen: dev plans with the local model from its own data dir.
        assert_eq!(base.llm_backend, LlmBackend::Http);
        assert_eq!(cfg.llm_backend, LlmBackend::Local);
        assert_eq!(
            cfg.local_model_path(),
            Path::new("/srv/dev/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
        // An explicit server URL is kept.
        let mut env = std::collections::BTreeMap::new();
        env.insert("MANA_LLM_URL".to_string(), "http://127.0.0.1:9".to_string());
        let chosen = Config::from_env(&env).unwrap();
        let cfg = dev_config(&chosen, "a".into(), "b".into(), false, Path::new("/d"));
        assert_eq!(cfg.llm_backend, LlmBackend::Http);
        assert_eq!(cfg.mana_llm_url, "http://127.0.0.1:9");
    }

    #[test]
    fn demo_report_lists_steps_or_errors_and_where_to_look() {
        let mission = json!({"iterations": [
            {"id": "old", "plan": []},
            {"id": "it-1", "overallStatus": "awaiting-review", "summary": "Two tasks",
             "plan": [
                {"intent": {"kind": "toolCall", "toolName": "create_task",
                            "params": {"title": "Run 5 km"}}},
                {"intent": {"kind": "toolCall", "toolName": "create_note",
                            "params": {"title": "Plan"}}}
             ]}
        ]});
        let text = demo_report(&[], 1234, Some(&mission), "http://127.0.0.1:3067");
        assert!(
            text.contains("iteration it-1 of demo-mission: awaiting-review"),
            "{text}"
        );
        assert!(
            text.contains("step 1     create_task {\"title\":\"Run 5 km\"}"),
            "{text}"
        );
        assert!(text.contains("step 2     create_note"), "{text}");
        assert!(text.contains("1234 ms"), "{text}");
        assert!(
            text.contains("http://127.0.0.1:3067/internal/missions/demo-user"),
            "{text}"
        );
        assert!(text.contains("http://127.0.0.1:3067/metrics"), "{text}");
        let none = demo_report(&["llm: connection refused".into()], 5, None, "http://x");
        assert!(none.contains("wrote no iteration"), "{none}");
        assert!(none.contains("llm: connection refused"), "{none}");
    }

    #[test]
    fn quiet_urls_still_parse_and_keep_the_store_options() {
        let url = quiet("postgresql://postgres:pw@127.0.0.1:5/mana_sync".into());
        let cfg = mana_ai_store::parse_url(&url).unwrap();
        assert_eq!(cfg.get_dbname(), Some("mana_sync"));
        let opts = cfg.get_options().unwrap();
        assert!(opts.contains("-c client_min_messages=warning"), "{opts}");
        assert!(opts.contains("plan_cache_mode=force_custom_plan"), "{opts}");
        assert_eq!(mask_url(&url), "postgresql://postgres:***@127.0.0.1:5/mana_sync?options=-c%20client_min_messages%3Dwarning");
    }

    #[test]
    fn service_url_names_role_database_and_loopback() {
        let url = service_url(&DevPassword("abc123".into()), 5555);
        assert_eq!(url, "postgresql://mana_ai:abc123@127.0.0.1:5555/mana_sync");
        assert_eq!(
            mask_url(&url),
            "postgresql://mana_ai:***@127.0.0.1:5555/mana_sync"
        );
        assert_eq!(mana_ai_store::url_user(&url).as_deref(), Some(DEV_ROLE));
    }

    #[test]
    fn password_file_is_created_private_and_reused() {
        let dir = temp_dir("pw");
        let path = dir.join(PASSWORD_FILE);
        let first = load_or_create_password(&path).unwrap();
        assert_eq!(first.expose().len(), 64);
        assert!(first.expose().bytes().all(|b| b.is_ascii_hexdigit()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = load_or_create_password(&path).unwrap();
        assert_eq!(first.expose(), again.expose());
        let other = load_or_create_password(&dir.join("other")).unwrap();
        assert_ne!(first.expose(), other.expose());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_creators_agree_on_one_password() {
        let dir = temp_dir("pw-race");
        let path = dir.join(PASSWORD_FILE);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || load_or_create_password(&path).map(|p| p.0))
            })
            .collect();
        let got: Vec<String> = handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect();
        assert!(got.iter().all(|p| p == &got[0]), "{} differ", got.len());
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert_eq!(on_disk.trim(), got[0]);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [PASSWORD_FILE], "temporary files left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn loose_password_file_is_tightened_and_bad_content_rejected() {
        let dir = temp_dir("pw-bad");
        let path = dir.join(PASSWORD_FILE);
        std::fs::write(&path, "s3cret-ok_1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            load_or_create_password(&path).unwrap().expose(),
            "s3cret-ok_1"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        for bad in ["", "  \n", "pa ss", "a@b", "x/y"] {
            std::fs::write(&path, bad).unwrap();
            let e = load_or_create_password(&path).err().expect(bad);
            assert!(
                matches!(e, DevError::BadPasswordFile { .. }),
                "{bad:?}: {e}"
            );
            assert!(e.to_string().contains("delete it"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn demo_records_have_the_web_app_shape() {
        let now = mana_ai_core::iso::parse_iso("2026-03-04T05:06:07.891Z").unwrap();
        let recs = demo_records(now);
        let keys: Vec<_> = recs
            .iter()
            .map(|r| (r.app_id, r.table_name, r.record_id))
            .collect();
        assert_eq!(
            keys,
            [
                ("ai", "agents", "demo-agent"),
                ("companion", "companionGoals", "demo-goal"),
                ("ai", "aiMissions", "demo-mission"),
            ]
        );
        for r in &recs {
            assert_eq!(r.data["id"], r.record_id, "id is inside data");
            assert_eq!(r.data["spaceId"], DEMO_SPACE_ID);
            assert_eq!(r.data["authorId"], DEMO_USER);
            assert_eq!(r.data["createdAt"], "2026-03-04T05:06:07.891Z");
        }
        let agent = &recs[0].data;
        assert_eq!(agent["name"], "Mana Demo");
        assert_eq!(agent["state"], "active");
        assert_eq!(agent["maxConcurrentMissions"], 1);
        assert_eq!(agent["maxTokensPerDay"], 50000);
        assert_eq!(agent["policy"]["defaultForAi"], "propose");
        assert!(agent["role"].as_str().is_some_and(|s| !s.is_empty()));
        let goal = &recs[1].data;
        assert!(goal["title"].is_string());
        assert_eq!(goal["target"]["period"], "day");
        assert!(goal["target"]["value"].is_number());
        assert!(goal["currentValue"].is_number());
        assert_eq!(goal["currentPeriodStart"], "2026-03-04T00:00:00.000Z");
        let mission = &recs[2].data;
        assert_eq!(mission["state"], "active");
        assert_eq!(mission["nextRunAt"], "2026-03-04T05:06:07.891Z");
        assert_eq!(mission["agentId"], "demo-agent");
        assert_eq!(
            mission["cadence"],
            json!({"kind": "daily", "atHour": 7, "atMinute": 0})
        );
        assert_eq!(
            mission["inputs"],
            json!([{"module": "goals", "table": "companionGoals", "id": "demo-goal"}])
        );
        assert_eq!(mission["iterations"], json!([]));
        for field in ["title", "objective", "conceptMarkdown"] {
            let text = mission[field].as_str().unwrap();
            assert!(!text.is_empty() && !text.starts_with("enc:1:"), "{field}");
        }
    }

    #[test]
    fn banner_masks_the_password_and_says_where_to_look() {
        let base = base_config();
        let url = service_url(&DevPassword("topsecretpw".into()), 6543);
        let cfg = dev_config(
            &base,
            url,
            "postgresql://postgres:supersecret@x/y".into(),
            false,
            Path::new("/d"),
        );
        let seed = SeedReport {
            inserted: vec![("agent", DEMO_AGENT_ID), ("mission", DEMO_MISSION_ID)],
            existing: vec![("goal", DEMO_GOAL_ID)],
        };
        let text = banner(&BannerInfo {
            cfg: &cfg,
            data_dir: Path::new("/d/.mana-ai"),
            pg_data_dir: Path::new("/d/.mana-ai/pg"),
            pg_bindir: Path::new("/usr/lib/postgresql/15/bin"),
            pg_log: Path::new("/d/.mana-ai/pg.log"),
            pg_port: 6543,
            running_as_root: true,
            sync_url_ignored: true,
            seeded: Some(&seed),
        });
        assert!(!text.contains("topsecretpw"), "{text}");
        assert!(!text.contains("supersecret"), "{text}");
        for want in [
            "/d/.mana-ai",
            "postgresql://mana_ai:***@127.0.0.1:6543/mana_sync",
            "http://127.0.0.1:3067",
            "X-Service-Key: dev-service-key",
            "seeded for user demo-user: agent demo-agent, mission demo-mission",
            "already present for user demo-user: goal demo-goal",
            "http://127.0.0.1:3067/internal/missions/demo-user",
            "/metrics",
            "/health",
            "SYNC_DATABASE_URL is ignored",
            "Ctrl-C",
            "runuser -u mana-ai-pg -- /usr/lib/postgresql/15/bin/pg_ctl -D /d/.mana-ai/pg stop",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        let mut custom = cfg.clone();
        custom.service_key = "my-own-key".into();
        let text = banner(&BannerInfo {
            cfg: &custom,
            data_dir: Path::new("/d"),
            pg_data_dir: Path::new("/d/pg"),
            pg_bindir: Path::new("/bin"),
            pg_log: Path::new("/d/pg.log"),
            pg_port: 1,
            running_as_root: false,
            sync_url_ignored: false,
            seeded: None,
        });
        assert!(!text.contains("my-own-key"), "{text}");
        assert!(!text.contains("runuser"), "{text}");
        assert!(!text.contains("demo"), "{text}");
        assert!(!text.contains("ignored"), "{text}");
        assert!(text.contains("/bin/pg_ctl -D /d/pg stop"), "{text}");
    }

    #[test]
    fn http_base_prefers_loopback_for_wildcard_binds() {
        let cases = [
            (IpAddr::from([0, 0, 0, 0]), "http://127.0.0.1:80"),
            (IpAddr::from([127, 0, 0, 1]), "http://127.0.0.1:80"),
            (IpAddr::from([10, 1, 2, 3]), "http://10.1.2.3:80"),
            ("::1".parse().unwrap(), "http://[::1]:80"),
            ("::".parse().unwrap(), "http://127.0.0.1:80"),
        ];
        for (bind, want) in cases {
            assert_eq!(http_base(bind, 80), want, "{bind}");
        }
    }
}
