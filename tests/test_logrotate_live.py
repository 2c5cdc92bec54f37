"""logrotate, run for real against a running service: no log line is lost."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from deploy_renders import tool
from services import BuiltService, Service, parse_log_line


def _rules_for(svc: Service, project: Path) -> str:
    """The generated rules, pointed at the test's working directory and PREFIX instead of /srv."""
    name = svc.name
    text = (project / "deploy" / "logrotate" / name).read_text()
    replacements = {
        f"/srv/app/{name}/log/{name}.log {{": f"{svc.log_file} {{",
        f"pidfile=/srv/run/{name}.pid": f"pidfile={svc.pid_file}",
        f"su {name} {name}": "su root root",  # the service user does not exist here
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"the logrotate rules no longer contain {old!r}:\n{text}"
        text = text.replace(old, new)
    return text


@pytest.mark.slow
def test_logrotate_rotates_a_running_service_without_losing_a_line(
    service_build: BuiltService, tmp_path: Path
) -> None:
    # Arrange: a service that logs a DEBUG line on every run of the work (every 0.2 s)
    svc = Service(service_build, tmp_path / "svc", env={"RUST_LOG": "debug"})
    rules = tmp_path / "logrotate.conf"
    try:
        svc.start()
        rules.write_text(_rules_for(svc, service_build.project))
        rules.chmod(0o644)
        svc.wait_for_log(lambda rec: rec.level == "DEBUG", timeout=10)

        # Act: rotate for real, as the daily cron job would (forced, with its own state file)
        proc = subprocess.run([tool("logrotate"), "-f", "-s", str(tmp_path / "state"), str(rules)],
                              text=True, capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        svc.wait_for_message("log file reopened", timeout=10)
        # a few more lines in the new file, then a clean stop
        svc.wait_for_log(lambda rec: rec.level == "DEBUG" and rec.raw in svc.log_file_text(), timeout=10)
        assert svc.stop(signal.SIGTERM, timeout=15) == 0
    finally:
        svc.kill()

    # Assert: every line the service wrote is in the rotated file or in the new one, in order
    rotated = svc.log_file.with_name(svc.log_file.name + ".1")
    assert rotated.exists(), sorted(p.name for p in svc.log_file.parent.iterdir())
    old = rotated.read_text().splitlines()
    new = svc.log_file.read_text().splitlines()
    assert old and new
    assert any(parse_log_line(line) and parse_log_line(line).message == "log file reopened" for line in new)
    emitted = [line for line in svc.stderr_text().splitlines() if parse_log_line(line)]
    start = emitted.index(old[0])
    assert emitted[start:] == old + new, "a line is missing from, or repeated in, the log files"
    assert "stopped" in new[-1]
