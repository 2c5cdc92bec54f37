"""Prometheus metrics: one registry per service instance, prefixed with the service's name.

Label values come only from fixed sets: a route outside the known ones is `unknown`, a
method outside the usual ones is `other`, so the number of series stays bounded whatever
clients send.
"""

from __future__ import annotations

from collections.abc import Iterable

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
from .server import Response

# The text format that every Prometheus version scrapes (newer clients default to 1.0.0).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ROUTES = ("/.well-known/live", "/.well-known/ready", "/metrics")
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
            "Runs of the work that ended in an error, by kind.",
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
            "1 while the work serves its last good value after an error, else 0.",
            registry=self.registry,
        )
        self.work_latency = Gauge(
            f"{p}work_latency_ewma_seconds",
            "Latency of successful upstream calls, smoothed (EWMA, alpha 0.3).",
            registry=self.registry,
        )

    def count_request(self, path: str, method: str, status: int) -> None:
        """Count one answer; a path or method outside the fixed sets is `unknown` or `other`."""
        route = path if path in ROUTES else "unknown"
        method = method if method in METHODS else "other"
        self.http_requests.labels(route, method, str(status)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def handle(self) -> Response:
        """`/metrics`: the Prometheus text format."""
        return Response(200, self.exposition(), CONTENT_TYPE)
