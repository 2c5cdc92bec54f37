//! Exhaustion and hostile traffic: warnings at most once per interval per kind, and their
//! counter.
//!
//! When the process runs out of something (file descriptors, its connection cap, room for
//! the log file), or clients keep sending requests the parser refuses, the condition repeats
//! as fast as the clients can make it. Each kind of condition is logged at most once per
//! [`WARN_INTERVAL`]; the line says how many were left out since the previous one:
//!
//! ```text
//! WARN out of file descriptors kind=file_descriptors suppressed=4521
//! ```
//!
//! Every occurrence is counted, logged or not: `<prefix>exhaustion_total{kind}` for the
//! kinds of [`EXHAUSTION_KINDS`], `http_requests_total{route="unknown"}` for rejected
//! requests.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::logging::{timestamp, write_value};
use crate::metrics::names;

/// A kind of condition is logged at most once per this long.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// What `exhaustion_total` counts: no file descriptor left (accept, the heartbeat file), the
/// connection cap reached (a new connection waits), the log file not writable (disk full).
pub const EXHAUSTION_KINDS: [&str; 3] = ["file_descriptors", "connections", "log_write"];

/// Says, per key, whether a line may be logged now, and how many were suppressed since.
#[derive(Default)]
pub struct RateLimited {
    keys: HashMap<&'static str, (Instant, u64)>,
}

impl RateLimited {
    /// `None` when the line of `key` must be left out; else the count left out before it.
    pub fn allow(&mut self, key: &'static str, now: Instant, interval: Duration) -> Option<u64> {
        match self.keys.get_mut(key) {
            Some((next, suppressed)) if now < *next => {
                *suppressed += 1;
                None
            }
            _ => {
                let previous = self.keys.insert(key, (now + interval, 0));
                Some(previous.map_or(0, |(_, suppressed)| suppressed))
            }
        }
    }
}

static WARNINGS: Mutex<Option<RateLimited>> = Mutex::new(None);

/// Whether the line of `key` may be logged now: the count suppressed before it, or `None`.
pub fn allow(key: &'static str) -> Option<u64> {
    let mut warnings = WARNINGS.lock().unwrap_or_else(PoisonError::into_inner);
    warnings
        .get_or_insert_with(RateLimited::default)
        .allow(key, Instant::now(), WARN_INTERVAL)
}

fn count(kind: &'static str) {
    metrics::counter!(names().exhaustion_total.clone(), "kind" => kind).increment(1);
}

/// The text of an OS error without Rust's ` (os error N)` suffix, as the Python flavour
/// writes it.
pub fn error_text(error: &io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Whether an OS error means that no file descriptor is left (EMFILE, ENFILE).
pub fn out_of_fds(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Whether an accept error means that the system lacks memory for a connection.
pub fn out_of_memory(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOBUFS | libc::ENOMEM))
}

/// No file descriptor left: counted, logged at most once per interval.
pub fn file_descriptors_exhausted() {
    count("file_descriptors");
    if let Some(suppressed) = allow("exhaustion:file_descriptors") {
        tracing::warn!(
            kind = "file_descriptors",
            suppressed,
            "out of file descriptors"
        );
    }
}

/// The connection cap is reached (or the system refuses one more): counted, logged at most
/// once per interval.
pub fn connections_exhausted(max_connections: usize) {
    count("connections");
    if let Some(suppressed) = allow("exhaustion:connections") {
        tracing::warn!(
            kind = "connections",
            max_connections,
            suppressed,
            "connection limit reached"
        );
    }
}

/// A log line could not be written to the file: counted, and reported on stderr (the file
/// is what fails) at most once per interval.
pub fn log_write_failed(path: &std::path::Path) {
    count("log_write");
    if let Some(suppressed) = allow("exhaustion:log_write") {
        let mut line = format!(
            "{} WARN cannot write the log file kind=log_write path=",
            timestamp(time::OffsetDateTime::now_utc())
        );
        let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        write_value(&mut line, &shown.display().to_string());
        line.push_str(&format!(" suppressed={suppressed}\n"));
        let _ = io::stderr().lock().write_all(line.as_bytes());
    }
}

/// A request refused before routing (400, 414, 431): logged at most once per interval.
pub fn rejected(status: u16) {
    if let Some(suppressed) = allow("rejected") {
        tracing::warn!(status, suppressed, "request rejected");
    }
}

/// A connection closed by a deadline (`header_timeout`, `write_timeout`): logged at most
/// once per interval per reason.
pub fn closed(reason: &'static str) {
    let key = match reason {
        "header_timeout" => "closed:header_timeout",
        "write_timeout" => "closed:write_timeout",
        _ => "closed:other",
    };
    if let Some(suppressed) = allow(key) {
        tracing::warn!(reason, suppressed, "connection closed");
    }
}

/// accept(2) failed for another reason: logged at most once per interval.
pub fn accept_failed(error: &io::Error) {
    if let Some(suppressed) = allow("accept") {
        tracing::warn!(error = %error_text(error), suppressed, "cannot accept a connection");
    }
}

/// The heartbeat file could not be written: logged at ERROR at most once per interval.
pub fn heartbeat_failed(error: &io::Error) {
    if out_of_fds(error) {
        file_descriptors_exhausted();
    }
    if let Some(suppressed) = allow("heartbeat") {
        tracing::error!(error = %error_text(error), suppressed, "cannot write the heartbeat file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_logged_once_per_interval_with_the_count_left_out() {
        let mut limiter = RateLimited::default();
        let start = Instant::now();
        let interval = Duration::from_secs(10);
        assert_eq!(limiter.allow("a", start, interval), Some(0));
        assert_eq!(
            limiter.allow("a", start + Duration::from_secs(1), interval),
            None
        );
        assert_eq!(
            limiter.allow("a", start + Duration::from_secs(2), interval),
            None
        );
        assert_eq!(
            limiter.allow("b", start + Duration::from_secs(2), interval),
            Some(0)
        );
        assert_eq!(
            limiter.allow("a", start + Duration::from_secs(10), interval),
            Some(2)
        );
    }

    #[test]
    fn os_errors_read_as_in_the_python_flavour() {
        let error = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(error_text(&error), "Too many open files");
        assert!(out_of_fds(&error));
    }
}
