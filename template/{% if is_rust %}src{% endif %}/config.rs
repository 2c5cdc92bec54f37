//! Configuration: three layers, validated key by key before anything starts.
//!
//! 1. the base file (`--config`, default `cfg/config.toml`),
//! 2. the secrets file `${PREFIX}/key/env.toml` (optional, mode 0600 or stricter),
//! 3. environment variables `<SVC>_<SECTION>__<KEY>`, e.g. for a service named
//!    `order-router`: `ORDER_ROUTER_HTTP__PORT=9000` sets `http.port`;
//!    `APM_URL` sets `apm.url` and `RUST_LOG` sets `log.filter`.
//!
//! A later layer overrides an earlier one key by key. Every layer is parsed with `toml` and
//! checked key by key against [`KEYS`], so that *every* error is reported at once, each
//! naming the key and the layer (config-rs stops at the first error and silently turns
//! `"9000"` into `9000`, which the contract counts as a wrong type). The merged table is
//! then deserialized into [`Settings`], whose structs deny unknown fields as a last guard.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::{Table, Value};

use crate::service::settings::Work;

/// The service's name in kebab case, from Cargo.toml: `order-router`.
pub const SERVICE_NAME: &str = env!("CARGO_PKG_NAME");
/// Default of `http.port`: the port chosen when the project was generated.
const DEFAULT_HTTP_PORT: &str = env!("DEFAULT_HTTP_PORT");
/// Where the secrets file lives below `PREFIX`.
const SECRETS_FILE: &str = "key/env.toml";
const DEFAULT_PREFIX: &str = "/srv";

/// `order-router` -> `order_router` (metric prefix, module paths).
pub fn snake_name() -> String {
    SERVICE_NAME.replace('-', "_")
}

/// `order-router` -> `ORDER_ROUTER_` (environment variable prefix).
pub fn env_prefix() -> String {
    format!("{}_", snake_name().to_uppercase())
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

/// What a key accepts; each kind has one parser and one "allowed" text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An IP address or a host name.
    Text,
    /// A non-empty path; `${PREFIX}` is expanded.
    Path,
    /// 1-65535, or 0 to pick a free port.
    Port,
    /// `RUST_LOG` syntax.
    Filter,
    /// A number of seconds > 0, fractions allowed.
    Seconds,
    /// 1-1024.
    Concurrency,
    /// Empty, or an http(s) URL.
    OptionalUrl,
    /// A string that never appears in any output.
    Secret,
}

/// One key of the contract's key table.
struct Key {
    section: &'static str,
    name: &'static str,
    kind: Kind,
}

const fn key(section: &'static str, name: &'static str, kind: Kind) -> Key {
    Key {
        section,
        name,
        kind,
    }
}

/// Every key, in the order of the contract's key table (and of `check-config`).
const KEYS: &[Key] = &[
    key("http", "host", Kind::Text),
    key("http", "port", Kind::Port),
    key("log", "filter", Kind::Filter),
    key("paths", "log_file", Kind::Path),
    key("paths", "pid_file", Kind::Path),
    key("paths", "heartbeat_file", Kind::Path),
    key("paths", "data_dir", Kind::Path),
    key("paths", "tmp_dir", Kind::Path),
    key("heartbeat", "interval_secs", Kind::Seconds),
    key("shutdown", "timeout_secs", Kind::Seconds),
    key("work", "interval_secs", Kind::Seconds),
    key("work", "max_concurrency", Kind::Concurrency),
    key("work", "upstream_url", Kind::OptionalUrl),
    key("work", "upstream_token", Kind::Secret),
    key("apm", "url", Kind::OptionalUrl),
];

const SECTIONS: &[&str] = &[
    "http",
    "log",
    "paths",
    "heartbeat",
    "shutdown",
    "work",
    "apm",
];

impl Key {
    fn dotted(&self) -> String {
        format!("{}.{}", self.section, self.name)
    }

    fn default_value(&self) -> Value {
        let text = |s: String| Value::String(s);
        match (self.section, self.name) {
            ("http", "host") => text("127.0.0.1".into()),
            ("http", "port") => Value::Integer(DEFAULT_HTTP_PORT.parse().unwrap_or(8080)),
            ("log", "filter") => text("info".into()),
            ("paths", "log_file") => text(format!("./log/{SERVICE_NAME}.log")),
            ("paths", "pid_file") => text(format!("${{PREFIX}}/run/{SERVICE_NAME}.pid")),
            ("paths", "heartbeat_file") => text(format!("./tmp/{SERVICE_NAME}.heartbeat")),
            ("paths", "data_dir") => text(format!("${{PREFIX}}/data/{SERVICE_NAME}")),
            ("paths", "tmp_dir") => text("./tmp".into()),
            ("heartbeat", "interval_secs") => Value::Float(10.0),
            ("shutdown", "timeout_secs") => Value::Float(30.0),
            ("work", "interval_secs") => Value::Float(60.0),
            ("work", "max_concurrency") => Value::Integer(4),
            _ => text(String::new()),
        }
    }
}

impl Kind {
    fn allowed(self) -> &'static str {
        match self {
            Kind::Text => "allowed an IP address or host name",
            Kind::Path => "allowed a non-empty path (${PREFIX} is expanded)",
            Kind::Port => "allowed 1-65535 (0 picks a free port)",
            Kind::Filter => {
                "allowed a level (off, error, warn, info, debug, trace) and/or module=level pairs, comma separated"
            }
            Kind::Seconds => "allowed a number of seconds > 0 (fractions allowed)",
            Kind::Concurrency => "allowed 1-1024",
            Kind::OptionalUrl => "allowed an http(s) URL, or empty",
            Kind::Secret => "allowed a string (a secret)",
        }
    }

    /// Turns an environment variable's text into a typed value (parsing is per kind).
    fn parse_env_text(self, text: &str) -> Result<Value, String> {
        match self {
            Kind::Port | Kind::Concurrency => {
                text.trim().parse::<i64>().map(Value::Integer).map_err(|_| {
                    format!(
                        "{} is not a whole number",
                        literal(&Value::String(text.into()))
                    )
                })
            }
            Kind::Seconds => {
                text.trim().parse::<f64>().map(Value::Float).map_err(|_| {
                    format!("{} is not a number", literal(&Value::String(text.into())))
                })
            }
            _ => Ok(Value::String(text.into())),
        }
    }

    /// Checks a typed value; returns the normalised value or what is wrong with it.
    fn check(self, value: &Value) -> Result<Value, String> {
        let shown = if self == Kind::Secret {
            "[redacted]".to_string()
        } else {
            literal(value)
        };
        match (self, value) {
            (Kind::Port, Value::Integer(n)) if (0..=65535).contains(n) => Ok(value.clone()),
            (Kind::Concurrency, Value::Integer(n)) if (1..=1024).contains(n) => Ok(value.clone()),
            (Kind::Port | Kind::Concurrency, Value::Integer(_)) => {
                Err(format!("{shown} is out of range"))
            }
            (Kind::Port | Kind::Concurrency, _) => Err(format!("{shown} is not a whole number")),
            (Kind::Seconds, Value::Integer(n)) if *n > 0 => Ok(Value::Float(*n as f64)),
            (Kind::Seconds, Value::Float(x)) if x.is_finite() && *x > 0.0 => Ok(value.clone()),
            (Kind::Seconds, Value::Integer(_) | Value::Float(_)) => {
                Err(format!("{shown} is out of range"))
            }
            (Kind::Seconds, _) => Err(format!("{shown} is not a number")),
            (_, Value::String(s)) => self.check_text(s).map(|()| value.clone()),
            _ => Err(format!("{shown} is not a string")),
        }
    }

    fn check_text(self, text: &str) -> Result<(), String> {
        match self {
            Kind::Text if !is_host(text) => Err(format!(
                "{} is not an IP address or host name",
                literal(&Value::String(text.into()))
            )),
            Kind::Path if text.trim().is_empty() => Err("the path is empty".into()),
            Kind::Filter if text.trim().is_empty() => Err("the filter is empty".into()),
            Kind::Filter => crate::logging::parse_filter(text).map(|_| ()).map_err(|e| {
                format!(
                    "{} is not a valid filter ({e})",
                    literal(&Value::String(text.into()))
                )
            }),
            Kind::OptionalUrl if !text.is_empty() => match url::Url::parse(text) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
                _ => Err(format!(
                    "{} is not an http(s) URL",
                    literal(&Value::String(text.into()))
                )),
            },
            _ => Ok(()),
        }
    }
}

/// An IP address, or a host name of dot-separated labels (letters, digits, inner hyphens).
fn is_host(text: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    text.parse::<std::net::IpAddr>().is_ok() || (text.len() <= 253 && text.split('.').all(label))
}

/// A value written as a TOML literal: `"127.0.0.1"`, `9000`, `10.0`.
fn literal(value: &Value) -> String {
    match value {
        Value::Float(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.1}"),
        other => other.to_string(),
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

    fn origin(&self, var: Option<&str>) -> String {
        match var {
            Some(var) => format!("{} {var}", self.layer),
            None => self.layer.to_string(),
        }
    }

    /// Validates one raw value and keeps it, or records why it was refused.
    fn set(
        &mut self,
        key: &Key,
        raw: Result<Value, String>,
        var: Option<String>,
        errors: &mut ConfigError,
    ) {
        match raw.and_then(|v| key.kind.check(&v)) {
            Ok(value) => {
                self.entries.insert(key.dotted(), value);
            }
            Err(what) => {
                let origin = self.origin(var.as_deref());
                errors.push(format!(
                    "{} ({origin}): {what}; {}",
                    key.dotted(),
                    key.kind.allowed()
                ));
            }
        }
    }

    /// Reads a parsed TOML file: known sections of known keys only.
    fn from_table(layer: Layer, table: &Table, errors: &mut ConfigError) -> Self {
        let mut values = Self::new(layer);
        for (section, content) in table {
            if !SECTIONS.contains(&section.as_str()) {
                errors.push(format!(
                    "{section} ({layer}): unknown key; allowed tables: {}",
                    SECTIONS.join(", ")
                ));
                continue;
            }
            let Value::Table(keys) = content else {
                errors.push(format!(
                    "{section} ({layer}): {} is not a table; allowed keys of [{section}]: {}",
                    literal(content),
                    keys_of(section)
                ));
                continue;
            };
            for (name, value) in keys {
                match find_key(section, name) {
                    Some(key) => values.set(key, Ok(value.clone()), None, errors),
                    None => errors.push(unknown_key(section, name, &layer.to_string())),
                }
            }
        }
        values
    }

    /// Reads `<SVC>_<SECTION>__<KEY>` variables, `APM_URL` and `RUST_LOG`.
    fn from_env(vars: &[(String, String)], errors: &mut ConfigError) -> Self {
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
            match find_key(&section, &name) {
                Some(key) => values.set(
                    key,
                    key.kind.parse_env_text(text),
                    Some(var.clone()),
                    errors,
                ),
                None => errors.push(unknown_key(&section, &name, &format!("env {var}"))),
            }
        }
        for (var, dotted) in [("APM_URL", "apm.url"), ("RUST_LOG", "log.filter")] {
            let set = vars
                .iter()
                .find(|(name, text)| name == var && !text.is_empty());
            if let (Some((_, text)), Some(key)) = (set, KEYS.iter().find(|k| k.dotted() == dotted))
            {
                values.set(
                    key,
                    Ok(Value::String(text.clone())),
                    Some(var.to_string()),
                    errors,
                );
            }
        }
        values
    }
}

fn find_key(section: &str, name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.section == section && k.name == name)
}

fn keys_of(section: &str) -> String {
    KEYS.iter()
        .filter(|k| k.section == section)
        .map(|k| k.name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn unknown_key(section: &str, name: &str, origin: &str) -> String {
    if SECTIONS.contains(&section) {
        format!(
            "{section}.{name} ({origin}): unknown key; allowed keys of [{section}]: {}",
            keys_of(section)
        )
    } else {
        format!(
            "{section}.{name} ({origin}): unknown key; allowed tables: {}",
            SECTIONS.join(", ")
        )
    }
}

/// Reads and parses one TOML file; `None` when an optional file is missing.
fn read_toml(path: &Path, required: bool, errors: &mut ConfigError) -> Option<Table> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            errors.push(format!("cannot read {}: {e}", path.display()));
            return None;
        }
    };
    match text.parse::<Table>() {
        Ok(table) => Some(table),
        Err(e) => {
            let message = e.to_string().trim().replace('\n', " ");
            errors.push(format!("{}: {message}", path.display()));
            None
        }
    }
}

/// Refuses a secrets file that group or others may read or write.
fn check_secrets_mode(path: &Path, errors: &mut ConfigError) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return true; // a missing file is an empty layer; read errors are reported on reading
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return true;
    }
    let shown = path.display();
    errors.push(format!(
        "secrets file {shown} has mode {mode:04o}; it must not be accessible by group or others (chmod 600 {shown})"
    ));
    false
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub filter: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    pub log_file: PathBuf,
    pub pid_file: PathBuf,
    pub heartbeat_file: PathBuf,
    pub data_dir: PathBuf,
    pub tmp_dir: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub interval_secs: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shutdown {
    pub timeout_secs: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Apm {
    pub url: String,
}

/// The effective, validated configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub http: Http,
    pub log: Log,
    pub paths: Paths,
    pub heartbeat: Heartbeat,
    pub shutdown: Shutdown,
    pub work: Work,
    pub apm: Apm,
}

impl Settings {
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat.interval_secs)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown.timeout_secs)
    }

    pub fn work_interval(&self) -> Duration {
        Duration::from_secs_f64(self.work.interval_secs)
    }
}

/// The settings and, for each key, the layer it came from.
#[derive(Debug)]
pub struct Loaded {
    pub settings: Settings,
    table: Table,
    layers: BTreeMap<String, Layer>,
}

impl Loaded {
    /// The layer a key's effective value came from (`"http.port"`).
    pub fn layer_of(&self, dotted: &str) -> Layer {
        self.layers.get(dotted).copied().unwrap_or(Layer::Default)
    }

    /// `check-config`'s report: one `<key> = <value> (<layer>)` line per key.
    pub fn report(&self) -> Vec<String> {
        KEYS.iter()
            .map(|key| {
                let dotted = key.dotted();
                let value = &self.table[key.section][key.name];
                let shown = match (key.kind, value) {
                    (Kind::Secret, Value::String(s)) if !s.is_empty() => {
                        "\"[redacted]\"".to_string()
                    }
                    _ => literal(value),
                };
                format!("{dotted} = {shown} ({})", self.layer_of(&dotted))
            })
            .collect()
    }
}

/// Loads the three layers, reports every error at once, and returns the merged settings.
pub fn load(sources: &Sources) -> Result<Loaded, ConfigError> {
    let mut errors = ConfigError::default();
    let mut layers = Vec::new();
    if let Some(table) = read_toml(&sources.base_file, true, &mut errors) {
        layers.push(LayerValues::from_table(Layer::Base, &table, &mut errors));
    }
    let secrets = sources.secrets_file();
    if check_secrets_mode(&secrets, &mut errors)
        && let Some(table) = read_toml(&secrets, false, &mut errors)
    {
        layers.push(LayerValues::from_table(Layer::Secrets, &table, &mut errors));
    }
    layers.push(LayerValues::from_env(&sources.env, &mut errors));
    if !errors.lines.is_empty() {
        return Err(errors);
    }

    let mut table = Table::new();
    let mut origin = BTreeMap::new();
    for key in KEYS {
        let dotted = key.dotted();
        let mut value = key.default_value();
        for layer in &layers {
            if let Some(set) = layer.entries.get(&dotted) {
                value = set.clone();
                origin.insert(dotted.clone(), layer.layer);
            }
        }
        if let (Kind::Path, Value::String(path)) = (key.kind, &value) {
            value = Value::String(path.replace("${PREFIX}", &sources.prefix));
        }
        let section = table
            .entry(key.section)
            .or_insert_with(|| Value::Table(Table::new()));
        if let Value::Table(section) = section {
            section.insert(key.name.to_string(), value);
        }
    }
    let settings = Settings::deserialize(Value::Table(table.clone())).map_err(|e| ConfigError {
        lines: vec![format!("config error: {e}")],
    })?;
    Ok(Loaded {
        settings,
        table,
        layers: origin,
    })
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

    #[test]
    fn defaults_fill_every_key_and_prefix_is_expanded() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load(&sources(dir.path(), "", &[])).unwrap();
        assert_eq!(loaded.settings.http.host, "127.0.0.1");
        assert_eq!(loaded.settings.work.max_concurrency, 4);
        assert_eq!(
            loaded.settings.paths.pid_file,
            dir.path().join(format!("run/{SERVICE_NAME}.pid"))
        );
        assert_eq!(loaded.layer_of("http.port"), Layer::Default);
        assert_eq!(loaded.report().len(), KEYS.len());
    }

    #[test]
    fn later_layers_override_key_by_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("key")).unwrap();
        let secrets = dir.path().join(SECRETS_FILE);
        std::fs::write(
            &secrets,
            "[work]\nupstream_token = \"hunter2\"\nmax_concurrency = 8\n",
        )
        .unwrap();
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
        let port_var = var("HTTP__PORT");
        let src = sources(
            dir.path(),
            "[http]\nport = 9000\nhost = \"0.0.0.0\"\n[work]\nmax_concurrency = 2\n",
            &[(&port_var, "9100"), ("APM_URL", "http://apm:4318")],
        );
        let loaded = load(&src).unwrap();
        assert_eq!(loaded.settings.http.port, 9100);
        assert_eq!(loaded.layer_of("http.port"), Layer::Env);
        assert_eq!(loaded.layer_of("http.host"), Layer::Base);
        assert_eq!(loaded.settings.work.max_concurrency, 8);
        assert_eq!(loaded.layer_of("work.max_concurrency"), Layer::Secrets);
        assert_eq!(loaded.settings.work.token(), Some("hunter2"));
        assert_eq!(loaded.settings.apm.url, "http://apm:4318");
        let report = loaded.report().join("\n");
        assert!(report.contains("http.port = 9100 (env)"), "{report}");
        assert!(
            report.contains("http.host = \"0.0.0.0\" (base)"),
            "{report}"
        );
        assert!(
            report.contains("work.upstream_token = \"[redacted]\" (secrets)"),
            "{report}"
        );
        assert!(
            report.contains("heartbeat.interval_secs = 10.0 (default)"),
            "{report}"
        );
        assert!(!report.contains("hunter2"));
    }

    #[test]
    fn every_error_is_reported_with_key_and_layer() {
        let dir = tempfile::tempdir().unwrap();
        let port_var = var("HTTP__PORT");
        let bad_var = var("WORK__NOPE");
        let src = sources(
            dir.path(),
            "[http]\nportt = 1\n[work]\nmax_concurrency = 0\nupstream_url = \"ftp://x\"\n[heartbeat]\ninterval_secs = \"10\"\n",
            &[
                (&port_var, "70000"),
                (&bad_var, "1"),
                (&var("UNRELATED"), "x"),
            ],
        );
        let lines = load(&src).unwrap_err().lines;
        let expected = [
            "config error: http.portt (base): unknown key; allowed keys of [http]: host, port"
                .to_string(),
            "config error: work.max_concurrency (base): 0 is out of range; allowed 1-1024"
                .to_string(),
            format!(
                "config error: http.port (env {port_var}): 70000 is out of range; allowed 1-65535 (0 picks a free port)"
            ),
            format!(
                "config error: work.nope (env {bad_var}): unknown key; allowed keys of [work]: interval_secs, max_concurrency, upstream_url, upstream_token"
            ),
        ];
        for line in &expected {
            assert!(lines.contains(line), "missing {line:?} in {lines:#?}");
        }
        assert!(lines.iter().any(|l| l.starts_with(
            "config error: work.upstream_url (base): \"ftp://x\" is not an http(s) URL"
        )));
        assert!(lines.iter().any(|l| {
            l.starts_with("config error: heartbeat.interval_secs (base): \"10\" is not a number")
        }));
        assert_eq!(lines.len(), 6, "{lines:#?}");
    }

    #[test]
    fn an_open_secrets_file_is_refused_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("key")).unwrap();
        let secrets = dir.path().join(SECRETS_FILE);
        std::fs::File::create(&secrets)
            .unwrap()
            .write_all(b"[work]\nupstream_token = \"x\"\n")
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
                "config error: log.filter (env RUST_LOG): \"a=b=c\" is not a valid filter"
            ),
            "{lines:?}"
        );
    }

    #[test]
    fn secrets_never_show_in_errors_or_debug() {
        let dir = tempfile::tempdir().unwrap();
        let src = sources(dir.path(), "[work]\nupstream_token = 12345\n", &[]);
        let lines = load(&src).unwrap_err().lines;
        assert_eq!(
            lines,
            [
                "config error: work.upstream_token (base): [redacted] is not a string; allowed a string (a secret)"
            ]
        );
        let token_var = var("WORK__UPSTREAM_TOKEN");
        let loaded = load(&sources(dir.path(), "", &[(&token_var, "s3cret")])).unwrap();
        assert!(!format!("{:?}", loaded.settings).contains("s3cret"));
    }
}
