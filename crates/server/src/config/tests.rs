//! Unit tests of the configuration: defaults, parsing, errors naming the variable, masking.

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
    assert_eq!(c.policy_mode, PolicyMode::LogOnly);
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
    assert_eq!(c.policy_mode, PolicyMode::LogOnly);
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
    assert_eq!(c.policy_mode, PolicyMode::Enforce);
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
    // Production default: the web app only; `vite dev`'s origin only in development.
    assert_eq!(c.cors_origins, vec!["https://mana.how".to_string()]);
    assert!(!c.cors_origins_explicit);
    let dev = c.clone().with_dev_cors_default();
    assert_eq!(
        dev.cors_origins,
        ["https://mana.how", "http://localhost:5173"]
    );
    let node_dev = Config::from_env(&env(&[("NODE_ENV", "development")])).unwrap();
    assert_eq!(node_dev.cors_origins, dev.cors_origins);
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
    // An explicit list is kept by `mana-ai dev` too.
    assert_eq!(
        c.clone().with_dev_cors_default().cors_origins,
        c.cors_origins
    );
}

#[test]
fn http_limits_and_untrusted_policy() {
    let c = Config::from_env(&env(&[])).unwrap();
    assert_eq!(c.http, HttpLimits::default());
    assert_eq!(c.http.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.http.idle_timeout, Duration::from_secs(30));
    assert_eq!(c.http.request_timeout, Duration::from_secs(30));
    assert_eq!(c.http.max_connections, 512);
    assert_eq!(c.untrusted_policy_mode, PolicyMode::Enforce);
    let c = Config::from_env(&env(&[
        ("MANA_AI_HTTP_HEADER_READ_TIMEOUT_MS", "100"),
        ("MANA_AI_HTTP_REQUEST_TIMEOUT_MS", "3600000"),
        ("MANA_AI_HTTP_IDLE_TIMEOUT_MS", "2500"),
        ("MANA_AI_HTTP_MAX_CONNECTIONS", "1"),
        ("MANA_AI_UNTRUSTED_POLICY_MODE", "log-only"),
    ]))
    .unwrap();
    assert_eq!(c.http.header_read_timeout, Duration::from_millis(100));
    assert_eq!(c.http.request_timeout, Duration::from_secs(3600));
    assert_eq!(c.http.idle_timeout, Duration::from_millis(2500));
    assert_eq!(c.http.max_connections, 1);
    assert_eq!(c.untrusted_policy_mode, PolicyMode::LogOnly);
    for (var, bad) in [
        ("MANA_AI_HTTP_HEADER_READ_TIMEOUT_MS", "99"),
        ("MANA_AI_HTTP_REQUEST_TIMEOUT_MS", "3600001"),
        ("MANA_AI_HTTP_IDLE_TIMEOUT_MS", "x"),
        ("MANA_AI_HTTP_MAX_CONNECTIONS", "0"),
        ("MANA_AI_HTTP_MAX_CONNECTIONS", "100001"),
        ("MANA_AI_UNTRUSTED_POLICY_MODE", "strict"),
    ] {
        let e = Config::from_env(&env(&[(var, bad)])).unwrap_err();
        assert_eq!(e.var, var, "{bad}");
    }
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

#[test]
fn audit_retention_setting() {
    let cases: [(Option<&str>, Option<Option<u32>>); 9] = [
        (None, Some(Some(365))),
        (Some(""), Some(Some(365))),
        (Some("0"), Some(None)),
        (Some("7"), Some(Some(7))),
        (Some(" 30 "), Some(Some(30))),
        (Some("36500"), Some(Some(36_500))),
        (Some("6"), None),
        (Some("-1"), None),
        (Some("ten"), None),
    ];
    for (raw, want) in cases {
        match (audit_retention_days(raw), want) {
            (Ok(got), Some(w)) => assert_eq!(got, w, "{raw:?}"),
            (Err(e), None) => {
                assert!(
                    e.to_string().contains("MANA_AI_AUDIT_RETENTION_DAYS"),
                    "{e}"
                )
            }
            (got, want) => panic!("{raw:?}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn variables_read_for_serve_and_dev_are_configuration() {
    let c = Config::from_env(&env(&[])).unwrap();
    assert!(!c.bind_explicit && !c.sync_database_url_explicit);
    assert_eq!(c.audit_retention_days, Some(365));
    assert_eq!(c.pg_bindir, None);
    assert_eq!(c.default_timezone, chrono_tz::Europe::Berlin);
    assert_eq!(c.log_filter, None);
    let c = Config::from_env(&env(&[
        ("MANA_AI_BIND", "127.0.0.1"),
        ("SYNC_DATABASE_URL", "postgresql://u@h/db"),
        ("MANA_AI_AUDIT_RETENTION_DAYS", "0"),
        ("MANA_AI_PG_BINDIR", "/opt/pg/bin"),
        ("MANA_AI_DEFAULT_TIMEZONE", "America/New_York"),
        ("RUST_LOG", "debug"),
    ]))
    .unwrap();
    assert!(c.bind_explicit && c.sync_database_url_explicit);
    assert_eq!(c.audit_retention_days, None);
    assert_eq!(c.pg_bindir, Some(PathBuf::from("/opt/pg/bin")));
    assert_eq!(c.default_timezone, chrono_tz::America::New_York);
    let shown: BTreeMap<_, _> = c.describe().into_iter().collect();
    assert_eq!(shown["MANA_AI_AUDIT_RETENTION_DAYS"], "0 (keep forever)");
    assert_eq!(shown["MANA_AI_PG_BINDIR"], "/opt/pg/bin");
    assert_eq!(shown["MANA_AI_DEFAULT_TIMEZONE"], "America/New_York");
    assert_eq!(shown["RUST_LOG"], "debug");
    // An empty MANA_AI_BIND is unset, as everywhere.
    let c = Config::from_env(&env(&[("MANA_AI_BIND", " ")])).unwrap();
    assert!(!c.bind_explicit);
    let e = Config::from_env(&env(&[("MANA_AI_AUDIT_RETENTION_DAYS", "3")])).unwrap_err();
    assert_eq!(e.var, "MANA_AI_AUDIT_RETENTION_DAYS");
}

#[test]
fn compaction_model_and_default_language() {
    use mana_ai_core::lang::Lang;
    let c = Config::from_env(&env(&[])).unwrap();
    assert_eq!(c.compact_model, "google/gemini-2.5-flash-lite");
    assert_ne!(
        c.compact_model, c.llm_model,
        "compaction no longer uses the planner model"
    );
    assert_eq!(c.default_language, Lang::De);
    let c = Config::from_env(&env(&[
        ("MANA_AI_COMPACT_MODEL", "mana/fast"),
        ("MANA_AI_DEFAULT_LANGUAGE", "en-US"),
    ]))
    .unwrap();
    assert_eq!(c.compact_model, "mana/fast");
    assert_eq!(c.default_language, Lang::En);
    let shown: BTreeMap<_, _> = c.describe().into_iter().collect();
    assert_eq!(shown["MANA_AI_COMPACT_MODEL"], "mana/fast");
    assert_eq!(shown["MANA_AI_DEFAULT_LANGUAGE"], "en");
    let e = Config::from_env(&env(&[("MANA_AI_DEFAULT_LANGUAGE", "fr")])).unwrap_err();
    assert_eq!(e.var, "MANA_AI_DEFAULT_LANGUAGE");
}

#[test]
fn iteration_history_is_bounded_at_both_edges() {
    let c = Config::from_env(&env(&[])).unwrap();
    assert_eq!(c.iteration_history, 50);
    for ok in ["3", "1000"] {
        let c = Config::from_env(&env(&[("MANA_AI_ITERATION_HISTORY", ok)])).unwrap();
        assert_eq!(c.iteration_history.to_string(), ok);
        let shown: BTreeMap<_, _> = c.describe().into_iter().collect();
        assert_eq!(shown["MANA_AI_ITERATION_HISTORY"], ok);
    }
    for bad in ["2", "1001", "x"] {
        let e = Config::from_env(&env(&[("MANA_AI_ITERATION_HISTORY", bad)])).unwrap_err();
        assert_eq!(e.var, "MANA_AI_ITERATION_HISTORY");
    }
}
