//! The service's own configuration sections.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Work {
    pub interval_secs: f64,
    pub max_concurrency: u16,
    pub upstream_url: String,
    /// Typed as a secret: its Debug prints `[REDACTED]`, it has no Display.
    pub upstream_token: SecretString,
}

impl Work {
    /// The upstream token, or `None` when it is empty.
    pub fn token(&self) -> Option<&str> {
        Some(self.upstream_token.expose_secret()).filter(|t| !t.is_empty())
    }
}
