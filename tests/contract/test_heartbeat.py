"""Contract §3 (paths.heartbeat_file) and §5 (/live): the main loop's heartbeat, seen from outside."""

from __future__ import annotations

import os
import re
import time

import pytest

from services import Metrics

pytestmark = pytest.mark.slow

CONTENT = re.compile(r"^\d+\n$")


def test_heartbeat_file_holds_the_unix_time_once_ready(spawn):
    svc = spawn().start()  # its own service: the file must be there as soon as it is ready

    text = svc.heartbeat_file.read_text()

    assert CONTENT.match(text), f"heartbeat file must be whole seconds and a newline, got {text!r}"
    assert abs(int(text) - time.time()) <= 2


def test_heartbeat_advances_and_is_replaced_atomically(shared_service):
    svc = shared_service  # heartbeat every 0.2 s
    first = int(svc.heartbeat_file.read_text())
    # Count inode changes between consecutive reads, not distinct inodes: a freed inode number
    # is soon reused, but never by the file that replaces it (both exist until the rename).
    inode, replaced, reads = None, 0, 0

    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        # Never a torn or empty read: the file is written aside, then renamed over.
        with open(svc.heartbeat_file) as f:
            text = f.read()
            now_inode = os.fstat(f.fileno()).st_ino
        replaced += inode is not None and now_inode != inode
        inode = now_inode
        assert CONTENT.match(text), f"read a partial heartbeat file: {text!r}"
        reads += 1

    assert int(svc.heartbeat_file.read_text()) >= first + 2
    assert replaced >= 5, (
        f"expected a new file (rename) per beat, saw {replaced} replacement(s) in {reads} reads"
    )


def test_heartbeat_metric_follows_the_file(shared_service, service_build):
    svc = shared_service

    beat = Metrics.parse(svc.metrics()).value(f"{service_build.metric_prefix}heartbeat_timestamp_seconds")

    assert beat is not None
    assert abs(beat - time.time()) < 1.5
    assert abs(beat - int(svc.heartbeat_file.read_text())) < 1.5


def test_live_while_the_heartbeat_is_young(shared_service):
    svc = shared_service

    for _ in range(10):
        resp = svc.get("/.well-known/live")
        assert (resp.status, resp.body) == (200, "ok")
        time.sleep(0.1)
