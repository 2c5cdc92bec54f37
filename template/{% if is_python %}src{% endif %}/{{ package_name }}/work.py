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
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from .config import Work
from .errors import DomainError, InfrastructureError, classify, http_status_kind
from .health import Health
from .logging import get_logger
from .metrics import Metrics
from .retry import DELAYS, with_retries

log = get_logger(__name__)

EWMA_ALPHA = 0.3
# An attempt never waits longer than this, even with a long interval.
MAX_ATTEMPT_SECS = 10.0

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
    """`GET <url>` with the bearer token; errors classified transient or persistent."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str, timeout: float) -> None:
        self._session = session
        self._url = url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def fetch(self) -> object:
        try:
            async with self._session.get(self._url, headers=self._headers, timeout=self._timeout) as response:
                if response.status >= 400:
                    raise InfrastructureError(
                        f"upstream answered {response.status}", http_status_kind(response.status)
                    )
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise InfrastructureError(
                f"cannot reach upstream: {type(error).__name__} {error}".strip()
            ) from error
        try:
            return json.loads(text)
        except ValueError:
            raise DomainError("the upstream's answer is not JSON") from None


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
