"""The block store: encoded blocks in the object store, behind a memory and a disk cache.

Loads are deduplicated (one fetch per block however many readers want it), verified (a bad
block raises BlockCorrupt naming the object, never returns wrong bytes), and kept in a bounded
in-memory LRU of decoded blocks so the many small reads FUSE sends for one block decode it once.
CPU work (checksums, compression) and cache file I/O run in a small thread pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from riverfs.chunk.block import (
    BlockCorrupt,
    block_key,
    block_lengths,
    decode_block,
    decode_range,
    encode_block,
    page_span,
    payload_offset,
    slice_keys,
)
from riverfs.chunk.cache import DiskCache
from riverfs.chunk.staging import Staging
from riverfs.objects import ObjectNotFound, ObjectStore, StoreError

log = logging.getLogger(__name__)

INLINE_CODEC_BYTES = 64 << 10


class BlockStore:
    def __init__(
        self,
        store: ObjectStore,
        block_size: int,
        compression: str,
        cache: DiskCache | None,
        memory_limit: int = 64 << 20,
        max_prefetch: int = 8,
        workers: int = 4,
        cipher: AESGCM | None = None,
        staging: Staging | None = None,
        writeback: bool = False,
    ) -> None:
        self.store = store
        self.block_size = block_size
        self.compression = compression
        self.cipher = cipher  # the volume's block key when it is encrypted
        self.staging = staging  # blocks not uploaded yet (write-back, or left by a crash)
        self.writeback = writeback and staging is not None
        self.cache = cache
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="riverfs-block")
        self._mem: OrderedDict[str, bytes | memoryview] = OrderedDict()
        self._mem_used = 0
        self._mem_limit = memory_limit
        self._inflight: dict[str, asyncio.Task[bytes | memoryview]] = {}
        self._prefetching: set[asyncio.Task] = set()
        self._max_prefetch = max_prefetch

    async def _run(self, fn, *args: Any):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _code(self, fn, data, arg):
        """Encode or decode: small blocks inline (a thread hop costs more), large in the pool."""
        if len(data) <= INLINE_CODEC_BYTES:
            return fn(data, arg)
        return await self._run(fn, data, arg)

    # ---- reading --------------------------------------------------------------------------

    async def load(self, slice_id: int, index: int, length: int) -> bytes | memoryview:
        """The plaintext of block `index` (of `length` bytes) of slice `slice_id`."""
        key = block_key(slice_id, index, length)
        data = self._mem.get(key)
        if data is not None:
            self._mem.move_to_end(key)
            return data
        fetch = self._inflight.get(key)
        if fetch is None:
            # The fetch runs as its own task: a reader that gives up (is cancelled) does not
            # take the block away from the other readers waiting for it.
            fetch = asyncio.get_running_loop().create_task(self._fetch_and_remember(key))
            self._inflight[key] = fetch
            fetch.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(fetch)

    async def load_range(
        self, slice_id: int, index: int, length: int, start: int, end: int
    ) -> bytes:
        """Bytes [start, end) of a block, for a random reader.

        A block at hand (memory, disk cache, being fetched) is used whole; otherwise, when the
        block is stored uncompressed and the range is small, only the pages holding the range
        are fetched and verified, and nothing is cached: random readers would only evict
        what sequential readers need.
        """
        key = block_key(slice_id, index, length)
        at_hand = key in self._mem or key in self._inflight
        cached = self.cache is not None and self.cache.has(key)
        whole = self.compression != "none" or self.cipher is not None  # no page access
        if at_hand or cached or whole or end - start > length // 4:
            return (await self.load(slice_id, index, length))[start:end]
        _, lo, hi = page_span(length, start, end)
        try:
            head, pages = await asyncio.gather(
                self.store.get_range(key, 0, payload_offset(length)),
                self.store.get_range(key, lo, hi),
            )
        except StoreError as e:  # missing, truncated, ...: let the full load say what is wrong
            log.debug("range read of %s failed (%s); loading the whole block", key, e)
            return (await self.load(slice_id, index, length))[start:end]
        return decode_range(head, pages, key, length, start, end)

    async def _fetch_and_remember(self, key: str) -> bytes | memoryview:
        data = await self._fetch(key)
        self._remember(key, data)
        return data

    async def _fetch(self, key: str) -> bytes | memoryview:
        if self.cache is not None:
            raw = await self._run(self.cache.get, key)
            if raw is not None:
                try:
                    return await self._code(self._decode, raw, key)
                except BlockCorrupt as e:
                    log.warning("dropping corrupt cached block: %s", e)
                    await self._run(self.cache.discard, key)
        if self.staging is not None:
            raw = await self._run(self.staging.get, key)
            if raw is not None:
                return await self._code(self._decode, raw, key)
        try:
            raw = await self.store.get_buffer(key)
        except ObjectNotFound as e:
            raise BlockCorrupt(f"{key}: object missing from the store") from e
        data = await self._code(self._decode, raw, key)
        if self.cache is not None:
            await self._run(self.cache.put, key, raw)
        return data

    def _decode(self, raw: bytes | memoryview, key: str) -> bytes | memoryview:
        return decode_block(raw, key, self.cipher)

    def _encode(self, data: bytes | bytearray, key: str) -> bytes:
        return encode_block(data, self.compression, self.cipher, key)

    def _remember(self, key: str, data: bytes | memoryview) -> None:
        if len(data) > self._mem_limit:
            return
        self._mem[key] = data
        self._mem_used += len(data)
        while self._mem_used > self._mem_limit:
            _, old = self._mem.popitem(last=False)
            self._mem_used -= len(old)

    def prefetch(self, slice_id: int, index: int, length: int) -> None:
        """Start loading a block in the background, if there is room for another fetch."""
        key = block_key(slice_id, index, length)
        if key in self._mem or key in self._inflight:
            return
        if len(self._prefetching) >= self._max_prefetch:
            return
        task = asyncio.get_running_loop().create_task(self._prefetch(slice_id, index, length))
        self._prefetching.add(task)
        task.add_done_callback(self._prefetching.discard)

    async def _prefetch(self, slice_id: int, index: int, length: int) -> None:
        try:
            await self.load(slice_id, index, length)
        except Exception as e:  # the reader that needs it will see the error itself
            log.debug("prefetch of slice %d block %d failed: %s", slice_id, index, e)

    # ---- writing and deleting -------------------------------------------------------------

    async def save(self, slice_id: int, index: int, data: bytes | bytearray) -> None:
        """Encode and upload one block; cache its stored form."""
        key = block_key(slice_id, index, len(data))
        raw = await self._code(self._encode, data, key)
        if self.writeback:
            await self.staging.put(key, raw)  # durable here; uploaded in the background
        else:
            await self.store.put(key, raw)
        if self.cache is not None:
            await self._run(self.cache.put, key, raw)

    async def make_durable(self) -> None:
        """Every block saved so far survives a crash (write-back: fsync the staged files)."""
        if self.writeback:
            await self.staging.sync()

    async def remove_slice(self, slice_id: int, size: int) -> None:
        await self._remove(slice_keys(slice_id, size, self.block_size))

    async def remove_blocks(self, slice_id: int, size: int, first: int, last: int) -> None:
        """Delete blocks `first`..`last` of a slice (a hole punched through it)."""
        lengths = block_lengths(size, self.block_size)
        await self._remove(
            [block_key(slice_id, i, lengths[i]) for i in range(first, min(last + 1, len(lengths)))]
        )

    async def _remove(self, keys: list[str]) -> None:
        if self.staging is not None:
            for key in keys:
                self.staging.discard(key)
        await self.store.delete_many(keys)
        for key in keys:
            old = self._mem.pop(key, None)
            if old is not None:
                self._mem_used -= len(old)
        if self.cache is not None:
            for key in keys:
                await self._run(self.cache.discard, key)

    async def close(self) -> None:
        """Stop. Staged blocks must have been drained before (VFS.stop does it)."""
        if self.staging is not None:
            await self.staging.close()
        for task in [*self._prefetching, *self._inflight.values()]:
            task.cancel()
        self._pool.shutdown(wait=True)
