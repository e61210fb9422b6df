"""The SQLite engine: one connection, transactions run inline on the event loop.

SQLite statements on a local WAL database take microseconds, less than a hop to a thread would,
so they run directly in the event loop (a departure from the "blocking calls go to the pool"
rule, recorded in docs/ARCHITECTURE.md). `busy_timeout` is kept short and a busy database
(another process writing) is retried with an asyncio sleep, so the loop is never parked for long.

Other mounts of the same database (on this host) learn of changes by polling the changelog
table, which every write transaction appends to.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from riverfs.errors import FSError, RiverError
from riverfs.meta import txn_timing
from riverfs.meta.changes import Changes
from riverfs.meta.engine import DuplicateKey, now_ns

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ATTEMPTS = 50
POLL_INTERVAL = 0.2  # seconds between changelog polls
POLL_BATCH = 1000
CHANGELOG_KEEP_NS = 60 * 10**9  # changelog rows older than this are trimmed
_BUSY_MESSAGES = ("database is locked", "database is busy", "database table is locked")


class SQLiteTx:
    """Statements inside one transaction (`?` placeholders)."""

    __slots__ = ("_conn", "changes")
    slot = 0  # one connection: one usage row

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.changes = Changes()

    async def one(self, sql: str, *params: Any) -> tuple | None:
        return self._conn.execute(sql, params).fetchone()

    async def all(self, sql: str, *params: Any) -> list[tuple]:
        return self._conn.execute(sql, params).fetchall()

    async def run(self, sql: str, *params: Any) -> int:
        """Execute; return the number of rows changed."""
        try:
            return self._conn.execute(sql, params).rowcount
        except sqlite3.IntegrityError as e:
            raise DuplicateKey(str(e)) from e

    async def insert(self, sql: str, *params: Any) -> int:
        """Execute an INSERT; return the new row's id."""
        return self._conn.execute(sql, params).lastrowid

    async def defer(self, sql: str, *params: Any, duplicate: Exception | None = None) -> None:
        """A write whose result nobody reads (SQLite runs it at once); `duplicate` is raised
        if it hits a unique key."""
        try:
            await self.run(sql, *params)
        except DuplicateKey:
            if duplicate is None:
                raise
            raise duplicate from None


class SQLiteDatabase:
    """A SQLite metadata database at `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite://{path}"
        try:
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=0.02
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as e:
            raise RiverError(f"cannot open metadata database {path}: {e}") from e
        self._lock = asyncio.Lock()
        self.session = 0  # set once the mount has registered its session
        self.on_commit: Callable[..., None] = lambda changes, committed=True: None

    async def executescript(self, script: str) -> None:
        async with self._lock:
            cols = [r[1] for r in self._conn.execute("PRAGMA table_info(changelog)")]
            if cols and "events" not in cols:  # schema 1 had an unused changelog of its own
                self._conn.execute("DROP TABLE changelog")
            cols = [r[1] for r in self._conn.execute("PRAGMA table_info(sessions)")]
            if cols and "beat_every" not in cols:  # schema 1
                self._conn.execute(
                    "ALTER TABLE sessions ADD COLUMN beat_every REAL NOT NULL DEFAULT 10"
                )
            if cols and "staged" not in cols:
                self._conn.execute(
                    "ALTER TABLE sessions ADD COLUMN staged INTEGER NOT NULL DEFAULT 0"
                )
            if cols and "metrics" not in cols:
                self._conn.execute(
                    "ALTER TABLE sessions ADD COLUMN metrics TEXT NOT NULL DEFAULT ''"
                )
            self._conn.executescript(script)

    async def txn(self, fn: Callable[[SQLiteTx], Awaitable[T]], *, write: bool = True) -> T:
        """Run `fn` in one transaction (see `_txn`), counted and timed."""
        started = txn_timing.begin()
        try:
            return await self._txn(fn, write)
        finally:
            txn_timing.end(started, write)

    async def _txn(self, fn: Callable[[SQLiteTx], Awaitable[T]], write: bool) -> T:
        """Run `fn` in one transaction; retry it when another process holds the database."""
        delay = 0.001
        for attempt in range(MAX_ATTEMPTS):
            tx = SQLiteTx(self._conn)
            async with self._lock:
                try:
                    self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                    try:
                        result = await fn(tx)
                        if tx.changes:
                            self._publish(tx.changes)
                        self._conn.execute("COMMIT")
                        self.on_commit(tx.changes)
                        return result
                    except BaseException:
                        if self._conn.in_transaction:
                            self._conn.execute("ROLLBACK")
                        raise
                except sqlite3.OperationalError as e:
                    if "disk is full" in str(e):
                        raise FSError(errno.ENOSPC, f"metadata database {self.path}: {e}") from e
                    if not any(m in str(e) for m in _BUSY_MESSAGES):
                        raise
                    log.debug("database busy (attempt %d): %s", attempt + 1, e)
            txn_timing.RETRIES.inc()
            await asyncio.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.2)
        raise FSError(errno.EIO, f"metadata database {self.path} stayed busy")

    def _publish(self, changes: Changes) -> None:
        t = now_ns()
        for payload in changes.payloads(self.session):
            self._conn.execute(
                "INSERT INTO changelog (session, events, at) VALUES (?, ?, ?)",
                (self.session, payload, t),
            )

    async def watch(self) -> AsyncIterator[str]:
        """Payloads of changes committed from now on (by any session), by polling."""
        row = await self.txn(lambda tx: tx.one("SELECT MAX(id) FROM changelog"), write=False)
        last = row[0] or 0
        polls = 0
        rows: list[tuple] = []
        while True:
            if len(rows) < POLL_BATCH:  # a full batch: more may be waiting, no pause
                await asyncio.sleep(POLL_INTERVAL)
            rows = await self.txn(functools.partial(_changes_after, last=last), write=False)
            if rows and rows[0][0] != last + 1:
                yield ""  # rows were trimmed before this mount read them: changes missed
            for row_id, events in rows:
                last = row_id
                yield events
            polls += 1
            if polls % 300 == 0:  # about once a minute
                await self.txn(_trim_changelog)

    async def reset_ids(self, tables: tuple[str, ...]) -> None:
        """After rows were inserted with explicit ids (AUTOINCREMENT keeps up by itself)."""

    def checkpoint(self) -> None:
        """Make every committed transaction durable on disk (WAL synced into the database)."""
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def close(self) -> None:
        self._conn.close()


async def _changes_after(tx: SQLiteTx, last: int) -> list[tuple]:
    return await tx.all(
        "SELECT id, events FROM changelog WHERE id > ? ORDER BY id LIMIT ?", last, POLL_BATCH
    )


async def _trim_changelog(tx: SQLiteTx) -> None:
    await tx.run("DELETE FROM changelog WHERE at < ?", now_ns() - CHANGELOG_KEEP_NS)


def sqlite_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise RiverError(f"metadata URL {url!r} must be sqlite:///absolute/path/meta.db")
    return Path(parts.path)
