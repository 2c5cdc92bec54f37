//! Configuration: three layers, validated key by key before anything starts.
//!
//! 1. the base file (`--config`, default `cfg/config.toml`),
//! 2. the secrets file `${PREFIX}/key/env.toml` (optional, mode 0600 or stricter),
//! 3. environment variables `<SVC>_<SECTION>__<KEY>`, e.g. for a service named
//!    `order-router`: `ORDER_ROUTER_HTTP__PORT=9000` sets `http.port`;
//!    `APM_URL` sets `apm.url` and `RUST_LOG` sets `log.filter`.
//!
//! Each key is stated once, on its section's struct: the default in `Default`, the rule in a
//! `validator` attribute (`#[validate(range(min = 1, max = 1024))]`). The platform's sections
//! live here, the service's in `crate::service::Settings`; both load the same way. Every
//! value a layer sets is checked on its own (deserialized and validated with every other
//! key at its default), so that *every* error is reported at once, one line each, naming
//! the key and the layer: `config error: http.port (env ORDER_ROUTER_HTTP__PORT): 70000 is
//! out of range; allowed 1-65535 (0 picks a free port)`. A rule's `message` is the text after
//! `allowed`. TOML types are kept: `port = "9000"` is an error, not 9000.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use toml::{Table, Value};
use validator::{Validate, ValidationError, ValidationErrors, ValidationErrorsKind};

use crate::logging::redact_urls;

/// The service's name in kebab case, from Cargo.toml: `order-router`.
pub const SERVICE_NAME: &str = env!("CARGO_PKG_NAME");
/// Default of `http.port`: the port chosen when the project was generated.
const DEFAULT_HTTP_PORT: &str = env!("DEFAULT_HTTP_PORT");
/// Where the secrets file lives below `PREFIX`.
const SECRETS_FILE: &str = "key/env.toml";
const DEFAULT_PREFIX: &str = "/srv";
/// What the PEM file keys allow.
pub const PEM_ALLOWED: &str = "a path to a PEM file, or empty (${PREFIX} is expanded)";
/// The keys holding paths outside `[paths]`, whose `${PREFIX}` is expanded too.
const PATH_KEYS: &[&str] = &[
    "http.tls_cert_file",
    "http.tls_key_file",
    "http.client_ca_file",
];
/// How a secret, or the user:password of a URL, is shown.
pub const REDACTED: &str = "[redacted]";
/// Platform sections listed after the service's (the contract's key order).
const LAST_SECTIONS: &[&str] = &["apm"];

/// `order-router` -> `order_router` (metric prefix, module paths).
pub fn snake_name() -> String {
    SERVICE_NAME.replace('-', "_")
}

/// `order-router` -> `ORDER_ROUTER_` (environment variable prefix).
pub fn env_prefix() -> String {
    format!("{}_", snake_name().to_uppercase())
}

/// A secret setting: never printed, logged or exported. `Debug` and `check-config` show
/// `[redacted]` (or `""` when unset); [`Secret::expose`] gives the value to the code that
/// needs it.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl Secret {
    /// The value, or `None` when it is empty.
    pub fn expose(&self) -> Option<&str> {
        Some(self.0.expose_secret()).filter(|s| !s.is_empty())
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(SecretString::from(value))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.expose().is_some() {
            REDACTED
        } else {
            ""
        })
    }
}

/// Serializes as `[redacted]` (or empty): how `check-config` shows it, and how the loader
/// tells a secret key from a plain string.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.expose().is_some() {
            REDACTED
        } else {
            ""
        })
    }
}

/// Rules for `#[validate(custom(function = ...))]` that the `validator` crate lacks. Each
/// error's message is what is allowed; its `what` parameter says what is wrong, `{value}`
/// standing for the value as written (redacted where needed).
pub mod rules {
    use std::path::Path;

    use validator::ValidationError;

    fn error(code: &'static str, what: &str, allowed: &'static str) -> ValidationError {
        let mut error = ValidationError::new(code).with_message(allowed.into());
        error.add_param("what".into(), &what);
        error
    }

    /// An IP address, or a host name of dot-separated labels (letters, digits, inner hyphens).
    pub fn host(text: &str) -> Result<(), ValidationError> {
        let label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if text.parse::<std::net::IpAddr>().is_ok()
            || (text.len() <= 253 && text.split('.').all(label))
        {
            return Ok(());
        }
        Err(error(
            "host",
            "{value} is not an IP address or host name",
            "an IP address or host name",
        ))
    }

    /// A non-empty path; `${PREFIX}` is expanded at load.
    pub fn path(path: &Path) -> Result<(), ValidationError> {
        if path.as_os_str().to_string_lossy().trim().is_empty() {
            return Err(error(
                "path",
                "the path is empty",
                "a non-empty path (${PREFIX} is expanded)",
            ));
        }
        Ok(())
    }

    /// Empty, or a path (not blank); `${PREFIX}` is expanded at load.
    pub fn optional_path(path: &Path) -> Result<(), ValidationError> {
        let text = path.as_os_str().to_string_lossy();
        if !text.is_empty() && text.trim().is_empty() {
            return Err(error("path", "the path is blank", super::PEM_ALLOWED));
        }
        Ok(())
    }

    /// Empty, or an http(s) URL with a host.
    pub fn optional_http_url(text: &str) -> Result<(), ValidationError> {
        if text.is_empty() {
            return Ok(());
        }
        match url::Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
            _ => Err(error(
                "url",
                "{value} is not an http(s) URL",
                "an http(s) URL, or empty",
            )),
        }
    }

    /// Where log lines go: `file`, `stderr` or `both`.
    pub fn log_target(text: &str) -> Result<(), ValidationError> {
        if crate::logging::TARGETS.contains(&text) {
            return Ok(());
        }
        Err(error(
            "target",
            "{value} is not a log target",
            "\"file\", \"stderr\" or \"both\"",
        ))
    }

    /// A log filter in `RUST_LOG` syntax, in the grammar both flavours accept.
    pub fn log_filter(text: &str) -> Result<(), ValidationError> {
        const ALLOWED: &str = "a level (off, error, warn, info, debug, trace) and/or module=level pairs, comma separated";
        let what = match crate::logging::check_filter(text) {
            Ok(()) => match crate::logging::parse_filter(text) {
                Ok(_) => return Ok(()),
                Err(e) => format!("{{value}} is not a valid filter ({e})"),
            },
            Err(what) => what,
        };
        Err(error("filter", &what, ALLOWED))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Address to bind.
    #[validate(custom(function = "rules::host"))]
    pub host: String,
    /// 0 picks a free port (tests).
    #[validate(range(max = 65535, message = "1-65535 (0 picks a free port)"))]
    pub port: u32,
    /// A request head must arrive whole within this many seconds of its first byte.
    #[validate(range(
        exclusive_min = 0.0,
        message = "a number of seconds > 0 (fractions allowed)"
    ))]
    pub header_timeout_secs: f64,
    /// A connection without a request in progress is closed after this many seconds.
    #[validate(range(
        exclusive_min = 0.0,
        message = "a number of seconds > 0 (fractions allowed)"
    ))]
    pub idle_timeout_secs: f64,
    /// A client that does not read its answer for this many seconds is disconnected.
    #[validate(range(
        exclusive_min = 0.0,
        message = "a number of seconds > 0 (fractions allowed)"
    ))]
    pub write_timeout_secs: f64,
    /// Open connections at most (lowered at start to the file descriptor limit minus 64).
    #[validate(range(min = 1, max = 1000000, message = "1-1000000"))]
    pub max_connections: u32,
    /// HTTPS: the certificate chain (PEM); with `tls_key_file`, or neither.
    #[validate(custom(function = "rules::optional_path"))]
    pub tls_cert_file: PathBuf,
    /// HTTPS: the private key (PEM), a secret file (owner and mode checked).
    #[validate(custom(function = "rules::optional_path"))]
    pub tls_key_file: PathBuf,
    /// Authorities the upstream client trusts besides the system's (PEM), or empty.
    #[validate(custom(function = "rules::optional_path"))]
    pub client_ca_file: PathBuf,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: DEFAULT_HTTP_PORT.parse().unwrap_or(8080),
            header_timeout_secs: 10.0,
            idle_timeout_secs: 60.0,
            write_timeout_secs: 30.0,
            max_connections: 1024,
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            client_ca_file: PathBuf::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    #[validate(custom(function = "rules::log_filter"))]
    pub filter: String,
    /// Where lines go: the log file, stderr, or both (deploy files that collect stderr pick
    /// `stderr`).
    #[validate(custom(function = "rules::log_target"))]
    pub target: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            filter: "info".into(),
            target: "both".into(),
        }
    }
}

impl Log {
    /// Lines go to stderr (`stderr` or `both`).
    pub fn to_stderr(&self) -> bool {
        self.target != "file"
    }

    /// Lines go to the log file (`file` or `both`).
    pub fn to_file(&self) -> bool {
        self.target != "stderr"
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct Paths {
    #[validate(custom(function = "rules::path"))]
    pub log_file: PathBuf,
    #[validate(custom(function = "rules::path"))]
    pub pid_file: PathBuf,
    #[validate(custom(function = "rules::path"))]
    pub heartbeat_file: PathBuf,
    #[validate(custom(function = "rules::path"))]
    pub data_dir: PathBuf,
    #[validate(custom(function = "rules::path"))]
    pub tmp_dir: PathBuf,
    /// Files in `tmp_dir` older than this are removed at start.
    #[validate(range(
        exclusive_min = 0.0,
        message = "a number of seconds > 0 (fractions allowed)"
    ))]
    pub tmp_max_age_secs: f64,
    /// Audit lines (start, reloads, secrets file read, refused access, shutdown).
    #[validate(custom(function = "rules::path"))]
    pub audit_file: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            log_file: format!("./log/{SERVICE_NAME}.log").into(),
            pid_file: format!("${{PREFIX}}/run/{SERVICE_NAME}.pid").into(),
            heartbeat_file: format!("./tmp/{SERVICE_NAME}.heartbeat").into(),
            data_dir: format!("${{PREFIX}}/data/{SERVICE_NAME}").into(),
            tmp_dir: "./tmp".into(),
            tmp_max_age_secs: 86400.0,
            audit_file: format!("./log/{SERVICE_NAME}.audit.log").into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct Heartbeat {
    #[validate(range(
        exclusive_min = 0.0,
        message = "a number of seconds > 0 (fractions allowed)"
    ))]
    pub interval_secs: f64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            interval_secs: 10.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct Shutdown {
    #[validate(range(
        exclusive_min = 0.0,
        message = "a number of seconds > 0 (fractions allowed)"
    ))]
    pub timeout_secs: f64,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self { timeout_secs: 30.0 }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Tokio worker threads; 0 means one per available core.
    #[validate(range(max = 1024, message = "0-1024 (0 = the available cores)"))]
    pub worker_threads: u32,
}

/// Where `backup` writes snapshots of `paths.data_dir`, and how many it keeps.
#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct Backup {
    #[validate(custom(function = "rules::path"))]
    pub dir: PathBuf,
    #[validate(range(min = 1, max = 1000, message = "1-1000"))]
    pub keep: u32,
}

impl Default for Backup {
    fn default() -> Self {
        Self {
            dir: format!("${{PREFIX}}/backup/{SERVICE_NAME}").into(),
            keep: 7,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct Apm {
    /// OpenTelemetry endpoint; `APM_URL` sets it too.
    #[validate(custom(function = "rules::optional_http_url"))]
    pub url: String,
}

/// The platform's sections, in the contract's order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct Platform {
    #[validate(nested)]
    pub http: Http,
    #[validate(nested)]
    pub log: Log,
    #[validate(nested)]
    pub paths: Paths,
    #[validate(nested)]
    pub heartbeat: Heartbeat,
    #[validate(nested)]
    pub shutdown: Shutdown,
    #[validate(nested)]
    pub runtime: Runtime,
    #[validate(nested)]
    pub backup: Backup,
    #[validate(nested)]
    pub apm: Apm,
}

/// The effective, validated configuration: the platform's sections and the service's.
#[derive(Debug, Clone)]
pub struct Settings {
    pub http: Http,
    pub log: Log,
    pub paths: Paths,
    pub heartbeat: Heartbeat,
    pub shutdown: Shutdown,
    pub runtime: Runtime,
    pub backup: Backup,
    pub apm: Apm,
    pub service: crate::service::Settings,
}

impl Settings {
    fn new(platform: Platform, service: crate::service::Settings) -> Self {
        let Platform {
            http,
            log,
            paths,
            heartbeat,
            shutdown,
            runtime,
            backup,
            apm,
        } = platform;
        Self {
            http,
            log,
            paths,
            heartbeat,
            shutdown,
            runtime,
            backup,
            apm,
            service,
        }
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat.interval_secs)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown.timeout_secs)
    }

    /// Tokio worker threads: `runtime.worker_threads`, or one per available core when 0.
    pub fn worker_threads(&self) -> usize {
        match self.runtime.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n as usize,
        }
    }
}

/// Where a value came from, printed by `check-config` and in every error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layer {
    Default,
    Base,
    Secrets,
    Env,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Default => "default",
            Layer::Base => "base",
            Layer::Secrets => "secrets",
            Layer::Env => "env",
        })
    }
}

/// Every configuration problem found, one line each, ready to print.
#[derive(Debug, Default)]
pub struct ConfigError {
    pub lines: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn push(&mut self, line: String) {
        self.lines.push(format!("config error: {line}"));
    }
}

/// A value written as a TOML literal: `"127.0.0.1"`, `9000`, `10.0`; the user:password of a
/// URL is redacted.
fn literal(value: &Value) -> String {
    match value {
        Value::Float(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.1}"),
        Value::String(s) => Value::String(redact_urls(s).into_owned()).to_string(),
        other => other.to_string(),
    }
}

/// One group of sections loaded from the same table: the platform's or the service's.
struct Group {
    /// Every section with its keys at their defaults, in declaration order.
    defaults: Table,
    /// Deserializes (and validates, when asked) a whole table of sections; the normalized
    /// table, or why not.
    check: fn(&Table, bool) -> Result<Table, Problems>,
}

/// Why a table of sections was refused.
enum Problems {
    /// Deserializing failed (a wrong type, or a number outside its type).
    Type(String),
    /// Rules failed: `["work", "max_concurrency"]` -> the errors.
    Rules(Vec<(Vec<String>, ValidationError)>),
}

fn check_group<T: Serialize + DeserializeOwned + Validate>(
    table: &Table,
    validate: bool,
) -> Result<Table, Problems> {
    let value =
        T::deserialize(Value::Table(table.clone())).map_err(|e| Problems::Type(e.to_string()))?;
    if let (true, Err(errors)) = (validate, value.validate()) {
        let mut found = Vec::new();
        flatten(&errors, &mut Vec::new(), &mut found);
        return Err(Problems::Rules(found));
    }
    match Value::try_from(&value) {
        Ok(Value::Table(table)) => Ok(table),
        Ok(_) => Err(Problems::Type("not a table of sections".into())),
        Err(e) => Err(Problems::Type(e.to_string())),
    }
}

fn flatten(
    errors: &ValidationErrors,
    path: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, ValidationError)>,
) {
    for (field, kind) in errors.errors() {
        path.push(field.to_string());
        match kind {
            ValidationErrorsKind::Field(list) => {
                out.extend(list.iter().map(|e| (path.clone(), e.clone())));
            }
            ValidationErrorsKind::Struct(inner) => flatten(inner, path, out),
            ValidationErrorsKind::List(items) => {
                for inner in items.values() {
                    flatten(inner, path, out);
                }
            }
        }
        path.pop();
    }
}

/// A struct of settings sections: the platform's, or the service's
/// (`crate::service::Settings`, a struct with one field per section).
pub trait Sections: Serialize + DeserializeOwned + Validate + Default {}

impl<T: Serialize + DeserializeOwned + Validate + Default> Sections for T {}

fn group<T: Sections>() -> Group {
    let defaults = match Value::try_from(T::default()) {
        Ok(Value::Table(table)) => table,
        _ => Table::new(),
    };
    Group {
        defaults,
        check: check_group::<T>,
    }
}

/// What the loader knows of one key.
struct Key {
    section: String,
    name: String,
    group: usize,
    default: Value,
    secret: bool,
}

impl Key {
    fn dotted(&self) -> String {
        format!("{}.{}", self.section, self.name)
    }
}

/// The keys of every group, in the contract's order, and how to check them.
struct Schema {
    groups: Vec<Group>,
    sections: Vec<String>,
    keys: Vec<Key>,
}

impl Schema {
    fn new<S: Sections>() -> Self {
        let groups = vec![group::<Platform>(), group::<S>()];
        let mut ordered: Vec<(usize, String)> = Vec::new();
        let platform = groups[0].defaults.keys();
        ordered.extend(
            platform
                .filter(|s| !LAST_SECTIONS.contains(&s.as_str()))
                .map(|s| (0, s.clone())),
        );
        ordered.extend(groups[1].defaults.keys().map(|s| (1, s.clone())));
        ordered.extend(LAST_SECTIONS.iter().map(|s| (0, (*s).to_string())));
        let mut schema = Self {
            groups,
            sections: ordered.iter().map(|(_, s)| s.clone()).collect(),
            keys: Vec::new(),
        };
        for (group, section) in ordered {
            let Some(Value::Table(keys)) = schema.groups[group].defaults.get(&section).cloned()
            else {
                continue;
            };
            for (name, default) in keys {
                let secret = schema.is_secret(group, &section, &name, &default);
                schema.keys.push(Key {
                    section: section.clone(),
                    name,
                    group,
                    default,
                    secret,
                });
            }
        }
        schema
    }

    /// A key whose value comes back as `[redacted]` is a secret.
    fn is_secret(&self, group: usize, section: &str, name: &str, default: &Value) -> bool {
        if !matches!(default, Value::String(_)) {
            return false;
        }
        let probe = Value::String("probe".into());
        let table = with_value(&self.groups[group].defaults, section, name, probe);
        // Not validated: a rule of the key's must not hide that it is a secret.
        match (self.groups[group].check)(&table, false) {
            Ok(normalized) => normalized[section][name].as_str() == Some(REDACTED),
            Err(_) => false,
        }
    }

    fn find(&self, section: &str, name: &str) -> Option<&Key> {
        self.keys
            .iter()
            .find(|k| k.section == section && k.name == name)
    }

    fn keys_of(&self, section: &str) -> String {
        let names: Vec<&str> = self
            .keys
            .iter()
            .filter(|k| k.section == section)
            .map(|k| k.name.as_str())
            .collect();
        names.join(", ")
    }

    fn unknown_key(&self, section: &str, name: &str, origin: &str) -> String {
        if self.sections.iter().any(|s| s == section) {
            format!(
                "{section}.{name} ({origin}): unknown key; allowed keys of [{section}]: {}",
                self.keys_of(section)
            )
        } else {
            format!(
                "{section}.{name} ({origin}): unknown key; allowed tables: {}",
                self.sections.join(", ")
            )
        }
    }

    /// Checks one value on its own: what is wrong with it and what is allowed.
    fn check(&self, key: &Key, value: &Value) -> Result<(), String> {
        let shown = if key.secret {
            REDACTED.to_string()
        } else {
            literal(value)
        };
        if let Value::Float(x) = value
            && !x.is_finite()
        {
            return Err(format!("{shown} is out of range; {}", self.allowed(key)));
        }
        let group = &self.groups[key.group];
        let table = with_value(&group.defaults, &key.section, &key.name, value.clone());
        match (group.check)(&table, true) {
            Ok(_) => Ok(()),
            Err(Problems::Type(message)) => {
                let what = if message.contains("invalid value") && value.is_integer() {
                    format!("{shown} is out of range")
                } else {
                    format!("{shown} is not {}", noun(&key.default))
                };
                Err(format!("{what}; {}", self.allowed(key)))
            }
            Err(Problems::Rules(found)) => {
                let error = found
                    .iter()
                    .find(|(path, _)| path.last() == Some(&key.name))
                    .or(found.first())
                    .map(|(_, e)| e.clone())
                    .unwrap_or_else(|| ValidationError::new("invalid"));
                Err(format!(
                    "{}; {}",
                    what(&error, &shown, value),
                    allowed(&error)
                ))
            }
        }
    }

    /// What a key allows, read from its rule: validation fails on one of a few probe values
    /// of the key's type. A key with no rule allows any value of its type.
    fn allowed(&self, key: &Key) -> String {
        let group = &self.groups[key.group];
        let probes: Vec<Value> = match key.default {
            Value::Integer(_) => [
                0,
                -1,
                1,
                1025,
                65536,
                1 << 31,
                1 << 32,
                1 << 53,
                i64::MAX,
                i64::MIN,
            ]
            .into_iter()
            .map(Value::Integer)
            .collect(),
            Value::Float(_) => [0.0, -1.0, 1.0, 0.5, 1e-9, 1e9, 1e300, -1e300]
                .into_iter()
                .map(Value::Float)
                .collect(),
            Value::String(_) => ["", " ", "x", "not a valid value"]
                .into_iter()
                .map(|s| Value::String(s.into()))
                .collect(),
            _ => Vec::new(),
        };
        for probe in probes {
            let table = with_value(&group.defaults, &key.section, &key.name, probe);
            if let Err(Problems::Rules(found)) = (group.check)(&table, true)
                && let Some((_, error)) = found
                    .iter()
                    .find(|(path, _)| path.last() == Some(&key.name))
            {
                return allowed(error);
            }
        }
        let secret = if key.secret { " (a secret)" } else { "" };
        format!("allowed {}{secret}", noun(&key.default))
    }
}

/// `a string`, `a whole number`...: what a value of the default's type is.
fn noun(default: &Value) -> &'static str {
    match default {
        Value::Integer(_) => "a whole number",
        Value::Float(_) => "a number",
        Value::Boolean(_) => "true or false",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
        _ => "a string",
    }
}

/// What is wrong, from a rule's error: its `what` parameter, or a text for its code.
fn what(error: &ValidationError, shown: &str, value: &Value) -> String {
    if let Some(what) = error.params.get("what").and_then(|w| w.as_str()) {
        return what.replace("{value}", shown);
    }
    match error.code.as_ref() {
        "range" => format!("{shown} is out of range"),
        "length" if value.as_str() == Some("") => "the value is empty".to_string(),
        "length" => format!("{shown} has the wrong length"),
        "url" => format!("{shown} is not a URL"),
        "email" => format!("{shown} is not an e-mail address"),
        code => format!("{shown} is not valid ({code})"),
    }
}

/// What is allowed, from a rule's error: its message, or a text from its parameters.
fn allowed(error: &ValidationError) -> String {
    if let Some(message) = &error.message {
        return format!("allowed {message}");
    }
    let param = |name: &str| error.params.get(name).map(ToString::to_string);
    let text = match (error.code.as_ref(), param("min"), param("max")) {
        ("range", Some(min), Some(max)) => format!("{min}-{max}"),
        ("range", Some(min), None) => format!("{min} or more"),
        ("range", None, Some(max)) => format!("{max} or less"),
        ("range", None, None) => match (param("exclusive_min"), param("exclusive_max")) {
            (Some(min), Some(max)) => format!("more than {min} and less than {max}"),
            (Some(min), None) => format!("more than {min}"),
            (None, Some(max)) => format!("less than {max}"),
            (None, None) => "a number in range".to_string(),
        },
        ("length", Some(min), Some(max)) => format!("{min}-{max} characters"),
        ("length", Some(min), None) if min == "1" => "a non-empty string".to_string(),
        ("length", Some(min), None) => format!("at least {min} characters"),
        ("length", None, Some(max)) => format!("at most {max} characters"),
        ("url", _, _) => "a URL".to_string(),
        ("email", _, _) => "an e-mail address".to_string(),
        (code, _, _) => format!("a value that passes {code}"),
    };
    format!("allowed {text}")
}

/// A copy of `table` with `section.name` set to `value`.
fn with_value(table: &Table, section: &str, name: &str, value: Value) -> Table {
    let mut table = table.clone();
    if let Some(Value::Table(keys)) = table.get_mut(section) {
        keys.insert(name.to_string(), value);
    }
    table
}

/// The keys one layer sets: `"http.port"` -> value.
struct LayerValues {
    layer: Layer,
    entries: BTreeMap<String, Value>,
}

impl LayerValues {
    fn new(layer: Layer) -> Self {
        Self {
            layer,
            entries: BTreeMap::new(),
        }
    }

    /// Validates one raw value and keeps it, or records why it was refused.
    fn set(
        &mut self,
        schema: &Schema,
        key: &Key,
        raw: Result<Value, String>,
        var: Option<&str>,
        errors: &mut ConfigError,
    ) {
        match raw.and_then(|value| schema.check(key, &value).map(|()| value)) {
            Ok(value) => {
                self.entries.insert(key.dotted(), value);
            }
            Err(what) => {
                let origin = match var {
                    Some(var) => format!("{} {var}", self.layer),
                    None => self.layer.to_string(),
                };
                errors.push(format!("{} ({origin}): {what}", key.dotted()));
            }
        }
    }

    /// Reads a parsed TOML file: known sections of known keys only.
    fn from_table(schema: &Schema, layer: Layer, table: &Table, errors: &mut ConfigError) -> Self {
        let mut values = Self::new(layer);
        for (section, content) in table {
            if !schema.sections.contains(section) {
                errors.push(format!(
                    "{section} ({layer}): unknown key; allowed tables: {}",
                    schema.sections.join(", ")
                ));
                continue;
            }
            let Value::Table(keys) = content else {
                errors.push(format!(
                    "{section} ({layer}): {} is not a table; allowed keys of [{section}]: {}",
                    literal(content),
                    schema.keys_of(section)
                ));
                continue;
            };
            for (name, value) in keys {
                match schema.find(section, name) {
                    Some(key) => values.set(schema, key, Ok(value.clone()), None, errors),
                    None => errors.push(schema.unknown_key(section, name, &layer.to_string())),
                }
            }
        }
        values
    }

    /// Reads `<SVC>_<SECTION>__<KEY>` variables, `APM_URL` and `RUST_LOG`.
    fn from_env(schema: &Schema, vars: &[(String, String)], errors: &mut ConfigError) -> Self {
        let prefix = env_prefix();
        let mut values = Self::new(Layer::Env);
        for (var, text) in vars {
            let Some((section, name)) = var
                .strip_prefix(&prefix)
                .and_then(|rest| rest.split_once("__"))
            else {
                continue; // other <SVC>_* variables are not configuration
            };
            let (section, name) = (section.to_lowercase(), name.to_lowercase());
            match schema.find(&section, &name) {
                Some(key) => values.set(
                    schema,
                    key,
                    parse_env_text(key, text)
                        .map_err(|what| format!("{what}; {}", schema.allowed(key))),
                    Some(var),
                    errors,
                ),
                None => errors.push(schema.unknown_key(&section, &name, &format!("env {var}"))),
            }
        }
        for (var, section, name) in [("APM_URL", "apm", "url"), ("RUST_LOG", "log", "filter")] {
            let set = vars.iter().find(|(n, text)| n == var && !text.is_empty());
            if let (Some((_, text)), Some(key)) = (set, schema.find(section, name)) {
                values.set(
                    schema,
                    key,
                    Ok(Value::String(text.clone())),
                    Some(var),
                    errors,
                );
            }
        }
        values
    }
}

/// Turns an environment variable's text into a value of the key's TOML type.
fn parse_env_text(key: &Key, text: &str) -> Result<Value, String> {
    let shown = || {
        if key.secret {
            REDACTED.to_string()
        } else {
            literal(&Value::String(text.into()))
        }
    };
    match key.default {
        Value::Integer(_) => text
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| shown()),
        Value::Float(_) => text
            .trim()
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| shown()),
        Value::Boolean(_) => text
            .trim()
            .parse::<bool>()
            .map(Value::Boolean)
            .map_err(|_| shown()),
        _ => return Ok(Value::String(text.into())),
    }
    .map_err(|shown| format!("{shown} is not {}", noun(&key.default)))
}

/// Reads and parses one TOML file; `None` when an optional file is missing.
fn read_toml(path: &Path, required: bool, errors: &mut ConfigError) -> Option<Table> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            errors.push(format!(
                "cannot read {}: {}",
                path.display(),
                crate::errors::os_reason(&e)
            ));
            return None;
        }
    };
    match text.parse::<Table>() {
        Ok(table) => Some(table),
        Err(e) => {
            let at = e.span().map_or(text.len(), |span| span.start);
            errors.push(format!(
                "{}: not valid TOML at {}",
                path.display(),
                toml_position(&text, at)
            ));
            None
        }
    }
}

/// `line L, column C` of a TOML syntax error, placed as both flavours can: L is the line where
/// the parser stopped (the last line at the end of the document), C where that line's text
/// starts. The parsers' own messages and columns differ; this rule does not.
pub fn toml_position(text: &str, offset: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let number = (before.matches('\n').count() + 1).min(lines.len().max(1));
    let line = lines.get(number - 1).copied().unwrap_or("");
    let column = line.chars().count() - line.trim_start().chars().count() + 1;
    format!("line {number}, column {column}")
}

/// What is wrong with a file holding a secret (`what`: "secrets file", "TLS key file").
///
/// It must be owned by the user the service runs as (root included: a root service reads
/// only root's files), and not be accessible by group or others. Each problem is one line
/// (without `config error: `) with the command that fixes it; a missing file is no problem
/// here (read errors are reported on reading).
pub fn secret_file_problems(path: &Path, what: &str) -> Vec<String> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Vec::new();
    };
    let shown = path.display();
    let mut problems = Vec::new();
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        problems.push(format!(
            "{what} {shown} has mode {mode:04o}; it must not be accessible by group or others (chmod 600 {shown})"
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let owner = std::os::unix::fs::MetadataExt::uid(&meta);
    if owner != uid {
        problems.push(format!(
            "{what} {shown} is owned by uid {owner}; it must be owned by the user running the service, uid {uid} (chown {uid} {shown})"
        ));
    }
    problems
}

/// Both TLS files or neither. The files themselves are checked when the service loads them
/// (`crate::tls`, at start and by check-config), so that a committed path need not exist here.
fn check_tls(http: &Http, place: impl Fn(&str) -> String, errors: &mut ConfigError) {
    let set = |p: &PathBuf| !p.as_os_str().is_empty();
    if set(&http.tls_cert_file) != set(&http.tls_key_file) {
        let empty = if set(&http.tls_cert_file) {
            "http.tls_key_file"
        } else {
            "http.tls_cert_file"
        };
        errors.push(format!(
            "{empty} ({}): empty while the other TLS file is set; allowed both http.tls_cert_file and http.tls_key_file set, or neither",
            place(empty)
        ));
    }
}

/// The sources of one load: the base file, `PREFIX` and the environment.
pub struct Sources {
    pub base_file: PathBuf,
    pub prefix: String,
    pub env: Vec<(String, String)>,
}

impl Sources {
    /// The real process environment; `PREFIX` defaults to `/srv`.
    pub fn from_process(base_file: PathBuf) -> Self {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let prefix = env
            .iter()
            .find(|(k, v)| k == "PREFIX" && !v.is_empty())
            .map_or_else(|| DEFAULT_PREFIX.to_string(), |(_, v)| v.clone());
        Self {
            base_file,
            prefix,
            env,
        }
    }

    pub fn secrets_file(&self) -> PathBuf {
        Path::new(&self.prefix).join(SECRETS_FILE)
    }
}

/// The settings and, for each key, its effective value and the layer it came from.
#[derive(Debug)]
pub struct Loaded {
    pub settings: Settings,
    shown: Shown,
    /// The secrets file read, and its mode (for the audit line; never its content).
    pub secrets_read: SecretsRead,
}

impl Loaded {
    /// The layer a key's effective value came from (`"http.port"`).
    pub fn layer_of(&self, dotted: &str) -> Layer {
        self.shown
            .iter()
            .find(|(k, _, _)| k == dotted)
            .map_or(Layer::Default, |(_, _, l)| *l)
    }

    /// A short sha256 of the effective configuration, secrets redacted (the start's audit
    /// line): over the `<key> = <value>` lines of `check-config` without their layers, one
    /// per line, so that both flavours give the same digest for the same configuration.
    pub fn digest(&self) -> String {
        let text: String = self
            .shown
            .iter()
            .map(|(key, value, _)| format!("{key} = {}\n", literal(value)))
            .collect();
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        digest.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// `check-config`'s report: one `<key> = <value> (<layer>)` line per key.
    pub fn report(&self) -> Vec<String> {
        self.shown
            .iter()
            .map(|(key, value, layer)| format!("{key} = {} ({layer})", literal(value)))
            .collect()
    }
}

/// Loads the three layers, reports every error at once, and returns the merged settings.
pub fn load(sources: &Sources) -> Result<Loaded, ConfigError> {
    let (platform, service, shown, secrets_read) =
        load_sections::<crate::service::Settings>(sources)?;
    Ok(Loaded {
        settings: Settings::new(platform, service),
        shown,
        secrets_read,
    })
}

/// The effective value and layer of each key, in the contract's order.
type Shown = Vec<(String, Value, Layer)>;
/// The secrets file read at load, and its mode.
type SecretsRead = Option<(PathBuf, u32)>;
/// What [`load_sections`] gives: the platform's settings, the service's, what to show.
type Sectioned<S> = (Platform, S, Shown, SecretsRead);

/// [`load`] for any service sections `S` (tests load a stub service's).
fn load_sections<S: Sections>(sources: &Sources) -> Result<Sectioned<S>, ConfigError> {
    let schema = Schema::new::<S>();
    let mut errors = ConfigError::default();
    for section in schema.groups[1].defaults.keys() {
        if schema.groups[0].defaults.contains_key(section) {
            errors.push(format!(
                "{section} (default): the service's section has a platform section's name"
            ));
        }
    }
    let mut layers = Vec::new();
    if let Some(table) = read_toml(&sources.base_file, true, &mut errors) {
        layers.push(LayerValues::from_table(
            &schema,
            Layer::Base,
            &table,
            &mut errors,
        ));
    }
    let secrets = sources.secrets_file();
    let problems = secret_file_problems(&secrets, "secrets file");
    let mut secrets_read = None;
    for problem in &problems {
        errors.push(problem.clone());
    }
    if problems.is_empty()
        && let Some(table) = read_toml(&secrets, false, &mut errors)
    {
        layers.push(LayerValues::from_table(
            &schema,
            Layer::Secrets,
            &table,
            &mut errors,
        ));
        let mode = std::fs::metadata(&secrets).map_or(0, |m| m.permissions().mode() & 0o7777);
        secrets_read = Some((secrets.clone(), mode));
    }
    layers.push(LayerValues::from_env(&schema, &sources.env, &mut errors));
    if !errors.lines.is_empty() {
        return Err(errors);
    }

    let mut tables: Vec<Table> = schema.groups.iter().map(|g| g.defaults.clone()).collect();
    let mut origin = BTreeMap::new();
    for key in &schema.keys {
        let dotted = key.dotted();
        let mut value = key.default.clone();
        for layer in &layers {
            if let Some(set) = layer.entries.get(&dotted) {
                value = set.clone();
                origin.insert(dotted.clone(), layer.layer);
            }
        }
        // `${PREFIX}` is expanded in every `paths.*` and `backup.*` value and the other path
        // keys, as in the Python flavour.
        if let Value::String(text) = &value
            && (key.section == "paths"
                || key.section == "backup"
                || PATH_KEYS.contains(&dotted.as_str()))
        {
            value = Value::String(text.replace("${PREFIX}", &sources.prefix));
        }
        tables[key.group] = with_value(&tables[key.group], &key.section, &key.name, value);
    }
    // Each value passed on its own; a rule across keys may still fail.
    let failed = |e: String| ConfigError {
        lines: vec![format!("config error: {e}")],
    };
    let platform = Platform::deserialize(Value::Table(tables[0].clone()))
        .map_err(|e| failed(e.to_string()))?;
    let service =
        S::deserialize(Value::Table(tables[1].clone())).map_err(|e| failed(e.to_string()))?;
    platform.validate().map_err(|e| failed(e.to_string()))?;
    service.validate().map_err(|e| failed(e.to_string()))?;
    let place = |dotted: &str| match origin.get(dotted).copied() {
        Some(Layer::Env) => {
            let (section, name) = dotted.split_once('.').unwrap_or((dotted, ""));
            let var = format!(
                "{}{}__{}",
                env_prefix(),
                section.to_uppercase(),
                name.to_uppercase()
            );
            format!("env {var}")
        }
        Some(layer) => layer.to_string(),
        None => Layer::Default.to_string(),
    };
    check_tls(&platform.http, place, &mut errors);
    if !errors.lines.is_empty() {
        return Err(errors);
    }
    let normalized: Vec<Table> = [Value::try_from(&platform), Value::try_from(&service)]
        .into_iter()
        .map(|v| match v {
            Ok(Value::Table(t)) => t,
            _ => Table::new(),
        })
        .collect();
    let shown = schema
        .keys
        .iter()
        .map(|key| {
            let dotted = key.dotted();
            let value = normalized[key.group][&key.section][&key.name].clone();
            let layer = origin.get(&dotted).copied().unwrap_or(Layer::Default);
            (dotted, value, layer)
        })
        .collect();
    Ok((platform, service, shown, secrets_read))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sources(dir: &Path, base: &str, env: &[(&str, &str)]) -> Sources {
        let base_file = dir.join("config.toml");
        std::fs::write(&base_file, base).unwrap();
        Sources {
            base_file,
            prefix: dir.display().to_string(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn var(rest: &str) -> String {
        format!("{}{rest}", env_prefix())
    }

    fn write_secrets(dir: &Path, text: &str) {
        std::fs::create_dir_all(dir.join("key")).unwrap();
        let secrets = dir.join(SECRETS_FILE);
        std::fs::write(&secrets, text).unwrap();
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn defaults_fill_every_key_and_prefix_is_expanded() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load(&sources(dir.path(), "", &[])).unwrap();
        assert_eq!(loaded.settings.http.host, "127.0.0.1");
        assert_eq!(loaded.settings.runtime.worker_threads, 0);
        assert_eq!(
            loaded.settings.paths.pid_file,
            dir.path().join(format!("run/{SERVICE_NAME}.pid"))
        );
        assert_eq!(loaded.layer_of("http.port"), Layer::Default);
        let report = loaded.report();
        assert_eq!(report[0], "http.host = \"127.0.0.1\" (default)");
        assert!(report.contains(&"heartbeat.interval_secs = 10.0 (default)".to_string()));
        assert!(report.contains(&"runtime.worker_threads = 0 (default)".to_string()));
        assert!(
            report.last().unwrap().starts_with("apm.url = "),
            "{report:#?}"
        );
    }

    #[test]
    fn later_layers_override_key_by_key() {
        let dir = tempfile::tempdir().unwrap();
        write_secrets(
            dir.path(),
            "[http]\nport = 9050\nhost = \"10.0.0.1\"\n[log]\nfilter = \"warn\"\n",
        );
        let port_var = var("HTTP__PORT");
        let src = sources(
            dir.path(),
            "[http]\nport = 9000\nhost = \"0.0.0.0\"\n[shutdown]\ntimeout_secs = 5\n",
            &[(&port_var, "9100"), ("APM_URL", "http://apm:4318")],
        );
        let loaded = load(&src).unwrap();
        assert_eq!(loaded.settings.http.port, 9100);
        assert_eq!(loaded.layer_of("http.port"), Layer::Env);
        assert_eq!(loaded.settings.http.host, "10.0.0.1");
        assert_eq!(loaded.layer_of("http.host"), Layer::Secrets);
        assert_eq!(loaded.settings.log.filter, "warn");
        assert_eq!(loaded.settings.shutdown.timeout_secs, 5.0);
        assert_eq!(loaded.settings.apm.url, "http://apm:4318");
        let report = loaded.report().join("\n");
        assert!(report.contains("http.port = 9100 (env)"), "{report}");
        assert!(
            report.contains("http.host = \"10.0.0.1\" (secrets)"),
            "{report}"
        );
        assert!(
            report.contains("shutdown.timeout_secs = 5.0 (base)"),
            "{report}"
        );
        assert!(
            report.contains("apm.url = \"http://apm:4318\" (env)"),
            "{report}"
        );
    }

    #[test]
    fn every_error_is_reported_with_key_and_layer() {
        let dir = tempfile::tempdir().unwrap();
        let port_var = var("HTTP__PORT");
        let bad_var = var("HTTP__NOPE");
        let threads_var = var("RUNTIME__WORKER_THREADS");
        let src = sources(
            dir.path(),
            "[http]\nportt = 1\n[apm]\nurl = \"ftp://x\"\n[heartbeat]\ninterval_secs = \"10\"\n[shutdown]\ntimeout_secs = 0\n[nope]\nx = 1\n",
            &[
                (&port_var, "70000"),
                (&bad_var, "1"),
                (&threads_var, "many"),
                (&var("UNRELATED"), "x"),
            ],
        );
        let lines = load(&src).unwrap_err().lines;
        let expected = [
            "config error: http.portt (base): unknown key; allowed keys of [http]: host, port, header_timeout_secs, idle_timeout_secs, write_timeout_secs, max_connections, tls_cert_file, tls_key_file, client_ca_file".to_string(),
            "config error: apm.url (base): \"ftp://x\" is not an http(s) URL; allowed an http(s) URL, or empty".to_string(),
            "config error: heartbeat.interval_secs (base): \"10\" is not a number; allowed a number of seconds > 0 (fractions allowed)".to_string(),
            "config error: shutdown.timeout_secs (base): 0 is out of range; allowed a number of seconds > 0 (fractions allowed)".to_string(),
            format!("config error: http.port (env {port_var}): 70000 is out of range; allowed 1-65535 (0 picks a free port)"),
            format!("config error: http.nope (env {bad_var}): unknown key; allowed keys of [http]: host, port, header_timeout_secs, idle_timeout_secs, write_timeout_secs, max_connections, tls_cert_file, tls_key_file, client_ca_file"),
            format!("config error: runtime.worker_threads (env {threads_var}): \"many\" is not a whole number; allowed 0-1024 (0 = the available cores)"),
        ];
        for line in &expected {
            assert!(lines.contains(line), "missing {line:?} in {lines:#?}");
        }
        assert!(lines.iter().any(|l| l.starts_with("config error: nope (base): unknown key; allowed tables: http, log, paths, heartbeat, shutdown, runtime, ")), "{lines:#?}");
        assert_eq!(lines.len(), expected.len() + 1, "{lines:#?}");
    }

    #[test]
    fn toml_types_are_kept_and_numbers_checked_against_their_type() {
        let dir = tempfile::tempdir().unwrap();
        let base = "[http]\nport = \"9000\"\nhost = \"\"\n[runtime]\nworker_threads = 1.5\n[heartbeat]\ninterval_secs = nan\n[log]\nfilter = 7\n";
        let lines = load(&sources(dir.path(), base, &[])).unwrap_err().lines;
        for line in [
            "config error: http.port (base): \"9000\" is not a whole number; allowed 1-65535 (0 picks a free port)",
            "config error: http.host (base): \"\" is not an IP address or host name; allowed an IP address or host name",
            "config error: runtime.worker_threads (base): 1.5 is not a whole number; allowed 0-1024 (0 = the available cores)",
            "config error: heartbeat.interval_secs (base): nan is out of range; allowed a number of seconds > 0 (fractions allowed)",
            "config error: log.filter (base): 7 is not a string; allowed a level (off, error, warn, info, debug, trace) and/or module=level pairs, comma separated",
        ] {
            assert!(
                lines.contains(&line.to_string()),
                "missing {line:?} in {lines:#?}"
            );
        }
        assert_eq!(lines.len(), 5, "{lines:#?}");
        let lines = load(&sources(
            dir.path(),
            "[runtime]\nworker_threads = -1\n",
            &[],
        ))
        .unwrap_err()
        .lines;
        assert_eq!(
            lines,
            [
                "config error: runtime.worker_threads (base): -1 is out of range; allowed 0-1024 (0 = the available cores)"
            ]
        );
    }

    #[test]
    fn worker_threads_zero_means_the_available_cores() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load(&sources(dir.path(), "[runtime]\nworker_threads = 0\n", &[])).unwrap();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(loaded.settings.worker_threads(), cores);
        let loaded = load(&sources(dir.path(), "[runtime]\nworker_threads = 3\n", &[])).unwrap();
        assert_eq!(loaded.settings.worker_threads(), 3);
    }

    #[test]
    fn an_open_secrets_file_is_refused_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("key")).unwrap();
        let secrets = dir.path().join(SECRETS_FILE);
        std::fs::File::create(&secrets)
            .unwrap()
            .write_all(b"[http]\nport = 1\n")
            .unwrap();
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).unwrap();
        let lines = load(&sources(dir.path(), "", &[])).unwrap_err().lines;
        let shown = secrets.display();
        assert_eq!(
            lines,
            [format!(
                "config error: secrets file {shown} has mode 0644; it must not be accessible by group or others (chmod 600 {shown})"
            )]
        );
    }

    #[test]
    fn missing_and_malformed_base_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = sources(dir.path(), "[http\n", &[]);
        let lines = load(&src).unwrap_err().lines;
        assert!(
            lines[0].starts_with(&format!("config error: {}: ", src.base_file.display())),
            "{lines:?}"
        );
        src.base_file = dir.path().join("absent.toml");
        let lines = load(&src).unwrap_err().lines;
        assert!(lines[0].starts_with(&format!(
            "config error: cannot read {}: ",
            src.base_file.display()
        )));
    }

    #[test]
    fn rust_log_overrides_the_filter_and_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load(&sources(dir.path(), "", &[("RUST_LOG", "debug")])).unwrap();
        assert_eq!(loaded.settings.log.filter, "debug");
        assert_eq!(loaded.layer_of("log.filter"), Layer::Env);
        let lines = load(&sources(dir.path(), "", &[("RUST_LOG", "a=b=c")]))
            .unwrap_err()
            .lines;
        assert!(
            lines[0].starts_with(
                "config error: log.filter (env RUST_LOG): \"a=b=c\" is not a valid directive"
            ),
            "{lines:?}"
        );
    }

    #[test]
    fn toml_errors_are_placed_at_the_start_of_their_line() {
        assert_eq!(
            toml_position("[http]\n  port = 80 80\n", 17),
            "line 2, column 3"
        );
        assert_eq!(toml_position("[http\n", 6), "line 1, column 1");
        assert_eq!(toml_position("", 0), "line 1, column 1");
    }

    #[test]
    fn user_and_password_of_a_url_are_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load(&sources(
            dir.path(),
            "",
            &[("APM_URL", "http://me:pw@apm:4318")],
        ))
        .unwrap();
        let report = loaded.report().join("\n");
        assert!(
            report.contains("apm.url = \"http://[redacted]@apm:4318\" (env)"),
            "{report}"
        );
        assert!(!report.contains("pw"));
        let lines = load(&sources(dir.path(), "", &[("APM_URL", "ftp://me:pw@apm")]))
            .unwrap_err()
            .lines;
        assert!(
            lines[0].contains("\"ftp://[redacted]@apm\" is not an http(s) URL"),
            "{lines:?}"
        );
    }

    /// A service part as a team writes one: a section with a range, a URL and a secret.
    #[derive(Debug, Serialize, Deserialize, Validate)]
    #[serde(deny_unknown_fields, default)]
    struct Orders {
        #[validate(range(min = 1, max = 100))]
        max_items: u16,
        #[validate(custom(function = "rules::optional_http_url"))]
        desk_url: String,
        #[validate(custom(function = "long_enough"))]
        api_key: Secret,
    }

    fn long_enough(key: &Secret) -> Result<(), ValidationError> {
        match key.expose() {
            Some(key) if key.len() < 8 => Err(ValidationError::new("too_short")
                .with_message("a key of 8 characters or more".into())),
            _ => Ok(()),
        }
    }

    impl Default for Orders {
        fn default() -> Self {
            Self {
                max_items: 10,
                desk_url: String::new(),
                api_key: Secret::default(),
            }
        }
    }

    #[derive(Debug, Default, Serialize, Deserialize, Validate)]
    #[serde(deny_unknown_fields, default)]
    struct Stub {
        #[validate(nested)]
        orders: Orders,
    }

    fn report(loaded: &Sectioned<Stub>) -> Vec<String> {
        loaded
            .2
            .iter()
            .map(|(key, value, layer)| format!("{key} = {} ({layer})", literal(value)))
            .collect()
    }

    #[test]
    fn service_sections_load_like_the_platform_s_and_come_before_apm() {
        let dir = tempfile::tempdir().unwrap();
        let src = sources(
            dir.path(),
            "[orders]
max_items = 20
",
            &[],
        );
        let loaded = load_sections::<Stub>(&src).unwrap();
        assert_eq!(loaded.1.orders.max_items, 20);
        let lines = report(&loaded);
        let at = |key: &str| lines.iter().position(|l| l.starts_with(key)).unwrap();
        assert!(at("runtime.worker_threads") < at("orders.max_items"));
        assert!(at("orders.api_key") < at("apm.url"));
        assert!(
            lines.contains(&"orders.max_items = 20 (base)".to_string()),
            "{lines:#?}"
        );
        assert!(
            lines.contains(&"orders.api_key = \"\" (default)".to_string()),
            "{lines:#?}"
        );

        let bad = sources(
            dir.path(),
            "[orders]
max_items = 0
desk_url = \"desk\"
api_key = 12345
nope = 1
",
            &[(&var("ORDERS__MAX_ITEMS"), "many")],
        );
        let lines = load_sections::<Stub>(&bad).unwrap_err().lines;
        let var = var("ORDERS__MAX_ITEMS");
        for line in [
            "config error: orders.max_items (base): 0 is out of range; allowed 1-100".to_string(),
            "config error: orders.desk_url (base): \"desk\" is not an http(s) URL; allowed an http(s) URL, or empty".to_string(),
            "config error: orders.api_key (base): [redacted] is not a string; allowed a key of 8 characters or more".to_string(),
            "config error: orders.nope (base): unknown key; allowed keys of [orders]: max_items, desk_url, api_key".to_string(),
            format!("config error: orders.max_items (env {var}): \"many\" is not a whole number; allowed 1-100"),
        ] {
            assert!(lines.contains(&line), "missing {line:?} in {lines:#?}");
        }
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(!lines.join("\n").contains("12345"));

        let short = sources(dir.path(), "[orders]\napi_key = \"short\"\n", &[]);
        let lines = load_sections::<Stub>(&short).unwrap_err().lines;
        assert_eq!(
            lines,
            [
                "config error: orders.api_key (base): [redacted] is not valid (too_short); allowed a key of 8 characters or more"
            ]
        );
    }

    #[test]
    fn a_key_in_secrets_and_env_takes_env_and_secrets_beat_base() {
        let dir = tempfile::tempdir().unwrap();
        write_secrets(
            dir.path(),
            "[orders]
api_key = \"from-secrets\"
max_items = 30
",
        );
        let key_var = var("ORDERS__API_KEY");
        let src = sources(
            dir.path(),
            "[orders]
max_items = 20
",
            &[(&key_var, "from-env")],
        );
        let loaded = load_sections::<Stub>(&src).unwrap();
        assert_eq!(loaded.1.orders.api_key.expose(), Some("from-env"));
        assert_eq!(loaded.1.orders.max_items, 30);
        let lines = report(&loaded);
        assert!(
            lines.contains(&"orders.api_key = \"[redacted]\" (env)".to_string()),
            "{lines:#?}"
        );
        assert!(
            lines.contains(&"orders.max_items = 30 (secrets)".to_string()),
            "{lines:#?}"
        );
        let all = format!("{lines:?} {:?}", loaded.1);
        assert!(
            !all.contains("from-env") && !all.contains("from-secrets"),
            "{all}"
        );
    }

    #[test]
    fn a_secret_shows_redacted_everywhere() {
        let secret = Secret::from("hunter2");
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(secret.expose(), Some("hunter2"));
        assert_eq!(Secret::default().expose(), None);
        assert_eq!(Value::try_from(&secret).unwrap().as_str(), Some(REDACTED));
    }
}
