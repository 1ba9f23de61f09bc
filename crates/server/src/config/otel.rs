//! The standard `OTEL_*` variables of the trace exporter: where spans go, with which
//! headers, under which service name, which sampler, how often the batch is sent. Parsed
//! and validated here like every other variable; `mana_ai_telemetry` builds the exporter.

use std::collections::BTreeMap;
use std::time::Duration;

pub use mana_ai_telemetry::{
    OtelConfig, ParentRoot, SamplerChoice, DEFAULT_BATCH_DELAY, DEFAULT_EXPORT_TIMEOUT,
    DEFAULT_SERVICE_NAME, MAX_OTEL_DELAY,
};

use super::parse::get;
use super::{err, ConfigError};

/// Reads the `OTEL_*` variables of `env`.
pub fn from_env(env: &BTreeMap<String, String>) -> Result<OtelConfig, ConfigError> {
    let disabled = match get(env, "OTEL_SDK_DISABLED") {
        None => false,
        Some(v) => super::parse::parse_bool("OTEL_SDK_DISABLED", v)?,
    };
    let traces_url = if disabled { None } else { traces_url(env)? };
    let mut headers = Vec::new();
    for var in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    ] {
        if let Some(raw) = get(env, var) {
            for (k, v) in parse_headers(var, raw)? {
                headers.retain(|(name, _): &(String, String)| !name.eq_ignore_ascii_case(&k));
                headers.push((k, v));
            }
        }
    }
    Ok(OtelConfig {
        traces_url,
        headers,
        service_name: get(env, "OTEL_SERVICE_NAME")
            .unwrap_or(DEFAULT_SERVICE_NAME)
            .to_string(),
        sampler: sampler(env)?,
        batch_delay: millis(env, "OTEL_BSP_SCHEDULE_DELAY", DEFAULT_BATCH_DELAY)?,
        export_timeout: millis(env, "OTEL_EXPORTER_OTLP_TIMEOUT", DEFAULT_EXPORT_TIMEOUT)?,
    })
}

/// The `mana-ai config` lines: header values are masked (they carry credentials).
pub fn describe(cfg: &OtelConfig) -> Vec<(&'static str, String)> {
    let sampler = match cfg.sampler {
        SamplerChoice::AlwaysOn => "always_on".to_string(),
        SamplerChoice::AlwaysOff => "always_off".to_string(),
        SamplerChoice::Ratio(r) => format!("traceidratio {r}"),
        SamplerChoice::ParentBased(ParentRoot::AlwaysOn) => "parentbased_always_on".into(),
        SamplerChoice::ParentBased(ParentRoot::AlwaysOff) => "parentbased_always_off".into(),
        SamplerChoice::ParentBased(ParentRoot::Ratio(r)) => {
            format!("parentbased_traceidratio {r}")
        }
    };
    let headers = cfg
        .headers
        .iter()
        .map(|(k, v)| format!("{k}={}", super::mask_secret(v)))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            match &cfg.traces_url {
                Some(url) => format!("{} (traces)", super::mask_http_url(url)),
                None => "(unset: tracing disabled)".into(),
            },
        ),
        ("OTEL_EXPORTER_OTLP_HEADERS", headers),
        ("OTEL_SERVICE_NAME", cfg.service_name.clone()),
        ("OTEL_TRACES_SAMPLER", sampler),
        (
            "OTEL_BSP_SCHEDULE_DELAY",
            cfg.batch_delay.as_millis().to_string(),
        ),
        (
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            cfg.export_timeout.as_millis().to_string(),
        ),
    ]
}

/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as given) or `OTEL_EXPORTER_OTLP_ENDPOINT`
/// plus `/v1/traces` (without the original's double slash after a trailing `/`).
fn traces_url(env: &BTreeMap<String, String>) -> Result<Option<String>, ConfigError> {
    if let Some(raw) = get(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return http_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raw).map(Some);
    }
    let Some(raw) = get(env, "OTEL_EXPORTER_OTLP_ENDPOINT") else {
        return Ok(None);
    };
    let base = http_url("OTEL_EXPORTER_OTLP_ENDPOINT", raw)?;
    Ok(Some(format!("{}/v1/traces", base.trim_end_matches('/'))))
}

fn http_url(var: &'static str, raw: &str) -> Result<String, ConfigError> {
    let raw = raw.trim();
    let rest = raw
        .strip_prefix("http://")
        .or_else(|| raw.strip_prefix("https://"))
        .ok_or_else(|| err(var, format!("expected an http(s) URL, got {raw:?}")))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(err(var, format!("the URL {raw:?} has no host")));
    }
    Ok(raw.to_string())
}

/// `k1=v1,k2=v2`, values percent-decoded (the OTLP exporter specification's format).
fn parse_headers(var: &'static str, raw: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| err(var, "expected key=value pairs separated by commas"))?;
        let k = k.trim();
        let valid_name = !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid_name {
            return Err(err(var, "a header name is empty or not a token"));
        }
        let v =
            percent_decode(v.trim()).ok_or_else(|| err(var, "a header value is badly encoded"))?;
        if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(err(var, "a header value contains a line break"));
        }
        out.push((k.to_string(), v));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn sampler(env: &BTreeMap<String, String>) -> Result<SamplerChoice, ConfigError> {
    let ratio = || -> Result<f64, ConfigError> {
        let Some(raw) = get(env, "OTEL_TRACES_SAMPLER_ARG") else {
            return Ok(1.0);
        };
        match raw.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(err(
                "OTEL_TRACES_SAMPLER_ARG",
                format!("expected a ratio between 0 and 1, got {raw:?}"),
            )),
        }
    };
    let name = get(env, "OTEL_TRACES_SAMPLER").unwrap_or("parentbased_always_on");
    Ok(match name.trim().to_ascii_lowercase().as_str() {
        "always_on" => SamplerChoice::AlwaysOn,
        "always_off" => SamplerChoice::AlwaysOff,
        "traceidratio" => SamplerChoice::Ratio(ratio()?),
        "parentbased_always_on" => SamplerChoice::ParentBased(ParentRoot::AlwaysOn),
        "parentbased_always_off" => SamplerChoice::ParentBased(ParentRoot::AlwaysOff),
        "parentbased_traceidratio" => SamplerChoice::ParentBased(ParentRoot::Ratio(ratio()?)),
        other => {
            return Err(err(
                "OTEL_TRACES_SAMPLER",
                format!(
                    "unsupported sampler {other:?} (always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off, parentbased_traceidratio)"
                ),
            ))
        }
    })
}

fn millis(
    env: &BTreeMap<String, String>,
    var: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(raw) = get(env, var) else {
        return Ok(default);
    };
    match raw.trim().parse::<u64>() {
        Ok(ms) if ms > 0 && Duration::from_millis(ms) <= MAX_OTEL_DELAY => {
            Ok(Duration::from_millis(ms))
        }
        _ => Err(err(
            var,
            format!(
                "expected milliseconds between 1 and {}, got {raw:?}",
                MAX_OTEL_DELAY.as_millis()
            ),
        )),
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
    fn unset_endpoint_disables_tracing_with_standard_defaults() {
        let c = from_env(&env(&[])).unwrap();
        assert_eq!(c.traces_url, None);
        assert_eq!(c.service_name, "mana-ai");
        assert_eq!(c.sampler, SamplerChoice::ParentBased(ParentRoot::AlwaysOn));
        assert_eq!(c.batch_delay, DEFAULT_BATCH_DELAY);
    }

    #[test]
    fn base_endpoint_gets_the_traces_path_once() {
        for base in ["http://tempo:4318", "http://tempo:4318/"] {
            let c = from_env(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", base)])).unwrap();
            assert_eq!(c.traces_url.as_deref(), Some("http://tempo:4318/v1/traces"));
        }
        let c = from_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:1"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://b:2/custom"),
        ]))
        .unwrap();
        assert_eq!(c.traces_url.as_deref(), Some("https://b:2/custom"));
        let off = from_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:1"),
            ("OTEL_SDK_DISABLED", "true"),
        ]))
        .unwrap();
        assert_eq!(off.traces_url, None);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "tempo:4318"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=%zz"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=b%0Ac"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
            ("OTEL_BSP_SCHEDULE_DELAY", "0"),
            ("OTEL_BSP_SCHEDULE_DELAY", "600001"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
        ] {
            let mut e = env(&[(var, value)]);
            if var == "OTEL_TRACES_SAMPLER_ARG" {
                e.insert("OTEL_TRACES_SAMPLER".into(), "traceidratio".into());
            }
            let error = from_env(&e).expect_err(value);
            assert!(error.to_string().contains(var), "{error}");
        }
    }

    #[test]
    fn headers_sampler_and_delay_are_read() {
        let c = from_env(&env(&[
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Basic%20abc, x-org = 1",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "X-Org=2"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
            ("OTEL_SERVICE_NAME", "mana-ai-eu"),
        ]))
        .unwrap();
        assert_eq!(
            c.headers,
            vec![
                ("authorization".to_string(), "Basic abc".to_string()),
                ("X-Org".to_string(), "2".to_string()),
            ]
        );
        assert_eq!(
            c.sampler,
            SamplerChoice::ParentBased(ParentRoot::Ratio(0.25))
        );
        assert_eq!(c.batch_delay, MAX_OTEL_DELAY);
        assert_eq!(c.service_name, "mana-ai-eu");
    }
}
