"""Metadata backup: the whole volume's metadata as streamed JSON lines, and its restore.

The first line is a header (`riverfs_dump`, version, the volume settings); then one line per
row: `{"t": table, "r": [values in TABLE_COLUMNS order]}`, bytes in base64. Runtime state
(sessions, open-deleted inodes, leases, the changelog) is not part of it. The wrapped master
key of an encrypted volume is written only when asked (`with_keys`); without it the restored
volume cannot be read, and `load` says so.

Lines are written and read one page at a time, so neither side holds the volume in memory.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable
from typing import IO

from riverfs.errors import RiverError
from riverfs.meta import inventory
from riverfs.meta.engine import Meta
from riverfs.meta.schema import TABLES
from riverfs.meta.slices import decode_slices
from riverfs.meta.types import VolumeSettings

DUMP_VERSION = 1
PAGE = 1000
# Table -> (columns, key column for paging, byte columns).
TABLE_COLUMNS: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    "nodes": (
        (
            "inode",
            "mode",
            "uid",
            "gid",
            "atime",
            "mtime",
            "ctime",
            "nlink",
            "length",
            "stored",
            "rdev",
            "parent",
        ),
        "inode",
        (),
    ),  # fmt: skip
    "edges": (("id", "parent", "name", "inode"), "id", ("name",)),
    "chunks": (("inode", "idx", "slices"), "", ("slices",)),
    "symlinks": (("inode", "target"), "inode", ("target",)),
    "xattrs": (("inode", "name", "value"), "", ("name", "value")),
    "pending_deletes": (("id", "slice", "size", "queued"), "id", ()),
    "slice_refs": (("slice", "size", "refs"), "slice", ()),
    "inline_blocks": (("slice", "size", "data"), "slice", ("data",)),
    "pending_block_deletes": (
        ("id", "slice", "size", "first_block", "last_block", "queued"),
        "id",
        (),
    ),
}


async def dump(
    meta: Meta, out: IO[str], *, with_keys: bool = False, progress: Callable[[int], None] = print
) -> int:
    """Write the volume's metadata to `out`; return the number of rows."""
    settings = await meta.load_settings()
    if settings is None:
        raise RiverError("nothing to dump: the database holds no riverfs volume")
    header = json.loads(settings.to_json())
    if settings.encryption and not with_keys:
        header["encryption"] = {"omitted": True}
    counters = dict(
        await meta.db.txn(lambda tx: tx.all("SELECT name, value FROM counters"), write=False)
    )
    usage = await meta.usage()
    counters.update(used_bytes=usage.used_bytes, inodes=usage.inodes)
    out.write(json.dumps({"riverfs_dump": DUMP_VERSION, "settings": header, "counters": counters}))
    out.write("\n")
    rows = 0
    for table, (columns, key, blobs) in TABLE_COLUMNS.items():
        async for row in _scan(meta, table, columns, key):
            values = [
                base64.b64encode(bytes(v)).decode() if c in blobs else v
                for c, v in zip(columns, row, strict=True)
            ]
            out.write(json.dumps({"t": table, "r": values}, separators=(",", ":")))
            out.write("\n")
            rows += 1
            if rows % PAGE == 0:
                progress(PAGE)
    return rows


async def _scan(meta: Meta, table: str, columns: tuple[str, ...], key: str):
    cols = ", ".join(columns)
    if not key:  # composite keys: page by LIMIT/OFFSET over a stable order
        order = ", ".join(columns[:2])
        offset = 0
        while True:
            rows = await meta.db.txn(
                lambda tx, o=offset: tx.all(
                    f"SELECT {cols} FROM {table} ORDER BY {order} LIMIT ? OFFSET ?", PAGE, o
                ),
                write=False,
            )
            for row in rows:
                yield row
            if len(rows) < PAGE:
                return
            offset += PAGE
    async for row in inventory.rows(meta, table, cols, key):
        yield row


async def load(
    meta: Meta, inp: IO[str], *, uuid: str, progress: Callable[[int], None] = print
) -> tuple[VolumeSettings, int]:
    """Restore a dump into an empty database as volume `uuid` (a new identity: the caller
    hands the store over to it); return its settings and the number of rows."""
    if await meta.load_settings() is not None:
        raise RiverError("the database already holds a volume: load into an empty one")
    try:
        head = json.loads(inp.readline())
    except ValueError:
        head = {}
    if head.get("riverfs_dump") != DUMP_VERSION:
        raise RiverError("not a riverfs metadata dump (or one of an unknown version)")
    settings = dataclasses.replace(
        VolumeSettings.from_json(json.dumps(head["settings"])), uuid=uuid
    )
    if settings.encryption.get("omitted"):
        raise RiverError(
            "the dump was made without the volume's keys: its data could not be read; "
            "dump again with --with-keys"
        )
    await meta.db.executescript(TABLES)

    async def start(tx):
        await tx.run("INSERT INTO settings VALUES ('volume', ?)", settings.to_json())
        for name, value in head["counters"].items():
            await tx.run("INSERT INTO counters VALUES (?, ?)", name, value)

    await meta.db.txn(start)
    rows = 0
    highest = {"next_inode": 0, "next_slice": 0}  # ids in use, whatever the header said
    batch: list[tuple[str, list]] = []
    for line in inp:
        item = json.loads(line)
        if item.get("t") not in TABLE_COLUMNS:
            raise RiverError(f"bad line in the dump: unknown table {item.get('t')!r}")
        batch.append((item["t"], item["r"]))
        _note_ids(highest, item["t"], item["r"])
        if len(batch) >= PAGE:
            rows += await _insert(meta, batch)
            progress(len(batch))
            batch = []
    rows += await _insert(meta, batch)
    await meta.db.reset_ids(("edges", "pending_deletes", "pending_block_deletes"))

    async def counters(tx):  # never hand out an id a loaded row uses (dumps of live volumes)
        for name, value in highest.items():
            await tx.run(
                "UPDATE counters SET value = ? WHERE name = ? AND value <= ?",
                value + 1,
                name,
                value,
            )

    await meta.db.txn(counters)
    await meta.rebuild_dir_usage()  # derived from the namespace: never in a dump
    return settings, rows


def _note_ids(highest: dict[str, int], table: str, values: list) -> None:
    if table == "nodes":
        highest["next_inode"] = max(highest["next_inode"], values[0])
    elif table == "chunks":
        ids = [s.id for s in decode_slices(base64.b64decode(values[2]))]
        highest["next_slice"] = max(highest["next_slice"], *ids, 0)
    elif table in ("pending_deletes", "pending_block_deletes"):
        highest["next_slice"] = max(highest["next_slice"], values[1])


async def _insert(meta: Meta, batch: list[tuple[str, list]]) -> int:
    async def fn(tx):
        for table, values in batch:
            columns, _, blobs = TABLE_COLUMNS[table]
            row = [
                base64.b64decode(v) if c in blobs else v
                for c, v in zip(columns, values, strict=True)
            ]
            marks = ", ".join("?" * len(columns))
            await tx.defer(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", *row)

    if batch:
        await meta.db.txn(fn)
    return len(batch)
