"""Sessions on both engines: leases, stale sessions, doomed inodes, change events, usage rows."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import sqlite3

import pytest
from unit_helpers import DIR, FILE, ROOT, async_test, meta_url, new_meta, sql_all, sql_one

from riverfs.meta import open_meta
from riverfs.meta.changes import Change, Changes, parse_payload
from riverfs.meta.engine import now_ns
from riverfs.vfs.deleter import Deleter
from riverfs.vfs.session import Session

pytestmark = pytest.mark.usefixtures("meta_engine")


def never(_inode: int) -> bool:
    return False


def always(_inode: int) -> bool:
    return True


async def second_mount(tmp_path, host: str = "h2"):
    """Another Meta on the same database, with its own session."""
    other = await open_meta(meta_url(tmp_path))
    await other.open_session(host, 999_999, "/elsewhere", "t")
    return other


@async_test
async def test_one_lease_holder_at_a_time_and_a_free_lease_moves(tmp_path):
    meta = await new_meta(tmp_path)
    await meta.open_session("h1", 1, "/m", "t")
    other = await second_mount(tmp_path)
    assert await meta.take_lease("background", 30)
    assert await meta.take_lease("background", 30)  # renewal
    assert not await other.take_lease("background", 30)
    await meta.close_session(meta.session_id)  # leaving gives it up
    assert await other.take_lease("background", 0.01)
    await asyncio.sleep(0.05)  # expired: anyone may take it
    third = await second_mount(tmp_path, "h3")
    assert await third.take_lease("background", 30)
    assert not await other.take_lease("background", 30)
    for m in (meta, other, third):
        await m.close()


@async_test
async def test_a_session_silent_for_five_heartbeats_is_cleaned_up_by_the_leader(tmp_path):
    meta = await new_meta(tmp_path)
    other = await second_mount(tmp_path, host="far-away-host")
    f = await other.create(ROOT, b"open-there", FILE, 0, 0)
    await other.unlink(ROOT, b"open-there", always)  # kept open by the other session
    await other.db.txn(
        lambda tx: tx.run("UPDATE sessions SET heartbeat = 0 WHERE id = ?", other.session_id)
    )
    deleter = Deleter(meta, blocks=None)
    session = Session(meta, deleter, heartbeat=0.05, doom_grace=0.0)
    await session.start("/m")
    assert session.leader
    assert [s.id for s in await meta.sessions()] == [meta.session_id]
    # With this mount live, the freed inode waits out the grace period, then goes.
    await meta.free_doomed(now_ns() + 1)
    assert await sql_one(meta, "SELECT 1 FROM nodes WHERE inode = ?", f.inode) is None
    await session.stop()
    await other.close()
    await meta.close()


@async_test
async def test_an_inode_deleted_elsewhere_lives_while_a_mount_claims_it(tmp_path):
    meta = await new_meta(tmp_path)
    await meta.open_session("h1", 1, "/m", "t")
    other = await second_mount(tmp_path)
    f = await meta.create(ROOT, b"f", FILE, 0, 0)
    await meta.unlink(ROOT, b"f", never)  # not used here, but another mount is live: doomed
    assert (await meta.getattr(f.inode)).nlink == 0
    assert await other.sustain(f.inode)  # the other mount has it open
    assert await meta.free_doomed(now_ns() + 1) == 0
    assert (await meta.getattr(f.inode)).nlink == 0
    assert not await other.release(f.inode)  # closed there: doomed again for the grace period
    assert await meta.free_doomed(now_ns() + 1) == 1
    assert await sql_one(meta, "SELECT 1 FROM nodes WHERE inode = ?", f.inode) is None
    g = await meta.create(ROOT, b"g", FILE, 0, 0)
    await meta.unlink(ROOT, b"g", never)
    assert await meta.free_doomed(now_ns() + 1) == 1  # nobody claimed it
    assert not await other.sustain(g.inode)  # too late: gone
    await other.close()
    await meta.close()


@async_test
async def test_usage_is_exact_with_rows_per_connection_and_after_folding(tmp_path):
    meta = await new_meta(tmp_path)
    await asyncio.gather(*(meta.create(ROOT, b"f%d" % i, FILE, 0, 0) for i in range(50)))
    assert (await meta.usage()).inodes == 51
    await meta.fold_usage()
    assert await sql_all(meta, "SELECT * FROM usage") == []
    await meta.unlink(ROOT, b"f0", never)
    assert (await meta.usage()).inodes == 50
    await meta.close()


@async_test
async def test_changes_are_published_to_watchers_with_the_commit(tmp_path):
    meta = await new_meta(tmp_path)
    await meta.open_session("h1", 1, "/m", "t")
    other = await second_mount(tmp_path)
    seen: list[tuple[int, list[Change]]] = []
    ready = asyncio.Event()

    async def watch():
        stream = other.db.watch()
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0.3)  # the listener is set up
        ready.set()
        payload = await first
        while True:
            if payload:
                seen.append(parse_payload(payload))
            payload = await stream.__anext__()

    task = asyncio.ensure_future(watch())
    await ready.wait()
    d = await meta.create(ROOT, b"dir", 0o40755, 0, 0)
    await meta.rename(ROOT, b"dir", ROOT, b"moved", 0, never)
    for _ in range(100):
        if len(seen) >= 2:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert [s for s, _ in seen] == [meta.session_id, meta.session_id]
    assert Change("e", ROOT, b"dir") in seen[0][1]
    assert Change("e", ROOT, b"moved") in seen[1][1] and Change("a", d.inode) in seen[1][1]
    await other.close()
    await meta.close()


def test_change_payloads_round_trip_and_split_below_the_notify_limit():
    changes = Changes()
    for i in range(200):
        changes.entry(i, b"\xff name with ;|/ bytes" * 3)
        changes.attr(i)
    changes.data(7)
    payloads = changes.payloads(42)
    assert len(payloads) > 1 and all(len(p) <= 7000 for p in payloads)
    parsed = [c for p in payloads for c in parse_payload(p)[1]]
    assert parsed == list(changes.items)
    assert {parse_payload(p)[0] for p in payloads} == {42}
    assert parse_payload("garbage") == (0, [])


@async_test
async def test_crossing_directory_moves_from_two_mounts_never_make_a_loop(tmp_path):
    meta = await new_meta(tmp_path)
    other = await open_meta(meta_url(tmp_path))
    for _ in range(5):
        x = await meta.create(ROOT, b"x", DIR, 0, 0)
        a = await meta.create(x.inode, b"a", DIR, 0, 0)
        a1 = await meta.create(a.inode, b"a1", DIR, 0, 0)
        y = await meta.create(ROOT, b"y", DIR, 0, 0)
        b = await meta.create(y.inode, b"b", DIR, 0, 0)
        b1 = await meta.create(b.inode, b"b1", DIR, 0, 0)
        results = await asyncio.gather(
            meta.rename(x.inode, b"a", b1.inode, b"z", 0, never),  # a under b
            other.rename(y.inode, b"b", a1.inode, b"w", 0, never),  # b under a
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, Exception)]
        assert len(errors) == 1 and errors[0].errno == errno.EINVAL, results
        for d in (a, b):  # both still reachable from the root (read from the database)
            inode, seen = d.inode, set()
            while inode != ROOT:
                assert inode not in seen
                seen.add(inode)
                (inode,) = await sql_one(meta, "SELECT parent FROM nodes WHERE inode = ?", inode)
        # `other` cached nothing of these (no watcher runs here to keep `meta`'s cache fresh)
        for name in (b"x", b"y"):
            await remove_tree(other, ROOT, name)
    await other.close()
    await meta.close()


async def remove_tree(meta, parent: int, name: bytes) -> None:
    attr = await meta.lookup(parent, name)
    for e in await meta.readdir(attr.inode, 0, 100):
        await remove_tree(meta, attr.inode, e.name)
    await meta.rmdir(parent, name, never)


@async_test
async def test_a_session_records_its_metrics_address_for_status_on_any_host(tmp_path):
    meta = await new_meta(tmp_path)
    await meta.open_session("h1", 1, "/m", "t", 2.0, "127.0.0.1:9567")
    other = await second_mount(tmp_path)  # one without --metrics
    seen = {s.mountpoint: s.metrics for s in await other.sessions()}
    assert seen == {"/m": "127.0.0.1:9567", "/elsewhere": ""}
    for m in (meta, other):
        await m.close()


@async_test
async def test_a_volume_from_before_the_metrics_column_gets_it_when_opened(tmp_path):
    meta = await new_meta(tmp_path)
    await meta.open_session("h1", 1, "/old", "t")
    await meta.close()
    if meta_url(tmp_path).startswith("sqlite"):  # the table as it was (SQLite cannot drop it)
        with sqlite3.connect(tmp_path / "meta.db") as db:
            db.executescript(
                "CREATE TABLE s (id INTEGER PRIMARY KEY AUTOINCREMENT, host TEXT NOT NULL,"
                " pid INTEGER NOT NULL, mountpoint TEXT NOT NULL, version TEXT NOT NULL,"
                " started INTEGER NOT NULL, heartbeat INTEGER NOT NULL,"
                " beat_every REAL NOT NULL DEFAULT 10, staged INTEGER NOT NULL DEFAULT 0);"
                "INSERT INTO s SELECT id, host, pid, mountpoint, version, started, heartbeat,"
                " beat_every, staged FROM sessions; DROP TABLE sessions;"
                "ALTER TABLE s RENAME TO sessions;"
            )
    else:
        meta = await open_meta(meta_url(tmp_path))
        await meta.db.txn(lambda tx: tx.run("ALTER TABLE sessions DROP COLUMN metrics"))
        await meta.close()
    meta = await open_meta(meta_url(tmp_path))
    await meta.prepare()  # what every mount and tool does on open
    await meta.open_session("h1", 2, "/new", "t", 1.0, "[::1]:9567")
    seen = {s.mountpoint: s.metrics for s in await meta.sessions()}
    assert seen == {"/old": "", "/new": "[::1]:9567"}
    await meta.close()
