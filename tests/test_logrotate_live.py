"""logrotate, run for real against a running service: no log line is lost.

The service logs continuously (a DEBUG line per run of the work, every millisecond) while
logrotate rotates it several times. Rotation by copy and truncate (`copytruncate`) loses the
lines written between the copy and the truncation: a millisecond or two for a small file,
tens of milliseconds for a day's log, so the log file starts with 16 MB of earlier lines.
A rule that brings copytruncate back fails here, not only in the text check of the rules.
"""

from __future__ import annotations

import gzip
import signal
import subprocess
import time
from pathlib import Path

import pytest

from deploy_renders import tool
from services import BuiltService, Service, parse_log_line


def _rules_for(svc: Service, project: Path) -> str:
    """The generated rules, pointed at the test's working directory and PREFIX instead of /srv."""
    name = svc.name
    text = (project / "deploy" / "logrotate" / name).read_text()
    # The audit file's rule (weekly, its own postrotate) is left out: this test is about the log.
    text, audit_rule = text.split("\n# The audit lines", 1)
    assert f"/srv/app/{name}/log/{name}.audit.log {{" in audit_rule
    replacements = {
        f"/srv/app/{name}/log/{name}.log {{": f"{svc.log_file} {{",
        f"pidfile=/srv/run/{name}.pid": f"pidfile={svc.pid_file}",
        f"su {name} {name}": "su root root",  # the service user does not exist here
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"the logrotate rules no longer contain {old!r}:\n{text}"
        text = text.replace(old, new)
    return text


ROTATIONS = 3
# work.interval_secs: with no upstream, each run of the work logs one DEBUG line.
LINE_INTERVAL_SECS = "0.001"
# Fewer lines a second than this and the copytruncate window could fall between two lines.
MIN_LINES_PER_SEC = 200
# The lines of an earlier day in the log file: copying them keeps copytruncate's window open.
EARLIER_LINES = 360_000  # about 16 MB
EARLIER = "Nov 29 23:59:59.999 INFO an earlier line n={}"


def _reopened(svc: Service) -> int:
    return sum(rec.message == "log file reopened" for rec in svc.log_lines())


def _debug_lines(svc: Service) -> int:
    return sum(rec.level == "DEBUG" for rec in svc.log_lines())


def _wait(predicate, timeout: float, what: str, svc: Service) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise svc.failure(what)
        time.sleep(0.05)


def _rotated_files(log_file: Path) -> list[Path]:
    """The rotated files, oldest first: `<log>.N.gz` ... `<log>.2.gz`, then `<log>.1` (delaycompress)."""
    numbered = [p for p in log_file.parent.iterdir() if p.name.startswith(log_file.name + ".")]
    return sorted(numbered, key=lambda p: -int(p.name[len(log_file.name) + 1:].removesuffix(".gz")))


def _read(path: Path) -> list[str]:
    return (gzip.open(path, "rt") if path.suffix == ".gz" else path.open()).read().splitlines()


@pytest.mark.slow
def test_logrotate_rotates_a_running_service_without_losing_a_line(
    service_build: BuiltService, tmp_path: Path
) -> None:
    # Arrange: a service that logs a DEBUG line on every run of the work, every millisecond
    svc = Service(service_build, tmp_path / "svc", env={"RUST_LOG": "debug"},
                  settings={"WORK__INTERVAL_SECS": LINE_INTERVAL_SECS})
    rules = tmp_path / "logrotate.conf"
    earlier = [EARLIER.format(n) for n in range(EARLIER_LINES)]
    svc.log_file.parent.mkdir(parents=True)
    svc.log_file.write_text("\n".join(earlier) + "\n")
    try:
        svc.start()
        rules.write_text(_rules_for(svc, service_build.project))
        rules.chmod(0o644)
        svc.wait_for_log(lambda rec: rec.level == "DEBUG", timeout=10)

        # Act: rotate for real, several times while the service writes, as the daily cron job
        # would (forced, with its own state file); each time wait for the reopen
        lines_before, started = _debug_lines(svc), time.monotonic()
        for rotation in range(1, ROTATIONS + 1):
            time.sleep(0.3)
            proc = subprocess.run([tool("logrotate"), "-f", "-s", str(tmp_path / "state"), str(rules)],
                                  text=True, capture_output=True, timeout=60)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            _wait(lambda n=rotation: _reopened(svc) >= n, 10, f"did not reopen its log after rotation {rotation}", svc)
        rate = (_debug_lines(svc) - lines_before) / (time.monotonic() - started)
        # a few more lines in the new file, then a clean stop
        time.sleep(0.3)
        assert svc.stop(signal.SIGTERM, timeout=15) == 0
    finally:
        svc.kill()

    # The window of a lost line was open: the service wrote continuously while it rotated
    assert rate >= MIN_LINES_PER_SEC, f"{service_build.flavour} logged {rate:.0f} lines/s, too few to test rotation"

    # Assert: every line the service wrote is in a rotated file or in the new one, in order
    rotated = _rotated_files(svc.log_file)
    assert [p.name for p in rotated] == [f"{svc.log_file.name}.{n}.gz" for n in range(ROTATIONS, 1, -1)] + [
        f"{svc.log_file.name}.1"], sorted(p.name for p in svc.log_file.parent.iterdir())
    written = [line for path in rotated for line in _read(path)] + svc.log_file.read_text().splitlines()
    assert written[:EARLIER_LINES] == earlier, "the earlier lines did not stay first, in order"
    written = written[EARLIER_LINES:]
    new = svc.log_file.read_text().splitlines()
    assert new and any(parse_log_line(line) and parse_log_line(line).message == "log file reopened" for line in new)
    emitted = [line for line in svc.stderr_text().splitlines() if parse_log_line(line)]
    start = emitted.index(written[0])
    if emitted[start:] != written:
        kept = set(written)
        missing = [line for line in emitted[start:] if line not in kept]
        raise AssertionError(f"{len(emitted) - start} lines emitted, {len(written)} in the log files, "
                             f"{len(missing)} missing; first missing: {missing[:3]}")
    assert "stopped" in new[-1]
