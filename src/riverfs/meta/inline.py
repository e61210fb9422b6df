"""Small slices kept in the metadata database instead of the object store.

A slice of at most the volume's `inline_limit` bytes, committed whole by one flush (a small
file written and closed), is stored as one `inline_blocks` row instead of an object: the
block's stored form (chunk/block.py: checksummed, compressed and encrypted as the object
would be, bound to the object key it would have had), inserted by the transaction that
commits the slice's record. Creating, writing and closing a small file then costs no PUT and
no thread hop, and deleting it no DELETE.

Rows are read with the chunk records that name them (one transaction, so a reader never sees
records without their data), and deleted by the transaction in which the last chunk row lets
go of the slice (meta/refs.py), so the deleter never sees them. Everything else about a slice
(records, sharing by copy_file_range, compaction) is the same for inline and stored slices.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_INLINE = 64 << 10  # the largest inline_limit a volume may choose
_BATCH = 500  # ids per IN (...) query


async def insert(tx, blocks: dict[int, tuple[int, bytes]]) -> None:
    """Store slice id -> (slice size, stored block) rows."""
    for sid, (size, raw) in blocks.items():
        await tx.defer("INSERT INTO inline_blocks VALUES (?, ?, ?)", sid, size, raw)


async def load(tx, ids: Iterable[int]) -> dict[int, bytes]:
    """The stored blocks of those of `ids` that are inline."""
    ids = sorted(set(ids))
    found: dict[int, bytes] = {}
    for i in range(0, len(ids), _BATCH):
        part = ids[i : i + _BATCH]
        marks = ", ".join("?" * len(part))
        sql = f"SELECT slice, data FROM inline_blocks WHERE slice IN ({marks})"
        rows = await tx.all(sql, *part)
        found.update((int(sid), bytes(raw)) for sid, raw in rows)
    return found


async def drop(tx, sid: int) -> bool:
    """Delete slice `sid`'s row; False if the slice is not inline (its blocks are objects)."""
    return await tx.run("DELETE FROM inline_blocks WHERE slice = ?", sid) > 0


async def sizes(meta) -> dict[int, tuple[int, int]]:
    """Every inline slice: id -> (slice size, stored bytes), for fsck."""
    rows = await meta.db.txn(
        lambda tx: tx.all("SELECT slice, size, LENGTH(data) FROM inline_blocks"), write=False
    )
    return {int(sid): (int(size), int(n)) for sid, size, n in rows}


async def stored_block(meta, sid: int) -> bytes | None:
    """One inline slice's stored block (fsck --check-data decodes it)."""
    row = await meta.db.txn(
        lambda tx: tx.one("SELECT data FROM inline_blocks WHERE slice = ?", sid), write=False
    )
    return bytes(row[0]) if row else None
