"""Contract §8: with NOTIFY_SOCKET set, READY=1 once ready, WATCHDOG=1 per heartbeat, STOPPING=1 at shutdown."""

from __future__ import annotations

import signal
import time

import pytest

from services import NotifySocket

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notifications_follow_the_lifecycle(spawn, abstract):
    with NotifySocket(abstract=abstract) as notify:
        svc = spawn(env={"NOTIFY_SOCKET": notify.address})
        svc.start(wait="listening")
        assert notify.wait_for("READY=1", 10), f"no READY=1 on {notify.address}: {svc.stderr_text()}"
        ready_after_notify = svc.get("/.well-known/ready").status
        watchdogs = notify.wait_for("WATCHDOG=1", 3)
        svc.wait_ready(5)
        time.sleep(1)  # five heartbeats
        svc.signal(signal.SIGTERM)
        code = svc.wait(10)
        assert notify.wait_for("STOPPING=1", 2)
        sent = list(notify.assignments())

    assert code == 0
    assert ready_after_notify == 200, "READY=1 must only be sent once the service answers ready"
    assert watchdogs
    assert sent.count("READY=1") == 1
    assert sent.count("WATCHDOG=1") >= 3, f"one WATCHDOG=1 per heartbeat (every 0.2 s): {sent}"
    assert sent.index("READY=1") < sent.index("STOPPING=1")
    assert "READY=1" not in sent[sent.index("STOPPING=1") :]


def test_without_notify_socket_nothing_breaks(spawn):
    svc = spawn().start()

    assert svc.stop() == 0
