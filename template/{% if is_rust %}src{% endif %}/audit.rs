//! Audit lines: security-relevant events, in their own file (`paths.audit_file`).
//!
//! The log's line format with `AUDIT` in place of the level, kept longer than the log (its
//! own logrotate rule), reopened on SIGHUP like the log file:
//!
//! `Nov 05 15:30:45.234 AUDIT start version=0.1.0 pid=4242 config_sha256=3f2a9c81d0e4`
//!
//! Events: `start` (version, digest of the effective configuration, secrets redacted),
//! `secrets file read` (path and mode, never the content), `reload` (SIGHUP),
//! `certificate reloaded` / `certificate reload failed`, `access refused` (a 401 or 403
//! answered by one of the service's own routes: method, route, status, peer) and
//! `shutdown` (its signal). Lines are written from anywhere through [`record`]; before
//! [`open`], [`record`] writes nothing.

use std::fmt::Display;
use std::io;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use time::OffsetDateTime;

use crate::logging::{LogFile, timestamp, write_value};

/// The marker in place of the level.
pub const MARKER: &str = "AUDIT";

static FILE: Mutex<Option<LogFile>> = Mutex::new(None);

fn current() -> Option<LogFile> {
    FILE.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Opens (appending) the audit file, creating its directory if missing.
pub fn open(path: &Path) -> io::Result<()> {
    let file = LogFile::open(path)?;
    *FILE.lock().unwrap_or_else(PoisonError::into_inner) = Some(file);
    Ok(())
}

/// Opens the path again (after logrotate moved the old file away).
pub fn reopen() {
    if let Some(file) = current()
        && let Err(e) = file.reopen()
    {
        tracing::error!(path = %file.path().display(), error = %e, "cannot reopen the audit file");
    }
}

/// One audit line, `message` then the `key=value` pairs (nothing when no file is open).
pub fn record(message: &str, fields: &[(&str, &dyn Display)]) {
    let Some(file) = current() else {
        return;
    };
    let mut line = format!(
        "{} {MARKER} {message}",
        timestamp(OffsetDateTime::now_utc())
    );
    for (key, value) in fields {
        line.push(' ');
        line.push_str(key);
        line.push('=');
        write_value(&mut line, &value.to_string());
    }
    line.push('\n');
    if let Err(e) = file.write_line(line.as_bytes(), || {}) {
        tracing::error!(path = %file.path().display(), error = %e, "cannot write the audit file");
    }
}
