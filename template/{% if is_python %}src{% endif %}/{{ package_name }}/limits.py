"""Exhaustion and hostile traffic: warnings at most once per interval per kind, and their counter.

When the process runs out of something (file descriptors, its connection cap, room for the
log file), or clients keep sending requests the parser refuses, the condition repeats as
fast as the clients can make it. Each kind of condition is logged at most once per
`WARN_INTERVAL_SECS`; the line says how many were left out since the previous one:

    WARN out of file descriptors kind=file_descriptors suppressed=4521

Every occurrence is counted, logged or not: `<prefix>exhaustion_total{kind}` for the kinds
of `EXHAUSTION_KINDS`, `http_requests_total{route="unknown"}` for rejected requests.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .logging import get_logger

log = get_logger(__name__)

# A kind of condition is logged at most once per this many seconds.
WARN_INTERVAL_SECS = 10.0
# What exhaustion_total counts: no file descriptor left (accept, the heartbeat file), the
# connection cap reached (a new connection waits), the log file not writable (disk full).
EXHAUSTION_KINDS = ("file_descriptors", "connections", "log_write")
# Errors that mean the process or the system is out of file descriptors.
FD_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})
# Errors of accept(2) that mean the system lacks memory for one more connection.
MEMORY_ERRNOS = frozenset({errno.ENOBUFS, errno.ENOMEM})


class RateLimited:
    """Says, per key, whether a line may be logged now, and how many were suppressed since."""

    def __init__(
        self, interval: float = WARN_INTERVAL_SECS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """None when the line of `key` must be left out; else the count left out before it."""
        now = self._clock()
        if now < self._next.get(key, float("-inf")):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._next[key] = now + self._interval
        return self._suppressed.pop(key, 0)


@dataclass
class _State:
    """The process's intervals, and the counter `exhaustion_total` once the metrics exist."""

    warnings: RateLimited = field(default_factory=RateLimited)
    counter: Any = None
    pending: dict[str, int] = field(default_factory=dict)


_state = _State()


def attach(counter: Any) -> None:
    """Count into `counter` (labelled by kind) from now on, adding what was counted before."""
    _state.counter = counter
    for kind in EXHAUSTION_KINDS:
        counter.labels(kind).inc(_state.pending.pop(kind, 0))


def detach() -> None:
    _state.counter = None


def warn(key: str, message: str, *, severe: bool = False, **fields: object) -> bool:
    """`WARN message fields... suppressed=N`, at most once per interval for `key`; whether logged.

    `severe=True` logs at ERROR instead.
    """
    suppressed = _state.warnings.allow(key)
    if suppressed is None:
        return False
    (log.error if severe else log.warn)(message, **fields, suppressed=suppressed)
    return True


_MESSAGES = {
    "file_descriptors": "out of file descriptors",
    "connections": "connection limit reached",
    "log_write": "cannot write the log file",
}


def exhausted(kind: str, **fields: object) -> None:
    """One occurrence of exhaustion `kind`: counted, and logged at most once per interval."""
    if _state.counter is not None:
        _state.counter.labels(kind).inc()
    else:
        _state.pending[kind] = _state.pending.get(kind, 0) + 1
    key = f"exhaustion:{kind}"
    suppressed = _state.warnings.allow(key)
    if suppressed is not None:
        log.warn(_MESSAGES[kind], kind=kind, **fields, suppressed=suppressed)


def reset() -> None:
    """Forget every interval and pending count (tests)."""
    _state.warnings = RateLimited()
    _state.pending.clear()
