"""Contract §7 and §9: the example work against a fake upstream on loopback."""

from __future__ import annotations

import itertools
import json
import socket
import time

import pytest

from services import FakeUpstream, Metrics, good

pytestmark = [pytest.mark.slow, pytest.mark.example]

RETRY_DELAYS = [0.1, 0.2, 0.4, 0.8, 1.6]


def work(upstream_url: str, interval: str = "30", **more: str) -> dict[str, str]:
    return {"WORK__UPSTREAM_URL": upstream_url, "WORK__INTERVAL_SECS": interval, **more}


def wait_metric(svc, name: str, predicate, timeout: float = 5, **labels: str) -> float | None:
    deadline = time.monotonic() + timeout
    while True:
        value = Metrics.parse(svc.metrics()).value(name, **labels)
        if (value is not None and predicate(value)) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_good_value_is_saved_and_not_degraded(spawn):
    with FakeUpstream([good(42.5)]) as upstream:
        svc = spawn(settings=work(upstream.url, "0.3")).start()
        p = svc.built.metric_prefix
        calls = upstream.wait_calls(2, 5)
        saved = svc.data_dir / "last_value.json"
        deadline = time.monotonic() + 3
        while not saved.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        m = Metrics.parse(svc.metrics())
        ready = svc.get("/.well-known/ready")

    assert len(calls) >= 2, "a run starts every work.interval_secs"
    assert all(c.method == "GET" and c.path == "/value" for c in calls)
    assert "authorization" not in calls[0].headers, "no token set, no Authorization header"
    record = json.loads(saved.read_text())
    assert record["value"] == 42.5
    assert isinstance(record["fetched_at"], int) and abs(record["fetched_at"] - time.time()) < 5
    assert m.value(f"{p}degraded") == 0
    assert m.value(f"{p}retries_total") == 0
    assert m.value(f"{p}errors_total", kind="transient") == 0
    assert m.value(f"{p}errors_total", kind="persistent") == 0
    assert m.value(f"{p}work_latency_ewma_seconds") > 0
    assert (ready.status, ready.body) == (200, "ok")


def test_transient_errors_are_retried_on_schedule_and_counted(spawn):
    with FakeUpstream([(503, "")]) as upstream:
        svc = spawn(settings=work(upstream.url)).start(wait="listening")
        p = svc.built.metric_prefix
        calls = upstream.wait_calls(6, 6)
        errors = wait_metric(svc, f"{p}errors_total", lambda v: v >= 1, kind="transient")
        time.sleep(0.5)
        m = Metrics.parse(svc.metrics())
        ready, live = svc.get("/.well-known/ready"), svc.get("/.well-known/live")
        total_calls = len(upstream.calls)

    assert len(calls) == 6, f"1 attempt and 5 retries expected, got {len(calls)}"
    assert total_calls == 6, "no retry beyond the fifth"
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
    for gap, delay in zip(gaps, RETRY_DELAYS, strict=True):
        # never early; late only by scheduling noise (a doubled delay is out of every bound)
        assert delay * 0.9 <= gap <= delay * 1.5 + 0.15, f"retry delays {gaps} are not {RETRY_DELAYS}"
    assert errors == 1
    assert m.value(f"{p}retries_total") == 5
    assert m.value(f"{p}errors_total", kind="persistent") == 0
    assert m.value(f"{p}degraded") == 1
    assert (ready.status, ready.body) == (503, "degraded"), "degraded with no last good value is not ready"
    assert live.status == 200
    warn = svc.wait_for_message("work failed, using last good value", timeout=1)
    assert warn.level == "WARN" and warn.fields["kind"] == "transient" and warn.fields["error"]


@pytest.mark.parametrize("status", [500, 502, 429, 408])
def test_other_transient_statuses_are_retried(spawn, status):
    with FakeUpstream([(status, "")]) as upstream:
        svc = spawn(settings=work(upstream.url)).start(wait="listening")
        retries = wait_metric(svc, f"{svc.built.metric_prefix}retries_total", lambda v: v >= 2, timeout=3)
        persistent = Metrics.parse(svc.metrics()).value(
            f"{svc.built.metric_prefix}errors_total", kind="persistent"
        )

    assert retries >= 2, f"{status} is transient: it must be retried"
    assert persistent == 0


def test_connection_refused_is_transient(spawn):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        svc = spawn(settings=work(f"http://127.0.0.1:{port}/value")).start(wait="listening")
        p = svc.built.metric_prefix
        errors = wait_metric(svc, f"{p}errors_total", lambda v: v >= 1, timeout=6, kind="transient")
        m = Metrics.parse(svc.metrics())

    assert errors == 1
    assert m.value(f"{p}retries_total") == 5
    assert m.value(f"{p}degraded") == 1


@pytest.mark.parametrize(
    "answer",
    [
        (404, '{"error": "no"}'),
        (401, ""),
        (400, ""),
        (200, "not json"),
        (200, '{"nope": 1}'),
        (200, '{"value": "x"}'),
    ],
    ids=["404", "401", "400", "not-json", "no-value", "value-not-a-number"],
)
def test_persistent_errors_are_not_retried(spawn, answer):
    with FakeUpstream([answer]) as upstream:
        svc = spawn(settings=work(upstream.url)).start(wait="listening")
        p = svc.built.metric_prefix
        errors = wait_metric(svc, f"{p}errors_total", lambda v: v >= 1, kind="persistent")
        time.sleep(0.4)  # the first retry would have come after 0.1 s
        m = Metrics.parse(svc.metrics())
        ready = svc.get("/.well-known/ready")

    assert errors == 1
    assert len(upstream.calls) == 1, "a persistent error is not retried"
    assert m.value(f"{p}retries_total") == 0
    assert m.value(f"{p}errors_total", kind="transient") == 0
    assert m.value(f"{p}degraded") == 1
    assert (ready.status, ready.body) == (503, "degraded")
    warn = svc.wait_for_message("work failed, using last good value", timeout=1)
    assert warn.level == "WARN" and warn.fields["kind"] == "persistent"


def test_degraded_with_a_last_good_value_stays_ready(spawn):
    with FakeUpstream([good(7.0), (404, "")]) as upstream:
        svc = spawn(settings=work(upstream.url, "0.3")).start()
        p = svc.built.metric_prefix
        degraded = wait_metric(svc, f"{p}degraded", lambda v: v == 1)
        ready = svc.get("/.well-known/ready")

    assert degraded == 1
    assert (ready.status, ready.body) == (200, "ok")
    assert json.loads((svc.data_dir / "last_value.json").read_text())["value"] == 7.0


def test_last_value_file_from_a_previous_run_counts_as_a_good_value(spawn):
    with FakeUpstream([(404, "")]) as upstream:
        svc = spawn(settings=work(upstream.url))
        svc.data_dir.mkdir(parents=True, mode=0o750)
        (svc.data_dir / "last_value.json").write_text(
            json.dumps({"value": 3.0, "fetched_at": int(time.time()) - 600})
        )
        svc.start(wait="listening")
        degraded = wait_metric(svc, f"{svc.built.metric_prefix}degraded", lambda v: v == 1)
        ready = svc.get("/.well-known/ready")

    assert degraded == 1
    assert (ready.status, ready.body) == (200, "ok")


def test_a_good_run_clears_degraded(spawn):
    with FakeUpstream([(404, ""), good(5.0)]) as upstream:
        svc = spawn(settings=work(upstream.url, "0.3")).start(wait="listening")
        p = svc.built.metric_prefix
        first = wait_metric(svc, f"{p}degraded", lambda v: v == 1)
        upstream.wait_calls(3, 5)
        then = wait_metric(svc, f"{p}degraded", lambda v: v == 0)
        ready = svc.get("/.well-known/ready")

    assert (first, then) == (1, 0)
    assert ready.status == 200


def test_runs_are_bounded_by_max_concurrency(spawn):
    # Each run is slow (every attempt waits 0.2 s, then 503 and retries); runs start every 0.3 s,
    # so without the semaphore several runs' attempts would be in flight together.
    with FakeUpstream([(503, "")], delay=0.2) as upstream:
        spawn(settings=work(upstream.url, "0.3", WORK__MAX_CONCURRENCY="1")).start(wait="listening")
        time.sleep(3)
        seen = upstream.max_in_flight
        calls = len(upstream.calls)

    assert calls >= 5
    assert seen == 1, f"{seen} upstream calls were in flight together with work.max_concurrency = 1"


def test_slow_upstream_times_out_and_is_retried(spawn):
    # The per-attempt timeout is min(work.interval_secs, 10) s; one run at a time keeps the
    # second call the first run's retry.
    with FakeUpstream([(None, "")]) as upstream:
        spawn(settings=work(upstream.url, "0.5", WORK__MAX_CONCURRENCY="1")).start(wait="listening")
        calls = upstream.wait_calls(2, 5)

    assert len(calls) >= 2, "a timed-out attempt is transient: it must be retried"
    gap = calls[1].at - calls[0].at
    assert 0.55 <= gap <= 1.0, f"expected a 0.5 s timeout then a 0.1 s delay, the retry came after {gap:.2f}s"


def test_latency_gauge_is_in_seconds(spawn):
    with FakeUpstream([good(2.0)], delay=0.15) as upstream:
        svc = spawn(settings=work(upstream.url, "0.4")).start()
        upstream.wait_calls(4, 5)
        time.sleep(0.2)  # the fourth call has answered
        ewma = Metrics.parse(svc.metrics()).value(f"{svc.built.metric_prefix}work_latency_ewma_seconds")

    assert ewma is not None
    assert 0.14 <= ewma <= 0.4, f"every call took 0.15 s; the EWMA gauge says {ewma}"
