"""The HTTP server: the service's fixed routes over HTTP/1.1, with keep-alive and pipelining.

Hand-written on `asyncio.Protocol` because the service answers three fixed routes with
small bodies computed in memory, and a framework cost more than the rest of the service
together: measured in a generated project, aiohttp (server and client) added 11 MiB to the
idle RSS (51 MiB instead of 40) and 0.4 s to the 1.2 s start on a loaded machine, for the
routing and parsing that these few lines do. What it does, and nothing more:

- requests are parsed in order; pipelined requests are answered in order (handlers are
  synchronous, so an answer is complete before the next request is read);
- `GET` and `HEAD` on a route (`HEAD` without the body), 405 with `Allow` for any other
  method there, 404 for any other path; the query string is ignored for routing;
- HTTP/1.1 keeps the connection open unless `Connection: close`; HTTP/1.0 only with
  `Connection: keep-alive`;
- limits: the request line (8 KiB, else 414), the head (16 KiB, 100 fields, else 431), a
  body (64 KiB, read and discarded, else 413); a malformed request gets 400 and the
  connection is closed; a chunked body cannot be skipped without decoding it, so the
  answer closes the connection;
- a connection idle (or sending a request head) for 75 s is closed; a connection closed
  after an answer first stops sending and drops what the peer still sends for 2 s, so that
  the kernel does not reset it (and lose the answer) when unread data arrives;
- a peer that does not read its answers stops being read (backpressure).
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import NamedTuple

from .logging import get_logger

log = get_logger(__name__)

MAX_REQUEST_LINE_BYTES = 8 * 1024
MAX_HEAD_BYTES = 16 * 1024
MAX_HEADER_FIELDS = 100
MAX_BODY_BYTES = 64 * 1024
IDLE_TIMEOUT_SECS = 75.0
# After the last answer, what the peer still sends is read and dropped for this long.
LINGER_SECS = 2.0
# At shutdown, answers already written get this long to reach their peers.
CLOSE_GRACE_SECS = 1.0
ALLOWED_METHODS = ("GET", "HEAD")
TEXT = "text/plain; charset=utf-8"

_TCHARS = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_REQUEST_LINE = re.compile(rb"(" + _TCHARS + rb"+) ([!-~]+) HTTP/([0-9])\.([0-9])")
_HEADER_FIELD = re.compile(rb"(" + _TCHARS + rb"+):[ \t]*([^\x00\r\n]*?)[ \t]*")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"\r?\n")


class Response(NamedTuple):
    """An answer: status, body, and the body's content type."""

    status: int
    body: bytes
    content_type: str = TEXT


Handler = Callable[[], Response]
# Called once per routed request: (path, method, status); the caller bounds the label values.
OnAnswer = Callable[[str, str, int], None]


class _Rejected(Exception):
    """The request cannot be answered by a route; the connection closes after the answer."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class _Date:
    """The `Date` field's value, formatted once per second (RFC 9110: origin servers send it)."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = email.utils.formatdate(second, usegmt=True).encode("ascii")
        return self._value


class Server:
    """Serves `routes` (path -> handler) on one address; `on_answer` counts each routed request."""

    def __init__(self, routes: Mapping[str, Handler], on_answer: OnAnswer) -> None:
        self.routes = dict(routes)
        self.on_answer = on_answer
        self.date = _Date()
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Bind and listen (port 0 picks a free port); the bound port. OSError when it cannot bind."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and close every connection, once the answers already written are sent."""
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.close()
        try:
            async with asyncio.timeout(CLOSE_GRACE_SECS):
                await self._server.wait_closed()
        except TimeoutError:
            # A peer that does not read its answers would hold the shutdown: it is cut off.
            for connection in list(self.connections):
                connection.abort()
        self._server = None

    def answer(self, method: str, path: str) -> Response:
        """The routed answer to `method path`."""
        handler = self.routes.get(path)
        if handler is None:
            return Response(404, b"not found")
        if method not in ALLOWED_METHODS:
            return Response(405, b"method not allowed")
        try:
            return handler()
        except Exception as error:
            log.error("request failed", path=path, error=f"{type(error).__name__}: {error}")
            return Response(500, b"internal error")


class _Connection(asyncio.Protocol):
    """One client connection: parses its requests in order and writes the answers in order."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._skip = 0  # bytes of the current request's body still to discard
        self._writing_paused = False
        self._closing = False
        self._last_active = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server.connections.add(self)
        loop = asyncio.get_running_loop()
        self._last_active = loop.time()
        self._idle_timer = loop.call_later(IDLE_TIMEOUT_SECS, self._close_if_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # lingering after the last answer
        self._last_active = asyncio.get_running_loop().time()
        self._buffer += data
        self._process()

    def pause_writing(self) -> None:
        # The peer does not read its answers: stop reading its requests until it does.
        self._writing_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()
            self._process()

    # ------------------------------------------------------------------ requests
    def close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    def _finish(self) -> None:
        """Close after the last answer: send it, then linger (see the module's docstring)."""
        self._closing = True
        if self._transport is None:
            return
        if self._transport.can_write_eof():
            self._transport.write_eof()
            asyncio.get_running_loop().call_later(LINGER_SECS, self.close)
        else:
            self._transport.close()

    def _close_if_idle(self) -> None:
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._last_active
        if idle >= IDLE_TIMEOUT_SECS:
            self.close()
        else:
            self._idle_timer = loop.call_later(IDLE_TIMEOUT_SECS - idle, self._close_if_idle)

    def _process(self) -> None:
        """Answer every complete request in the buffer, in order."""
        buffer = self._buffer
        while not self._writing_paused and not self._closing:
            if self._skip:
                skipped = min(self._skip, len(buffer))
                del buffer[:skipped]
                self._skip -= skipped
                if self._skip:
                    return
            # Empty lines before a request line are ignored (RFC 9112, section 2.2).
            while buffer.startswith((b"\r\n", b"\n")):
                del buffer[: 2 if buffer.startswith(b"\r") else 1]
            end = _HEAD_END.search(buffer)
            if end is None:
                if len(buffer) > MAX_HEAD_BYTES:
                    first_line = _LINE_END.search(buffer)
                    if first_line is None and len(buffer) > MAX_REQUEST_LINE_BYTES:
                        self._reject(_Rejected(HTTPStatus.REQUEST_URI_TOO_LONG, "request line too long"))
                    else:
                        self._reject(_Rejected(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "head too large"))
                return
            head = bytes(buffer[: end.start()])
            del buffer[: end.end()]
            try:
                self._handle(head)
            except _Rejected as rejected:
                self._reject(rejected)

    def _handle(self, head: bytes) -> None:
        lines = _LINE_END.split(head)
        request_line = lines[0]
        if len(request_line) > MAX_REQUEST_LINE_BYTES:
            raise _Rejected(HTTPStatus.REQUEST_URI_TOO_LONG, "request line too long")
        if len(head) > MAX_HEAD_BYTES or len(lines) - 1 > MAX_HEADER_FIELDS:
            raise _Rejected(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "head too large")
        request = _REQUEST_LINE.fullmatch(request_line)
        if request is None:
            raise _Rejected(HTTPStatus.BAD_REQUEST, "malformed request line")
        method_bytes, target, major, minor = request.groups()
        if major != b"1":
            raise _Rejected(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "only HTTP/1.x is served")
        http11 = minor != b"0"

        self._skip, keep_alive = _framing(lines[1:], http11)
        method = method_bytes.decode("ascii")
        path = _path(target)
        response = self._server.answer(method, path)
        self._server.on_answer(path, method, response.status)
        self._write(response, method == "HEAD", keep_alive, http11)

    def _reject(self, rejected: _Rejected) -> None:
        body = f"{rejected.status.phrase.lower()}: {rejected}".encode()
        self._write(Response(rejected.status.value, body), head_only=False, keep_alive=False, http11=True)

    def _write(self, response: Response, head_only: bool, keep_alive: bool, http11: bool) -> None:
        if self._transport is None:
            return
        fields = [
            _status_line(response.status),
            b"Content-Type: " + response.content_type.encode("ascii"),
            b"Content-Length: %d" % len(response.body),
            b"Date: " + self._server.date.now(),
        ]
        if response.status == HTTPStatus.METHOD_NOT_ALLOWED:
            fields.append(b"Allow: " + ", ".join(ALLOWED_METHODS).encode("ascii"))
        if not keep_alive:
            fields.append(b"Connection: close")
        elif not http11:
            fields.append(b"Connection: keep-alive")
        head = b"\r\n".join(fields) + b"\r\n\r\n"
        self._transport.write(head if head_only else head + response.body)
        if not keep_alive:
            self._finish()


def _framing(fields: list[bytes], http11: bool) -> tuple[int, bool]:
    """From the header fields: the length of the body to skip, and whether to keep the connection."""
    options: list[bytes] = []
    lengths: set[bytes] = set()
    chunked = False
    hosts = 0
    for line in fields:
        field = _HEADER_FIELD.fullmatch(line)
        if field is None:
            raise _Rejected(HTTPStatus.BAD_REQUEST, "malformed header field")
        name, value = field.group(1).lower(), field.group(2)
        if name == b"connection":
            options += (option.strip().lower() for option in value.split(b","))
        elif name == b"content-length":
            lengths.update(length.strip() for length in value.split(b","))
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"host":
            hosts += 1
    if hosts > 1 or (http11 and hosts == 0):
        raise _Rejected(HTTPStatus.BAD_REQUEST, "an HTTP/1.1 request needs exactly one Host field")
    if chunked and lengths:
        # Both framings at once is how requests are smuggled (RFC 9112, section 6.3).
        raise _Rejected(HTTPStatus.BAD_REQUEST, "Content-Length and Transfer-Encoding together")
    length = 0
    if lengths:
        text = lengths.pop()
        if lengths or not text.isdigit():
            raise _Rejected(HTTPStatus.BAD_REQUEST, "malformed Content-Length")
        length = int(text)
        if length > MAX_BODY_BYTES:
            raise _Rejected(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
    # A chunked body cannot be skipped without decoding it: the connection closes instead.
    keep_alive = not chunked and (b"close" not in options if http11 else b"keep-alive" in options)
    return length, keep_alive


def _path(target: bytes) -> str:
    """The path of a request target (origin form `/a?b`, absolute form `http://h/a`, or `*`)."""
    text = target.decode("latin-1")
    if not text.startswith("/"):
        scheme, separator, rest = text.partition("://")
        if separator and scheme.lower() in ("http", "https"):
            authority_end = rest.find("/")
            text = rest[authority_end:] if authority_end >= 0 else "/"
        elif text != "*":
            raise _Rejected(HTTPStatus.BAD_REQUEST, "malformed request target")
    return text.partition("?")[0]


_status_lines: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    """`HTTP/1.1 200 OK`, built once per status."""
    line = _status_lines.get(status)
    if line is None:
        line = _status_lines[status] = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode("ascii")
    return line
