//! `mana-ai config` and `Debug` for [`Config`]: every variable with its effective value,
//! secrets masked (keys hidden, passwords and URL credentials replaced by `***`).

use std::fmt;

use super::{Config, DEFAULT_AUTH_URL};

impl Config {
    /// The effective configuration as `(variable, value)` lines, secrets masked.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let mut lines = vec![
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
            (
                "MANA_AI_MAX_COMPLETION_TOKENS",
                self.max_completion_tokens.to_string(),
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
                "MANA_AI_CLAIM_GRACE_MS",
                self.claim_grace.as_millis().to_string(),
            ),
            ("MANA_AI_MAX_INPUTS", self.max_inputs.to_string()),
            (
                "MANA_AI_DEFER_BASE_MS",
                self.defer.base.as_millis().to_string(),
            ),
            (
                "MANA_AI_DEFER_WAIT_CAP_MS",
                self.defer.wait_cap.as_millis().to_string(),
            ),
            (
                "MANA_AI_DEFER_GATE_CAP_MS",
                self.defer.gate_cap.as_millis().to_string(),
            ),
            (
                "MANA_AI_DEFER_ERROR_CAP_MS",
                self.defer.error_cap.as_millis().to_string(),
            ),
            (
                "MANA_AI_REFRESH_BATCH_ROWS",
                self.refresh_batch_rows.to_string(),
            ),
            (
                "MANA_AI_ITERATION_HISTORY",
                self.iteration_history.to_string(),
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
            (
                "MANA_AI_DEFAULT_TIMEZONE",
                self.default_timezone.name().to_string(),
            ),
            ("MANA_AI_COMPACT_MODEL", self.compact_model.clone()),
            (
                "MANA_AI_DEFAULT_LANGUAGE",
                self.default_language.as_str().into(),
            ),
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
                "MANA_AI_HTTP_HEADER_READ_TIMEOUT_MS",
                self.http.header_read_timeout.as_millis().to_string(),
            ),
            (
                "MANA_AI_HTTP_REQUEST_TIMEOUT_MS",
                self.http.request_timeout.as_millis().to_string(),
            ),
            (
                "MANA_AI_HTTP_IDLE_TIMEOUT_MS",
                self.http.idle_timeout.as_millis().to_string(),
            ),
            (
                "MANA_AI_HTTP_MAX_CONNECTIONS",
                self.http.max_connections.to_string(),
            ),
            (
                "MANA_AI_UNTRUSTED_POLICY_MODE",
                self.untrusted_policy_mode.as_str().into(),
            ),
            (
                "NODE_ENV",
                self.node_env.clone().unwrap_or_else(|| "(unset)".into()),
            ),
            (
                "DEV_BYPASS_AUTH",
                if self.auth_bypassed() {
                    "true (ACTIVE on a loopback bind only: /api requests run as DEV_USER_ID)".into()
                } else if self.dev_bypass_auth {
                    "true (inactive: NODE_ENV is not development)".into()
                } else {
                    "false".into()
                },
            ),
            ("DEV_USER_ID", self.dev_user_id.clone()),
            (
                "MANA_AI_AUDIT_RETENTION_DAYS",
                match self.audit_retention_days {
                    Some(days) => days.to_string(),
                    None => "0 (keep forever)".into(),
                },
            ),
            (
                "MANA_AI_PG_BINDIR",
                match &self.pg_bindir {
                    Some(dir) => dir.display().to_string(),
                    None => "(unset: found automatically; `mana-ai dev` only)".into(),
                },
            ),
            (
                "RUST_LOG",
                self.log_filter
                    .clone()
                    .unwrap_or_else(|| "(unset: info)".into()),
            ),
        ];
        lines.extend(self.db.describe());
        lines.extend(super::otel::describe(&self.otel));
        lines
    }
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
