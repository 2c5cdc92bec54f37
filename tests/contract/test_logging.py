"""Contract §4: one line per event, `Mon DD HH:MM:SS.fff LEVEL message k=v`, on stderr and in the log file."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest

from services import MONTHS, free_port, parse_log_line

pytestmark = pytest.mark.slow


def quote(value: str) -> str:
    """How the contract writes a value holding a space, `=`, a quote or a control character."""
    if value and not any(c in value for c in ' ="') and all(ord(c) >= 0x20 for c in value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def stamp(rec, year: int) -> datetime:
    month = MONTHS.index(rec.month) + 1
    hms, millis = rec.time.split(".")
    h, m, s = (int(x) for x in hms.split(":"))
    return datetime(year, month, rec.day, h, m, s, int(millis) * 1000, tzinfo=UTC)


def test_every_line_has_the_contract_shape_and_the_log_file_has_the_same_bytes(spawn):
    svc = spawn().start()
    for path in ("/.well-known/live", "/metrics", "/nope"):
        svc.get(path)

    assert svc.stop() == 0
    stderr = svc.stderr_text()

    bad = [line for line in stderr.splitlines() if parse_log_line(line) is None]
    assert not bad, f"stderr lines that are not log lines: {bad[:5]}"
    assert stderr.endswith("\n")
    assert svc.log_file.read_text() == stderr, "the log file must hold exactly the lines written to stderr"


def test_lifecycle_lines_in_order(spawn):
    svc = spawn().start()
    svc.signal(signal.SIGTERM)
    assert svc.wait(10) == 0

    recs = svc.log_lines()
    messages = [rec.message for rec in recs]
    for message in ("starting", "listening", "ready", "shutting down", "stopped"):
        assert message in messages, f"no `{message}` line: {messages}"
    order = [messages.index(m) for m in ("starting", "listening", "ready", "shutting down", "stopped")]
    assert order == sorted(order), f"lifecycle lines out of order: {messages}"
    assert messages[-1] == "stopped"
    by_message = {rec.message: rec for rec in recs}
    assert by_message["starting"].level == "INFO"
    assert by_message["starting"].fields["pid"] == str(svc.pid)
    assert by_message["starting"].fields["version"][0].isdigit()
    assert by_message["listening"].fields["addr"] == f"127.0.0.1:{svc.port}"
    assert by_message["ready"].level == "INFO"
    assert by_message["shutting down"].fields["signal"] == "SIGTERM"
    assert by_message["stopped"].level == "INFO"


def test_timestamps_are_utc_with_english_month_names(spawn):
    # UTC+14 and a German locale: a local-time or localised stamp cannot pass.
    svc = spawn(env={"TZ": "Pacific/Kiritimati", "LC_TIME": "de_DE.UTF-8", "LANG": "de_DE.UTF-8"})
    before = datetime.now(UTC) - timedelta(seconds=1)
    svc.start()
    assert svc.stop() == 0
    after = datetime.now(UTC) + timedelta(seconds=1)

    recs = svc.log_lines()
    assert recs
    for rec in recs:
        when = stamp(rec, before.year)
        assert before <= when <= after, (
            f"{rec.raw!r} is not UTC now ({before:%b %d %H:%M:%S} .. {after:%H:%M:%S})"
        )


def test_values_with_space_equals_quote_or_backslash_are_quoted(spawn, tmp_path):
    prefix = tmp_path / 'odd pre=fix "q" back\\slash'
    svc = spawn(prefix=prefix)
    svc.pid_file.parent.mkdir(parents=True)
    svc.pid_file.write_text("999999\n")  # stale: nobody holds its lock

    svc.start()
    rec = svc.wait_for_message("taking over stale PID file")

    assert rec.level == "WARN"
    assert f" path={quote(str(svc.pid_file))} " in rec.raw + " ", rec.raw
    assert rec.fields["path"] == str(svc.pid_file)
    assert rec.fields["old_pid"] == "999999"


@pytest.mark.example  # the example job's DEBUG lines are the stream
def test_sighup_after_rename_loses_no_line(spawn, service_build):
    # The example work logs at DEBUG on each run when it has no upstream: a steady stream of lines.
    svc = spawn(
        env={"RUST_LOG": f"info,{service_build.snake}=debug"}, settings={"WORK__INTERVAL_SECS": "0.05"}
    )
    svc.start()

    def debug_lines() -> int:
        return sum(1 for rec in svc.log_lines() if rec.level == "DEBUG")

    deadline = time.monotonic() + 5
    while debug_lines() < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert debug_lines() >= 5, "the example work should log at DEBUG on each run without an upstream"

    rotated = svc.log_file.with_name(svc.log_file.name + ".1")
    os.rename(svc.log_file, rotated)
    time.sleep(0.2)  # lines logged now still go to the renamed file
    svc.signal(signal.SIGHUP)
    reopened = svc.wait_for_message("log file reopened")
    seen = debug_lines()
    while debug_lines() < seen + 5 and time.monotonic() < deadline + 5:
        time.sleep(0.05)
    assert svc.stop() == 0

    assert reopened.level == "INFO"
    assert reopened.fields["path"].endswith(f"log/{svc.name}.log")
    assert svc.log_file.exists(), "SIGHUP must reopen (create) the configured log file"
    new_text = svc.log_file.read_text()
    assert "log file reopened" in new_text
    assert rotated.read_text() + new_text == svc.stderr_text(), (
        "lines were lost or duplicated across the rename"
    )


def test_filter_warn_hides_info(spawn):
    port = free_port()
    svc = spawn(env={"RUST_LOG": "warn"}, settings={"HTTP__PORT": str(port)})
    svc.pid_file.parent.mkdir(parents=True)
    svc.pid_file.write_text("999999\n")

    svc.start(wait="none")
    svc.port = port
    svc.wait_ready(15)
    assert svc.stop() == 0

    levels = {rec.level for rec in svc.log_lines()}
    assert "WARN" in levels, svc.stderr_text()
    assert levels <= {"WARN", "ERROR"}, svc.stderr_text()


def test_log_filter_key_is_used_and_rust_log_overrides_it(spawn):
    quiet = spawn(settings={"LOG__FILTER": "warn", "HTTP__PORT": str(free_port())})
    quiet.start(wait="none")
    quiet.port = int(quiet.settings["HTTP__PORT"])
    quiet.wait_ready(15)
    loud = spawn(settings={"LOG__FILTER": "warn"}, env={"RUST_LOG": "info"}).start()

    assert quiet.stop() == 0 and loud.stop() == 0

    assert not [rec for rec in quiet.log_lines() if rec.level == "INFO"], quiet.stderr_text()
    assert "listening" in [rec.message for rec in loud.log_lines()]


@pytest.mark.example  # the example job logs at DEBUG
def test_module_filter_turns_on_debug_for_the_service_only(spawn, service_build):
    fast_work = {"WORK__INTERVAL_SECS": "0.05"}
    plain = spawn(env={"RUST_LOG": "info"}, settings=fast_work).start()
    debug = spawn(env={"RUST_LOG": f"info,{service_build.snake}=debug"}, settings=fast_work).start()
    time.sleep(0.6)  # a dozen work runs

    assert plain.stop() == 0 and debug.stop() == 0

    assert not [rec for rec in plain.log_lines() if rec.level == "DEBUG"], plain.stderr_text()
    assert [rec for rec in debug.log_lines() if rec.level == "DEBUG"], debug.stderr_text()


def test_log_target_stderr_writes_no_log_file(spawn):
    svc = spawn(settings={"LOG__TARGET": "stderr"}).start()

    assert svc.stop() == 0

    assert "stopped" in [rec.message for rec in svc.log_lines()]
    assert not svc.log_file.exists(), "log.target = stderr must not write the log file"


def test_log_target_file_keeps_stderr_free_of_log_lines(spawn):
    port = free_port()
    svc = spawn(settings={"LOG__TARGET": "file", "HTTP__PORT": str(port)})

    svc.start(wait="none")
    svc.port = port
    svc.wait_ready(15)
    svc.signal(signal.SIGHUP)  # the file is reopened as with both
    deadline = time.monotonic() + 5
    while "log file reopened" not in svc.log_file_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert svc.stop() == 0

    messages = [parse_log_line(line).message for line in svc.log_file_text().splitlines()]
    assert messages[0] == "starting" and messages[-1] == "stopped", messages
    assert "log file reopened" in messages
    assert svc.stderr_text() == "", "log.target = file must leave stderr empty"
