//! The service's own configuration sections: one struct per section, each key stated once
//! (its default in `Default`, its rule in a `validator` attribute). The platform loads them
//! through the same layers as its own keys: `[work]` in `cfg/config.toml`, the secrets
//! file, and `<SVC>_WORK__<KEY>` variables; check-config lists them.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::config::{Secret, rules};

/// Every section of the service, one field each.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    #[validate(nested)]
    pub work: Work,
}

/// `[work]`: the example job.
#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct Work {
    /// Seconds between runs.
    #[validate(range(
        exclusive_min = 0.0,
        message = "a number of seconds > 0 (fractions allowed)"
    ))]
    pub interval_secs: f64,
    /// Runs at a time.
    #[validate(range(min = 1, max = 1024))]
    pub max_concurrency: u16,
    /// An http(s) URL answering `{"value": <number>}`; empty disables the upstream call.
    #[validate(custom(function = "rules::optional_http_url"))]
    pub upstream_url: String,
    /// Sent as `Authorization: Bearer <token>`.
    pub upstream_token: Secret,
}

impl Default for Work {
    fn default() -> Self {
        Self {
            interval_secs: 60.0,
            max_concurrency: 4,
            upstream_url: String::new(),
            upstream_token: Secret::default(),
        }
    }
}

impl Work {
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.interval_secs)
    }
}
