//! Shared fixtures of the server's integration tests: the one in-process [`App`] (the
//! router built exactly as `serve` builds it, on a free loopback port), ports, health
//! polling, lock-waiter probes and metric parsing. Each test binary uses a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mana_ai::audit_http::ApiState;
use mana_ai::config::Config;
use mana_ai::http::AppState;
use mana_ai::{app, http};
use mana_ai_runner::Metrics;
use serde_json::Value;

/// A port nothing listens on (bound, then released). Used both for "a free port the
/// service may take" and "an address that refuses connections".
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe");
    let port = l.local_addr().expect("probe addr").port();
    drop(l);
    port
}

/// A port that refuses connections (see [`free_port`]).
pub fn closed_port() -> u16 {
    free_port()
}

/// Process output as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Polls `url` (a `/health` endpoint) until it answers `ok: true` and returns the body.
/// `exited` is asked before every attempt: `Some(reason)` when the server process is
/// gone (the test fails at once with the reason instead of waiting out `limit`).
pub async fn wait_healthy(
    client: &reqwest::Client,
    url: &str,
    limit: Duration,
    mut exited: impl FnMut() -> Option<String>,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(reason) = exited() {
            panic!("the server exited before it was healthy: {reason}");
        }
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                if let Ok(body) = r.json::<Value>().await {
                    if body["ok"] == serde_json::json!(true) {
                        return body;
                    }
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "{url} never became healthy within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until some backend of the connected database waits on a lock (a pass that is
/// stuck on a row the test holds).
pub async fn wait_for_lock_waiter(admin: &tokio_postgres::Client) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "no pass ever blocked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Locks the refresh cursor row in a transaction on `holder`, so the next pass blocks
/// writing it until the returned transaction ends (roll it back to release).
pub async fn hold_refresh_cursor(
    holder: &mut tokio_postgres::Client,
) -> tokio_postgres::Transaction<'_> {
    let tx = holder.transaction().await.unwrap();
    tx.query(
        "SELECT position FROM mana_ai.refresh_cursor FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    tx
}

/// The value of the one sample of metric `name` (Prometheus text format) whose labels
/// contain every `labels` pair; `None` when there is no such sample. Parsed, so `1` never
/// matches `10`.
pub fn metric_value(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_text, value) = match rest.strip_prefix('{') {
            // The label set ends at the last `}` (values such as `{user_id}` hold braces).
            Some(r) => r.rsplit_once('}')?,
            None => ("", rest),
        };
        if !value.starts_with(' ') {
            return None; // a longer name sharing the prefix
        }
        let has_all = labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
        if !has_all {
            return None;
        }
        value.split_whitespace().next()?.parse().ok()
    })
}

/// `mana_ai_ticks_total` (completed passes).
pub fn ticks_total(metrics: &str) -> Option<f64> {
    metric_value(metrics, "mana_ai_ticks_total", &[])
}

/// A running in-process server and what the tests need to poke at it.
pub struct App {
    pub base: String,
    pub state: Arc<AppState>,
    pub http: reqwest::Client,
    /// The service key of its configuration (`MANA_SERVICE_KEY`).
    pub service_key: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Which `/api` routes the fixture mounts.
pub enum Api {
    /// None: the ops surface only (`http::router`).
    Off,
    /// Built from the configuration, as `serve` does.
    FromConfig,
    /// A given API state (tests with their own verifier settings).
    Given(ApiState),
}

impl App {
    /// Builds the runner and router exactly as `serve` does and serves them on a free
    /// loopback port.
    pub async fn spawn(env: &BTreeMap<String, String>, api: Api) -> App {
        let cfg = Config::from_env(env).expect("valid config");
        let store = app::store_for(&cfg).expect("pool");
        let runner = Arc::new(
            app::runner_for(&cfg, store, Metrics::new())
                .await
                .expect("runner"),
        );
        let state = app::app_state(&cfg, runner);
        let api = match api {
            Api::Off => None,
            Api::FromConfig => Some(ApiState::from_config(&cfg).expect("api state")),
            Api::Given(a) => Some(a),
        };
        let router = http::router_with_api(state.clone(), cfg.body_limit_bytes, api.map(Arc::new));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("serve");
        });
        App {
            base: format!("http://{addr}"),
            state,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            service_key: cfg.service_key.clone(),
            server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("GET")
    }

    /// GET with an `Origin` header (CORS checks).
    pub async fn get_from_origin(&self, path: &str, origin: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("Origin", origin)
            .send()
            .await
            .expect("GET with Origin")
    }

    pub async fn get_keyed(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("X-Service-Key", &self.service_key)
            .send()
            .await
            .expect("GET with key")
    }

    pub async fn tick(&self) -> reqwest::Response {
        self.http
            .post(self.url("/internal/tick"))
            .header("X-Service-Key", &self.service_key)
            .send()
            .await
            .expect("POST /internal/tick")
    }

    pub async fn metrics_text(&self) -> String {
        let r = self.get("/metrics").await;
        assert_eq!(r.status(), reqwest::StatusCode::OK);
        r.text().await.expect("metrics body")
    }

    /// `GET /api/v1/me/ai-audit{query}`, with a bearer token when given.
    pub async fn audit(&self, query: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self
            .http
            .get(self.url(&format!("/api/v1/me/ai-audit{query}")));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("GET ai-audit")
    }
}

#[test]
fn metric_values_are_parsed_not_matched_by_substring() {
    let text = "# TYPE mana_ai_ticks_total counter\n\
                mana_ai_ticks_total{service=\"mana-ai\"} 12\n\
                mana_ai_ticks_total_extra{service=\"mana-ai\"} 1\n\
                mana_ai_http_requests_total{method=\"GET\",path=\"/health\",service=\"mana-ai\",status=\"200\"} 3\n\
                mana_ai_up 1\n\
                mana_ai_http_requests_total{method=\"GET\",path=\"/m/{user_id}\",status=\"401\"} 2\n";
    assert_eq!(ticks_total(text), Some(12.0));
    assert_ne!(ticks_total(text), Some(1.0));
    assert_eq!(
        metric_value(text, "mana_ai_http_requests_total", &[("path", "/health")]),
        Some(3.0)
    );
    assert_eq!(
        metric_value(text, "mana_ai_http_requests_total", &[("path", "/nope")]),
        None
    );
    assert_eq!(metric_value(text, "mana_ai_up", &[]), Some(1.0));
    assert_eq!(
        metric_value(
            text,
            "mana_ai_http_requests_total",
            &[("path", "/m/{user_id}")]
        ),
        Some(2.0)
    );
    assert_eq!(metric_value(text, "mana_ai_missing", &[]), None);
}
