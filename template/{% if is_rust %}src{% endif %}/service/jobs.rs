//! The example job: a small, real, replaceable piece of work that shows the patterns in place.
//!
//! Every `work.interval_secs` a run calls the upstream (`GET work.upstream_url`, answer
//! `{"value": <number>}`) with retries, in two stages: [`prepare`] (pure: the parsed body
//! gives Ready or Unprepared) and [`Worker::finalize`] (the side effect: store the value).
//! When a run fails, the last good value stays in use (degraded mode). The latency of
//! successful calls is exported as an EWMA gauge. Runs are bounded by a semaphore.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::{Gauge, Unit};
use reqwest::header::AUTHORIZATION;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::context::{Context, Job};
use crate::errors::{
    ApplicationError, Classify, DomainError, ErrorKind, InfrastructureError, WorkError,
};
use crate::health::Health;
use crate::heartbeat::write_atomically;
use crate::metrics::Handles;
use crate::retry::with_retries;
use crate::shutdown::Listener;

/// Weight of the newest sample in the latency EWMA.
pub const EWMA_ALPHA: f64 = 0.3;
/// Upper bound of one attempt's timeout, whatever the interval.
const MAX_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const LAST_VALUE_FILE: &str = "last_value.json";

/// An exponentially weighted moving average: `new = alpha * value + (1 - alpha) * old`.
#[derive(Debug, Clone, Copy)]
pub struct Ewma {
    alpha: f64,
    value: Option<f64>,
}

impl Ewma {
    pub fn new(alpha: f64) -> Self {
        Self { alpha, value: None }
    }

    /// Adds a sample (the first one is taken as is) and returns the new average.
    pub fn update(&mut self, sample: f64) -> f64 {
        let next = match self.value {
            Some(old) => self.alpha * sample + (1.0 - self.alpha) * old,
            None => sample,
        };
        self.value = Some(next);
        next
    }
}

/// What prepare makes of an upstream answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Prepared {
    Ready(f64),
    Unprepared(String),
}

/// Prepare (pure): a parsed body gives a usable value, or the reason it does not.
pub fn prepare(body: &serde_json::Value) -> Prepared {
    match body.get("value").map(|v| (v, v.as_f64())) {
        Some((_, Some(value))) if value.is_finite() => Prepared::Ready(value),
        Some((raw, _)) => {
            // As the Python flavour shows it: json.dumps' text, at most 40 characters.
            let text = crate::http::json_text(raw).unwrap_or_default();
            let shown: String = String::from_utf8_lossy(&text).chars().take(40).collect();
            Prepared::Unprepared(format!("\"value\" is not a finite number: {shown}"))
        }
        None => {
            Prepared::Unprepared("the answer is not a JSON object with a \"value\"".to_string())
        }
    }
}

/// The last good value, kept in memory and in `<data_dir>/last_value.json`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LastValue {
    pub value: f64,
    pub fetched_at: u64,
}

/// Reads the value kept by an earlier run, if any.
pub fn load_last_value(data_dir: &Path) -> Option<LastValue> {
    let text = std::fs::read(data_dir.join(LAST_VALUE_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Why a request failed: the OS error in its C library words when there is one (the same
/// text as the Python flavour's), else the innermost cause (reqwest's own text omits it).
fn reason(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(inner) = cause.source() {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return crate::errors::os_reason(io);
        }
        cause = inner;
    }
    cause.to_string()
}

/// The upstream and its credential.
pub struct Upstream {
    pub url: String,
    pub token: Option<SecretString>,
}

impl Upstream {
    /// The configured upstream, or `None` when `work.upstream_url` is empty.
    pub fn from_settings(work: &super::settings::Work) -> Option<Self> {
        Some(work.upstream_url.clone())
            .filter(|u| !u.is_empty())
            .map(|url| Upstream {
                url,
                token: work.upstream_token.expose().map(SecretString::from),
            })
    }
}

/// Runs the example work; shared by the scheduler and every run.
pub struct Worker {
    upstream: Option<Upstream>,
    client: reqwest::Client,
    attempt_timeout: Duration,
    data_dir: PathBuf,
    last: Mutex<Option<LastValue>>,
    latency: Mutex<Ewma>,
    latency_gauge: Gauge,
    health: Arc<Health>,
    metrics: Handles,
}

impl Worker {
    pub fn new(
        upstream: Option<Upstream>,
        interval: Duration,
        client: reqwest::Client,
        data_dir: &Path,
        health: Arc<Health>,
        metrics: Handles,
        latency_gauge: Gauge,
    ) -> Self {
        let attempt_timeout = interval.min(MAX_ATTEMPT_TIMEOUT);
        let last = load_last_value(data_dir);
        if last.is_some() {
            health.set_has_good_value();
        }
        Self {
            upstream,
            client,
            attempt_timeout,
            data_dir: data_dir.to_path_buf(),
            last: Mutex::new(last),
            latency: Mutex::new(Ewma::new(EWMA_ALPHA)),
            latency_gauge,
            health,
            metrics,
        }
    }

    /// The worker of the service's settings, with the platform's client, health and metrics.
    pub fn from_context(ctx: &Context) -> Self {
        let work = &ctx.settings.work;
        let latency = ctx.metrics.gauge(
            "work_latency_ewma_seconds",
            Some(Unit::Seconds),
            "Latency of successful upstream calls, smoothed (EWMA, alpha 0.3).",
            &[],
        );
        Self::new(
            Upstream::from_settings(work),
            work.interval(),
            ctx.client.clone(),
            &ctx.data_dir,
            ctx.health.clone(),
            ctx.handles.clone(),
            latency,
        )
    }

    /// The value in use: the last good one.
    pub fn last_value(&self) -> Option<LastValue> {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One attempt: GET, status check, JSON parse. Returns the body and the call's latency.
    async fn fetch_once(
        &self,
        upstream: &Upstream,
    ) -> Result<(serde_json::Value, Duration), WorkError> {
        let started = Instant::now();
        let mut request = self.client.get(&upstream.url).timeout(self.attempt_timeout);
        if let Some(token) = &upstream.token {
            request = request.header(AUTHORIZATION, format!("Bearer {}", token.expose_secret()));
        }
        let response = request.send().await.map_err(|e| self.classify(e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(InfrastructureError::Status(status.as_u16()).into());
        }
        let bytes = response.bytes().await.map_err(|e| self.classify(e))?;
        let body = serde_json::from_slice(&bytes).map_err(|_| DomainError::MalformedBody)?;
        Ok((body, started.elapsed()))
    }

    fn classify(&self, error: reqwest::Error) -> WorkError {
        let error = if error.is_timeout() {
            InfrastructureError::Timeout(self.attempt_timeout.as_secs_f64())
        } else if error.is_connect() {
            InfrastructureError::Connect(reason(&error))
        } else {
            InfrastructureError::Request(reason(&error))
        };
        error.into()
    }

    /// Finalize (the side effect): store the value on disk and in memory.
    fn finalize(&self, value: f64) -> Result<LastValue, WorkError> {
        let fetched_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = LastValue { value, fetched_at };
        let json = crate::http::json_text(&last)
            .map_err(|e| InfrastructureError::Storage(e.to_string()))?;
        write_atomically(&self.data_dir.join(LAST_VALUE_FILE), &json)
            .map_err(|e| InfrastructureError::Storage(e.to_string()))?;
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(last);
        Ok(last)
    }

    /// Fetch with retries, prepare, finalize.
    async fn attempt(&self, upstream: &Upstream) -> Result<LastValue, WorkError> {
        let (body, latency) =
            with_retries(|| self.fetch_once(upstream), &self.metrics.retries).await?;
        let average = self
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .update(latency.as_secs_f64());
        self.latency_gauge.set(average);
        match prepare(&body) {
            Prepared::Ready(value) => self.finalize(value),
            Prepared::Unprepared(reason) => Err(ApplicationError::Unprepared(reason).into()),
        }
    }

    /// One run: records the outcome in health and metrics; a failure keeps the last value.
    #[tracing::instrument(name = "work.run", skip_all)]
    pub async fn run_once(&self) {
        let Some(upstream) = &self.upstream else {
            tracing::debug!("work skipped: no upstream configured");
            return;
        };
        match self.attempt(upstream).await {
            Ok(last) => {
                tracing::debug!(value = last.value, "work done");
                self.health.set_has_good_value();
                self.health.set_degraded(false);
            }
            Err(error) => {
                let kind = error.kind();
                match kind {
                    ErrorKind::Transient => self.metrics.transient_errors.increment(1),
                    ErrorKind::Persistent => self.metrics.persistent_errors.increment(1),
                }
                self.health.set_degraded(true);
                tracing::warn!(kind = kind.as_str(), error = %error, "work failed, using last good value");
            }
        }
    }

    /// Starts a run every `interval` (the first at once) until shutdown; at most `permits`
    /// runs at a time. Returns when shutdown has started; in-flight runs keep their permit.
    pub async fn schedule(
        self: Arc<Self>,
        interval: Duration,
        permits: Arc<Semaphore>,
        stop: Listener,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let permit = tokio::select! {
                biased;
                () = stop.clone().wait() => return,
                permit = async {
                    ticker.tick().await;
                    permits.clone().acquire_owned().await
                } => permit,
            };
            let Ok(permit) = permit else { return };
            let worker = self.clone();
            tokio::spawn(async move {
                worker.run_once().await;
                drop(permit);
            });
        }
    }

    /// The job the platform runs: schedules runs until shutdown, then waits for the runs in
    /// flight (every permit back means every run has finished).
    pub fn job(self: Arc<Self>, interval: Duration, max_concurrency: u16, stop: Listener) -> Job {
        Job::new("work", async move {
            let max = usize::from(max_concurrency);
            let permits = Arc::new(Semaphore::new(max));
            self.schedule(interval, permits.clone(), stop).await;
            let _ = permits
                .acquire_many(u32::try_from(max).unwrap_or(u32::MAX))
                .await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn test_worker(upstream: Option<Upstream>, dir: &Path, health: Arc<Health>) -> Worker {
        Worker::new(
            upstream,
            Duration::from_secs(1),
            reqwest::Client::new(),
            dir,
            health,
            Handles::noop(),
            Gauge::noop(),
        )
    }

    #[test]
    fn the_default_alpha_is_0_3() {
        assert_eq!(EWMA_ALPHA, 0.3);
        let mut ewma = Ewma::new(EWMA_ALPHA);
        ewma.update(10.0);
        assert!((ewma.update(0.0) - 7.0).abs() < 1e-12);
    }

    #[test]
    fn ewma_weights_the_newest_sample_by_alpha() {
        let mut ewma = Ewma::new(0.3);
        assert_eq!(ewma.update(1.0), 1.0);
        assert!((ewma.update(2.0) - 1.3).abs() < 1e-12);
        assert!((ewma.update(2.0) - 1.51).abs() < 1e-12);
    }

    #[test]
    fn prepare_is_ready_only_with_a_finite_number() {
        assert_eq!(prepare(&json!({"value": 42})), Prepared::Ready(42.0));
        assert_eq!(
            prepare(&json!({"value": 1.5, "extra": true})),
            Prepared::Ready(1.5)
        );
        assert!(matches!(
            prepare(&json!({"value": "42"})),
            Prepared::Unprepared(_)
        ));
        assert!(matches!(
            prepare(&json!({"other": 1})),
            Prepared::Unprepared(_)
        ));
        assert!(matches!(prepare(&json!([1, 2])), Prepared::Unprepared(_)));
    }

    #[test]
    fn the_last_value_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let health = Health::new(Duration::from_secs(1), Handles::noop());
        let worker = test_worker(None, dir.path(), health.clone());
        assert_eq!(worker.last_value(), None);
        let stored = worker.finalize(42.0).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LAST_VALUE_FILE)).unwrap();
        assert!(
            text.starts_with("{\"value\": 42.0, \"fetched_at\": "),
            "{text}"
        );
        assert_eq!(load_last_value(dir.path()), Some(stored));
        let again = test_worker(None, dir.path(), health);
        assert_eq!(again.last_value(), Some(stored));
    }

    #[tokio::test]
    async fn an_unreachable_upstream_degrades_the_service() {
        let dir = tempfile::tempdir().unwrap();
        let health = Health::new(Duration::from_secs(1), Handles::noop());
        health.set_running();
        // A port nobody listens on: the connection is refused at once, a transient error.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/value", closed.local_addr().unwrap());
        drop(closed);
        let upstream = Upstream { url, token: None };
        let worker = test_worker(Some(upstream), dir.path(), health.clone());
        tokio::time::pause();
        worker.run_once().await;
        assert_eq!(health.ready(), Err("degraded"));
        assert_eq!(worker.last_value(), None);
    }
}
