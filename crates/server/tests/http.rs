//! The HTTP surface over real HTTP: a router bound to `127.0.0.1:0`, served by axum,
//! spoken to with reqwest, backed by a fresh migrated PostgreSQL database reached as the
//! least-privilege service role.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mana_ai::http;
use mana_ai_runner::testkit::metrics::CONTRACT_METRICS;
use mana_ai_store::testkit::{fresh_db, TestDb};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{
    closed_port, hold_refresh_cursor, metric_value, ticks_total, wait_for_lock_waiter, Api, App,
};

const KEY: &str = "test-service-key-0123456789";

fn env(db_url: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = [
        ("SYNC_DATABASE_URL", db_url.to_string()),
        (
            "MANA_LLM_URL",
            format!("http://127.0.0.1:{}", closed_port()),
        ),
        ("MANA_SERVICE_KEY", KEY.to_string()),
        ("MANA_AI_LLM_MAX_ATTEMPTS", "1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        m.insert(k.to_string(), v.to_string());
    }
    m
}

/// The ops surface built as `serve` builds it (no `/api` routes).
async fn spawn_app(env: &BTreeMap<String, String>) -> App {
    App::spawn(env, Api::Off).await
}

async fn spawn_with_db(prefix: &str, extra: &[(&str, &str)]) -> (TestDb, App) {
    let db = fresh_db(prefix).await;
    let app = spawn_app(&env(&db.service_url, extra)).await;
    (db, app)
}

/// Asserts a JSON error response and returns its `error` message.
async fn json_error(r: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(r.status(), status, "status of {}", r.url());
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        ct.starts_with("application/json"),
        "{status} must be JSON, got content-type {ct:?}"
    );
    let body: Value = r.json().await.expect("JSON error body");
    let obj = body.as_object().expect("error body is an object");
    assert_eq!(obj.len(), 1, "only an `error` key: {body}");
    let msg = obj["error"]
        .as_str()
        .expect("error is a string")
        .to_string();
    assert!(!msg.is_empty());
    msg
}

/// Inserts a `sync_changes` row the way the sync server does (superuser here).
async fn push(c: &tokio_postgres::Client, user: &str, table: &str, record: &str, data: Value) {
    c.execute(
        "INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta, client_id)
         VALUES ('ai', $1, $2, $3, 'insert', $4, '{}', 'device-1')",
        &[&table, &record, &user, &data],
    )
    .await
    .expect("push row");
}

// ---------------------------------------------------------------------------------------
// /health

#[tokio::test]
async fn health_reports_ok_with_a_reachable_database() {
    let (_db, app) = spawn_with_db("http_health", &[]).await;
    let r = app.get("/health").await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ok"], json!(true));
    assert_eq!(body["service"], json!("mana-ai"));
    let version = body["version"].as_str().expect("version string");
    assert!(!version.is_empty());
    assert_eq!(version, http::VERSION);
    assert_eq!(body["tick"]["enabled"], json!(true));
    // No scheduler was installed by this harness.
    assert_eq!(body["tick"]["running"], json!(false));
}

#[tokio::test]
async fn health_reports_tick_disabled_from_config() {
    let (_db, app) = spawn_with_db("http_health_off", &[("TICK_ENABLED", "false")]).await;
    let body: Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(body["tick"]["enabled"], json!(false));
    assert_eq!(body["tick"]["running"], json!(false));
}

#[tokio::test]
async fn health_is_503_when_the_database_is_unreachable() {
    let url = format!("postgresql://svc:pw@127.0.0.1:{}/mana_sync", closed_port());
    let app = spawn_app(&env(&url, &[])).await;
    let started = Instant::now();
    let r = app.get("/health").await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "health took {took:?}");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ok"], json!(false));
    assert_eq!(body["service"], json!("mana-ai"));
    assert!(body["tick"].is_object());
}

// ---------------------------------------------------------------------------------------
// /metrics

#[tokio::test]
async fn metrics_announce_every_contract_metric_with_the_service_label() {
    let (_db, app) = spawn_with_db("http_metrics", &[]).await;
    let r = app.get("/metrics").await;
    assert_eq!(r.status(), StatusCode::OK);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert!(ct.contains("version=0.0.4"), "{ct}");
    let text = r.text().await.unwrap();
    for (name, _kind) in CONTRACT_METRICS {
        assert!(
            text.contains(&format!("\n# TYPE {name} "))
                || text.starts_with(&format!("# TYPE {name} ")),
            "{name} is not announced"
        );
    }
    // Process metrics.
    for name in [
        "mana_ai_process_resident_memory_bytes",
        "mana_ai_process_start_time_seconds",
        "mana_ai_process_cpu_seconds_total",
        "mana_ai_process_open_fds",
    ] {
        assert!(text.lines().any(|l| l.starts_with(name)), "{name} missing");
    }
    // Every series carries service="mana-ai".
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(samples.len() > 10);
    for l in samples {
        assert!(l.contains("service=\"mana-ai\""), "no service label: {l}");
    }
    // The counters of the contract without labels show a 0 value from the start.
    assert_eq!(ticks_total(&text), Some(0.0));
}

#[tokio::test]
async fn http_metrics_label_route_patterns_never_concrete_ids() {
    let (_db, app) = spawn_with_db("http_metric_labels", &[]).await;
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
    assert_eq!(
        app.get_keyed("/internal/missions/secret-user-42")
            .await
            .status(),
        StatusCode::OK
    );
    // Rejected by the key gate, and an unknown path under /internal, and elsewhere.
    assert_eq!(
        app.get("/internal/missions/secret-user-43").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get_keyed("/internal/secret-path-44").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/secret-path-45").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.tick().await.status(), StatusCode::OK);

    let text = app.metrics_text().await;
    for secret in [
        "secret-user-42",
        "secret-user-43",
        "secret-path-44",
        "secret-path-45",
    ] {
        assert!(!text.contains(secret), "{secret} leaked into /metrics");
    }
    let reqs: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("mana_ai_http_requests_total{"))
        .collect();
    let has = |method: &str, path: &str, status: &str| {
        let labels = [("method", method), ("path", path), ("status", status)];
        metric_value(&text, "mana_ai_http_requests_total", &labels).is_some_and(|n| n >= 1.0)
    };
    assert!(has("GET", "/health", "200"), "{reqs:#?}");
    assert!(
        has("GET", "/internal/missions/{user_id}", "200"),
        "{reqs:#?}"
    );
    assert!(
        has("GET", "/internal/missions/{user_id}", "401"),
        "{reqs:#?}"
    );
    assert!(has("GET", "/internal/*", "404"), "{reqs:#?}");
    assert!(has("GET", "/*", "404"), "{reqs:#?}");
    assert!(has("POST", "/internal/tick", "200"), "{reqs:#?}");
    // The duration histogram carries the same labels.
    let tick_path = [("path", "/internal/tick")];
    assert!(metric_value(
        &text,
        "mana_ai_http_request_duration_seconds_count",
        &tick_path
    )
    .is_some_and(|n| n >= 1.0));
    // One completed pass counted.
    assert_eq!(ticks_total(&text), Some(1.0));
}

// ---------------------------------------------------------------------------------------
// /internal/tick and the service-key gate

#[tokio::test]
async fn tick_requires_the_exact_service_key() {
    let (_db, app) = spawn_with_db("http_key", &[]).await;
    let prefix = &KEY[..KEY.len() - 1];
    let longer = format!("{KEY}x");
    let upper = KEY.to_uppercase();
    let cases: Vec<(&str, Option<&str>)> = vec![
        ("no header", None),
        ("wrong key", Some("not-the-key")),
        ("empty key", Some("")),
        ("prefix of the key", Some(prefix)),
        ("key plus a suffix", Some(&longer)),
        ("key in another case", Some(&upper)),
    ];
    for (case, key) in cases {
        let mut req = app.http.post(app.url("/internal/tick"));
        if let Some(k) = key {
            req = req.header("X-Service-Key", k);
        }
        let r = req.send().await.unwrap();
        let msg = json_error(r, StatusCode::UNAUTHORIZED).await;
        assert_eq!(msg, "invalid or missing service key", "{case}");
    }
    // No pass ran for any of them.
    let text = app.metrics_text().await;
    assert_eq!(ticks_total(&text), Some(0.0));
}

#[tokio::test]
async fn tick_with_the_key_returns_tick_stats() {
    let (_db, app) = spawn_with_db("http_tick", &[]).await;
    let before = chrono::Utc::now();
    // The header name is case-insensitive.
    let r = app
        .http
        .post(app.url("/internal/tick"))
        .header("x-service-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let scanned = body["scannedAt"].as_str().expect("scannedAt");
    assert_eq!(scanned.len(), 24, "{scanned}");
    assert!(scanned.ends_with('Z'), "{scanned}");
    let at = chrono::DateTime::parse_from_rfc3339(scanned).expect("ISO-8601");
    let skew = (at.with_timezone(&chrono::Utc) - before)
        .num_seconds()
        .abs();
    assert!(skew < 60, "scannedAt {scanned} is far from now");
    for k in [
        "dueMissionCount",
        "plansProduced",
        "plansWrittenBack",
        "parseFailures",
    ] {
        assert_eq!(body[k], json!(0), "{k} of an empty database");
    }
    assert_eq!(body["errors"], json!([]));
}

#[tokio::test]
async fn internal_unknown_paths_are_404_with_the_key_and_401_without() {
    let (_db, app) = spawn_with_db("http_internal_404", &[]).await;
    json_error(app.get_keyed("/internal/nope").await, StatusCode::NOT_FOUND).await;
    json_error(app.get_keyed("/internal").await, StatusCode::NOT_FOUND).await;
    let m = json_error(app.get("/internal/nope").await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(m, "invalid or missing service key");
    let m = json_error(app.get("/internal").await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(m, "invalid or missing service key");
    // A path that merely starts with the same letters is not under /internal.
    json_error(app.get("/internalx").await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_second_tick_while_one_runs_is_overlap_skipped() {
    let (db, app) = spawn_with_db("http_overlap", &[]).await;
    // The first pass creates the cursor row.
    assert_eq!(app.tick().await.status(), StatusCode::OK);
    let admin = db.admin().await;
    let n: i64 = admin
        .query_one(
            "SELECT count(*) FROM mana_ai.refresh_cursor WHERE stream = 'ai'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the first pass wrote the cursor");
    tokio::time::sleep(Duration::from_millis(50)).await;

    // Hold the cursor row: the next refresh blocks writing it.
    let mut holder = db.admin().await;
    let tx = hold_refresh_cursor(&mut holder).await;

    let first = {
        let http = app.http.clone();
        let url = app.url("/internal/tick");
        tokio::spawn(async move {
            http.post(url)
                .header("X-Service-Key", KEY)
                .send()
                .await
                .expect("first tick")
        })
    };
    // Wait until the first pass is really stuck on the row lock.
    wait_for_lock_waiter(&admin).await;
    assert!(app.state.runner.pass_in_flight());
    let health: Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(health["tick"]["passInFlight"], json!(true));

    let r = app.tick().await;
    assert_eq!(r.status(), StatusCode::OK);
    let second: Value = r.json().await.unwrap();
    assert_eq!(second["errors"], json!(["overlap-skipped"]));
    assert_eq!(second["dueMissionCount"], json!(0));
    assert_eq!(second["plansProduced"], json!(0));
    assert!(second["scannedAt"].as_str().is_some());
    assert!(!first.is_finished(), "the first pass must still be blocked");

    // Release: the first completes normally.
    tx.rollback().await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(20), first)
        .await
        .expect("first pass finishes after release")
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"], json!([]));
    assert!(!app.state.runner.pass_in_flight());
    // Only the two real passes are counted, not the overlapping call.
    let text = app.metrics_text().await;
    assert_eq!(ticks_total(&text), Some(2.0));
}

// ---------------------------------------------------------------------------------------
// /internal/missions/{userId}

#[tokio::test]
async fn missions_view_lists_a_users_missions_and_agents_only() {
    let (db, app) = spawn_with_db("http_missions", &[]).await;
    let admin = db.admin().await;
    push(
        &admin,
        "user-a",
        "aiMissions",
        "mission-a1",
        json!({"title": "Watch the news", "objective": "o", "conceptMarkdown": "",
               "state": "active", "nextRunAt": "2099-01-02T03:04:05.000Z",
               "cadence": {"kind": "manual"}, "inputs": [], "iterations": [],
               "agentId": "agent-a1"}),
    )
    .await;
    push(
        &admin,
        "user-a",
        "agents",
        "agent-a1",
        json!({"name": "Scout", "role": "researcher", "state": "active",
               "maxConcurrentMissions": 2}),
    )
    .await;
    push(
        &admin,
        "user-b",
        "aiMissions",
        "mission-b1",
        json!({"title": "Other user's mission", "objective": "o", "state": "paused",
               "nextRunAt": "2099-01-01T00:00:00.000Z", "cadence": {"kind": "manual"},
               "inputs": [], "iterations": []}),
    )
    .await;
    // Not yet folded into snapshots: nothing to show.
    let before: Value = app
        .get_keyed("/internal/missions/user-a")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(before["missions"], json!([]));

    // The refresh folds rows only up to its horizon, which trails the clock by a
    // safety margin (250 ms): rows this fresh are picked up by a later pass.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stats: Value = app.tick().await.json().await.unwrap();
    assert_eq!(stats["errors"], json!([]), "{stats}");
    assert_eq!(stats["refresh"]["rowsApplied"], json!(3), "{stats}");
    assert_eq!(stats["refresh"]["newSnapshots"], json!(3), "{stats}");

    let r = app.get_keyed("/internal/missions/user-a").await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["userId"], json!("user-a"));
    let missions = body["missions"].as_array().expect("missions array");
    assert_eq!(missions.len(), 1, "{body}");
    let m = &missions[0];
    assert_eq!(m["id"], json!("mission-a1"));
    assert_eq!(m["title"], json!("Watch the news"));
    assert_eq!(m["state"], json!("active"));
    assert_eq!(m["nextRunAt"], json!("2099-01-02T03:04:05.000Z"));
    assert_eq!(m["agentId"], json!("agent-a1"));
    assert_eq!(m["deleted"], json!(false));
    assert_eq!(m["iterationCount"], json!(0));
    let agents = body["agents"].as_array().expect("agents array");
    assert_eq!(agents.len(), 1, "{body}");
    assert_eq!(agents[0]["id"], json!("agent-a1"));
    assert_eq!(agents[0]["name"], json!("Scout"));
    assert_eq!(agents[0]["role"], json!("researcher"));
    assert_eq!(agents[0]["state"], json!("active"));
    assert_eq!(agents[0]["maxConcurrentMissions"], json!(2));
    let text = body.to_string();
    assert!(!text.contains("mission-b1") && !text.contains("Other user"));

    // User b sees its own mission and nothing of user a.
    let b: Value = app
        .get_keyed("/internal/missions/user-b")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(b["missions"].as_array().map(Vec::len), Some(1), "{b}");
    assert_eq!(b["missions"][0]["state"], json!("paused"));
    assert_eq!(b["agents"], json!([]));
    let text = b.to_string();
    for leak in ["mission-a1", "agent-a1", "Scout", "Watch the news"] {
        assert!(!text.contains(leak), "{leak} leaked to user-b: {text}");
    }
    // An unknown user sees nothing at all.
    let nobody: Value = app
        .get_keyed("/internal/missions/user-zzz")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(nobody["missions"], json!([]));
    assert_eq!(nobody["agents"], json!([]));
    // And without the key the view is closed.
    let m = json_error(
        app.get("/internal/missions/user-a").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(m, "invalid or missing service key");
}

// ---------------------------------------------------------------------------------------
// JSON errors everywhere

#[tokio::test]
async fn errors_are_json_everywhere() {
    let (_db, app) = spawn_with_db("http_errors", &[("MANA_AI_BODY_LIMIT_BYTES", "1024")]).await;
    // Unknown routes.
    json_error(app.get("/nope").await, StatusCode::NOT_FOUND).await;
    json_error(app.get("/health/").await, StatusCode::NOT_FOUND).await;
    // Wrong methods.
    let r = app.http.post(app.url("/health")).send().await.unwrap();
    let allow = r
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    json_error(r, StatusCode::METHOD_NOT_ALLOWED).await;
    assert!(allow.contains("GET"), "Allow header kept: {allow:?}");
    json_error(
        app.http.delete(app.url("/metrics")).send().await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    json_error(
        app.get_keyed("/internal/tick").await,
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    // Over the body limit, with the key.
    let r = app
        .http
        .post(app.url("/internal/tick"))
        .header("X-Service-Key", KEY)
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    json_error(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    // Under the limit is fine (the body is ignored).
    let r = app
        .http
        .post(app.url("/internal/tick"))
        .header("X-Service-Key", KEY)
        .body(vec![b'x'; 512])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_client_that_gives_up_does_not_cancel_the_pass() {
    let (db, app) = spawn_with_db("http_disconnect", &[]).await;
    assert_eq!(app.tick().await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let admin = db.admin().await;
    let mut holder = db.admin().await;
    let tx = hold_refresh_cursor(&mut holder).await;
    // A caller with a short timeout: its connection closes while the pass is blocked.
    let impatient = app
        .http
        .post(app.url("/internal/tick"))
        .header("X-Service-Key", KEY)
        .timeout(Duration::from_secs(30))
        .send();
    let waiter = wait_for_lock_waiter(&admin);
    tokio::select! {
        _ = impatient => panic!("the pass must be blocked"),
        _ = waiter => {}
    }
    // The request future is dropped here: the client went away.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        app.state.runner.pass_in_flight(),
        "the pass was cancelled with the client's connection"
    );
    tx.rollback().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.state.runner.pass_in_flight() {
        assert!(Instant::now() < deadline, "the pass never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = app.metrics_text().await;
    assert_eq!(
        ticks_total(&text),
        Some(2.0),
        "the abandoned pass still completes and is counted"
    );
}
