"""Who references a slice: slices shared between chunk rows, and letting go of slices.

A slice is referenced by the chunk rows (inode, chunk index) whose records name it. A write
commits a slice to one row; copy_file_range (meta/ranges.py) makes other rows, of the same
file or of others, reference it too. `slice_refs` counts the rows of those shared slices only:
a slice without a row there is referenced by one chunk row (or by none, once that row let go
of it). When a row lets go of a slice (the file is freed, truncated, compacted, or a hole is
punched), the count goes down, and the slice's blocks are queued for deletion
(`pending_deletes`) only when no row references it any more (an inline slice's row, in the
database, is deleted right there: meta/inline.py).

Blocks of an unshared slice that no record of its one row needs any more (a hole punched
through the middle of a slice) are queued on their own (`pending_block_deletes`).

Writes to slice_refs are made at once (`tx.run`), not deferred: one transaction may let go of
the same slice twice (two files sharing it freed together) and must read its first change.
"""

from __future__ import annotations

from collections.abc import Iterable

from riverfs.meta import inline
from riverfs.meta.slices import Slice

_BATCH = 500  # ids per IN (...) query


async def counts(tx, ids: Iterable[int]) -> dict[int, int]:
    """How many chunk rows reference each of `ids`, all of which some row references."""
    ids = sorted(set(ids))
    found: dict[int, int] = {}
    for i in range(0, len(ids), _BATCH):
        part = ids[i : i + _BATCH]
        marks = ", ".join("?" * len(part))
        rows = await tx.all(f"SELECT slice, refs FROM slice_refs WHERE slice IN ({marks})", *part)
        found.update((int(s), int(n)) for s, n in rows)
    return {i: found.get(i, 1) for i in ids}


async def change(
    tx, before: dict[int, int], deltas: dict[int, tuple[int, int]], t: int
) -> dict[int, int]:
    """Apply `deltas` (slice id -> (slice size, change in the rows referencing it)) to the
    counts `before` (from `counts`); queue the slices nothing references any more for
    deletion. Returns the new counts."""
    after = dict(before)
    for sid, (size, delta) in deltas.items():
        old = before[sid]
        new = old + delta
        after[sid] = new
        if new == old:
            continue
        if new >= 2:
            if old >= 2:
                await tx.run("UPDATE slice_refs SET refs = ? WHERE slice = ?", new, sid)
            else:
                await tx.run("INSERT INTO slice_refs VALUES (?, ?, ?)", sid, size, new)
            continue
        if old >= 2:
            await tx.run("DELETE FROM slice_refs WHERE slice = ?", sid)
        if new <= 0 and not (size <= inline.MAX_INLINE and await inline.drop(tx, sid)):
            await tx.defer(
                "INSERT INTO pending_deletes (slice, size, queued) VALUES (?, ?, ?)", sid, size, t
            )
    return after


async def drop_rows(tx, rows: Iterable[list[Slice]], t: int) -> None:
    """Chunk rows with these records went away (or were replaced): each lets go of every
    slice it named once."""
    deltas: dict[int, tuple[int, int]] = {}
    for records in rows:
        for sid, size in {(s.id, s.size) for s in records if s.id}:
            deltas[sid] = (size, deltas.get(sid, (size, 0))[1] - 1)
    if deltas:
        await change(tx, await counts(tx, deltas), deltas, t)


async def queue_blocks(tx, sid: int, size: int, first: int, last: int, t: int) -> None:
    """Blocks `first`..`last` of slice `sid` are needed by no record any more."""
    await tx.defer(
        "INSERT INTO pending_block_deletes (slice, size, first_block, last_block, queued)"
        " VALUES (?, ?, ?, ?, ?)",
        sid,
        size,
        first,
        last,
        t,
    )


async def pending_blocks(meta, limit: int) -> list[tuple[int, int, int, int, int]]:
    """Oldest queued block deletes: (queue id, slice id, slice size, first, last block)."""
    return await meta.db.txn(
        lambda tx: tx.all(
            "SELECT id, slice, size, first_block, last_block FROM pending_block_deletes"
            " ORDER BY id LIMIT ?",
            limit,
        ),
        write=False,
    )


async def finish_blocks(meta, queue_ids: list[int]) -> None:
    async def fn(tx):
        for qid in queue_ids:
            await tx.run("DELETE FROM pending_block_deletes WHERE id = ?", qid)

    await meta.db.txn(fn)


async def shared_counts(meta) -> dict[int, int]:
    """Every row of slice_refs: slice id -> the count it records (fsck compares them)."""
    rows = await meta.db.txn(lambda tx: tx.all("SELECT slice, refs FROM slice_refs"), write=False)
    return {int(s): int(n) for s, n in rows}


async def set_counts(meta, wrong: dict[int, tuple[int, int]]) -> None:
    """fsck --repair: make slice_refs say `count` for each slice id -> (size, count) given."""

    async def fn(tx):
        for sid, (size, n) in wrong.items():
            await tx.run("DELETE FROM slice_refs WHERE slice = ?", sid)
            if n >= 2:
                await tx.run("INSERT INTO slice_refs VALUES (?, ?, ?)", sid, size, n)

    await meta.db.txn(fn)
