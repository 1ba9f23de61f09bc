//! Boot sequence and lifecycle: logging, database, migration, runner, scheduler, HTTP,
//! signals, two-phase shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use mana_ai_core::crypto::GrantPrivateKey;
use mana_ai_runner::{
    Metrics, Runner, RunnerConfig, RunnerDeps, Scheduler, SchedulerStatus, SystemClock,
};
use mana_ai_store::{schema, Store};

use crate::config::{Config, LlmBackend};
use crate::http::{self, AppState};

/// `MANA_AI_AUDIT_RETENTION_DAYS` is read and validated by the configuration now.
pub use crate::config::audit_retention_days;

/// The connection migrations run on: `MANA_AI_MIGRATION_DATABASE_URL` when set (then the
/// service role of `SYNC_DATABASE_URL` is granted its privileges), else the service's
/// own URL (the original's single-DSN setup).
fn migration_target(cfg: &Config) -> (&str, &'static str, schema::MigrateOptions) {
    match &cfg.migration_database_url {
        Some(admin) => (
            admin,
            "connecting with MANA_AI_MIGRATION_DATABASE_URL",
            cfg.db
                .migrate_options(mana_ai_store::url_user(&cfg.sync_database_url)),
        ),
        None => (
            &cfg.sync_database_url,
            "connecting with SYNC_DATABASE_URL",
            cfg.db.migrate_options(None),
        ),
    }
}

/// `mana-ai migrate`: applies the pending migrations (none: no DDL), then sets the
/// migration-owned audit retention; answers the versions applied. Refuses a database
/// newer than this binary.
pub async fn migrate(cfg: &Config) -> anyhow::Result<Vec<i32>> {
    let (url, what, opts) = migration_target(cfg);
    let client = mana_ai_store::connect_once(url).await.context(what)?;
    let applied = schema::migrate_with(&client, &opts).await?;
    schema::set_audit_retention(&client, cfg.audit_retention_days).await?;
    Ok(applied)
}

pub async fn migrate_only(cfg: &Config) -> anyhow::Result<()> {
    let applied = migrate(cfg).await?;
    if !applied.is_empty() {
        let list: Vec<String> = applied.iter().map(i32::to_string).collect();
        eprintln!("mana-ai: applied migration(s) {}", list.join(", "));
    }
    println!(
        "mana-ai: migration complete (schema version {})",
        schema::SCHEMA_VERSION
    );
    Ok(())
}

/// `mana-ai migrate --status`: every migration of this binary, applied or pending, read
/// with the migration URL when set (else the service's). Changes nothing.
pub async fn migrate_status(cfg: &Config) -> anyhow::Result<()> {
    let (url, what, _) = migration_target(cfg);
    let client = mana_ai_store::connect_once(url).await.context(what)?;
    let state = schema::read_state(&client).await?;
    for line in state.describe() {
        println!("{line}");
    }
    Ok(())
}

/// Boot's schema check (`serve`, `tick`, `dev`): compares the database's recorded
/// migrations with this binary's. Current → no DDL at all (a least-privilege role
/// boots); behind → migrates with the migration URL, or with the service's own URL when
/// that role may (single-DSN), else stops with what to run; ahead → refuses to start.
pub async fn ensure_schema(cfg: &Config) -> anyhow::Result<()> {
    let state = {
        let url = cfg
            .migration_database_url
            .as_deref()
            .unwrap_or(&cfg.sync_database_url);
        let client = mana_ai_store::connect_once(url)
            .await
            .context("connecting to the database")?;
        schema::read_state(&client).await?
    };
    match state.compatibility() {
        schema::Compatibility::Current => {
            for (version, _) in state.checksum_mismatches() {
                tracing::warn!(version, "migration {version} was recorded with another checksum than this binary's (see `mana-ai migrate --status`)");
            }
            tracing::info!(version = schema::SCHEMA_VERSION, "schema is current: no migration");
            Ok(())
        }
        schema::Compatibility::Ahead { database } => anyhow::bail!(
            "the database schema is at version {database}, newer than this binary's {}: refusing to start (an older mana-ai must not rewrite a newer schema); run a newer mana-ai",
            schema::SCHEMA_VERSION
        ),
        schema::Compatibility::Behind { pending } => {
            if cfg.migration_database_url.is_none() {
                let client = mana_ai_store::connect_once(&cfg.sync_database_url)
                    .await
                    .context("connecting with SYNC_DATABASE_URL")?;
                if !schema::can_migrate(&client).await? {
                    anyhow::bail!(
                        "the database schema is at version {}, this binary needs {} and the role of SYNC_DATABASE_URL may not migrate it: run `mana-ai migrate` once with MANA_AI_MIGRATION_DATABASE_URL set to an admin URL (or set it for this service), then start again",
                        state.database_version(),
                        schema::SCHEMA_VERSION
                    );
                }
            }
            tracing::info!(?pending, "schema is behind this binary: migrating");
            migrate(cfg).await.context("schema migration")?;
            Ok(())
        }
    }
}

pub fn store_for(cfg: &Config) -> anyhow::Result<Store> {
    let sc = cfg
        .db
        .store_config(&cfg.sync_database_url, cfg.db_pool_size);
    Ok(Store::connect(&sc)?)
}

/// Context window the runner assumes for the embedded model (its prompts must fit in
/// 4096 tokens with room for the answer); compaction starts below it.
pub const LOCAL_CONTEXT_TOKENS: u64 = 3_400;

/// The LLM client the configuration asks for. The local backend loads its GGUF file here
/// (on the blocking pool), so a missing or broken model stops the boot with one clear line.
pub async fn llm_for(cfg: &Config) -> anyhow::Result<Arc<dyn mana_ai_core::chat::LlmClient>> {
    match cfg.llm_backend {
        LlmBackend::Http => {
            let mut lc =
                mana_ai_llm::HttpLlmConfig::new(cfg.mana_llm_url.clone(), cfg.llm_api_key.clone());
            lc.default_model = cfg.llm_model.clone();
            lc.call_deadline = cfg.llm_timeout;
            lc.max_attempts = cfg.llm_max_attempts;
            Ok(Arc::new(
                mana_ai_llm::HttpLlmClient::new(lc).context("MANA_LLM_URL / LLM settings")?,
            ))
        }
        LlmBackend::Local => Ok(Arc::new(
            crate::local_cli::load_local(&cfg.local_model_path()).await?,
        )),
    }
}

/// Imports `MANA_AI_PRIVATE_KEY_PEM` (PKCS#8 or PKCS#1 RSA). Unset ⇒ `None`: grants are
/// disabled and skipped as `not-configured`. Set but unusable ⇒ a boot error naming the
/// variable (the original silently disabled grants instead).
pub fn grant_key_for(cfg: &Config) -> anyhow::Result<Option<Arc<GrantPrivateKey>>> {
    let Some(pem) = cfg.private_key_pem.as_deref() else {
        tracing::info!("MANA_AI_PRIVATE_KEY_PEM not set: mission grants disabled");
        return Ok(None);
    };
    let key = GrantPrivateKey::from_pem(pem)
        .map_err(|e| anyhow::anyhow!("MANA_AI_PRIVATE_KEY_PEM: invalid private key: {e}"))?;
    tracing::info!(bits = key.bits(), "mission grants enabled");
    Ok(Some(Arc::new(key)))
}

/// Builds the runner from the configuration (shared by `serve`, `tick`, `dev`, tests).
pub async fn runner_for(cfg: &Config, store: Store, metrics: Metrics) -> anyhow::Result<Runner> {
    let llm = llm_for(cfg).await?;
    runner_with_llm(cfg, store, metrics, llm)
}

/// Builds the runner around an LLM client the caller already has (`dev --demo` loads the
/// local model once for its first pass and the service).
pub fn runner_with_llm(
    cfg: &Config,
    store: Store,
    metrics: Metrics,
    llm: Arc<dyn mana_ai_core::chat::LlmClient>,
) -> anyhow::Result<Runner> {
    let grant_key = grant_key_for(cfg)?;
    Ok(Runner::new(
        RunnerDeps {
            store,
            metrics,
            llm,
            clock: Arc::new(SystemClock),
        },
        RunnerConfig {
            due_limit: cfg.due_limit,
            refresh_batch_rows: cfg.refresh_batch_rows,
            max_concurrent_plans: cfg.max_concurrent_plans,
            mission_deadline: cfg.mission_deadline,
            claim_grace: cfg.claim_grace,
            max_inputs: cfg.max_inputs,
            defer: cfg.defer,
            llm_model: cfg.llm_model.clone(),
            max_completion_tokens: cfg.max_completion_tokens,
            policy_mode: cfg.policy_mode,
            untrusted_policy_mode: cfg.untrusted_policy_mode,
            context_window_tokens: match cfg.llm_backend {
                LlmBackend::Http => cfg.compact_max_ctx,
                LlmBackend::Local => cfg.compact_max_ctx.min(LOCAL_CONTEXT_TOKENS),
            },
            default_timezone: cfg.default_timezone,
            compact_model: cfg.compact_model.clone(),
            default_language: cfg.default_language,
            json_plan_fallback: cfg.json_plan_fallback,
            retry_base: cfg.retry_base,
            retry_cap: cfg.retry_cap,
            default_agent_max_concurrent: cfg.default_agent_max_concurrent,
            default_agent_tokens_per_day: Some(cfg.default_agent_tokens_per_day),
            grant_key,
            news_api_url: Some(cfg.mana_api_url.clone()),
            research_url: Some(cfg.mana_research_url.clone()),
            deep_research_enabled: cfg.deep_research_enabled,
            service_key: mana_ai_runner::research::ServiceKey::new(cfg.service_key.clone()),
            shallow_research_triggers: cfg.shallow_research_triggers.clone(),
            deep_research_triggers: cfg.deep_research_triggers.clone(),
            news_service_key_header: cfg.news_service_key_header.clone(),
            news_user_id_header: cfg.news_user_id_header.clone(),
            research_job_max_age: cfg.research_max_age,
            research_max_poll_failures: cfg.research_max_poll_failures,
            iteration_history: cfg.iteration_history,
            ..RunnerConfig::default()
        },
    ))
}

/// Builds the HTTP state around a runner, with the scheduler status `/health` reports
/// (the scheduler is started on it by [`serve_with`]) and the background database probe
/// (started here: needs a tokio runtime).
pub fn app_state(cfg: &Config, runner: Arc<Runner>) -> Arc<AppState> {
    Arc::new(AppState {
        runner,
        service_key: cfg.service_key.clone(),
        health: crate::health::Health {
            tick_enabled: cfg.tick_enabled,
            scheduler: SchedulerStatus::new(cfg.tick_interval),
            db: crate::health::DbProbe::spawn(cfg.sync_database_url.clone()),
        },
    })
}

/// Boots and serves until SIGTERM/SIGINT.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    serve_with(cfg, None).await
}

/// [`serve`] with an LLM client built by the caller (`None`: from the configuration).
pub async fn serve_with(
    cfg: Config,
    llm: Option<Arc<dyn mana_ai_core::chat::LlmClient>>,
) -> anyhow::Result<()> {
    // First: a configuration that would open the service to its network is refused
    // before anything starts (main exits with code 2 on this error).
    cfg.check_exposure()?;
    let retention = cfg.audit_retention_days;
    let llm = match llm {
        Some(llm) => llm,
        None => llm_for(&cfg).await?,
    };
    ensure_schema(&cfg).await?;
    let store = store_for(&cfg)?;
    store
        .verify_discovery()
        .await
        .context("checking change discovery")?;
    let metrics = Metrics::new();
    let runner = Arc::new(runner_with_llm(&cfg, store.clone(), metrics, llm)?);
    // The retention itself is the migration-owned setting written by `migrate`.
    let retention_task = retention.map(|_| runner.maintenance().clone().spawn_audit_retention());
    let state = app_state(&cfg, runner.clone());
    let addr = SocketAddr::new(cfg.bind, cfg.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let scheduler = if cfg.tick_enabled {
        let status = Arc::clone(&state.health.scheduler);
        Some(Scheduler::start_reporting(runner.clone(), status))
    } else {
        None
    };
    tracing::info!(
        %addr,
        tick = if cfg.tick_enabled { "on" } else { "off" },
        "mana-ai listening"
    );
    let api = Arc::new(crate::audit_http::ApiState::from_config(&cfg)?);
    let app = http::router_with_api(state.clone(), cfg.body_limit_bytes, Some(api));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limits = cfg.http;
    let server = tokio::spawn(async move {
        let mut rx = stop_rx;
        crate::http_server::serve(listener, app, limits, async move {
            let _ = rx.changed().await;
        })
        .await
    });
    crate::signal::shutdown_signal().await;
    // One grace period for the whole shutdown, shared by its phases.
    let deadline = tokio::time::Instant::now() + cfg.shutdown_grace;
    tracing::info!("shutdown: no new work is taken");
    let _ = stop_tx.send(true);
    if let Some(s) = scheduler {
        if !s.shutdown(remaining(deadline)).await {
            tracing::warn!(
                "shutdown: a tick pass did not finish within the grace period and was cancelled"
            );
        }
    }
    if !runner.wait_idle(remaining(deadline)).await {
        tracing::warn!("shutdown: a requested tick pass is still running");
    }
    match tokio::time::timeout(remaining(deadline), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
        Err(_) => tracing::warn!("shutdown: open HTTP connections did not finish in time"),
    }
    if let Some(task) = retention_task {
        task.abort();
    }
    store.close();
    tracing::info!("shutdown complete");
    Ok(())
}

/// One pass, printed as JSON (operators and smoke tests).
pub async fn tick_once(cfg: Config) -> anyhow::Result<()> {
    // The LLM first: a missing local model is a configuration error, reported before
    // the database is touched.
    let llm = llm_for(&cfg).await?;
    ensure_schema(&cfg).await?;
    let store = store_for(&cfg)?;
    store.verify_discovery().await?;
    let runner = runner_with_llm(&cfg, store.clone(), Metrics::new(), llm)?;
    let stats = runner.tick().await;
    println!("{}", serde_json::to_string_pretty(&stats)?);
    store.close();
    Ok(())
}

fn remaining(deadline: tokio::time::Instant) -> std::time::Duration {
    deadline.saturating_duration_since(tokio::time::Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_with_pem(pem: Option<&str>) -> Config {
        let mut env = std::collections::BTreeMap::new();
        if let Some(p) = pem {
            env.insert("MANA_AI_PRIVATE_KEY_PEM".to_string(), p.to_string());
        }
        Config::from_env(&env).unwrap()
    }

    #[test]
    fn grant_key_is_parsed_at_boot_and_a_bad_pem_names_the_variable() {
        assert!(grant_key_for(&cfg_with_pem(None)).unwrap().is_none());
        let (private_pem, _) = mana_ai_core::crypto::generate_keypair().unwrap();
        // The env form with literal `\n` escapes is accepted too (config.rs unescapes).
        let escaped = private_pem.replace('\n', "\\n");
        for pem in [private_pem.as_str(), escaped.as_str()] {
            let key = grant_key_for(&cfg_with_pem(Some(pem))).unwrap().unwrap();
            assert_eq!(key.bits(), 2048);
        }
        for bad in [
            "not a key",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        ] {
            let e = grant_key_for(&cfg_with_pem(Some(bad)))
                .unwrap_err()
                .to_string();
            assert!(e.contains("MANA_AI_PRIVATE_KEY_PEM"), "{e}");
            assert!(!e.contains("AAAA"), "{e}");
        }
    }
}
