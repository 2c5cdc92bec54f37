"""The service's directories: created at start with their mode; old temporary files removed.

`paths.tmp_dir` holds files that nothing needs across a restart (the heartbeat, partial
writes); those older than `paths.tmp_max_age_secs` are removed at start, so that a crash
loop cannot fill the disk with them:

    Dec 08 01:02:03.456 INFO removed old temporary files dir=./tmp count=3 max_age_secs=86400
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from pathlib import Path

from .logging import get_logger

log = get_logger(__name__)

# 0750: the service's group may read its data, others may not.
DATA_DIR_MODE = stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP


def make_dir(path: Path, mode: int | None = None) -> None:
    """Create the directory (and its parents) if missing, with exactly `mode` when given."""
    if path.is_dir():
        return
    path.mkdir(parents=True, exist_ok=True)
    if mode is not None:
        # mkdir's mode is masked by the umask; the contract wants exactly this one.
        path.chmod(mode)


def clean_tmp(tmp_dir: str, max_age_secs: float, now: float | None = None) -> int:
    """Remove the regular files below `tmp_dir` last modified more than `max_age_secs` ago.

    Links are removed, never followed; directories are kept. Logs one line with the count
    and returns it.
    """
    cutoff = (time.time() if now is None else now) - max_age_secs
    count = 0
    for root, _dirs, files in os.walk(tmp_dir):
        for name in files:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                info = os.lstat(path)
                if (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)) and info.st_mtime < cutoff:
                    os.unlink(path)
                    count += 1
    log.info("removed old temporary files", dir=tmp_dir, count=count, max_age_secs=max_age_secs)
    return count
