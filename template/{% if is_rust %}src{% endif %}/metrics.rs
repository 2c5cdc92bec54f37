//! Metrics: the Prometheus registry, the fixed metric names and the request counter.
//!
//! Every name carries the service's prefix (`order_router_`), except the process metrics,
//! which keep their usual names so that stock dashboards work. No label value ever comes
//! from a client unchecked: routes and methods outside their fixed sets become `unknown`
//! and `other`.

use std::sync::OnceLock;

use axum::extract::MatchedPath;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Gauge, Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::config::snake_name;

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
    pub exhaustion_total: String,
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
            exhaustion_total: format!("{p}_exhaustion_total"),
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
        "Failed jobs and requests, by error kind (transient or persistent)"
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
        "1 when the service runs degraded (its last job run failed), else 0"
    );
    describe_counter!(
        n.exhaustion_total.clone(),
        "Times a resource ran out (file descriptors, the connection cap, the log file's disk), by kind"
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
    for kind in crate::limits::EXHAUSTION_KINDS {
        counter!(n.exhaustion_total.clone(), "kind" => kind).absolute(0);
    }
    gauge!(n.ready.clone()).set(0.0);
    gauge!(n.degraded.clone()).set(0.0);
}

/// Handles on the gauges and counters the other modules update.
#[derive(Clone)]
pub struct Handles {
    pub ready: Gauge,
    pub degraded: Gauge,
    pub heartbeat: Gauge,
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

/// The exporter, rendered on each scrape with the process metrics.
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
}

/// The four process metrics of the contract, read from `/proc` (at most once a second) and
/// rendered as the Prometheus client libraries do.
///
/// Hand-written: the metrics-process crate pulls procfs and rustix (a tenth of the cold
/// build), reports CPU time in whole seconds (`metrics` counters are integers) and adds
/// series that the contract does not list; these are four small reads of `/proc`.
pub mod process {
    use std::fmt::Write as _;
    use std::sync::{Mutex, PoisonError};
    use std::time::{Duration, Instant};

    /// `sysconf(_SC_CLK_TCK)`: the unit of the times in `/proc/self/stat`.
    fn ticks_per_second() -> f64 {
        // SAFETY: sysconf only reads a constant of the C library; it has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if ticks > 0 { ticks as f64 } else { 100.0 }
    }

    /// The fields of `/proc/self/stat` after the command name, which may hold spaces.
    fn stat_fields(stat: &str) -> Vec<&str> {
        stat.rsplit_once(')')
            .map_or_else(Vec::new, |(_, rest)| rest.split_whitespace().collect())
    }

    /// (CPU seconds, start time as Unix seconds) from `/proc/self/stat` and `/proc/stat`.
    pub fn cpu_and_start(stat: &str, system_stat: &str, ticks: f64) -> Option<(f64, f64)> {
        let fields = stat_fields(stat);
        // Fields are numbered from 1 in proc(5); `fields[0]` is field 3, the state.
        let number = |field: usize| fields.get(field - 3)?.parse::<f64>().ok();
        let cpu = (number(14)? + number(15)?) / ticks;
        let boot = system_stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse::<f64>()
            .ok()?;
        Some((cpu, boot + number(22)? / ticks))
    }

    /// Resident memory in bytes, from the `VmRSS:` line of `/proc/self/status` (in kB).
    pub fn resident_bytes(status: &str) -> Option<f64> {
        let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
        Some(
            kb.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()?
                * 1024.0,
        )
    }

    fn family(out: &mut String, name: &str, kind: &str, help: &str, value: Option<f64>) {
        if let Some(value) = value {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
            );
        }
    }

    /// How long one reading of `/proc` serves scrapes. Reading it costs most of a scrape
    /// (listing `/proc/self/fd` alone is a sixth of the CPU: measured with perf under wrk),
    /// while Prometheus scrapes every few seconds: a value at most 1 s old loses nothing.
    const FRESH_FOR: Duration = Duration::from_secs(1);
    static LAST: Mutex<Option<(Instant, String)>> = Mutex::new(None);

    /// The process metrics in the Prometheus text format, read at most once per `FRESH_FOR`.
    pub fn render() -> String {
        let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
        match &*last {
            Some((read_at, text)) if read_at.elapsed() < FRESH_FOR => text.clone(),
            _ => {
                let text = read();
                *last = Some((Instant::now(), text.clone()));
                text
            }
        }
    }

    /// Reads the process metrics now; a metric that cannot be read (not Linux, `/proc` not
    /// mounted) is left out.
    fn read() -> String {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let (cpu, start) = cpu_and_start(
            &read("/proc/self/stat"),
            &read("/proc/stat"),
            ticks_per_second(),
        )
        .unzip();
        let fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as f64);
        let mut out = String::new();
        family(
            &mut out,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            cpu,
        );
        family(
            &mut out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            resident_bytes(&read("/proc/self/status")),
        );
        family(
            &mut out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds,
        );
        family(
            &mut out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            start,
        );
        out
    }
}

impl Exporter {
    /// Installs the global recorder, once per process.
    pub fn install(version: &str, commit: &str) -> Result<Self, String> {
        let handle = PrometheusBuilder::new()
            .install_recorder()
            .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
        Ok(Self::with_handle(handle, version, commit))
    }

    /// Registers every metric with the current recorder, whose handle renders them.
    pub fn with_handle(handle: PrometheusHandle, version: &str, commit: &str) -> Self {
        register(version, commit);
        Self { handle }
    }

    /// The Prometheus text for a scrape.
    pub fn render(&self) -> String {
        let mut text = self.handle.render();
        text.push_str(&process::render());
        text
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

/// The `route` label: the template of the route that matched (a fixed set: the routes the
/// router declares), else `unknown`.
pub fn route_label(matched: Option<&MatchedPath>) -> String {
    matched.map_or_else(|| "unknown".to_string(), |m| m.as_str().to_string())
}

/// The `method` label: one of the fixed set, else `other`.
pub fn method_label(method: &Method) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method.as_str())
        .copied()
        .unwrap_or("other")
}

/// Counts one answered request (see `crate::http::wrap`).
pub fn count_request(route: String, method: &'static str, status: StatusCode) {
    // A status is a three-digit code by construction: a bounded label.
    let status = status.as_str().to_string();
    counter!(names().http_requests_total.clone(), "route" => route, "method" => method, "status" => status).increment(1);
}

/// The service part's own metrics: every name gets the service's prefix (`order_router_`),
/// label values are `&'static str`, a fixed set by construction.
#[derive(Clone, Default)]
pub struct Metrics;

impl Metrics {
    fn name(name: &str) -> String {
        format!("{}_{name}", snake_name())
    }

    /// A counter `<prefix>_<name>` with fixed labels, e.g.
    /// `ctx.metrics.counter("orders_total", "Orders taken", &[("desk", "fx")])`.
    pub fn counter(
        &self,
        name: &str,
        help: &'static str,
        labels: &[(&'static str, &'static str)],
    ) -> Counter {
        let name = Self::name(name);
        describe_counter!(name.clone(), help);
        let counter = counter!(name, labels);
        counter.increment(0); // listed from the start, at 0; a second call keeps the count
        counter
    }

    /// A gauge `<prefix>_<name>` with fixed labels; `unit` shows in its help.
    pub fn gauge(
        &self,
        name: &str,
        unit: Option<Unit>,
        help: &'static str,
        labels: &[(&'static str, &'static str)],
    ) -> Gauge {
        let name = Self::name(name);
        match unit {
            Some(unit) => describe_gauge!(name.clone(), unit, help),
            None => describe_gauge!(name.clone(), help),
        }
        let gauge = gauge!(name, labels);
        gauge.increment(0.0); // listed from the start, at 0; a second call keeps the value
        gauge
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_metrics_are_read_from_proc_texts() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1000 0 0";
        let (cpu, start) =
            process::cpu_and_start(stat, "cpu  1 2 3\nbtime 1764250000\n", 100.0).unwrap();
        assert!((cpu - 3.0).abs() < 1e-9, "{cpu}");
        assert!((start - 1_764_250_010.0).abs() < 1e-9, "{start}");
        let status = "Name:\tsvc\nVmRSS:\t    5632 kB\nThreads:\t1\n";
        assert_eq!(process::resident_bytes(status), Some(5632.0 * 1024.0));
        assert_eq!(process::resident_bytes("Name: x\n"), None);
    }

    #[test]
    fn labels_stay_in_their_fixed_sets() {
        assert_eq!(route_label(None), "unknown");
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }

    #[test]
    fn every_metric_is_present_with_help_and_no_created_series() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let text = metrics::with_local_recorder(&recorder, || {
            let exporter = Exporter::with_handle(handle, "1.2.3", "abc1234");
            Handles::new().retries.increment(2);
            Metrics
                .counter("orders_total", "Orders taken", &[("desk", "fx")])
                .increment(3);
            exporter.render()
        });
        let n = names();
        for name in [
            &n.build_info,
            &n.errors_total,
            &n.retries_total,
            &n.ready,
            &n.degraded,
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
        let p = snake_name();
        assert!(
            text.contains(&format!("# HELP {p}_orders_total Orders taken")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{p}_orders_total{{desk=\"fx\"}} 3")),
            "{text}"
        );
        assert!(text.contains("version=\"1.2.3\""), "{text}");
        assert!(text.contains("flavour=\"rust\""), "{text}");
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
        assert!(!text.contains("_created"), "{text}");
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter"),
            "{text}"
        );
    }
}
