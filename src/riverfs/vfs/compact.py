"""Compaction: a chunk written in many small pieces is rewritten as one slice.

Every write adds a slice to its chunk, and a read must resolve all of them (and fetch blocks
of each), so a file patched thousands of times reads slowly. `compact_chunks` reads what a
chunk shows (its visible segments, holes as zeros between the first and last byte of data),
stores it as one new slice and replaces the chunk's records in one transaction, queueing the
old slices for deletion. It runs from `gc --delete`, on an unmounted volume only: a mount
writing the same chunk meanwhile would be overwritten (the replacement also checks that the
records did not change while it read them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from riverfs.chunk.store import BlockStore
from riverfs.errors import FSError
from riverfs.meta import inventory
from riverfs.meta.engine import CHUNK_SIZE
from riverfs.meta.slices import Slice, visible_segments
from riverfs.vfs.reader import FileReader
from riverfs.vfs.volume import Volume

MIN_SLICES = 16  # chunks with fewer data slices are left alone


@dataclass
class CompactReport:
    chunks: int = 0  # chunks rewritten
    slices_before: int = 0
    bytes_written: int = 0


async def compact_chunks(
    volume: Volume,
    blocks: BlockStore,
    *,
    min_slices: int = MIN_SLICES,
    progress: Callable[[int], None] = lambda n: None,
) -> CompactReport:
    meta = volume.meta
    report = CompactReport()
    reader = FileReader(meta, blocks)
    candidates = [
        (inode, idx, slices)
        async for inode, idx, slices in inventory.chunks(meta)
        if len({s.id for s in slices if s.id}) >= min_slices
    ]
    for inode, idx, slices in candidates:
        progress(1)
        try:
            length = (await meta.getattr(inode)).size
        except FSError:
            continue  # deleted meanwhile
        data = [s for s in visible_segments(slices, CHUNK_SIZE) if s.id]
        if not data:
            continue
        lo = data[0].pos
        hi = min(data[-1].end, length - idx * CHUNK_SIZE)
        if hi <= lo:
            continue
        content = await reader.read(inode, idx * CHUNK_SIZE + lo, hi - lo, length)
        slice_id = await meta.next_slice_id()
        bs = blocks.block_size
        for i in range(0, len(content), bs):
            await blocks.save(slice_id, i // bs, content[i : i + bs])
        new = Slice(lo, slice_id, len(content), 0, len(content))
        if await inventory.replace_chunk(meta, inode, idx, slices, new):
            report.chunks += 1
            report.slices_before += len(slices)
            report.bytes_written += len(content)
        else:  # the chunk changed while we read it: the new slice is garbage now
            await blocks.remove_slice(slice_id, len(content))
    return report
