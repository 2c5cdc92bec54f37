//! What the platform hands the service part: its settings and the platform's facilities.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;

use crate::health::Health;
use crate::metrics::{Handles, Metrics};
use crate::shutdown::Listener;

/// The service part's view of the platform, cloned into each route state and job.
#[derive(Clone)]
pub struct Context {
    /// The service's validated settings (`crate::service::Settings`).
    pub settings: Arc<crate::service::Settings>,
    /// Prefixed counters and gauges with bounded labels, for the service's own metrics.
    pub metrics: Metrics,
    /// The platform's counters: `retries` for [`crate::retry::with_retries`], and the errors.
    pub handles: Handles,
    /// Readiness: a job sets degraded (and whether a good value exists).
    pub health: Arc<Health>,
    /// One HTTP client for every upstream call (connection pooling, rustls, user agent).
    pub client: reqwest::Client,
    /// `paths.data_dir`: created at start, mode 0750.
    pub data_dir: PathBuf,
    /// `paths.tmp_dir`: temporary files.
    pub tmp_dir: PathBuf,
    /// Resolves when shutdown starts: jobs return soon after, within `shutdown.timeout_secs`.
    pub stop: Listener,
}

/// A background task of the service part: started after `ready`, awaited at shutdown.
pub struct Job {
    pub name: &'static str,
    pub task: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Job {
    /// A job that runs `task` once; it should return when `ctx.stop` resolves.
    pub fn new(name: &'static str, task: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            name,
            task: Box::pin(task),
        }
    }
}

/// What the service part gives the platform: its routes and its jobs.
#[derive(Default)]
pub struct Service {
    /// Mounted next to the platform's routes, wrapped by the same layers.
    pub routes: Router,
    pub jobs: Vec<Job>,
}

/// Why the service part could not be built (exit 2).
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;
