//! Configuration from the environment, with the original service's variable names and
//! defaults. Every value is validated once at start: an invalid value stops the process
//! with one line naming the variable. An empty value means "use the default" (the
//! original crashed on empty values even where a default existed).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

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
pub const DEFAULT_DATA_DIR: &str = ".mana-ai";

/// How the planner treats injection markers in tool arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyModeSetting {
    Off,
    LogOnly,
    Enforce,
}

impl PolicyModeSetting {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::LogOnly => "log-only",
            Self::Enforce => "enforce",
        }
    }
}

/// The effective configuration.
#[derive(Clone)]
pub struct Config {
    pub port: u16,
    pub bind: IpAddr,
    pub sync_database_url: String,
    pub migration_database_url: Option<String>,
    pub db_pool_size: usize,
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
    pub mana_api_url: String,
    pub mana_research_url: String,
    pub deep_research_enabled: bool,
    pub service_key: String,
    pub tick_interval: Duration,
    pub tick_enabled: bool,
    pub due_limit: i64,
    pub max_concurrent_plans: usize,
    pub mission_deadline: Duration,
    pub refresh_batch_rows: i32,
    pub private_key_pem: Option<String>,
    pub policy_mode: PolicyModeSetting,
    pub compact_max_ctx: u64,
    pub default_timezone: String,
    pub shutdown_grace: Duration,
    pub body_limit_bytes: usize,
    pub log_json: bool,
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
    /// `MANA_AI_CORS_ORIGINS`: browser origins allowed to call `/api/*`.
    pub cors_origins: Vec<String>,
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
}

/// Default `MANA_AUTH_URL`.
pub const DEFAULT_AUTH_URL: &str = "http://localhost:3001";
/// Default `MANA_AI_CORS_ORIGINS`: the web app in production and under `vite dev`.
pub const DEFAULT_CORS_ORIGINS: &str = "https://mana.how,http://localhost:5173";
/// Default `DEV_USER_ID`.
pub const DEFAULT_DEV_USER_ID: &str = "00000000-0000-0000-0000-000000000000";

/// Reads a variable; unset and empty both mean `None`.
fn get<'a>(env: &'a BTreeMap<String, String>, var: &str) -> Option<&'a str> {
    env.get(var).map(|s| s.trim()).filter(|s| !s.is_empty())
}

fn parse_bool(var: &'static str, raw: &str) -> Result<bool, ConfigError> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(err(var, format!("expected true or false, got {raw:?}"))),
    }
}

fn parse_num<T: std::str::FromStr + PartialOrd + fmt::Display + Copy>(
    var: &'static str,
    raw: &str,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    let v: T = raw
        .parse()
        .map_err(|_| err(var, format!("expected a whole number, got {raw:?}")))?;
    if v < min || v > max {
        return Err(err(
            var,
            format!("must be between {min} and {max}, got {v}"),
        ));
    }
    Ok(v)
}

/// Default `MANA_LLM_URL`.
pub const DEFAULT_LLM_URL: &str = "http://localhost:3020";

/// `MANA_LLM_URL` and `MANA_AI_LLM` together: the URL (default when local), the backend,
/// and whether either was set. `MANA_LLM_URL=local` is a shorthand for `MANA_AI_LLM=local`;
/// a contradiction between the two is an error, not a silent pick.
fn llm_choice(env: &BTreeMap<String, String>) -> Result<(String, LlmBackend, bool), ConfigError> {
    let url = get(env, "MANA_LLM_URL");
    let url_says_local = url.is_some_and(|u| u.eq_ignore_ascii_case("local"));
    let named = get(env, "MANA_AI_LLM")
        .map(|v| match v.to_ascii_lowercase().as_str() {
            "http" => Ok(LlmBackend::Http),
            "local" => Ok(LlmBackend::Local),
            _ => Err(err(
                "MANA_AI_LLM",
                format!("expected http or local, got {v:?}"),
            )),
        })
        .transpose()?;
    let backend = match (named, url_says_local, url.is_some()) {
        (Some(LlmBackend::Http), true, _) => {
            return Err(err(
                "MANA_AI_LLM",
                "is http but MANA_LLM_URL=local asks for the local model",
            ))
        }
        (Some(LlmBackend::Local), false, true) => {
            return Err(err(
                "MANA_AI_LLM",
                "is local but MANA_LLM_URL names a server; unset one of them",
            ))
        }
        (Some(b), _, _) => b,
        (None, true, _) => LlmBackend::Local,
        (None, false, _) => LlmBackend::Http,
    };
    let url = match url {
        Some(u) if !url_says_local => parse_http_url("MANA_LLM_URL", u)?,
        _ => DEFAULT_LLM_URL.to_string(),
    };
    Ok((
        url,
        backend,
        named.is_some() || get(env, "MANA_LLM_URL").is_some(),
    ))
}

fn parse_http_url(var: &'static str, raw: &str) -> Result<String, ConfigError> {
    let lower = raw.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
        .ok_or_else(|| {
            err(
                var,
                format!("expected an http:// or https:// URL, got {raw:?}"),
            )
        })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(err(var, format!("URL has no host: {raw:?}")));
    }
    Ok(raw.trim_end_matches('/').to_string())
}

/// Parses a comma-separated list of browser origins (`scheme://host[:port]`, no path).
fn parse_origins(var: &'static str, raw: &str) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if item == "*" {
            return Err(err(var, "a wildcard is not allowed; list the origins"));
        }
        let lower = item.to_ascii_lowercase();
        let rest = lower
            .strip_prefix("http://")
            .or_else(|| lower.strip_prefix("https://"))
            .ok_or_else(|| err(var, format!("expected http(s)://host[:port], got {item:?}")))?;
        let bad = rest.is_empty()
            || rest
                .chars()
                .any(|c| matches!(c, '/' | '?' | '#' | '@' | ' ') || c.is_control());
        if bad {
            return Err(err(
                var,
                format!("an origin is scheme://host[:port] without a path, got {item:?}"),
            ));
        }
        // Browsers send origins lower-cased and without a trailing slash.
        if !out.contains(&lower) {
            out.push(lower);
        }
    }
    Ok(out)
}

/// A comma-separated word list; `off`/`none` means an empty list (feature off).
fn parse_word_list(
    env: &BTreeMap<String, String>,
    var: &'static str,
    default: &[&str],
) -> Result<Vec<String>, ConfigError> {
    let Some(raw) = get(env, var) else {
        return Ok(default.iter().map(|s| s.to_string()).collect());
    };
    if raw.eq_ignore_ascii_case("off") || raw.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let words: Vec<String> = raw
        .split(',')
        .map(|w| w.trim().to_string())
        .filter(|w| !w.is_empty())
        .collect();
    if let Some(w) = words
        .iter()
        .find(|w| !w.chars().next().is_some_and(|c| c.is_alphanumeric()))
    {
        return Err(err(
            var,
            format!("every trigger must start with a letter or digit, got {w:?}"),
        ));
    }
    Ok(words)
}

/// An HTTP header name (RFC 9110 token); `off`/`none` means "do not send".
fn parse_header_name(
    env: &BTreeMap<String, String>,
    var: &'static str,
    default: &str,
) -> Result<Option<String>, ConfigError> {
    let Some(raw) = get(env, var) else {
        return Ok(Some(default.to_string()));
    };
    if raw.eq_ignore_ascii_case("off") || raw.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !raw.chars().all(token) {
        return Err(err(
            var,
            format!("expected an HTTP header name or off, got {raw:?}"),
        ));
    }
    Ok(Some(raw.to_string()))
}

fn parse_pg_url(var: &'static str, raw: &str) -> Result<String, ConfigError> {
    mana_ai_store::parse_url(raw).map_err(|e| err(var, e.to_string()))?;
    Ok(raw.to_string())
}

impl Config {
    /// Reads the process environment.
    pub fn from_process_env() -> Result<Self, ConfigError> {
        Self::from_env(&std::env::vars().collect())
    }

    /// Reads a given environment (tests pass their own map).
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let port = get(env, "PORT")
            .map(|v| parse_num::<u16>("PORT", v, 1, u16::MAX))
            .transpose()?
            .unwrap_or(3067);
        let bind = get(env, "MANA_AI_BIND")
            .map(|v| {
                v.parse::<IpAddr>()
                    .map_err(|_| err("MANA_AI_BIND", format!("expected an IP address, got {v:?}")))
            })
            .transpose()?
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let sync_database_url = get(env, "SYNC_DATABASE_URL")
            .map(|v| parse_pg_url("SYNC_DATABASE_URL", v))
            .transpose()?
            .unwrap_or_else(|| "postgresql://mana:devpassword@localhost:5432/mana_sync".into());
        let migration_database_url = get(env, "MANA_AI_MIGRATION_DATABASE_URL")
            .map(|v| parse_pg_url("MANA_AI_MIGRATION_DATABASE_URL", v))
            .transpose()?;
        let service_key = get(env, "MANA_SERVICE_KEY")
            .unwrap_or("dev-service-key")
            .to_string();
        let policy_mode = match get(env, "POLICY_MODE") {
            None => PolicyModeSetting::LogOnly,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "off" => PolicyModeSetting::Off,
                "log-only" => PolicyModeSetting::LogOnly,
                "enforce" => PolicyModeSetting::Enforce,
                _ => {
                    return Err(err(
                        "POLICY_MODE",
                        format!("POLICY_MODE must be off|log-only|enforce, got {v:?}"),
                    ))
                }
            },
        };
        let default_timezone = get(env, "MANA_AI_DEFAULT_TIMEZONE")
            .unwrap_or("Europe/Berlin")
            .to_string();
        if default_timezone.parse::<chrono_tz::Tz>().is_err() {
            return Err(err(
                "MANA_AI_DEFAULT_TIMEZONE",
                format!("unknown IANA time zone {default_timezone:?}"),
            ));
        }
        let node_env = get(env, "NODE_ENV").map(str::to_string);
        let dev_bypass_auth = get(env, "DEV_BYPASS_AUTH")
            .map(|v| parse_bool("DEV_BYPASS_AUTH", v))
            .transpose()?
            .unwrap_or(false);
        let private_key_pem = get(env, "MANA_AI_PRIVATE_KEY_PEM").map(|s| s.replace("\\n", "\n"));
        let (mana_llm_url, llm_backend, llm_backend_explicit) = llm_choice(env)?;
        Ok(Self {
            port,
            bind,
            sync_database_url,
            migration_database_url,
            db_pool_size: opt_num(env, "MANA_AI_DB_POOL_SIZE", 1, 256, 8)?,
            mana_llm_url,
            llm_backend,
            llm_backend_explicit,
            local_model: get(env, "MANA_AI_LOCAL_MODEL").map(PathBuf::from),
            data_dir: PathBuf::from(get(env, "MANA_AI_DATA_DIR").unwrap_or(DEFAULT_DATA_DIR)),
            llm_model: get(env, "MANA_AI_LLM_MODEL")
                .unwrap_or("mana/reasoning")
                .to_string(),
            llm_api_key: get(env, "MANA_AI_LLM_API_KEY")
                .map(str::to_string)
                .unwrap_or_else(|| service_key.clone()),
            llm_timeout: Duration::from_millis(opt_num(
                env,
                "MANA_AI_LLM_TIMEOUT_MS",
                1_000,
                600_000,
                120_000,
            )?),
            llm_max_attempts: opt_num(env, "MANA_AI_LLM_MAX_ATTEMPTS", 1, 10, 3)?,
            mana_api_url: get(env, "MANA_API_URL")
                .map(|v| parse_http_url("MANA_API_URL", v))
                .transpose()?
                .unwrap_or_else(|| "http://localhost:3060".into()),
            mana_research_url: get(env, "MANA_RESEARCH_URL")
                .map(|v| parse_http_url("MANA_RESEARCH_URL", v))
                .transpose()?
                .unwrap_or_else(|| "http://localhost:3068".into()),
            deep_research_enabled: get(env, "MANA_AI_DEEP_RESEARCH_ENABLED")
                .map(|v| parse_bool("MANA_AI_DEEP_RESEARCH_ENABLED", v))
                .transpose()?
                .unwrap_or(false),
            service_key,
            tick_interval: Duration::from_millis(opt_num(
                env,
                "TICK_INTERVAL_MS",
                1_000,
                86_400_000,
                60_000,
            )?),
            tick_enabled: get(env, "TICK_ENABLED")
                .map(|v| parse_bool("TICK_ENABLED", v))
                .transpose()?
                .unwrap_or(true),
            due_limit: opt_num(env, "MANA_AI_DUE_LIMIT", 1, 100_000, 1_000)?,
            max_concurrent_plans: opt_num(env, "MANA_AI_MAX_CONCURRENT_PLANS", 1, 1_024, 64)?,
            mission_deadline: Duration::from_millis(opt_num(
                env,
                "MANA_AI_MISSION_DEADLINE_MS",
                1_000,
                3_600_000,
                300_000,
            )?),
            refresh_batch_rows: opt_num(env, "MANA_AI_REFRESH_BATCH_ROWS", 1, 1_000_000, 5_000)?,
            private_key_pem,
            policy_mode,
            compact_max_ctx: opt_num(env, "MANA_AI_COMPACT_MAX_CTX", 0, 100_000_000, 1_000_000)?,
            default_timezone,
            shutdown_grace: Duration::from_millis(opt_num(
                env,
                "MANA_AI_SHUTDOWN_GRACE_MS",
                0,
                600_000,
                30_000,
            )?),
            body_limit_bytes: opt_num(env, "MANA_AI_BODY_LIMIT_BYTES", 1_024, 64 << 20, 1 << 20)?,
            json_plan_fallback: get(env, "MANA_AI_JSON_PLAN_FALLBACK")
                .map(|v| parse_bool("MANA_AI_JSON_PLAN_FALLBACK", v))
                .transpose()?
                .unwrap_or(false),
            retry_base: Duration::from_millis(opt_num(
                env,
                "MANA_AI_RETRY_BASE_MS",
                1_000,
                86_400_000,
                60_000,
            )?),
            retry_cap: Duration::from_millis(opt_num(
                env,
                "MANA_AI_RETRY_CAP_MS",
                1_000,
                7 * 86_400_000,
                6 * 3_600_000,
            )?),
            default_agent_tokens_per_day: opt_num(
                env,
                "MANA_AI_DEFAULT_AGENT_TOKENS_PER_DAY",
                0,
                1_000_000_000_000,
                200_000,
            )?,
            default_agent_max_concurrent: opt_num(
                env,
                "MANA_AI_DEFAULT_AGENT_MAX_CONCURRENT",
                1,
                1_000,
                1,
            )?,
            mana_auth_url: get(env, "MANA_AUTH_URL")
                .map(|v| parse_http_url("MANA_AUTH_URL", v))
                .transpose()?,
            jwt_issuer: get(env, "JWT_ISSUER").map(str::to_string),
            jwt_audience: get(env, "JWT_AUDIENCE").unwrap_or("mana").to_string(),
            cors_origins: parse_origins(
                "MANA_AI_CORS_ORIGINS",
                get(env, "MANA_AI_CORS_ORIGINS").unwrap_or(DEFAULT_CORS_ORIGINS),
            )?,
            node_env,
            dev_bypass_auth,
            dev_user_id: get(env, "DEV_USER_ID")
                .unwrap_or(DEFAULT_DEV_USER_ID)
                .to_string(),
            shallow_research_triggers: parse_word_list(
                env,
                "MANA_AI_SHALLOW_RESEARCH_TRIGGERS",
                mana_ai_runner::research::DEFAULT_SHALLOW_TRIGGERS,
            )?,
            deep_research_triggers: parse_word_list(
                env,
                "MANA_AI_DEEP_RESEARCH_TRIGGERS",
                mana_ai_runner::research::DEFAULT_DEEP_TRIGGERS,
            )?,
            news_service_key_header: parse_header_name(
                env,
                "MANA_AI_NEWS_SERVICE_KEY_HEADER",
                "X-Service-Key",
            )?,
            news_user_id_header: parse_header_name(
                env,
                "MANA_AI_NEWS_USER_ID_HEADER",
                "X-User-Id",
            )?,
            research_max_age: Duration::from_millis(opt_num(
                env,
                "MANA_AI_RESEARCH_MAX_AGE_MS",
                60_000,
                7 * 86_400_000,
                2 * 3_600_000,
            )?),
            research_max_poll_failures: opt_num(
                env,
                "MANA_AI_RESEARCH_MAX_POLL_FAILURES",
                1,
                10_000,
                10,
            )?,
            log_json: match get(env, "MANA_AI_LOG_FORMAT") {
                None => false,
                Some(v) if v.eq_ignore_ascii_case("text") => false,
                Some(v) if v.eq_ignore_ascii_case("json") => true,
                Some(v) => {
                    return Err(err(
                        "MANA_AI_LOG_FORMAT",
                        format!("expected text or json, got {v:?}"),
                    ))
                }
            },
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

    /// The effective configuration as `(variable, value)` lines, secrets masked.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PORT", self.port.to_string()),
            ("MANA_AI_BIND", self.bind.to_string()),
            ("SYNC_DATABASE_URL", mask_url(&self.sync_database_url)),
            (
                "MANA_AI_MIGRATION_DATABASE_URL",
                self.migration_database_url
                    .as_deref()
                    .map(mask_url)
                    .unwrap_or_else(|| "(unset: migrate with SYNC_DATABASE_URL)".into()),
            ),
            ("MANA_AI_DB_POOL_SIZE", self.db_pool_size.to_string()),
            ("MANA_LLM_URL", mask_http_url(&self.mana_llm_url)),
            (
                "MANA_AI_LLM",
                if self.llm_backend_explicit {
                    self.llm_backend.as_str().to_string()
                } else {
                    format!("{} (`mana-ai dev`: local)", self.llm_backend.as_str())
                },
            ),
            (
                "MANA_AI_LOCAL_MODEL",
                self.local_model_path().display().to_string(),
            ),
            ("MANA_AI_DATA_DIR", self.data_dir.display().to_string()),
            ("MANA_AI_LLM_MODEL", self.llm_model.clone()),
            ("MANA_AI_LLM_API_KEY", mask_secret(&self.llm_api_key)),
            (
                "MANA_AI_LLM_TIMEOUT_MS",
                self.llm_timeout.as_millis().to_string(),
            ),
            (
                "MANA_AI_LLM_MAX_ATTEMPTS",
                self.llm_max_attempts.to_string(),
            ),
            ("MANA_API_URL", mask_http_url(&self.mana_api_url)),
            ("MANA_RESEARCH_URL", mask_http_url(&self.mana_research_url)),
            (
                "MANA_AI_DEEP_RESEARCH_ENABLED",
                self.deep_research_enabled.to_string(),
            ),
            ("MANA_SERVICE_KEY", mask_secret(&self.service_key)),
            (
                "TICK_INTERVAL_MS",
                self.tick_interval.as_millis().to_string(),
            ),
            ("TICK_ENABLED", self.tick_enabled.to_string()),
            ("MANA_AI_DUE_LIMIT", self.due_limit.to_string()),
            (
                "MANA_AI_MAX_CONCURRENT_PLANS",
                self.max_concurrent_plans.to_string(),
            ),
            (
                "MANA_AI_MISSION_DEADLINE_MS",
                self.mission_deadline.as_millis().to_string(),
            ),
            (
                "MANA_AI_REFRESH_BATCH_ROWS",
                self.refresh_batch_rows.to_string(),
            ),
            (
                "MANA_AI_PRIVATE_KEY_PEM",
                if self.private_key_pem.is_some() {
                    "(set, hidden)".into()
                } else {
                    "(unset: key grants disabled)".into()
                },
            ),
            ("POLICY_MODE", self.policy_mode.as_str().into()),
            ("MANA_AI_COMPACT_MAX_CTX", self.compact_max_ctx.to_string()),
            ("MANA_AI_DEFAULT_TIMEZONE", self.default_timezone.clone()),
            (
                "MANA_AI_SHUTDOWN_GRACE_MS",
                self.shutdown_grace.as_millis().to_string(),
            ),
            (
                "MANA_AI_BODY_LIMIT_BYTES",
                self.body_limit_bytes.to_string(),
            ),
            (
                "MANA_AI_JSON_PLAN_FALLBACK",
                self.json_plan_fallback.to_string(),
            ),
            (
                "MANA_AI_RETRY_BASE_MS",
                self.retry_base.as_millis().to_string(),
            ),
            (
                "MANA_AI_RETRY_CAP_MS",
                self.retry_cap.as_millis().to_string(),
            ),
            (
                "MANA_AI_DEFAULT_AGENT_TOKENS_PER_DAY",
                self.default_agent_tokens_per_day.to_string(),
            ),
            (
                "MANA_AI_DEFAULT_AGENT_MAX_CONCURRENT",
                self.default_agent_max_concurrent.to_string(),
            ),
            (
                "MANA_AI_SHALLOW_RESEARCH_TRIGGERS",
                list_or_off(&self.shallow_research_triggers),
            ),
            (
                "MANA_AI_DEEP_RESEARCH_TRIGGERS",
                list_or_off(&self.deep_research_triggers),
            ),
            (
                "MANA_AI_NEWS_SERVICE_KEY_HEADER",
                self.news_service_key_header
                    .clone()
                    .unwrap_or_else(|| "off".into()),
            ),
            (
                "MANA_AI_NEWS_USER_ID_HEADER",
                self.news_user_id_header
                    .clone()
                    .unwrap_or_else(|| "off".into()),
            ),
            (
                "MANA_AI_RESEARCH_MAX_AGE_MS",
                self.research_max_age.as_millis().to_string(),
            ),
            (
                "MANA_AI_RESEARCH_MAX_POLL_FAILURES",
                self.research_max_poll_failures.to_string(),
            ),
            (
                "MANA_AI_LOG_FORMAT",
                if self.log_json { "json" } else { "text" }.into(),
            ),
            (
                "MANA_AUTH_URL",
                match &self.mana_auth_url {
                    Some(u) => mask_http_url(u),
                    None => format!("{DEFAULT_AUTH_URL} (default)"),
                },
            ),
            (
                "JWT_ISSUER",
                self.jwt_issuer.clone().unwrap_or_else(|| "(unset)".into()),
            ),
            ("JWT_AUDIENCE", self.jwt_audience.clone()),
            ("MANA_AI_CORS_ORIGINS", self.cors_origins.join(",")),
            (
                "NODE_ENV",
                self.node_env.clone().unwrap_or_else(|| "(unset)".into()),
            ),
            (
                "DEV_BYPASS_AUTH",
                if self.auth_bypassed() {
                    "true (ACTIVE: /api requests run as DEV_USER_ID)".into()
                } else if self.dev_bypass_auth {
                    "true (inactive: NODE_ENV is not development)".into()
                } else {
                    "false".into()
                },
            ),
            ("DEV_USER_ID", self.dev_user_id.clone()),
        ]
    }
}

fn opt_num<T: std::str::FromStr + PartialOrd + fmt::Display + Copy>(
    env: &BTreeMap<String, String>,
    var: &'static str,
    min: T,
    max: T,
    default: T,
) -> Result<T, ConfigError> {
    get(env, var)
        .map(|v| parse_num(var, v, min, max))
        .transpose()
        .map(|v| v.unwrap_or(default))
}

fn list_or_off(words: &[String]) -> String {
    if words.is_empty() {
        "off".into()
    } else {
        words.join(",")
    }
}

/// Shows only that a secret is set and its length class, never its bytes.
pub fn mask_secret(s: &str) -> String {
    if s.is_empty() {
        "(empty)".into()
    } else {
        format!("(set, {} chars, hidden)", s.chars().count())
    }
}

/// Replaces the password of a `scheme://user:password@host/...` URL with `***`.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(unparseable URL hidden)".into();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    // Query parameters may carry a password too.
    let host = match host.split_once('?') {
        Some((h, q)) if q.to_ascii_lowercase().contains("password") => format!("{h}?***"),
        _ => host.to_string(),
    };
    match auth {
        Some(a) => match a.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://{a}@{host}"),
        },
        None => format!("{scheme}://{host}"),
    }
}

/// Hides credentials an HTTP base URL may carry: the whole userinfo (`user:pass@` or a
/// bare token as user) and any query string.
pub fn mask_http_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(unparseable URL hidden)".into();
    };
    let (authority, tail) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = match authority.rsplit_once('@') {
        Some((_, h)) => format!("***@{h}"),
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, _)) => format!("{path}?***"),
        None => tail.to_string(),
    };
    format!("{scheme}://{host}{tail}")
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Config");
        for (k, v) in self.describe() {
            d.field(k, &v);
        }
        d.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_original() {
        let c = Config::from_env(&env(&[])).unwrap();
        assert_eq!(c.port, 3067);
        assert_eq!(c.tick_interval, Duration::from_secs(60));
        assert!(c.tick_enabled);
        assert_eq!(c.service_key, "dev-service-key");
        assert_eq!(c.mana_llm_url, "http://localhost:3020");
        assert_eq!(c.mana_api_url, "http://localhost:3060");
        assert_eq!(c.mana_research_url, "http://localhost:3068");
        assert!(!c.deep_research_enabled);
        assert_eq!(c.policy_mode, PolicyModeSetting::LogOnly);
        assert_eq!(c.compact_max_ctx, 1_000_000);
        assert_eq!(
            c.sync_database_url,
            "postgresql://mana:devpassword@localhost:5432/mana_sync"
        );
        assert_eq!(c.llm_api_key, c.service_key);
    }

    #[test]
    fn llm_backend_choice() {
        let c = Config::from_env(&env(&[])).unwrap();
        assert_eq!(c.llm_backend, LlmBackend::Http);
        assert!(!c.llm_backend_explicit);
        assert_eq!(
            c.local_model_path(),
            PathBuf::from(".mana-ai/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
        for (pairs, backend, url) in [
            (
                vec![("MANA_LLM_URL", "local")],
                LlmBackend::Local,
                DEFAULT_LLM_URL,
            ),
            (
                vec![("MANA_LLM_URL", "LOCAL")],
                LlmBackend::Local,
                DEFAULT_LLM_URL,
            ),
            (
                vec![("MANA_AI_LLM", "local")],
                LlmBackend::Local,
                DEFAULT_LLM_URL,
            ),
            (
                vec![("MANA_AI_LLM", "local"), ("MANA_LLM_URL", "local")],
                LlmBackend::Local,
                DEFAULT_LLM_URL,
            ),
            (
                vec![("MANA_AI_LLM", "http")],
                LlmBackend::Http,
                DEFAULT_LLM_URL,
            ),
            (
                vec![("MANA_LLM_URL", "http://gpu:8000/")],
                LlmBackend::Http,
                "http://gpu:8000",
            ),
        ] {
            let c = Config::from_env(&env(&pairs)).unwrap();
            assert_eq!(c.llm_backend, backend, "{pairs:?}");
            assert_eq!(c.mana_llm_url, url, "{pairs:?}");
            assert!(c.llm_backend_explicit, "{pairs:?}");
        }
        for (pairs, var) in [
            (vec![("MANA_AI_LLM", "gpt")], "MANA_AI_LLM"),
            (
                vec![("MANA_AI_LLM", "http"), ("MANA_LLM_URL", "local")],
                "MANA_AI_LLM",
            ),
            (
                vec![
                    ("MANA_AI_LLM", "local"),
                    ("MANA_LLM_URL", "http://gpu:8000"),
                ],
                "MANA_AI_LLM",
            ),
            (vec![("MANA_LLM_URL", "localhost:3020")], "MANA_LLM_URL"),
        ] {
            let Err(e) = Config::from_env(&env(&pairs)) else {
                panic!("{pairs:?} must fail");
            };
            assert_eq!(e.var, var, "{pairs:?}");
        }
        let c = Config::from_env(&env(&[
            ("MANA_AI_DATA_DIR", "/srv/mana"),
            ("MANA_AI_LLM", ""),
        ]))
        .unwrap();
        assert!(!c.llm_backend_explicit);
        assert_eq!(
            c.local_model_path(),
            PathBuf::from("/srv/mana/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
        let c = Config::from_env(&env(&[("MANA_AI_LOCAL_MODEL", "/m/x.gguf")])).unwrap();
        assert_eq!(c.local_model_path(), PathBuf::from("/m/x.gguf"));
        let text = format!("{:?}", c.describe());
        assert!(text.contains("/m/x.gguf"), "{text}");
    }

    #[test]
    fn empty_values_mean_default() {
        let c = Config::from_env(&env(&[
            ("PORT", ""),
            ("POLICY_MODE", " "),
            ("MANA_SERVICE_KEY", ""),
        ]))
        .unwrap();
        assert_eq!(c.port, 3067);
        assert_eq!(c.policy_mode, PolicyModeSetting::LogOnly);
        assert_eq!(c.service_key, "dev-service-key");
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (var, val) in [
            ("PORT", "abc"),
            ("PORT", "70000"),
            ("TICK_INTERVAL_MS", "0"),
            ("TICK_INTERVAL_MS", "garbage"),
            ("TICK_ENABLED", "maybe"),
            ("POLICY_MODE", "strict"),
            ("MANA_LLM_URL", "ftp://x"),
            ("MANA_AI_DEEP_RESEARCH_ENABLED", "yes please"),
            ("MANA_AI_COMPACT_MAX_CTX", "-5"),
            ("SYNC_DATABASE_URL", "not a url at all ::"),
            ("MANA_AI_DEFAULT_TIMEZONE", "Mars/Olympus"),
            ("MANA_AI_BIND", "localhost:80"),
        ] {
            let e = Config::from_env(&env(&[(var, val)])).unwrap_err();
            assert_eq!(e.var, var, "{var}={val} gave {e}");
            assert!(e.to_string().starts_with(&format!("invalid {var}: ")));
        }
    }

    #[test]
    fn research_settings() {
        let c = Config::from_env(&env(&[])).unwrap();
        assert_eq!(c.shallow_research_triggers.len(), 11);
        assert!(c
            .shallow_research_triggers
            .contains(&"on this day".to_string()));
        assert_eq!(c.deep_research_triggers.len(), 5);
        assert_eq!(c.news_service_key_header.as_deref(), Some("X-Service-Key"));
        assert_eq!(c.news_user_id_header.as_deref(), Some("X-User-Id"));
        assert_eq!(c.research_max_age, Duration::from_secs(7200));
        assert_eq!(c.research_max_poll_failures, 10);

        let c = Config::from_env(&env(&[
            ("MANA_AI_SHALLOW_RESEARCH_TRIGGERS", " markt, preise ,,"),
            ("MANA_AI_DEEP_RESEARCH_TRIGGERS", "OFF"),
            ("MANA_AI_NEWS_SERVICE_KEY_HEADER", "none"),
            ("MANA_AI_NEWS_USER_ID_HEADER", "X-Mana-User"),
            ("MANA_AI_RESEARCH_MAX_AGE_MS", "600000"),
            ("MANA_AI_RESEARCH_MAX_POLL_FAILURES", "3"),
        ]))
        .unwrap();
        assert_eq!(c.shallow_research_triggers, ["markt", "preise"]);
        assert!(c.deep_research_triggers.is_empty());
        assert_eq!(c.news_service_key_header, None);
        assert_eq!(c.news_user_id_header.as_deref(), Some("X-Mana-User"));
        assert_eq!(c.research_max_age, Duration::from_secs(600));
        assert_eq!(c.research_max_poll_failures, 3);
        let text = format!("{c:?}");
        assert!(text.contains("markt,preise"), "{text}");

        for (var, val) in [
            ("MANA_AI_NEWS_USER_ID_HEADER", "X User"),
            ("MANA_AI_NEWS_SERVICE_KEY_HEADER", "X-Key:"),
            ("MANA_AI_SHALLOW_RESEARCH_TRIGGERS", "news, -x"),
            ("MANA_AI_RESEARCH_MAX_AGE_MS", "10"),
            ("MANA_AI_RESEARCH_MAX_POLL_FAILURES", "0"),
        ] {
            let e = Config::from_env(&env(&[(var, val)])).unwrap_err();
            assert_eq!(e.var, var, "{var}={val} gave {e}");
        }
    }

    #[test]
    fn policy_mode_is_case_insensitive() {
        let c = Config::from_env(&env(&[("POLICY_MODE", "ENFORCE")])).unwrap();
        assert_eq!(c.policy_mode, PolicyModeSetting::Enforce);
    }

    #[test]
    fn describe_masks_secrets() {
        let c = Config::from_env(&env(&[
            ("MANA_SERVICE_KEY", "super-secret-key"),
            (
                "SYNC_DATABASE_URL",
                "postgresql://svc:hunter2@db:5432/mana_sync",
            ),
            (
                "MANA_AI_PRIVATE_KEY_PEM",
                "-----BEGIN PRIVATE KEY-----\\nABC\\n-----END PRIVATE KEY-----",
            ),
        ]))
        .unwrap();
        let text = format!("{:?}", c);
        assert!(!text.contains("super-secret-key"));
        assert!(!text.contains("hunter2"));
        assert!(!text.contains("ABC"));
        assert!(text.contains("postgresql://svc:***@db:5432/mana_sync"));
    }

    #[test]
    fn mask_http_url_variants() {
        for (raw, shown) in [
            ("http://localhost:3020", "http://localhost:3020"),
            ("https://llm.example/v1", "https://llm.example/v1"),
            (
                "https://bob:pw@llm.example/v1",
                "https://***@llm.example/v1",
            ),
            ("https://tok3n@llm.example", "https://***@llm.example"),
            ("http://h:1/x?api_key=abc", "http://h:1/x?***"),
            ("http://h?token=abc", "http://h?***"),
            ("http://h/p@th", "http://h/p@th"),
            ("no-scheme", "(unparseable URL hidden)"),
        ] {
            assert_eq!(mask_http_url(raw), shown, "{raw}");
        }
    }

    #[test]
    fn describe_masks_credentials_in_http_urls() {
        let c = Config::from_env(&env(&[
            ("MANA_LLM_URL", "https://llmuser:llmpass@llm.example/v1"),
            ("MANA_API_URL", "https://apitoken@api.example"),
            ("MANA_RESEARCH_URL", "https://r.example/base?key=rkey"),
        ]))
        .unwrap();
        let text = format!("{c:?}");
        for secret in ["llmuser", "llmpass", "apitoken", "rkey"] {
            assert!(!text.contains(secret), "{secret} shown: {text}");
        }
        assert!(text.contains("https://***@llm.example/v1"), "{text}");
        // The configured value itself is untouched.
        assert_eq!(c.mana_llm_url, "https://llmuser:llmpass@llm.example/v1");
    }

    #[test]
    fn auth_and_cors_settings() {
        let c = Config::from_env(&env(&[])).unwrap();
        assert_eq!(c.auth_url(), "http://localhost:3001");
        assert_eq!(c.jwt_audience, "mana");
        assert_eq!(c.jwt_issuer, None);
        assert_eq!(
            c.cors_origins,
            vec![
                "https://mana.how".to_string(),
                "http://localhost:5173".into()
            ]
        );
        assert!(!c.auth_bypassed());
        assert_eq!(c.dev_user_id, DEFAULT_DEV_USER_ID);

        let c = Config::from_env(&env(&[
            ("MANA_AUTH_URL", "https://auth.example/"),
            ("JWT_ISSUER", "https://issuer.example"),
            ("JWT_AUDIENCE", "other"),
            (
                "MANA_AI_CORS_ORIGINS",
                " https://A.example , http://b.example:8080,https://a.example",
            ),
            ("DEV_USER_ID", "dev-1"),
        ]))
        .unwrap();
        assert_eq!(c.auth_url(), "https://auth.example");
        assert_eq!(c.jwt_issuer.as_deref(), Some("https://issuer.example"));
        assert_eq!(c.jwt_audience, "other");
        assert_eq!(
            c.cors_origins,
            vec![
                "https://a.example".to_string(),
                "http://b.example:8080".into()
            ]
        );
        assert_eq!(c.dev_user_id, "dev-1");
    }

    #[test]
    fn dev_bypass_needs_both_variables() {
        for (node_env, bypass, active) in [
            (None, Some("true"), false),
            (Some("production"), Some("true"), false),
            (Some("development"), None, false),
            (Some("development"), Some("false"), false),
            (Some("Development"), Some("true"), false),
            (Some("development"), Some("true"), true),
        ] {
            let mut pairs = Vec::new();
            if let Some(n) = node_env {
                pairs.push(("NODE_ENV", n));
            }
            if let Some(b) = bypass {
                pairs.push(("DEV_BYPASS_AUTH", b));
            }
            let c = Config::from_env(&env(&pairs)).unwrap();
            assert_eq!(c.auth_bypassed(), active, "{node_env:?} {bypass:?}");
        }
    }

    #[test]
    fn invalid_auth_values_name_the_variable() {
        for (var, val) in [
            ("MANA_AUTH_URL", "auth.example"),
            ("MANA_AI_CORS_ORIGINS", "*"),
            ("MANA_AI_CORS_ORIGINS", "https://a.example/path"),
            ("MANA_AI_CORS_ORIGINS", "a.example"),
            ("MANA_AI_CORS_ORIGINS", "https://"),
            ("DEV_BYPASS_AUTH", "sure"),
        ] {
            let e = Config::from_env(&env(&[(var, val)])).unwrap_err();
            assert_eq!(e.var, var, "{var}={val} gave {e}");
        }
    }

    #[test]
    fn mask_url_variants() {
        assert_eq!(mask_url("postgresql://a@h/db"), "postgresql://a@h/db");
        assert_eq!(
            mask_url("postgresql://h/db?password=x"),
            "postgresql://h/db?***"
        );
        assert_eq!(mask_url("host=h password=x"), "(unparseable URL hidden)");
    }
}
