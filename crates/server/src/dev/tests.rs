//! Unit tests of `mana-ai dev`: its configuration, password file, demo records and texts.

use super::banner::http_base;
use super::*;
use crate::config::mask_url;
use serde_json::json;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

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
