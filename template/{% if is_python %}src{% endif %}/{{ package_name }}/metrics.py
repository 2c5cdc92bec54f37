"""Prometheus metrics: one registry per service instance, prefixed with the service's name.

Label values come only from fixed sets: a request's route is the template of a registered
route (`/v1/orders/{id}`, never the path itself) or `unknown`, a method outside the usual ones
is `other`, and the service part's own metrics (`counter`, `gauge`) declare every value of
every label up front, so the number of series stays bounded whatever clients send.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from . import about
from .errors import Kind
from .limits import EXHAUSTION_KINDS

# The text format that every Prometheus version scrapes (newer clients default to 1.0.0).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ROUTES = ("/.well-known/live", "/.well-known/ready", "/metrics")
UNKNOWN_ROUTE = "unknown"
OTHER = "other"
PROCESS_METRICS = frozenset(
    {"process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"}
)
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")

# `_created` series double the count of series for no operational use.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus-client


class _ProcessMetrics(Collector):
    """The process collector's four metrics of the contract, unprefixed so that stock dashboards work.

    The process collector also reports `process_max_fds` and `process_virtual_memory_bytes`,
    which the contract leaves out.
    """

    def __init__(self) -> None:
        self._process = ProcessCollector(registry=None)

    def collect(self) -> Iterable[Metric]:
        return [family for family in self._process.collect() if family.name in PROCESS_METRICS]


class Metrics:
    """Every metric of the contract, registered in the instance's own registry."""

    def __init__(self, version: str, commit: str | None) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_ProcessMetrics())
        p = about.METRIC_PREFIX
        build_info = Gauge(
            f"{p}build_info",
            "Always 1; the labels say which build is running.",
            ["version", "commit", "flavour"],
            registry=self.registry,
        )
        build_info.labels(version, commit or "unknown", about.FLAVOUR).set(1)
        self.http_requests = Counter(
            f"{p}http_requests_total",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            f"{p}errors_total",
            "Runs of jobs and requests that ended in an error, by kind.",
            ["kind"],
            registry=self.registry,
        )
        for kind in Kind:
            self.errors.labels(kind.value)
        self.retries = Counter(f"{p}retries_total", "Retries of transient errors.", registry=self.registry)
        self.heartbeat = Gauge(
            f"{p}heartbeat_timestamp_seconds",
            "Unix time of the main loop's last heartbeat.",
            registry=self.registry,
        )
        self.ready = Gauge(
            f"{p}ready", "1 while the service is ready to serve, else 0.", registry=self.registry
        )
        self.degraded = Gauge(
            f"{p}degraded",
            "1 while the service serves its last good values after an error, else 0.",
            registry=self.registry,
        )
        self.exhaustion = Counter(
            f"{p}exhaustion_total",
            "Times a resource ran out (file descriptors, the connection cap, the log file's disk), by kind.",
            ["kind"],
            registry=self.registry,
        )
        for exhaustion_kind in EXHAUSTION_KINDS:
            self.exhaustion.labels(exhaustion_kind)
        self._requests: dict[tuple[str, str, int], Any] = {}

    def count_request(self, route: str, method: str, status: int) -> None:
        """Count one answer under its route template (or `unknown`); an unusual method is `other`."""
        key = (route, method, status)
        child = self._requests.get(key)
        if child is None:
            label = method if method in METHODS else OTHER
            child = self._requests[key] = self.http_requests.labels(route, label, str(status))
        child.inc()

    def counter(self, name: str, help_text: str, labels: Mapping[str, Sequence[str]] | None = None) -> Series:
        """A counter of the service part, `<prefix><name>`; `labels` lists every allowed value."""
        return Series(
            Counter(f"{about.METRIC_PREFIX}{name}", help_text, list(labels or {}), registry=self.registry),
            labels,
        )

    def gauge(self, name: str, help_text: str, labels: Mapping[str, Sequence[str]] | None = None) -> Series:
        """A gauge of the service part, `<prefix><name>`; `labels` lists every allowed value."""
        return Series(
            Gauge(f"{about.METRIC_PREFIX}{name}", help_text, list(labels or {}), registry=self.registry),
            labels,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class Series:
    """A metric of the service part with bounded labels: a value outside the declared ones is `other`.

    `inc(amount, **labels)` counts, `set(value, **labels)` sets a gauge; every declared
    combination is exposed from the start (at 0).
    """

    def __init__(self, metric: Counter | Gauge, labels: Mapping[str, Sequence[str]] | None) -> None:
        self._metric = metric
        self._allowed = {name: frozenset(values) for name, values in (labels or {}).items()}
        if self._allowed:
            for combination in itertools.product(*(list(values) for values in (labels or {}).values())):
                metric.labels(*combination)

    def _child(self, labels: Mapping[str, str]) -> Any:
        if not self._allowed:
            if labels:
                raise ValueError(f"this metric has no labels, got {sorted(labels)}")
            return self._metric
        if set(labels) != set(self._allowed):
            raise ValueError(f"labels {sorted(labels)} differ from the declared {sorted(self._allowed)}")
        return self._metric.labels(
            **{name: value if value in self._allowed[name] else OTHER for name, value in labels.items()}
        )

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self._child(labels).inc(amount)

    def set(self, value: float, **labels: str) -> None:
        child = self._child(labels)
        if not isinstance(self._metric, Gauge):
            raise TypeError("set() is for gauges; a counter only goes up with inc()")
        child.set(value)
