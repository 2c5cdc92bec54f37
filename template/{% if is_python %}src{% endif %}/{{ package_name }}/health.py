"""Liveness and readiness, as the endpoints and the `ready` gauge report them."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from .metrics import Metrics

# Live while the heartbeat is younger than this many intervals.
STALE_AFTER_INTERVALS = 3


class Phase(StrEnum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "shutting down"


class Health:
    """What `/.well-known/live` and `/.well-known/ready` answer."""

    def __init__(
        self, metrics: Metrics, heartbeat_interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._metrics = metrics
        self._interval = heartbeat_interval
        self._clock = clock
        self._last_beat: float | None = None
        self.phase = Phase.STARTING
        # Degraded with no last good value at all: nothing useful to serve.
        self.unusable = False
        self._publish()

    def beat(self) -> None:
        self._last_beat = self._clock()

    def set_phase(self, phase: Phase) -> None:
        self.phase = phase
        self._publish()

    def set_unusable(self, unusable: bool) -> None:
        self.unusable = unusable
        self._publish()

    def set_degraded(self, degraded: bool, unusable: bool = False) -> None:
        """Degraded: serving last good values after an error (the `degraded` gauge); unusable:
        nothing useful to serve at all, so not ready either."""
        self._metrics.degraded.set(1 if degraded else 0)
        self.set_unusable(unusable)

    def live(self) -> tuple[int, str]:
        fresh = self._last_beat is not None and (
            self._clock() - self._last_beat < STALE_AFTER_INTERVALS * self._interval
        )
        return (200, "ok") if fresh else (503, "heartbeat stale")

    def ready(self) -> tuple[int, str]:
        if self.phase is not Phase.READY:
            return 503, self.phase.value
        if self.unusable:
            return 503, "degraded"
        return 200, "ok"

    def _publish(self) -> None:
        self._metrics.ready.set(1 if self.ready()[0] == 200 else 0)
