"""Contract §6: the metrics, exactly those of docs/contract-choices.md, with bounded series."""

from __future__ import annotations

import random
import string
import subprocess
import time

import pytest

from helpers import require_tool
from services import Metrics

pytestmark = pytest.mark.slow

METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}
# The platform's routes, the example service's route, and `unknown` for every other path.
ROUTES = {"/.well-known/live", "/.well-known/ready", "/metrics", "/v1/value", "unknown"}
PROCESS = {
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_start_time_seconds": "gauge",
}


def expected_types(prefix: str) -> dict[str, str]:
    return {
        f"{prefix}build_info": "gauge",
        f"{prefix}http_requests_total": "counter",
        f"{prefix}errors_total": "counter",
        f"{prefix}retries_total": "counter",
        f"{prefix}exhaustion_total": "counter",
        f"{prefix}heartbeat_timestamp_seconds": "gauge",
        f"{prefix}ready": "gauge",
        f"{prefix}degraded": "gauge",
        f"{prefix}work_latency_ewma_seconds": "gauge",
        **PROCESS,
    }


def test_promtool_accepts_the_exposition(shared_service):
    promtool = require_tool("promtool")
    svc = shared_service
    for path in ("/.well-known/live", "/nope"):
        svc.get(path)

    text = svc.metrics()
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text, text=True, capture_output=True, timeout=30, check=False
    )

    assert proc.returncode == 0, f"promtool check metrics:\n{proc.stdout}{proc.stderr}\n--- metrics\n{text}"


def test_exactly_the_documented_metrics_with_types_and_help(shared_service):
    svc = shared_service
    svc.get("/.well-known/live")
    prefix = svc.built.metric_prefix

    metrics = Metrics.parse(svc.metrics())

    assert metrics.types == expected_types(prefix)
    assert set(metrics.helps) == set(metrics.types)
    assert all(text.strip() for text in metrics.helps.values()), metrics.helps
    assert {name for name, _, _ in metrics.samples} == set(expected_types(prefix))
    assert not [name for name, _, _ in metrics.samples if name.endswith("_created")]


def test_values_at_start(shared_service, service_build):
    svc = shared_service
    p = service_build.metric_prefix

    m = Metrics.parse(svc.metrics())

    assert m.value(f"{p}ready") == 1
    assert m.value(f"{p}degraded") == 0
    assert m.value(f"{p}retries_total") == 0
    assert m.value(f"{p}errors_total", kind="transient") == 0
    assert m.value(f"{p}errors_total", kind="persistent") == 0
    assert {labels["kind"] for labels in m.series(f"{p}errors_total")} == {"transient", "persistent"}
    kinds = {"file_descriptors", "connections", "log_write"}
    assert {labels["kind"] for labels in m.series(f"{p}exhaustion_total")} == kinds
    assert all(m.value(f"{p}exhaustion_total", kind=kind) == 0 for kind in kinds)
    (build_info,) = m.series(f"{p}build_info")
    assert set(build_info) == {"version", "commit", "flavour"}
    assert m.value(f"{p}build_info", **build_info) == 1
    assert abs(m.value(f"{p}heartbeat_timestamp_seconds") - time.time()) < 3
    assert abs(m.value("process_start_time_seconds") - time.time()) < 60
    assert m.value("process_open_fds") > 0
    assert m.value("process_resident_memory_bytes") > 1_000_000
    assert m.value("process_cpu_seconds_total") >= 0


def test_requests_are_counted_by_route_method_status(spawn, service_build):
    svc = spawn().start()
    name = f"{service_build.metric_prefix}http_requests_total"
    for _ in range(5):
        svc.get("/.well-known/live")
    for _ in range(3):
        svc.get(f"/nope-{random.random()}")
    svc.get("/metrics", method="POST")
    svc.get("/metrics", method="PROPFIND")
    svc.get("/metrics", method="TRACE")
    svc.get("/.well-known/live", method="HEAD")

    m = Metrics.parse(svc.metrics())

    assert m.value(name, route="/.well-known/live", method="GET", status="200") == 5
    assert m.value(name, route="/.well-known/live", method="HEAD", status="200") == 1
    assert m.value(name, route="unknown", method="GET", status="404") == 3
    assert m.value(name, route="/metrics", method="POST", status="405") == 1
    assert m.value(name, route="/metrics", method="other", status="405") == 2


def _random_round(svc, rng: random.Random) -> None:
    """Requests of every kind a client can send: each method class on each route and on junk paths."""
    custom = ["".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 12))) for _ in range(6)]
    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", *custom]
    for method in methods:
        targets = ["/.well-known/live", "/.well-known/ready", "/metrics", "/v1/value"]
        targets += [
            "/"
            + "/".join(
                "".join(rng.choices(string.ascii_letters + string.digits + "-_", k=rng.randint(1, 12)))
                for _ in range(rng.randint(1, 5))
            )
            for _ in range(15)
        ]
        targets += [f"/.well-known/{rng.randint(0, 10**9)}", f"/metrics?{rng.random()}=x"]
        for target in targets:
            svc.get(target, method=method)


def test_series_stay_bounded_whatever_clients_send(spawn, service_build):
    svc = spawn().start()
    name = f"{service_build.metric_prefix}http_requests_total"
    rng = random.Random(20241105)

    _random_round(svc, rng)
    first = Metrics.parse(svc.metrics())
    _random_round(svc, rng)
    second = Metrics.parse(svc.metrics())

    series = second.series(name)
    assert len({tuple(sorted(s.items())) for s in series}) == len(series)
    for labels in series:
        assert set(labels) == {"route", "method", "status"}, labels
        assert labels["route"] in ROUTES, labels
        assert labels["method"] in METHODS, labels
        assert labels["status"].isdigit() and len(labels["status"]) == 3, labels
    assert len(second.samples) == len(first.samples), "new series appeared for requests of the same kinds"
    assert len(series) <= len(ROUTES) * len(METHODS) * 4
