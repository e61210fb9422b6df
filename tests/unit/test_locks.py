"""File locks: the range algebra (against a per-byte model), the Meta methods on both engines,
and the VFS side (waiting, woken by releases of this mount and of another, cancellable)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from unit_helpers import (
    FILE,
    ROOT,
    async_test,
    forget_memory_store,
    memory_url,
    meta_url,
    new_meta,
    sql_all,
)

from riverfs.chunk.store import BlockStore
from riverfs.errors import FSError
from riverfs.meta import open_meta
from riverfs.meta.changes import Change
from riverfs.meta.engine import now_ns
from riverfs.meta.locks import (
    F_RDLCK,
    F_UNLCK,
    F_WRLCK,
    FLOCK,
    OFFSET_MAX,
    Held,
    Range,
    apply,
    first_conflict,
    gave_up,
)
from riverfs.objects import open_store
from riverfs.vfs.fs import VFS
from riverfs.vfs.options import MountOptions

# ---- range algebra ------------------------------------------------------------------------


def test_same_type_ranges_that_touch_or_overlap_merge():
    held = apply([], F_RDLCK, 0, 9, 1)
    held = apply(held, F_RDLCK, 10, 19, 1)  # adjacent
    assert held == [Range(F_RDLCK, 0, 19, 1)]
    held = apply(held, F_RDLCK, 30, 39, 1)
    held = apply(held, F_RDLCK, 15, 35, 2)  # bridges both
    assert held == [Range(F_RDLCK, 0, 39, 2)]


def test_another_type_replaces_the_part_it_covers():
    held = apply([Range(F_RDLCK, 0, 99, 1)], F_WRLCK, 40, 59, 1)
    assert held == [Range(F_RDLCK, 0, 39, 1), Range(F_WRLCK, 40, 59, 1), Range(F_RDLCK, 60, 99, 1)]
    # Adjacent ranges of different types stay apart.
    assert apply([Range(F_RDLCK, 0, 9, 1)], F_WRLCK, 10, 19, 1) == [
        Range(F_RDLCK, 0, 9, 1),
        Range(F_WRLCK, 10, 19, 1),
    ]


def test_unlocking_the_middle_splits_and_to_eof_ranges_stay_open_ended():
    held = apply([], F_WRLCK, 100, OFFSET_MAX, 1)
    held = apply(held, F_UNLCK, 200, 299, 1)
    assert held == [Range(F_WRLCK, 100, 199, 1), Range(F_WRLCK, 300, OFFSET_MAX, 1)]
    assert apply(held, F_UNLCK, 0, OFFSET_MAX, 1) == []


def test_read_locks_share_write_locks_exclude_and_an_owner_never_conflicts_with_itself():
    held = [Held("a", Range(F_RDLCK, 0, 9, 1)), Held("b", Range(F_WRLCK, 20, 29, 2))]
    assert first_conflict(held, "c", F_RDLCK, 0, 19) is None
    assert first_conflict(held, "c", F_WRLCK, 5, 25) == held[0]  # the lowest start first
    assert first_conflict(held, "c", F_RDLCK, 5, 25) == held[1]
    assert first_conflict(held, "b", F_WRLCK, 20, 29) is None
    assert first_conflict(held, "c", F_WRLCK, 10, 19) is None


CELLS = 21  # bytes 0..19, and cell 20 for everything from byte 20 on (only EOF ranges reach it)
OWNERS = ("a", "b", "c")

requests = st.tuples(
    st.sampled_from(OWNERS),
    st.sampled_from([F_RDLCK, F_WRLCK, F_UNLCK]),
    st.integers(0, 19),
    st.one_of(st.integers(0, 19), st.just(OFFSET_MAX)),
    st.integers(1, 3),
).filter(lambda r: r[2] <= r[3])


def cells(start: int, end: int) -> range:
    return range(start, CELLS if end == OFFSET_MAX else end + 1)


def expand(ranges: list[Range]) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in ranges:
        for i in cells(r.start, r.end):
            assert i not in out, "an owner's ranges overlap"
            out[i] = r.type
    return out


@settings(max_examples=400, deadline=None)
@given(st.lists(requests, max_size=30))
def test_random_locks_match_a_per_byte_model(ops):
    """Each owner's ranges equal a byte map where every set overwrites its bytes; a request
    conflicts exactly when a byte of it is held by another owner with a conflicting type."""
    held: dict[str, list[Range]] = {o: [] for o in OWNERS}
    model: dict[str, dict[int, int]] = {o: {} for o in OWNERS}
    for owner, type, start, end, pid in ops:
        others = [Held(o, r) for o in OWNERS for r in held[o]]
        hit = first_conflict(others, owner, type, start, end)
        blocking = [
            (o, i)
            for o in OWNERS
            if o != owner
            for i in cells(start, end)
            if i in model[o] and F_WRLCK in (model[o][i], type) and type != F_UNLCK
        ]
        assert (hit is not None) == bool(blocking)
        if hit is not None:
            assert hit.owner != owner and hit.range.start <= end and start <= hit.range.end
            continue
        before = held[owner]
        held[owner] = apply(before, type, start, end, pid)
        for i in cells(start, end):
            if type == F_UNLCK:
                model[owner].pop(i, None)
            else:
                model[owner][i] = type
        after = held[owner]
        assert expand(after) == model[owner]
        assert after == sorted(after, key=lambda r: r.start)
        for x, y in zip(after, after[1:], strict=False):  # merged as far as they go
            assert not (x.type == y.type and x.end + 1 == y.start)
        old = expand(before)
        assert gave_up(before, after) == any(model[owner].get(i) != t for i, t in old.items())


# ---- the engine (SQLite and PostgreSQL) ---------------------------------------------------


async def two_sessions(tmp_path):
    """A formatted volume and two Meta objects on it, each with its session, and a file."""
    a = await new_meta(tmp_path)
    await a.open_session("host-a", 101, "/a", "t")
    b = await open_meta(meta_url(tmp_path))
    await b.open_session("host-b", 202, "/b", "t")
    f = await a.create(ROOT, b"f", FILE, 0, 0)
    return a, b, f.inode


def released_events(meta) -> list[Change]:
    """The lock-release change events `meta` commits from now on."""
    seen: list[Change] = []
    original = meta.db.on_commit

    def hook(changes, committed=True):
        seen.extend(c for c in changes.items if c.kind == "l")
        original(changes, committed)

    meta.db.on_commit = hook
    return seen


@pytest.mark.usefixtures("meta_engine")
@async_test
async def test_a_lock_of_one_session_conflicts_with_another_and_getlk_names_it(tmp_path):
    a, b, ino = await two_sessions(tmp_path)
    sa, sb = a.session_id, b.session_id
    assert await a.setlk(ino, sa, 1, 0, 99, F_WRLCK, 4242)
    assert not await b.setlk(ino, sb, 1, 50, 60, F_RDLCK, 7)  # same owner number, other session
    assert await b.setlk(ino, sb, 1, 100, OFFSET_MAX, F_WRLCK, 7)
    hit = await b.getlk(ino, sb, 1, 0, OFFSET_MAX, F_RDLCK)
    assert (hit.type, hit.start, hit.end, hit.pid) == (F_WRLCK, 0, 99, 4242)
    assert (hit.session, hit.host) == (sa, "host-a")
    assert await a.getlk(ino, sa, 1, 0, 99, F_WRLCK) is None  # its own lock
    # Read locks share; a downgrade lets the other session read.
    assert await a.setlk(ino, sa, 1, 0, 99, F_RDLCK, 4242)
    assert await b.setlk(ino, sb, 2, 50, 60, F_RDLCK, 8)
    assert not await a.setlk(ino, sa, 1, 55, 55, F_WRLCK, 4242)  # upgrade blocked by b's read
    assert await a.getlk(ino, sa, 1, 55, 55, F_WRLCK) is not None
    for m in (a, b):
        await m.close()


@pytest.mark.usefixtures("meta_engine")
@async_test
async def test_unlocking_a_middle_range_frees_exactly_that_range(tmp_path):
    a, b, ino = await two_sessions(tmp_path)
    sa, sb = a.session_id, b.session_id
    seen = released_events(a)
    assert await a.setlk(ino, sa, 9, 0, 99, F_WRLCK, 1)
    assert seen == []  # taking a lock releases nothing
    assert await a.setlk(ino, sa, 9, 40, 59, F_UNLCK, 0)
    assert seen == [Change("l", ino)]
    assert await b.setlk(ino, sb, 9, 40, 59, F_WRLCK, 2)
    assert not await b.setlk(ino, sb, 9, 30, 40, F_WRLCK, 2)
    assert not await b.setlk(ino, sb, 9, 59, 60, F_RDLCK, 2)
    hit = await b.getlk(ino, sb, 9, 0, OFFSET_MAX, F_WRLCK)
    assert (hit.start, hit.end) == (0, 39)
    for m in (a, b):
        await m.close()


@pytest.mark.usefixtures("meta_engine")
@async_test
async def test_unlock_owner_drops_only_that_owners_locks_of_that_kind(tmp_path):
    a, b, ino = await two_sessions(tmp_path)
    sa, sb = a.session_id, b.session_id
    big = 2**64 - 1  # lock owners are u64
    assert await a.setlk(ino, sa, big, 0, 9, F_WRLCK, 1)
    assert await a.setlk(ino, sa, big, 20, 29, F_WRLCK, 1)
    assert await a.setlk(ino, sa, 5, 40, 49, F_WRLCK, 1)
    assert await a.setlk(ino, sa, big, 0, 0, F_WRLCK, 1, FLOCK)  # flock: whole file, apart
    seen = released_events(a)
    assert await a.unlock_owner(ino, sa, big)
    assert seen == [Change("l", ino)]
    assert not await a.unlock_owner(ino, sa, big)  # nothing left: no event
    assert len(seen) == 1
    assert await b.setlk(ino, sb, 1, 0, 29, F_WRLCK, 2)
    assert not await b.setlk(ino, sb, 1, 45, 45, F_RDLCK, 2)  # owner 5 still holds it
    assert not await b.setlk(ino, sb, 1, 0, 0, F_RDLCK, 2, FLOCK)  # the flock lock stays
    assert await a.unlock_owner(ino, sa, big, FLOCK)
    assert await b.setlk(ino, sb, 1, 0, 0, F_RDLCK, 2, FLOCK)
    for m in (a, b):
        await m.close()


@pytest.mark.usefixtures("meta_engine")
@async_test
async def test_flock_and_posix_locks_never_conflict_and_flock_conversion_drops_first(tmp_path):
    a, b, ino = await two_sessions(tmp_path)
    sa, sb = a.session_id, b.session_id
    assert await a.setlk(ino, sa, 1, 0, OFFSET_MAX, F_WRLCK, 1)  # POSIX, whole file
    assert await b.setlk(ino, sb, 1, 0, 0, F_WRLCK, 2, FLOCK)
    assert await a.setlk(ino, sa, 7, 0, 0, F_RDLCK, 1, FLOCK) is False  # b's is exclusive
    assert await b.setlk(ino, sb, 1, 0, 0, F_RDLCK, 2, FLOCK)  # downgrade
    assert await a.setlk(ino, sa, 7, 0, 0, F_RDLCK, 1, FLOCK)
    # As on Linux: an upgrade that conflicts has dropped the shared lock it started from.
    seen = released_events(b)
    assert not await b.setlk(ino, sb, 1, 0, 0, F_WRLCK, 2, FLOCK)
    assert seen == [Change("l", ino)]
    assert await a.setlk(ino, sa, 7, 0, 0, F_WRLCK, 1, FLOCK)  # a is alone now
    for m in (a, b):
        await m.close()


@pytest.mark.usefixtures("meta_engine")
@async_test
async def test_concurrent_lock_requests_for_one_range_grant_exactly_one(tmp_path):
    a, b, ino = await two_sessions(tmp_path)
    results = await asyncio.gather(
        *(
            m.setlk(ino, m.session_id, owner, 10, 20, F_WRLCK, owner)
            for owner in range(1, 9)
            for m in (a, b)
        )
    )
    assert sum(results) == 1
    for m in (a, b):
        await m.close()


@pytest.mark.usefixtures("meta_engine")
@async_test
async def test_ending_a_session_releases_its_locks_and_says_so(tmp_path):
    a, b, ino = await two_sessions(tmp_path)
    sa, sb = a.session_id, b.session_id
    assert await b.setlk(ino, sb, 1, 0, OFFSET_MAX, F_WRLCK, 2)
    assert await b.setlk(ino, sb, 1, 0, 0, F_WRLCK, 2, FLOCK)
    seen = released_events(a)
    await a.close_session(sb)  # the leader cleaning up a dead session
    assert seen == [Change("l", ino)]
    assert await a.setlk(ino, sa, 1, 0, 0, F_WRLCK, 1, FLOCK)
    assert await a.setlk(ino, sa, 1, 5, 5, F_WRLCK, 1)
    await a.close_session(sa)  # unmount
    assert await b.getlk(ino, sb, 2, 0, OFFSET_MAX, F_WRLCK) is None
    for m in (a, b):
        await m.close()


@pytest.mark.usefixtures("meta_engine")
@async_test
async def test_freeing_an_inode_drops_its_lock_rows(tmp_path):
    a, b, ino = await two_sessions(tmp_path)
    assert await a.setlk(ino, a.session_id, 1, 0, 9, F_WRLCK, 1)
    await a.unlink(ROOT, b"f", lambda _inode: False)  # doomed: b might have it open
    assert await a.free_doomed(now_ns() + 1) == 1
    assert await sql_all(a, "SELECT * FROM locks") == []
    assert await sql_all(a, "SELECT * FROM locked_inodes") == []
    for m in (a, b):
        await m.close()


# ---- the VFS: waiting, waking, cancelling -------------------------------------------------


@contextlib.asynccontextmanager
async def two_mounts(tmp_path):
    """Two started VFS (sessions, watchers) on one volume, as two mounts of it are."""
    url = memory_url()
    first = await new_meta(tmp_path, storage=url)
    settings = await first.load_settings()
    second = await open_meta(meta_url(tmp_path))
    options = MountOptions(cache_dir=tmp_path / "cache", cache_size=0, cache_min_free=0.0)
    store = open_store(url)
    mounts = []
    try:
        for meta in (first, second):
            vfs = VFS(meta, BlockStore(store, settings.block_size, "none", None), settings, options)
            await vfs.start(f"/m{len(mounts)}")
            vfs.locks.poll = 30.0  # a wakeup within the test's bounds is a release heard
            mounts.append(vfs)
        yield mounts
    finally:
        for vfs in mounts:
            await vfs.stop()
        forget_memory_store(url)


async def file_on(vfs: VFS) -> int:
    return (await vfs.meta.create(ROOT, b"locked", FILE, 0, 0)).inode


async def pending(task: asyncio.Task, seconds: float = 0.3) -> bool:
    await asyncio.sleep(seconds)
    return not task.done()


@pytest.mark.usefixtures("meta_engine")
@async_test
async def test_a_waiting_lock_is_granted_when_another_mount_releases(tmp_path):
    async with two_mounts(tmp_path) as (one, two):
        ino = await file_on(one)
        await one.locks.setlk(ino, 1, 0, OFFSET_MAX, F_WRLCK, os.getpid())
        with pytest.raises(FSError) as e:
            await two.locks.setlk(ino, 1, 0, 0, F_RDLCK, 5)
        assert e.value.errno == errno.EAGAIN
        waiter = asyncio.ensure_future(two.locks.setlk(ino, 1, 0, 9, F_WRLCK, 5, wait=True))
        assert await pending(waiter)
        # GETLK from the other mount: the holder's pid, since it is on this host.
        assert await two.locks.getlk(ino, 1, 0, 9, F_WRLCK, 5) == (
            F_WRLCK,
            0,
            OFFSET_MAX,
            os.getpid(),
        )
        await one.locks.release_owner(ino, 1)  # close(2) of the holder
        await asyncio.wait_for(waiter, 5)
        assert await one.locks.getlk(ino, 3, 5, 5, F_RDLCK, 1) == (F_WRLCK, 0, 9, 5)


@pytest.mark.usefixtures("meta_engine")
@async_test
async def test_a_waiting_flock_is_granted_when_this_mount_releases(tmp_path):
    async with two_mounts(tmp_path) as (one, _two):
        ino = await file_on(one)
        await one.locks.setlk(ino, 1, 0, 0, F_WRLCK, 1, flock=True)
        waiter = asyncio.ensure_future(
            one.locks.setlk(ino, 2, 0, 0, F_WRLCK, 1, wait=True, flock=True)
        )
        assert await pending(waiter)
        await one.locks.setlk(ino, 1, 5, 5, F_WRLCK, 1)  # POSIX: no effect on flock
        assert await pending(waiter, 0.1)
        await one.locks.release_flock(ino, 1)
        await asyncio.wait_for(waiter, 5)


@pytest.mark.usefixtures("meta_engine")
@async_test
async def test_a_waiting_lock_can_be_cancelled_and_takes_nothing(tmp_path):
    async with two_mounts(tmp_path) as (one, two):
        ino = await file_on(one)
        await one.locks.setlk(ino, 1, 0, 99, F_WRLCK, 1)
        waiter = asyncio.ensure_future(two.locks.setlk(ino, 7, 50, 50, F_RDLCK, 5, wait=True))
        assert await pending(waiter)
        waiter.cancel()  # FUSE_INTERRUPT
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await one.locks.release_owner(ino, 1)
        await asyncio.sleep(0.5)  # the release is heard; nobody waits any more
        assert await one.locks.getlk(ino, 1, 0, OFFSET_MAX, F_WRLCK, 1) == (
            F_UNLCK,
            0,
            OFFSET_MAX,
            0,
        )


@async_test
async def test_a_cancel_while_an_attempt_commits_keeps_the_lock_it_took(tmp_path):
    async with two_mounts(tmp_path) as (one, _two):
        ino = await file_on(one)
        await one.locks.setlk(ino, 1, 0, 0, F_WRLCK, 1)
        real = one.meta.setlk
        started = asyncio.Event()

        async def slow_setlk(*args):
            started.set()
            await asyncio.sleep(0.2)
            return await real(*args)

        one.meta.setlk = slow_setlk
        waiter = asyncio.ensure_future(one.locks.setlk(ino, 2, 0, 0, F_WRLCK, 1, wait=True))
        await started.wait()
        waiter.cancel()  # during an attempt that fails: the cancellation goes through
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await one.locks.release_owner(ino, 1)
        started.clear()
        waiter = asyncio.ensure_future(one.locks.setlk(ino, 2, 0, 0, F_WRLCK, 1, wait=True))
        await started.wait()
        waiter.cancel()  # during an attempt that takes the lock: granted, not interrupted
        assert await waiter is None
        assert not waiter.cancelled()
        one.meta.setlk = real
        assert (await one.locks.getlk(ino, 3, 0, 0, F_RDLCK, 1))[0] == F_WRLCK


@pytest.mark.usefixtures("meta_engine")
@async_test
async def test_unmounting_releases_every_lock_of_the_mount(tmp_path):
    async with two_mounts(tmp_path) as (one, two):
        ino = await file_on(one)
        await two.locks.setlk(ino, 1, 0, OFFSET_MAX, F_WRLCK, 1)
        await two.locks.setlk(ino, 1, 0, 0, F_RDLCK, 1, flock=True)
        waiter = asyncio.ensure_future(one.locks.setlk(ino, 2, 0, 0, F_WRLCK, 1, wait=True))
        assert await pending(waiter)
        await two.session.stop()  # the session part of unmounting
        await asyncio.wait_for(waiter, 5)
        await one.locks.setlk(ino, 2, 0, 0, F_WRLCK, 1, flock=True)
        await two.meta.open_session("h", 1, "/m1", "t")  # so that stop() has one to end


@async_test
async def test_locks_reject_bad_types_and_ranges(tmp_path):
    async with two_mounts(tmp_path) as (one, _two):
        for args in ((0, 0, 3), (5, 4, F_RDLCK), (-1, 4, F_RDLCK), (0, OFFSET_MAX + 1, F_RDLCK)):
            start, end, type = args
            with pytest.raises(FSError) as e:
                await one.locks.setlk(1, 1, start, end, type, 1)
            assert e.value.errno == errno.EINVAL
        # An owner that never locked closes without a transaction.
        assert await one.locks.release_owner(1, 99) is None
