"""The HTTP server's connections: the accept loop, its cap, and the deadlines of each connection.

aiohttp parses HTTP and runs the application; this module owns what happens around it, so
that hostile or broken clients cannot take the service down:

- at most `http.max_connections` connections are open (lowered at start to the file
  descriptor limit minus `FD_RESERVE`); when the cap is reached, new connections wait in the
  listen backlog, and `exhaustion_total{kind="connections"}` counts each time accept waits;
- running out of file descriptors (EMFILE/ENFILE) or memory on accept is counted and logged
  at most once per interval, and accept retries after `ACCEPT_RETRY_SECS`: never a crash;
- a request head must arrive whole within `http.header_timeout_secs` of its first byte;
- a connection with no request in progress is closed after `http.idle_timeout_secs`;
- a peer that does not read its answers for `http.write_timeout_secs` is disconnected;
- a peer that leaves cancels its request's handler and the requests it had pipelined;
- a request the parser refuses is answered (400, 413, 414, 431, 505) with the connection
  closed, counted in `http_requests_total{route="unknown"}` and logged at most once per
  interval (`WARN request rejected status=431 suppressed=N`).

`serving()` takes an optional `ssl.SSLContext`: the TLS handshake then runs on each accepted
connection within the header deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import ssl as ssl_module
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from . import limits
from .logging import get_logger
from .metrics import OTHER, UNKNOWN_ROUTE, Metrics

log = get_logger(__name__)

# At shutdown, requests in flight get this long to be answered once the jobs have stopped.
CLOSE_GRACE_SECS = 1.0
# File descriptors kept free of connections: log file, heartbeat, listener, the HTTP client...
FD_RESERVE = 64
# After accept fails for want of file descriptors or memory, the next try waits this long.
ACCEPT_RETRY_SECS = 0.1
# Connections the kernel queues while the cap is reached.
BACKLOG = 1024


class BindError(Exception):
    """The HTTP address cannot be bound."""

    def __init__(self, addr: str, reason: str) -> None:
        super().__init__(f"cannot bind {addr}: {reason}")
        self.addr = addr
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    """The limits of `[http]`, in seconds and connections."""

    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    write_timeout: float = 30.0
    max_connections: int = 1024


def fd_limit() -> int | None:
    """The soft limit on open file descriptors, or None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def connection_cap(configured: int, fds: int | None) -> int:
    """`http.max_connections`, lowered to leave `FD_RESERVE` descriptors free (at least 1)."""
    if fds is None:
        return configured
    return max(1, min(configured, fds - FD_RESERVE))


def rejected_status(status: int, error: BaseException | None) -> int:
    """The status of a request the parser refused: a line too long is 414 (URI) or 431 (header)."""
    if isinstance(error, LineTooLong):
        line = error.args[0] if error.args else b""
        text = bytes(line) if isinstance(line, (bytes, bytearray)) else str(line).encode("utf-8", "replace")
        return 414 if text.startswith(b"/") or b"://" in text[:16] else 431
    if isinstance(error, BadHttpMessage) and "too many headers" in str(error).lower():
        return 431
    return status


class _Handler(web_protocol.RequestHandler):
    """aiohttp's connection, with a deadline for each request head and one for writes."""

    def __init__(
        self,
        manager: web.Server,
        limits_: Limits,
        metrics: Metrics,
        on_lost: Callable[[], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, keepalive_timeout=limits_.idle_timeout, **kwargs)
        self._limits = limits_
        self._metrics = metrics
        self._on_lost = on_lost
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._heads = 0

    # -- request heads: from the first byte of a request to its parsed head
    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._cancel_head_timer()
        elif data and self._head_timer is None and not self._request_in_progress and not self._messages:
            self._head_timer = self._loop.call_later(self._limits.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        limits.warn("closed:header_timeout", "connection closed", reason="header_timeout")
        self._abort()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    # -- writes: a peer that does not read blocks them
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self._loop.call_later(self._limits.write_timeout, self._write_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_timed_out(self) -> None:
        self._write_timer = None
        limits.warn("closed:write_timeout", "connection closed", reason="write_timeout")
        self._abort()

    def _abort(self) -> None:
        # Before force_close(), which closes gracefully: after the buffered answers, never sent.
        if self.transport is not None:
            self.transport.abort()
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        # The peer is gone: what it pipelined is not answered.
        self._messages.clear()
        self._cancel_head_timer()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        try:
            super().connection_lost(exc)
        finally:
            on_lost, self._on_lost = self._on_lost, _nothing
            on_lost()

    # -- requests the parser refused
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status == 500:
            return super().handle_error(request, status, exc, message)
        if request.writer.output_size > 0:
            raise ConnectionError("the answer has already begun")
        return rejected(self._metrics, rejected_status(status, exc))


def rejected(metrics: Metrics, status: int) -> web.Response:
    """The answer to a request refused before routing: counted, logged at most once per interval."""
    metrics.count_request(UNKNOWN_ROUTE, OTHER, status)
    limits.warn("rejected", "request rejected", status=status)
    response = web.Response(status=status, text=HTTPStatus(status).phrase)
    response.force_close()
    return response


def _nothing() -> None:
    pass


async def _listen(host: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        sock = socket.create_server(address, family=family, backlog=BACKLOG)
    except OSError as error:
        raise BindError(f"{host}:{port}", str(error.strerror or error)) from error
    sock.setblocking(False)
    return sock


async def _accept_forever(
    sock: socket.socket,
    cap: int,
    factory: Callable[[Callable[[], None]], asyncio.Protocol],
    ssl: ssl_module.SSLContext | None,
    handshake_timeout: float,
) -> None:
    """Accept connections, at most `cap` open at once; accept errors never end the loop."""
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(cap)
    starting: set[asyncio.Task[Any]] = set()

    async def start(conn: socket.socket) -> None:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                slots.release()

        try:
            await loop.connect_accepted_socket(
                lambda: factory(release),
                conn,
                ssl=ssl,
                ssl_handshake_timeout=handshake_timeout if ssl else None,
            )
        except (TimeoutError, OSError, ssl_module.SSLError):
            conn.close()
            release()

    while True:
        if slots.locked():
            limits.exhausted("connections", max_connections=cap)
        await slots.acquire()
        try:
            conn, _ = await loop.sock_accept(sock)
        except OSError as error:
            slots.release()
            if error.errno in limits.FD_ERRNOS:
                limits.exhausted("file_descriptors")
            elif error.errno in limits.MEMORY_ERRNOS:
                limits.exhausted("connections", max_connections=cap)
            else:
                limits.warn("accept", "cannot accept a connection", error=error.strerror or str(error))
            await asyncio.sleep(ACCEPT_RETRY_SECS)
            continue
        conn.setblocking(False)
        task = loop.create_task(start(conn))
        starting.add(task)
        task.add_done_callback(starting.discard)


@contextlib.asynccontextmanager
async def serving(
    app: web.Application,
    host: str,
    port: int,
    metrics: Metrics,
    limits_: Limits = Limits(),
    ssl: ssl_module.SSLContext | None = None,
) -> AsyncIterator[int]:
    """Serve `app` on host:port (0 picks a free port) until the block ends; the bound port.

    With `ssl`, every connection is TLS, its handshake within `header_timeout`.
    """
    fds = fd_limit()
    cap = connection_cap(limits_.max_connections, fds)
    if cap < limits_.max_connections:
        log.warn(
            "http.max_connections lowered to fit the file descriptor limit",
            max_connections=cap,
            configured=limits_.max_connections,
            fd_limit=fds,
        )
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=CLOSE_GRACE_SECS,
        handler_cancellation=True,
    )
    await runner.setup()
    accepting: asyncio.Task[None] | None = None
    try:
        sock = await _listen(host, port)
        manager = runner.server
        assert manager is not None
        loop = asyncio.get_running_loop()

        def factory(on_lost: Callable[[], None]) -> asyncio.Protocol:
            return _Handler(manager, limits_, metrics, on_lost, loop=loop, access_log=None)

        accepting = loop.create_task(_accept_forever(sock, cap, factory, ssl, limits_.header_timeout))
        try:
            yield int(sock.getsockname()[1])
        finally:
            accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await accepting
            sock.close()
    finally:
        await runner.cleanup()
