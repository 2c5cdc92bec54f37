"""Retries of transient errors: 100, 200, 400, 800, 1600 ms, then give up.

Hand-written: five fixed delays and one predicate are shorter here than the same policy
configured in tenacity, and keep one import off the service's start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from .errors import Kind, classify

T = TypeVar("T")
DELAYS = (0.1, 0.2, 0.4, 0.8, 1.6)


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    on_retry: Callable[[BaseException, float], None],
    delays: Sequence[float] = DELAYS,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Await `attempt()`; after a transient error wait the next delay and try again.

    Persistent errors, and the transient error after the last delay, are raised.
    `on_retry(error, delay)` is called before each wait, to count it.
    """
    for delay in delays:
        try:
            return await attempt()
        except Exception as error:
            if classify(error) is not Kind.TRANSIENT:
                raise
            on_retry(error, delay)
        await sleep(delay)
    return await attempt()
