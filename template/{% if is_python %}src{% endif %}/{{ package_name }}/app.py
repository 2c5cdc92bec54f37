"""The service: `build()` opens every resource and binds, `run_until_stopped()` serves.

Start order: configuration (already validated), log files, PID file, directories, HTTP
bind, then ready. Each resource's lifecycle is one context manager, entered on one exit
stack, so that whatever fails half-way is closed in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from . import about, heartbeat, pidfile, sd_notify, shutdown
from .config import Settings
from .health import Health, Phase
from .logging import LogSink, get_logger, logs, parse_filter
from .metrics import ROUTES, Metrics
from .server import Server
from .service.jobs import MAX_ATTEMPT_SECS, LastGoodStore, SpanFactory, Upstream, Worker, no_span

log = get_logger(__name__)

EXIT_OK, EXIT_RUNTIME = 0, 2


class BindError(Exception):
    """The HTTP address cannot be bound."""

    def __init__(self, addr: str, reason: str) -> None:
        super().__init__(f"cannot bind {addr}: {reason}")
        self.addr = addr
        self.reason = reason


@dataclass
class App:
    """A started service: bound, not yet ready."""

    settings: Settings
    host: str
    port: int
    metrics: Metrics
    health: Health
    worker: Worker
    sink: LogSink
    server: Server

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def run_until_stopped(self) -> int:
        """Serve until SIGTERM or SIGINT, then drain within `shutdown.timeout_secs`; the exit code."""
        with shutdown.signals(on_hangup=self._reopen_logs) as signals:
            beats = asyncio.create_task(
                heartbeat.beat_forever(
                    Path(self.settings.paths.heartbeat_file),
                    self.settings.heartbeat.interval_secs,
                    self._on_beat,
                )
            )
            runs = asyncio.create_task(self.worker.run_periodically(signals.stop))
            stopped = asyncio.create_task(signals.stop.wait())
            try:
                self.health.set_phase(Phase.READY)
                log.info("ready")
                sd_notify.notify("READY=1")
                await asyncio.wait({stopped, beats, runs}, return_when=asyncio.FIRST_COMPLETED)
                for task in (beats, runs):
                    if task.done():
                        # A background loop ended on its own: that is a crash, reported by the caller.
                        task.result()
                log.info("shutting down", signal=signals.name)
                self.health.set_phase(Phase.DRAINING)
                sd_notify.notify("STOPPING=1")
                try:
                    async with asyncio.timeout(self.settings.shutdown.timeout_secs):
                        await runs
                        await self.worker.drain()
                        await self.server.close()
                except TimeoutError:
                    log.error(
                        "CRITICAL shutdown overran its timeout",
                        timeout_secs=self.settings.shutdown.timeout_secs,
                    )
                    return EXIT_RUNTIME
                return EXIT_OK
            finally:
                background: list[asyncio.Task[Any]] = [beats, runs, stopped]
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)

    def _on_beat(self, now: float) -> None:
        self.health.beat()
        self.metrics.heartbeat.set(now)
        sd_notify.notify("WATCHDOG=1")

    def _reopen_logs(self) -> None:
        self.sink.reopen()
        log.info("log file reopened", path=self.sink.path)


def _make_dir(path: Path, mode: int | None = None) -> None:
    if path.is_dir():
        return
    path.mkdir(parents=True, exist_ok=True)
    if mode is not None:
        # mkdir's mode is masked by the umask; the contract wants exactly this one.
        path.chmod(mode)


@contextlib.asynccontextmanager
async def _serving(server: Server, host: str, port: int) -> AsyncIterator[int]:
    """The HTTP server, bound on entry (port 0 picks a free port), closed on exit; the bound port."""
    try:
        bound = await server.start(host, port)
    except OSError as error:
        raise BindError(f"{host}:{port}", str(error.strerror or error)) from error
    try:
        yield bound
    finally:
        await server.close()


def _http_server(metrics: Metrics, health: Health) -> Server:
    live, ready, metrics_route = ROUTES
    routes = {live: health.handle_live, ready: health.handle_ready, metrics_route: metrics.handle}
    return Server(routes, metrics.count_request)


@contextlib.asynccontextmanager
async def build(settings: Settings, sink: LogSink, span: SpanFactory = no_span) -> AsyncIterator[App]:
    """Take the PID file, create the directories, bind; the App is then ready to run."""
    paths = settings.paths
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(pidfile.held(Path(paths.pid_file)))
        _make_dir(Path(paths.data_dir), stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP)
        _make_dir(Path(paths.tmp_dir))
        metrics = Metrics(about.__version__, about.build_commit())
        health = Health(metrics, settings.heartbeat.interval_secs)
        upstream = None
        if settings.work.upstream_url:
            upstream = Upstream(
                settings.work.upstream_url,
                settings.work.upstream_token.get_secret_value(),
                min(settings.work.interval_secs, MAX_ATTEMPT_SECS),
            )
        worker = Worker(settings.work, upstream, LastGoodStore(Path(paths.data_dir)), metrics, health, span)
        server = _http_server(metrics, health)
        port = await stack.enter_async_context(_serving(server, settings.http.host, settings.http.port))
        app = App(settings, settings.http.host, port, metrics, health, worker, sink, server)
        log.info("listening", addr=app.address)
        yield app


async def serve(settings: Settings, span: SpanFactory = no_span, stream: IO[str] | None = None) -> int:
    """Open the logs, build, run until stopped; every failure becomes a logged exit code."""
    paths = settings.paths
    with logs(parse_filter(settings.log.filter), Path(paths.log_file), stream) as sink:
        log.info("starting", version=about.__version__, pid=os.getpid())
        try:
            async with build(settings, sink, span) as app:
                code = await app.run_until_stopped()
        except pidfile.PidFileHeld as held:
            log.error("PID file is held by a live process", path=held.path, pid=held.pid)
            return EXIT_RUNTIME
        except BindError as error:
            log.error("CRITICAL cannot bind", addr=error.addr, error=error.reason)
            return EXIT_RUNTIME
        except Exception as error:
            log.error("CRITICAL uncaught error", error=f"{type(error).__name__}: {error}")
            return EXIT_RUNTIME
        if code == EXIT_OK:
            log.info("stopped")
        return code


def run(settings: Settings, span: SpanFactory = no_span) -> int:
    """Run the service in the foreground; the process's exit code."""
    try:
        return asyncio.run(serve(settings, span))
    except KeyboardInterrupt:
        # SIGINT before the handlers are installed: the start was cut short.
        print("interrupted while starting", file=sys.stderr)
        return EXIT_RUNTIME
