"""Garbage collection: objects in the store that no metadata references.

Leaks have known causes (docs/ARCHITECTURE.md, "Crash windows"): a crash between uploading a
slice's blocks and committing it, a format --force over old data, a deleter interrupted by a
crash. `collect_garbage` finds them by listing the store and comparing slice ids with the
chunk records; objects younger than `min_age` are left alone, since they may belong to a
write still in flight on some mount. With `delete` it also compacts fragmented chunks
(vfs/compact.py) and runs the queued deferred deletes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from riverfs.meta import inventory
from riverfs.vfs.compact import compact_chunks
from riverfs.vfs.deleter import Deleter
from riverfs.vfs.session import live_sessions, refuse_if_mounted
from riverfs.vfs.volume import Volume

MIN_AGE = 3600.0  # seconds: younger objects may be uploads not yet committed
SAMPLE = 20  # leaked keys kept for the report


@dataclass
class GarbageReport:
    objects: int = 0  # block objects listed
    leaked: int = 0
    leaked_bytes: int = 0
    young: int = 0  # unreferenced, but too young to judge
    deleted: int = 0
    pending_deleted: int = 0  # queued deferred deletes carried out
    compacted: int = 0  # fragmented chunks rewritten as one slice (with delete)
    sample: list[str] = field(default_factory=list)


def slice_of(key: str) -> int | None:
    """The slice id of a block object key (chunks/a/b/<id>_<index>_<len>), or None."""
    name = key.rsplit("/", 1)[-1]
    head = name.split("_", 1)[0]
    return int(head) if key.startswith("chunks/") and head.isdigit() else None


async def collect_garbage(
    volume: Volume,
    *,
    delete: bool = False,
    min_age: float = MIN_AGE,
    progress: Callable[[int], None] = lambda n: None,
) -> GarbageReport:
    """Report (and with `delete`, remove) unreferenced block objects."""
    report = GarbageReport()
    if delete:
        refuse_if_mounted(
            await live_sessions(volume.meta),
            "gc --delete",
            "a file written for longer than --min-age has blocks it has not committed yet",
        )
    blocks = volume.block_store()
    try:
        if delete:
            if not volume.encrypted or volume.keys is not None:  # compaction reads data
                report.compacted = (await compact_chunks(volume, blocks)).chunks
            report.pending_deleted = await Deleter(volume.meta, blocks).drain(everything=True)
        referenced = await inventory.pending_slices(volume.meta)
        async for _inode, _idx, slices in inventory.chunks(volume.meta):
            referenced.update(s.id for s in slices if s.id)
        cutoff = time.time() - min_age
        leaked: list[str] = []
        async for info in volume.store.list("chunks/"):
            report.objects += 1
            progress(1)
            slice_id = slice_of(info.key)
            if slice_id is None or slice_id in referenced:
                continue
            if info.last_modified.timestamp() > cutoff:
                report.young += 1
                continue
            report.leaked += 1
            report.leaked_bytes += info.size
            leaked.append(info.key)
        report.sample = leaked[:SAMPLE]
        if delete and leaked:
            await volume.store.delete_many(leaked)
            report.deleted = len(leaked)
    finally:
        await blocks.close()
    return report
