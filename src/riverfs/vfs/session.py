"""This mount's session: registration, heartbeats, and the volume's background jobs.

Every mount registers a session and heartbeats it. One mount at a time holds the 'background'
lease (elected through the database, renewed with each heartbeat) and runs the jobs that
must not run twice at once: deleting unreferenced blocks, cleaning up sessions that stopped
heartbeating (their deleted-but-open files are freed), freeing doomed inodes whose grace
period passed, folding the usage rows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

from riverfs import __version__
from riverfs.errors import RiverError
from riverfs.meta import Meta, SessionInfo
from riverfs.meta.engine import now_ns
from riverfs.vfs.background import cancel
from riverfs.vfs.deleter import Deleter

log = logging.getLogger(__name__)

LEASE = "background"
STALE_HEARTBEATS = 5  # a session silent for this many heartbeats is dead
FOLD_EVERY = 30  # heartbeats between folding the usage rows


class Session:
    def __init__(
        self,
        meta: Meta,
        deleter: Deleter,
        heartbeat: float,
        doom_grace: float,
        staged: Callable[[], int] = lambda: 0,
        metrics: str | None = None,
    ):
        self.staged = staged  # bytes waiting to upload, reported with each heartbeat
        self.metrics = metrics or ""  # the Prometheus endpoint, recorded for `riverfs status`
        self.meta = meta
        self.deleter = deleter
        self.heartbeat = heartbeat
        self.doom_grace = doom_grace
        self.leader = False
        self.mountpoint = ""
        self._task: asyncio.Task | None = None

    async def start(self, mountpoint: str) -> None:
        self.mountpoint = mountpoint
        await self._clean_dead_sessions()
        await self.meta.open_session(
            socket.gethostname(),
            os.getpid(),
            mountpoint,
            __version__,
            self.heartbeat,
            self.metrics,
        )
        await self._elect()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> int:
        """End the session; return how many deleted-but-open files were freed."""
        await cancel(self._task)
        return await self.meta.close_session(self.meta.session_id)

    async def _run(self) -> None:
        beats = 0
        while True:
            await asyncio.sleep(self.heartbeat)
            beats += 1
            try:
                if not await self.meta.heartbeat(self.staged()):
                    await self._lost()
                await self._elect()
                if self.leader:
                    await self._clean_dead_sessions()
                    if await self.meta.free_doomed(now_ns() - int(self.doom_grace * 1e9)):
                        self.deleter.poke()
                    if beats % FOLD_EVERY == 0:
                        await self.meta.fold_usage()
            except Exception as e:
                log.warning("session upkeep failed (retrying next heartbeat): %s", e)

    async def _lost(self) -> None:
        """Another mount judged this session dead (it was silent, or the clocks disagree) and
        freed what it kept open: register again, so that this mount counts as live."""
        log.error(
            "this mount's session %d was cleaned up by another mount (missed heartbeats or "
            "clock skew); files deleted elsewhere while open here may be gone. Registering again",
            self.meta.session_id,
        )
        await self.meta.open_session(
            socket.gethostname(),
            os.getpid(),
            self.mountpoint,
            __version__,
            self.heartbeat,
            self.metrics,
        )

    async def _elect(self) -> None:
        leader = await self.meta.take_lease(LEASE, self.heartbeat * 3)
        if leader != self.leader:
            log.info("this mount %s the volume's background jobs", "runs" if leader else "left")
        self.leader = leader
        self.deleter.active = leader

    async def _clean_dead_sessions(self) -> None:
        """Free what dead mounts left behind: mounts of this host whose process is gone, and
        any mount that missed STALE_HEARTBEATS heartbeats."""
        host, now = socket.gethostname(), now_ns()
        for s in await self.meta.sessions():
            if s.id != self.meta.session_id and is_dead(s, host, now):
                freed = await self.meta.close_session(s.id)
                if freed:
                    self.deleter.poke()
                log.info(
                    "cleaned up dead session %d (%s pid %d, %s): %d deleted files freed",
                    s.id,
                    s.host,
                    s.pid,
                    s.mountpoint,
                    freed,
                )


def is_dead(s: SessionInfo, host: str, now: int) -> bool:
    """A session whose mount is gone: its process on this host, or its heartbeats."""
    return (s.host == host and not pid_alive(s.pid)) or s.stale(now, STALE_HEARTBEATS)


async def live_sessions(meta: Meta) -> list[SessionInfo]:
    """Sessions of mounts that are still running (as far as heartbeats and pids tell)."""
    host, now = socket.gethostname(), now_ns()
    return [s for s in await meta.sessions() if not is_dead(s, host, now)]


def refuse_if_mounted(sessions: list[SessionInfo], what: str, why: str) -> None:
    """RiverError naming the mounts, for tools that must not run beside them."""
    if sessions:
        where = ", ".join(f"{s.host}:{s.mountpoint}" for s in sessions)
        raise RiverError(f"the volume is mounted ({where}): unmount it before {what} ({why})")


def pid_alive(pid: int) -> bool:
    """True while process `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
