//! Parsers for single configuration values: numbers with bounds, booleans, URLs, origin
//! and word lists, header names, and the LLM backend choice. Each error names its
//! variable ([`ConfigError`]); an empty value always means "unset".

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::{err, ConfigError, LlmBackend, DEFAULT_LLM_URL};

/// Reads a variable; unset and empty both mean `None`.
pub(super) fn get<'a>(env: &'a BTreeMap<String, String>, var: &str) -> Option<&'a str> {
    env.get(var).map(|s| s.trim()).filter(|s| !s.is_empty())
}

pub(super) fn parse_bool(var: &'static str, raw: &str) -> Result<bool, ConfigError> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(err(var, format!("expected true or false, got {raw:?}"))),
    }
}

pub(super) fn parse_num<T: std::str::FromStr + PartialOrd + fmt::Display + Copy>(
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

/// `MANA_LLM_URL` and `MANA_AI_LLM` together: the URL (default when local), the backend,
/// and whether either was set. `MANA_LLM_URL=local` is a shorthand for `MANA_AI_LLM=local`;
/// a contradiction between the two is an error, not a silent pick.
pub(super) fn llm_choice(
    env: &BTreeMap<String, String>,
) -> Result<(String, LlmBackend, bool), ConfigError> {
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

pub(super) fn parse_http_url(var: &'static str, raw: &str) -> Result<String, ConfigError> {
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
pub(super) fn parse_origins(var: &'static str, raw: &str) -> Result<Vec<String>, ConfigError> {
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
pub(super) fn parse_word_list(
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
pub(super) fn parse_header_name(
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

pub(super) fn parse_pg_url(var: &'static str, raw: &str) -> Result<String, ConfigError> {
    mana_ai_store::parse_url(raw).map_err(|e| err(var, e.to_string()))?;
    Ok(raw.to_string())
}

pub(super) fn opt_num<T: std::str::FromStr + PartialOrd + fmt::Display + Copy>(
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

/// A boolean variable; unset ⇒ `default`.
pub(super) fn opt_bool(
    env: &BTreeMap<String, String>,
    var: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    get(env, var)
        .map(|v| parse_bool(var, v))
        .transpose()
        .map(|v| v.unwrap_or(default))
}

/// A duration in milliseconds within `min..=max`; unset ⇒ `default`.
pub(super) fn opt_ms(
    env: &BTreeMap<String, String>,
    var: &'static str,
    min: u64,
    max: u64,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let default = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
    opt_num(env, var, min, max, default).map(Duration::from_millis)
}

/// An `http(s)://` base URL (trailing slashes dropped); unset ⇒ `default`.
pub(super) fn opt_http_url(
    env: &BTreeMap<String, String>,
    var: &'static str,
    default: &str,
) -> Result<String, ConfigError> {
    get(env, var)
        .map(|v| parse_http_url(var, v))
        .transpose()
        .map(|v| v.unwrap_or_else(|| default.to_string()))
}

/// A free-form string; unset ⇒ `default`.
pub(super) fn opt_str(env: &BTreeMap<String, String>, var: &str, default: &str) -> String {
    get(env, var).unwrap_or(default).to_string()
}
