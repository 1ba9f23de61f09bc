//! The JSON error body every HTTP route answers with (`{"error": message}`). A leaf
//! module, so the ops router (`http`) and the user API (`audit_http`) share it without
//! importing each other.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// JSON error body `{"error": message}` with a status.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
