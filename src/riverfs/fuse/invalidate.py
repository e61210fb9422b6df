"""Telling the kernel to forget cached entries and attributes (changes made by other mounts).

The kernel calls can block while a request on the same inode is in flight (which waits for our
event loop), so they run in one worker thread fed by a bounded queue. When the queue is full
the change is dropped with a warning: the kernel then keeps the stale item until its attribute
or entry timeout, which is the behaviour without invalidation, never a wrong answer forever.
"""

from __future__ import annotations

import asyncio
import errno
import logging

import pyfuse3

from riverfs.vfs.background import cancel

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000


class KernelInvalidator:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple] = asyncio.Queue(QUEUE_LIMIT)
        self._task: asyncio.Task | None = None
        self._running: asyncio.Future | None = None  # the kernel call in its thread
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop; a kernel call already in its thread finishes first (before unmount)."""
        await cancel(self._task)
        if self._running is not None and not self._running.done():
            await asyncio.wait([self._running], timeout=10)

    def forget_entry(self, parent: int, name: bytes) -> None:
        self._put(("entry", parent, name))

    def forget_inode(self, inode: int, data: bool) -> None:
        self._put(("inode", inode, data))

    def _put(self, item: tuple) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("kernel invalidation queue full: %d changes dropped", self.dropped)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await self._queue.get()
            self._running = loop.run_in_executor(None, _invalidate, item)
            await asyncio.shield(self._running)


def _invalidate(item: tuple) -> None:
    kind, inode, arg = item
    try:
        if kind == "entry":
            pyfuse3.invalidate_entry(inode, arg)
        else:
            pyfuse3.invalidate_inode(inode, attr_only=not arg)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ENOTDIR):  # the kernel forgot it already
            log.warning("kernel invalidation of %s %d failed: %s", kind, inode, e)
