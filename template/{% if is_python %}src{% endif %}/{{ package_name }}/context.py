"""What the platform hands the service part, and what the service part hands back.

The service part (`service/`) exposes two names, and the platform uses nothing else of it:

- `Settings`: a pydantic model whose fields are the service's configuration sections, each
  a `config.Section` (`work: Work = Work()`); an empty model is valid;
- `build(ctx: Context[Settings]) -> Part`: called once at start, before the HTTP server
  binds; returns the service's routes and jobs.

The platform mounts the routes beside its own (counted by route template, failures turned
into 500), starts the jobs once the service is ready, sets `ctx.stop` at shutdown and waits
for the jobs within `shutdown.timeout_secs`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import aiohttp
from aiohttp import web
from pydantic import BaseModel

from .health import Health
from .logging import get_logger
from .metrics import Metrics
from .retry import DELAYS, with_retries

log = get_logger(__name__)

S = TypeVar("S", bound=BaseModel)
T = TypeVar("T")

# A job: a coroutine function run once the service is ready; it returns once `ctx.stop` is set.
Job = Callable[[], Coroutine[Any, Any, None]]
# Opens a trace span around a block: `with ctx.span("work.run"): ...`.
SpanFactory = Callable[[str], AbstractContextManager[object]]


def no_span(name: str) -> AbstractContextManager[object]:
    """The span factory when tracing is off."""
    return contextlib.nullcontext()


@dataclass(frozen=True, eq=False)
class Context(Generic[S]):
    """The platform's resources for the service part.

    - `settings`: the service's own `Settings`, validated with every other key;
    - `metrics`: the registry; `metrics.counter(...)`, `metrics.gauge(...)` add prefixed metrics;
    - `health`: `health.set_degraded(...)` reports degraded mode (and readiness with it);
    - `http`: the platform's aiohttp client session, opened before `build` and closed after
      the jobs have stopped (`async with ctx.http.get(url) as answer: ...`);
    - `data_dir`, `tmp_dir`: the service's directories, created at start;
    - `stop`: set when shutdown starts; jobs finish their run and return;
    - `span`: opens a trace span (a no-op unless tracing is on);
    - `retry(attempt)`: the platform's retries of transient errors, each one counted.
    """

    settings: S
    metrics: Metrics
    health: Health
    http: aiohttp.ClientSession
    data_dir: Path
    tmp_dir: Path
    stop: asyncio.Event
    span: SpanFactory = no_span

    async def retry(self, attempt: Callable[[], Awaitable[T]], delays: Sequence[float] = DELAYS) -> T:
        """Await `attempt()`, retrying transient errors after 0.1, 0.2, 0.4, 0.8, 1.6 s."""
        return await with_retries(attempt, self.count_retry, delays)

    def count_retry(self, error: BaseException, delay: float) -> None:
        """Count one retry (`retries_total`) and log it at DEBUG."""
        self.metrics.retries.inc()
        log.debug("retrying", error=error, delay_secs=delay)


@dataclass(frozen=True)
class Part:
    """What the service part's `build` returns: its routes and its jobs (both may be empty)."""

    routes: Sequence[web.AbstractRouteDef] = ()
    jobs: Sequence[Job] = ()


class ServicePart(Protocol):
    """The interface of the `service` package (or of a stand-in, in the platform's tests)."""

    @property
    def Settings(self) -> type[BaseModel]: ...  # the service part's settings model

    def build(self, ctx: Context[Any], /) -> Part: ...
