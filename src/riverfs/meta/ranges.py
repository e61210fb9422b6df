"""Byte ranges of a file's data: fallocate, SEEK_DATA / SEEK_HOLE and copy_file_range.

All three work on a chunk's *pieces*: its visible segments (meta/slices.py) that are not holes,
sorted, disjoint and cut at the end of the file. A piece shows bytes of a stored slice, or is
allocated space: a record with slice id 0 and size ALLOCATED, which reads as zeros and counts
in st_blocks, like an unwritten extent of ext4 (and like one it is a hole for SEEK_DATA).

A chunk that a range operation changes is written back as its pieces, one record each (so the
records hidden by later ones go too). The slices its row names no more are let go, and the
blocks of an unshared slice that no record of its row needs any more are queued for deletion
(meta/refs.py): a punched hole frees the whole blocks inside it. copy_file_range writes no
data: the destination's records name the source's slices (at an offset within them), which
makes those slices shared.

`stored` (st_blocks) changes by the bytes of pieces gained or lost. The rest of riverfs adds
every committed write to it (overwrites too, capped at the length), so stored stays at least
the bytes of all pieces of the file, and a file that holds any data never has stored 0
(freeing a file reads its chunks only then).
"""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from riverfs.chunk.block import CHUNK_SIZE
from riverfs.errors import FSError
from riverfs.meta import refs
from riverfs.meta.slices import ALLOCATED, Slice, decode_slices, encode_slices, visible_segments
from riverfs.meta.types import Attr

KEEP_SIZE = 0x01  # FALLOC_FL_KEEP_SIZE
PUNCH_HOLE = 0x02  # FALLOC_FL_PUNCH_HOLE
ZERO_RANGE = 0x10  # FALLOC_FL_ZERO_RANGE
SEEK_DATA = 3
SEEK_HOLE = 4
# SEEK_DATA / SEEK_HOLE answer in 4 KiB blocks, as ext4 does: a block holding any data is data.
SEEK_BLOCK = 4096
MAX_SIZE = (1 << 63) - 1  # the kernel's s_maxbytes of a FUSE mount
SEEK_PAGE = 256  # chunk rows per query while seeking

# ---- pieces: the algebra of one chunk --------------------------------------------------------


def part(p: Slice, lo: int, hi: int) -> Slice:
    """What piece `p` shows at [lo, hi) of its chunk (a range within it)."""
    return Slice(lo, p.id, p.size, p.offset + (lo - p.pos) if p.id else 0, hi - lo)


def pieces(records: list[Slice], limit: int) -> list[Slice]:
    """A chunk's data and allocated segments, sorted, cut at `limit` (the end of the file,
    relative to the chunk)."""
    out: list[Slice] = []
    if not records or limit <= 0:
        return out
    for seg in visible_segments(records, CHUNK_SIZE):
        if seg.pos >= limit:
            break
        if seg.id or seg.size == ALLOCATED:
            out.append(part(seg, seg.pos, min(seg.end, limit)))
    return out


def cut(ps: list[Slice], lo: int, hi: int) -> list[Slice]:
    """`ps` without [lo, hi)."""
    out = []
    for p in ps:
        if p.end <= lo or p.pos >= hi:
            out.append(p)
            continue
        if p.pos < lo:
            out.append(part(p, p.pos, lo))
        if p.end > hi:
            out.append(part(p, hi, p.end))
    return out


def holes(ps: list[Slice], lo: int, hi: int) -> list[tuple[int, int]]:
    """The ranges within [lo, hi) that no piece of `ps` (sorted) covers."""
    gaps, at = [], lo
    for p in ps:
        if p.pos >= hi:
            break
        if p.end <= at:
            continue
        if p.pos > at:
            gaps.append((at, p.pos))
        at = max(at, p.end)
    if at < hi:
        gaps.append((at, hi))
    return gaps


def merged(ps: Iterable[Slice]) -> list[Slice]:
    """Disjoint pieces sorted, neighbours that continue each other joined."""
    out: list[Slice] = []
    for p in sorted(ps, key=lambda p: p.pos):
        q = out[-1] if out else None
        if (
            q is not None
            and q.end == p.pos
            and q.id == p.id
            and q.size == p.size
            and (not p.id or q.offset + q.length == p.offset)
        ):
            out[-1] = Slice(q.pos, q.id, q.size, q.offset, q.length + p.length)
        else:
            out.append(p)
    return out


def allocated(lo: int, hi: int) -> Slice:
    return Slice(lo, 0, ALLOCATED, 0, hi - lo)


def blocks_needed(records: Iterable[Slice], block_size: int) -> set[int]:
    """Indexes of the blocks of their slice that `records` show bytes of."""
    need: set[int] = set()
    for r in records:
        if r.length > 0:
            need.update(range(r.offset // block_size, (r.offset + r.length - 1) // block_size + 1))
    return need


def _runs(indexes: list[int]) -> list[tuple[int, int]]:
    """Sorted indexes as (first, last) runs of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for i in indexes:
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def data_extents(records: list[Slice], base: int, size: int) -> list[tuple[int, int]]:
    """File ranges of a chunk (at file offset `base`) that SEEK_DATA sees as data: its data
    pieces widened to whole 4 KiB blocks (cut at `size`), joined where they meet."""
    out: list[tuple[int, int]] = []
    for p in pieces(records, size - base):
        if not p.id:
            continue  # allocated space is a hole, as an unwritten extent of ext4
        a = (base + p.pos) // SEEK_BLOCK * SEEK_BLOCK
        b = min(-(-(base + p.end) // SEEK_BLOCK) * SEEK_BLOCK, size)
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


# ---- changing chunks -------------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    idx: int
    records: list[Slice] | None  # the row's records now (None: no row)
    old: list[Slice]  # its pieces now
    new: list[Slice]  # its pieces after


Change = Callable[[int, list[Slice], int, int], list[Slice]]  # (idx, pieces, lo, hi) -> pieces


async def _rows(tx, inode: int, first: int, last: int) -> dict[int, list[Slice]]:
    rows = await tx.all(
        "SELECT idx, slices FROM chunks WHERE inode = ? AND idx >= ? AND idx <= ?",
        inode,
        first,
        last,
    )
    return {idx: decode_slices(bytes(blob)) for idx, blob in rows}


async def _plan(
    tx,
    inode: int,
    length: int,
    lo: int,
    hi: int,
    change: Change,
    visit: Iterable[int] | None,
    room: int | None = None,
) -> list[_Plan]:
    """How `change` turns the chunks overlapping [lo, hi) of a file of `length` bytes: the
    chunks that have a row, plus `visit` (None: every chunk of the range, each of which the
    change fills: ENOSPC at once if those without a row cannot fit in `room` bytes)."""
    if lo >= hi:
        return []
    first, last = lo // CHUNK_SIZE, (hi - 1) // CHUNK_SIZE
    rows = await _rows(tx, inode, first, last)
    if visit is None and room is not None and (last - first - 1 - len(rows)) * CHUNK_SIZE > room:
        raise FSError(errno.ENOSPC, f"allocating {hi - lo} bytes")
    indexes = range(first, last + 1) if visit is None else sorted({*rows, *visit})
    plans = []
    for idx in indexes:
        base = idx * CHUNK_SIZE
        records = rows.get(idx)
        old = pieces(records or [], length - base)
        a, b = max(lo - base, 0), min(hi - base, CHUNK_SIZE)
        new = change(idx, old, a, b)
        if new != old:
            plans.append(_Plan(idx, records, old, new))
    return plans


async def _apply(
    meta,
    tx,
    attr: Attr,
    plans: list[_Plan],
    length: int,
    mtime: int,
    t: int,
    block_size: int,
    room: int | None = None,
) -> Attr:
    """Write the planned chunks, let go of the slices they name no more (and of the blocks of
    those only they use), and set the file's length, stored bytes and times. ENOSPC if the
    stored bytes would grow by more than `room`."""
    inode = attr.inode
    deltas: dict[int, tuple[int, int]] = {}  # slice -> (size, change in rows naming it)
    kept: dict[int, list[tuple[int, list[Slice], list[Slice]]]] = {}
    covered = 0
    for plan in plans:
        covered += sum(p.length for p in plan.new) - sum(p.length for p in plan.old)
        before = {(s.id, s.size) for s in plan.records or () if s.id}
        after = {(p.id, p.size) for p in plan.new if p.id}
        for sid, size in before - after:
            deltas[sid] = (size, deltas.get(sid, (size, 0))[1] - 1)
        for sid, size in after - before:
            deltas[sid] = (size, deltas.get(sid, (size, 0))[1] + 1)
        for sid, size in before & after:
            kept.setdefault(sid, []).append(
                (
                    size,
                    [s for s in plan.records if s.id == sid],
                    [p for p in plan.new if p.id == sid],
                )
            )
    stored = min(max(attr.stored + covered, 0), length)
    if room is not None and stored - attr.stored > room:
        raise FSError(errno.ENOSPC, f"allocating {stored - attr.stored} bytes")
    for plan in plans:
        blob = encode_slices(plan.new)
        if not plan.new:
            await tx.run("DELETE FROM chunks WHERE inode = ? AND idx = ?", inode, plan.idx)
        elif plan.records is None:
            await tx.run("INSERT INTO chunks VALUES (?, ?, ?)", inode, plan.idx, blob)
        else:
            await tx.run(
                "UPDATE chunks SET slices = ? WHERE inode = ? AND idx = ?", blob, inode, plan.idx
            )
    if deltas or kept:
        counts = await refs.counts(tx, {*deltas, *kept})
        after_counts = await refs.change(tx, counts, deltas, t)
        for sid, rows in kept.items():
            if len(rows) != 1 or counts[sid] != 1 or after_counts[sid] != 1:
                continue  # shared: its other rows may need any of its blocks
            size, old, new = rows[0]
            gone = blocks_needed(old, block_size) - blocks_needed(new, block_size)
            for first, last in _runs(sorted(gone)):
                await refs.queue_blocks(tx, sid, size, first, last, t)
    if (
        stored == 0
        and attr.stored
        and await tx.one("SELECT 1 FROM chunks WHERE inode = ? LIMIT 1", inode)
    ):
        stored = min(1, length)  # records hidden by holes remain: freeing must find them
    await meta.resized_in(tx, attr, length)
    await tx.defer(
        "UPDATE nodes SET length = ?, stored = ?, mtime = ?, ctime = ? WHERE inode = ?",
        length,
        stored,
        mtime,
        t,
        inode,
    )
    await meta.count_in(tx, used=stored - attr.stored)
    tx.changes.data(inode)
    return dataclasses.replace(attr, size=length, stored=stored, mtime=mtime, ctime=t)


async def _file(meta, tx, inode: int, not_a_file: int) -> Attr:
    attr = await meta.must_attr_in(tx, inode)
    if attr.is_dir:
        raise FSError(errno.EISDIR)
    if not attr.is_file:
        raise FSError(not_a_file)
    return attr


# ---- the operations (each runs inside one transaction of Meta) -------------------------------


async def fallocate(
    meta,
    tx,
    inode: int,
    offset: int,
    length: int,
    mode: int,
    t: int,
    block_size: int,
    capacity: int | None,
) -> Attr:
    """Modes 0 and KEEP_SIZE allocate the holes of the range (KEEP_SIZE: within the length
    only); PUNCH_HOLE|KEEP_SIZE removes everything in it; ZERO_RANGE replaces it by allocated
    space. Times as ext4 sets them: ctime always, mtime when the size or contents change."""
    attr = await _file(meta, tx, inode, errno.ENODEV)
    end = offset + length
    size = attr.size
    new_length = size if mode & KEEP_SIZE else max(size, end)
    mtime = t
    room = None  # bytes the volume can still take (allocation may need them)
    if capacity is not None and not mode & PUNCH_HOLE:
        used, = await tx.one("SELECT COALESCE(SUM(bytes), 0) FROM usage")  # fmt: skip
        base, = await tx.one("SELECT value FROM counters WHERE name = 'used_bytes'")  # fmt: skip
        room = capacity - int(base) - int(used)
    if mode & PUNCH_HOLE:
        if offset >= size:
            return attr  # ext4 changes nothing, not even the times

        def change(idx, ps, a, b):
            return cut(ps, a, b)

        plans = await _plan(tx, inode, size, offset, min(end, size), change, ())
    elif mode & ZERO_RANGE:

        def change(idx, ps, a, b):
            return merged([*cut(ps, a, b), allocated(a, b)])

        plans = await _plan(tx, inode, size, offset, min(end, new_length), change, None, room)
    else:

        def change(idx, ps, a, b):
            return merged([*ps, *(allocated(x, y) for x, y in holes(ps, a, b))])

        plans = await _plan(tx, inode, size, offset, min(end, new_length), change, None, room)
        if new_length == size:
            mtime = attr.mtime
    return await _apply(meta, tx, attr, plans, new_length, mtime, t, block_size, room)


async def seek(meta, tx, inode: int, offset: int, whence: int) -> int:
    """The first data (SEEK_DATA) or hole (SEEK_HOLE) byte at or after `offset`, in 4 KiB
    blocks as ext4 answers; the end of the file is a hole. ENXIO at or past the end, and for
    SEEK_DATA when no data follows."""
    attr = await meta.must_attr_in(tx, inode)
    size = attr.size
    if offset < 0 or offset >= size:
        raise FSError(errno.ENXIO)
    at = offset  # SEEK_HOLE: no hole before here
    idx, last = offset // CHUNK_SIZE, (size - 1) // CHUNK_SIZE
    while idx <= last:
        rows = await tx.all(
            "SELECT idx, slices FROM chunks WHERE inode = ? AND idx >= ? AND idx <= ?"
            " ORDER BY idx LIMIT ?",
            inode,
            idx,
            last,
            SEEK_PAGE,
        )
        for row_idx, blob in rows:
            base = row_idx * CHUNK_SIZE
            if whence == SEEK_HOLE and base > at:
                return at  # a chunk without a row
            for a, b in data_extents(decode_slices(bytes(blob)), base, size):
                if b <= at:
                    continue
                if whence == SEEK_DATA:
                    return max(a, at)
                if a > at:
                    return at
                at = b
            if whence == SEEK_HOLE and at < base + CHUNK_SIZE:
                return at
        if len(rows) < SEEK_PAGE:
            break
        idx = rows[-1][0] + 1
    if whence == SEEK_DATA:
        raise FSError(errno.ENXIO, "no data after the offset")
    return min(at, size)


async def copy_range(
    meta,
    tx,
    inode_in: int,
    off_in: int,
    inode_out: int,
    off_out: int,
    length: int,
    t: int,
    block_size: int,
) -> tuple[int, Attr]:
    """Make [off_out, off_out + n) of the destination show what [off_in, off_in + n) of the
    source shows (data, allocated space and holes), n = `length` cut at the source's end.
    Linux's checks: EISDIR, EINVAL (not regular files, or overlapping ranges of one file),
    EFBIG (an offset at the size limit)."""
    src = await _file(meta, tx, inode_in, errno.EINVAL)
    dst = src if inode_out == inode_in else await _file(meta, tx, inode_out, errno.EINVAL)
    count = 0 if off_in >= src.size else min(length, src.size - off_in)
    if off_out >= MAX_SIZE:
        raise FSError(errno.EFBIG)
    count = min(count, MAX_SIZE - off_out)
    if inode_in == inode_out and off_out + count > off_in and off_out < off_in + count:
        raise FSError(errno.EINVAL, "overlapping ranges of one file")
    if not count:
        return 0, dst
    # The source's pieces in the range, placed where they go in the destination's chunks.
    incoming: dict[int, list[Slice]] = {}
    first, last = off_in // CHUNK_SIZE, (off_in + count - 1) // CHUNK_SIZE
    for idx, records in sorted((await _rows(tx, inode_in, first, last)).items()):
        base = idx * CHUNK_SIZE
        for p in pieces(records, src.size - base):
            lo, hi = max(base + p.pos, off_in), min(base + p.end, off_in + count)
            if lo >= hi:
                continue
            q = part(p, lo - base, hi - base)
            to = off_out + (lo - off_in)
            done = 0
            while done < q.length:  # split where the destination's chunks end
                di, dpos = divmod(to + done, CHUNK_SIZE)
                n = min(q.length - done, CHUNK_SIZE - dpos)
                offset = q.offset + done if q.id else 0
                incoming.setdefault(di, []).append(Slice(dpos, q.id, q.size, offset, n))
                done += n
    if inode_out != inode_in:
        # Write the source's row: a concurrent free or truncate of the source (which writes it
        # too) then collides with this copy, so no slice is freed while a copy takes it.
        await tx.run("UPDATE nodes SET atime = atime WHERE inode = ?", inode_in)

    def change(idx, ps, a, b):
        return merged([*cut(ps, a, b), *incoming.get(idx, ())])

    plans = await _plan(tx, inode_out, dst.size, off_out, off_out + count, change, incoming)
    new_length = max(dst.size, off_out + count)
    return count, await _apply(meta, tx, dst, plans, new_length, t, t, block_size)
