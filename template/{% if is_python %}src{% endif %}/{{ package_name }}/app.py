"""The service: `build()` opens every resource and binds, `run_until_stopped()` serves.

Start order: configuration (already validated), log files, PID file, directories, the HTTP
client session, the service part's `build`, HTTP bind, then ready and the service's jobs.
Each resource's lifecycle is one context manager, entered on one exit stack, so that
whatever fails half-way is closed in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp

from . import about, audit, directories, heartbeat, http, limits, pidfile, sd_notify, server, shutdown, tls
from .config import Loaded, Settings
from .context import Context, Job, ServicePart, SpanFactory, no_span
from .errors import os_reason
from .health import Health, Phase
from .logging import LogSink, get_logger, logs, parse_filter
from .metrics import Metrics
from .server import BindError

log = get_logger(__name__)

EXIT_OK, EXIT_RUNTIME = 0, 2

__all__ = ["EXIT_OK", "EXIT_RUNTIME", "App", "BindError", "build", "run", "serve"]


@dataclass
class App:
    """A started service: bound, not yet ready."""

    settings: Settings
    host: str
    port: int
    metrics: Metrics
    health: Health
    context: Context[Any]
    jobs: Sequence[Job]
    sink: LogSink
    server_tls: tls.ServerTls | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def run_until_stopped(self) -> int:
        """Serve until SIGTERM or SIGINT, then drain within `shutdown.timeout_secs`; the exit code.

        The service's jobs start once ready; at shutdown `stop` is set and they are awaited.
        """
        with shutdown.signals(on_hangup=self._reopen_logs, stop=self.context.stop) as signals:
            beats = asyncio.create_task(
                heartbeat.beat_forever(
                    Path(self.settings.paths.heartbeat_file),
                    self.settings.heartbeat.interval_secs,
                    self._on_beat,
                )
            )
            stopped = asyncio.create_task(signals.stop.wait())
            running: set[asyncio.Task[None]] = set()
            try:
                self.health.set_phase(Phase.READY)
                log.info("ready")
                sd_notify.notify("READY=1")
                running = {asyncio.create_task(job(), name=_name(job)) for job in self.jobs}
                await self._until_stopped(stopped, beats, running)
                log.info("shutting down", signal=signals.name)
                audit.record("shutdown", signal=signals.name)
                self.health.set_phase(Phase.DRAINING)
                sd_notify.notify("STOPPING=1")
                try:
                    async with asyncio.timeout(self.settings.shutdown.timeout_secs):
                        for job in running:
                            await job
                except TimeoutError:
                    log.error(
                        "CRITICAL shutdown overran its timeout",
                        timeout_secs=self.settings.shutdown.timeout_secs,
                    )
                    return EXIT_RUNTIME
                return EXIT_OK
            finally:
                background: list[asyncio.Task[Any]] = [beats, stopped, *running]
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)

    @staticmethod
    async def _until_stopped(
        stopped: asyncio.Task[Any], beats: asyncio.Task[None], running: set[asyncio.Task[None]]
    ) -> None:
        """Wait for the stop signal; a job that raises, or the heartbeat ending, is a crash (raised)."""
        pending: set[asyncio.Task[Any]] = {stopped, beats, *running}
        while not stopped.done():
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopped:
                    # A job may end before shutdown; one that raises takes the service down.
                    task.result()
                if task is beats:
                    raise RuntimeError("the heartbeat loop ended")

    def _on_beat(self, now: float) -> None:
        self.health.beat()
        self.metrics.heartbeat.set(int(now))  # whole seconds, as the heartbeat file
        sd_notify.notify("WATCHDOG=1")

    def _reopen_logs(self) -> None:
        """SIGHUP: reopen the log and audit files, reload the TLS certificate pair."""
        if self.sink.file_handler is not None:
            self.sink.reopen()
            log.info("log file reopened", path=self.settings.paths.log_file)
        audit.reopen()
        audit.record("reload", signal="SIGHUP")
        if self.server_tls is not None:
            self.server_tls.reload()


def _name(job: Job) -> str:
    return getattr(job, "__qualname__", None) or repr(job)


class StartError(Exception):
    """A resource the service needs cannot be made; the message is the error line's."""


def _make_dir(configured: str, mode: int | None = None) -> None:
    try:
        directories.make_dir(Path(configured), mode)
    except OSError as error:
        raise StartError(f"cannot create directory {configured}: {os_reason(error)}") from error


def worker_threads(configured: int) -> int:
    """`runtime.worker_threads`, 0 meaning the cores this process may run on."""
    if configured:
        return configured
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def server_limits(settings: Settings) -> server.Limits:
    """The connection limits of `[http]`."""
    http_settings = settings.http
    return server.Limits(
        header_timeout=http_settings.header_timeout_secs,
        idle_timeout=http_settings.idle_timeout_secs,
        write_timeout=http_settings.write_timeout_secs,
        max_connections=http_settings.max_connections,
    )


def _service_part() -> ServicePart:
    from . import service  # noqa: PLC0415 (the team's package, imported once the platform is up)

    return service


@contextlib.asynccontextmanager
async def build(
    loaded: Loaded,
    sink: LogSink,
    span: SpanFactory = no_span,
    part: ServicePart | None = None,
    transport: tls.Tls | None = None,
) -> AsyncIterator[App]:
    """Take the PID file, create the directories, build the service part, bind; then ready to run."""
    settings = loaded.settings
    transport = transport or tls.load(settings.http)
    paths = settings.paths
    part = part or _service_part()
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(pidfile.held(Path(paths.pid_file)))
        _make_dir(paths.data_dir, directories.DATA_DIR_MODE)
        _make_dir(paths.tmp_dir)
        directories.clean_tmp(paths.tmp_dir, paths.tmp_max_age_secs)
        threads = worker_threads(settings.runtime.worker_threads)
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix=about.PACKAGE)
        )
        metrics = Metrics(about.__version__, about.build_commit())
        health = Health(metrics, settings.heartbeat.interval_secs)
        client = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=transport.client))
        )
        context = Context(
            loaded.service,
            metrics,
            health,
            client,
            Path(paths.data_dir),
            Path(paths.tmp_dir),
            asyncio.Event(),
            span,
        )
        service = part.build(context)
        web_app = http.application(metrics, health, service.routes)
        limits.attach(metrics.exhaustion)
        stack.callback(limits.detach)
        server_tls = transport.server
        port = await stack.enter_async_context(
            server.serving(
                web_app,
                settings.http.host,
                settings.http.port,
                metrics,
                server_limits(settings),
                ssl=server_tls.context if server_tls is not None else None,
            )
        )
        app = App(
            settings, settings.http.host, port, metrics, health, context, service.jobs, sink, server_tls
        )
        log.info("listening", addr=app.address)
        yield app


async def serve(
    loaded: Loaded,
    span: SpanFactory = no_span,
    stream: IO[str] | None = None,
    part: ServicePart | None = None,
    on_start: Callable[[], None] | None = None,
    transport: tls.Tls | None = None,
) -> int:
    """Open the logs, build, run until stopped; every failure becomes a logged exit code.

    `on_start` logs what a module set up before the log lines were (the traces' endpoint).
    """
    settings = loaded.settings
    paths = settings.paths
    with (
        logs(parse_filter(settings.log.filter), Path(paths.log_file), stream, settings.log.target) as sink,
        audit.opened(Path(paths.audit_file)),
    ):
        log.info("starting", version=about.__version__, pid=os.getpid())
        if on_start is not None:
            on_start()
        audit.record("start", version=about.__version__, pid=os.getpid(), config_sha256=loaded.digest())
        if loaded.secrets_read is not None:
            path, mode = loaded.secrets_read
            audit.record("secrets file read", path=path, mode=f"{mode:04o}")
        try:
            async with build(loaded, sink, span, part, transport) as app:
                code = await app.run_until_stopped()
        except pidfile.PidFileHeld as held:
            log.error("PID file is held by a live process", path=held.path, pid=held.pid)
            return EXIT_RUNTIME
        except (pidfile.PidFileError, StartError) as error:
            log.error("CRITICAL uncaught error", error=str(error))
            return EXIT_RUNTIME
        except BindError as error:
            log.error("cannot bind", addr=error.addr, error=error.reason)
            return EXIT_RUNTIME
        except Exception as error:
            log.error("CRITICAL uncaught error", error=f"{type(error).__name__}: {error}")
            return EXIT_RUNTIME
        if code == EXIT_OK:
            log.info("stopped")
        return code


def run(
    loaded: Loaded,
    span: SpanFactory = no_span,
    on_start: Callable[[], None] | None = None,
    transport: tls.Tls | None = None,
) -> int:
    """Run the service in the foreground; the process's exit code."""
    try:
        return asyncio.run(serve(loaded, span, on_start=on_start, transport=transport))
    except KeyboardInterrupt:
        # SIGINT before the handlers are installed: the start was cut short.
        print("interrupted while starting", file=sys.stderr)
        return EXIT_RUNTIME
