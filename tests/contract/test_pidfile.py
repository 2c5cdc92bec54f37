"""Contract §3 (paths.pid_file): `<pid>\\n`, flock held while running, stale taken over, live holder refused."""

from __future__ import annotations

import fcntl
import os

import pytest

pytestmark = pytest.mark.slow


def locked_by_someone(path) -> bool:
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def test_pid_file_holds_the_pid_is_locked_and_removed_at_exit(spawn):
    svc = spawn()
    assert not svc.pid_file.parent.exists()  # its directory is created if missing

    svc.start()

    assert svc.pid_file.read_text() == f"{svc.pid}\n"
    assert locked_by_someone(svc.pid_file), "the PID file must be flock-ed while the service runs"
    assert svc.stop() == 0
    assert not svc.pid_file.exists(), "a clean exit removes the PID file"


@pytest.mark.parametrize("content", ["999999\n", "999999", "not a pid\n", ""])
def test_stale_pid_file_is_taken_over_with_a_warning(spawn, content):
    svc = spawn()
    svc.pid_file.parent.mkdir(parents=True)
    svc.pid_file.write_text(content)

    svc.start()
    warn = svc.wait_for_message("taking over stale PID file", timeout=1)  # logged before `ready`

    assert warn.level == "WARN"
    assert warn.fields["path"] == str(svc.pid_file)
    if content.strip().isdigit():
        assert warn.fields["old_pid"] == content.strip()
    assert svc.pid_file.read_text() == f"{svc.pid}\n"
    assert svc.log_file.read_text().count("taking over stale PID file") == 1, (
        "the warning goes to the log file too"
    )
    assert svc.stop() == 0


def test_pid_file_held_by_a_live_process_exits_2_naming_it(spawn):
    svc = spawn()
    svc.pid_file.parent.mkdir(parents=True)
    holder = open(svc.pid_file, "w")  # noqa: SIM115  (held for the whole test)
    try:
        holder.write(f"{os.getpid()}\n")
        holder.flush()
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)

        svc.start(wait="none")
        code = svc.wait(15)
        err = svc.wait_for_message("PID file is held by a live process", timeout=1)

        assert code == 2
        assert err.level == "ERROR"
        assert err.fields["path"] == str(svc.pid_file)
        assert err.fields["pid"] == str(os.getpid())
        assert "listening" not in [rec.message for rec in svc.log_lines()], (
            "it must not bind without the PID file"
        )
        assert svc.pid_file.read_text() == f"{os.getpid()}\n", "the live holder's file must be left alone"
    finally:
        holder.close()


def test_second_instance_with_the_same_prefix_is_refused(spawn, tmp_path):
    first = spawn(prefix=tmp_path / "shared").start()
    second = spawn(prefix=tmp_path / "shared")

    second.start(wait="none")

    assert second.wait(15) == 2
    err = second.wait_for_message("PID file is held by a live process", timeout=1)
    assert err.fields["pid"] == str(first.pid)
    assert first.get("/.well-known/live").status == 200
    assert first.pid_file.read_text() == f"{first.pid}\n"
