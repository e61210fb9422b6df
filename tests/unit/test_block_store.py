"""chunk/store.py: BlockStore loads (dedup, caches, verification), saves and deletes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from unit_helpers import async_test, forget_memory_store, keys, memory_url

from riverfs.chunk import cache as cache_module
from riverfs.chunk.block import (
    PAGE_SIZE,
    BlockCorrupt,
    block_key,
    encode_block,
    head_size,
    read_layout,
    slice_keys,
)
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


# ---- reading by page (format version 2) -----------------------------------------------------

PAGE = PAGE_SIZE
CIPHER = AESGCM(bytes(range(32)))
VOLUMES = [("none", None), ("zstd", None), ("lz4", None), ("none", CIPHER), ("zstd", CIPHER)]
VOLUME_IDS = ["plain", "zstd", "lz4", "aes", "zstd+aes"]


def mixed_block(pages: int) -> bytes:
    """Pages that alternate: compressible, incompressible."""
    text = (b"riverfs pages " * 5000)[:PAGE]
    return b"".join(text if i % 2 == 0 else os.urandom(PAGE) for i in range(pages))


class PageCountingStore(RangeCountingStore):
    """Also fails whole-object gets when `whole` is False."""

    def __init__(self, inner: ObjectStore, whole: bool = True) -> None:
        super().__init__(inner)
        self.whole = whole
        self.ranges: list[tuple[int, int]] = []

    async def get_buffer(self, key: str) -> memoryview:
        assert self.whole, f"whole get of {key}"
        return await super().get_buffer(key)

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        self.ranges.append((start, end))
        return await super().get_range(key, start, end)


async def put_block(store, slice_id, data, compression, cipher, version=2) -> tuple[str, bytes]:
    key = block_key(slice_id, 0, len(data))
    raw = bytes(encode_block(data, compression, cipher, key, version=version))
    await store.put(key, raw)
    return key, raw


@pytest.mark.parametrize(("compression", "cipher"), VOLUMES, ids=VOLUME_IDS)
@async_test
async def test_a_random_read_of_any_v2_block_reads_and_decodes_only_its_pages(
    store, compression, cipher
):
    data = mixed_block(64)  # 4 MiB
    key, raw = await put_block(store, 40, data, compression, cipher)
    counting = PageCountingStore(store, whole=False)
    bs = BlockStore(counting, len(data), compression, None, cipher=cipher)
    try:
        for start in (1_000_000, 5 * PAGE - 100, len(data) - 4096):
            got = await bs.load_range(40, 0, len(data), start, start + 4096)
            assert got == data[start : start + 4096]
        assert counting.range_bytes < 3 * head_size(len(data)) + 5 * (PAGE + 100)
        fetched = counting.range_bytes
        # Pages read once are kept decoded: reading them again costs no I/O.
        assert (
            await bs.load_range(40, 0, len(data), 1_000_100, 1_000_200) == data[1_000_100:1_000_200]
        )
        assert counting.range_bytes == fetched
        assert bs._pages_used <= bs._pages_limit
    finally:
        await bs.close()


@pytest.mark.parametrize(("compression", "cipher"), VOLUMES, ids=VOLUME_IDS)
@async_test
async def test_a_flipped_byte_in_page_k_fails_exactly_the_reads_touching_page_k(
    store, compression, cipher
):
    k = 3
    data = mixed_block(8)
    key = block_key(41, 0, len(data))
    raw = bytearray(encode_block(data, compression, cipher, key))
    lo, hi = read_layout(raw, key).span(range(k, k + 1))
    raw[lo + (hi - lo) // 3] ^= 0x04
    await store.put(key, bytes(raw))
    bs = BlockStore(store, len(data), compression, None, cipher=cipher)
    try:
        for start, end in [(0, 100), (k * PAGE - 4096, k * PAGE), ((k + 1) * PAGE, len(data))]:
            assert await bs.load_range(41, 0, len(data), start, end) == data[start:end]
            assert await bs.load_span(41, 0, len(data), start, end) == data[start:end]
        for start, end in [
            (k * PAGE, k * PAGE + 1),
            (k * PAGE - 10, k * PAGE + 10),
            (0, len(data)),
        ]:
            with pytest.raises(BlockCorrupt, match=f"{key}.*page {k}") as exc:
                await bs.load_range(41, 0, len(data), start, end)
            assert exc.value.pages == (k,)
            with pytest.raises(BlockCorrupt, match=f"page {k}"):
                await bs.load_span(41, 0, len(data), start, end)
        # A whole-block load fails, and says which page is bad.
        with pytest.raises(BlockCorrupt, match=key) as exc:
            await bs.load(41, 0, len(data))
        assert exc.value.pages == (k,)
    finally:
        await bs.close()


@async_test
async def test_load_span_of_a_damaged_block_does_not_fetch_it_whole_again(store):
    data = mixed_block(4)
    key = block_key(42, 0, len(data))
    raw = bytearray(encode_block(data, "zstd", CIPHER, key))
    raw[-5] ^= 1  # the last page
    await store.put(key, bytes(raw))
    counting = PageCountingStore(store)
    bs = BlockStore(counting, len(data), "zstd", None, cipher=CIPHER)
    try:
        for start in range(0, 3 * PAGE, 32 << 10):  # a sequential reader, 32 KiB at a time
            got = await bs.load_span(42, 0, len(data), start, start + (32 << 10))
            assert got == data[start : start + (32 << 10)]
        assert counting.gets == 1
        with pytest.raises(BlockCorrupt, match="page 3"):
            await bs.load_span(42, 0, len(data), 3 * PAGE, 3 * PAGE + 10)
    finally:
        await bs.close()


@pytest.mark.parametrize(("compression", "cipher"), VOLUMES, ids=VOLUME_IDS)
@async_test
async def test_a_random_read_of_a_cached_block_reads_only_the_needed_bytes_of_its_file(
    store, tmp_path, monkeypatch, compression, cipher
):
    data = mixed_block(64)
    cache = DiskCache(tmp_path, 64 << 20, min_free=0.0)
    writer = BlockStore(store, len(data), compression, cache, cipher=cipher)
    try:
        await writer.save(43, 0, data)
    finally:
        await writer.close()
    read = []
    real_pread = os.pread

    def counting_pread(fd, n, offset):
        read.append(n)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(cache_module.os, "pread", counting_pread)
    monkeypatch.setattr(DiskCache, "get", lambda self, key: pytest.fail("whole cache read"))
    counting = PageCountingStore(store, whole=False)
    bs = BlockStore(
        counting, len(data), compression, DiskCache(tmp_path, 64 << 20, 0.0), cipher=cipher
    )
    try:
        assert (
            await bs.load_range(43, 0, len(data), 2_000_000, 2_004_096) == data[2_000_000:2_004_096]
        )
        assert counting.ranges == []  # the store is not asked
        assert len(read) == 2 and read[0] == head_size(len(data)) and read[1] <= PAGE + 100
        # The layout is remembered: the next page costs one read of its bytes alone.
        assert await bs.load_range(43, 0, len(data), 10, 20) == data[10:20]
        assert len(read) == 3 and read[2] <= PAGE + 100
    finally:
        await bs.close()


@async_test
async def test_a_corrupt_page_in_the_disk_cache_is_dropped_and_read_from_the_store(store, tmp_path):
    data = mixed_block(4)
    cache = DiskCache(tmp_path, 64 << 20, min_free=0.0)
    writer = BlockStore(store, len(data), "zstd", cache, cipher=CIPHER)
    try:
        await writer.save(44, 0, data)
    finally:
        await writer.close()
    key = block_key(44, 0, len(data))
    path = next(cache.dir.iterdir())
    raw = bytearray(path.read_bytes())
    lo, hi = read_layout(raw, key).span(range(2, 3))
    raw[lo + 50] ^= 0xFF
    path.write_bytes(bytes(raw))
    counting = PageCountingStore(store, whole=False)
    reader = BlockStore(
        counting, len(data), "zstd", DiskCache(tmp_path, 64 << 20, 0.0), cipher=CIPHER
    )
    try:
        got = await reader.load_range(44, 0, len(data), 2 * PAGE + 7, 2 * PAGE + 5000)
        assert got == data[2 * PAGE + 7 : 2 * PAGE + 5000]
        assert counting.ranges  # from the store
        assert not path.exists()  # the bad copy is gone
    finally:
        await reader.close()


@async_test
async def test_the_page_cache_stays_within_its_limit(store):
    data = mixed_block(16)
    await put_block(store, 45, data, "zstd", CIPHER)
    bs = BlockStore(store, len(data), "zstd", None, cipher=CIPHER, page_memory_limit=3 * PAGE)
    try:
        for i in range(16):
            start = i * PAGE + 100
            assert (
                await bs.load_range(45, 0, len(data), start, start + 10) == data[start : start + 10]
            )
            assert bs._pages_used <= 3 * PAGE
            assert sum(len(p) for p in bs._pages.values()) == bs._pages_used
        assert len(bs._pages) == 3
        assert bs._mem_used == 0  # random reads do not fill the block cache
    finally:
        await bs.close()


@async_test
async def test_a_block_decoded_in_memory_serves_random_reads_without_io(store):
    data = mixed_block(4)
    await put_block(store, 46, data, "zstd", CIPHER)
    counting = PageCountingStore(store)
    bs = BlockStore(counting, len(data), "zstd", None, cipher=CIPHER)
    try:
        await bs.load(46, 0, len(data))
        assert await bs.load_range(46, 0, len(data), 70_000, 70_010) == data[70_000:70_010]
        assert counting.ranges == [] and counting.gets == 1
    finally:
        await bs.close()


@pytest.mark.parametrize(("compression", "cipher"), VOLUMES, ids=VOLUME_IDS)
@async_test
async def test_v1_blocks_still_load_whole_and_by_range(store, compression, cipher):
    data = mixed_block(4) + b"tail"
    await put_block(store, 47, data, compression, cipher, version=1)
    bs = BlockStore(store, len(data), compression, None, cipher=cipher)
    try:
        assert (
            await bs.load_range(47, 0, len(data), PAGE + 3, PAGE + 3000)
            == data[PAGE + 3 : PAGE + 3000]
        )
        assert await bs.load_range(47, 0, len(data), len(data) - 4, len(data)) == b"tail"
        assert await bs.load(47, 0, len(data)) == data
    finally:
        await bs.close()


@pytest.mark.parametrize(("compression", "cipher"), VOLUMES, ids=VOLUME_IDS)
@async_test
async def test_a_truncated_object_fails_the_pages_it_lost(store, compression, cipher):
    data = mixed_block(4)
    key = block_key(48, 0, len(data))
    raw = encode_block(data, compression, cipher, key)
    layout = read_layout(raw, key)
    await store.put(key, bytes(raw[: layout.bounds[3] + 10]))  # page 3 cut short
    bs = BlockStore(store, len(data), compression, None, cipher=cipher)
    try:
        with pytest.raises(BlockCorrupt, match=key) as exc:
            await bs.load(48, 0, len(data))
        assert exc.value.pages == (3,)
        with pytest.raises(BlockCorrupt, match=f"{key}.*page 3"):
            await bs.load_range(48, 0, len(data), 3 * PAGE + 100, 3 * PAGE + 200)
        assert await bs.load_range(48, 0, len(data), 100, 200) == data[100:200]
    finally:
        await bs.close()
    await store.put(key, bytes(raw[: layout.bounds[2]]))  # pages 2 and 3 gone
    bs = BlockStore(store, len(data), compression, None, cipher=cipher)
    try:
        with pytest.raises(BlockCorrupt, match=f"{key}.*truncated"):
            await bs.load_range(48, 0, len(data), 3 * PAGE + 100, 3 * PAGE + 200)
    finally:
        await bs.close()
