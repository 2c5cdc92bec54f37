//! The service: build (take the PID file, prepare directories, build the service part,
//! bind), then run until a signal.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use thiserror::Error;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::context::{Context, Job, Service};
use crate::health::Health;
use crate::heartbeat::Heartbeat;
use crate::logging::LogFile;
use crate::metrics::{Exporter, Handles, Metrics};
use crate::pidfile::{PidFile, PidFileError};
use crate::sd_notify;
use crate::shutdown::{self, Listener, Signal, Signals, Trigger};
use crate::tls::{self, ServerTls};
use crate::{audit, directories, http, limits, server, service};

/// Why the service could not start or stop cleanly: runtime errors, exit code 2.
#[derive(Debug, Error)]
pub enum AppError {
    #[error(transparent)]
    PidFile(#[from] PidFileError),
    #[error("cannot create directory {path}: {}", crate::errors::os_reason(source))]
    Directory { path: String, source: io::Error },
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error("cannot write the heartbeat file: {0}")]
    Heartbeat(io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot build the service part: {0}")]
    Service(String),
    #[error("shutdown overran its timeout of {0}s")]
    ShutdownOverran(f64),
    #[error("HTTP server failed: {0}")]
    Serve(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// How the service stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Drained in time: exit 0.
    Clean,
    /// A second SIGINT cut the drain short: exit 2.
    Interrupted,
}

/// A built service: PID file held, directories ready, port bound, not serving yet.
pub struct App {
    settings: Settings,
    listener: TcpListener,
    addr: SocketAddr,
    health: Arc<Health>,
    heartbeat: Heartbeat,
    router: Router,
    jobs: Vec<Job>,
    stop: (Trigger, Listener),
    log_file: Option<LogFile>,
    /// HTTPS: the pair reloaded on SIGHUP (`None`: plain HTTP).
    tls: Option<ServerTls>,
    signals: Signals,
    // Last field: dropped (the file removed) after everything else has stopped.
    _pid_file: PidFile,
}

fn directory_error(path: &std::path::Path) -> impl FnOnce(io::Error) -> AppError + '_ {
    move |source| AppError::Directory {
        path: path.display().to_string(),
        source,
    }
}

impl App {
    /// Takes the PID file, creates the directories, binds (port 0 picks a free port).
    ///
    /// Must run inside the Tokio runtime (binding and signal handlers need it).
    pub async fn build(
        settings: Settings,
        exporter: Exporter,
        log_file: Option<LogFile>,
    ) -> Result<Self, AppError> {
        let signals = Signals::install().map_err(AppError::Signals)?;
        let pid_file = PidFile::acquire(&settings.paths.pid_file)?;
        directories::make_dir(&settings.paths.data_dir, Some(directories::DATA_DIR_MODE))
            .map_err(directory_error(&settings.paths.data_dir))?;
        directories::make_dir(&settings.paths.tmp_dir, None)
            .map_err(directory_error(&settings.paths.tmp_dir))?;
        directories::clean_tmp(&settings.paths.tmp_dir, settings.paths.tmp_max_age_secs);

        let handles = Handles::new();
        let health = Health::new(settings.heartbeat_interval(), handles.clone());
        let heartbeat = Heartbeat::new(
            &settings.paths.heartbeat_file,
            health.clone(),
            handles.clone(),
        );
        heartbeat.beat().map_err(AppError::Heartbeat)?;

        let tls = tls::server(&settings.http)?;
        let stop = shutdown::channel();
        let mut client = reqwest::Client::builder().user_agent(concat!(
            env!("CARGO_PKG_NAME"),
            "/",
            env!("CARGO_PKG_VERSION")
        ));
        // Certificates are verified; http.client_ca_file adds authorities to the built-in ones.
        for authority in tls::client_authorities(&settings.http)? {
            client = client.add_root_certificate(authority);
        }
        let client = client.build()?;
        let context = Context {
            settings: Arc::new(settings.service.clone()),
            metrics: Metrics,
            handles: handles.clone(),
            health: health.clone(),
            client,
            data_dir: settings.paths.data_dir.clone(),
            tmp_dir: settings.paths.tmp_dir.clone(),
            stop: stop.1.clone(),
        };
        let Service { routes, jobs } =
            service::build(context).map_err(|e| AppError::Service(e.to_string()))?;
        let router = http::router(health.clone(), exporter, handles, routes);

        let wanted = format!("{}:{}", settings.http.host, settings.http.port);
        let listener = server::bind(&wanted)
            .await
            .map_err(|source| AppError::Bind {
                addr: wanted.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| AppError::Bind {
            addr: wanted,
            source,
        })?;
        tracing::info!(addr = %addr, "listening");
        Ok(Self {
            settings,
            listener,
            addr,
            health,
            heartbeat,
            router,
            jobs,
            stop,
            log_file,
            tls,
            signals,
            _pid_file: pid_file,
        })
    }

    /// The bound address (the real port when `http.port = 0`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid_file(&self) -> &std::path::Path {
        self._pid_file.path()
    }

    /// Serves and beats until SIGTERM or SIGINT, then drains within the shutdown timeout.
    pub async fn run_until_stopped(mut self) -> Result<Stopped, AppError> {
        let (trigger, _) = self.stop;
        // The server stops last, after the jobs have drained: until then it answers 503 on
        // ready, so that load balancers and operators can watch the drain.
        let (server_trigger, server_stop) = shutdown::channel();
        let limits = http_limits(&self.settings);
        let server = tokio::spawn(server::serve(
            self.listener,
            self.router,
            limits,
            self.tls.as_ref().map(ServerTls::acceptor),
            server_stop,
        ));

        self.health.set_running();
        tracing::info!("ready");
        sd_notify::notify(sd_notify::READY);
        let jobs: Vec<_> = self
            .jobs
            .into_iter()
            .map(|job| {
                tracing::debug!(job = job.name, "job started");
                tokio::spawn(job.task)
            })
            .collect();

        let mut beats = tokio::time::interval(self.settings.heartbeat_interval());
        beats.tick().await; // the first tick is immediate; build() already beat once
        let signal = loop {
            tokio::select! {
                _ = beats.tick() => {
                    if let Err(e) = self.heartbeat.beat() {
                        limits::heartbeat_failed(&e);
                    }
                }
                signal = self.signals.next() => match signal {
                    Signal::Hangup => on_hangup(self.log_file.as_ref(), self.tls.as_ref()),
                    stop_signal => break stop_signal,
                },
            }
        };

        // Draining first: whoever reads the line finds ready answering 503 already.
        self.health.start_draining();
        tracing::info!(signal = signal.name(), "shutting down");
        audit::record("shutdown", &[("signal", &signal.name())]);
        sd_notify::notify(sd_notify::STOPPING);
        trigger.fire();
        let timeout = self.settings.shutdown_timeout();
        let mut served = Ok(());
        let drain = async {
            for job in jobs {
                let _ = job.await;
            }
            server_trigger.fire();
            served = server.await.map_err(|e| e.to_string());
        };
        let outcome = tokio::select! {
            result = shutdown::drain_within(drain, timeout) => result,
            () = second_interrupt(&mut self.signals, self.log_file.as_ref(), self.tls.as_ref()) => return Ok(Stopped::Interrupted),
        };
        match outcome {
            Ok(()) => {
                served.map_err(AppError::Serve)?;
                tracing::info!("stopped");
                Ok(Stopped::Clean)
            }
            Err(shutdown::Overran) => {
                let timeout_secs = self.settings.shutdown.timeout_secs;
                tracing::error!(timeout_secs, "CRITICAL shutdown overran its timeout");
                Err(AppError::ShutdownOverran(timeout_secs))
            }
        }
    }
}

/// The connection limits of `[http]`.
pub fn http_limits(settings: &Settings) -> server::Limits {
    let secs = |value: f64| Duration::try_from_secs_f64(value).unwrap_or(Duration::MAX);
    server::Limits {
        header_timeout: secs(settings.http.header_timeout_secs),
        idle_timeout: secs(settings.http.idle_timeout_secs),
        write_timeout: secs(settings.http.write_timeout_secs),
        max_connections: usize::try_from(settings.http.max_connections).unwrap_or(usize::MAX),
    }
}

/// Resolves on a SIGINT during the drain (the operator insists); meanwhile SIGHUP still
/// reopens the log file and another SIGTERM changes nothing.
async fn second_interrupt(
    signals: &mut Signals,
    log_file: Option<&LogFile>,
    tls: Option<&ServerTls>,
) {
    loop {
        match signals.next().await {
            Signal::Interrupt => return,
            Signal::Hangup => on_hangup(log_file, tls),
            Signal::Terminate => {}
        }
    }
}

/// SIGHUP: reopen the log and audit files, reload the TLS certificate pair.
fn on_hangup(log_file: Option<&LogFile>, tls: Option<&ServerTls>) {
    reopen_log(log_file);
    audit::reopen();
    audit::record("reload", &[("signal", &"SIGHUP")]);
    if let Some(tls) = tls {
        tls.reload();
    }
}

fn reopen_log(log_file: Option<&LogFile>) {
    if let Some(file) = log_file {
        match file.reopen() {
            Ok(()) => tracing::info!(path = %file.path().display(), "log file reopened"),
            Err(e) => {
                tracing::error!(path = %file.path().display(), error = %e, "cannot reopen the log file")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Sources, load};
    use metrics_exporter_prometheus::PrometheusBuilder;

    fn settings(dir: &std::path::Path) -> Settings {
        let base_file = dir.join("config.toml");
        let paths = ["log_file", "heartbeat_file", "tmp_dir"]
            .map(|k| format!("{k} = \"{}/{k}\"\n", dir.display()))
            .concat();
        std::fs::write(&base_file, format!("[http]\nport = 0\n[paths]\n{paths}")).unwrap();
        let sources = Sources {
            base_file,
            prefix: dir.display().to_string(),
            env: Vec::new(),
        };
        load(&sources).unwrap().settings
    }

    #[tokio::test]
    async fn build_binds_a_free_port_and_holds_the_pid_file_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let handle = PrometheusBuilder::new().build_recorder().handle();
        let exporter = Exporter::with_handle(handle, "0.0.0", "test");

        let app = App::build(settings(dir.path()), exporter, None)
            .await
            .unwrap();

        assert_ne!(app.addr().port(), 0);
        let pid_file = app.pid_file().to_path_buf();
        assert!(pid_file.exists());
        assert!(dir.path().join("heartbeat_file").exists());
        drop(app);
        assert!(!pid_file.exists());
    }

    #[tokio::test]
    async fn a_taken_port_is_a_bind_error() {
        let dir = tempfile::tempdir().unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut settings = settings(dir.path());
        settings.http.port = taken.local_addr().unwrap().port().into();
        let handle = PrometheusBuilder::new().build_recorder().handle();
        let exporter = Exporter::with_handle(handle, "0.0.0", "test");

        let result = App::build(settings, exporter, None).await;

        assert!(matches!(result, Err(AppError::Bind { .. })));
    }
}
