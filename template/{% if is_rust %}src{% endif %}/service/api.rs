//! The service's HTTP routes. The platform mounts them next to its own and wraps them:
//! requests are counted under the route template, a panic or 500 becomes a logged,
//! counted `{"error": "internal error"}`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;

use super::jobs::Worker;
use crate::http::{json, json_error};

/// `GET /v1/value`: the last good value and when it was fetched.
pub fn routes(worker: Arc<Worker>) -> Router {
    Router::new()
        .route("/v1/value", get(value))
        .with_state(worker)
}

/// `{"value": 42.0, "fetched_at": 1764250000}`, or 503 `{"error": "no value yet"}`.
async fn value(State(worker): State<Arc<Worker>>) -> Response {
    match worker.last_value() {
        Some(last) => json(StatusCode::OK, &last),
        None => json_error(StatusCode::SERVICE_UNAVAILABLE, "no value yet"),
    }
}
