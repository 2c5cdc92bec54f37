//! The smallest axum service a user would write instead of the generated one: the same
//! three routes and the example's `/v1/value`, a request counter, Prometheus text from
//! metrics-exporter-prometheus, and a graceful stop on SIGTERM or SIGINT.
//!
//! Usage: axum-peer PORT

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::signal::unix::{SignalKind, signal};

async fn count(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unknown", MatchedPath::as_str)
        .to_owned();
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("peer_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}

async fn exposition(State(handle): State<PrometheusHandle>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    )
}

/// `GET /v1/value`: the last value, formatted as the example service answers it.
async fn value() -> impl IntoResponse {
    let (value, fetched_at) = (42.0_f64, 1_764_250_000_u64);
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        format!("{{\"value\": {value:?}, \"fetched_at\": {fetched_at}}}"),
    )
}

async fn stopped() {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("usage: axum-peer PORT (1-65535)");
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("the Prometheus recorder is the only one");
    let router = Router::new()
        .route("/.well-known/live", get(|| async { "ok" }))
        .route("/.well-known/ready", get(|| async { "ok" }))
        .route("/metrics", get(exposition))
        .with_state(handle)
        .route("/v1/value", get(value))
        .layer(from_fn(count));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind 127.0.0.1:PORT");
    axum::serve(listener, router)
        .with_graceful_shutdown(stopped())
        .await
        .expect("serve");
}
