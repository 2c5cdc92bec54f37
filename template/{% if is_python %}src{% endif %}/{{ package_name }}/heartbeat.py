"""The heartbeat file: the Unix time in whole seconds, rewritten atomically by the main loop.

Shell checks read it as `$(( $(date +%s) - $(cat file) ))`. Because the asyncio loop writes
it, a blocked loop stops the heartbeat, and liveness turns 503.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

from . import limits


def write(path: Path, now: float) -> None:
    """Write `<unix seconds>\n` to a temporary file in the same directory, then rename it."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(f"{int(now)}\n", encoding="ascii")
    os.replace(temporary, path)


async def beat_forever(path: Path, interval: float, on_beat: Callable[[float], None]) -> None:
    """Write the file at once, then every `interval` seconds, calling `on_beat(unix_time)` each time.

    A beat whose file cannot be written (no file descriptor left, disk full) is skipped and
    logged at most once per interval of `limits`; the loop goes on.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        now = time.time()
        try:
            write(path, now)
        except OSError as error:
            if error.errno in limits.FD_ERRNOS:
                limits.exhausted("file_descriptors")
            limits.warn(
                "heartbeat",
                "cannot write the heartbeat file",
                severe=True,
                error=error.strerror or str(error),
            )
        else:
            on_beat(now)
        await asyncio.sleep(interval)
