"""Compaction: a chunk written in many pieces is laid out anew, showing the same bytes.

Every commit adds records to its chunk, and overwritten bytes stay stored until nothing shows
them, so a file patched thousands of times reads slowly and costs store space. `plan` decides
from a chunk's records (and its file's length) what a compaction would do:

- the chunk's *pieces* (meta/ranges.py: visible data and allocated space, cut at the length)
  are what must survive; holes stay holes (no record), allocated space stays allocated;
- a slice mostly hidden (the blocks its pieces need hold more than KEEP_WASTE times what they
  show) has its pieces copied; of the others, smallest first: once `min_slices` small ones
  (showing less than a quarter block) crowd the chunk, the smallest of them until fewer than
  `min_slices` would be left, the new slice counted (at least two; just two when compaction
  keeps up with the commits); then each one showing less than TIER times what is copied so
  far; the rest stay where they are, whole.
  A large file patched in a few places keeps its large slice and only the patches are
  copied; a file written sequentially in whole slices is left alone; and, as in a
  size-tiered LSM tree, a byte is copied again only once what it is merged with has doubled
  (O(log) copies, not one per compaction);
- the copied pieces go, in chunk order, into one new slice; the chunk's new records are the
  kept pieces and one record per run of copied bytes.

It is worth doing when there are `min_slices` small slices to merge (each one is a record to
resolve and a block to fetch for reads, and a row that grows with every commit), or when the
chunk stores more than `max_overlap` times the bytes it shows and the rewrite frees some of
that. Each compaction merges slices or frees space, so compacting again and again without
new writes ends; a compacted chunk is not crowded any more, however far behind the commits
compaction was (merging only the two smallest of a chunk that had fallen behind left it
crowded, and nothing looked at it again until the next write).

`compact_chunk` carries a plan out: it reads the records and the length in one transaction,
queues the new slice for deletion in an hour (so a crash or a failed swap leaves no garbage for
long: the deleter removes it), reads the copied pieces through the block store (inline slices
from the database), stores the new slice (made durable, and on a write-back mount uploaded,
before the swap), and swaps the records with `inventory.replace_chunk`, which checks that
they did not change meanwhile: a writer committing to the chunk makes the swap fail, never
waits for it. The old slices go through the reference rules (meta/refs.py) and are deleted no
sooner than `delay` seconds later. `compact_chunks` runs it over a whole volume (`gc
--delete`, unmounted); vfs/compactor.py runs it in the background of a mount.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from riverfs.chunk.block import CHUNK_SIZE, block_key, block_lengths, decode_block
from riverfs.chunk.store import BlockStore
from riverfs.errors import FSError
from riverfs.meta import Meta, inventory
from riverfs.meta.ranges import blocks_needed, merged, pieces
from riverfs.meta.slices import Slice
from riverfs.objects import ObjectNotFound
from riverfs.vfs.volume import Volume

log = logging.getLogger(__name__)

MIN_SLICES = 16  # merging this many slices into one is worth a rewrite
MAX_OVERLAP = 2.0  # ... and so is storing more than this many times the bytes shown
KEEP_WASTE = 1.5  # a slice whose needed blocks hold at most this many times what it shows
TIER = 2.0  # ... stays where it is if it shows this many times what is copied (or more)
MIN_SAVING = 1 << 20  # an overlap rewrite frees at least this much (or half of what it stores)
ABANDON_AFTER = 3600.0  # s: a compaction that never swapped: the deleter removes its slice
UPLOAD_WAIT = 120.0  # s a write-back mount waits for the new slice's upload before giving up

Take = Callable[[int], Awaitable[None]]  # a rate limit: wait until `n` more bytes may go


async def _no_limit(n: int) -> None:
    pass


@dataclass(slots=True, frozen=True)
class Plan:
    keep: list[Slice]  # pieces that stay as they are (large ones, allocated space)
    copy: list[Slice]  # pieces whose bytes go into the new slice, in chunk order
    merges: int  # distinct slices the copied pieces come from
    stored_before: int  # bytes of the blocks the chunk's records need now
    stored_after: int  # ... and after the rewrite

    @property
    def size(self) -> int:
        """Bytes of the new slice."""
        return sum(p.length for p in self.copy)

    def records(self, slice_id: int) -> list[Slice]:
        """The chunk's records after the rewrite, with the new slice named `slice_id`."""
        size, at, out = self.size, 0, []
        for p in self.copy:
            out.append(Slice(p.pos, slice_id, size, at, p.length))
            at += p.length
        return merged([*self.keep, *out])


def block_bytes(records: list[Slice], size: int, block_size: int) -> int:
    """Bytes of the blocks of one slice (of `size` bytes) that `records` (naming it) need."""
    lengths = block_lengths(size, block_size)
    return sum(lengths[i] for i in blocks_needed(records, block_size) if i < len(lengths))


def plan(
    records: list[Slice],
    limit: int,
    block_size: int,
    *,
    min_slices: int = MIN_SLICES,
    max_overlap: float = MAX_OVERLAP,
) -> Plan | None:
    """What compacting a chunk with `records` (its file ending `limit` bytes into it) would
    do, or None if it is not worth it."""
    ps = pieces(records, limit)
    shown: dict[int, list[Slice]] = {}
    keep = [p for p in ps if not p.id]  # allocated space stays allocated
    for p in ps:
        if p.id:
            shown.setdefault(p.id, []).append(p)
    copy: list[Slice] = []
    copied = 0  # distinct slices copied
    stored_after = 0
    # Mostly hidden slices are copied. Of the others (their blocks hold little more than
    # they show), smallest first: once min_slices small ones crowd the chunk, the smallest
    # until fewer than min_slices would be left (with the new slice; two at least), then
    # each showing less than TIER times what is copied so far; the rest stay.
    intact: list[tuple[int, int, list[Slice]]] = []  # (bytes shown, blocks held, pieces)
    for group in shown.values():
        seen = sum(p.length for p in group)
        held = block_bytes(group, group[0].size, block_size)
        if held <= KEEP_WASTE * seen:
            intact.append((seen, held, group))
        else:
            copy += group
            copied += 1
    size = sum(p.length for p in copy)
    intact.sort(key=lambda item: item[0])
    small = block_size // 4
    crowd = max(min_slices, 2)
    crowded = sum(1 for group in shown.values() if sum(p.length for p in group) < small) >= crowd
    left = sum(1 for seen, _, _ in intact if seen < small)  # small ones not copied (yet)
    started = 0  # small slices taken to start a merge
    for seen, held, group in intact:
        if (crowded and seen < small and (started < 2 or left + 1 >= crowd)) or seen < TIER * size:
            started += 1
            left -= seen < small
            copy += group
            copied += 1
            size += seen
        else:
            keep += group
            stored_after += held
    copy.sort(key=lambda p: p.pos)
    stored_after += sum(p.length for p in copy)
    named: dict[int, list[Slice]] = {}
    for r in records:
        if r.id:
            named.setdefault(r.id, []).append(r)
    stored_before = sum(block_bytes(rs, rs[0].size, block_size) for rs in named.values())
    visible = sum(p.length for ps_ in shown.values() for p in ps_)
    merges = copied
    saving = stored_before - stored_after
    worth = crowded or (
        stored_before > max_overlap * visible
        and saving > 0
        and saving >= min(MIN_SAVING, stored_before // 2)
    )
    if not worth:
        return None
    return Plan(keep, copy, merges, stored_before, stored_after)


@dataclass(slots=True, frozen=True)
class Compacted:
    slices_before: int  # distinct slices the chunk named
    bytes_written: int  # bytes of the new slice
    stored_before: int
    stored_after: int


async def compact_chunk(
    meta: Meta,
    blocks: BlockStore,
    inode: int,
    idx: int,
    *,
    min_slices: int = MIN_SLICES,
    max_overlap: float = MAX_OVERLAP,
    delay: float = 0.0,
    take: Take = _no_limit,
) -> Compacted | bool:
    """Compact chunk `idx` of `inode` if it is worth it. Returns what was done, True if there
    was nothing to do, False if the chunk changed while it was being rewritten (try later)."""
    got = await inventory.chunk_for_compaction(meta, inode, idx)
    if got is None:
        return True
    records, length, stored_inline = got
    p = plan(
        records,
        length - idx * CHUNK_SIZE,
        blocks.block_size,
        min_slices=min_slices,
        max_overlap=max_overlap,
    )
    if p is None:
        return True
    size = p.size
    new_id = 0
    if size:
        new_id = await meta.next_slice_id()
        await inventory.queue_unless_taken(meta, new_id, size, ABANDON_AFTER)
        sizes = {s.id: s.size for s in records if s.id}
        inline = {
            sid: decode_block(raw, block_key(sid, 0, sizes[sid]), blocks.cipher)
            for sid, raw in stored_inline.items()
        }
        await _store(blocks, new_id, size, p.copy, inline, take)
        await blocks.make_durable()  # write-back: the staged blocks survive a crash ...
        if blocks.writeback:  # ... and other mounts read only the store
            await _uploaded(blocks, new_id, size)
    new = p.records(new_id)
    if not await inventory.replace_chunk(
        meta, inode, idx, records, new, block_size=blocks.block_size, fresh=new_id, delay=delay
    ):
        log.debug("compaction of inode %d chunk %d: changed meanwhile", inode, idx)
        return False
    log.debug(
        "compacted inode %d chunk %d: %d records of %d slices -> %d records, %d bytes copied,"
        " stored %d -> %d",
        inode,
        idx,
        len(records),
        len({s.id for s in records if s.id}),
        len(new),
        size,
        p.stored_before,
        p.stored_after,
    )
    return Compacted(len({s.id for s in records if s.id}), size, p.stored_before, p.stored_after)


async def _store(
    blocks: BlockStore,
    slice_id: int,
    size: int,
    copy: list[Slice],
    inline: dict[int, bytes | memoryview],
    take: Take,
) -> None:
    """Store the bytes of the pieces `copy`, one after the other, as slice `slice_id`; one
    block in memory at a time (besides the block store's own cache)."""
    bs = blocks.block_size
    lengths = block_lengths(size, bs)
    index, buf, filled = 0, bytearray(lengths[0]), 0
    for p in copy:
        at, left = p.offset, p.length
        while left:
            if p.id in inline:
                take_n = left
                src = memoryview(inline[p.id])[at : at + take_n]
            else:
                bi, bo = divmod(at, bs)
                blen = min(bs, p.size - bi * bs)
                take_n = min(left, blen - bo)
                block = await blocks.load(p.id, bi, blen)
                src = memoryview(block)[bo : bo + take_n]
            while src:
                n = min(len(src), len(buf) - filled)
                buf[filled : filled + n] = src[:n]
                filled += n
                src = src[n:]
                if filled == len(buf):
                    await take(filled)
                    await blocks.save(slice_id, index, buf)
                    index += 1
                    if index < len(lengths):
                        buf, filled = bytearray(lengths[index]), 0
            at += take_n
            left -= take_n


async def _uploaded(blocks: BlockStore, slice_id: int, size: int) -> None:
    """Wait until the store has every block of a staged slice (write-back mounts)."""
    deadline = time.monotonic() + UPLOAD_WAIT
    for index, length in enumerate(block_lengths(size, blocks.block_size)):
        key = block_key(slice_id, index, length)
        while True:
            try:
                await blocks.store.head(key)
                break
            except ObjectNotFound:
                if time.monotonic() > deadline:
                    raise FSError(
                        errno.EIO, f"{key} not uploaded within {UPLOAD_WAIT:.0f}s"
                    ) from None
                await asyncio.sleep(0.1)


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
    max_overlap: float = MAX_OVERLAP,
    progress: Callable[[int], None] = lambda n: None,
) -> CompactReport:
    """Compact every chunk of an unmounted volume that is worth it (`gc --delete`)."""
    meta = volume.meta
    report = CompactReport()
    bs = blocks.block_size
    candidates = [  # judged without the length first (nothing shows beyond it anyway)
        (inode, idx)
        async for inode, idx, slices in inventory.chunks(meta)
        if plan(slices, CHUNK_SIZE, bs, min_slices=min_slices, max_overlap=max_overlap)
    ]
    for inode, idx in candidates:
        progress(1)
        done = await compact_chunk(
            meta, blocks, inode, idx, min_slices=min_slices, max_overlap=max_overlap
        )
        if isinstance(done, Compacted):
            report.chunks += 1
            report.slices_before += done.slices_before
            report.bytes_written += done.bytes_written
    return report
