"""Contract §8: start, signals, draining, the shutdown timeout, and runtime errors (exit 2)."""

from __future__ import annotations

import signal
import socket
import stat
import time

import pytest

from services import FakeUpstream, Metrics

pytestmark = pytest.mark.slow


def holding_upstream_settings(upstream: FakeUpstream, timeout_secs: str) -> dict[str, str]:
    # A long work interval keeps the per-attempt timeout (min(interval, 10) s) above the hold.
    return {
        "WORK__UPSTREAM_URL": upstream.url,
        "WORK__INTERVAL_SECS": "30",
        "SHUTDOWN__TIMEOUT_SECS": timeout_secs,
    }


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly(spawn, sig):
    svc = spawn().start()

    started = time.monotonic()
    svc.signal(sig)
    code = svc.wait(10)

    assert code == 0, svc.stderr_text()
    assert time.monotonic() - started < 5, "with nothing in flight the service stops at once"
    assert not svc.pid_file.exists()
    shutting = svc.wait_for_message("shutting down", timeout=1)
    assert shutting.fields["signal"] == sig.name
    assert svc.log_lines()[-1].message == "stopped"


@pytest.mark.example  # the example job holds the work in flight
def test_ready_turns_503_at_once_and_in_flight_work_finishes(spawn):
    with FakeUpstream([(None, "")], hold_body='{"value": 12.5}') as upstream:
        svc = spawn(settings=holding_upstream_settings(upstream, "10")).start()
        assert upstream.wait_calls(1, 10), "the first work run should start at once"

        svc.signal(signal.SIGTERM)
        svc.wait_for_message("shutting down")
        ready = svc.get("/.well-known/ready")
        gauge = Metrics.parse(svc.metrics()).value(f"{svc.built.metric_prefix}ready")
        time.sleep(0.5)
        still_running = svc.proc.poll() is None
        upstream.release()
        code = svc.wait(10)

    assert (ready.status, ready.body) == (503, "shutting down")
    assert gauge == 0
    assert still_running, "the service must wait for in-flight work before it exits"
    assert code == 0, svc.stderr_text()
    assert not svc.pid_file.exists()
    saved = (svc.data_dir / "last_value.json").read_text()
    assert "12.5" in saved, f"the in-flight run should have finished and saved its value: {saved!r}"
    assert len(upstream.calls) == 1, "no new work may start after the signal"


@pytest.mark.example  # the example job holds the work in flight
def test_shutdown_overrun_exits_2_with_critical(spawn):
    with FakeUpstream([(None, "")]) as upstream:
        svc = spawn(settings=holding_upstream_settings(upstream, "1")).start()
        assert upstream.wait_calls(1, 10)

        started = time.monotonic()
        svc.signal(signal.SIGTERM)
        code = svc.wait(10)
        elapsed = time.monotonic() - started

    assert code == 2, svc.stderr_text()
    assert 0.9 <= elapsed < 4, f"should give up after timeout_secs=1, took {elapsed:.2f}s"
    crit = svc.wait_for_message("CRITICAL shutdown overran its timeout", timeout=1)
    assert crit.level == "ERROR"
    assert crit.fields["timeout_secs"] == "1", crit.raw  # a whole number without ".0"
    assert "stopped" not in [rec.message for rec in svc.log_lines()]


@pytest.mark.example  # the example job holds the work in flight
def test_second_sigint_exits_at_once_with_2(spawn):
    with FakeUpstream([(None, "")]) as upstream:
        svc = spawn(settings=holding_upstream_settings(upstream, "30")).start()
        assert upstream.wait_calls(1, 10)

        svc.signal(signal.SIGINT)
        svc.wait_for_message("shutting down")
        time.sleep(0.2)
        assert svc.proc.poll() is None, "the first SIGINT waits for in-flight work"
        started = time.monotonic()
        svc.signal(signal.SIGINT)
        code = svc.wait(10)
        elapsed = time.monotonic() - started

    assert code == 2, svc.stderr_text()
    assert elapsed < 1.5, f"a second SIGINT must exit at once, took {elapsed:.2f}s"


def test_port_in_use_exits_2(spawn):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        svc = spawn(settings={"HTTP__PORT": str(port)})

        svc.start(wait="none")
        code = svc.wait(15)

    assert code == 2, svc.stderr_text()
    errors = [rec for rec in svc.log_lines() if rec.level == "ERROR"]
    assert [(rec.message, rec.fields) for rec in errors] == [
        ("cannot bind", {"addr": f"127.0.0.1:{port}", "error": "Address already in use"})
    ], svc.stderr_text()
    assert "ready" not in [rec.message for rec in svc.log_lines()]


def test_start_creates_its_directories(spawn):
    svc = spawn(umask=0o002)  # a common umask that a plain mkdir would turn into 0775

    svc.start()

    mode = stat.S_IMODE(svc.data_dir.stat().st_mode)
    assert mode == 0o750, f"data_dir must be created with mode 0750, got {mode:04o}"
    assert (svc.workdir / "tmp").is_dir()
    assert svc.log_file.is_file()
    assert svc.heartbeat_file.is_file()
    assert svc.pid_file.is_file()
