"""chunk/store.py: BlockStore.warm and evict (`riverfs warmup`): where a warmed block goes, the
bound on fetches at once, what evict drops and what it leaves."""

from __future__ import annotations

import asyncio
import os

import pytest
from unit_helpers import async_test, forget_memory_store, memory_url

from riverfs.chunk.block import block_key, encode_block
from riverfs.chunk.cache import DiskCache
from riverfs.chunk.staging import Staging
from riverfs.chunk.store import WARM_CACHED, WARM_FETCHED, WARM_MISSED, BlockStore
from riverfs.objects import ObjectStore, open_store

BS = 64 << 10


class GatedStore(ObjectStore):
    """The same objects as `inner`; gets wait for `gate` and count how many ran at once."""

    def __init__(self, inner: ObjectStore, gate: asyncio.Event | None = None) -> None:
        super().__init__(inner.url, inner._store)
        self.gate = gate
        self.gets = self.running = self.most = 0

    async def get_buffer(self, key: str) -> memoryview:
        self.gets += 1
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            return await super().get_buffer(key)
        finally:
            self.running -= 1


@pytest.fixture
def store():
    url = memory_url()
    yield open_store(url)
    forget_memory_store(url)


async def put_blocks(store: ObjectStore, n: int, size: int = 5000) -> list[bytes]:
    data = [os.urandom(size) for _ in range(n)]
    for i, d in enumerate(data):
        await store.put(block_key(100 + i, 0, size), encode_block(d))
    return data


@async_test
async def test_warm_puts_the_block_in_the_disk_cache_not_in_memory(store, tmp_path):
    (data,) = await put_blocks(store, 1)
    counting = GatedStore(store)
    cache = DiskCache(tmp_path, 1 << 20, min_free=0.0)
    bs = BlockStore(counting, BS, "none", cache)
    try:
        assert await bs.warm(100, 0, 5000) == WARM_FETCHED
        assert cache.has(block_key(100, 0, 5000))
        assert bs.memory_used == 0, "warming a tree must not flush the readers' blocks"
        assert await bs.warm(100, 0, 5000) == WARM_CACHED
        assert await bs.load(100, 0, 5000) == data
        assert counting.gets == 1
    finally:
        await bs.close()


@async_test
async def test_a_read_during_a_warm_shares_its_fetch(store, tmp_path):
    (data,) = await put_blocks(store, 1)
    gate = asyncio.Event()
    counting = GatedStore(store, gate)
    bs = BlockStore(counting, BS, "none", DiskCache(tmp_path, 1 << 20, min_free=0.0))
    try:
        warming = asyncio.ensure_future(bs.warm(100, 0, 5000))
        await asyncio.sleep(0.01)
        reading = asyncio.ensure_future(bs.load(100, 0, 5000))
        await asyncio.sleep(0.01)
        gate.set()
        assert await reading == data
        assert await warming == WARM_FETCHED
        assert counting.gets == 1
    finally:
        await bs.close()


@async_test
async def test_warm_runs_at_most_max_prefetch_fetches_at_once(store, tmp_path):
    await put_blocks(store, 12)
    gate = asyncio.Event()
    counting = GatedStore(store, gate)
    cache = DiskCache(tmp_path, 1 << 20, min_free=0.0)
    bs = BlockStore(counting, BS, "none", cache, max_prefetch=3)
    try:
        warms = [asyncio.ensure_future(bs.warm(100 + i, 0, 5000)) for i in range(12)]
        await asyncio.sleep(0.05)
        assert counting.running == 3
        gate.set()
        assert await asyncio.gather(*warms) == [WARM_FETCHED] * 12
        assert counting.most == 3
    finally:
        await bs.close()


@async_test
async def test_without_a_disk_cache_warm_fills_the_memory_cache_within_its_limit(store):
    await put_blocks(store, 1, 5000)
    await store.put(block_key(200, 0, 9000), encode_block(os.urandom(9000)))
    bs = BlockStore(GatedStore(store), BS, "none", None, memory_limit=8000)
    try:
        assert await bs.warm(100, 0, 5000) == WARM_FETCHED
        assert bs.memory_used == 5000
        assert await bs.warm(100, 0, 5000) == WARM_CACHED
        assert await bs.warm(200, 0, 9000) == WARM_MISSED  # larger than the memory cache
    finally:
        await bs.close()


@async_test
async def test_evict_drops_memory_and_disk_but_leaves_staged_blocks(store, tmp_path):
    (data,) = await put_blocks(store, 1)
    cache = DiskCache(tmp_path / "c", 1 << 20, min_free=0.0)
    staging = Staging(tmp_path / "staging", store)  # not started: nothing is uploaded
    counting = GatedStore(store)
    bs = BlockStore(counting, BS, "none", cache, staging=staging, writeback=True)
    try:
        assert await bs.load(100, 0, 5000) == data  # in memory and on disk
        assert await bs.evict(100, 0, 5000)
        assert bs.memory_used == 0 and not cache.has(block_key(100, 0, 5000))
        assert not await bs.evict(100, 0, 5000), "nothing held any more"
        assert await bs.load(100, 0, 5000) == data
        assert counting.gets == 2, "the read after the eviction went to the store"

        staged = os.urandom(3000)
        await bs.save(300, 0, staged)  # write-back: staged, and cached
        await bs.evict(300, 0, 3000)
        assert staging.get(block_key(300, 0, 3000)) is not None, "not uploaded yet: kept"
    finally:
        await bs.close()


@async_test
async def test_a_staged_block_the_cache_did_not_take_counts_as_local(store, tmp_path):
    cache = DiskCache(tmp_path / "c", 1000, min_free=0.0)  # too small for the block
    staging = Staging(tmp_path / "staging", store)  # not started: nothing is uploaded
    counting = GatedStore(store)
    bs = BlockStore(counting, BS, "none", cache, staging=staging, writeback=True)
    try:
        await bs.save(300, 0, os.urandom(3000))
        assert not cache.has(block_key(300, 0, 3000))
        assert await bs.warm(300, 0, 3000) == WARM_CACHED
        assert counting.gets == 0
    finally:
        await bs.close()
