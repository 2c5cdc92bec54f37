//! Health: what `/.well-known/live` and `/.well-known/ready` answer.
//!
//! Live means the main loop's heartbeat is younger than three intervals. Ready means
//! started, not draining, and not degraded beyond use (degraded with no last good value).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;

use crate::metrics::Handles;

const STARTING: u8 = 0;
const RUNNING: u8 = 1;
const DRAINING: u8 = 2;

/// Shared state of the service's health, updated by the main loop and the work.
pub struct Health {
    phase: AtomicU8,
    degraded: AtomicBool,
    has_good_value: AtomicBool,
    /// Unix time of the last heartbeat, in milliseconds.
    last_beat_ms: AtomicU64,
    heartbeat_interval: Duration,
    metrics: Handles,
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Health {
    pub fn new(heartbeat_interval: Duration, metrics: Handles) -> Arc<Self> {
        metrics.ready.set(0.0);
        Arc::new(Self {
            phase: AtomicU8::new(STARTING),
            degraded: AtomicBool::new(false),
            has_good_value: AtomicBool::new(false),
            last_beat_ms: AtomicU64::new(0),
            heartbeat_interval,
            metrics,
        })
    }

    /// Started: ready from now on, unless degraded beyond use.
    pub fn set_running(&self) {
        self.phase.store(RUNNING, Ordering::SeqCst);
        self.publish();
    }

    /// Shutdown started: not ready any more, at once.
    pub fn start_draining(&self) {
        self.phase.store(DRAINING, Ordering::SeqCst);
        self.publish();
    }

    pub fn is_draining(&self) -> bool {
        self.phase.load(Ordering::SeqCst) == DRAINING
    }

    /// The outcome of the last work run.
    pub fn set_degraded(&self, degraded: bool) {
        self.degraded.store(degraded, Ordering::SeqCst);
        self.metrics.degraded.set(if degraded { 1.0 } else { 0.0 });
        self.publish();
    }

    /// A good value exists (fetched now, or kept from an earlier run).
    pub fn set_has_good_value(&self) {
        self.has_good_value.store(true, Ordering::SeqCst);
        self.publish();
    }

    pub fn record_beat(&self, at: SystemTime) {
        self.last_beat_ms.store(unix_millis(at), Ordering::SeqCst);
    }

    /// `Ok` when live at `now`, else the reason.
    pub fn live(&self, now: SystemTime) -> Result<(), &'static str> {
        let last = self.last_beat_ms.load(Ordering::SeqCst);
        let limit = u64::try_from((self.heartbeat_interval * 3).as_millis()).unwrap_or(u64::MAX);
        if last > 0 && unix_millis(now).saturating_sub(last) < limit {
            Ok(())
        } else {
            Err("heartbeat stale")
        }
    }

    /// `Ok` when ready, else the reason: `starting`, `degraded` or `shutting down`.
    pub fn ready(&self) -> Result<(), &'static str> {
        match self.phase.load(Ordering::SeqCst) {
            STARTING => Err("starting"),
            DRAINING => Err("shutting down"),
            _ if self.degraded.load(Ordering::SeqCst)
                && !self.has_good_value.load(Ordering::SeqCst) =>
            {
                Err("degraded")
            }
            _ => Ok(()),
        }
    }

    fn publish(&self) {
        self.metrics
            .ready
            .set(if self.ready().is_ok() { 1.0 } else { 0.0 });
    }
}

fn answer(result: Result<(), &'static str>) -> (StatusCode, &'static str) {
    match result {
        Ok(()) => (StatusCode::OK, "ok"),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

/// `GET /.well-known/live`.
pub async fn live(State(health): State<Arc<Health>>) -> (StatusCode, &'static str) {
    answer(health.live(SystemTime::now()))
}

/// `GET /.well-known/ready`.
pub async fn ready(State(health): State<Arc<Health>>) -> (StatusCode, &'static str) {
    answer(health.ready())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Arc<Health> {
        Health::new(Duration::from_secs(10), Handles::noop())
    }

    #[test]
    fn ready_follows_the_lifecycle() {
        let h = health();
        assert_eq!(h.ready(), Err("starting"));
        h.set_running();
        assert_eq!(h.ready(), Ok(()));
        h.start_draining();
        assert_eq!(h.ready(), Err("shutting down"));
        assert!(h.is_draining());
    }

    #[test]
    fn degraded_without_a_good_value_is_not_ready() {
        let h = health();
        h.set_running();
        h.set_degraded(true);
        assert_eq!(h.ready(), Err("degraded"));
        h.set_has_good_value();
        assert_eq!(h.ready(), Ok(()));
    }

    #[test]
    fn live_needs_a_recent_heartbeat() {
        let h = health();
        let now = SystemTime::now();
        assert_eq!(h.live(now), Err("heartbeat stale"));
        h.record_beat(now);
        assert_eq!(h.live(now + Duration::from_secs(29)), Ok(()));
        assert_eq!(
            h.live(now + Duration::from_secs(30)),
            Err("heartbeat stale")
        );
    }
}
