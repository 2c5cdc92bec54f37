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


def write(path: Path, now: float) -> None:
    """Write `<unix seconds>\n` to a temporary file in the same directory, then rename it."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(f"{int(now)}\n", encoding="ascii")
    os.replace(temporary, path)


async def beat_forever(path: Path, interval: float, on_beat: Callable[[float], None]) -> None:
    """Write the file at once, then every `interval` seconds, calling `on_beat(unix_time)` each time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        now = time.time()
        write(path, now)
        on_beat(now)
        await asyncio.sleep(interval)
