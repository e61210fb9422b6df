"""Whole-volume scans for the maintenance tools (gc, fsck): every chunk, node and entry.

Each scan pages through its table in key order, one short read transaction a page, so a scan
of a large volume never holds a transaction (or memory for the whole table) for long.
"""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator

from riverfs.errors import FSError, RiverError
from riverfs.meta.engine import _ATTR_COLS, Meta
from riverfs.meta.slices import Slice, decode_slices, encode_slices
from riverfs.meta.types import ROOT_INODE, Attr

PAGE = 1000


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
        attr = await meta._attr(tx, inode)
        if attr is not None and attr.nlink == 0:
            await meta._free(tx, attr)

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


async def replace_chunk(meta: Meta, inode: int, idx: int, old: list[Slice], new: Slice) -> bool:
    """Replace a chunk's records `old` by the single slice `new` (compaction), queueing the old
    slices for deletion. False, changing nothing, if the records are no longer `old`."""

    async def fn(tx):
        row = await tx.one("SELECT slices FROM chunks WHERE inode = ? AND idx = ?", inode, idx)
        if row is None or decode_slices(bytes(row[0])) != old:
            return False
        await tx.run(
            "UPDATE chunks SET slices = ? WHERE inode = ? AND idx = ?",
            encode_slices([new]),
            inode,
            idx,
        )
        await meta._queue_slices(tx, [s for s in old if s.id != new.id])
        tx.changes.data(inode)
        return True

    return await meta.db.txn(fn)
