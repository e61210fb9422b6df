"""Listening to the other mounts: their changes drop what this mount and its kernel cached.

The metadata engine streams change payloads (PostgreSQL NOTIFY, or SQLite changelog polling;
see meta/changes.py). For each change made by another session, the watcher
- drops them from the metadata cache (meta/cache.py);
- tells the kernel to forget the directory entry or the inode's attributes (and pages, for a
  content change) through the `Kernel` the FUSE layer provides, so `ls`/`stat` on this host
  show the change at once instead of after the attribute/entry timeout;
- drops this mount's own cached chunk views of changed files, and of files another mount
  compacted (their pages in the kernel stay: the bytes did not change);
- sustains an inode another mount deleted while this mount still has it open (the leader
  frees doomed inodes only after a grace period, so this happens first). Only open handles
  count across mounts; a current directory or O_PATH descriptor here does not keep a file
  another mount deleted.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from riverfs.errors import FSError
from riverfs.meta import Meta
from riverfs.meta.changes import Change, parse_payload
from riverfs.vfs.background import cancel

log = logging.getLogger(__name__)

MAX_RESYNC = 10_000  # inodes whose attributes are dropped after missed notifications


class Kernel(Protocol):
    """What the FUSE layer can make the kernel forget."""

    def forget_entry(self, parent: int, name: bytes) -> None: ...

    def forget_inode(self, inode: int, data: bool) -> None: ...


class NoKernel:
    """No kernel to tell (unit tests, a VFS not mounted)."""

    def forget_entry(self, parent: int, name: bytes) -> None:
        pass

    def forget_inode(self, inode: int, data: bool) -> None:
        pass


class LockWaiters(Protocol):
    def released(self, inode: int) -> None: ...


class Watched(Protocol):
    """What the watcher needs of the mount whose caches it keeps true (the VFS)."""

    meta: Meta
    locks: LockWaiters

    def kernel_knows(self, inode: int) -> bool: ...

    def is_open(self, inode: int) -> bool: ...

    def known_inodes(self) -> list[int]: ...

    def open_inodes(self) -> list[int]: ...

    def sustained_here(self, inode: int) -> None: ...

    async def changed_elsewhere(self, inode: int) -> None: ...


class ChangeWatcher:
    def __init__(self, vfs: Watched) -> None:
        self.vfs = vfs
        self.kernel: Kernel = NoKernel()
        self.applied = 0  # changes from other mounts applied (for tests and stats)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel(self._task)

    async def _run(self) -> None:
        while True:
            try:
                async for payload in self.vfs.meta.db.watch():
                    if not payload:
                        await self._resync()
                        continue
                    session, changes = parse_payload(payload)
                    if session != self.vfs.meta.session_id:
                        await self.apply(changes)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("change watcher failed; restarting it")
                await asyncio.sleep(1)
            try:  # whatever happened meanwhile was not heard
                await self._resync()
            except Exception as e:
                log.warning("dropping cached attributes after a watcher restart failed: %s", e)

    async def apply(self, changes: list[Change]) -> None:
        vfs = self.vfs
        vfs.meta.forget(changes)  # before the kernel asks again
        for c in changes:
            self.applied += 1
            if c.kind == "l":  # a lock there was released: waiters try again
                vfs.locks.released(c.inode)
                continue
            if c.kind == "e":
                if vfs.kernel_knows(c.inode):
                    self.kernel.forget_entry(c.inode, c.name)
                continue
            if vfs.kernel_knows(c.inode):
                self.kernel.forget_inode(c.inode, data=c.kind == "d")
            try:
                # "s" (compaction): the bytes are the same, so the kernel keeps its pages; but
                # the chunk views here name slices that are about to be deleted.
                if c.kind in ("d", "s"):
                    await vfs.changed_elsewhere(c.inode)
                elif c.kind == "u" and vfs.is_open(c.inode):
                    await self._keep_if_deleted(c.inode)
            except Exception as e:  # one change failing must not lose the others
                log.warning("applying change %s of another mount failed: %s", c, e)

    async def _keep_if_deleted(self, inode: int) -> None:
        try:
            attr = await self.vfs.meta.getattr(inode)
        except FSError:
            return
        if attr.nlink == 0 and await self.vfs.meta.sustain(inode):
            self.vfs.sustained_here(inode)

    async def _resync(self) -> None:
        """Notifications may have been missed: drop cached attributes of what the kernel
        knows, and chunk views and lengths of open files (a missed compaction swap would
        leave a view naming deleted slices), and sustain deleted inodes still in use here."""
        if self.vfs.meta.cache is not None:
            self.vfs.meta.cache.clear()
        for inode in self.vfs.known_inodes()[:MAX_RESYNC]:
            self.kernel.forget_inode(inode, data=False)
        for inode in self.vfs.open_inodes():
            await self.vfs.changed_elsewhere(inode)
            await self._keep_if_deleted(inode)
