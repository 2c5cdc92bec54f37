//! Logging: one line per event, the same bytes on stderr and in the log file.
//!
//! `Nov 05 15:30:45.234 INFO listening addr=127.0.0.1:8080`: UTC time with English month
//! names, the level, the message, then `key=value` pairs. The log file is opened in append
//! mode and reopened on SIGHUP, so that logrotate loses no line.

use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use time::OffsetDateTime;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{EnvFilter, ParseError};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

/// The values of `log.target`: where lines go.
pub const TARGETS: [&str; 3] = ["file", "stderr", "both"];

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parses a filter in `RUST_LOG` syntax (`info`, `module::path=debug,info`).
pub fn parse_filter(text: &str) -> Result<EnvFilter, ParseError> {
    EnvFilter::builder().parse(text)
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a filter against the grammar both flavours accept: comma-separated directives,
/// each a level or `module=level`, a module being a path of identifiers joined by `::` or
/// `.`. The error quotes the first bad directive.
pub fn check_filter(text: &str) -> Result<(), String> {
    let mut directives = text
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .peekable();
    if directives.peek().is_none() {
        return Err("the filter is empty".to_string());
    }
    for directive in directives {
        let (module, level) = match directive.rsplit_once('=') {
            Some((module, level)) => (Some(module.trim()), level.trim()),
            None => (None, directive),
        };
        let level_ok = LEVELS.contains(&level.to_ascii_lowercase().as_str());
        let module_ok = match module {
            Some(module) => is_module_path(module),
            None => true,
        };
        if !(level_ok && module_ok) {
            let quoted = directive.replace('\\', "\\\\").replace('"', "\\\"");
            return Err(format!("\"{quoted}\" is not a valid directive"));
        }
    }
    Ok(())
}

fn is_module_path(module: &str) -> bool {
    module.replace("::", ".").split('.').all(|name| {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// `Nov 05 15:30:45.234`, always UTC, month names in English whatever the locale.
pub fn timestamp(at: OffsetDateTime) -> String {
    let month = MONTHS[usize::from(u8::from(at.month())) - 1];
    format!(
        "{month} {:02} {:02}:{:02}:{:02}.{:03}",
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// The text with the `user:password@` of every URL in it replaced by `[redacted]@`: the
/// credentials never reach a log line, an error or `check-config`.
pub fn redact_urls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('@') || !text.contains("://") {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The scheme: a letter, then letters, digits, `+`, `-`, `.`, right before `://`.
        let scheme_start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c)))
            .map_or(0, |i| i + 1);
        let scheme = &rest[scheme_start..at];
        let authority = &rest[at + 3..];
        let end = authority
            .find(|c: char| "/?#".contains(c) || c.is_whitespace())
            .unwrap_or(authority.len());
        // The userinfo ends at the authority's last `@`: a password may hold an `@` unescaped.
        let userinfo = authority[..end].rfind('@').filter(|&at| at > 0);
        out.push_str(&rest[..at + 3]);
        if let Some(userinfo) =
            userinfo.filter(|_| scheme.starts_with(|c: char| c.is_ascii_alphabetic()))
        {
            out.push_str(crate::config::REDACTED);
            rest = &authority[userinfo..];
        } else {
            rest = authority;
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// Writes a pair's value, quoted when it is empty or holds a space, `=`, `"` or a control
/// character; inside quotes `\"`, `\\`, `\n`, `\t` are escaped. URL credentials are
/// redacted.
pub fn write_value(out: &mut String, value: &str) {
    let value = &*redact_urls(value);
    let needs_quotes = value.is_empty()
        || value
            .chars()
            .any(|c| c == ' ' || c == '=' || c == '"' || c.is_control());
    if !needs_quotes {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Collects an event's message and its `key=value` pairs.
#[derive(Default)]
struct Pairs {
    message: String,
    pairs: String,
}

impl Visit for Pairs {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.pairs.push(' ');
            self.pairs.push_str(field.name());
            self.pairs.push('=');
            write_value(&mut self.pairs, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    /// `30` for 30.0, `0.5` for 0.5: as the Python flavour writes a float.
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record_str(field, &crate::errors::number(value));
    }
}

/// The contract's line format.
pub struct LineFormat;

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Pairs::default();
        event.record(&mut fields);
        let level = event.metadata().level();
        let stamp = timestamp(OffsetDateTime::now_utc());
        writeln!(writer, "{stamp} {level} {}{}", fields.message, fields.pairs)
    }
}

/// The log file, shared by every writer and swapped in place on SIGHUP.
#[derive(Clone)]
pub struct LogFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl LogFile {
    /// Opens (appending) the log file, creating its directory if missing.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = Self::open_file(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(file)),
        })
    }

    fn open_file(path: &Path) -> io::Result<File> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        OpenOptions::new().create(true).append(true).open(path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the path again (after logrotate moved the old file away).
    pub fn reopen(&self) -> io::Result<()> {
        let fresh = Self::open_file(&self.path)?;
        *self.file.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// Writes the line to the file, then calls `also` while still holding the file's lock.
    pub(crate) fn write_line(&self, line: &[u8], also: impl FnOnce()) -> io::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let written = file.write_all(line);
        also();
        written
    }
}

/// Where lines go: stderr and the log file (either may be left out, e.g. in tests).
#[derive(Clone)]
pub struct Sink {
    stderr: bool,
    file: Option<LogFile>,
}

impl Sink {
    pub fn new(stderr: bool, file: Option<LogFile>) -> Self {
        Self { stderr, file }
    }
}

/// A writer for one event: the formatter hands it one whole line in one `write_all`.
pub struct SinkWriter<'a> {
    sink: &'a Sink,
}

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A closed stderr must not lose the line that the file got.
        let to_stderr = || {
            if self.sink.stderr {
                let _ = io::stderr().lock().write_all(buf);
            }
        };
        // The file first: whoever sees a line on stderr finds it in the file already. Both
        // under the file's lock, so that threads logging at once leave their lines in the
        // same order on stderr and in the file.
        if let Some(file) = &self.sink.file {
            if file.write_line(buf, to_stderr).is_err() {
                // Disk full: the line is lost from the file (stderr has it), counted and
                // reported at most once per interval; the service goes on.
                crate::limits::log_write_failed(file.path());
            }
        } else {
            to_stderr();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter { sink: self }
    }
}

/// A layer that any other module may add (OpenTelemetry export, for one).
pub type ExtraLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the global subscriber: `filter` (already validated) decides what reaches `sink`.
pub fn init(filter_text: &str, sink: Sink, extra: Vec<ExtraLayer>) -> Result<(), String> {
    let filter = parse_filter(filter_text)
        .map_err(|e| format!("invalid log filter {filter_text:?}: {e}"))?;
    let lines = tracing_subscriber::fmt::layer()
        .event_format(LineFormat)
        .with_writer(sink)
        .with_filter(filter)
        .boxed();
    let mut layers: Vec<ExtraLayer> = vec![lines];
    // The same filter for every other layer: what is not logged is not exported either.
    for layer in extra {
        let filter = parse_filter(filter_text).map_err(|e| e.to_string())?;
        layers.push(layer.with_filter(filter).boxed());
    }
    tracing::subscriber::set_global_default(Registry::default().with(layers))
        .map_err(|e| e.to_string())
}

/// Logs a panic as `CRITICAL uncaught error` and exits with `exit_code`, whichever thread
/// panicked (Tokio would otherwise catch a task's panic and keep running without it).
///
/// A panic inside a request handler is the exception: [`crate::http`] catches it, answers
/// 500 and logs `request failed`; the hook only records its message for that line.
pub fn install_panic_hook(exit_code: i32) {
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("panic");
        let error = match info.location() {
            Some(at) => format!("{message} at {}:{}", at.file(), at.line()),
            None => message.to_string(),
        };
        if crate::http::in_handler() {
            crate::http::record_panic(error);
            return;
        }
        tracing::error!(error = %error, "CRITICAL uncaught error");
        std::process::exit(exit_code);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn quoted(value: &str) -> String {
        let mut out = String::new();
        write_value(&mut out, value);
        out
    }

    #[test]
    fn url_credentials_never_reach_a_line() {
        assert_eq!(
            redact_urls("cannot reach https://me:pw@host:8/x and ftp://u@h"),
            "cannot reach https://[redacted]@host:8/x and ftp://[redacted]@h"
        );
        assert_eq!(redact_urls("http://host/a@b"), "http://host/a@b");
        assert_eq!(
            redact_urls("http://user:p@ss@host/x"),
            "http://[redacted]@host/x"
        );
        assert_eq!(redact_urls("me@example.com"), "me@example.com");
        assert_eq!(quoted("http://u:p@h/"), "http://[redacted]@h/");
    }

    #[test]
    fn timestamp_is_utc_with_english_month() {
        assert_eq!(
            timestamp(datetime!(2026-11-05 15:30:45.234 UTC)),
            "Nov 05 15:30:45.234"
        );
        assert_eq!(
            timestamp(datetime!(2026-01-09 03:04:05.006 UTC)),
            "Jan 09 03:04:05.006"
        );
    }

    #[test]
    fn values_are_quoted_only_when_needed() {
        assert_eq!(quoted("balance"), "balance");
        assert_eq!(quoted("127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(quoted(""), "\"\"");
        assert_eq!(quoted("two words"), "\"two words\"");
        assert_eq!(quoted("a=b"), "\"a=b\"");
        assert_eq!(quoted("say \"hi\"\\"), "\"say \\\"hi\\\"\\\\\"");
        assert_eq!(quoted("line\nnext\tcol"), "\"line\\nnext\\tcol\"");
    }

    #[test]
    fn lines_reach_the_file_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/svc.log");
        let file = LogFile::open(&path).unwrap();
        let sink = Sink::new(false, Some(file.clone()));
        let subscriber = Registry::default().with(
            tracing_subscriber::fmt::layer()
                .event_format(LineFormat)
                .with_writer(sink),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(key = "account", value = "two words", "Liquidating stake");
            std::fs::rename(&path, dir.path().join("log/svc.log.1")).unwrap();
            file.reopen().unwrap();
            tracing::warn!(n = 3, "after rotation");
        });
        let rotated = std::fs::read_to_string(dir.path().join("log/svc.log.1")).unwrap();
        let line = rotated.lines().next().unwrap();
        assert!(
            line.ends_with(" INFO Liquidating stake key=account value=\"two words\""),
            "{line}"
        );
        assert_eq!(
            line.len(),
            "Nov 05 15:30:45.234".len()
                + " INFO Liquidating stake key=account value=\"two words\"".len()
        );
        let fresh = std::fs::read_to_string(&path).unwrap();
        assert!(fresh.ends_with(" WARN after rotation n=3\n"), "{fresh}");
    }

    #[test]
    fn filters_use_rust_log_syntax() {
        assert!(parse_filter("info").is_ok());
        assert!(parse_filter("my_crate::work=debug,info").is_ok());
        assert!(parse_filter("a=b=c").is_err());
    }
}
