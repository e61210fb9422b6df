"""The metadata engine: every namespace and data-layout change, each in one transaction.

Engine-neutral: the SQL here runs on any database object with `txn(fn)` handing `fn` a
transaction with `one/all/run/insert`; `defer` for a write whose result nobody reads (the
PostgreSQL engine sends it with the COMMIT, saving a round trip); a `changes` record
(published to the other mounts with the commit); and a `slot` (the usage row this connection
owns). SQL is written in the SQLite dialect with `?` placeholders; the PostgreSQL engine
translates it (meta/postgres.py). Errors are FSError with the errno Linux gives for the same
situation on a local filesystem.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import stat
import time
from collections.abc import Callable

from riverfs.errors import FSError
from riverfs.meta import acl, inline, ranges, refs
from riverfs.meta.cache import MetaCache
from riverfs.meta.changes import Changes
from riverfs.meta.locks import (
    F_UNLCK,
    FLOCK,
    OFFSET_MAX,
    POSIX,
    Held,
    Holder,
    Range,
    apply,
    first_conflict,
    gave_up,
)
from riverfs.meta.schema import COUNTERS, TABLES
from riverfs.meta.slices import Slice, decode_slices, encode_slices, visible_segments
from riverfs.meta.types import (
    MAX_NAME,
    ROOT_INODE,
    Attr,
    AttrChange,
    Entry,
    SessionInfo,
    Usage,
    VolumeSettings,
)

log = logging.getLogger(__name__)

CHUNK_SIZE = 64 << 20
INODE_BATCH = 1024
SLICE_BATCH = 4096
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
RENAME_WHITEOUT = 4

_ATTR_COLS = "inode, mode, nlink, uid, gid, rdev, length, stored, atime, mtime, ctime, parent"
_ATTR_COLS_N = ", ".join(f"n.{c.strip()}" for c in _ATTR_COLS.split(","))

_ATTR_MARKS = ", ".join("?" * len(_ATTR_COLS.split(",")))

InUse = Callable[[int], bool]
# What an entry adds to its directory's bytes (dir_usage), as SQL over its node row `n`.
_FILE_BYTES = "CASE WHEN (n.mode & 61440) = 16384 THEN 0 ELSE n.length END"


@dataclasses.dataclass(slots=True, frozen=True)
class DirSummary:
    """dir_summary: `directories` in the tree (itself included); `entries`/`bytes` directly
    in the directory; `tree_entries`/`tree_bytes` in the whole tree below it."""

    directories: int
    entries: int
    bytes: int
    tree_entries: int
    tree_bytes: int


class DuplicateKey(Exception):
    """An INSERT hit a unique key (engines raise it for their own integrity errors)."""


def attr_row(attr: Attr) -> tuple:
    """An Attr as the values of _ATTR_COLS, in order."""
    return (
        attr.inode,
        attr.mode,
        attr.nlink,
        attr.uid,
        attr.gid,
        attr.rdev,
        attr.size,
        attr.stored,
        attr.atime,
        attr.mtime,
        attr.ctime,
        attr.parent,
    )


TIME_MIN_NS = -(1 << 63)  # 1677-09-21: times are nanoseconds in a signed 64-bit column
TIME_MAX_NS = (1 << 63) - 1  # 2262-04-11


def now_ns() -> int:
    return time.time_ns()


def clamp_time(t: int | None) -> int | None:
    """A timestamp the databases can store: clamped silently to [1677, 2262], as ext4 clamps
    times to its own range (`touch -d 2514-01-01` succeeds there too)."""
    return None if t is None else min(max(t, TIME_MIN_NS), TIME_MAX_NS)


def _signed(owner: int) -> int:
    """A FUSE lock_owner (u64) as the signed 64-bit integer both databases store."""
    return owner - (1 << 64) if owner >= 1 << 63 else owner


def check_name(name: bytes) -> None:
    if len(name) > MAX_NAME:
        raise FSError(errno.ENAMETOOLONG, f"name of {len(name)} bytes")


class Meta:
    """The metadata of one volume."""

    def __init__(self, db) -> None:
        self.db = db
        self.session_id = 0
        self._ids: dict[str, tuple[int, int]] = {}  # counter -> [next, end) reserved range
        # Engines that push every change (PostgreSQL) can serve lookups from a local cache.
        self.cache = MetaCache() if getattr(db, "notifies", False) else None
        db.on_commit = self._committed
        # The volume's inline_limit (meta/inline.py), set by whoever opens the volume: chunk
        # reads look for inline blocks only among slices this small.
        self.inline_limit = 0

    def _committed(self, changes: Changes, committed: bool = True) -> None:
        """After a COMMIT (or one whose outcome a lost connection hid: `committed` False),
        before anything else runs: drop what changed from the cache, then the `after` hooks."""
        if self.cache is not None and changes:
            self.cache.forget(changes.items)
        if committed:
            for hook in changes.after:
                hook()

    def forget(self, changes) -> None:
        """Another mount changed these (Change items): drop them from the cache."""
        if self.cache is not None:
            self.cache.forget(changes)

    # ---- volume ---------------------------------------------------------------------------

    async def format(
        self, settings: VolumeSettings, uid: int, gid: int, next_slice: int = 1
    ) -> None:
        """Create the schema, the settings record and the root directory.

        `next_slice`: the first slice id to hand out (above any id already in the store, so
        no object key is ever written twice).
        """
        await self.db.executescript(TABLES)

        async def fn(tx):
            for table in (
                "settings",
                "counters",
                "nodes",
                "edges",
                "chunks",
                "symlinks",
                "xattrs",
                "sessions",
                "sustained",
                "pending_deletes",
                "changelog",
                "usage",
                "leases",
                "doomed",
                "locks",
                "locked_inodes",
                "slice_refs",
                "pending_block_deletes",
                "inline_blocks",
                "dir_usage",
            ):
                await tx.run(f"DELETE FROM {table}")
            await tx.run("INSERT INTO settings VALUES ('volume', ?)", settings.to_json())
            for name in COUNTERS:
                await tx.run("INSERT INTO counters VALUES (?, 0)", name)
            await tx.run("UPDATE counters SET value = 2 WHERE name = 'next_inode'")
            await tx.run("UPDATE counters SET value = 1 WHERE name = 'inodes'")
            await tx.run("UPDATE counters SET value = ? WHERE name = 'next_slice'", next_slice)
            await tx.run("INSERT INTO counters VALUES ('dir_usage', 1)")  # built: all empty
            t = now_ns()
            await tx.run(
                f"INSERT INTO nodes ({_ATTR_COLS}) VALUES (?, ?, 2, ?, ?, 0, 0, 0, ?, ?, ?, ?)",
                ROOT_INODE,
                stat.S_IFDIR | 0o755,
                uid,
                gid,
                t,
                t,
                t,
                ROOT_INODE,
            )

        await self.db.txn(fn)

    async def load_settings(self) -> VolumeSettings | None:
        async def fn(tx):
            try:
                row = await tx.one("SELECT value FROM settings WHERE name = 'volume'")
            except Exception:  # no schema: not formatted
                return None
            return VolumeSettings.from_json(row[0]) if row else None

        settings = await self.db.txn(fn, write=False)
        if settings is not None:
            self.inline_limit = settings.inline_limit
        return settings

    async def save_settings(self, settings: VolumeSettings) -> None:
        """Replace the volume settings (a new passphrase wraps the master key)."""

        async def fn(tx):
            await tx.run("UPDATE settings SET value = ? WHERE name = 'volume'", settings.to_json())

        await self.db.txn(fn)

    async def prepare(self) -> None:
        """Bring an existing volume's schema up to date (new tables are created empty; the
        directory counters of a volume older than them are built from its namespace)."""
        await self.db.executescript(TABLES)

        async def build(tx):
            if await tx.one("SELECT 1 FROM counters WHERE name = 'dir_usage'"):
                return
            await self.rebuild_dir_usage_in(tx)
            await tx.run("INSERT INTO counters VALUES ('dir_usage', 1)")

        try:
            await self.db.txn(build)
        except DuplicateKey:  # another mount built them at the same moment
            pass

    async def usage(self) -> Usage:
        async def fn(tx):
            rows = dict(await tx.all("SELECT name, value FROM counters"))
            inodes, used = await tx.one("SELECT SUM(inodes), SUM(bytes) FROM usage")
            return Usage(  # PostgreSQL's SUM of BIGINT is NUMERIC: back to int
                int(rows.get("used_bytes", 0) + (used or 0)),
                int(rows.get("inodes", 0) + (inodes or 0)),
            )

        return await self.db.txn(fn, write=False)

    async def count_in(self, tx, inodes: int = 0, used: int = 0) -> None:
        """Add to the volume's usage through this connection's own row (no hot spot), inside
        the caller's transaction `tx` (public: meta/ranges.py and meta/inventory.py count too)."""
        if not inodes and not used:
            return
        await tx.defer(
            "INSERT INTO usage VALUES (?, ?, ?) ON CONFLICT (slot) DO UPDATE"
            " SET inodes = usage.inodes + excluded.inodes, bytes = usage.bytes + excluded.bytes",
            tx.slot,
            inodes,
            used,
        )

    async def fold_usage(self) -> None:
        """Move the usage rows into the counters, and every directory's dir_usage rows into
        its slot-0 row (keeps both tables small: slots are connections, which come and go)."""

        async def fn(tx):
            await tx.run(
                "INSERT INTO dir_usage (inode, slot, entries, bytes)"
                " SELECT inode, 0, SUM(entries), SUM(bytes) FROM dir_usage WHERE slot != 0"
                " GROUP BY inode ON CONFLICT (inode, slot) DO UPDATE"
                " SET entries = dir_usage.entries + excluded.entries,"
                " bytes = dir_usage.bytes + excluded.bytes"
            )
            await tx.run("DELETE FROM dir_usage WHERE slot != 0")
            inodes, used = await tx.one("SELECT SUM(inodes), SUM(bytes) FROM usage")
            await tx.run("DELETE FROM usage")
            await tx.run(
                "UPDATE counters SET value = value + ? WHERE name = 'inodes'", int(inodes or 0)
            )
            await tx.run(
                "UPDATE counters SET value = value + ? WHERE name = 'used_bytes'", int(used or 0)
            )

        await self.db.txn(fn)

    # ---- directory counters (dir_usage) ----------------------------------------------------
    # Kept in the transaction of every change, as deltas in this connection's own row: exact
    # at every commit, no row that concurrent creates would fight over (the parent's node row
    # is written by those changes anyway). A hard link is one entry, and its file's size
    # counts once per link.

    async def _count_dir(self, tx, directory: int, entries: int, size: int) -> None:
        """Directory `directory` gained `entries` names and `size` bytes (negative: lost)."""
        if not entries and not size:
            return
        await tx.defer(
            "INSERT INTO dir_usage VALUES (?, ?, ?, ?) ON CONFLICT (inode, slot) DO UPDATE"
            " SET entries = dir_usage.entries + excluded.entries,"
            " bytes = dir_usage.bytes + excluded.bytes",
            directory,
            tx.slot,
            entries,
            size,
        )

    async def resized_in(self, tx, attr: Attr, length: int) -> None:
        """The file `attr` now has `length` bytes: every directory holding a link to it
        counts the difference (once per link), in the caller's transaction `tx` (public:
        meta/ranges.py changes lengths too). One statement, sent with the commit."""
        if length == attr.size or attr.nlink == 0:
            return
        await tx.defer(
            "INSERT INTO dir_usage (inode, slot, entries, bytes)"
            " SELECT parent, ?, 0, ? * COUNT(*) FROM edges WHERE inode = ? GROUP BY parent"
            " ON CONFLICT (inode, slot) DO UPDATE SET bytes = dir_usage.bytes + excluded.bytes",
            tx.slot,
            length - attr.size,
            attr.inode,
        )

    async def rebuild_dir_usage_in(self, tx) -> None:
        """Replace every directory's counters by what its entries add up to (an upgraded
        volume, a loaded dump, fsck --repair), in the caller's transaction."""
        await tx.run("DELETE FROM dir_usage")
        await tx.run(
            "INSERT INTO dir_usage (inode, slot, entries, bytes)"
            f" SELECT e.parent, 0, COUNT(*), SUM({_FILE_BYTES})"
            " FROM edges e JOIN nodes n ON n.inode = e.inode GROUP BY e.parent"
        )

    async def dir_usage_drift(self) -> list[tuple[int, tuple[int, int], tuple[int, int]]]:
        """Directories whose counters disagree with their entries (fsck): (inode, counted
        (entries, bytes), actual (entries, bytes)). A full scan of the namespace."""

        async def fn(tx):
            actual = {
                r[0]: (int(r[1]), int(r[2]))
                for r in await tx.all(
                    f"SELECT e.parent, COUNT(*), SUM({_FILE_BYTES})"
                    " FROM edges e JOIN nodes n ON n.inode = e.inode GROUP BY e.parent"
                )
            }
            counted = {
                r[0]: (int(r[1]), int(r[2]))
                for r in await tx.all(
                    "SELECT inode, SUM(entries), SUM(bytes) FROM dir_usage GROUP BY inode"
                )
            }
            return [
                (inode, counted.get(inode, (0, 0)), actual.get(inode, (0, 0)))
                for inode in sorted(actual.keys() | counted.keys())
                if counted.get(inode, (0, 0)) != actual.get(inode, (0, 0))
            ]

        # A write transaction, though it writes nothing: its two scans then see one snapshot
        # (a read transaction's statements may not), so a busy mount shows no false drift.
        return await self.db.txn(fn)

    async def rebuild_dir_usage(self) -> None:
        """Rebuild the directory counters (load, fsck --repair) and mark them built, so the
        next open does not build them again (a dump from before them has no mark)."""

        async def fn(tx):
            await self.rebuild_dir_usage_in(tx)
            if not await tx.one("SELECT 1 FROM counters WHERE name = 'dir_usage'"):
                await tx.run("INSERT INTO counters VALUES ('dir_usage', 1)")

        await self.db.txn(fn)

    async def dir_summary(self, inode: int) -> DirSummary:
        """A directory's counters and its tree's totals, from dir_usage: one query over the
        directories of the tree (never its files), however many entries they hold."""

        async def fn(tx):
            row = await tx.one(
                "WITH RECURSIVE tree(inode) AS (SELECT CAST(? AS BIGINT) UNION ALL SELECT n.inode"
                " FROM nodes n JOIN tree t ON n.parent = t.inode"
                " WHERE (n.mode & 61440) = 16384 AND n.inode != n.parent)"
                " SELECT (SELECT COUNT(*) FROM tree),"
                " (SELECT SUM(entries) FROM dir_usage WHERE inode = ?),"
                " (SELECT SUM(bytes) FROM dir_usage WHERE inode = ?),"
                " SUM(u.entries), SUM(u.bytes)"
                " FROM tree JOIN dir_usage u ON u.inode = tree.inode",
                inode,
                inode,
                inode,
            )
            return DirSummary(*(int(v or 0) for v in row))

        return await self.db.txn(fn, write=False)

    # ---- ids ------------------------------------------------------------------------------

    async def _next_id(self, counter: str, batch: int) -> int:
        start, end = self._ids.get(counter, (0, 0))
        if start >= end:

            async def reserve(tx):
                row = await tx.one(
                    "UPDATE counters SET value = value + ? WHERE name = ? RETURNING value",
                    batch,
                    counter,
                )
                return row[0] - batch

            start = await self.db.txn(reserve)
            end = start + batch
        self._ids[counter] = (start + 1, end)
        return start

    async def next_slice_id(self) -> int:
        return await self._next_id("next_slice", SLICE_BATCH)

    # ---- sessions -------------------------------------------------------------------------

    async def open_session(
        self,
        host: str,
        pid: int,
        mountpoint: str,
        version: str,
        beat_every: float = 10.0,
        metrics: str = "",
    ) -> int:
        async def fn(tx):
            t = now_ns()
            return await tx.insert(
                "INSERT INTO sessions"
                " (host, pid, mountpoint, version, started, heartbeat, beat_every, metrics)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                host,
                pid,
                mountpoint,
                version,
                t,
                t,
                beat_every,
                metrics,
            )

        self.session_id = await self.db.txn(fn)
        self.db.session = self.session_id
        return self.session_id

    async def heartbeat(self, staged: int = 0) -> bool:
        """Renew this session (and say how many bytes wait to upload); False if it is gone
        (another mount judged it dead)."""

        async def fn(tx):
            return await tx.run(
                "UPDATE sessions SET heartbeat = ?, staged = ? WHERE id = ?",
                now_ns(),
                staged,
                self.session_id,
            )

        return bool(await self.db.txn(fn))

    async def sessions(self) -> list[SessionInfo]:
        async def fn(tx):
            rows = await tx.all(
                "SELECT id, host, pid, mountpoint, version, started, heartbeat, beat_every,"
                " staged, metrics FROM sessions ORDER BY id"
            )
            return [SessionInfo(*r) for r in rows]

        return await self.db.txn(fn, write=False)

    async def close_session(self, session_id: int) -> int:
        """End a session (this one at unmount, or a dead one): release its locks, free the
        deleted inodes it kept open that no other session keeps. Returns how many were freed."""

        async def fn(tx):
            rows = await tx.all("SELECT inode FROM sustained WHERE session = ?", session_id)
            await tx.run("DELETE FROM sustained WHERE session = ?", session_id)
            await tx.run("DELETE FROM sessions WHERE id = ?", session_id)
            await tx.run("DELETE FROM leases WHERE session = ?", session_id)
            # Its locks go too: mounts waiting for them hear it.
            for (inode,) in await tx.all(
                "DELETE FROM locks WHERE session = ? RETURNING inode", session_id
            ):
                tx.changes.lock_released(inode)
            freed = 0
            for (inode,) in rows:
                freed += await self._free_if_unused(tx, inode)
            return freed

        return await self.db.txn(fn)

    async def take_lease(self, name: str, ttl: float) -> bool:
        """Hold lease `name` for `ttl` seconds if it is free, expired or ours already."""

        async def fn(tx):
            t = now_ns()
            expires = t + int(ttl * 1e9)
            if await tx.run(
                "UPDATE leases SET session = ?, expires = ? WHERE name = ?"
                " AND (session = ? OR expires < ?)",
                self.session_id,
                expires,
                name,
                self.session_id,
                t,
            ):
                return True
            if await tx.one("SELECT 1 FROM leases WHERE name = ?", name):
                return False
            await tx.run("INSERT INTO leases VALUES (?, ?, ?)", name, self.session_id, expires)
            return True

        try:
            return await self.db.txn(fn)
        except DuplicateKey:  # another mount took it at the same moment
            return False

    async def sustain(self, inode: int) -> bool:
        """Another mount removed the last link of `inode`, which this mount still uses: keep
        it alive for this session (before the leader frees it). False if it is gone already."""

        async def fn(tx):
            attr = await self.attr_in(tx, inode)
            if attr is None or attr.nlink > 0:
                return attr is not None
            # Writing the node row makes a concurrent free of it conflict (and retry): the
            # free then sees this claim.
            await tx.run("UPDATE nodes SET nlink = 0 WHERE inode = ?", inode)
            await tx.defer("DELETE FROM doomed WHERE inode = ?", inode)
            await tx.defer("INSERT OR IGNORE INTO sustained VALUES (?, ?)", self.session_id, inode)
            return True

        return await self.db.txn(fn)

    async def free_doomed(self, older_than: int) -> int:
        """Free the doomed inodes queued before `older_than` (ns) that no mount sustains."""

        async def fn(tx):
            rows = await tx.all("SELECT inode FROM doomed WHERE at < ? LIMIT 200", older_than)
            freed = 0
            for (inode,) in rows:
                await tx.run("DELETE FROM doomed WHERE inode = ?", inode)  # read back below
                freed += await self._free_if_unused(tx, inode, grace=False)
            return freed, len(rows)

        total = 0
        while True:  # small transactions: a large rm -rf elsewhere must not stall for long
            freed, seen = await self.db.txn(fn)
            total += freed
            if seen < 200:
                return total

    async def _free_if_unused(self, tx, inode: int, grace: bool = True, mine: int = 0) -> int:
        """Free a deleted inode unless a session other than `mine` keeps it (sustained) or
        it waits in doomed. Returns 1 if freed.

        With `grace` and other sessions live, it is doomed instead: a mount that opened it
        may not have claimed it yet (it claims when it hears of the deletion). One query
        gathers all of that: on a remote database each round trip counts.
        """
        row = await tx.one(
            f"SELECT {_ATTR_COLS},"
            " (SELECT COUNT(*) FROM sustained s WHERE s.inode = n.inode AND s.session != ?),"
            " (SELECT COUNT(*) FROM doomed d WHERE d.inode = n.inode),"
            " (SELECT COUNT(*) FROM sessions WHERE id != ?)"
            " FROM nodes n WHERE n.inode = ?",
            mine,
            self.session_id,
            inode,
        )
        if row is None:
            return 0
        attr, kept, doomed, others_live = Attr(*row[:-3]), *row[-3:]
        if attr.nlink > 0 or kept or doomed:
            return 0
        if grace and others_live:
            await tx.defer("INSERT INTO doomed VALUES (?, ?)", inode, now_ns())
            return 0
        await self.free_in(tx, attr)
        return 1

    async def _others_live(self, tx) -> bool:
        """True if sessions other than this mount's are registered."""
        return bool(await tx.one("SELECT 1 FROM sessions WHERE id != ? LIMIT 1", self.session_id))

    # ---- reading the namespace ------------------------------------------------------------

    async def attr_in(self, tx, inode: int) -> Attr | None:
        """The inode's attributes read inside the caller's transaction `tx` (no cache), None if
        there is no such inode. Public for meta/ranges.py and meta/inventory.py, whose
        operations run inside a transaction of Meta."""
        row = await tx.one(f"SELECT {_ATTR_COLS} FROM nodes WHERE inode = ?", inode)
        return Attr(*row) if row else None

    async def must_attr_in(self, tx, inode: int) -> Attr:
        """attr_in, or ENOENT if there is no such inode."""
        attr = await self.attr_in(tx, inode)
        if attr is None:
            raise FSError(errno.ENOENT, f"inode {inode}")
        return attr

    async def _dir(self, tx, inode: int) -> Attr:
        attr = await self.must_attr_in(tx, inode)
        if not attr.is_dir:
            raise FSError(errno.ENOTDIR, f"inode {inode}")
        if attr.nlink == 0:
            raise FSError(errno.ENOENT, f"directory {inode} was removed")
        return attr

    async def _edge(self, tx, parent: int, name: bytes) -> Attr | None:
        row = await tx.one(
            f"SELECT {_ATTR_COLS_N} FROM edges e JOIN nodes n ON n.inode = e.inode"
            " WHERE e.parent = ? AND e.name = ?",
            parent,
            name,
        )
        return Attr(*row) if row else None

    async def getattr(self, inode: int, fresh: bool = False) -> Attr:
        """The inode's attributes; `fresh` skips the cache (open: close-to-open)."""
        cache = self.cache
        if cache is None or fresh:
            return await self.db.txn(lambda tx: self.must_attr_in(tx, inode), write=False)
        attr = cache.attr(inode)
        if attr is None:
            generation = cache.generation
            attr = await self.db.txn(lambda tx: self.must_attr_in(tx, inode), write=False)
            cache.put(attr, generation)
        return attr

    async def lookup(self, parent: int, name: bytes) -> Attr:
        check_name(name)
        cache = self.cache
        if cache is None or name in (b".", b".."):
            return await self._lookup(parent, name)
        if cache.absent(parent, name):
            raise FSError(errno.ENOENT)
        attr = cache.lookup(parent, name)
        if attr is None:
            generation = cache.generation
            attr = await self._lookup(parent, name)
            cache.put(attr, generation, (parent, name))
        return attr

    async def _lookup(self, parent: int, name: bytes) -> Attr:

        async def fn(tx):
            if name == b".":  # the kernel's export operations find any inode this way
                attr = await self.must_attr_in(tx, parent)
                if attr.nlink == 0:  # a file handle of a deleted file is stale
                    raise FSError(errno.ENOENT, f"inode {parent} was removed")
                return attr
            if name == b"..":
                return await self.must_attr_in(tx, (await self._dir(tx, parent)).parent)
            # The parent and the entry in one query: a miss needs the parent's state for its
            # errno, and a round trip to a remote database costs more than the join.
            row = await tx.one(
                f"SELECT p.mode, p.nlink, {_ATTR_COLS_N} FROM nodes p"
                " LEFT JOIN edges e ON e.parent = p.inode AND e.name = ?"
                " LEFT JOIN nodes n ON n.inode = e.inode WHERE p.inode = ?",
                name,
                parent,
            )
            if row is None:
                raise FSError(errno.ENOENT, f"inode {parent}")
            if not stat.S_ISDIR(row[0]):
                raise FSError(errno.ENOTDIR, f"inode {parent}")
            if row[2] is None or row[1] == 0:
                raise FSError(errno.ENOENT)
            return Attr(*row[2:])

        return await self.db.txn(fn, write=False)

    async def readdir(self, parent: int, after: int, limit: int) -> list[Entry]:
        """Up to `limit` entries of `parent` with cookie > `after`, in cookie order."""

        async def fn(tx):
            rows = await tx.all(
                f"SELECT e.id, e.name, {_ATTR_COLS_N} FROM edges e"
                " JOIN nodes n ON n.inode = e.inode"
                " WHERE e.parent = ? AND e.id > ? ORDER BY e.id LIMIT ?",
                parent,
                after,
                limit,
            )
            return [Entry(r[0], bytes(r[1]), Attr(*r[2:])) for r in rows]

        return await self.db.txn(fn, write=False)

    async def readlink(self, inode: int) -> bytes:
        async def fn(tx):
            row = await tx.one("SELECT target FROM symlinks WHERE inode = ?", inode)
            if row is None:
                raise FSError(errno.EINVAL, f"inode {inode} is not a symlink")
            return bytes(row[0])

        return await self.db.txn(fn, write=False)

    # ---- changing the namespace -----------------------------------------------------------

    async def _touch_dir(self, tx, inode: int, t: int, nlink_delta: int = 0) -> None:
        tx.changes.attr(inode)
        await tx.defer(
            "UPDATE nodes SET mtime = ?, ctime = ?, nlink = nlink + ? WHERE inode = ?",
            t,
            t,
            nlink_delta,
            inode,
        )

    async def create(
        self,
        parent: int,
        name: bytes,
        mode: int,
        uid: int,
        gid: int,
        rdev: int = 0,
        target: bytes | None = None,
        umask: int | None = None,
    ) -> Attr:
        """Make a new inode of any type (`mode` carries the type) and link it at parent/name.
        `umask` given (the kernel left it to riverfs: POSIX ACLs): the parent's default ACL is
        inherited, or without one the umask applied (meta/acl.py `inherit`)."""
        check_name(name)
        inode = await self._next_id("next_inode", INODE_BATCH)

        async def fn(tx):
            nonlocal gid, mode
            is_dir = stat.S_ISDIR(mode)
            t = now_ns()
            # Touch the parent first and check it from what the update returns: one statement.
            row = await tx.one(
                "UPDATE nodes SET mtime = ?, ctime = ?, nlink = nlink + ? WHERE inode = ?"
                f" RETURNING {_ATTR_COLS}, (SELECT value FROM xattrs x"
                " WHERE x.inode = nodes.inode AND x.name = ?)",
                t,
                t,
                1 if is_dir else 0,
                parent,
                acl.DEFAULT,
            )
            if row is None:
                raise FSError(errno.ENOENT, f"inode {parent}")
            pattr = Attr(*row[:-1])
            if not pattr.is_dir:
                raise FSError(errno.ENOTDIR, f"inode {parent}")
            if pattr.nlink - is_dir == 0:
                raise FSError(errno.ENOENT, f"directory {parent} was removed")
            tx.changes.attr(parent)
            if pattr.mode & stat.S_ISGID:  # BSD group semantics of a setgid directory
                gid = pattr.gid
                if is_dir:
                    mode |= stat.S_ISGID
            acls = []
            if umask is not None and target is None:
                default = None if row[-1] is None else bytes(row[-1])
                mode, acls = acl.inherit(default, mode, umask, is_dir)
            await tx.defer(
                "INSERT INTO edges (parent, name, inode) VALUES (?, ?, ?)",
                parent,
                name,
                inode,
                duplicate=FSError(errno.EEXIST),
            )
            attr = Attr(
                inode, mode, 2 if is_dir else 1, uid, gid, rdev,
                len(target) if target is not None else 0, 0, t, t, t, parent,
            )  # fmt: skip
            await tx.defer(
                f"INSERT INTO nodes ({_ATTR_COLS}) VALUES ({_ATTR_MARKS})", *attr_row(attr)
            )
            if target is not None:
                await tx.defer("INSERT INTO symlinks VALUES (?, ?)", inode, target)
            for xname, value in acls:
                await tx.defer("INSERT INTO xattrs VALUES (?, ?, ?)", inode, xname, value)
            await self.count_in(tx, 1)
            await self._count_dir(tx, parent, 1, attr.size)
            tx.changes.entry(parent, name)
            if self.cache is not None:
                tx.changes.after.append(lambda: self._created(attr, pattr, name))
            return attr

        return await self.db.txn(fn)

    def _created(self, attr: Attr, pattr: Attr, name: bytes) -> None:
        """Cache a create's results as committed: the kernel asks for the parent next."""
        cache = self.cache
        cache.put(attr, cache.generation, (pattr.inode, name))
        cache.put(pattr, cache.generation)
        if attr.is_dir:
            cache.complete(attr.inode)

    async def link(self, inode: int, parent: int, name: bytes) -> Attr:
        check_name(name)

        async def fn(tx):
            attr = await self.must_attr_in(tx, inode)
            if attr.is_dir:
                raise FSError(errno.EPERM, "hard link to a directory")
            if attr.nlink == 0:
                raise FSError(errno.ENOENT, "inode was deleted")
            await self._dir(tx, parent)
            if await tx.one("SELECT 1 FROM edges WHERE parent = ? AND name = ?", parent, name):
                raise FSError(errno.EEXIST)
            t = now_ns()
            await tx.run(
                "INSERT INTO edges (parent, name, inode) VALUES (?, ?, ?)", parent, name, inode
            )
            await tx.run("UPDATE nodes SET nlink = nlink + 1, ctime = ? WHERE inode = ?", t, inode)
            await self._touch_dir(tx, parent, t)
            await self._count_dir(tx, parent, 1, attr.size)
            tx.changes.entry(parent, name)
            tx.changes.attr(inode)
            return await self.must_attr_in(tx, inode)

        return await self.db.txn(fn)

    async def _drop_link(self, tx, attr: Attr, t: int, in_use: InUse) -> None:
        """One link of `attr` went away: free it, or keep it while this mount still uses it
        (open handles, or the kernel still refers to it)."""
        if not attr.is_dir and attr.nlink > 1:
            tx.changes.attr(attr.inode)
            await tx.run(
                "UPDATE nodes SET nlink = nlink - 1, ctime = ? WHERE inode = ?", t, attr.inode
            )
            return
        tx.changes.unlinked(attr.inode)  # mounts that still use it claim it on this event
        if in_use(attr.inode):
            await tx.defer("UPDATE nodes SET nlink = 0, ctime = ? WHERE inode = ?", t, attr.inode)
            await tx.defer(
                "INSERT OR IGNORE INTO sustained VALUES (?, ?)", self.session_id, attr.inode
            )
        elif await self._others_live(tx):
            # Another mount may have it open: it hears of the removal and sustains it, or
            # the leader frees it after a grace period.
            await tx.defer("UPDATE nodes SET nlink = 0, ctime = ? WHERE inode = ?", t, attr.inode)
            await tx.defer("INSERT OR IGNORE INTO doomed VALUES (?, ?)", attr.inode, t)
        else:
            await self.free_in(tx, attr)

    async def unlink(self, parent: int, name: bytes, in_use: InUse) -> Attr:
        """Remove parent/name (not a directory). Returns the attributes it had."""
        check_name(name)

        async def fn(tx):
            attr = await self._edge(tx, parent, name)  # an entry exists only in a live directory
            if attr is None:
                await self._dir(tx, parent)  # ENOTDIR / ENOENT for a bad parent
                raise FSError(errno.ENOENT)
            if attr.is_dir:
                raise FSError(errno.EISDIR)
            t = now_ns()
            await tx.defer("DELETE FROM edges WHERE parent = ? AND name = ?", parent, name)
            tx.changes.entry(parent, name)
            await self._touch_dir(tx, parent, t)
            await self._count_dir(tx, parent, -1, -attr.size)
            await self._drop_link(tx, attr, t, in_use)
            return attr

        return await self.db.txn(fn)

    async def rmdir(self, parent: int, name: bytes, in_use: InUse = lambda _: False) -> Attr:
        check_name(name)

        async def fn(tx):
            if name in (b".", b".."):
                await self._dir(tx, parent)
                raise FSError(errno.EINVAL if name == b"." else errno.ENOTEMPTY)
            attr = await self._edge(tx, parent, name)
            if attr is None:
                await self._dir(tx, parent)
                raise FSError(errno.ENOENT)
            if not attr.is_dir:
                raise FSError(errno.ENOTDIR)
            if await tx.one("SELECT 1 FROM edges WHERE parent = ? LIMIT 1", attr.inode):
                raise FSError(errno.ENOTEMPTY)
            t = now_ns()
            await tx.defer("DELETE FROM edges WHERE parent = ? AND name = ?", parent, name)
            tx.changes.entry(parent, name)
            await self._touch_dir(tx, parent, t, -1)
            await self._count_dir(tx, parent, -1, 0)
            await self._drop_link(tx, attr, t, in_use)
            return attr

        return await self.db.txn(fn)

    async def _is_within(self, tx, inode: int, ancestor: int) -> bool:
        """True if directory `inode` is `ancestor` or lies below it.

        The walk reads ancestors it does not write, so two directory moves on different
        mounts could each pass it and together make a loop. Every directory move therefore
        writes one volume-wide row first (the kernel's rename mutex, across mounts): two of
        them conflict and the second is retried, seeing the first.
        """
        await tx.run("UPDATE settings SET value = value WHERE name = 'volume'")
        while True:
            if inode == ancestor:
                return True
            if inode == ROOT_INODE:
                return False
            row = await tx.one("SELECT parent FROM nodes WHERE inode = ?", inode)
            if row is None:
                return False
            inode = row[0]

    async def rename(
        self,
        old_parent: int,
        old_name: bytes,
        new_parent: int,
        new_name: bytes,
        flags: int,
        in_use: InUse,
        uid: int = 0,
        gid: int = 0,
    ) -> Attr | None:
        """Rename atomically. Returns the attributes of the entry replaced (or exchanged).

        RENAME_WHITEOUT leaves, in the same transaction, a whiteout at the old name as ext4
        does: a character device 0/0 with mode 0, owned by `uid` and `gid` (the directory's
        group if it is setgid) — what overlayfs looks for in an upper layer."""
        check_name(old_name)
        check_name(new_name)
        if flags & RENAME_EXCHANGE and flags & (RENAME_NOREPLACE | RENAME_WHITEOUT):
            raise FSError(errno.EINVAL)
        whiteout = await self._next_id("next_inode", INODE_BATCH) if flags & RENAME_WHITEOUT else 0

        async def fn(tx):
            rows = await tx.all(  # both entries in one round trip
                f"SELECT e.parent, e.name, {_ATTR_COLS_N} FROM edges e"
                " JOIN nodes n ON n.inode = e.inode"
                " WHERE (e.parent = ? AND e.name = ?) OR (e.parent = ? AND e.name = ?)",
                old_parent,
                old_name,
                new_parent,
                new_name,
            )
            found = {(r[0], bytes(r[1])): Attr(*r[2:]) for r in rows}
            src = found.get((old_parent, old_name))
            if src is None:
                await self._dir(tx, old_parent)
                await self._dir(tx, new_parent)
                raise FSError(errno.ENOENT)
            dst = found.get((new_parent, new_name))
            if dst is None and new_parent != old_parent:
                await self._dir(tx, new_parent)
            if flags & RENAME_EXCHANGE and dst is None:
                raise FSError(errno.ENOENT)
            if flags & RENAME_NOREPLACE and dst is not None:
                raise FSError(errno.EEXIST)
            if (
                src.is_dir
                and old_parent != new_parent
                and await self._is_within(tx, new_parent, src.inode)
            ):
                raise FSError(errno.EINVAL, "cannot move a directory into itself")
            if dst is not None and dst.inode == src.inode:
                return None  # same file: POSIX says do nothing
            t = now_ns()
            tx.changes.entry(old_parent, old_name)
            tx.changes.entry(new_parent, new_name)
            tx.changes.attr(src.inode)
            if dst is not None:
                tx.changes.attr(dst.inode)
            if flags & RENAME_EXCHANGE:
                await self._exchange(tx, src, dst, old_parent, old_name, new_parent, new_name, t)
                if old_parent != new_parent:
                    await self._count_dir(tx, old_parent, 0, dst.size - src.size)
                    await self._count_dir(tx, new_parent, 0, src.size - dst.size)
                return dst
            if dst is not None:
                if src.is_dir and not dst.is_dir:
                    raise FSError(errno.ENOTDIR)
                if dst.is_dir and not src.is_dir:
                    raise FSError(errno.EISDIR)
                if dst.is_dir and await tx.one(
                    "SELECT 1 FROM edges WHERE parent = ? LIMIT 1", dst.inode
                ):
                    raise FSError(errno.ENOTEMPTY)
                # The target's entry keeps its place (readdir cookie) and gets the new inode.
                await tx.run(
                    "UPDATE edges SET inode = ? WHERE parent = ? AND name = ?",
                    src.inode,
                    new_parent,
                    new_name,
                )
                await tx.run(
                    "DELETE FROM edges WHERE parent = ? AND name = ?", old_parent, old_name
                )
                if dst.is_dir:
                    await self._touch_dir(tx, new_parent, t, -1)
                await self._count_dir(tx, new_parent, -1, -dst.size)
                await self._drop_link(tx, dst, t, in_use)
            else:
                await tx.defer(
                    "UPDATE edges SET parent = ?, name = ? WHERE parent = ? AND name = ?",
                    new_parent,
                    new_name,
                    old_parent,
                    old_name,
                )
            if old_parent != new_parent:
                await self._count_dir(tx, old_parent, -1, -src.size)
                await self._count_dir(tx, new_parent, 1, src.size)
            moved_dir = src.is_dir and old_parent != new_parent
            await self._touch_dir(tx, old_parent, t, -1 if moved_dir else 0)
            await self._touch_dir(tx, new_parent, t, 1 if moved_dir else 0)
            await tx.defer(
                "UPDATE nodes SET ctime = ?, parent = ? WHERE inode = ?",
                t,
                new_parent if src.is_dir else src.parent,
                src.inode,
            )
            if whiteout:
                await self._leave_whiteout(tx, whiteout, old_parent, old_name, uid, gid, t)
            return dst

        return await self.db.txn(fn)

    async def _leave_whiteout(
        self, tx, inode: int, parent: int, name: bytes, uid: int, gid: int, t: int
    ) -> None:
        """The whiteout of a rename: a 0/0 character device at parent/name (just vacated)."""
        pattr = await self.must_attr_in(tx, parent)
        if pattr.mode & stat.S_ISGID:
            gid = pattr.gid
        attr = Attr(inode, stat.S_IFCHR, 1, uid, gid, 0, 0, 0, t, t, t, parent)
        await tx.defer(f"INSERT INTO nodes ({_ATTR_COLS}) VALUES ({_ATTR_MARKS})", *attr_row(attr))
        await tx.defer(
            "INSERT INTO edges (parent, name, inode) VALUES (?, ?, ?)", parent, name, inode
        )
        await self.count_in(tx, 1)
        await self._count_dir(tx, parent, 1, 0)

    async def _exchange(
        self,
        tx,
        src: Attr,
        dst: Attr,
        old_parent: int,
        old_name: bytes,
        new_parent: int,
        new_name: bytes,
        t: int,
    ) -> None:
        if (
            dst.is_dir
            and old_parent != new_parent
            and await self._is_within(tx, old_parent, dst.inode)
        ):
            raise FSError(errno.EINVAL, "cannot move a directory into itself")
        await tx.run(
            "UPDATE edges SET inode = ? WHERE parent = ? AND name = ?",
            dst.inode,
            old_parent,
            old_name,
        )
        await tx.run(
            "UPDATE edges SET inode = ? WHERE parent = ? AND name = ?",
            src.inode,
            new_parent,
            new_name,
        )
        if old_parent != new_parent:
            delta = int(src.is_dir) - int(dst.is_dir)  # subdirectories moving old -> new
            await self._touch_dir(tx, old_parent, t, -delta)
            await self._touch_dir(tx, new_parent, t, delta)
            for attr, parent in ((src, new_parent), (dst, old_parent)):
                if attr.is_dir:
                    await tx.run("UPDATE nodes SET parent = ? WHERE inode = ?", parent, attr.inode)
        else:
            await self._touch_dir(tx, old_parent, t)
        await tx.run("UPDATE nodes SET ctime = ? WHERE inode IN (?, ?)", t, src.inode, dst.inode)

    async def release(self, inode: int) -> bool:
        """The last handle of this session on `inode` closed: free it if it was deleted."""

        async def fn(tx):
            await tx.defer(
                "DELETE FROM sustained WHERE session = ? AND inode = ?", self.session_id, inode
            )
            return bool(await self._free_if_unused(tx, inode, mine=self.session_id))

        return await self.db.txn(fn)

    async def release_many(self, inodes: list[int]) -> int:
        """`release` of several inodes in one transaction; returns how many were freed."""

        async def fn(tx):
            freed = 0
            for inode in inodes:
                await tx.defer(
                    "DELETE FROM sustained WHERE session = ? AND inode = ?", self.session_id, inode
                )
                freed += await self._free_if_unused(tx, inode, mine=self.session_id)
            return freed

        return await self.db.txn(fn)

    async def free_in(self, tx, attr: Attr) -> None:
        """Delete an inode and queue its data for deletion from the store, inside the caller's
        transaction `tx` (public: fsck --repair frees deleted inodes, meta/inventory.py)."""
        inode = attr.inode
        if attr.stored:  # nothing stored: no slice holds data (saves a round trip)
            rows = await tx.all("SELECT slices FROM chunks WHERE inode = ?", inode)
            await refs.drop_rows(tx, [decode_slices(blob) for (blob,) in rows], now_ns())
        tables = ("chunks", "symlinks", "xattrs", "locks", "locked_inodes", "nodes")
        for table in (*tables, "dir_usage") if attr.is_dir else tables:
            await tx.defer(f"DELETE FROM {table} WHERE inode = ?", inode)
        await self.count_in(tx, -1, -attr.stored)
        tx.changes.attr(inode)

    async def _queue_slices(self, tx, slices: list[Slice]) -> None:
        """One chunk row lets go of these slices: those no other row names are queued for
        deletion (meta/refs.py)."""
        await refs.drop_rows(tx, [slices], now_ns())

    # ---- attributes -----------------------------------------------------------------------

    async def setattr(self, inode: int, change: AttrChange) -> Attr:
        async def fn(tx):
            attr = await self.must_attr_in(tx, inode)
            mode = (
                attr.mode
                if change.mode is None
                else (stat.S_IFMT(attr.mode) | stat.S_IMODE(change.mode))
            )
            await tx.run(
                "UPDATE nodes SET mode = ?, uid = ?, gid = ?, atime = ?, mtime = ?, ctime = ?"
                " WHERE inode = ?",
                mode,
                attr.uid if change.uid is None else change.uid,
                attr.gid if change.gid is None else change.gid,
                attr.atime if change.atime is None else clamp_time(change.atime),
                attr.mtime if change.mtime is None else clamp_time(change.mtime),
                now_ns() if change.ctime is None else clamp_time(change.ctime),
                inode,
            )
            if change.mode is not None and stat.S_IMODE(mode) != stat.S_IMODE(attr.mode):
                await acl.chmod_in(tx, inode, mode)  # the access ACL follows a chmod
            tx.changes.attr(inode)
            return await self.must_attr_in(tx, inode)

        return await self.db.txn(fn)

    async def touch_atime(self, inode: int, t: int) -> None:
        async def fn(tx):
            await tx.run("UPDATE nodes SET atime = ? WHERE inode = ?", t, inode)
            tx.changes.attr(inode)

        await self.db.txn(fn)

    # ---- file data ------------------------------------------------------------------------

    async def read_chunk(self, inode: int, index: int) -> list[Slice]:
        async def fn(tx):
            row = await tx.one(
                "SELECT slices FROM chunks WHERE inode = ? AND idx = ?", inode, index
            )
            return decode_slices(row[0]) if row else []

        return await self.db.txn(fn, write=False)

    async def file_layout(self, inode: int) -> tuple[list[tuple[int, list[Slice]]], set[int]]:
        """Every chunk row of a file, (index, slice records) in index order, and which of the
        slices they name keep their block in the database (meta/inline.py): `riverfs info`."""
        limit = self.inline_limit

        async def fn(tx):
            rows = await tx.all(
                "SELECT idx, slices FROM chunks WHERE inode = ? ORDER BY idx", inode
            )
            chunks = [(idx, decode_slices(blob)) for idx, blob in rows]
            small = {s.id for _, records in chunks for s in records if s.id and s.size <= limit}
            return chunks, set(await inline.load(tx, small)) if small else set()

        return await self.db.txn(fn, write=False)

    async def read_chunk_data(self, inode: int, index: int) -> tuple[list[Slice], dict[int, bytes]]:
        """A chunk's records, and the stored blocks of its inline slices (meta/inline.py),
        read together: records are never seen without their data."""
        limit = self.inline_limit

        async def fn(tx):
            row = await tx.one(
                "SELECT slices FROM chunks WHERE inode = ? AND idx = ?", inode, index
            )
            if row is None:
                return [], {}
            slices = decode_slices(row[0])
            small = {s.id for s in slices if s.id and s.size <= limit}
            if small:  # only what reads can see: overwritten slices wait for compaction
                small &= {seg.id for seg in visible_segments(slices, CHUNK_SIZE)}
            return slices, (await inline.load(tx, small) if small else {})

        return await self.db.txn(fn, write=False)

    async def _append_slices(self, tx, inode: int, index: int, slices: list[Slice]) -> None:
        row = await tx.one("SELECT slices FROM chunks WHERE inode = ? AND idx = ?", inode, index)
        blob = (bytes(row[0]) if row else b"") + encode_slices(slices)
        if row:
            await tx.defer(
                "UPDATE chunks SET slices = ? WHERE inode = ? AND idx = ?", blob, inode, index
            )
        else:
            await tx.defer("INSERT INTO chunks VALUES (?, ?, ?)", inode, index, blob)

    async def write_slices(
        self,
        inode: int,
        slices: list[tuple[int, Slice]],
        length: int,
        mtime: int,
        inline_blocks: dict[int, bytes] | None = None,
    ) -> Attr | None:
        """Commit written slices (chunk index, slice) in order; the file grows to `length`.
        `inline_blocks`: slice id -> stored block, for slices kept in the database
        (meta/inline.py), inserted by the same transaction.

        If the inode is gone (deleted while the data was uploading), the stored slices go
        straight to the delete queue and None is returned.
        """
        inline_blocks = inline_blocks or {}

        async def fn(tx):
            attr = await self.attr_in(tx, inode)
            if attr is None:
                await self._queue_slices(tx, [s for _, s in slices if s.id not in inline_blocks])
                return None
            if inline_blocks:
                sizes = {s.id: s.size for _, s in slices}
                await inline.insert(
                    tx, {sid: (sizes[sid], raw) for sid, raw in inline_blocks.items()}
                )
            by_chunk: dict[int, list[Slice]] = {}
            for index, s in slices:
                by_chunk.setdefault(index, []).append(s)
            for index, group in by_chunk.items():
                await self._append_slices(tx, inode, index, group)
            new_length = max(attr.size, length)
            stored = min(attr.stored + sum(s.length for _, s in slices), new_length)
            return await self._set_size(tx, attr, new_length, stored, mtime)

        return await self.db.txn(fn)

    async def _set_size(self, tx, attr: Attr, length: int, stored: int, t: int) -> Attr:
        """New length and stored bytes of a file whose content changed at `t`."""
        await self.resized_in(tx, attr, length)
        await tx.defer(
            "UPDATE nodes SET length = ?, stored = ?, mtime = ?, ctime = ? WHERE inode = ?",
            length,
            stored,
            t,
            t,
            attr.inode,
        )
        await self.count_in(tx, used=stored - attr.stored)
        tx.changes.data(attr.inode)
        return dataclasses.replace(attr, size=length, stored=stored, mtime=t, ctime=t)

    async def truncate(self, inode: int, length: int, t: int | None = None) -> Attr:
        """Set a regular file's length. Costs in proportion to the chunks actually stored."""

        async def fn(tx):
            attr = await self.must_attr_in(tx, inode)
            if attr.is_dir:
                raise FSError(errno.EISDIR)
            if not attr.is_file:
                raise FSError(errno.EINVAL)
            stored = attr.stored
            if length < attr.size:
                first_gone = -(-length // CHUNK_SIZE)  # chunks wholly beyond the new end
                gone = await tx.all(
                    "SELECT slices FROM chunks WHERE inode = ? AND idx >= ?", inode, first_gone
                )
                await refs.drop_rows(tx, [decode_slices(blob) for (blob,) in gone], now_ns())
                await tx.run("DELETE FROM chunks WHERE inode = ? AND idx >= ?", inode, first_gone)
                pos = length % CHUNK_SIZE
                if pos:
                    idx = length // CHUNK_SIZE
                    if await tx.one("SELECT 1 FROM chunks WHERE inode = ? AND idx = ?", inode, idx):
                        await self._append_slices(
                            tx, inode, idx, [Slice(pos, 0, 0, 0, CHUNK_SIZE - pos)]
                        )
                stored = min(stored, length)
            return await self._set_size(tx, attr, length, stored, t or now_ns())

        return await self.db.txn(fn)

    # ---- byte ranges: fallocate, SEEK_DATA / SEEK_HOLE, copy_file_range (meta/ranges.py) ---

    async def fallocate(
        self,
        inode: int,
        offset: int,
        length: int,
        mode: int,
        *,
        block_size: int,
        capacity: int | None = None,
    ) -> Attr:
        """fallocate(2) on a regular file: modes 0, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE and
        ZERO_RANGE (with or without KEEP_SIZE), arguments already checked (vfs/ranges.py)."""
        t = now_ns()
        return await self.db.txn(
            lambda tx: ranges.fallocate(
                self, tx, inode, offset, length, mode, t, block_size, capacity
            )
        )

    async def seek(self, inode: int, offset: int, whence: int) -> int:
        """lseek(2) SEEK_DATA / SEEK_HOLE from the slice map (ENXIO at or past the end)."""
        return await self.db.txn(
            lambda tx: ranges.seek(self, tx, inode, offset, whence), write=False
        )

    async def copy_range(
        self, inode_in: int, off_in: int, inode_out: int, off_out: int, length: int, *,
        block_size: int,
    ) -> tuple[int, Attr]:  # fmt: skip
        """copy_file_range(2): the destination's chunks name the source's slices (no block is
        read or written). Returns the bytes copied and the destination's attributes."""
        t = now_ns()
        return await self.db.txn(
            lambda tx: ranges.copy_range(
                self, tx, inode_in, off_in, inode_out, off_out, length, t, block_size
            )
        )

    # ---- deferred deletes -----------------------------------------------------------------

    async def pending_deletes(self, limit: int) -> list[tuple[int, int, int]]:
        """Oldest queued deletes: (queue id, slice id, slice size)."""
        return await self.db.txn(
            lambda tx: tx.all(
                "SELECT id, slice, size FROM pending_deletes ORDER BY id LIMIT ?", limit
            ),
            write=False,
        )

    async def finish_deletes(self, queue_ids: list[int]) -> None:
        async def fn(tx):
            for qid in queue_ids:
                await tx.run("DELETE FROM pending_deletes WHERE id = ?", qid)

        await self.db.txn(fn)

    # ---- locks ----------------------------------------------------------------------------
    # A lock's owner is (session, FUSE lock_owner); meta/locks.py decides, these keep the rows.
    # Every change writes the inode's locked_inodes row, so two concurrent changes on one
    # inode collide (PostgreSQL) and the retried one sees the other's locks. A release that
    # only deletes rows need not: a transaction that missed it sees more locks, not fewer.

    async def getlk(
        self, inode: int, session: int, owner: int, start: int, end: int, type: int
    ) -> Holder | None:
        """F_GETLK: the POSIX lock of another owner that keeps (session, owner) from locking
        [start, end] of `inode` with `type`, with its holder's session and host; None if
        nothing does."""
        me = (session, _signed(owner))

        async def fn(tx):
            rows = await tx.all(
                "SELECT l.session, l.owner, l.type, l.first_byte, l.last_byte, l.pid, s.host"
                " FROM locks l LEFT JOIN sessions s ON s.id = l.session"
                " WHERE l.inode = ? AND l.kind = ? AND l.last_byte >= ? AND l.first_byte <= ?",
                inode,
                POSIX,
                start,
                end,
            )
            hosts = {r[0]: r[6] or "" for r in rows}
            held = [Held((r[0], r[1]), Range(*r[2:6])) for r in rows]
            hit = first_conflict(held, me, type, start, end)
            if hit is None:
                return None
            r = hit.range
            return Holder(r.type, r.start, r.end, r.pid, hit.owner[0], hosts[hit.owner[0]])

        return await self.db.txn(fn, write=False)

    async def setlk(
        self,
        inode: int,
        session: int,
        owner: int,
        start: int,
        end: int,
        type: int,
        pid: int,
        kind: str = POSIX,
    ) -> bool:
        """Lock [start, end] of `inode` with `type` for (session, owner), or unlock it
        (F_UNLCK). False, changing nothing, if another owner holds a conflicting lock; never
        waits.

        `kind` FLOCK: a whole-file flock lock (the range is ignored). As on Linux, converting
        one (shared to exclusive or back) drops the old lock first: a conversion that
        conflicts returns False with the old lock released.
        """
        if kind == FLOCK:
            start, end = 0, OFFSET_MAX
        me = (session, _signed(owner))

        async def fn(tx):
            rows = await tx.all(  # what overlaps or touches the range (own ranges may merge)
                "SELECT session, owner, type, first_byte, last_byte, pid FROM locks"
                " WHERE inode = ? AND kind = ? AND last_byte >= ? AND first_byte <= ?",
                inode,
                kind,
                max(start - 1, 0),
                min(end + 1, OFFSET_MAX),
            )
            mine = [Range(*r[2:]) for r in rows if (r[0], r[1]) == me]
            others = [Held((r[0], r[1]), Range(*r[2:])) for r in rows if (r[0], r[1]) != me]
            if kind == FLOCK and mine and mine[0].type == type:
                return True  # held already
            granted = type == F_UNLCK or first_conflict(others, me, type, start, end) is None
            if granted:
                after = apply(mine, type, start, end, pid)
            elif kind == FLOCK:
                after = []  # the conversion dropped the old lock
            else:
                return False
            await self._write_locks(tx, inode, me, kind, mine, after)
            return granted

        return await self.db.txn(fn)

    async def _write_locks(
        self, tx, inode: int, me: tuple[int, int], kind: str, before: list, after: list
    ) -> None:
        """Replace the owner's ranges `before` with `after` (only the rows that differ)."""
        gone = [r for r in before if r not in after]
        new = [r for r in after if r not in before]
        if not gone and not new:
            return
        for r in gone:
            await tx.defer(
                "DELETE FROM locks WHERE inode = ? AND session = ? AND owner = ? AND kind = ?"
                " AND first_byte = ?",
                inode,
                *me,
                kind,
                r.start,
            )
        for r in new:
            await tx.defer(
                "INSERT INTO locks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                inode,
                *me,
                kind,
                r.type,
                r.start,
                r.end,
                r.pid,
            )
        await tx.defer(
            "INSERT INTO locked_inodes VALUES (?, 1) ON CONFLICT (inode)"
            " DO UPDATE SET changes = locked_inodes.changes + 1",
            inode,
        )
        if gave_up(before, after):
            tx.changes.lock_released(inode)

    async def unlock_owner(self, inode: int, session: int, owner: int, kind: str = POSIX) -> bool:
        """Release every lock of `kind` (session, owner) holds on `inode` (close, release).
        True if there was one."""

        async def fn(tx):
            if await tx.run(
                "DELETE FROM locks WHERE inode = ? AND session = ? AND owner = ? AND kind = ?",
                inode,
                session,
                _signed(owner),
                kind,
            ):
                tx.changes.lock_released(inode)
                return True
            return False

        return await self.db.txn(fn)

    # ---- extended attributes --------------------------------------------------------------

    async def getxattr(self, inode: int, name: bytes) -> bytes:
        async def fn(tx):
            row = await tx.one("SELECT value FROM xattrs WHERE inode = ? AND name = ?", inode, name)
            if row is None:
                await self.must_attr_in(tx, inode)
                raise FSError(errno.ENODATA)
            return bytes(row[0])

        return await self.db.txn(fn, write=False)

    async def listxattr(self, inode: int) -> list[bytes]:
        async def fn(tx):
            await self.must_attr_in(tx, inode)
            rows = await tx.all("SELECT name FROM xattrs WHERE inode = ? ORDER BY name", inode)
            return [bytes(r[0]) for r in rows]

        return await self.db.txn(fn, write=False)

    async def setxattr(
        self, inode: int, name: bytes, value: bytes, create: bool, replace: bool
    ) -> None:
        async def fn(tx):
            await self.must_attr_in(tx, inode)
            exists = await tx.one("SELECT 1 FROM xattrs WHERE inode = ? AND name = ?", inode, name)
            if create and exists:
                raise FSError(errno.EEXIST)
            if replace and not exists:
                raise FSError(errno.ENODATA)
            if exists:
                await tx.run(
                    "UPDATE xattrs SET value = ? WHERE inode = ? AND name = ?", value, inode, name
                )
            else:
                await tx.run("INSERT INTO xattrs VALUES (?, ?, ?)", inode, name, value)
            await tx.run("UPDATE nodes SET ctime = ? WHERE inode = ?", now_ns(), inode)
            tx.changes.attr(inode)

        await self.db.txn(fn)

    async def removexattr(self, inode: int, name: bytes) -> None:
        async def fn(tx):
            if not await tx.run("DELETE FROM xattrs WHERE inode = ? AND name = ?", inode, name):
                await self.must_attr_in(tx, inode)
                raise FSError(errno.ENODATA)
            await tx.run("UPDATE nodes SET ctime = ? WHERE inode = ?", now_ns(), inode)
            tx.changes.attr(inode)

        await self.db.txn(fn)

    def sync(self) -> None:
        """Make every committed change durable (fsync)."""
        self.db.checkpoint()

    async def close(self) -> None:
        await self.db.close()
