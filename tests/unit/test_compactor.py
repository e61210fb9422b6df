"""Compaction without FUSE: the plan (vfs/compact.py) against a byte model, the swap
(meta/inventory.py replace_chunk) on both engines, the deleter's due times, and the mount's
background compactor (vfs/compactor.py) beside a writer."""

from __future__ import annotations

import asyncio
import os
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit_helpers import FILE, ROOT, async_test, new_meta, sql_all, sql_one, vfs_env

from riverfs.meta import inventory
from riverfs.meta.engine import CHUNK_SIZE, now_ns
from riverfs.meta.ranges import pieces
from riverfs.meta.slices import ALLOCATED, Slice, visible_segments
from riverfs.vfs import compact
from riverfs.vfs.compactor import CompactionSettings, Compactor, Pace
from riverfs.vfs.deleter import Deleter

KIB = 1 << 10
MIB = 1 << 20
BS = 64 * KIB
NEW = 10_000  # the new slice's id in plan tests


# ---- the plan ----------------------------------------------------------------------------------


def what_shows(records: list[Slice], pos: int, new: dict[int, Slice] | None = None):
    """What position `pos` of a chunk shows: ("data", slice, offset), ("allocated",) or
    ("hole",). `new`: how to read the new slice (its offset -> the copied piece there)."""
    for seg in visible_segments(records, CHUNK_SIZE):
        if seg.pos <= pos < seg.end:
            if not seg.id:
                return ("allocated",) if seg.size == ALLOCATED else ("hole",)
            off = seg.offset + pos - seg.pos
            if new is not None and seg.id == NEW:
                for start, p in new.items():
                    if start <= off < start + p.length:
                        return ("data", p.id, p.offset + off - start)
                raise AssertionError(f"offset {off} of the new slice holds nothing")
            return ("data", seg.id, off)
    raise AssertionError("visible_segments covers the chunk")


@st.composite
def chunks(draw):
    sizes = {i: draw(st.integers(1, 3 * MIB)) for i in range(1, draw(st.integers(1, 24)) + 1)}
    records = []
    for _ in range(draw(st.integers(1, 40))):
        sid = draw(st.sampled_from([0, *sizes]))
        pos = draw(st.integers(0, 4 * MIB))
        if sid == 0:
            size = draw(st.sampled_from([0, ALLOCATED]))
            records.append(Slice(pos, 0, size, 0, draw(st.integers(1, 2 * MIB))))
            continue
        offset = draw(st.integers(0, sizes[sid] - 1))
        length = draw(st.integers(1, sizes[sid] - offset))
        records.append(Slice(pos, sid, sizes[sid], offset, length))
    return records, draw(st.integers(0, 6 * MIB))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks(), st.sampled_from([BS, 4 * MIB]), st.integers(2, 20))
def test_plans_show_the_same_bytes_keep_holes_and_end(chunk, bs, min_slices):
    records, limit = chunk
    for _ in range(len(records) + 2):  # each rewrite merges slices or frees space: it ends
        p = compact.plan(records, limit, bs, min_slices=min_slices)
        if p is None:
            return
        records = same_bytes(records, limit, bs, p)
        assert small_slices(records, limit, bs) < max(min_slices, 2)  # not crowded any more
    raise AssertionError("compaction went on without new writes")


def small_slices(records: list[Slice], limit: int, bs: int) -> int:
    """Slices of a chunk showing less than a quarter block (what crowds it)."""
    shown: dict[int, int] = {}
    for p in pieces(records, limit):
        if p.id:
            shown[p.id] = shown.get(p.id, 0) + p.length
    return sum(1 for n in shown.values() if n < bs // 4)


def same_bytes(records: list[Slice], limit: int, bs: int, p: compact.Plan) -> list[Slice]:
    """The records after `p`, checked to show what `records` show; renamed so that the new
    slice's id is free for the next round."""
    new = p.records(NEW)
    at, copied = 0, {}
    for piece in p.copy:
        copied[at] = piece
        at += piece.length
    assert at == p.size
    marks = {0, min(limit, CHUNK_SIZE) - 1}
    for r in (*records, *new):
        marks.update({r.pos, r.pos - 1, r.end, r.end - 1})
    for pos in sorted(m for m in marks if 0 <= m < min(limit, CHUNK_SIZE)):
        assert what_shows(new, pos, copied) == what_shows(records, pos), pos
    assert all(r.end <= max(limit, 0) for r in new)  # nothing past the end of the file
    assert p.stored_after < p.stored_before or p.merges >= 2
    fresh = max(r.id for r in records) + 1  # the new slice under a new name; its bytes are
    return [  # its own from now on (what_shows compares ids and offsets, not contents)
        Slice(r.pos, fresh, r.size, r.offset, r.length) if r.id == NEW else r for r in new
    ]


def test_with_the_default_threshold_a_compacted_chunk_is_left_alone():
    rng = random.Random(5)
    records = [Slice(0, 1, 8 * MIB, 0, 8 * MIB)]
    for n in range(2, 2000):  # 4 KiB patches, compacted whenever the plan says so
        records.append(Slice(rng.randrange(0, 8 * MIB - 4 * KIB), n * 10, 4 * KIB, 0, 4 * KIB))
        p = compact.plan(records, 8 * MIB, 4 * MIB)
        if p is not None:
            records = p.records(n * 10 + 1)
            assert compact.plan(records, 8 * MIB, 4 * MIB) is None


def test_a_chunk_compaction_fell_behind_on_is_compacted_in_one_rewrite():
    # Patches of spread sizes, none compacted yet (another mount wrote them, or this one's
    # compactor lagged behind its commits): the sizes a failed two-mount run left. Merging
    # only the two smallest (397 + 1532 bytes; the next, 5374, is over twice that) left the
    # chunk crowded, and nothing looked at it again.
    sizes = [397, 1532, 5374, 7747, 7978, 8492, 11263, 12797, 12918, 13737, 14327]
    base = Slice(0, 1, 3 * MIB, 0, 3 * MIB)
    patches = [Slice(i * 256 * KIB, 100 + i, n, 0, n) for i, n in enumerate(sizes)]
    p = compact.plan([base, *patches], 3 * MIB, 4 * MIB, min_slices=4)
    assert p is not None and p.merges >= len(sizes) - 2
    records = p.records(NEW)
    assert small_slices(records, 3 * MIB, 4 * MIB) < 4
    assert compact.plan(records, 3 * MIB, 4 * MIB, min_slices=4) is None
    # Keeping up (as many small slices as the threshold): the two smallest, as before.
    p = compact.plan([base, *patches[:4]], 3 * MIB, 4 * MIB, min_slices=4)
    assert p is not None and p.merges == 2 and p.size == 397 + 1532


def test_a_large_file_with_a_few_patches_keeps_its_slice_and_copies_only_the_patches():
    base = Slice(0, 1, CHUNK_SIZE, 0, CHUNK_SIZE)
    patches = [Slice(MIB + i * 3 * MIB, 100 + i, 4 * KIB, 0, 4 * KIB) for i in range(20)]
    p = compact.plan([base, *patches], CHUNK_SIZE, 4 * MIB)
    assert p is not None and p.merges == 20
    assert p.size == 20 * 4 * KIB  # 80 KiB copied, not 64 MiB
    assert {k.id for k in p.keep} == {1}
    new = p.records(NEW)
    assert {r.id for r in new} == {1, NEW} and len([r for r in new if r.id == NEW]) == 20


def test_a_chunk_written_sequentially_in_whole_slices_is_left_alone():
    records = [Slice(i * 4 * MIB, i + 1, 4 * MIB, 0, 4 * MIB) for i in range(16)]
    assert compact.plan(records, CHUNK_SIZE, 4 * MIB) is None


def test_holes_and_allocated_space_keep_their_kind_and_cost_no_bytes():
    records = [
        Slice(0, 1, 10 * KIB, 0, 10 * KIB),
        Slice(MIB, 2, 10 * KIB, 0, 10 * KIB),
        Slice(2 * MIB, 0, ALLOCATED, 0, 64 * KIB),
        Slice(5, 3, 100, 0, 100),
    ]
    p = compact.plan(records, 3 * MIB, BS, min_slices=3)
    assert p is not None and p.size == 20 * KIB  # the hole between is not stored as zeros
    new = p.records(NEW)
    assert [(r.pos, r.id, r.length) for r in new] == [
        (0, NEW, 10 * KIB),
        (MIB, NEW, 10 * KIB),
        (2 * MIB, 0, 64 * KIB),
    ]
    assert new[2].size == ALLOCATED


def test_a_chunk_storing_much_more_than_it_shows_is_compacted_even_with_few_slices():
    records = [Slice(0, 1, 4 * MIB, 0, 4 * MIB), Slice(0, 2, 4 * MIB, 0, 4 * MIB)]
    # Two slices, the first hidden: 8 MiB stored for 4 MiB shown.
    p = compact.plan(records, CHUNK_SIZE, 4 * MIB, min_slices=16, max_overlap=1.5)
    assert p is not None and p.size == 0 and p.records(NEW) == [records[1]]
    assert compact.plan(records, CHUNK_SIZE, 4 * MIB, min_slices=16, max_overlap=2.0) is None


# ---- the swap, on both engines ------------------------------------------------------------------


async def file_with(meta, records: list[Slice], length: int):
    f = await meta.create(ROOT, b"f", FILE, 0, 0)
    await meta.write_slices(f.inode, [(0, r) for r in records], length, 1)
    return f.inode


async def due_of(meta, sid: int) -> int | None:
    row = await sql_one(meta, "SELECT queued FROM pending_deletes WHERE slice = ?", sid)
    return None if row is None else int(row[0])


@pytest.mark.usefixtures("meta_engine")
@async_test
async def test_replace_keeps_records_appended_meanwhile_and_delays_the_old_slices(tmp_path):
    meta = await new_meta(tmp_path)
    a, b, c, n = [await meta.next_slice_id() for _ in range(4)]
    old = [Slice(0, a, 100, 0, 100), Slice(10, b, 20, 0, 20)]
    inode = await file_with(meta, old, 100)
    assert (await meta.getattr(inode)).stored == 100  # min(120, 100): overwrites counted
    await meta.write_slices(inode, [(0, Slice(50, c, 10, 0, 10))], 100, 2)  # a writer, meanwhile
    new = [Slice(0, n, 100, 0, 100)]
    await inventory.queue_unless_taken(meta, n, 100, 3600)
    t = now_ns()
    assert await inventory.replace_chunk(meta, inode, 0, old, new, block_size=BS, fresh=n, delay=30)
    assert await meta.read_chunk(inode, 0) == [*new, Slice(50, c, 10, 0, 10)]
    assert await due_of(meta, n) is None  # taken
    for sid in (a, b):
        assert await due_of(meta, sid) >= t + 30 * 10**9  # not before 30 s from now
    assert (await meta.getattr(inode)).stored == 100
    # The same transaction again (its COMMIT's answer lost, say): it knows it committed.
    assert await inventory.replace_chunk(meta, inode, 0, old, new, block_size=BS, fresh=n)


@pytest.mark.usefixtures("meta_engine")
@async_test
async def test_replace_refuses_a_chunk_rewritten_meanwhile_and_queues_its_new_slice(tmp_path):
    meta = await new_meta(tmp_path)
    a, b, n = [await meta.next_slice_id() for _ in range(3)]
    old = [Slice(0, a, 100, 0, 100), Slice(10, b, 20, 0, 20)]
    inode = await file_with(meta, old, 100)
    await meta.fallocate(inode, 0, 5, 0x02 | 0x01, block_size=BS)  # punch: the row is rewritten
    rewritten = await meta.read_chunk(inode, 0)
    await inventory.queue_unless_taken(meta, n, 100, 3600)
    t = now_ns()
    new = [Slice(0, n, 100, 0, 100)]
    assert not await inventory.replace_chunk(meta, inode, 0, old, new, block_size=BS, fresh=n)
    assert await meta.read_chunk(inode, 0) == rewritten
    assert await due_of(meta, n) <= now_ns() and await due_of(meta, n) >= t - 10**9
    # A file truncated below the chunk: no row, no swap.
    assert await meta.truncate(inode, 0)
    assert not await inventory.replace_chunk(meta, inode, 0, rewritten, new, block_size=BS)


@pytest.mark.usefixtures("meta_engine")
@async_test
async def test_replace_lets_a_shared_slice_go_by_its_count_and_recounts_stored(tmp_path):
    meta = await new_meta(tmp_path)
    a, b, n = [await meta.next_slice_id() for _ in range(3)]
    old = [Slice(0, a, 1000, 0, 1000), Slice(0, b, 400, 0, 400), Slice(3000, b, 400, 0, 400)]
    inode = await file_with(meta, old, 3400)
    assert (await meta.getattr(inode)).stored == 1800
    g = await meta.create(ROOT, b"g", FILE, 0, 0)
    await meta.copy_range(inode, 0, g.inode, 0, 3400, block_size=BS)  # g names a and b too
    assert {r[0] for r in await sql_all(meta, "SELECT slice FROM slice_refs")} == {a, b}
    new = [Slice(0, n, 1400, 0, 1000), Slice(3000, n, 1400, 1000, 400)]
    await inventory.queue_unless_taken(meta, n, 1400, 3600)
    assert await inventory.replace_chunk(meta, inode, 0, old, new, block_size=BS, fresh=n)
    assert await sql_all(meta, "SELECT slice FROM slice_refs") == []  # one row each now
    assert await due_of(meta, a) is None and await due_of(meta, b) is None  # g keeps them
    assert (await meta.getattr(inode)).stored == 1400  # what the file shows
    usage = await meta.usage()
    nodes = await sql_one(meta, "SELECT SUM(stored) FROM nodes")
    assert usage.used_bytes == int(nodes[0])


@pytest.mark.usefixtures("meta_engine")
@async_test
async def test_the_deleter_leaves_entries_that_are_not_due_yet(tmp_path):
    meta = await new_meta(tmp_path)

    class Blocks:
        removed: list[int] = []

        async def remove_slice(self, sid, size):
            self.removed.append(sid)

    blocks = Blocks()
    await inventory.queue_unless_taken(meta, 7, 10, 3600)
    await inventory.queue_unless_taken(meta, 8, 10, 0)
    deleter = Deleter(meta, blocks)
    assert await deleter.drain() == 1 and blocks.removed == [8]
    assert await deleter.drain(everything=True) == 1 and blocks.removed == [8, 7]


# ---- the mount's compactor -----------------------------------------------------------------------


@async_test
async def test_pace_spreads_bytes_over_time():
    pace = Pace(10 * MIB)
    start = time.monotonic()
    for _ in range(4):
        await pace.take(MIB)
    assert 0.35 < time.monotonic() - start < 1.0
    await Pace(0).take(1 << 40)  # unlimited: no wait


@async_test
async def test_background_compaction_beside_a_writer_reads_exactly_and_never_waits(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, inode = await env.create(b"f")
        model = bytearray(os.urandom(MIB))
        await vfs.write(fh, 0, bytes(model))
        await vfs.fsync(fh)
        assert (inode, 0) in vfs.compactor._ready  # the flush named the chunk
        invalidated = []
        compactor = Compactor(  # slow: 1 MiB/s, while the writer goes on
            env.meta,
            env.blocks,
            CompactionSettings(min_slices=4, rate=MIB, delay=0.0),
            lambda i: (invalidated.append(i), vfs.reader.invalidate(i)),
        )
        compactor.start()
        rng = os.urandom
        slowest = 0.0
        try:
            for round_ in range(30):
                for _ in range(5):
                    at = int.from_bytes(rng(3), "little") % (MIB - 8 * KIB)
                    data = rng(1 + rng(1)[0] * 20)
                    await vfs.write(fh, at, data)
                    model[at : at + len(data)] = data
                    t = time.monotonic()
                    await vfs.fsync(fh)
                    slowest = max(slowest, time.monotonic() - t)
                    compactor.touched(inode, [0])
                assert await vfs.read(fh, 0, 2 * MIB) == model, round_
                await asyncio.sleep(0.02)
            deadline = time.monotonic() + 10
            while compact.plan(await env.meta.read_chunk(inode, 0), MIB, BS, min_slices=4):
                assert time.monotonic() < deadline, "compaction did not catch up"
                compactor.touched(inode, [0])
                await asyncio.sleep(0.05)
        finally:
            await compactor.stop()
        assert compactor.compacted >= 1 and invalidated and set(invalidated) == {inode}
        assert slowest < 0.5  # commits never waited for a rewrite (each takes ~1 s here)
        assert await vfs.read(fh, 0, 2 * MIB) == model
        await vfs.deleter.drain()
        attr = await env.meta.getattr(inode)
        records = await env.meta.read_chunk(inode, 0)
        assert attr.stored == sum(p.length for p in pieces(records, attr.size))
        assert await sql_all(env.meta, "SELECT * FROM leases WHERE name LIKE 'compact:%'") == []


@async_test
async def test_records_committed_during_a_rewrite_are_compacted_without_another_commit(tmp_path):
    # Another mount's commit lands while this mount rewrites the chunk: its compactor is
    # refused the lease and drops the chunk; the swap keeps those records after the new
    # ones. This compactor looks at the chunk again after its swap and compacts them too.
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs  # its own compactor is not started: nothing else compacts
        fh, inode = await env.create(b"f")
        model = bytearray(os.urandom(MIB))
        await vfs.write(fh, 0, bytes(model))
        await vfs.fsync(fh)

        async def patches(first: int) -> None:
            for i in range(first, first + 6):  # small, apart: each one a slice that shows
                data = os.urandom(1000)
                await vfs.write(fh, i * 64 * KIB, data)
                await vfs.fsync(fh)
                model[i * 64 * KIB : i * 64 * KIB + len(data)] = data

        await patches(0)
        compactor = Compactor(env.meta, env.blocks, CompactionSettings(min_slices=4, delay=0.0))
        stored = asyncio.Event()  # the rewrite waits before storing its block until set

        class Gate:
            async def take(self, n: int) -> None:
                await stored.wait()

        compactor._pace = Gate()
        compactor.touched(inode, [0])
        compactor.start()
        try:
            deadline = time.monotonic() + 10
            while not await sql_all(env.meta, "SELECT 1 FROM leases WHERE name LIKE 'compact:%'"):
                assert time.monotonic() < deadline, "the rewrite did not start"
                await asyncio.sleep(0.01)
            await patches(8)  # the other mount's commits: nobody tells this compactor
            assert compactor.compacted == 0  # still rewriting
            stored.set()
            deadline = time.monotonic() + 10
            while compact.plan(await env.meta.read_chunk(inode, 0), MIB, BS, min_slices=4):
                assert time.monotonic() < deadline, (compactor.compacted, "left crowded")
                await asyncio.sleep(0.05)
        finally:
            await compactor.stop()
        assert compactor.compacted == 2
        assert await vfs.read(fh, 0, 2 * MIB) == model
