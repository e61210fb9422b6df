"""Whole-volume scans for the maintenance tools (gc, fsck): every chunk, node and entry; and
the metadata side of compaction (vfs/compact.py): reading a chunk with its file's length,
swapping its records, giving a compaction's lease back.

Each scan pages through its table in key order, one short read transaction a page, so a scan
of a large volume never holds a transaction (or memory for the whole table) for long.
"""

from __future__ import annotations

import collections
import stat
from collections.abc import AsyncIterator

from riverfs.errors import FSError, RiverError
from riverfs.meta import inline, refs
from riverfs.meta.engine import _ATTR_COLS, CHUNK_SIZE, Meta, now_ns
from riverfs.meta.ranges import _runs, blocks_needed, pieces
from riverfs.meta.slices import Slice, decode_slices, encode_slices
from riverfs.meta.types import ROOT_INODE, Attr

PAGE = 1000
# A compaction recounts the file's stored bytes (st_blocks) from all its chunk rows when it has
# at most this many (16 GiB); a larger file keeps its count (capped at its length).
RECOUNT_ROWS = 256


async def chunks(meta: Meta) -> AsyncIterator[tuple[int, int, list[Slice]]]:
    """(inode, chunk index, slices) of every chunk record."""
    inode, idx = -1, -1
    while True:
        rows = await meta.db.txn(
            lambda tx, i=inode, c=idx: tx.all(
                "SELECT inode, idx, slices FROM chunks WHERE inode > ? OR (inode = ? AND idx > ?)"
                " ORDER BY inode, idx LIMIT ?",
                i,
                i,
                c,
                PAGE,
            ),
            write=False,
        )
        for inode, idx, blob in rows:
            yield inode, idx, decode_slices(bytes(blob))
        if len(rows) < PAGE:
            return


async def rows(meta: Meta, table: str, columns: str, key: str) -> AsyncIterator[tuple]:
    """Every row of `table` (`columns`, the first of them `key`, an integer key), in key order."""
    after = -1
    while True:
        page = await meta.db.txn(
            lambda tx, a=after: tx.all(
                f"SELECT {columns} FROM {table} WHERE {key} > ? ORDER BY {key} LIMIT ?", a, PAGE
            ),
            write=False,
        )
        for row in page:
            yield row
        if len(page) < PAGE:
            return
        after = page[-1][0]


async def nodes(meta: Meta) -> AsyncIterator[Attr]:
    async for row in rows(meta, "nodes", _ATTR_COLS, "inode"):
        yield Attr(*row)


async def edges(meta: Meta) -> AsyncIterator[tuple[int, int, bytes, int]]:
    """(id, parent, name, inode) of every directory entry."""
    async for row_id, parent, name, inode in rows(meta, "edges", "id, parent, name, inode", "id"):
        yield row_id, parent, bytes(name), inode


async def pending_slices(meta: Meta) -> set[int]:
    """Slices queued for deletion (their objects are not garbage for gc to report)."""
    rows = await meta.db.txn(lambda tx: tx.all("SELECT slice FROM pending_deletes"), write=False)
    return {r[0] for r in rows}


async def kept_inodes(meta: Meta) -> set[int]:
    """Deleted inodes something still keeps: an open handle somewhere, or a grace period."""
    rows = await meta.db.txn(
        lambda tx: tx.all("SELECT inode FROM sustained UNION SELECT inode FROM doomed"),
        write=False,
    )
    return {r[0] for r in rows}


# ---- repairs (fsck --repair) ----------------------------------------------------------------


async def drop_edge(meta: Meta, edge_id: int) -> None:
    await meta.db.txn(lambda tx: tx.run("DELETE FROM edges WHERE id = ?", edge_id))


async def set_nlink(meta: Meta, inode: int, nlink: int) -> None:
    await meta.db.txn(lambda tx: tx.run("UPDATE nodes SET nlink = ? WHERE inode = ?", nlink, inode))


async def free_inode(meta: Meta, inode: int) -> None:
    """Free a deleted inode (its data queued for deletion)."""

    async def fn(tx):
        attr = await meta.attr_in(tx, inode)
        if attr is not None and attr.nlink == 0:
            await meta.free_in(tx, attr)

    await meta.db.txn(fn)


async def lost_and_found(meta: Meta, name: bytes) -> int:
    """The inode of /lost+found, made if missing."""
    try:
        attr = await meta.lookup(ROOT_INODE, name)
    except FSError:
        return (await meta.create(ROOT_INODE, name, stat.S_IFDIR | 0o700, 0, 0)).inode
    if not attr.is_dir:
        raise RiverError(f"/{name.decode()} exists and is not a directory: move it away first")
    return attr.inode


async def adopt(meta: Meta, directory: int, name: bytes, inode: int, is_dir: bool) -> None:
    """Give an orphan inode an entry `name` in `directory`."""

    async def fn(tx):
        await tx.run(
            "INSERT INTO edges (parent, name, inode) VALUES (?, ?, ?)", directory, name, inode
        )
        if is_dir:
            await tx.run("UPDATE nodes SET parent = ? WHERE inode = ?", directory, inode)
            await tx.run("UPDATE nodes SET nlink = nlink + 1 WHERE inode = ?", directory)
        else:
            await tx.run("UPDATE nodes SET nlink = 1 WHERE inode = ?", inode)

    await meta.db.txn(fn)


# ---- compaction (vfs/compact.py) -------------------------------------------------------------


async def chunk_for_compaction(
    meta: Meta, inode: int, idx: int
) -> tuple[list[Slice], int, dict[int, bytes]] | None:
    """A chunk's records, its file's length and the stored blocks of its inline slices
    (meta/inline.py), read together; None if the chunk has no row (or the file is gone)."""

    async def fn(tx):
        row = await tx.one(
            "SELECT c.slices, n.length FROM chunks c JOIN nodes n ON n.inode = c.inode"
            " WHERE c.inode = ? AND c.idx = ?",
            inode,
            idx,
        )
        if row is None:
            return None
        records = decode_slices(bytes(row[0]))
        small = {s.id for s in records if s.id and s.size <= inline.MAX_INLINE}
        return records, int(row[1]), (await inline.load(tx, small) if small else {})

    return await meta.db.txn(fn, write=False)


async def queue_unless_taken(meta: Meta, slice_id: int, size: int, after: float) -> None:
    """Queue slice `slice_id` for deletion `after` seconds from now, unless `replace_chunk`
    takes it first. A compaction queues its new slice so before storing a block of it: if it
    crashes or gives up, the deleter removes the blocks; and the queue row tells a retried
    replace (whose first COMMIT's answer was lost) that it committed already."""
    due = now_ns() + int(after * 1e9)
    await meta.db.txn(
        lambda tx: tx.run(
            "INSERT INTO pending_deletes (slice, size, queued) VALUES (?, ?, ?)",
            slice_id,
            size,
            due,
        )
    )


def _by_slice(records: list[Slice]) -> dict[int, list[Slice]]:
    """A chunk's records grouped by slice id (one pass, not one per kept slice)."""
    out: dict[int, list[Slice]] = collections.defaultdict(list)
    for s in records:
        out[s.id].append(s)
    return out


async def replace_chunk(
    meta: Meta,
    inode: int,
    idx: int,
    old: list[Slice],
    new: list[Slice],
    *,
    block_size: int,
    fresh: int = 0,
    delay: float = 0.0,
) -> bool:
    """Replace a chunk's records `old` by `new`, which show the same bytes (compaction);
    `fresh`: the new slice `new` names (queued by `queue_unless_taken`), 0 if none.

    Records committed after `old` was read (writes and truncates append theirs) stay after
    `new`: they win over it exactly as they won over `old`. False, changing nothing but making
    `fresh` due for deletion, if the row no longer begins with `old` (a hole was punched, a
    copy landed, the file was truncated below the chunk or deleted, or another mount compacted
    it) or, with nothing appended, if the file no longer reaches the end of `new`'s data.

    The slices the row named and names no more are let go by the reference rules of
    meta/refs.py (a shared slice only loses a count), and the blocks of an unshared slice that
    the row still names but no longer needs are queued: none of them is deleted sooner than
    `delay` seconds from now (readers on this mount and others may still be reading them).
    The file's stored bytes (st_blocks) are recounted from its chunk rows. The node row is
    always written, so that a copy_file_range out of this chunk, which writes it too, collides
    with the swap on PostgreSQL instead of missing it."""
    t = now_ns()
    due = t + int(delay * 1e9)

    async def fn(tx):
        intent = None
        if fresh:
            intent = await tx.one("SELECT id FROM pending_deletes WHERE slice = ?", fresh)
        row = await tx.one("SELECT slices FROM chunks WHERE inode = ? AND idx = ?", inode, idx)
        records = decode_slices(bytes(row[0])) if row is not None else None
        if fresh and intent is None:  # an earlier try committed (or gave up) already
            return records is not None and any(s.id == fresh for s in records)
        attr = await meta.attr_in(tx, inode)
        later = records[len(old) :] if records is not None else []
        end = idx * CHUNK_SIZE + max((s.end for s in new if s.id), default=0)
        if (
            records is None
            or records[: len(old)] != old
            or attr is None
            or (not later and attr.size < end)
        ):
            if intent is not None:
                await tx.run("UPDATE pending_deletes SET queued = ? WHERE id = ?", t, intent[0])
            return False
        if intent is not None:
            await tx.run("DELETE FROM pending_deletes WHERE id = ?", intent[0])
        after_records = [*new, *later]
        if after_records:
            await tx.run(
                "UPDATE chunks SET slices = ? WHERE inode = ? AND idx = ?",
                encode_slices(after_records),
                inode,
                idx,
            )
        else:
            await tx.run("DELETE FROM chunks WHERE inode = ? AND idx = ?", inode, idx)
        before = {(s.id, s.size) for s in records if s.id}
        after = {(s.id, s.size) for s in after_records if s.id and s.id != fresh}
        deltas = {sid: (size, -1) for sid, size in before - after}
        kept = dict(before & after)
        if deltas or kept:
            counts = await refs.counts(tx, {*deltas, *kept})
            await refs.change(tx, counts, deltas, due)
            pieces_before, pieces_after = _by_slice(records), _by_slice(after_records)
            for sid, size in kept.items():
                if counts[sid] != 1:
                    continue  # shared: its other rows may need any of its blocks
                gone = blocks_needed(pieces_before[sid], block_size)
                gone -= blocks_needed(pieces_after[sid], block_size)
                for first, last in _runs(sorted(gone)):
                    await refs.queue_blocks(tx, sid, size, first, last, due)
        stored = await _recount(tx, attr, idx, after_records)
        await tx.defer("UPDATE nodes SET stored = ? WHERE inode = ?", stored, inode)
        await meta.count_in(tx, used=stored - attr.stored)
        tx.changes.slices(inode)
        return True

    return await meta.db.txn(fn)


async def _recount(tx, attr: Attr, idx: int, new: list[Slice]) -> int:
    """The file's stored bytes with chunk `idx` showing `new`: what its pieces cover (data
    and allocated space), as meta/ranges.py counts them; the old count for a large file."""
    rows = await tx.all(
        "SELECT idx, slices FROM chunks WHERE inode = ? LIMIT ?", attr.inode, RECOUNT_ROWS + 1
    )
    if len(rows) > RECOUNT_ROWS:
        return attr.stored
    total = 0
    for i, blob in rows:
        records = new if i == idx else decode_slices(bytes(blob))
        total += sum(p.length for p in pieces(records, attr.size - i * CHUNK_SIZE))
    if not total and any(i != idx or new for i, _ in rows):
        total = 1  # records hidden by holes remain: freeing the file must find them
    return min(total, attr.size)


async def give_back_lease(meta: Meta, name: str) -> None:
    """Drop lease `name` if this session holds it (a compaction's lease, once done)."""
    await meta.db.txn(
        lambda tx: tx.run(
            "DELETE FROM leases WHERE name = ? AND session = ?", name, meta.session_id
        )
    )


# ---- the delete queues, as the deleter drains them (vfs/deleter.py) --------------------------
# `queued` is when an entry may go: the time it was queued, or later for the slices a
# compaction replaced (readers may still be reading them) and for a compaction's new slice
# (deleted only if the compaction never swaps it in).


async def due_deletes(meta: Meta, limit: int, now: int | None) -> list[tuple[int, int, int]]:
    """Oldest queued slice deletes due at `now` (None: all): (queue id, slice id, size)."""
    cutoff = (1 << 63) - 1 if now is None else now
    return await meta.db.txn(
        lambda tx: tx.all(
            "SELECT id, slice, size FROM pending_deletes WHERE queued <= ? ORDER BY id LIMIT ?",
            cutoff,
            limit,
        ),
        write=False,
    )


async def due_block_deletes(
    meta: Meta, limit: int, now: int | None
) -> list[tuple[int, int, int, int, int]]:
    """Oldest queued block deletes due at `now` (None: all): (queue id, slice id, slice size,
    first, last block)."""
    cutoff = (1 << 63) - 1 if now is None else now
    return await meta.db.txn(
        lambda tx: tx.all(
            "SELECT id, slice, size, first_block, last_block FROM pending_block_deletes"
            " WHERE queued <= ? ORDER BY id LIMIT ?",
            cutoff,
            limit,
        ),
        write=False,
    )
