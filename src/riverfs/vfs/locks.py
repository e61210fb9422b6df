"""File locks for the FUSE handlers: POSIX record locks and flock, held across every mount.

The locks live in the metadata engine (meta/engine.py: getlk, setlk, unlock_owner; range
algebra in meta/locks.py), so a lock taken on one mount excludes the others, on this host and
(PostgreSQL) on every other. A lock's owner is this mount's session plus the FUSE lock_owner.

What the transport calls (`vfs.locks`, a FileLocks; types F_RDLCK 0, F_WRLCK 1, F_UNLCK 2;
ranges [start, end] inclusive, end OFFSET_MAX = to EOF, exactly as fuse_file_lock has them):

    GETLK                 await getlk(inode, owner, start, end, type, pid)
                              -> (type, start, end, pid); type F_UNLCK (and the request's
                              range, pid 0) if nothing conflicts
    SETLK / SETLKW        await setlk(inode, owner, start, end, type, pid, wait, flock)
                              wait: SETLKW (or a blocking flock); flock: FUSE_LK_FLOCK was set
                              in lk_flags. FSError(EAGAIN) on conflict when not waiting.
    FLUSH                 await release_owner(inode, lock_owner)   the owner's POSIX locks
    RELEASE with FUSE_RELEASE_FLOCK_UNLOCK in release_flags
                          await release_flock(inode, lock_owner)   the owner's flock lock

`owner` is fuse_lk_in.owner (a u64), `pid` fuse_file_lock.pid (getlk does not use it). Calls
for an owner that never locked on this mount cost nothing (FLUSH comes with every close).

A waiting setlk tries again whenever a lock on the inode is released: by this mount (at once)
or by another (its change event, meta/changes.py kind "l"), and every `poll` seconds in any
case (a dead mount's locks, freed by the leader's cleanup, are noticed that way here). The
wait is cancellable: CancelledError propagates (the transport cancels the task on
FUSE_INTERRUPT and answers EINTR). If the cancellation comes while an attempt is committing,
the attempt finishes first; if it took the lock, setlk returns normally (the lock is held, as
when a signal comes just after the kernel granted it).

No deadlock detection: two owners each waiting for a lock the other holds (on one mount or
across mounts) wait until one is interrupted (EINTR), where Linux answers the second F_SETLKW
with EDEADLK. The F_GETLK pid is the holder's when it runs on this host (same host name as its
session), else 0.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections import Counter

from riverfs.errors import FSError
from riverfs.meta import Meta
from riverfs.meta.locks import F_RDLCK, F_UNLCK, F_WRLCK, FLOCK, OFFSET_MAX, POSIX

POLL = 0.5  # seconds between tries of a waiting lock when no release was heard


class FileLocks:
    def __init__(self, meta: Meta, host: str | None = None, poll: float = POLL) -> None:
        self.meta = meta
        self.host = socket.gethostname() if host is None else host
        self.poll = poll
        # (kind, inode, owner) this mount may hold locks for, with the number of the last
        # attempt to lock: closing a file whose owner never locked (almost every close)
        # costs no transaction.
        self._maybe_held: dict[tuple[str, int, int], int] = {}
        self._attempts = 0
        self._in_flight: Counter[tuple[str, int, int]] = Counter()
        self._wakeups: dict[int, asyncio.Event] = {}  # inode -> set at its next release
        self._waiting: dict[int, int] = {}  # inode -> waiters

    async def getlk(
        self, inode: int, owner: int, start: int, end: int, type: int, pid: int
    ) -> tuple[int, int, int, int]:
        _check(type, start, end)
        if type == F_UNLCK:
            return F_UNLCK, start, end, 0
        hit = await self.meta.getlk(inode, self.meta.session_id, owner, start, end, type)
        if hit is None:
            return F_UNLCK, start, end, 0
        return hit.type, hit.start, hit.end, hit.pid if hit.host == self.host else 0

    async def setlk(
        self,
        inode: int,
        owner: int,
        start: int,
        end: int,
        type: int,
        pid: int,
        wait: bool = False,
        flock: bool = False,
    ) -> None:
        kind = FLOCK if flock else POSIX
        if flock:
            start, end = 0, OFFSET_MAX
        _check(type, start, end)
        if type == F_UNLCK or not wait:
            await self._try(inode, owner, start, end, type, pid, kind, raise_=True)
            return
        self._waiting[inode] = self._waiting.get(inode, 0) + 1
        try:
            while True:
                # Taken before trying: a release between the try and the wait still wakes us.
                wakeup = self._wakeups.setdefault(inode, asyncio.Event())
                if await self._attempt(inode, owner, start, end, type, pid, kind):
                    return
                try:
                    await asyncio.wait_for(wakeup.wait(), self.poll)
                except TimeoutError:
                    pass
        finally:
            left = self._waiting.pop(inode) - 1
            if left:
                self._waiting[inode] = left
            else:
                self._wakeups.pop(inode, None)

    async def release_owner(self, inode: int, owner: int) -> None:
        """FLUSH: the POSIX locks `owner` holds on `inode` go."""
        await self._unlock(POSIX, inode, owner)

    async def release_flock(self, inode: int, owner: int) -> None:
        """RELEASE with FUSE_RELEASE_FLOCK_UNLOCK: the flock lock of `owner` goes."""
        await self._unlock(FLOCK, inode, owner)

    def released(self, inode: int) -> None:
        """A lock on `inode` was released (here or on another mount): waiters try again."""
        wakeup = self._wakeups.pop(inode, None)
        if wakeup is not None:
            wakeup.set()

    # ---- helpers --------------------------------------------------------------------------

    async def _try(
        self,
        inode: int,
        owner: int,
        start: int,
        end: int,
        type: int,
        pid: int,
        kind: str,
        raise_: bool = False,
    ) -> bool:
        """One attempt; True if applied. Wakes this mount's waiters on the inode (an own
        change may have released something they wait for)."""
        key = (kind, inode, owner)
        if type != F_UNLCK:
            self._attempts += 1
            self._maybe_held[key] = self._attempts
        self._in_flight[key] += 1
        try:
            ok = await self.meta.setlk(
                inode, self.meta.session_id, owner, start, end, type, pid, kind
            )
        finally:
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]
        if ok or kind == FLOCK:  # a failed flock conversion released the old lock
            self.released(inode)
        if not ok and raise_:
            raise FSError(errno.EAGAIN, f"inode {inode} [{start}, {end}] is locked")
        return ok

    async def _attempt(self, *args) -> bool:
        """`_try`, finished even if the caller is cancelled meanwhile: a lock taken is then
        kept and reported taken (the cancellation is dropped), else CancelledError."""
        attempt = asyncio.ensure_future(self._try(*args))
        cancels = 0
        while True:
            try:
                ok = await asyncio.shield(attempt)
                break
            except asyncio.CancelledError:
                if attempt.cancelled():
                    raise
                cancels += 1
        if cancels:
            if not ok:
                raise asyncio.CancelledError
            task = asyncio.current_task()
            for _ in range(cancels):
                task.uncancel()
        return ok

    async def _unlock(self, kind: str, inode: int, owner: int) -> None:
        key = (kind, inode, owner)
        attempt = self._maybe_held.get(key)
        if attempt is None:
            return
        busy = key in self._in_flight
        if await self.meta.unlock_owner(inode, self.meta.session_id, owner, kind):
            self.released(inode)
        # Forgotten unless a lock attempt ran meanwhile (it may have committed after us).
        if not busy and key not in self._in_flight and self._maybe_held.get(key) == attempt:
            del self._maybe_held[key]


def _check(type: int, start: int, end: int) -> None:
    if type not in (F_RDLCK, F_WRLCK, F_UNLCK) or not 0 <= start <= end <= OFFSET_MAX:
        raise FSError(errno.EINVAL, f"lock type {type} [{start}, {end}]")
