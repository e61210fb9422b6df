"""Warming a file into this mount's block cache, and dropping it again: the answers of the
`riverfs.warmup` and `riverfs.evict` virtual xattrs (vfs/introspect.py), which `riverfs
warmup` (cli/warmup.py) asks of every file it walks.

The blocks warmed are the ones a read of the whole file loads: each chunk's visible segments
(as vfs/reader.py resolves them), cut at the file's length, so bytes that were overwritten
and wait for compaction are not fetched. Inline slices live in the metadata and need
nothing. Only committed data is warmed: writes still buffered are cached when they are
uploaded (a mount caches what it writes).

Where they go: the disk cache when the mount has one, else the memory LRU of decoded blocks
(64 MiB by default, so a file larger than that keeps only its last blocks); the reply says
which and its capacity. At most WORKERS blocks of one file are asked for at once, and the
block store lets `max_prefetch` fetches run for the whole mount (chunk/store.py `warm`).

Each getxattr does the work: a caller that asks the size of the value first (size 0, as
getfattr does) warms the file with that call and is shown the second one's answer (nothing
left to fetch). `riverfs warmup` asks once, with a buffer large enough for any answer.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from typing import TYPE_CHECKING

from riverfs.chunk.block import CHUNK_SIZE, BlockCorrupt
from riverfs.chunk.store import WARM_CACHED, WARM_FETCHED, WARM_MISSED
from riverfs.errors import FSError
from riverfs.meta.slices import visible_segments
from riverfs.objects import StoreError

if TYPE_CHECKING:
    from riverfs.meta import Attr
    from riverfs.vfs.fs import VFS

log = logging.getLogger(__name__)

WORKERS = 4  # blocks of one file asked for at once

Block = tuple[int, int, int]  # slice id, block index, block length


async def warm(vfs: VFS, inode: int) -> bytes:
    """Fetch every block of file `inode` into the cache; the JSON reply: bytes `fetched` from
    the store, bytes already `cached` (or staged, or inline), bytes `missed` (the cache did
    not keep them: full), and the `cache` used ("disk" or "memory") with its `capacity`."""
    attr = await _file(vfs, inode)
    blocks, local = await _blocks(vfs, attr)
    done = {WARM_FETCHED: 0, WARM_CACHED: local, WARM_MISSED: 0}

    async def one(block: Block) -> None:
        done[await vfs.blocks.warm(*block)] += block[2]

    await _each(vfs, inode, "warm up", blocks, one)
    cache = vfs.blocks.cache
    reply = {
        "fetched": done[WARM_FETCHED],
        "cached": done[WARM_CACHED],
        "missed": done[WARM_MISSED],
        "cache": "disk" if cache is not None else "memory",
        "capacity": cache.capacity if cache is not None else vfs.blocks.memory_limit,
    }
    return _json(reply)


async def evict(vfs: VFS, inode: int) -> bytes:
    """Drop every block of file `inode` from the memory and disk caches, and the kernel's
    cached pages of it; the JSON reply: bytes `evicted` (blocks that were held) of `bytes`
    (every block of the file). Staged blocks (not uploaded yet) stay."""
    attr = await _file(vfs, inode)
    blocks, _ = await _blocks(vfs, attr)
    evicted = 0
    for block in blocks:
        if await vfs.blocks.evict(*block):
            evicted += block[2]
    vfs.watcher.kernel.forget_inode(inode, True)  # or reads are served from its page cache
    reply = {"evicted": evicted, "bytes": sum(b[2] for b in blocks)}
    return _json(reply)


async def _file(vfs: VFS, inode: int) -> Attr:
    attr = await vfs.meta.getattr(inode, fresh=True)
    if attr.is_dir:
        raise FSError(errno.EISDIR, "riverfs warmup walks directories itself: ask each file")
    return attr


async def _blocks(vfs: VFS, attr: Attr) -> tuple[list[Block], int]:
    """The stored blocks a read of the whole file loads, in file order, each once; and the
    bytes of it in inline slices (held by the metadata). Nothing for a non-regular file."""
    if not attr.is_file:
        return [], 0
    bs = vfs.blocks.block_size
    blocks: dict[Block, None] = {}
    inline = 0
    for index in range(-(-attr.size // CHUNK_SIZE)):
        slices, stored = await vfs.meta.read_chunk_data(attr.inode, index)
        limit = min(CHUNK_SIZE, attr.size - index * CHUNK_SIZE)
        for seg in visible_segments(slices, CHUNK_SIZE):
            if seg.pos >= limit:
                break
            if not seg.id:
                continue
            n = min(seg.end, limit) - seg.pos
            if seg.id in stored:
                inline += n
                continue
            for bi in range(seg.offset // bs, (seg.offset + n - 1) // bs + 1):
                blocks[(seg.id, bi, min(bs, seg.size - bi * bs))] = None
    return list(blocks), inline


async def _each(vfs: VFS, inode: int, what: str, blocks: list[Block], fn) -> None:
    """`fn(block)` for every block, WORKERS at a time; the first failure stops the others
    and is raised as EIO (what a read of the block would return)."""
    todo = iter(blocks)

    async def worker() -> None:
        for block in todo:
            await fn(block)

    tasks = [asyncio.ensure_future(worker()) for _ in range(min(WORKERS, len(blocks)))]
    try:
        await asyncio.gather(*tasks)
    except (BlockCorrupt, StoreError) as e:
        log.error("%s inode %d: %s", what, inode, e)
        raise FSError(errno.EIO, str(e)) from e
    finally:
        for t in tasks:
            t.cancel()


def _json(reply: dict) -> bytes:
    return json.dumps(reply, separators=(",", ":")).encode()
