"""The PID file: `<pid>\n`, locked with flock for the life of the process.

A file whose lock is free was left by a process that is gone: it is taken over. A file
whose lock is held belongs to a live process: starting again is an error.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import os_reason
from .logging import get_logger

log = get_logger(__name__)


class PidFileError(Exception):
    """The PID file cannot be created, opened or locked; the message is the error line's."""


class PidFileHeld(Exception):
    """Another live process holds the PID file's lock."""

    def __init__(self, path: Path, pid: str) -> None:
        super().__init__(f"PID file {path} is held by process {pid}")
        self.path = path
        self.pid = pid


@contextlib.contextmanager
def held(path: Path) -> Iterator[None]:
    """Create and lock the PID file; remove it at exit. Raises PidFileHeld."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        raise PidFileError(f"cannot use PID file {path}: {os_reason(error)}") from error
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PidFileHeld(path, _read(fd) or "unknown") from None
        if existed:
            # Left by a process that is gone (even an empty file: it died while writing it).
            log.warn("taking over stale PID file", path=path, old_pid=_read(fd))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        try:
            yield
        finally:
            # Unlink while still holding the lock, so no other process sees a removed file as ours.
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    finally:
        os.close(fd)


def _read(fd: int) -> str:
    return os.pread(fd, 64, 0).decode(errors="replace").strip()
