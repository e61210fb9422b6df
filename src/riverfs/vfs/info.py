"""What `riverfs info` shows about an inode, computed inside the mount (vfs/introspect.py
serves it as the `riverfs.info` virtual xattr).

A file: its chunks and slice records (several records per chunk: overwritten or appended in
pieces, until compaction rewrites the chunk), the bytes its slices hold against the bytes a
reader sees, and its blocks: object key, and where this mount holds each (memory, disk cache,
staging) besides the store. A directory: its counters (meta dir_usage) and its tree's totals,
summed over the tree's directories without reading an entry.

Only committed data is described: writes still buffered in a writer are not in it yet.
"""

from __future__ import annotations

import json
import stat
from typing import TYPE_CHECKING

from riverfs.chunk.block import block_key, block_lengths
from riverfs.meta.engine import CHUNK_SIZE
from riverfs.meta.slices import visible_segments

if TYPE_CHECKING:
    from riverfs.meta import Attr
    from riverfs.vfs.fs import VFS

HEAD_ROOM = 4096  # bytes of a reply kept for everything but the list of blocks

_TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "directory",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


async def describe(vfs: VFS, inode: int, first_block: int, limit: int) -> dict:
    """The inode as JSON-ready data of at most `limit` bytes once encoded: a file's blocks
    are listed from its `first_block`-th on, as many as fit; `next_block` says where the
    next page starts (None: that was the last)."""
    attr = await vfs.meta.getattr(inode, fresh=True)
    out = {
        "inode": attr.inode,
        "type": _TYPES.get(stat.S_IFMT(attr.mode), "unknown"),
        "size": attr.size,
        "nlink": attr.nlink,
    }
    if attr.is_dir:
        s = await vfs.meta.dir_summary(inode)
        out.update(
            entries=s.entries,
            bytes=s.bytes,
            tree={"directories": s.directories, "entries": s.tree_entries, "bytes": s.tree_bytes},
        )
    elif attr.is_file:
        out.update(await _file(vfs, attr, first_block, limit - HEAD_ROOM))
    return out


async def _file(vfs: VFS, attr: Attr, first_block: int, room: int) -> dict:
    chunks, inline = await vfs.meta.file_layout(attr.inode)
    records = [(idx, s) for idx, rows in chunks for s in rows]
    sizes: dict[int, int] = {}  # every slice the file names, in order of first appearance
    for _, s in records:
        if s.id:
            sizes.setdefault(s.id, s.size)
    visible = 0
    for idx, rows in chunks:
        base = idx * CHUNK_SIZE
        for seg in visible_segments(rows, CHUNK_SIZE):
            if seg.id and base + seg.pos < attr.size:
                visible += min(base + seg.end, attr.size) - base - seg.pos
    data_records = sum(1 for _, s in records if s.id)
    per_chunk = [sum(1 for s in rows if s.id) for _, rows in chunks]
    blocks = []  # (slice, block index, key or None when inline, plain size)
    for sid, size in sizes.items():
        if sid in inline:
            blocks.append((sid, 0, None, size))
        else:
            for i, n in enumerate(block_lengths(size, vfs.settings.block_size)):
                blocks.append((sid, i, block_key(sid, i, n), n))
    page, used = [], 0
    places = vfs.blocks.where([key for _, _, key, _ in blocks[first_block:] if key])
    next_block = None
    for at, (sid, i, key, n) in enumerate(blocks[first_block:], first_block):
        entry = {"slice": sid, "block": i, "key": key, "size": n}
        entry["in"] = places[key] if key else ["database"]
        used += len(json.dumps(entry)) + 2
        if used > room:
            next_block = at
            break
        page.append(entry)
    return {
        "stored": attr.stored,
        "chunks": len(chunks),
        "slices": data_records,  # data records of every chunk (holes not counted)
        "holes": len(records) - data_records,  # truncate's and punched holes' records
        "distinct_slices": len(sizes),
        "max_slices_per_chunk": max(per_chunk, default=0),
        "slice_bytes": sum(sizes.values()),  # what the slices hold (store or database)
        "visible_bytes": visible,  # what a reader sees of them (the rest reads as zeros)
        "objects": sum(1 for b in blocks if b[2]),
        "object_bytes": sum(b[3] for b in blocks if b[2]),
        "inline_slices": len(inline & sizes.keys()),
        "first_block": first_block,
        "blocks": page,
        "next_block": next_block,
    }
