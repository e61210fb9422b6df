"""Checking a volume: every referenced object present, and the metadata consistent.

What `check_volume` looks at:
- objects: each block a file's slice records need exists in the store (one listing, no
  request per object) or, for an inline slice, in the database (meta/inline.py), is at
  least as long as a block header and, for a plain uncompressed volume, exactly as long as
  it must be; with `check_data`, each block is fetched and verified (checksums, and
  decryption for an encrypted volume);
- shared slices: the reference counts of slice_refs match the chunk rows naming each slice
  (a count too low would let a copy's blocks be deleted; `repair` sets them right);
- entries pointing to inodes that do not exist;
- link counts (files: their entries; directories: 2 + subdirectories);
- orphans: live inodes no entry reaches (moved to /lost+found by `repair`), and deleted
  inodes nothing keeps open any more (freed by `repair`);
- directory counters (meta dir_usage, what `riverfs info` answers from): each directory's
  entries and bytes against what its entries add up to (`repair` rebuilds them; checked last,
  after the repairs above changed entries).

It reports the paths of damaged files. A file with a missing or corrupt block cannot be
repaired (its data is gone); `repair` fixes the metadata problems above and says what it did.
Run it on an unmounted volume: mounts change what it looks at.
"""

from __future__ import annotations

import stat
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from riverfs.chunk.block import (
    BlockCorrupt,
    block_key,
    block_lengths,
    decode_block,
    payload_offset,
)
from riverfs.meta import inline, inventory, refs
from riverfs.meta.ranges import blocks_needed
from riverfs.meta.types import ROOT_INODE
from riverfs.objects import StoreError
from riverfs.vfs.session import live_sessions, refuse_if_mounted
from riverfs.vfs.volume import Volume

LOST_FOUND = b"lost+found"


@dataclass
class FsckReport:
    inodes: int = 0
    objects: int = 0  # block objects referenced
    damaged: dict[int, str] = field(default_factory=dict)  # inode -> what is wrong
    paths: dict[int, str] = field(default_factory=dict)  # inode -> a path to it
    problems: list[str] = field(default_factory=list)  # metadata problems found
    mounted: int = 0  # live sessions while checking (write-back blocks may be staged)
    repaired: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.damaged and not self.problems


async def check_volume(
    volume: Volume,
    *,
    repair: bool = False,
    check_data: bool = False,
    progress: Callable[[int], None] = lambda n: None,
) -> FsckReport:
    meta, settings = volume.meta, volume.settings
    report = FsckReport()
    mounts = await live_sessions(meta)
    report.mounted = len(mounts)
    if repair:
        refuse_if_mounted(mounts, "fsck --repair", "its mounts change what fsck repairs")
    stored = {info.key: info.size async for info in volume.store.list("chunks/")}
    in_database: dict[str, int] = {}  # inline slices (meta/inline.py): a row holds the block
    for sid, (size, n) in (await inline.sizes(meta)).items():
        key = block_key(sid, 0, size)
        in_database[key] = sid
        stored[key] = n
    nodes = {a.inode: a async for a in inventory.nodes(meta)}
    report.inodes = len(nodes)
    links: Counter[int] = Counter()
    subdirs: Counter[int] = Counter()
    where: dict[int, tuple[int, bytes]] = {}  # inode -> (parent, name) of one entry
    async for edge_id, parent, name, inode in inventory.edges(meta):
        attr = nodes.get(inode)
        if attr is None:
            report.problems.append(f"entry {name!r} in directory {parent} names no inode")
            if repair:
                await inventory.drop_edge(meta, edge_id)
                report.repaired.append(f"removed the dangling entry {name!r} of {parent}")
            continue
        links[inode] += 1
        where.setdefault(inode, (parent, name))
        if attr.is_dir:
            subdirs[parent] += 1

    blocks = volume.block_store()
    plain = settings.compression == "none" and not settings.encryption
    rows_naming: Counter[int] = Counter()  # slice id -> chunk rows that name it
    sizes: dict[int, int] = {}
    try:
        async for inode, _idx, slices in inventory.chunks(meta):
            for sid in {s.id for s in slices if s.id}:
                rows_naming[sid] += 1
            checked: set[str] = set()
            for s in slices:
                if not s.id:
                    continue
                sizes[s.id] = s.size
                lengths = block_lengths(s.size, settings.block_size)
                for index in sorted(blocks_needed([s], settings.block_size)):
                    if index >= len(lengths):
                        report.damaged.setdefault(inode, f"slice {s.id}: record beyond its size")
                        break
                    length = lengths[index]
                    key = block_key(s.id, index, length)
                    if key in checked:
                        continue
                    checked.add(key)
                    report.objects += 1
                    progress(1)
                    problem = _object_problem(stored.get(key), length, plain)
                    if problem is None and check_data:
                        try:
                            if key in in_database:
                                raw = await inline.stored_block(meta, s.id)
                                decode_block(raw or b"", key, blocks.cipher)
                            else:
                                await blocks.load(s.id, index, length)
                        except (BlockCorrupt, StoreError) as e:
                            problem = str(e)
                    if problem is not None:
                        report.damaged.setdefault(inode, f"{key}: {problem}")
    finally:
        await blocks.close()

    await _check_refs(volume, report, rows_naming, sizes, repair)
    await _check_links(volume, report, nodes, links, subdirs, where, repair)
    await _check_dir_counters(volume, report, where, repair)
    for inode in report.damaged:
        report.paths[inode] = _path(inode, where)
    return report


def _object_problem(size: int | None, length: int, plain: bool) -> str | None:
    if size is None:
        return "missing from the store"
    expected = payload_offset(length) + length
    if size < payload_offset(0) or (plain and size != expected):
        return f"{size} bytes, expected {expected if plain else 'a whole block'}"
    return None


async def _check_refs(volume, report, rows_naming, sizes, repair) -> None:
    """slice_refs holds the count of every slice two or more chunk rows name, and no other."""
    recorded = await refs.shared_counts(volume.meta)
    wrong: dict[int, tuple[int, int]] = {}
    for sid in {*recorded, *(s for s, n in rows_naming.items() if n >= 2)}:
        want = rows_naming.get(sid, 0)
        have = recorded.get(sid, 1 if want else 0)
        if (want >= 2 or sid in recorded) and have != want:
            report.problems.append(f"slice {sid} is named by {want} chunk rows, counted {have}")
            wrong[sid] = (sizes.get(sid, 0), want)
    if repair and wrong:
        await refs.set_counts(volume.meta, wrong)
        report.repaired.append(f"set the reference counts of {len(wrong)} shared slices")


async def _check_links(volume, report, nodes, links, subdirs, where, repair) -> None:
    meta = volume.meta
    kept = await inventory.kept_inodes(meta)
    orphans = []
    for inode, attr in nodes.items():
        if inode == ROOT_INODE:
            continue
        want = 2 + subdirs[inode] if attr.is_dir else links[inode]
        if attr.nlink == 0:
            if inode not in kept:
                report.problems.append(f"inode {inode} is deleted, and nothing keeps it")
                if repair:
                    await inventory.free_inode(meta, inode)
                    report.repaired.append(f"freed deleted inode {inode}")
            continue
        if not links[inode]:
            orphans.append(inode)
            report.problems.append(f"inode {inode} is live but no entry reaches it")
            continue
        if attr.nlink != want:
            report.problems.append(f"inode {inode} has nlink {attr.nlink}, entries say {want}")
            if repair:
                await inventory.set_nlink(meta, inode, want)
                report.repaired.append(f"set nlink of inode {inode} to {want}")
    root = nodes.get(ROOT_INODE)
    if root is not None and root.nlink != 2 + subdirs[ROOT_INODE]:
        report.problems.append(f"the root has nlink {root.nlink}")
        if repair:
            await inventory.set_nlink(meta, ROOT_INODE, 2 + subdirs[ROOT_INODE])
            report.repaired.append("fixed the root's nlink")
    if repair and orphans:
        lost = await inventory.lost_and_found(meta, LOST_FOUND)
        for inode in orphans:
            name = b"#%d" % inode
            await inventory.adopt(meta, lost, name, inode, stat.S_ISDIR(nodes[inode].mode))
            where[inode] = (lost, name)
            report.repaired.append(f"moved orphan inode {inode} to /lost+found/#{inode}")


async def _check_dir_counters(volume, report, where, repair) -> None:
    """Every directory's counters match its entries (names, and st_size of non-directories)."""
    drift = await volume.meta.dir_usage_drift()
    for inode, (entries, size), (want_entries, want_size) in drift:
        report.problems.append(
            f"directory {_path(inode, where)} (inode {inode}) counts {entries} entries and "
            f"{size} bytes, its entries add up to {want_entries} and {want_size}"
        )
    if repair and drift:
        await volume.meta.rebuild_dir_usage()
        report.repaired.append(f"rebuilt the directory counters ({len(drift)} were wrong)")


def _path(inode: int, where: dict[int, tuple[int, bytes]]) -> str:
    parts: list[str] = []
    seen = set()
    while inode != ROOT_INODE and inode in where and inode not in seen:
        seen.add(inode)
        parent, name = where[inode]
        parts.append(name.decode(errors="replace"))
        inode = parent
    if inode != ROOT_INODE:
        return f"<inode {inode}, unreachable>/" + "/".join(reversed(parts))
    return "/" + "/".join(reversed(parts))
