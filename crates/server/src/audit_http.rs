//! The user-facing API under `/api`: `GET /api/v1/me/ai-audit` (the decrypt audit of the
//! caller), JWT-authenticated, with CORS for the web app's origins.
//!
//! CORS wraps every `/api/*` route (known or not), so a browser preflight is answered
//! before authentication runs, and error responses carry the CORS headers too (the
//! browser can read the 401 body). Nothing outside `/api` gets CORS headers.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use mana_ai_core::iso::to_iso_ms;
use mana_ai_store::Store;
use serde_json::{json, Value};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::{AuthError, AuthSetupError, Authenticator, JwtConfig, JwtVerifier};
use crate::config::Config;
use crate::json_error::json_error;

/// Path of the audit read endpoint.
pub const AUDIT_PATH: &str = "/api/v1/me/ai-audit";
/// Page size when `limit` is absent or not a number.
pub const DEFAULT_LIMIT: i64 = 200;
/// Largest page.
pub const MAX_LIMIT: i64 = 1000;

/// What the `/api` routes need besides the database.
pub struct ApiState {
    pub auth: Authenticator,
    /// Allowed browser origins (exact, lower-case `scheme://host[:port]`).
    pub cors_origins: Vec<String>,
}

impl ApiState {
    /// Builds the API state from the configuration, logging the auth mode.
    pub fn from_config(cfg: &Config) -> Result<Self, AuthSetupError> {
        let auth = if cfg.auth_bypassed() {
            tracing::warn!(
                user_id = %cfg.dev_user_id,
                "DEV_BYPASS_AUTH is active: /api requests are NOT authenticated"
            );
            Authenticator::DevBypass {
                user_id: cfg.dev_user_id.clone(),
            }
        } else {
            if cfg.mana_auth_url.is_none() {
                tracing::info!(
                    "MANA_AUTH_URL is unset: verifying /api tokens against {}",
                    cfg.auth_url()
                );
            }
            Authenticator::Jwt(Box::new(JwtVerifier::new(JwtConfig::for_auth_url(
                cfg.auth_url(),
                cfg.jwt_issuer.as_deref(),
                &cfg.jwt_audience,
            ))?))
        };
        Ok(Self {
            auth,
            cors_origins: cfg.cors_origins.clone(),
        })
    }
}

#[derive(Clone)]
struct Ctx {
    store: Store,
    api: Arc<ApiState>,
}

/// The `/api` routes with their CORS layer, to be merged into the main router.
pub fn api_router<S>(store: Store, api: Arc<ApiState>) -> Router<S> {
    let cors = cors_layer(&api.cors_origins);
    Router::new()
        .route(AUDIT_PATH, get(ai_audit))
        .route("/api", any(api_not_found))
        .route("/api/{*rest}", any(api_not_found))
        .layer(cors)
        .with_state(Ctx { store, api })
}

/// CORS for the given origins: `GET` with `Authorization` and `Content-Type`.
pub fn cors_layer(origins: &[String]) -> CorsLayer {
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(list))
        .allow_methods([Method::GET, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600))
}

async fn api_not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "not found")
}

fn unauthorized(e: AuthError) -> Response {
    let mut resp = json_error(StatusCode::UNAUTHORIZED, &e.to_string());
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

async fn ai_audit(State(ctx): State<Ctx>, headers: HeaderMap, uri: Uri) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user_id = match ctx.api.auth.authenticate(authorization).await {
        Ok(u) => u,
        Err(e) => return unauthorized(e),
    };
    let params: Vec<(String, String)> = match Query::try_from_uri(&uri) {
        Ok(Query(p)) => p,
        Err(_) => return json_error(StatusCode::BAD_REQUEST, "invalid query string"),
    };
    let first = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let mission_id = first("missionId").filter(|m| !m.is_empty());
    let limit = effective_limit(first("limit"));
    match ctx
        .store
        .read_decrypt_audit(&user_id, mission_id, limit)
        .await
    {
        Ok(rows) => {
            let rows: Vec<Value> = rows
                .iter()
                .map(|r| {
                    json!({
                        "id": r.id.to_string(),
                        "missionId": r.mission_id,
                        "iterationId": r.iteration_id,
                        "tableName": r.table_name,
                        "recordId": r.record_id,
                        "status": r.status,
                        "reason": r.reason,
                        "ts": to_iso_ms(r.ts),
                    })
                })
                .collect();
            Json(json!({ "rows": rows })).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "decrypt audit read failed");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "audit read failed")
        }
    }
}

/// `clamp(parseInt(raw, 10) ?? 200, 1, 1000)`.
pub fn effective_limit(raw: Option<&str>) -> i64 {
    raw.and_then(parse_int_js)
        .unwrap_or(DEFAULT_LIMIT)
        .clamp(1, MAX_LIMIT)
}

/// JavaScript `parseInt(s, 10)`: leading whitespace skipped, optional sign, then the
/// longest run of ASCII digits; no digits ⇒ `None` (NaN). Saturates instead of
/// overflowing (every caller clamps anyway).
pub fn parse_int_js(s: &str) -> Option<i64> {
    let s = s.trim_start_matches(is_js_whitespace);
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let run: &str = {
        let end = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        &digits[..end]
    };
    if run.is_empty() {
        return None;
    }
    let magnitude = run.bytes().fold(0i64, |acc, d| {
        acc.saturating_mul(10).saturating_add(i64::from(d - b'0'))
    });
    Some(if negative { -magnitude } else { magnitude })
}

/// ECMAScript `WhiteSpace` and `LineTerminator` (what `parseInt` skips).
fn is_js_whitespace(c: char) -> bool {
    c == '\u{FEFF}' || (c.is_whitespace() && c != '\u{85}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_int_like_javascript() {
        for (raw, want) in [
            ("5", Some(5)),
            ("5abc", Some(5)),
            ("  12", Some(12)),
            ("\t\n7x", Some(7)),
            ("\u{FEFF}3", Some(3)),
            ("\u{85}3", None),
            ("-4", Some(-4)),
            ("+9", Some(9)),
            ("-", None),
            ("", None),
            ("abc", None),
            ("0x10", Some(0)),
            ("1e3", Some(1)),
            ("3.9", Some(3)),
            ("- 3", None),
            ("99999999999999999999999", Some(i64::MAX)),
        ] {
            assert_eq!(parse_int_js(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn limit_defaults_and_clamps() {
        for (raw, want) in [
            (None, 200),
            (Some(""), 200),
            (Some("abc"), 200),
            (Some("0"), 1),
            (Some("-5"), 1),
            (Some("1"), 1),
            (Some("5abc"), 5),
            (Some("1000"), 1000),
            (Some("5000"), 1000),
            (Some("-99999999999999999999999"), 1),
        ] {
            assert_eq!(effective_limit(raw), want, "{raw:?}");
        }
    }
}
