"""A byte budget shared by all write buffers of a mount: writers wait when it is spent."""

from __future__ import annotations

import asyncio


class BufferBudget:
    """At most `limit` bytes held at once; `acquire` waits (back-pressure) until they fit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = asyncio.Condition()

    async def acquire(self, n: int) -> None:
        n = min(n, self.limit)  # a single request larger than the whole budget still proceeds
        async with self._cond:
            await self._cond.wait_for(lambda: self.used + n <= self.limit)
            self.used += n

    def release(self, n: int) -> None:
        self.used = max(0, self.used - min(n, self.limit))
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._cond:
            self._cond.notify_all()
