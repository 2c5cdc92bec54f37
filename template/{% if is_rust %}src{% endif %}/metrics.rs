//! Metrics: the Prometheus registry, the fixed metric names and the request counter.
//!
//! Every name carries the service's prefix (`order_router_`), except the process metrics,
//! which keep their usual names so that stock dashboards work. No label value ever comes
//! from a client unchecked: routes and methods outside their fixed sets become `unknown`
//! and `other`.

use std::sync::OnceLock;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Gauge, Recorder, Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::layers::{FilterLayer, Layer};

use crate::config::snake_name;

/// The routes the service answers; any other path is counted as `unknown`.
pub const ROUTES: &[&str] = &["/.well-known/live", "/.well-known/ready", "/metrics"];
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
/// The `/metrics` answer's content type, the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The service's metric names, built once from the crate name.
pub struct Names {
    pub build_info: String,
    pub http_requests_total: String,
    pub errors_total: String,
    pub retries_total: String,
    pub heartbeat_timestamp_seconds: String,
    pub ready: String,
    pub degraded: String,
    pub work_latency_ewma_seconds: String,
}

/// The names for this service (`order_router_ready`, ...).
pub fn names() -> &'static Names {
    static NAMES: OnceLock<Names> = OnceLock::new();
    NAMES.get_or_init(|| {
        let p = snake_name();
        Names {
            build_info: format!("{p}_build_info"),
            http_requests_total: format!("{p}_http_requests_total"),
            errors_total: format!("{p}_errors_total"),
            retries_total: format!("{p}_retries_total"),
            heartbeat_timestamp_seconds: format!("{p}_heartbeat_timestamp_seconds"),
            ready: format!("{p}_ready"),
            degraded: format!("{p}_degraded"),
            work_latency_ewma_seconds: format!("{p}_work_latency_ewma_seconds"),
        }
    })
}

/// Describes every metric and sets the ones that exist from the start.
///
/// Runs against whatever recorder is current, so tests can use a local one.
pub fn register(version: &str, commit: &str) {
    let n = names();
    describe_gauge!(
        n.build_info.clone(),
        "Build of the running service; always 1"
    );
    describe_counter!(
        n.http_requests_total.clone(),
        "HTTP requests answered, by route, method and status"
    );
    describe_counter!(
        n.errors_total.clone(),
        "Failed work runs, by error kind (transient or persistent)"
    );
    describe_counter!(
        n.retries_total.clone(),
        "Retries of transient upstream errors"
    );
    describe_gauge!(
        n.heartbeat_timestamp_seconds.clone(),
        Unit::Seconds,
        "Unix time of the last heartbeat"
    );
    describe_gauge!(
        n.ready.clone(),
        "1 when the service is ready to serve, else 0"
    );
    describe_gauge!(
        n.degraded.clone(),
        "1 when the last work run failed, else 0"
    );
    describe_gauge!(
        n.work_latency_ewma_seconds.clone(),
        Unit::Seconds,
        "EWMA (alpha 0.3) of the latency of successful upstream calls"
    );
    let build = [
        ("version", version.to_string()),
        ("commit", commit.to_string()),
        ("flavour", "rust".to_string()),
    ];
    gauge!(n.build_info.clone(), &build).set(1.0);
    for kind in ["transient", "persistent"] {
        counter!(n.errors_total.clone(), "kind" => kind).absolute(0);
    }
    counter!(n.retries_total.clone()).absolute(0);
    gauge!(n.ready.clone()).set(0.0);
    gauge!(n.degraded.clone()).set(0.0);
    gauge!(n.work_latency_ewma_seconds.clone()).set(0.0);
}

/// Handles on the gauges and counters the other modules update.
#[derive(Clone)]
pub struct Handles {
    pub ready: Gauge,
    pub degraded: Gauge,
    pub heartbeat: Gauge,
    pub latency: Gauge,
    pub retries: Counter,
    pub transient_errors: Counter,
    pub persistent_errors: Counter,
}

impl Handles {
    /// Handles registered with the current recorder.
    pub fn new() -> Self {
        let n = names();
        Self {
            ready: gauge!(n.ready.clone()),
            degraded: gauge!(n.degraded.clone()),
            heartbeat: gauge!(n.heartbeat_timestamp_seconds.clone()),
            latency: gauge!(n.work_latency_ewma_seconds.clone()),
            retries: counter!(n.retries_total.clone()),
            transient_errors: counter!(n.errors_total.clone(), "kind" => "transient"),
            persistent_errors: counter!(n.errors_total.clone(), "kind" => "persistent"),
        }
    }

    /// Handles that record nothing (tests of other modules).
    pub fn noop() -> Self {
        Self {
            ready: Gauge::noop(),
            degraded: Gauge::noop(),
            heartbeat: Gauge::noop(),
            latency: Gauge::noop(),
            retries: Counter::noop(),
            transient_errors: Counter::noop(),
            persistent_errors: Counter::noop(),
        }
    }
}

impl Default for Handles {
    fn default() -> Self {
        Self::new()
    }
}

/// The exporter and the process collector, rendered on each scrape.
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

/// Process metrics that the collector reports beyond the contract's four (CPU, RSS, open fds,
/// start time); dropped so that `/metrics` holds exactly the documented names.
const UNLISTED_PROCESS_METRICS: &[&str] = &[
    "process_max_fds",
    "process_threads",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
];

/// The Prometheus recorder behind a filter of the unlisted process metrics, and its handle.
pub fn recorder() -> (impl Recorder + Sync + 'static, PrometheusHandle) {
    let prometheus = PrometheusBuilder::new().build_recorder();
    let handle = prometheus.handle();
    let filter = FilterLayer::from_patterns(UNLISTED_PROCESS_METRICS.iter().copied());
    (filter.layer(prometheus), handle)
}

impl Exporter {
    /// Installs the global recorder, once per process.
    pub fn install(version: &str, commit: &str) -> Result<Self, String> {
        let (recorder, handle) = recorder();
        metrics::set_global_recorder(recorder)
            .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
        Ok(Self::with_handle(handle, version, commit))
    }

    /// Registers every metric with the current recorder, whose handle renders them.
    pub fn with_handle(handle: PrometheusHandle, version: &str, commit: &str) -> Self {
        register(version, commit);
        let process = metrics_process::Collector::default();
        process.describe();
        process.collect();
        Self { handle, process }
    }

    /// The Prometheus text for a scrape.
    pub fn render(&self) -> String {
        self.process.collect();
        self.handle.render()
    }
}

/// `GET /metrics`.
pub async fn serve(exporter: axum::extract::State<Exporter>) -> Response {
    let mut response = exporter.render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// The `route` label: a known route's path, else `unknown`.
pub fn route_label(matched: Option<&str>) -> &'static str {
    matched
        .and_then(|m| ROUTES.iter().find(|r| **r == m))
        .copied()
        .unwrap_or("unknown")
}

/// The `method` label: one of the fixed set, else `other`.
pub fn method_label(method: &Method) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method.as_str())
        .copied()
        .unwrap_or("other")
}

/// Counts every answered request under bounded labels.
pub async fn track(request: Request, next: Next) -> Response {
    let route = route_label(
        request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let method = method_label(request.method());
    let response = next.run(request).await;
    // A status is a three-digit code by construction: a bounded label.
    let status = response.status().as_str().to_string();
    counter!(names().http_requests_total.clone(), "route" => route, "method" => method, "status" => status).increment(1);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_in_their_fixed_sets() {
        assert_eq!(route_label(Some("/metrics")), "/metrics");
        assert_eq!(route_label(Some("/anything")), "unknown");
        assert_eq!(route_label(None), "unknown");
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }

    #[test]
    fn every_metric_is_present_with_help_and_no_created_series() {
        let (recorder, handle) = recorder();
        let text = metrics::with_local_recorder(&recorder, || {
            let exporter = Exporter::with_handle(handle, "1.2.3", "abc1234");
            Handles::new().retries.increment(2);
            exporter.render()
        });
        let n = names();
        for name in [
            &n.build_info,
            &n.errors_total,
            &n.retries_total,
            &n.ready,
            &n.degraded,
            &n.work_latency_ewma_seconds,
        ] {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no help for {name} in\n{text}"
            );
        }
        assert!(
            text.contains(&format!("{}{{kind=\"persistent\"}} 0", n.errors_total)),
            "{text}"
        );
        assert!(text.contains(&format!("{} 2", n.retries_total)), "{text}");
        assert!(text.contains("version=\"1.2.3\""), "{text}");
        assert!(text.contains("flavour=\"rust\""), "{text}");
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
        assert!(!text.contains("_created"), "{text}");
        assert!(!text.contains("process_threads"), "{text}");
    }
}
