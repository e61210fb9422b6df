"""Background tasks of a mount (deleter, session upkeep, change watcher, kernel invalidation):
each is started with the mount and stopped, and waited for, at unmount."""

from __future__ import annotations

import asyncio
import contextlib


async def cancel(task: asyncio.Task | None) -> None:
    """Cancel a background task and wait until it has stopped."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
