"""The example work: a periodic job that reads a value from an upstream, replaceable as a whole.

It shows the patterns in place:
- two stages: `prepare` is pure (the answer's body -> `Ready` or `Unprepared`), `finalize`
  does the side effect (write `last_value.json`, keep the value in memory);
- retries of transient errors only (`retry`), each counted;
- degraded mode: after an error the last good value is still served;
- the latency of successful calls as an EWMA gauge;
- at most `work.max_concurrency` runs at once, and no new run once shutdown has started.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import io
import json
import math
import os
import re
import ssl
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, urljoin, urlsplit

from .config import Work
from .errors import DomainError, InfrastructureError, Kind, classify, http_status_kind
from .health import Health
from .logging import get_logger
from .metrics import Metrics
from .retry import DELAYS, with_retries

log = get_logger(__name__)

EWMA_ALPHA = 0.3
# An attempt never waits longer than this, even with a long interval.
MAX_ATTEMPT_SECS = 10.0
# The answer is one small JSON object; anything bigger is not the answer this work expects.
MAX_ANSWER_BYTES = 1024 * 1024
# As the Rust flavour's HTTP client (reqwest): redirects are followed, at most 10.
MAX_REDIRECTS = 10
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

SpanFactory = Callable[[str], AbstractContextManager[object]]


def no_span(name: str) -> AbstractContextManager[object]:
    """The span factory when tracing is off."""
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Ready:
    """The answer holds a usable value."""

    value: float


@dataclass(frozen=True)
class Unprepared:
    """The answer holds no usable value, and why."""

    reason: str


def prepare(body: object) -> Ready | Unprepared:
    """Pure: the upstream's parsed answer, `{"value": <number>}`, to `Ready` or `Unprepared`."""
    if not isinstance(body, dict) or "value" not in body:
        return Unprepared('the answer is not a JSON object with a "value"')
    value = body["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return Unprepared(f'"value" is not a finite number: {json.dumps(value)[:40]}')
    return Ready(float(value))


class Ewma:
    """Exponentially weighted moving average: `new = alpha * value + (1 - alpha) * old`."""

    def __init__(self, alpha: float = EWMA_ALPHA) -> None:
        self.alpha = alpha
        self.value: float | None = None

    def update(self, sample: float) -> float:
        self.value = sample if self.value is None else self.alpha * sample + (1 - self.alpha) * self.value
        return self.value


@dataclass(frozen=True)
class LastGood:
    value: float
    fetched_at: int


class LastGoodStore:
    """`<data_dir>/last_value.json`, `{"value": 42.0, "fetched_at": 1764250000}`, written atomically."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "last_value.json"

    def load(self) -> LastGood | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return LastGood(float(data["value"]), int(data["fetched_at"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warn("ignoring unreadable last value", path=self.path, error=error)
            return None

    def save(self, last: LastGood) -> None:
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text(
            json.dumps({"value": last.value, "fetched_at": last.fetched_at}), encoding="utf-8"
        )
        os.replace(temporary, self.path)


class Upstream:
    """`GET <url>` with the bearer token; errors classified transient or persistent.

    Hand-written on asyncio streams, the answer parsed by the standard library's
    `http.client`: one GET per run needs no connection pool, and aiohttp's client (with its
    server) cost 11 MiB of RSS and 0.4 s of start. Each attempt opens a connection, sends
    `Connection: close` and reads the answer to its end, all within the attempt's timeout.
    Redirects are followed, at most 10, and the token is not sent to another origin.
    """

    def __init__(self, url: str, token: str, timeout: float) -> None:
        self._url = url
        self._token = token
        self._timeout = timeout
        self._tls: ssl.SSLContext | None = None

    async def fetch(self) -> object:
        if _CONTROL.search(self._token):
            raise DomainError("work.upstream_token holds a control character; allowed printable characters")
        try:
            async with asyncio.timeout(self._timeout):
                status, body = await self._get_following_redirects()
        except (OSError, TimeoutError, http.client.HTTPException) as error:
            raise InfrastructureError(
                f"cannot reach upstream: {type(error).__name__} {error}".strip()
            ) from error
        if status >= 400:
            raise InfrastructureError(f"upstream answered {status}", http_status_kind(status))
        try:
            return json.loads(body)
        except ValueError:
            raise DomainError("the upstream's answer is not JSON") from None

    async def _get_following_redirects(self) -> tuple[int, bytes]:
        url = self._url
        origin = _origin(_http_url(url))
        for _ in range(MAX_REDIRECTS + 1):
            parts = _http_url(url)
            token = self._token if _origin(parts) == origin else ""
            answer = await self._get(parts, token)
            location = answer.getheader("Location")
            if answer.status not in _REDIRECT_STATUSES or not location:
                return answer.status, answer.read()
            url = urljoin(url, location)
        raise InfrastructureError(f"upstream redirected more than {MAX_REDIRECTS} times", Kind.PERSISTENT)

    async def _get(self, parts: SplitResult, token: str) -> http.client.HTTPResponse:
        """One GET on a new connection; the whole answer, read and parsed."""
        assert parts.hostname is not None
        tls = self._tls_context() if parts.scheme == "https" else None
        port = parts.port or (443 if tls else 80)
        reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=tls)
        try:
            writer.write(_request(parts, token))
            received = bytearray()
            while chunk := await reader.read(64 * 1024):
                received += chunk
                if len(received) > MAX_ANSWER_BYTES:
                    raise DomainError(f"the upstream's answer is larger than {MAX_ANSWER_BYTES} bytes")
        finally:
            writer.close()
        answer = http.client.HTTPResponse(_Received(bytes(received)), method="GET")  # type: ignore[arg-type]
        answer.begin()
        return answer

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls


class _Received:
    """The bytes of a whole answer, as the socket that `http.client.HTTPResponse` reads from."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self._data)


def _http_url(url: str) -> SplitResult:
    """The parts of an http(s) URL; a redirect elsewhere is a persistent error."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (raises ValueError on a port out of range)
    except ValueError:
        parts = parts._replace(scheme="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InfrastructureError(f"upstream redirected to {url}, not an http(s) URL", Kind.PERSISTENT)
    return parts


def _origin(parts: SplitResult) -> tuple[str, str, int | None]:
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def _request(parts: SplitResult, token: str) -> bytes:
    """The request's bytes: `GET <path?query> HTTP/1.1` with Host, the token, `Connection: close`."""
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc.rpartition("@")[2]
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", "Accept: application/json", "Connection: close"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


class Worker:
    """Runs the work every `work.interval_secs`, bounded, and keeps the last good value."""

    def __init__(
        self,
        settings: Work,
        upstream: Upstream | None,
        store: LastGoodStore,
        metrics: Metrics,
        health: Health,
        span: SpanFactory = no_span,
        retry_delays: Sequence[float] = DELAYS,
    ) -> None:
        self._settings = settings
        self._upstream = upstream
        self._store = store
        self._metrics = metrics
        self._health = health
        self._span = span
        self._retry_delays = retry_delays
        self._semaphore = asyncio.Semaphore(settings.max_concurrency)
        self._runs: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.latency = Ewma()
        self.last = store.load()

    async def run_once(self) -> None:
        """One run: fetch with retries, prepare, finalize; on error keep the last good value."""
        if self._upstream is None:
            log.debug("work skipped: no upstream configured")
            return
        with self._span("work.run"):
            try:
                body = await with_retries(self._attempt, self._count_retry, self._retry_delays)
                prepared = prepare(body)
                if isinstance(prepared, Unprepared):
                    raise DomainError(prepared.reason)
                self._finalize(prepared.value)
            except Exception as error:
                kind = classify(error)
                self._metrics.errors.labels(kind.value).inc()
                self._metrics.degraded.set(1)
                self._health.set_unusable(self.last is None)
                log.warn("work failed, using last good value", kind=kind.value, error=error)

    async def _attempt(self) -> object:
        assert self._upstream is not None
        started = time.monotonic()
        body = await self._upstream.fetch()
        self._metrics.work_latency.set(self.latency.update(time.monotonic() - started))
        return body

    def _count_retry(self, error: BaseException, delay: float) -> None:
        self._metrics.retries.inc()
        log.debug("retrying", error=error, delay_secs=delay)

    def _finalize(self, value: float) -> None:
        last = LastGood(value, int(time.time()))
        self._store.save(last)
        self.last = last
        self._metrics.degraded.set(0)
        self._health.set_unusable(False)
        log.debug("work done", value=value)

    async def run_periodically(self, stop: asyncio.Event) -> None:
        """Start a run at once, then every interval, until `stop` is set."""
        while not stop.is_set():
            run = asyncio.create_task(self._bounded_run())
            self._runs.add(run)
            run.add_done_callback(self._runs.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.interval_secs)

    async def _bounded_run(self) -> None:
        async with self._semaphore:
            if not self._stopping:
                await self.run_once()

    async def drain(self) -> None:
        """No new run starts; wait for the runs in flight."""
        self._stopping = True
        if self._runs:
            await asyncio.gather(*self._runs)
