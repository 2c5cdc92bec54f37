"""Audit lines: security-relevant events, in their own file (`paths.audit_file`).

The log's line format with `AUDIT` in place of the level, kept longer than the log (its own
logrotate rule), reopened on SIGHUP like the log file:

    Nov 05 15:30:45.234 AUDIT start version=0.1.0 pid=4242 config_sha256=3f2a9c81d0e4

Events: `start` (version, digest of the effective configuration, secrets redacted),
`secrets file read` (path and mode, never the content), `reload` (SIGHUP),
`certificate reloaded` / `certificate reload failed`, `access refused` (a 401 or 403
answered by one of the service's own routes: method, route, status, peer) and `shutdown`
(its signal). Lines are written from anywhere through `record`; before `opened` and after
it, `record` writes nothing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .logging import format_line

MARKER = "AUDIT"


class AuditFile:
    """The audit file, opened for appending, one whole line per write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file = self._open()

    def _open(self) -> IO[str]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.path.open("a", encoding="utf-8", buffering=1)

    def write(self, message: str, fields: dict[str, object]) -> None:
        now = time.time()
        line = format_line(now, int((now % 1) * 1000), MARKER, message, fields)
        with self._lock:
            self._file.write(line + "\n")

    def reopen(self) -> None:
        """Open the path again (after logrotate moved the old file away)."""
        fresh = self._open()
        with self._lock:
            old, self._file = self._file, fresh
        old.close()

    def close(self) -> None:
        with self._lock:
            self._file.close()


_current: AuditFile | None = None


def record(message: str, **fields: object) -> None:
    """Write one audit line (nothing when no audit file is open)."""
    if _current is not None:
        _current.write(message, fields)


def reopen() -> None:
    if _current is not None:
        _current.reopen()


@contextlib.contextmanager
def opened(path: Path) -> Iterator[AuditFile]:
    """Open the audit file for the block: `record` writes to it."""
    global _current  # noqa: PLW0603 (one audit file per process, written from every module)
    audit = AuditFile(path)
    _current = audit
    try:
        yield audit
    finally:
        _current = None
        audit.close()
