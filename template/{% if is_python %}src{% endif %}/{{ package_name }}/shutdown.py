"""Signals: SIGTERM or SIGINT start a graceful shutdown, a second SIGINT exits at once (2),
SIGHUP reopens the log file."""

from __future__ import annotations

import asyncio
import contextlib
import logging as std_logging
import os
import signal
from collections.abc import Callable, Iterator

# A second SIGINT cuts work short: a runtime error.
EXIT_AT_ONCE = 2


class Signals:
    """The stop request: `stop` is set by the first SIGTERM or SIGINT, `name` says which."""

    def __init__(self, on_hangup: Callable[[], None], stop: asyncio.Event | None = None) -> None:
        self.stop = stop if stop is not None else asyncio.Event()
        self.name: str | None = None
        self._on_hangup = on_hangup

    def received(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            self._on_hangup()
            return
        if self.stop.is_set():
            if signum == signal.SIGINT:
                std_logging.shutdown()  # flush the log lines written so far
                os._exit(EXIT_AT_ONCE)
            return
        self.name = signal.Signals(signum).name
        self.stop.set()


@contextlib.contextmanager
def signals(on_hangup: Callable[[], None], stop: asyncio.Event | None = None) -> Iterator[Signals]:
    """Install the handlers on the running loop for the block; restore the defaults after.

    The first SIGTERM or SIGINT sets `stop` (a new event unless given).
    """
    loop = asyncio.get_running_loop()
    handled = Signals(on_hangup, stop)
    numbers = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    for signum in numbers:
        loop.add_signal_handler(signum, handled.received, signum)
    try:
        yield handled
    finally:
        for signum in numbers:
            loop.remove_signal_handler(signum)
