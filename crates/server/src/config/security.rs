//! The security settings of the configuration, grouped: the HTTP server's limits
//! (timeouts, connection cap), the CORS default (the `vite dev` origin only in
//! development), and the exposure check that refuses to serve a public default key or an
//! authentication bypass on a non-loopback address. See `docs/security.md`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use mana_ai_core::plan::PolicyMode;

use super::parse::{get, opt_ms, opt_num, parse_origins};
use super::{err, Config, ConfigError, DEFAULT_SERVICE_KEY};

/// Shortest `MANA_SERVICE_KEY` accepted on a non-loopback address (bytes).
pub const MIN_SERVICE_KEY_BYTES: usize = 16;
/// Default `MANA_AI_CORS_ORIGINS` outside development: the web app in production only.
pub const DEFAULT_CORS_ORIGINS: &str = "https://mana.how";
/// The web app under `vite dev`, added to the default origins in development only
/// (`mana-ai dev`, or `NODE_ENV=development`).
pub const DEV_CORS_ORIGIN: &str = "http://localhost:5173";
/// Default `MANA_AI_HTTP_HEADER_READ_TIMEOUT_MS`: time a client has to send a request's
/// head (request line and headers) once the server waits for it.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `MANA_AI_HTTP_REQUEST_TIMEOUT_MS`: time one request may take from its head to
/// the response head (every route but `POST /internal/tick`, which answers when its pass
/// ends).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `MANA_AI_HTTP_IDLE_TIMEOUT_MS`: a connection with no request in flight and no
/// bytes moving for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `MANA_AI_HTTP_MAX_CONNECTIONS`: connections served at once; further ones wait
/// in the listen backlog until one closes.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Default `MANA_AI_UNTRUSTED_POLICY_MODE`: runs whose prompt carries research results
/// drop tool calls with injection markers.
pub const DEFAULT_UNTRUSTED_POLICY_MODE: PolicyMode =
    mana_ai_runner::defaults::UNTRUSTED_POLICY_MODE;

/// Limits of the HTTP server (`MANA_AI_HTTP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// `MANA_AI_HTTP_HEADER_READ_TIMEOUT_MS`.
    pub header_read_timeout: Duration,
    /// `MANA_AI_HTTP_REQUEST_TIMEOUT_MS`.
    pub request_timeout: Duration,
    /// `MANA_AI_HTTP_IDLE_TIMEOUT_MS`.
    pub idle_timeout: Duration,
    /// `MANA_AI_HTTP_MAX_CONNECTIONS`.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Reads `MANA_AI_HTTP_*`.
pub(super) fn http_limits(env: &BTreeMap<String, String>) -> Result<HttpLimits, ConfigError> {
    Ok(HttpLimits {
        header_read_timeout: opt_ms(
            env,
            "MANA_AI_HTTP_HEADER_READ_TIMEOUT_MS",
            100,
            300_000,
            DEFAULT_HEADER_READ_TIMEOUT,
        )?,
        request_timeout: opt_ms(
            env,
            "MANA_AI_HTTP_REQUEST_TIMEOUT_MS",
            100,
            3_600_000,
            DEFAULT_REQUEST_TIMEOUT,
        )?,
        idle_timeout: opt_ms(
            env,
            "MANA_AI_HTTP_IDLE_TIMEOUT_MS",
            100,
            3_600_000,
            DEFAULT_IDLE_TIMEOUT,
        )?,
        max_connections: opt_num(
            env,
            "MANA_AI_HTTP_MAX_CONNECTIONS",
            1,
            100_000,
            DEFAULT_MAX_CONNECTIONS,
        )?,
    })
}

/// `MANA_AI_CORS_ORIGINS` (`None` when unset: the caller picks the default).
pub(super) fn explicit_origins(
    env: &BTreeMap<String, String>,
) -> Result<Option<Vec<String>>, ConfigError> {
    get(env, "MANA_AI_CORS_ORIGINS")
        .map(|v| parse_origins("MANA_AI_CORS_ORIGINS", v))
        .transpose()
}

/// The default origins: production only, plus the `vite dev` origin in development.
pub(super) fn default_origins(development: bool) -> Vec<String> {
    let mut out = vec![DEFAULT_CORS_ORIGINS.to_string()];
    if development {
        out.push(DEV_CORS_ORIGIN.to_string());
    }
    out
}

/// `MANA_AI_UNTRUSTED_POLICY_MODE`: the injection policy of runs whose prompt carries
/// research results (default `enforce`).
pub(super) fn untrusted_policy_mode(
    env: &BTreeMap<String, String>,
) -> Result<PolicyMode, ConfigError> {
    get(env, "MANA_AI_UNTRUSTED_POLICY_MODE")
        .map(|v| {
            v.parse().map_err(|e: mana_ai_core::plan::PolicyModeError| {
                err("MANA_AI_UNTRUSTED_POLICY_MODE", e.to_string())
            })
        })
        .transpose()
        .map(|m| m.unwrap_or(DEFAULT_UNTRUSTED_POLICY_MODE))
}

/// Whether `key` may guard `/internal/*` on a non-loopback address: set, not the public
/// default, at least [`MIN_SERVICE_KEY_BYTES`] long.
pub fn service_key_is_strong(key: &str) -> bool {
    key != DEFAULT_SERVICE_KEY && key.len() >= MIN_SERVICE_KEY_BYTES
}

impl Config {
    /// Refuses a configuration that would open the service to its network: on an address
    /// other than loopback, `MANA_SERVICE_KEY` must be a real secret (not empty, not the
    /// public default, at least 16 bytes) and `DEV_BYPASS_AUTH` must be off. Checked by
    /// `serve` (and `dev`) before anything starts; the error names the variable.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        check_exposure_at(self.bind, &self.service_key, self.auth_bypassed())
    }

    /// Adds the `vite dev` origin to the default CORS origins (`mana-ai dev`), unless
    /// `MANA_AI_CORS_ORIGINS` was set.
    pub fn with_dev_cors_default(mut self) -> Self {
        if !self.cors_origins_explicit {
            self.cors_origins = default_origins(true);
        }
        self
    }
}

fn check_exposure_at(bind: IpAddr, key: &str, bypass: bool) -> Result<(), ConfigError> {
    if bind.is_loopback() {
        return Ok(());
    }
    if !service_key_is_strong(key) {
        return Err(err(
            "MANA_SERVICE_KEY",
            format!(
                "serving on {bind} needs a secret of at least {MIN_SERVICE_KEY_BYTES} bytes \
                 (not empty, not the public default {DEFAULT_SERVICE_KEY:?}); set it, or bind \
                 to loopback with MANA_AI_BIND=127.0.0.1"
            ),
        ));
    }
    if bypass {
        return Err(err(
            "DEV_BYPASS_AUTH",
            format!(
                "the development auth bypass is refused on {bind}: it only works with a \
                 loopback bind (MANA_AI_BIND=127.0.0.1)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposure_table() {
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let lan: IpAddr = "10.0.0.5".parse().unwrap();
        let v6: IpAddr = "::".parse().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let lo6: IpAddr = "::1".parse().unwrap();
        let strong = "0123456789abcdef"; // exactly 16 bytes
        let short = "0123456789abcde"; // 15 bytes
        for (bind, key, bypass, refused_var) in [
            (any, DEFAULT_SERVICE_KEY, false, Some("MANA_SERVICE_KEY")),
            (any, "", false, Some("MANA_SERVICE_KEY")),
            (lan, short, false, Some("MANA_SERVICE_KEY")),
            (v6, DEFAULT_SERVICE_KEY, false, Some("MANA_SERVICE_KEY")),
            (any, strong, false, None),
            (any, strong, true, Some("DEV_BYPASS_AUTH")),
            (lo, DEFAULT_SERVICE_KEY, true, None),
            (lo, "", false, None),
            (lo6, short, true, None),
        ] {
            let got = check_exposure_at(bind, key, bypass).err().map(|e| e.var);
            assert_eq!(got, refused_var, "{bind} {key:?} {bypass}");
        }
        let msg = check_exposure_at(any, "", false).unwrap_err().to_string();
        assert!(msg.starts_with("invalid MANA_SERVICE_KEY:"), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }
}
