//! Configuration from the environment, with the original service's variable names and
//! defaults. Every value is validated once at start: an invalid value stops the process
//! with one line naming the variable. An empty value means "use the default" (the
//! original crashed on empty values even where a default existed).
//!
//! This module is the only reader of the process environment in the service: every
//! variable the service (including `mana-ai dev`) acts on is a field of [`Config`], so
//! `mana-ai config` shows it ([`Config::describe`], secrets masked). Parsers live in
//! `parse`, the masked listing in `describe`.

mod db;
mod describe;
pub mod otel;
mod parse;
mod security;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;
use mana_ai_core::plan::PolicyMode;
use mana_ai_llm as llm;
use mana_ai_runner::defaults as run;

pub use db::DbSettings;
pub use describe::{mask_http_url, mask_secret, mask_url};
use parse::{
    get, llm_choice, opt_bool, opt_http_url, opt_ms, opt_num, opt_str, parse_header_name,
    parse_pg_url, parse_word_list,
};
pub use security::{
    service_key_is_strong, HttpLimits, DEFAULT_CORS_ORIGINS, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_UNTRUSTED_POLICY_MODE, DEV_CORS_ORIGIN, MIN_SERVICE_KEY_BYTES,
};

/// One invalid variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

fn err(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        message: message.into(),
    }
}

/// Which LLM backend plans missions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmBackend {
    /// An OpenAI-compatible server at `MANA_LLM_URL` (the original's only backend).
    Http,
    /// The embedded model (GGUF on the CPU), see `docs/local-model.md`.
    Local,
}

impl LlmBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Local => "local",
        }
    }
}

/// Default `MANA_AI_DATA_DIR`: where `mana-ai dev` keeps its cluster and where
/// `mana-ai model fetch` puts the model.
/// Default listening port (`PORT`).
pub const DEFAULT_PORT: u16 = 3067;
/// Default pool size (`MANA_AI_DB_POOL_SIZE`).
pub const DEFAULT_DB_POOL_SIZE: usize = 8;
/// Default mana-api base URL (`MANA_API_URL`).
pub const DEFAULT_NEWS_API_URL: &str = "http://localhost:3060";
/// Default mana-research base URL (`MANA_RESEARCH_URL`).
pub const DEFAULT_RESEARCH_URL: &str = "http://localhost:3068";
/// Default interval between scheduled passes (`TICK_INTERVAL_MS`).
pub const DEFAULT_TICK_INTERVAL: Duration = Duration::from_secs(60);
/// Default grace period of a shutdown (`MANA_AI_SHUTDOWN_GRACE_MS`).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default request body limit (`MANA_AI_BODY_LIMIT_BYTES`).
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 1 << 20;
/// Default JWT audience (`JWT_AUDIENCE`).
pub const DEFAULT_JWT_AUDIENCE: &str = "mana";
pub const DEFAULT_DATA_DIR: &str = ".mana-ai";
/// Default `MANA_AUTH_URL`.
pub const DEFAULT_AUTH_URL: &str = "http://localhost:3001";
/// Default `DEV_USER_ID`.
pub const DEFAULT_DEV_USER_ID: &str = "00000000-0000-0000-0000-000000000000";
/// Default `MANA_LLM_URL`.
pub const DEFAULT_LLM_URL: &str = "http://localhost:3020";
/// Default `SYNC_DATABASE_URL`.
pub const DEFAULT_SYNC_DATABASE_URL: &str =
    "postgresql://mana:devpassword@localhost:5432/mana_sync";
/// Default `MANA_SERVICE_KEY` (a public value: `mana-ai dev` prints it). `serve` refuses
/// it on any address but loopback ([`Config::check_exposure`]).
pub const DEFAULT_SERVICE_KEY: &str = "dev-service-key";
/// Default `MANA_AI_DEFAULT_TIMEZONE`.
pub use mana_ai_runner::defaults::DEFAULT_TIMEZONE;
/// Upper bound of `MANA_AI_AUDIT_RETENTION_DAYS` (100 years).
pub const MAX_AUDIT_RETENTION_DAYS: u32 = 36_500;

/// The effective configuration.
#[derive(Clone)]
pub struct Config {
    pub port: u16,
    pub bind: IpAddr,
    /// Whether `MANA_AI_BIND` was set (`mana-ai dev` listens on loopback unless it was).
    pub bind_explicit: bool,
    pub sync_database_url: String,
    /// Whether `SYNC_DATABASE_URL` was set (`mana-ai dev` ignores it and says so).
    pub sync_database_url_explicit: bool,
    pub migration_database_url: Option<String>,
    pub db_pool_size: usize,
    /// Database timeouts, keepalives, retries and migration lock bounds (`config/db.rs`).
    pub db: DbSettings,
    pub mana_llm_url: String,
    /// `MANA_AI_LLM` (`http` | `local`), or `local` when `MANA_LLM_URL=local`.
    pub llm_backend: LlmBackend,
    /// Whether `MANA_AI_LLM` or `MANA_LLM_URL` was set. `mana-ai dev` defaults to the
    /// local model only when neither was.
    pub llm_backend_explicit: bool,
    /// `MANA_AI_LOCAL_MODEL`: a GGUF file; unset ⇒ `<data dir>/models/<model file>`.
    pub local_model: Option<PathBuf>,
    /// `MANA_AI_DATA_DIR` (default `.mana-ai`).
    pub data_dir: PathBuf,
    pub llm_model: String,
    pub llm_api_key: String,
    pub llm_timeout: Duration,
    pub llm_max_attempts: u32,
    /// `MANA_AI_MAX_COMPLETION_TOKENS`: `max_tokens` of every LLM call.
    pub max_completion_tokens: u32,
    pub mana_api_url: String,
    pub mana_research_url: String,
    pub deep_research_enabled: bool,
    pub service_key: String,
    pub tick_interval: Duration,
    pub tick_enabled: bool,
    pub due_limit: i64,
    pub max_concurrent_plans: usize,
    pub mission_deadline: Duration,
    /// `MANA_AI_CLAIM_GRACE_MS`: a claim's lease is the mission deadline plus this.
    pub claim_grace: Duration,
    /// `MANA_AI_MAX_INPUTS`: most linked inputs one run resolves.
    pub max_inputs: usize,
    /// `MANA_AI_DEFER_BASE_MS` and the `MANA_AI_DEFER_*_CAP_MS` caps.
    pub defer: mana_ai_runner::DeferPolicy,
    pub refresh_batch_rows: i32,
    /// `MANA_AI_ITERATION_HISTORY`: most iterations a write-back keeps.
    pub iteration_history: usize,
    pub private_key_pem: Option<String>,
    /// `POLICY_MODE`, parsed straight into the planner's mode.
    pub policy_mode: PolicyMode,
    pub compact_max_ctx: u64,
    /// `MANA_AI_DEFAULT_TIMEZONE`, parsed once here.
    pub default_timezone: Tz,
    /// `MANA_AI_COMPACT_MODEL`: model of the compaction call.
    pub compact_model: String,
    /// `MANA_AI_DEFAULT_LANGUAGE` (`de` | `en`): language of undecidable missions.
    pub default_language: mana_ai_core::lang::Lang,
    pub shutdown_grace: Duration,
    pub body_limit_bytes: usize,
    pub log_json: bool,
    /// `RUST_LOG`: the log filter (unset ⇒ `info`).
    pub log_filter: Option<String>,
    pub json_plan_fallback: bool,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    pub default_agent_tokens_per_day: u64,
    pub default_agent_max_concurrent: u32,
    /// `MANA_AUTH_URL` as configured (`None` when unset); see [`Config::auth_url`].
    pub mana_auth_url: Option<String>,
    /// `JWT_ISSUER`: an extra accepted token issuer.
    pub jwt_issuer: Option<String>,
    /// `JWT_AUDIENCE` (default `mana`).
    pub jwt_audience: String,
    /// `MANA_AI_CORS_ORIGINS`: browser origins allowed to call `/api/*` (default
    /// `https://mana.how`; `mana-ai dev` and `NODE_ENV=development` add `vite dev`'s).
    pub cors_origins: Vec<String>,
    /// Whether `MANA_AI_CORS_ORIGINS` was set.
    pub cors_origins_explicit: bool,
    /// `MANA_AI_HTTP_*`: the HTTP server's timeouts and connection cap.
    pub http: HttpLimits,
    /// `MANA_AI_UNTRUSTED_POLICY_MODE`: injection policy of runs whose prompt carries
    /// research results (the stricter of it and `POLICY_MODE` applies).
    pub untrusted_policy_mode: PolicyMode,
    /// `NODE_ENV` as given (only `development` has an effect).
    pub node_env: Option<String>,
    /// `DEV_BYPASS_AUTH`; effective only together with `NODE_ENV=development`.
    pub dev_bypass_auth: bool,
    /// `DEV_USER_ID`: the user of bypassed requests.
    pub dev_user_id: String,
    pub shallow_research_triggers: Vec<String>,
    pub deep_research_triggers: Vec<String>,
    pub news_service_key_header: Option<String>,
    pub news_user_id_header: Option<String>,
    pub research_max_age: Duration,
    pub research_max_poll_failures: u32,
    /// `MANA_AI_AUDIT_RETENTION_DAYS`: days decrypt-audit rows are kept; `None` = forever.
    pub audit_retention_days: Option<u32>,
    /// `MANA_AI_PG_BINDIR`: PostgreSQL's binaries for `mana-ai dev` (unset ⇒ discovered).
    pub pg_bindir: Option<PathBuf>,
    /// The `OTEL_*` variables of the trace exporter.
    pub otel: otel::OtelConfig,
}

impl Config {
    /// Reads the process environment (the only place the service does).
    pub fn from_process_env() -> Result<Self, ConfigError> {
        Self::from_env(&std::env::vars().collect())
    }

    /// Reads a given environment (tests pass their own map). One line per variable.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let service_key = opt_str(env, "MANA_SERVICE_KEY", DEFAULT_SERVICE_KEY);
        let (mana_llm_url, llm_backend, llm_backend_explicit) = llm_choice(env)?;
        let opt_pg_url = |var| get(env, var).map(|v| parse_pg_url(var, v)).transpose();
        let opt_header = |var, default| parse_header_name(env, var, default);
        let bind_addr = bind(env)?;
        let node_env = get(env, "NODE_ENV").map(str::to_string);
        let explicit_origins = security::explicit_origins(env)?;
        Ok(Self {
            port: opt_num(env, "PORT", 1, u16::MAX, DEFAULT_PORT)?,
            bind: bind_addr.unwrap_or(IpAddr::from([0, 0, 0, 0])),
            bind_explicit: bind_addr.is_some(),
            sync_database_url: opt_pg_url("SYNC_DATABASE_URL")?
                .unwrap_or_else(|| DEFAULT_SYNC_DATABASE_URL.into()),
            sync_database_url_explicit: get(env, "SYNC_DATABASE_URL").is_some(),
            migration_database_url: opt_pg_url("MANA_AI_MIGRATION_DATABASE_URL")?,
            db_pool_size: opt_num(env, "MANA_AI_DB_POOL_SIZE", 1, 256, DEFAULT_DB_POOL_SIZE)?,
            db: DbSettings::from_env(env)?,
            mana_llm_url,
            llm_backend,
            llm_backend_explicit,
            local_model: get(env, "MANA_AI_LOCAL_MODEL").map(PathBuf::from),
            data_dir: PathBuf::from(opt_str(env, "MANA_AI_DATA_DIR", DEFAULT_DATA_DIR)),
            llm_model: opt_str(env, "MANA_AI_LLM_MODEL", run::LLM_MODEL),
            llm_api_key: opt_str(env, "MANA_AI_LLM_API_KEY", &service_key),
            llm_timeout: opt_ms(
                env,
                "MANA_AI_LLM_TIMEOUT_MS",
                1_000,
                600_000,
                llm::DEFAULT_CALL_DEADLINE,
            )?,
            llm_max_attempts: opt_num(
                env,
                "MANA_AI_LLM_MAX_ATTEMPTS",
                1,
                10,
                llm::DEFAULT_MAX_ATTEMPTS,
            )?,
            max_completion_tokens: opt_num(
                env,
                "MANA_AI_MAX_COMPLETION_TOKENS",
                16,
                1_000_000,
                run::MAX_COMPLETION_TOKENS,
            )?,
            mana_api_url: opt_http_url(env, "MANA_API_URL", DEFAULT_NEWS_API_URL)?,
            mana_research_url: opt_http_url(env, "MANA_RESEARCH_URL", DEFAULT_RESEARCH_URL)?,
            deep_research_enabled: opt_bool(
                env,
                "MANA_AI_DEEP_RESEARCH_ENABLED",
                run::DEEP_RESEARCH_ENABLED,
            )?,
            service_key,
            tick_interval: opt_ms(
                env,
                "TICK_INTERVAL_MS",
                1_000,
                86_400_000,
                DEFAULT_TICK_INTERVAL,
            )?,
            tick_enabled: opt_bool(env, "TICK_ENABLED", true)?,
            due_limit: opt_num(env, "MANA_AI_DUE_LIMIT", 1, 100_000, run::DUE_LIMIT)?,
            max_concurrent_plans: opt_num(
                env,
                "MANA_AI_MAX_CONCURRENT_PLANS",
                1,
                1_024,
                run::MAX_CONCURRENT_PLANS,
            )?,
            mission_deadline: opt_ms(
                env,
                "MANA_AI_MISSION_DEADLINE_MS",
                1_000,
                3_600_000,
                run::MISSION_DEADLINE,
            )?,
            claim_grace: opt_ms(
                env,
                "MANA_AI_CLAIM_GRACE_MS",
                0,
                3_600_000,
                run::CLAIM_GRACE,
            )?,
            max_inputs: opt_num(env, "MANA_AI_MAX_INPUTS", 1, 100_000, run::MAX_INPUTS)?,
            defer: defer_policy(env)?,
            refresh_batch_rows: opt_num(
                env,
                "MANA_AI_REFRESH_BATCH_ROWS",
                1,
                1_000_000,
                run::REFRESH_BATCH_ROWS,
            )?,
            iteration_history: opt_num(
                env,
                "MANA_AI_ITERATION_HISTORY",
                run::ITERATION_HISTORY_MIN,
                run::ITERATION_HISTORY_MAX,
                run::ITERATION_HISTORY,
            )?,
            private_key_pem: get(env, "MANA_AI_PRIVATE_KEY_PEM").map(|s| s.replace("\\n", "\n")),
            policy_mode: policy_mode(env)?,
            compact_max_ctx: opt_num(
                env,
                "MANA_AI_COMPACT_MAX_CTX",
                0,
                100_000_000,
                run::CONTEXT_WINDOW_TOKENS,
            )?,
            default_timezone: default_timezone(env)?,
            compact_model: opt_str(env, "MANA_AI_COMPACT_MODEL", run::COMPACT_MODEL),
            default_language: default_language(env)?,
            shutdown_grace: opt_ms(
                env,
                "MANA_AI_SHUTDOWN_GRACE_MS",
                0,
                600_000,
                DEFAULT_SHUTDOWN_GRACE,
            )?,
            body_limit_bytes: opt_num(
                env,
                "MANA_AI_BODY_LIMIT_BYTES",
                1_024,
                64 << 20,
                DEFAULT_BODY_LIMIT_BYTES,
            )?,
            log_json: log_json(env)?,
            log_filter: get(env, "RUST_LOG").map(str::to_string),
            json_plan_fallback: opt_bool(
                env,
                "MANA_AI_JSON_PLAN_FALLBACK",
                run::JSON_PLAN_FALLBACK,
            )?,
            retry_base: opt_ms(
                env,
                "MANA_AI_RETRY_BASE_MS",
                1_000,
                86_400_000,
                run::RETRY_BASE,
            )?,
            retry_cap: opt_ms(
                env,
                "MANA_AI_RETRY_CAP_MS",
                1_000,
                7 * 86_400_000,
                run::RETRY_CAP,
            )?,
            default_agent_tokens_per_day: opt_num(
                env,
                "MANA_AI_DEFAULT_AGENT_TOKENS_PER_DAY",
                0,
                1_000_000_000_000,
                run::DEFAULT_AGENT_TOKENS_PER_DAY,
            )?,
            default_agent_max_concurrent: opt_num(
                env,
                "MANA_AI_DEFAULT_AGENT_MAX_CONCURRENT",
                1,
                1_000,
                run::DEFAULT_AGENT_MAX_CONCURRENT,
            )?,
            mana_auth_url: get(env, "MANA_AUTH_URL")
                .map(|v| parse::parse_http_url("MANA_AUTH_URL", v))
                .transpose()?,
            jwt_issuer: get(env, "JWT_ISSUER").map(str::to_string),
            jwt_audience: opt_str(env, "JWT_AUDIENCE", DEFAULT_JWT_AUDIENCE),
            cors_origins_explicit: explicit_origins.is_some(),
            cors_origins: explicit_origins.unwrap_or_else(|| {
                security::default_origins(node_env.as_deref() == Some("development"))
            }),
            http: security::http_limits(env)?,
            untrusted_policy_mode: security::untrusted_policy_mode(env)?,
            node_env,
            dev_bypass_auth: opt_bool(env, "DEV_BYPASS_AUTH", false)?,
            dev_user_id: opt_str(env, "DEV_USER_ID", DEFAULT_DEV_USER_ID),
            shallow_research_triggers: parse_word_list(
                env,
                "MANA_AI_SHALLOW_RESEARCH_TRIGGERS",
                run::SHALLOW_RESEARCH_TRIGGERS,
            )?,
            deep_research_triggers: parse_word_list(
                env,
                "MANA_AI_DEEP_RESEARCH_TRIGGERS",
                run::DEEP_RESEARCH_TRIGGERS,
            )?,
            news_service_key_header: opt_header(
                "MANA_AI_NEWS_SERVICE_KEY_HEADER",
                run::NEWS_SERVICE_KEY_HEADER,
            )?,
            news_user_id_header: opt_header(
                "MANA_AI_NEWS_USER_ID_HEADER",
                run::NEWS_USER_ID_HEADER,
            )?,
            research_max_age: opt_ms(
                env,
                "MANA_AI_RESEARCH_MAX_AGE_MS",
                60_000,
                7 * 86_400_000,
                run::RESEARCH_JOB_MAX_AGE,
            )?,
            research_max_poll_failures: opt_num(
                env,
                "MANA_AI_RESEARCH_MAX_POLL_FAILURES",
                1,
                10_000,
                run::RESEARCH_MAX_POLL_FAILURES,
            )?,
            audit_retention_days: audit_retention_days(get(env, "MANA_AI_AUDIT_RETENTION_DAYS"))?,
            pg_bindir: get(env, "MANA_AI_PG_BINDIR").map(PathBuf::from),
            otel: otel::from_env(env)?,
        })
    }

    /// The auth service base URL (`MANA_AUTH_URL`, default `http://localhost:3001`).
    pub fn auth_url(&self) -> &str {
        self.mana_auth_url.as_deref().unwrap_or(DEFAULT_AUTH_URL)
    }

    /// True when the JWT check is bypassed: `NODE_ENV=development` AND `DEV_BYPASS_AUTH`.
    pub fn auth_bypassed(&self) -> bool {
        self.dev_bypass_auth && self.node_env.as_deref() == Some("development")
    }

    /// The GGUF file the local backend loads: `MANA_AI_LOCAL_MODEL`, else the fetched
    /// copy under the data dir.
    pub fn local_model_path(&self) -> PathBuf {
        match &self.local_model {
            Some(p) => p.clone(),
            None => mana_ai_local_llm::fetch::model_path(&self.data_dir),
        }
    }
}

/// `MANA_AI_DEFER_BASE_MS` (0 turns deferral off) and the caps per kind of deferral.
fn defer_policy(
    env: &BTreeMap<String, String>,
) -> Result<mana_ai_runner::DeferPolicy, ConfigError> {
    const DAY_MS: u64 = 86_400_000;
    let cap = |var, default| opt_ms(env, var, 0, DAY_MS, default);
    Ok(mana_ai_runner::DeferPolicy {
        base: opt_ms(env, "MANA_AI_DEFER_BASE_MS", 0, DAY_MS, run::DEFER_BASE)?,
        wait_cap: cap("MANA_AI_DEFER_WAIT_CAP_MS", run::DEFER_WAIT_CAP)?,
        gate_cap: cap("MANA_AI_DEFER_GATE_CAP_MS", run::DEFER_GATE_CAP)?,
        error_cap: cap("MANA_AI_DEFER_ERROR_CAP_MS", run::DEFER_ERROR_CAP)?,
    })
}

/// `MANA_AI_BIND`: `None` when unset.
fn bind(env: &BTreeMap<String, String>) -> Result<Option<IpAddr>, ConfigError> {
    get(env, "MANA_AI_BIND")
        .map(|v| {
            v.parse::<IpAddr>()
                .map_err(|_| err("MANA_AI_BIND", format!("expected an IP address, got {v:?}")))
        })
        .transpose()
}

/// `POLICY_MODE` (case-insensitive), default `log-only`; the planner's own parser.
fn policy_mode(env: &BTreeMap<String, String>) -> Result<PolicyMode, ConfigError> {
    get(env, "POLICY_MODE")
        .map(|v| {
            v.parse()
                .map_err(|e: mana_ai_core::plan::PolicyModeError| err("POLICY_MODE", e.to_string()))
        })
        .transpose()
        .map(|mode| mode.unwrap_or(run::POLICY_MODE))
}

/// `MANA_AI_DEFAULT_TIMEZONE`: an IANA zone name, default `Europe/Berlin`.
fn default_timezone(env: &BTreeMap<String, String>) -> Result<Tz, ConfigError> {
    let Some(name) = get(env, "MANA_AI_DEFAULT_TIMEZONE") else {
        return Ok(DEFAULT_TIMEZONE);
    };
    name.parse::<Tz>().map_err(|_| {
        err(
            "MANA_AI_DEFAULT_TIMEZONE",
            format!("unknown IANA time zone {name:?}"),
        )
    })
}

/// `MANA_AI_DEFAULT_LANGUAGE`: `de` (default) or `en` (a region suffix is accepted).
fn default_language(
    env: &BTreeMap<String, String>,
) -> Result<mana_ai_core::lang::Lang, ConfigError> {
    let Some(value) = get(env, "MANA_AI_DEFAULT_LANGUAGE") else {
        return Ok(run::DEFAULT_LANGUAGE);
    };
    mana_ai_core::lang::Lang::parse(value).ok_or_else(|| {
        err(
            "MANA_AI_DEFAULT_LANGUAGE",
            format!("expected de or en, got {value:?}"),
        )
    })
}

/// `MANA_AI_LOG_FORMAT`: `text` (default) or `json`.
fn log_json(env: &BTreeMap<String, String>) -> Result<bool, ConfigError> {
    match get(env, "MANA_AI_LOG_FORMAT") {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("text") => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("json") => Ok(true),
        Some(v) => Err(err(
            "MANA_AI_LOG_FORMAT",
            format!("expected text or json, got {v:?}"),
        )),
    }
}

/// `MANA_AI_AUDIT_RETENTION_DAYS`: how long decrypt-audit rows are kept. Unset ⇒ 365;
/// `0` ⇒ keep forever (`None`); otherwise an integer of at least 7 (the floor the
/// database function enforces, so the service can never erase the recent trail).
pub fn audit_retention_days(raw: Option<&str>) -> Result<Option<u32>, ConfigError> {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(Some(mana_ai_store::audit::DEFAULT_RETENTION_DAYS));
    };
    let floor = mana_ai_store::audit::MIN_RETENTION_DAYS;
    match raw.parse::<u32>() {
        Ok(0) => Ok(None),
        Ok(d) if (floor..=MAX_AUDIT_RETENTION_DAYS).contains(&d) => Ok(Some(d)),
        _ => Err(err(
            "MANA_AI_AUDIT_RETENTION_DAYS",
            format!(
                "must be 0 (keep forever) or {floor}..={MAX_AUDIT_RETENTION_DAYS} days, got {raw:?}"
            ),
        )),
    }
}

#[cfg(test)]
mod tests;
