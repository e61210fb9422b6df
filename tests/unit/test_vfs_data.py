"""vfs/{fs,writer,reader,deleter}.py: file data through the VFS, on a memory store, no FUSE."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit_helpers import ROOT, async_test, keys, run, vfs_env

from riverfs.chunk.block import CHUNK_SIZE, slice_keys
from riverfs.errors import FSError
from riverfs.meta import AttrChange
from riverfs.objects import ObjectStore, StoreError

KIB = 1 << 10
MIB = 1 << 20
BS = 64 * KIB


def model_read(data: bytearray, base: int, size: int, off: int, n: int) -> bytes:
    """Bytes [off, off+n) of a file of `size` bytes whose only data is `data` at `base`."""
    end = min(off + n, size)
    if end <= off:
        return b""
    out = bytearray(end - off)
    lo, hi = max(off, base), min(end, base + len(data))
    if lo < hi:
        out[lo - off : hi - off] = data[lo - base : hi - base]
    return bytes(out)


def ops_strategy(window: int):
    write = st.tuples(
        st.just("write"), st.integers(0, window), st.integers(1, 200 * KIB), st.integers(0, 255)
    )
    read = st.tuples(st.just("read"), st.integers(0, window), st.integers(1, 300 * KIB))
    flush = st.tuples(st.just("flush"))
    truncate = st.tuples(st.just("truncate"), st.integers(0, window))
    return st.lists(st.one_of(write, write, write, read, flush, truncate), min_size=1, max_size=12)


WINDOW = 600 * KIB


@pytest.mark.parametrize("base", [0, CHUNK_SIZE - 300 * KIB], ids=["start", "chunk-boundary"])
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(ops=ops_strategy(WINDOW))
def test_random_writes_reads_and_truncates_match_a_bytearray_model(base, ops):
    async def scenario(directory: Path):
        async with vfs_env(directory, block_size=BS) as env:
            vfs = env.vfs
            fh, inode = await env.create(b"f")
            data = bytearray()  # file bytes from `base` on
            size = 0
            for op in ops:
                if op[0] == "write":
                    _, rel, n, seed = op
                    chunk = random.Random(seed).randbytes(n)
                    off = base + rel
                    assert await vfs.write(fh, off, chunk) == n
                    if len(data) < rel + n:
                        data.extend(bytes(rel + n - len(data)))
                    data[rel : rel + n] = chunk
                    size = max(size, off + n)
                    assert (await vfs.getattr(inode)).size == size  # pending writes count
                elif op[0] == "read":
                    _, rel, n = op
                    off = max(0, base - 1000) + rel
                    got = await vfs.read(fh, off, n)
                    assert got == model_read(data, base, size, off, n)
                elif op[0] == "flush":
                    await vfs.flush(fh)
                else:
                    new = base + op[1]
                    attr = await vfs.setattr(inode, AttrChange(), new)
                    assert attr.size == new
                    size = new
                    del data[op[1] :]
            await vfs.flush(fh)
            assert (await vfs.getattr(inode)).size == size
            start = max(0, base - 4096)
            assert await vfs.read(fh, start, size - start + 10) == model_read(
                data, base, size, start, size - start + 10
            )
            if base:
                assert await vfs.read(fh, 0, 4096) == bytes(min(4096, size))
            assert vfs.budget.used == 0  # every buffered byte was given back
            await vfs.release(fh)

    with tempfile.TemporaryDirectory() as tmp:
        run(scenario(Path(tmp)))


@async_test
async def test_write_crossing_a_chunk_boundary_reads_back(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        fh, inode = await env.create(b"f")
        payload = os.urandom(3 * BS + 123)
        off = CHUNK_SIZE - BS - 7
        await env.vfs.write(fh, off, payload)
        await env.vfs.flush(fh)
        assert await env.meta.read_chunk(inode, 0) != []
        assert await env.meta.read_chunk(inode, 1) != []
        assert await env.vfs.read(fh, off, len(payload)) == payload
        assert await env.vfs.read(fh, CHUNK_SIZE - 10, 20) == payload[BS - 3 : BS + 17]
        assert await env.vfs.read(fh, 0, 100) == bytes(100)


@async_test
async def test_writes_are_visible_to_reads_before_any_flush(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, inode = await env.create(b"f")
        await vfs.write(fh, 0, b"hello")
        assert await vfs.read(fh, 0, 100) == b"hello"
        await vfs.write(fh, 3, b"LO world")
        other = await env.open(inode, os.O_RDONLY)
        assert await vfs.read(other, 0, 100) == b"helLO world"
        assert (await vfs.lookup(ROOT, b"f")).size == 11
        await vfs.release(other)
        await vfs.release(fh)


@async_test
async def test_open_with_o_trunc_empties_the_file(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, inode = await env.create(b"f")
        await vfs.write(fh, 0, os.urandom(200 * KIB))
        await vfs.release(fh)
        fh = await env.open(inode, os.O_WRONLY | os.O_TRUNC)
        assert (await vfs.getattr(inode)).size == 0
        await vfs.write(fh, 0, b"new")
        await vfs.release(fh)
        fh = await env.open(inode, os.O_RDONLY)
        assert await vfs.read(fh, 0, 1000) == b"new"
        await vfs.release(fh)


@async_test
async def test_open_with_o_trunc_discards_unflushed_writes_of_another_handle(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, inode = await env.create(b"f")
        await vfs.write(fh, 0, b"not yet flushed")
        trunc = await env.open(inode, os.O_WRONLY | os.O_TRUNC)
        assert (await vfs.getattr(inode)).size == 0
        assert await vfs.read(fh, 0, 100) == b""
        await vfs.release(trunc)
        await vfs.release(fh)


@async_test
async def test_truncate_through_setattr_flushes_pending_writes_first(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, inode = await env.create(b"f")
        await vfs.write(fh, 0, b"0123456789")
        assert (await vfs.setattr(inode, AttrChange(), 4)).size == 4
        assert await vfs.read(fh, 0, 100) == b"0123"
        assert (await vfs.setattr(inode, AttrChange(), 8)).size == 8
        assert await vfs.read(fh, 0, 100) == b"0123\0\0\0\0"
        await vfs.release(fh)


@async_test
async def test_unlink_while_open_keeps_data_readable_until_release(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, inode = await env.create(b"f")
        data = os.urandom(300 * KIB)
        await vfs.write(fh, 0, data)
        await vfs.flush(fh)
        reader = await env.open(inode, os.O_RDONLY)
        await vfs.unlink(ROOT, b"f")
        with pytest.raises(FSError):
            await vfs.lookup(ROOT, b"f")
        assert (await vfs.getattr(inode)).nlink == 0
        await env.vfs.deleter.drain()
        assert await vfs.read(reader, 0, len(data)) == data
        await vfs.write(fh, len(data), b"tail")  # still writable, too
        await vfs.release(fh)
        assert await vfs.read(reader, len(data) - 2, 100) == data[-2:] + b"tail"
        assert await keys(env.store, "chunks/") != []
        await vfs.release(reader)
        with pytest.raises(FSError) as e:
            await env.meta.getattr(inode)
        assert e.value.errno == errno.ENOENT
        assert await env.vfs.deleter.drain() >= 1
        assert await keys(env.store, "chunks/") == []
        usage = await env.meta.usage()
        assert (usage.used_bytes, usage.inodes) == (0, 1)


@async_test
async def test_rename_over_an_open_file_keeps_its_data_readable(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, old = await env.create(b"old")
        await vfs.write(fh, 0, b"old data")
        await vfs.flush(fh)
        fh2, _ = await env.create(b"new")
        await vfs.write(fh2, 0, b"new data")
        await vfs.release(fh2)
        await vfs.rename(ROOT, b"new", ROOT, b"old", 0)
        assert await vfs.read(fh, 0, 100) == b"old data"
        await vfs.release(fh)
        with pytest.raises(FSError):
            await env.meta.getattr(old)
        await vfs.deleter.drain()
        assert len(await keys(env.store, "chunks/")) == 1


@async_test
async def test_deleter_removes_the_objects_of_deleted_files(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, keep = await env.create(b"keep")
        await vfs.write(fh, 0, os.urandom(100 * KIB))
        await vfs.release(fh)
        kept_keys = await keys(env.store, "chunks/")
        fh, gone = await env.create(b"gone")
        await vfs.write(fh, 0, os.urandom(5 * BS + 1))
        await vfs.write(fh, 10 * BS, os.urandom(10))  # a second slice
        await vfs.release(fh)
        before = await keys(env.store, "chunks/")
        assert len(before) == len(kept_keys) + 7
        await vfs.unlink(ROOT, b"gone")
        assert await keys(env.store, "chunks/") == before  # deletes are deferred
        assert await vfs.deleter.drain() == 2
        assert await keys(env.store, "chunks/") == kept_keys
        assert await env.meta.pending_deletes(10) == []
        fh = await env.open(keep, os.O_RDONLY)
        assert len(await vfs.read(fh, 0, MIB)) == 100 * KIB
        await vfs.release(fh)


@async_test
async def test_deleter_removes_the_objects_of_chunks_cut_off_by_truncate(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, inode = await env.create(b"f")
        data = os.urandom(100 * KIB)
        await vfs.write(fh, CHUNK_SIZE - 50 * KIB, data)  # two slices, one per chunk
        await vfs.flush(fh)
        (first,) = await env.meta.read_chunk(inode, 0)
        (second,) = await env.meta.read_chunk(inode, 1)
        await vfs.setattr(inode, AttrChange(), CHUNK_SIZE)
        assert await vfs.deleter.drain() == 1
        remaining = await keys(env.store, "chunks/")
        assert remaining == sorted(slice_keys(first.id, first.size, BS))
        assert not set(remaining) & set(slice_keys(second.id, second.size, BS))
        assert await vfs.read(fh, CHUNK_SIZE - 50 * KIB, MIB) == data[: 50 * KIB]
        await vfs.release(fh)


@async_test
async def test_small_buffer_budget_still_completes_a_large_sequential_write(tmp_path):
    async with vfs_env(tmp_path, block_size=BS, buffer_size=4 * BS) as env:
        vfs = env.vfs
        fh, inode = await env.create(b"f")
        data = random.Random(1).randbytes(6 * MIB)
        step = 128 * KIB
        for off in range(0, 4 * MIB, step):
            await asyncio.wait_for(vfs.write(fh, off, data[off : off + step]), 10)
            assert vfs.budget.used <= vfs.budget.limit
        await asyncio.wait_for(vfs.write(fh, 4 * MIB, data[4 * MIB :]), 10)  # > the budget
        await vfs.flush(fh)
        assert vfs.budget.used == 0
        assert await vfs.read(fh, 0, len(data)) == data
        await vfs.release(fh)


@async_test
async def test_buffer_budget_full_of_unflushed_tails_does_not_deadlock_writers(tmp_path):
    """Back-pressure must make progress: tails smaller than a block sit in buffers until flush,
    so a budget filled by them must get them uploaded rather than wait forever."""
    async with vfs_env(tmp_path, block_size=BS, buffer_size=4 * BS) as env:
        vfs = env.vfs
        handles = [await env.create(b"f%d" % i) for i in range(10)]
        piece = BS // 2
        try:
            for fh, _ in handles:  # 10 files x 32 KiB of tail = 320 KiB > 256 KiB budget
                await asyncio.wait_for(vfs.write(fh, 0, b"x" * piece), 2)
        except TimeoutError:
            pytest.fail(
                f"write blocked forever: budget {vfs.budget.used}/{vfs.budget.limit} bytes "
                "held by unflushed tails nothing will upload"
            )
        for fh, _ in handles:
            assert await vfs.read(fh, 0, BS) == b"x" * piece
            await vfs.release(fh)


@async_test
async def test_reading_a_1_pib_sparse_file_costs_nothing(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, inode = await env.create(b"huge")
        start = time.perf_counter()
        await vfs.setattr(inode, AttrChange(), 1 << 50)
        await vfs.write(fh, (1 << 50) - 3, b"end")
        assert await vfs.read(fh, (1 << 50) - 10, 100) == bytes(7) + b"end"
        assert await vfs.read(fh, 1 << 49, 4096) == bytes(4096)
        await vfs.setattr(inode, AttrChange(), 0)
        await vfs.release(fh)
        await vfs.unlink(ROOT, b"huge")
        assert await vfs.deleter.drain() == 1
        assert time.perf_counter() - start < 2.0
        assert await keys(env.store, "chunks/") == []


@async_test
async def test_corrupt_object_reads_as_eio(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, inode = await env.create(b"f")
        await vfs.write(fh, 0, os.urandom(1000))
        await vfs.release(fh)
        (key,) = await keys(env.store, "chunks/")
        await env.store.put(key, b"garbage")
        fh = await env.open(inode, os.O_RDONLY)
        with pytest.raises(FSError) as e:
            await vfs.read(fh, 0, 1000)
        assert e.value.errno == errno.EIO
        await vfs.release(fh)


@pytest.mark.parametrize("compression", ["none", "lz4"])
@async_test
async def test_data_round_trips_through_disk_cache_and_compression(tmp_path, compression):
    async with vfs_env(tmp_path, block_size=BS, compression=compression, disk_cache=True) as env:
        vfs = env.vfs
        fh, inode = await env.create(b"f")
        data = (b"compressible " * 50_000)[: 400 * KIB] + os.urandom(100 * KIB)
        await vfs.write(fh, 0, data)
        await vfs.release(fh)
        fh = await env.open(inode, os.O_RDONLY)
        got = bytearray()
        for off in range(0, len(data), 128 * KIB):  # sequential: read-ahead kicks in
            got += await vfs.read(fh, off, 128 * KIB)
        assert bytes(got) == data
        await vfs.release(fh)
        stored = sum([info.size async for info in env.store.list("chunks/")])
        if compression == "lz4":
            assert stored < len(data)


class BrokenStore(ObjectStore):
    """The same objects, but every put and delete fails (an unreachable or full store)."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner.url, inner._store)

    async def put(self, key, data) -> None:
        raise StoreError(f"put {key}: store unreachable")

    async def delete_many(self, keys) -> None:
        raise StoreError("delete: store unreachable")


@async_test
async def test_failed_upload_makes_flush_eio_and_keeps_the_data_for_a_retry(tmp_path):
    """No staging here: the failed blocks stay with the writer, and the next flush (after
    more writes, which win) commits them all."""
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, inode = await env.create(b"f")
        good = env.blocks.store
        env.blocks.store = BrokenStore(good)
        first = os.urandom(100 * KIB)
        await vfs.write(fh, 0, first)
        with pytest.raises(FSError) as e:
            await vfs.flush(fh)
        assert e.value.errno == errno.EIO
        assert (await env.meta.getattr(inode)).size == 0
        assert vfs.budget.used == 0
        env.blocks.store = good
        await vfs.write(fh, 0, b"second try")
        await vfs.flush(fh)
        assert (await env.meta.getattr(inode)).size == len(first)
        assert await vfs.read(fh, 0, len(first)) == b"second try" + first[10:]
        await vfs.release(fh)


@async_test
async def test_a_last_close_that_cannot_save_logs_exactly_the_lost_bytes(tmp_path, caplog):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, inode = await env.create(b"f")
        good = env.blocks.store
        env.blocks.store = BrokenStore(good)
        await vfs.write(fh, 0, os.urandom(100 * KIB))
        await vfs.write(fh, 50 * KIB, os.urandom(60 * KIB))  # overlaps: one range
        await vfs.write(fh, 200 * KIB, os.urandom(10 * KIB))
        with pytest.raises(FSError):
            await vfs.flush(fh)  # close: EIO, the data is still buffered
        with pytest.raises(FSError):
            await vfs.release(fh)  # the last handle: tried once more, then dropped
        lost = [r.getMessage() for r in caplog.records if "data lost" in r.getMessage()]
        assert len(lost) == 1
        assert f"inode {inode}:" in lost[0]
        assert f"bytes [0, {110 * KIB}), [{200 * KIB}, {210 * KIB})" in lost[0], lost[0]
        assert vfs.budget.used == 0
        env.blocks.store = good
        assert (await env.meta.getattr(inode)).size == 0


@async_test
async def test_deleter_keeps_queued_slices_while_the_store_fails_and_retries(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, _ = await env.create(b"f")
        await vfs.write(fh, 0, os.urandom(2 * BS))
        await vfs.release(fh)
        before = await keys(env.store, "chunks/")
        await vfs.unlink(ROOT, b"f")
        good = env.blocks.store
        env.blocks.store = BrokenStore(good)
        assert await vfs.deleter.drain() == 0
        assert len(await env.meta.pending_deletes(10)) == 1
        assert await keys(env.store, "chunks/") == before
        env.blocks.store = good
        assert await vfs.deleter.drain() == 1
        assert await keys(env.store, "chunks/") == []
        assert await env.meta.pending_deletes(10) == []


@async_test
async def test_a_read_through_a_stale_view_of_deleted_slices_reloads_the_view(tmp_path):
    """Another mount compacted the chunk and deleted the old slices, and this mount did not
    hear of it: the missing object makes the read reload the chunk's records once."""
    from riverfs.meta.slices import Slice, encode_slices

    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, inode = await env.create(b"f")
        data = os.urandom(3 * BS + 5)
        await vfs.write(fh, 0, data[: BS + 1])
        await vfs.flush(fh)
        await vfs.write(fh, BS + 1, data[BS + 1 :])
        await vfs.flush(fh)
        assert await vfs.read(fh, 0, len(data)) == data  # the view is cached now
        old = await env.meta.read_chunk(inode, 0)
        sid = await env.meta.next_slice_id()
        for i in range(0, len(data), BS):
            await vfs.blocks.save(sid, i // BS, data[i : i + BS])
        row = encode_slices([Slice(0, sid, len(data), 0, len(data))])
        await env.meta.db.txn(
            lambda tx: tx.run("UPDATE chunks SET slices = ? WHERE inode = ?", row, inode)
        )
        for s in old:
            await vfs.blocks.remove_slice(s.id, s.size)
        assert await vfs.read(fh, 0, len(data)) == data
        await vfs.blocks.remove_slice(sid, len(data))  # now really gone: EIO, not wrong bytes
        with pytest.raises(FSError) as e:
            await vfs.read(fh, 0, len(data))
        assert e.value.errno == errno.EIO
        await vfs.release(fh)
