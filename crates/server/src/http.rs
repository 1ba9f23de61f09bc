//! HTTP surface (axum): `/health`, `/metrics`, `/internal/tick`,
//! `/internal/missions/{userId}`, and the user API under `/api` (see [`crate::audit_http`]).
//! Errors are JSON everywhere ([`crate::json_error`]); request bodies are size limited; the
//! service key is compared in constant time. Imports go one way: `http` → `audit_http`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mana_ai_core::records::{AgentView, MissionView};
use mana_ai_runner::Runner;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::audit_http::{self, ApiState};

/// Version reported by `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Shared state of the handlers.
pub struct AppState {
    pub runner: Arc<Runner>,
    pub service_key: String,
    /// What `/health` answers from (scheduler status, background database probe).
    pub health: crate::health::Health,
}

/// The router without the `/api` routes (ops surface only).
pub fn router(state: Arc<AppState>, body_limit: usize) -> Router {
    router_with_api(state, body_limit, None)
}

/// The full router; `api` mounts `/api/*` (JWT auth, CORS).
pub fn router_with_api(
    state: Arc<AppState>,
    body_limit: usize,
    api: Option<Arc<ApiState>>,
) -> Router {
    let base = Router::new();
    let base = match api {
        Some(api) => base.merge(audit_http::api_router(state.runner.store().clone(), api)),
        None => base,
    };
    base.route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/internal/tick", post(tick))
        .route("/internal/missions/{user_id}", get(user_missions))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            service_key_gate,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), http_metrics))
        .with_state(state)
}

pub use crate::json_error::json_error;

async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "not found")
}

/// Records `mana_ai_http_requests_total` / `_duration_seconds` with the route pattern
/// (never the concrete URL, which may hold a user id) and turns non-JSON error bodies
/// produced by extractors (413, 405, 400…) into JSON.
async fn http_metrics(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    // A fixed set: invented methods must not mint label values.
    let method = mana_ai_runner::metrics::http_method_label(req.method().as_str());
    let path = match req.extensions().get::<MatchedPath>() {
        Some(p) => p.as_str().to_string(),
        None if req.uri().path().starts_with("/internal") => "/internal/*".to_string(),
        None => "/*".to_string(),
    };
    let resp = next.run(req).await;
    let resp = ensure_json_error(resp).await;
    let status = resp.status().as_u16().to_string();
    let m = state.runner.metrics();
    m.http_requests_total
        .with_label_values(&[method, &path, &status])
        .inc();
    m.http_request_duration_seconds
        .with_label_values(&[method, &path, &status])
        .observe(started.elapsed().as_secs_f64());
    resp
}

async fn ensure_json_error(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let msg = String::from_utf8_lossy(&text).trim().to_string();
    let msg = if msg.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        msg
    };
    let mut out = json_error(status, &msg);
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// `X-Service-Key` gate for `/internal` and everything below it (known route or not),
/// constant-time comparison.
async fn service_key_gate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if !(path == "/internal" || path.starts_with("/internal/")) {
        return next.run(req).await;
    }
    let given = headers
        .get("x-service-key")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !key_matches(given, state.service_key.as_bytes()) {
        return json_error(StatusCode::UNAUTHORIZED, "invalid or missing service key");
    }
    next.run(req).await
}

/// Constant-time key check; an empty key never matches.
pub fn key_matches(given: &[u8], expected: &[u8]) -> bool {
    !given.is_empty() && !expected.is_empty() && bool::from(given.ct_eq(expected))
}

/// `/health`: the scheduler's last completed pass and the background database probe,
/// read from memory (no database connection per request). 503 when the database probe
/// failed, or when the scheduler is enabled and completed no pass within
/// `STALE_AFTER_INTERVALS` intervals.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    let in_flight = state.runner.pass_in_flight();
    let (ok, body) = state.health.report(VERSION, in_flight).await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut resp = Response::new(Body::from(state.runner.metrics().render()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// Runs one pass on its own task: when the caller disconnects or times out, hyper drops
/// this handler's future, and a pass polled inline would be cancelled halfway (LLM calls
/// paid for, write-back lost). Spawned, it completes; shutdown waits for it through
/// `Runner::wait_idle`.
async fn tick(State(state): State<Arc<AppState>>) -> Response {
    let runner = state.runner.clone();
    match tokio::spawn(async move { runner.tick().await }).await {
        Ok(stats) => Json(stats).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "tick pass task failed");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "tick pass failed")
        }
    }
}

/// Read-only ops view of one user's snapshots.
async fn user_missions(
    State(state): State<Arc<AppState>>,
    Path(user_id): Path<String>,
) -> Response {
    if user_id.trim().is_empty() {
        return json_error(StatusCode::BAD_REQUEST, "userId must not be empty");
    }
    let store = state.runner.store();
    let (missions, agents, budget) = match tokio::try_join!(
        store.user_missions(&user_id),
        store.user_agents(&user_id),
        store.user_budget_use(&user_id)
    ) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "ops view query failed");
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable");
        }
    };
    let agents_json: Vec<Value> = agents
        .iter()
        .map(|a| {
            let v = AgentView::from_record(&a.user_id, &a.record);
            let usage = budget.get(&a.agent_id).copied().unwrap_or_default();
            json!({
                "id": a.agent_id,
                "name": v.name,
                "role": v.role,
                "state": v.state.as_str(),
                "maxConcurrentMissions": v.max_concurrent_missions,
                "maxTokensPerDay": v.max_tokens_per_day,
                // Left = cap − (booked 24 h + reserved by calls in flight); null = unlimited.
                "budgetLeft": v.max_tokens_per_day.map(|cap| usage.left(cap)),
                "usedLast24h": usage.used_24h,
            })
        })
        .collect();
    let missions_json: Vec<Value> = missions
        .iter()
        .map(|m| {
            let v = MissionView::from_record(&m.user_id, &m.record);
            let last = v.iterations.last();
            json!({
                "id": m.mission_id,
                "title": v.title,
                "state": v.state.as_str(),
                "deleted": m.deleted,
                "agentId": v.agent_id,
                "cadence": v.cadence,
                "nextRunAt": m.next_run_at.map(mana_ai_core::iso::to_iso_ms),
                "iterationCount": v.iterations.len(),
                "lastIteration": last.map(|it| json!({
                    "id": it.get("id"),
                    "overallStatus": it.get("overallStatus"),
                    "source": it.get("source"),
                    "finishedAt": it.get("finishedAt"),
                })),
                "snapshotUpdatedAt": mana_ai_core::iso::to_iso_ms(m.updated_at),
            })
        })
        .collect();
    Json(json!({ "userId": user_id, "missions": missions_json, "agents": agents_json }))
        .into_response()
}
