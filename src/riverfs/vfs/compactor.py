"""The mount's background compactor: chunks this mount wrote in many pieces are laid out anew.

Each commit of this mount names the chunks it wrote (`touched`, from VFS._flush); they wait
in a bounded candidate set (a chunk touched again is not added twice). A worker takes the
oldest candidate, reads its records with the file's length (one read transaction) and asks
vfs/compact.py's `plan` whether a rewrite is worth it; most commits cost just that read. If it
is, the worker takes the chunk's lease (`compact:<inode>:<chunk>` in `leases`, so that two
mounts do not rewrite one chunk at once; the optimistic swap keeps it correct even when a
lease outlives a slow rewrite) and runs `compact_chunk`, paced to `rate` bytes per second of
new slice. A swap that failed because the chunk changed meanwhile is tried again later, a few
times. After a swap the mount drops its own view of the file (`invalidate`); other mounts
hear an `s` change event (same bytes, new slices: vfs/watcher.py). A chunk just rewritten is
looked at once more: records another mount committed during the rewrite stay after the new
ones, and that mount's compactor, refused the lease, counted on this one (it ends: each
rewrite merges slices or frees space).

Nothing here blocks a writer: the rewrite reads and writes blocks beside the writers, and a
writer's commit makes the swap fail instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from riverfs.chunk.block import CHUNK_SIZE
from riverfs.chunk.store import BlockStore
from riverfs.meta import Meta, inventory
from riverfs.vfs import compact
from riverfs.vfs.background import cancel

log = logging.getLogger(__name__)

MAX_CANDIDATES = 10_000  # chunks waiting to be looked at; more are dropped (seen next commit)
RETRIES = 3  # swaps that failed because the chunk changed, before waiting for the next commit
RETRY_AFTER = 1.0  # seconds
MIN_LEASE = 60.0  # seconds a chunk's lease lasts at least


@dataclass(slots=True, frozen=True)
class CompactionSettings:
    min_slices: int = compact.MIN_SLICES  # 0: no compaction while mounted
    max_overlap: float = compact.MAX_OVERLAP
    rate: int = 32 << 20  # bytes of new slices per second (0: unlimited)
    delay: float = 10.0  # seconds before the replaced slices may be deleted
    workers: int = 1  # chunks compacted at once

    @property
    def enabled(self) -> bool:
        return self.min_slices > 0


class Pace:
    """At most `rate` bytes per second: each caller waits until its bytes, after those before
    it, have had their time."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._free_at = 0.0

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        self._free_at = max(self._free_at, now) + n / self.rate
        await asyncio.sleep(self._free_at - now)


class Compactor:
    def __init__(
        self,
        meta: Meta,
        blocks: BlockStore,
        settings: CompactionSettings,
        invalidate: Callable[[int], None] = lambda inode: None,
    ) -> None:
        self.meta = meta
        self.blocks = blocks
        self.settings = settings
        self.invalidate = invalidate  # this mount's reader drops its views of the file
        self._ready: OrderedDict[tuple[int, int], int] = OrderedDict()  # chunk -> tries
        self._later: list[tuple[float, tuple[int, int], int]] = []  # (when, chunk, tries)
        self._busy: set[tuple[int, int]] = set()
        self._wake = asyncio.Event()
        self._pace = Pace(settings.rate)
        self._tasks: list[asyncio.Task] = []
        self.compacted = 0  # chunks rewritten (for tests and the log)
        self.bytes_written = 0

    def touched(self, inode: int, indexes) -> None:
        """A commit of this mount wrote these chunks of `inode`."""
        if not self.settings.enabled:
            return
        for idx in indexes:
            self._consider((inode, idx), 0)
        self._wake.set()

    def _consider(self, key: tuple[int, int], tries: int) -> None:
        """Make chunk `key` a candidate (once; none beyond MAX_CANDIDATES)."""
        if key not in self._ready and len(self._ready) < MAX_CANDIDATES:
            self._ready[key] = tries

    def start(self) -> None:
        if self.settings.enabled:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._work()) for _ in range(self.settings.workers)]

    async def stop(self) -> None:
        """Stop; a rewrite in progress is abandoned (its new slice is queued for deletion)."""
        for task in self._tasks:
            await cancel(task)
        self._tasks = []

    def _next(self) -> tuple[tuple[int, int], int] | None:
        now = time.monotonic()
        due = [item for item in self._later if item[0] <= now]
        if due:
            self._later = [item for item in self._later if item[0] > now]
            for _, key, tries in due:
                self._consider(key, tries)
        for key in self._ready:
            if key not in self._busy:
                return key, self._ready.pop(key)
        return None

    async def _work(self) -> None:
        while True:
            item = self._next()
            if item is None:
                self._wake.clear()
                wait = min((w for w, _, _ in self._later), default=None)
                timeout = None if wait is None else max(wait - time.monotonic(), 0.01)
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
                continue
            key, tries = item
            self._busy.add(key)
            try:
                changed = not await self._one(*key)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("compacting inode %d chunk %d failed (retried later): %s", *key, e)
                changed = True
            finally:
                self._busy.discard(key)
            if changed and tries + 1 < RETRIES:
                self._later.append((time.monotonic() + RETRY_AFTER * (tries + 1), key, tries + 1))

    async def _one(self, inode: int, idx: int) -> bool:
        """Look at one chunk and compact it if worth it; False if it changed meanwhile."""
        s = self.settings
        got = await inventory.chunk_for_compaction(self.meta, inode, idx)
        if got is None:
            return True
        records, length, _ = got
        limit = length - idx * CHUNK_SIZE
        bs = self.blocks.block_size
        worth = compact.plan(records, limit, bs, min_slices=s.min_slices, max_overlap=s.max_overlap)
        if worth is None:
            return True
        lease = f"compact:{inode}:{idx}"
        ttl = max(MIN_LEASE, 4 * CHUNK_SIZE / s.rate) if s.rate > 0 else MIN_LEASE
        if not await self.meta.take_lease(lease, ttl):
            return True  # another mount is at it (and looks again after its swap)
        try:
            done = await compact.compact_chunk(
                self.meta,
                self.blocks,
                inode,
                idx,
                min_slices=s.min_slices,
                max_overlap=s.max_overlap,
                delay=s.delay,
                take=self._pace.take,
            )
        finally:
            await inventory.give_back_lease(self.meta, lease)
        if isinstance(done, compact.Compacted):
            self.invalidate(inode)
            self.compacted += 1
            self.bytes_written += done.bytes_written
            self._consider((inode, idx), 0)  # what was committed meanwhile, by any mount
        return done is not False
