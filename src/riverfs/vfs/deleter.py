"""The background deleter: removes the blocks of slices nothing references any more.

Deleting a file only queues its slices (meta.pending_deletes; a punched hole queues blocks in
pending_block_deletes); this task drains those queues in batches, so unlink never waits for the
store and a crash never loses track of garbage. Only the mount holding the volume's background
lease runs it (`active`, set by vfs/session.py). An entry waits until it is due (its `queued`
time): the slices a compaction replaced are due some seconds after the swap, so that reads
in flight on any mount finish first (vfs/compact.py). `gc --delete`, with nothing mounted,
drains everything.
"""

from __future__ import annotations

import asyncio
import logging

from riverfs.chunk.store import BlockStore
from riverfs.meta import Meta, inventory, refs
from riverfs.meta.engine import now_ns
from riverfs.vfs.background import cancel

log = logging.getLogger(__name__)

BATCH = 100
DEBOUNCE = 0.05  # seconds between a poke and the drain it causes


class Deleter:
    def __init__(self, meta: Meta, blocks: BlockStore, idle_interval: float = 5.0) -> None:
        self.meta = meta
        self.blocks = blocks
        self.idle_interval = idle_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.active = True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def poke(self) -> None:
        """Something was queued: run soon."""
        self._wake.set()

    async def drain(self, everything: bool = False) -> int:
        """Delete everything queued that is due now (`everything`: all of it, for a volume
        nothing mounts); return how many slices were removed (blocks of punched holes are
        removed too, not counted)."""
        done = 0
        now = None if everything else now_ns()
        while batch := await inventory.due_deletes(self.meta, BATCH, now):
            finished = []
            for queue_id, slice_id, size in batch:
                try:
                    await self.blocks.remove_slice(slice_id, size)
                except Exception as e:
                    log.warning("deleting slice %d failed, will retry: %s", slice_id, e)
                    continue
                finished.append(queue_id)
            await self.meta.finish_deletes(finished)
            done += len(finished)
            if len(finished) < len(batch):
                return done  # the store is failing: try again later
        while batch := await inventory.due_block_deletes(self.meta, BATCH, now):
            finished = []
            for queue_id, slice_id, size, first, last in batch:
                try:
                    await self.blocks.remove_blocks(slice_id, size, first, last)
                except Exception as e:
                    log.warning(
                        "deleting blocks %d-%d of slice %d failed, will retry: %s",
                        first,
                        last,
                        slice_id,
                        e,
                    )
                    continue
                finished.append(queue_id)
            await refs.finish_blocks(self.meta, finished)
            if len(finished) < len(batch):
                break
        return done

    async def _run(self) -> None:
        while True:
            try:
                if self.active:
                    await self.drain()
            except Exception:
                log.exception("background deleter failed; retrying later")
            try:
                await asyncio.wait_for(self._wake.wait(), self.idle_interval)
                await asyncio.sleep(DEBOUNCE)  # a burst of deletes: one drain for all of it
            except TimeoutError:
                pass
            self._wake.clear()

    async def stop(self) -> None:
        await cancel(self._task)
