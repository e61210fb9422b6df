"""A byte budget shared by all write buffers of a mount: writers wait when it is spent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class BufferBudget:
    """At most `limit` bytes held at once; `acquire` waits (back-pressure) until they fit.

    Bytes held by buffers that only a flush would release (tails smaller than a block) could
    fill the budget for good; so whenever a writer has to wait, `on_pressure` is called to
    get some buffer flushed.
    """

    def __init__(self, limit: int, on_pressure: Callable[[], None] = lambda: None) -> None:
        self.limit = limit
        self.used = 0
        self.on_pressure = on_pressure
        self._cond = asyncio.Condition()

    async def acquire(self, n: int) -> None:
        n = min(n, self.limit)  # a single request larger than the whole budget still proceeds
        async with self._cond:
            while self.used + n > self.limit:
                self.on_pressure()
                await self._cond.wait()
            self.used += n

    def release(self, n: int) -> None:
        self.used = max(0, self.used - min(n, self.limit))
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._cond:
            self._cond.notify_all()
