"""chunk/store.py: BlockStore loads (dedup, caches, verification), saves and deletes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from unit_helpers import async_test, forget_memory_store, keys, memory_url

from riverfs.chunk.block import BlockCorrupt, block_key, encode_block, slice_keys
from riverfs.chunk.cache import DiskCache
from riverfs.chunk.store import BlockStore
from riverfs.objects import ObjectStore, open_store

BS = 64 << 10


class CountingStore(ObjectStore):
    """The same objects as `inner`; counts gets, and can hold them until `gate` is set."""

    def __init__(self, inner: ObjectStore, gate: asyncio.Event | None = None) -> None:
        super().__init__(inner.url, inner._store)
        self.gets = 0
        self.gate = gate

    async def get_buffer(self, key: str) -> memoryview:
        self.gets += 1
        if self.gate is not None:
            await self.gate.wait()
        return await super().get_buffer(key)


class FailingGetStore(ObjectStore):
    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner.url, inner._store)

    async def get_buffer(self, key: str) -> memoryview:
        raise AssertionError(f"store get of {key} (should have been served from cache)")


@pytest.fixture
def store():
    url = memory_url()
    yield open_store(url)
    forget_memory_store(url)


@async_test
async def test_save_then_load_round_trips_and_names_the_object(store):
    bs = BlockStore(store, BS, "none", None)
    try:
        data = os.urandom(1000)
        await bs.save(7, 0, data)
        assert await keys(store) == [block_key(7, 0, 1000)]
        fresh = BlockStore(store, BS, "none", None)
        try:
            assert await fresh.load(7, 0, 1000) == data
        finally:
            await fresh.close()
    finally:
        await bs.close()


@async_test
async def test_concurrent_loads_of_one_block_fetch_it_once(store):
    data = os.urandom(5000)
    await store.put(block_key(3, 1, 5000), encode_block(data))
    gate = asyncio.Event()
    counting = CountingStore(store, gate)
    bs = BlockStore(counting, BS, "none", None)
    try:
        loads = [asyncio.ensure_future(bs.load(3, 1, 5000)) for _ in range(10)]
        await asyncio.sleep(0.02)
        gate.set()
        results = await asyncio.gather(*loads)
        assert all(r == data for r in results)
        assert counting.gets == 1
        # Later loads come from the memory cache.
        assert await bs.load(3, 1, 5000) == data
        assert counting.gets == 1
    finally:
        await bs.close()


@async_test
async def test_a_waiter_gets_the_block_when_the_first_loader_is_cancelled(store):
    data = os.urandom(100)
    await store.put(block_key(4, 0, 100), encode_block(data))
    gate = asyncio.Event()
    bs = BlockStore(CountingStore(store, gate), BS, "none", None)
    try:
        first = asyncio.ensure_future(bs.load(4, 0, 100))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(bs.load(4, 0, 100))
        await asyncio.sleep(0.01)
        first.cancel()  # e.g. a prefetch task cancelled at close, or an interrupted request
        await asyncio.sleep(0.01)
        gate.set()
        assert await asyncio.wait_for(second, 2) == data
    finally:
        await bs.close()


@async_test
async def test_block_in_disk_cache_is_served_without_touching_the_store(store, tmp_path):
    cache = DiskCache(tmp_path, 1 << 20, min_free=0.0)
    writer = BlockStore(store, BS, "zstd", cache)
    data = b"cached " * 1000
    try:
        await writer.save(11, 0, data)
    finally:
        await writer.close()
    reader = BlockStore(FailingGetStore(store), BS, "zstd", DiskCache(tmp_path, 1 << 20, 0.0))
    try:
        assert await reader.load(11, 0, len(data)) == data
    finally:
        await reader.close()


@async_test
async def test_corrupt_disk_cache_entry_is_dropped_and_refetched(store, tmp_path):
    cache = DiskCache(tmp_path, 1 << 20, min_free=0.0)
    writer = BlockStore(store, BS, "none", cache)
    data = os.urandom(2000)
    try:
        await writer.save(12, 0, data)
    finally:
        await writer.close()
    key = block_key(12, 0, 2000)
    path = cache.dir / key.replace("/", "~")
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    counting = CountingStore(store)
    reader = BlockStore(counting, BS, "none", DiskCache(tmp_path, 1 << 20, 0.0))
    try:
        assert await reader.load(12, 0, 2000) == data
        assert counting.gets == 1
    finally:
        await reader.close()
    assert path.read_bytes() == encode_block(data)  # re-cached in good shape


@async_test
async def test_corrupt_object_raises_block_corrupt_and_is_not_cached(store, tmp_path):
    key = block_key(5, 0, 3000)
    raw = bytearray(encode_block(os.urandom(3000)))
    raw[100] ^= 1
    await store.put(key, bytes(raw))
    cache = DiskCache(tmp_path, 1 << 20, min_free=0.0)
    bs = BlockStore(store, BS, "none", cache)
    try:
        with pytest.raises(BlockCorrupt, match=key):
            await bs.load(5, 0, 3000)
        with pytest.raises(BlockCorrupt, match=key):  # not remembered either
            await bs.load(5, 0, 3000)
        assert cache.get(key) is None
    finally:
        await bs.close()


@async_test
async def test_missing_object_raises_block_corrupt_naming_it(store):
    bs = BlockStore(store, BS, "none", None)
    try:
        with pytest.raises(BlockCorrupt, match=r"chunks/0/0/6_0_10"):
            await bs.load(6, 0, 10)
    finally:
        await bs.close()


@async_test
async def test_remove_slice_deletes_every_block_and_forgets_cached_copies(store, tmp_path):
    cache = DiskCache(tmp_path, 1 << 20, min_free=0.0)
    bs = BlockStore(store, 1000, "none", cache)
    try:
        size = 2500
        data = os.urandom(size)
        for i, start in enumerate(range(0, size, 1000)):
            await bs.save(21, i, data[start : start + 1000])
        await bs.save(22, 0, b"other")
        assert await bs.load(21, 2, 500) == data[2000:]
        assert len(await keys(store)) == 4
        await bs.remove_slice(21, size)
        assert await keys(store) == [block_key(22, 0, 5)]
        for key in slice_keys(21, size, 1000):
            assert cache.get(key) is None
        with pytest.raises(BlockCorrupt):
            await bs.load(21, 2, 500)  # neither the memory cache nor the disk cache has it
        await bs.remove_slice(21, size)  # deleting again is harmless
    finally:
        await bs.close()


@async_test
async def test_memory_cache_stays_within_its_limit(store):
    bs = BlockStore(store, 1000, "none", None, memory_limit=2500)
    try:
        for i in range(10):
            await bs.save(30 + i, 0, bytes([i]) * 1000)
        for i in range(10):
            assert await bs.load(30 + i, 0, 1000) == bytes([i]) * 1000
        assert bs._mem_used <= 2500
        assert sum(len(v) for v in bs._mem.values()) == bs._mem_used
    finally:
        await bs.close()


CONCURRENT_SCRIPT = """
import asyncio, os, sys
from riverfs.chunk.store import BlockStore
from riverfs.objects import open_store

async def main(compression):
    store = open_store("memory://concurrent")
    blocks = {i: os.urandom(1000) * (64 + i % 7) + bytes(i % 251) * 1000 for i in range(200)}
    writer = BlockStore(store, 1 << 20, compression, None)
    results = await asyncio.gather(
        *(writer.save(100 + i, 0, b) for i, b in blocks.items()), return_exceptions=True
    )
    await writer.close()
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    if not errors:
        reader = BlockStore(store, 1 << 20, compression, None)
        loaded = await asyncio.gather(
            *(reader.load(100 + i, 0, len(b)) for i, b in blocks.items()),
            return_exceptions=True,
        )
        await reader.close()
        errors = [repr(r) for r in loaded if isinstance(r, BaseException)]
        if not errors and loaded != list(blocks.values()):
            errors = ["wrong data"]
    print(f"{len(errors)} errors", errors[:2])
    return 1 if errors else 0

sys.exit(asyncio.run(main(sys.argv[1])))
"""


@pytest.mark.parametrize("compression", ["none", "zstd", "lz4"])
def test_concurrent_compressed_saves_and_loads_all_succeed(compression):
    """Blocks are encoded/decoded in a 4-thread pool: compression must be thread-safe.

    In a subprocess, because a zstd context shared between threads can segfault.
    """
    proc = subprocess.run(
        [sys.executable, "-c", CONCURRENT_SCRIPT, compression],
        capture_output=True,
        text=True,
        timeout=120,
    )
    crashed = f" (killed by signal {-proc.returncode})" if proc.returncode < 0 else ""
    assert proc.returncode == 0, f"exit {proc.returncode}{crashed}: {proc.stdout[-500:]}"


class RangeCountingStore(ObjectStore):
    """Counts whole-object gets and the bytes fetched by range gets."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner.url, inner._store)
        self.gets = 0
        self.range_bytes = 0

    async def get_buffer(self, key: str) -> memoryview:
        self.gets += 1
        return await super().get_buffer(key)

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        self.range_bytes += end - start
        return await super().get_range(key, start, end)


@async_test
async def test_a_small_random_read_fetches_only_the_pages_it_needs(store):
    big = 4 << 20
    data = os.urandom(big)
    await store.put(block_key(9, 0, big), encode_block(data))
    counting = RangeCountingStore(store)
    bs = BlockStore(counting, big, "none", None)
    try:
        assert await bs.load_range(9, 0, big, 1_000_000, 1_004_096) == data[1_000_000:1_004_096]
        assert counting.gets == 0
        assert counting.range_bytes < 200_000  # one or two 64 KiB pages and the page table
    finally:
        await bs.close()


@async_test
async def test_a_random_read_of_a_corrupt_page_raises_block_corrupt(store):
    data = os.urandom(1 << 20)
    raw = bytearray(encode_block(data))
    raw[-10] ^= 0xFF
    await store.put(block_key(10, 0, len(data)), bytes(raw))
    bs = BlockStore(store, 1 << 20, "none", None)
    try:
        with pytest.raises(BlockCorrupt, match="10_0_"):
            await bs.load_range(10, 0, len(data), len(data) - 100, len(data))
        assert await bs.load_range(10, 0, len(data), 0, 100) == data[:100]
    finally:
        await bs.close()


@async_test
async def test_a_random_read_of_a_missing_block_raises_block_corrupt(store):
    bs = BlockStore(store, 1 << 20, "none", None)
    try:
        with pytest.raises(BlockCorrupt, match="missing"):
            await bs.load_range(11, 0, 1 << 20, 5000, 6000)
    finally:
        await bs.close()
