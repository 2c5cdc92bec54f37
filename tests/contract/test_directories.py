"""Contract §3 (paths.tmp_dir, paths.data_dir): directories made at start, old temporary files removed."""

from __future__ import annotations

import os
import time

import pytest

pytestmark = pytest.mark.slow


def test_temporary_files_older_than_the_max_age_are_removed_at_start(spawn):
    svc = spawn(settings={"PATHS__TMP_MAX_AGE_SECS": "3600"})
    tmp = svc.workdir / "tmp"
    (tmp / "nested").mkdir(parents=True)
    old, old_nested, fresh = tmp / "upload.part", tmp / "nested" / "old.part", tmp / "fresh.part"
    for path in (old, old_nested, fresh):
        path.write_text("x")
    hours_ago = time.time() - 7200
    for path in (old, old_nested):
        os.utime(path, (hours_ago, hours_ago))

    svc.start()
    line = svc.wait_for_message("removed old temporary files", timeout=1)  # logged before `ready`

    assert line.level == "INFO"
    assert line.fields == {"dir": "./tmp", "count": "2", "max_age_secs": "3600"}
    assert not old.exists() and not old_nested.exists()
    assert fresh.exists() and (tmp / "nested").is_dir()
    assert svc.stop() == 0


def test_the_count_is_logged_when_nothing_is_old(spawn):
    svc = spawn().start()

    line = svc.wait_for_message("removed old temporary files", timeout=1)

    assert line.fields == {"dir": "./tmp", "count": "0", "max_age_secs": "86400"}
    assert svc.stop() == 0
