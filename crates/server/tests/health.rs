//! `/health` answers from the scheduler's status and a background database probe: it
//! reports the last completed pass, turns 503 when the enabled scheduler completed no
//! pass within three intervals, and a flood of requests during a pass stays cheap (the
//! pass completes; figures printed with `--nocapture`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mana_ai::config::Config;
use mana_ai::http::AppState;
use mana_ai::{app, http};
use mana_ai_runner::testkit::{FakeLlm, Reply, RunnerBuilder};
use mana_ai_runner::{Runner, Scheduler};
use mana_ai_store::testkit::rows::{mission_record, runner_row_count};
use mana_ai_store::testkit::{fresh_db, push_mission, TestDb};
use reqwest::StatusCode;
use serde_json::{json, Value};

const DUE: &str = "2026-01-05T06:00:00.000Z";

fn config(db: &TestDb, interval_ms: u64) -> Config {
    let env: BTreeMap<String, String> = [
        ("SYNC_DATABASE_URL", db.service_url.clone()),
        (
            "MANA_SERVICE_KEY",
            "test-service-key-0123456789".to_string(),
        ),
        ("TICK_INTERVAL_MS", interval_ms.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Config::from_env(&env).expect("config")
}

/// Serves the router for `runner` on a free loopback port; answers its base URL.
async fn serve(cfg: &Config, runner: Arc<Runner>) -> (String, Arc<AppState>) {
    let state = app::app_state(cfg, runner);
    let router = http::router(state.clone(), cfg.body_limit_bytes);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{addr}"), state)
}

async fn health(http: &reqwest::Client, base: &str) -> (StatusCode, Value) {
    let r = http.get(format!("{base}/health")).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn health_reports_the_last_completed_pass() {
    let db = fresh_db("health_last").await;
    let cfg = config(&db, 1_000);
    let runner = RunnerBuilder::new(&db).build_arc();
    let (base, state) = serve(&cfg, runner.clone()).await;
    let scheduler = Scheduler::start_reporting(runner, state.health.scheduler.clone());
    let http = reqwest::Client::new();
    let started = Instant::now();
    let body = loop {
        let (status, body) = health(&http, &base).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if !body["tick"]["lastPass"].is_null() {
            break body;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The original's fields, unchanged.
    assert_eq!(body["ok"], json!(true));
    assert_eq!(body["service"], json!("mana-ai"));
    assert_eq!(body["tick"]["enabled"], json!(true));
    assert_eq!(body["tick"]["running"], json!(true));
    // The added ones.
    assert_eq!(body["database"], json!("ok"));
    assert_eq!(body["tick"]["stale"], json!(false));
    assert_eq!(body["tick"]["intervalMs"], json!(1000));
    let last = &body["tick"]["lastPass"];
    assert_eq!(last["ok"], json!(true), "{body}");
    assert_eq!(last["errors"], json!(0), "{body}");
    assert!(last["durationMs"].is_u64(), "{body}");
    assert!(last["finishedAt"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert!(scheduler.shutdown(Duration::from_secs(5)).await);
    let (_, body) = health(&http, &base).await;
    assert_eq!(body["tick"]["running"], json!(false));
}

#[tokio::test]
async fn health_is_503_when_no_pass_completed_within_three_intervals() {
    let db = fresh_db("health_stale").await;
    let admin = db.admin().await;
    push_mission(
        &admin,
        "u1",
        "m1",
        mission_record(json!({"nextRunAt": DUE})),
    )
    .await;
    // The first pass never ends: its one mission's model call hangs.
    let runner = RunnerBuilder::new(&db)
        .llm(FakeLlm::replying(Reply::hang()))
        .build_arc();
    let cfg = config(&db, 1_000);
    let (base, state) = serve(&cfg, runner.clone()).await;
    let scheduler = Scheduler::start_reporting(runner, state.health.scheduler.clone());
    let http = reqwest::Client::new();
    let (status, body) = health(&http, &base).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let (status, body) = health(&http, &base).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["ok"], json!(false));
    assert_eq!(body["tick"]["stale"], json!(true));
    assert_eq!(body["tick"]["lastPass"], Value::Null);
    assert_eq!(body["database"], json!("ok"));
    assert_eq!(body["tick"]["passInFlight"], json!(true), "{body}");
    assert!(!scheduler.shutdown(Duration::from_millis(100)).await);
}

/// Seeds `n` due missions of `n` users (ids `<prefix>-<i>`).
async fn seed(admin: &tokio_postgres::Client, prefix: &str, n: usize) {
    for i in 0..n {
        let mission = mission_record(json!({
            "nextRunAt": DUE, "cadence": {"kind": "interval", "everyMinutes": 60}
        }));
        push_mission(
            admin,
            &format!("{prefix}-u{i}"),
            &format!("{prefix}-{i}"),
            mission,
        )
        .await;
    }
}

#[tokio::test]
async fn a_flood_of_health_requests_during_a_pass_stays_cheap_and_the_pass_completes() {
    const MISSIONS: usize = 100;
    const CLIENTS: usize = 32;
    let db = fresh_db("health_flood").await;
    let admin = db.admin().await;
    let cfg = config(&db, 60_000);
    let runner = RunnerBuilder::new(&db)
        .llm(FakeLlm::replying(Reply::text("ok")))
        .build_arc();
    let (base, _state) = serve(&cfg, runner.clone()).await;

    seed(&admin, "quiet", MISSIONS).await;
    let started = Instant::now();
    let quiet = runner.tick().await;
    let quiet_time = started.elapsed();
    assert_eq!(quiet.plans_written_back, MISSIONS, "{quiet:?}");

    seed(&admin, "flood", MISSIONS).await;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let http = reqwest::Client::new();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (stop, served, http, url) = (
            stop.clone(),
            served.clone(),
            http.clone(),
            format!("{base}/health"),
        );
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = http.get(&url).send().await.expect("health");
                assert_eq!(r.status(), StatusCode::OK);
                let _ = r.bytes().await;
                served.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Let the flood reach full speed before the pass starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = served.load(Ordering::Relaxed);
    let started = Instant::now();
    let flooded = runner.tick().await;
    let flood_time = started.elapsed();
    let during = served.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("flood client");
    }
    assert_eq!(flooded.plans_written_back, MISSIONS, "{flooded:?}");
    assert!(flooded.errors.is_empty(), "{flooded:?}");
    assert_eq!(runner_row_count(&admin, Some("flood-7")).await, 1);
    let rate = during as f64 / flood_time.as_secs_f64();
    eprintln!(
        "health flood: pass of {MISSIONS} missions {quiet_time:?} quiet, {flood_time:?} under a flood of {CLIENTS} clients; {during} /health answered during the pass ({rate:.0} requests/s)"
    );
    assert!(during > 0);
}
