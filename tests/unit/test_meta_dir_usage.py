"""Directory counters (meta dir_usage) at the engine, on both engines: what FUSE cannot reach
from Python (RENAME_EXCHANGE, RENAME_WHITEOUT), several connections adding to one directory at
once, and the leader's fold."""

from __future__ import annotations

import asyncio
import stat

import pytest
from unit_helpers import DIR, FILE, ROOT, async_test, meta_url, new_meta

from riverfs.meta import open_meta
from riverfs.meta.engine import RENAME_EXCHANGE, RENAME_WHITEOUT

pytestmark = pytest.mark.usefixtures("meta_engine")
NOT_IN_USE = lambda _: False  # noqa: E731


async def figures(meta, inode: int) -> tuple[int, int]:
    s = await meta.dir_summary(inode)
    return s.entries, s.bytes


@async_test
async def test_exchange_and_whiteout_move_what_they_move(tmp_path):
    meta = await new_meta(tmp_path)
    await meta.open_session("h", 1, "/m", "t")
    a = await meta.create(ROOT, b"a", DIR, 0, 0)
    b = await meta.create(ROOT, b"b", DIR, 0, 0)
    f = await meta.create(a.inode, b"f", FILE, 0, 0)
    await meta.truncate(f.inode, 1000)
    g = await meta.create(b.inode, b"g", DIR, 0, 0)
    await meta.create(g.inode, b"inner", FILE, 0, 0)
    await meta.rename(a.inode, b"f", b.inode, b"g", RENAME_EXCHANGE, NOT_IN_USE)
    assert await figures(meta, a.inode) == (1, 0)  # now the directory g
    assert await figures(meta, b.inode) == (1, 1000)  # now the file f
    await meta.rename(b.inode, b"g", a.inode, b"f2", RENAME_WHITEOUT, NOT_IN_USE)
    assert await figures(meta, b.inode) == (1, 0)  # the whiteout (a 0/0 device) stays
    assert await figures(meta, a.inode) == (2, 1000)
    assert (await meta.dir_summary(ROOT)).tree_entries == 6
    assert await meta.dir_usage_drift() == []
    await meta.close()


@async_test
async def test_concurrent_connections_count_exactly_and_the_fold_keeps_the_sums(tmp_path):
    first = await new_meta(tmp_path)
    second = await open_meta(meta_url(tmp_path))  # another mount: its own connections
    for i, meta in enumerate((first, second)):
        await meta.open_session("h", i, f"/m{i}", "t")
    d = await first.create(ROOT, b"d", DIR, 0, 0)

    async def fill(meta, tag: bytes) -> None:
        for i in range(30):
            f = await meta.create(d.inode, tag + b"%d" % i, FILE, 0, 0)
            await meta.truncate(f.inode, 10)

    await asyncio.gather(fill(first, b"x"), fill(second, b"y"), fill(first, b"z"))
    assert await figures(second, d.inode) == (90, 900)
    await first.fold_usage()
    rows = await first.db.txn(
        lambda tx: tx.all("SELECT slot FROM dir_usage WHERE inode = ?", d.inode), write=False
    )
    assert rows == [(0,)]  # one folded row per directory
    assert await figures(second, d.inode) == (90, 900)
    for i in range(90):
        tag = b"xyz"[i // 30 : i // 30 + 1]
        await second.unlink(d.inode, tag + b"%d" % (i % 30), NOT_IN_USE)
    await second.close_session(second.session_id)  # alone: an rmdir frees at once
    await second.close()
    await first.rmdir(ROOT, b"d")  # its rows go with it
    assert (
        await first.db.txn(
            lambda tx: tx.all("SELECT * FROM dir_usage WHERE inode = ?", d.inode), write=False
        )
        == []
    )
    assert await first.dir_usage_drift() == []
    assert await figures(first, ROOT) == (0, 0)
    await first.close()


@async_test
async def test_symlinks_count_their_target_and_devices_nothing(tmp_path):
    meta = await new_meta(tmp_path)
    await meta.open_session("h", 1, "/m", "t")
    await meta.create(ROOT, b"l", stat.S_IFLNK | 0o777, 0, 0, target=b"12345")
    await meta.create(ROOT, b"c", stat.S_IFCHR | 0o600, 0, 0, rdev=0x0101)
    assert await figures(meta, ROOT) == (2, 5)
    await meta.close()


@async_test
async def test_a_volume_without_counters_gets_them_built_once_and_fsck_rebuilds_them(tmp_path):
    """What opening a volume of schema 5 and `fsck --repair` do, on both engines."""
    meta = await new_meta(tmp_path)
    await meta.open_session("h", 1, "/m", "t")
    d = await meta.create(ROOT, b"d", DIR, 0, 0)
    for i in range(5):
        f = await meta.create(d.inode, b"f%d" % i, FILE, 0, 0)
        await meta.truncate(f.inode, 100 * i)
    await meta.link(f.inode, ROOT, b"hard")
    counted = await meta.dir_summary(ROOT)

    async def forget(tx):  # a volume from before the counters
        await tx.run("DELETE FROM dir_usage")
        await tx.run("DELETE FROM counters WHERE name = 'dir_usage'")

    await meta.db.txn(forget)
    assert len(await meta.dir_usage_drift()) == 2
    await meta.prepare()
    assert await meta.dir_summary(ROOT) == counted
    assert counted.tree_entries == 7 and counted.tree_bytes == 1000 + 400
    await meta.db.txn(lambda tx: tx.run("UPDATE dir_usage SET bytes = 1 WHERE inode = ?", d.inode))
    await meta.prepare()  # built already: not again
    [(inode, wrong, right)] = await meta.dir_usage_drift()
    assert (inode, wrong, right) == (d.inode, (5, 1), (5, 1000))
    await meta.rebuild_dir_usage()
    assert await meta.dir_usage_drift() == []
    assert await meta.dir_summary(ROOT) == counted
    await meta.close()
