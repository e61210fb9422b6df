"""The block store: encoded blocks in the object store, behind a memory and a disk cache.

Loads are deduplicated (one fetch per block however many readers want it), verified (a bad
block raises BlockCorrupt naming the object, never returns wrong bytes), and kept in a bounded
in-memory LRU of decoded blocks so the many small reads FUSE sends for one block decode it once.

Random readers (`load_range`) read by page instead: the header and page table of the block
(kept in a bounded LRU of layouts) say which stored bytes hold the range; only those are read,
from the disk cache file (pread) or the store (range get), verified and decoded page by page,
and the decoded pages are kept in their own bounded LRU (by bytes, beside the block LRU: a
random reader evicts pages, not the blocks sequential readers stream through). A page that
fails verification fails only the reads that touch it (`load_span`, `load_range`).

CPU work (checksums, compression, encryption) and cache file I/O run in a small thread pool.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import logging
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from riverfs import metrics
from riverfs.chunk.block import (
    PAGE_SHIFT,
    PAGE_SIZE,
    BlockCorrupt,
    Layout,
    block_key,
    block_lengths,
    decode_block,
    decode_page,
    encode_block,
    head_size,
    pages_corrupt,
    payload_offset,
    read_layout,
    slice_keys,
)
from riverfs.chunk.cache import DiskCache
from riverfs.chunk.staging import Staging
from riverfs.errors import FSError
from riverfs.objects import InvalidRange, ObjectNotFound, ObjectStore, StoreError

log = logging.getLogger(__name__)

INLINE_CODEC_BYTES = 64 << 10
_BLOCK_READS = metrics.family(
    "block_reads",
    "Block (or page range) reads by where they were served from: memory, disk (the cache), "
    "staging (not uploaded yet), store.",
    metrics.Counter,
    "source",
)
FROM_MEMORY, FROM_DISK = _BLOCK_READS.child("memory"), _BLOCK_READS.child("disk")
FROM_STAGING, FROM_STORE = _BLOCK_READS.child("staging"), _BLOCK_READS.child("store")
INLINE_PAGES = 2  # pages decoded in the event loop; more go to the pool
MAX_LAYOUTS = 2048  # block headers and page tables remembered (~1 KiB each)
MAX_DAMAGED = 1024  # blocks remembered as having a bad page
WARM_FETCHED, WARM_CACHED, WARM_MISSED = "fetched", "cached", "missed"  # what `warm` did


class BlockStore:
    def __init__(
        self,
        store: ObjectStore,
        block_size: int,
        compression: str,
        cache: DiskCache | None,
        memory_limit: int = 64 << 20,
        page_memory_limit: int | None = None,
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
        # Decoded pages of random reads: (key, page index) -> bytes, LRU first.
        self._pages: OrderedDict[tuple[str, int], bytes | memoryview] = OrderedDict()
        self._pages_used = 0
        self._pages_limit = memory_limit // 4 if page_memory_limit is None else page_memory_limit
        self._layouts: OrderedDict[str, Layout] = OrderedDict()
        # Blocks whose whole load failed on a bad page: `load_span` reads them by page.
        self._damaged: OrderedDict[str, None] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[bytes | memoryview]] = {}
        self._prefetching: set[asyncio.Task] = set()
        self._max_prefetch = max_prefetch
        # Fetches of `warm` (riverfs warmup) at once, however many files are warmed together.
        self._warming = asyncio.Semaphore(max_prefetch)

    async def _run(self, fn, *args: Any):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _cached(self, fn, *args: Any):
        """A disk-cache call in the pool, its time charged to the request as "cache"."""
        timing = metrics.begin("cache", time.perf_counter_ns())
        try:
            return await self._run(fn, *args)
        finally:
            metrics.end("cache", timing, time.perf_counter_ns())

    async def _code(self, fn, data, arg):
        """Encode or decode: small blocks inline (a thread hop costs more), large in the pool."""
        if len(data) <= INLINE_CODEC_BYTES:
            return fn(data, arg)
        return await self._run(fn, data, arg)

    # ---- reading --------------------------------------------------------------------------

    async def load(self, slice_id: int, index: int, length: int) -> bytes | memoryview:
        """The plaintext of block `index` (of `length` bytes) of slice `slice_id`.

        BlockCorrupt if any of it is bad; its `pages` then name the bad pages, and the
        others can still be read with `load_span` or `load_range`.
        """
        return await self._load(block_key(slice_id, index, length))

    async def _load(self, key: str) -> bytes | memoryview:
        data = self._mem.get(key)
        if data is not None:
            self._mem.move_to_end(key)
            FROM_MEMORY.inc()
            return data
        fetch = self._inflight.get(key)
        if fetch is None:
            # The fetch runs as its own task: a reader that gives up (is cancelled) does not
            # take the block away from the other readers waiting for it.
            fetch = asyncio.get_running_loop().create_task(self._fetch_and_remember(key))
            self._inflight[key] = fetch
            fetch.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(fetch)

    async def load_span(
        self, slice_id: int, index: int, length: int, start: int, end: int
    ) -> bytes | memoryview:
        """Bytes [start, end) of a block, for a sequential reader: the block is loaded whole
        and kept (as `load`), but if it has a bad page, the range is read by page instead, so
        only a range touching a bad page fails."""
        key = block_key(slice_id, index, length)
        if key not in self._damaged:
            try:
                block = await self._load(key)
            except BlockCorrupt as e:
                if not e.pages:
                    raise
                self._note_damaged(key)
            else:
                return block if start == 0 and end == len(block) else memoryview(block)[start:end]
        return await self._read_pages(key, length, start, end)

    async def load_range(
        self, slice_id: int, index: int, length: int, start: int, end: int
    ) -> bytes | memoryview:
        """Bytes [start, end) of a block, for a random reader.

        A block at hand (decoded in memory, or being fetched) is used whole; a range of more
        than a quarter of the block loads it whole (`load_span`). Otherwise only the pages
        holding the range are read (disk cache or store), verified and decoded, and kept in
        the page LRU; blocks of format version 1 that are compressed or encrypted decode only
        whole and are loaded whole.
        """
        key = block_key(slice_id, index, length)
        block = self._mem.get(key)
        if block is not None:
            self._mem.move_to_end(key)
            return memoryview(block)[start:end]
        fetch = self._inflight.get(key)
        if fetch is not None:
            try:
                return memoryview(await asyncio.shield(fetch))[start:end]
            except BlockCorrupt as e:
                if not e.pages:
                    raise
                self._note_damaged(key)
        if end - start > length // 4:
            return await self.load_span(slice_id, index, length, start, end)
        return await self._read_pages(key, length, start, end)

    def _note_damaged(self, key: str) -> None:
        self._damaged[key] = None
        self._damaged.move_to_end(key)
        if len(self._damaged) > MAX_DAMAGED:
            self._damaged.popitem(last=False)

    # ---- reading by page --------------------------------------------------------------------

    async def _read_pages(self, key: str, length: int, start: int, end: int) -> bytes | memoryview:
        wanted = range(start >> PAGE_SHIFT, ((end - 1) >> PAGE_SHIFT) + 1)
        found: dict[int, bytes | memoryview] = {}
        for i in wanted:
            page = self._pages.get((key, i))
            if page is not None:
                self._pages.move_to_end((key, i))
                found[i] = page
        missing = [i for i in wanted if i not in found]
        if not missing:
            FROM_MEMORY.inc()
        else:
            decoded = await self._fetch_pages(key, length, range(missing[0], missing[-1] + 1))
            if decoded is None:  # decodes only whole (version 1, compressed or encrypted)
                return memoryview(await self._load(key))[start:end]
            found.update(decoded)
        first = wanted.start
        if len(wanted) == 1:
            offset = start - (first << PAGE_SHIFT)
            return memoryview(found[first])[offset : offset + end - start]
        joined = b"".join(found[i] for i in wanted)
        offset = start - (first << PAGE_SHIFT)
        return memoryview(joined)[offset : offset + end - start]

    async def _fetch_pages(
        self, key: str, length: int, wanted: range
    ) -> dict[int, bytes | memoryview] | None:
        """Read, verify, decode and remember pages `wanted` of a block; None if the block
        decodes only whole or the store cannot serve a range (the whole load says why)."""
        layout = self._layouts.get(key)
        if layout is not None:
            self._layouts.move_to_end(key)
        if self.cache is not None and self.cache.has(key):
            try:
                got = await self._cached(self._read_cached, key, length, layout, wanted)
                if got is not None:
                    FROM_DISK.inc()
                    layout, data = got
                    self._remember_layout(key, layout)
                    return None if data is None else await self._decode_pages(layout, wanted, data)
            except BlockCorrupt as e:
                log.warning("dropping corrupt cached block: %s", e)
                await self._run(self.cache.discard, key)
        if layout is not None and not layout.paged:
            return None
        try:
            if layout is None:
                layout, data = await self._fetch_layout_and_pages(key, length, wanted)
            else:
                data = await self.store.get_range(key, *layout.span(wanted))
            FROM_STORE.inc()
        except BlockCorrupt as e:
            if not e.pages:
                raise
            self._note_damaged(key)
            raise
        except InvalidRange:  # the object ends before these pages: truncated
            self._note_damaged(key)
            raise BlockCorrupt(
                f"{key}: truncated before page {wanted.start}", tuple(wanted)
            ) from None
        except StoreError as e:  # missing, ...: let the whole load say what is wrong
            log.debug("range read of %s failed (%s); loading the whole block", key, e)
            return None
        self._remember_layout(key, layout)
        if not layout.paged:
            return None
        try:
            return await self._decode_pages(layout, wanted, data)
        except BlockCorrupt:
            self._note_damaged(key)
            raise

    def _read_cached(
        self, key: str, length: int, layout: Layout | None, wanted: range
    ) -> tuple[Layout, bytes | None] | None:
        """(layout, the stored bytes of `wanted`) from the disk cache, None if it is not
        there (blocking: runs in the pool); no bytes for a block that decodes only whole."""
        if layout is None:
            head = self.cache.get_range(key, 0, head_size(length))
            if head is None:
                return None
            layout = read_layout(head, key, length)
        if not layout.paged:
            return layout, None
        data = self.cache.get_range(key, *layout.span(wanted))
        return None if data is None else (layout, data)

    async def _fetch_layout_and_pages(
        self, key: str, length: int, wanted: range
    ) -> tuple[Layout, bytes | None]:
        """A block's layout and the stored bytes of `wanted`, from the store. On a plain
        volume the pages' place is known without the header: both are fetched at once."""
        if self.compression == "none" and self.cipher is None:
            base = payload_offset(length)
            lo = base + (wanted.start << PAGE_SHIFT)
            hi = base + min(wanted.stop << PAGE_SHIFT, length)
            head, data = await asyncio.gather(
                self.store.get_range(key, 0, head_size(length)),
                self.store.get_range(key, lo, hi),
                return_exceptions=True,
            )
            if isinstance(head, BaseException):
                raise head
            layout = read_layout(head, key, length)
            if not layout.paged:
                return layout, None
            if layout.span(wanted) == (lo, hi):
                if isinstance(data, BaseException):
                    raise data
                return layout, data
        else:
            layout = read_layout(await self.store.get_range(key, 0, head_size(length)), key, length)
        if not layout.paged:
            return layout, None
        return layout, await self.store.get_range(key, *layout.span(wanted))

    async def _decode_pages(
        self, layout: Layout, wanted: range, data: bytes
    ) -> dict[int, bytes | memoryview]:
        """Verify and decode the stored bytes of `wanted` (short if the object is); remember
        the good pages; BlockCorrupt naming the bad ones."""
        if len(wanted) <= INLINE_PAGES:
            good, bad = self._decode_some(layout, wanted, data)
        else:
            good, bad = await self._run(self._decode_some, layout, wanted, data)
        for i, page in good.items():
            self._remember_page(layout.key, i, page)
        if bad:
            raise pages_corrupt(layout.key, bad)
        return good

    def _decode_some(
        self, layout: Layout, wanted: range, data: bytes
    ) -> tuple[dict[int, bytes | memoryview], list[BlockCorrupt]]:
        view = memoryview(data)
        base = layout.bounds[wanted.start]
        good: dict[int, bytes | memoryview] = {}
        bad: list[BlockCorrupt] = []
        for i in wanted:
            lo, hi = layout.bounds[i] - base, layout.bounds[i + 1] - base
            try:
                good[i] = decode_page(layout, i, view[lo:hi], self.cipher)
            except BlockCorrupt as e:
                bad.append(e)
        return good, bad

    def _remember_layout(self, key: str, layout: Layout) -> None:
        self._layouts[key] = layout
        self._layouts.move_to_end(key)
        if len(self._layouts) > MAX_LAYOUTS:
            self._layouts.popitem(last=False)

    def _remember_page(self, key: str, index: int, page: bytes | memoryview) -> None:
        if (key, index) in self._pages or len(page) > self._pages_limit:
            return
        self._pages[(key, index)] = page
        self._pages_used += len(page)
        while self._pages_used > self._pages_limit:
            _, old = self._pages.popitem(last=False)
            self._pages_used -= len(old)

    # ---- reading whole blocks -------------------------------------------------------------

    async def _fetch_and_remember(self, key: str) -> bytes | memoryview:
        data = await self._fetch(key)
        self._remember(key, data)
        return data

    async def _fetch(self, key: str) -> bytes | memoryview:
        if self.cache is not None:
            raw = await self._cached(self.cache.get, key)
            if raw is not None:
                FROM_DISK.inc()
                try:
                    return await self._code(self._decode, raw, key)
                except BlockCorrupt as e:
                    log.warning("dropping corrupt cached block: %s", e)
                    await self._run(self.cache.discard, key)
        if self.staging is not None:
            raw = await self._cached(self.staging.get, key)
            if raw is not None:
                FROM_STAGING.inc()
                return await self._code(self._decode, raw, key)
        try:
            raw = await self.store.get_buffer(key)
        except ObjectNotFound as e:
            raise BlockCorrupt(f"{key}: object missing from the store") from e
        FROM_STORE.inc()
        data = await self._code(self._decode, raw, key)
        if self.cache is not None:
            await self._cached(self.cache.put, key, raw)
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
        # Its own (empty) context: a read that asks for read-ahead is not charged its time.
        task = asyncio.get_running_loop().create_task(
            self._prefetch(slice_id, index, length), context=contextvars.Context()
        )
        self._prefetching.add(task)
        task.add_done_callback(self._prefetching.discard)

    async def _prefetch(self, slice_id: int, index: int, length: int) -> None:
        try:
            await self.load(slice_id, index, length)
        except Exception as e:  # the reader that needs it will see the error itself
            log.debug("prefetch of slice %d block %d failed: %s", slice_id, index, e)

    # ---- warming and evicting (riverfs warmup) ----------------------------------------------

    async def warm(self, slice_id: int, index: int, length: int) -> str:
        """Make a block local before anyone reads it: into the disk cache when the mount has
        one (verified first, not kept decoded in memory, so warming a tree does not push the
        readers' blocks out of the memory LRU), else into the memory LRU.

        WARM_FETCHED if it came from the store (or a read that was fetching it), WARM_CACHED
        if it was already here (cached, or staged), WARM_MISSED if the cache did not keep it
        (full: `min_free`, a block larger than the memory cache).
        At most `max_prefetch` fetches at once for the whole mount; BlockCorrupt or
        StoreError as a read would raise them.
        """
        key = block_key(slice_id, index, length)
        if self._is_local(key):
            if self.cache is None:
                self._mem.move_to_end(key)
            return WARM_CACHED
        async with self._warming:
            if self._is_local(key):  # fetched while this one waited for a slot
                return WARM_CACHED
            if self.cache is None:
                await self._load(key)
            else:
                fetch = self._inflight.get(key)
                if fetch is None:  # readers that come meanwhile share it, as with `_load`
                    fetch = asyncio.get_running_loop().create_task(self._fetch(key))
                    self._inflight[key] = fetch
                    fetch.add_done_callback(lambda _: self._inflight.pop(key, None))
                await asyncio.shield(fetch)
        return WARM_FETCHED if self._is_local(key) else WARM_MISSED

    @property
    def memory_limit(self) -> int:
        """Bytes of decoded whole blocks the memory LRU holds at most."""
        return self._mem_limit

    def _is_local(self, key: str) -> bool:
        """Whether a read of the block would be served without the store (the memory LRU
        counts only for a mount without a disk cache: it is what `warm` fills there; a
        staged block, not uploaded yet, is read from staging)."""
        if self.cache is None:
            return key in self._mem
        return self.cache.has(key) or (self.staging is not None and self.staging.holds(key))

    async def evict(self, slice_id: int, index: int, length: int) -> bool:
        """Drop a block from the memory LRUs and the disk cache (`riverfs warmup --evict`);
        never from staging, which holds what the store does not have yet. True if it was
        held anywhere. A read in flight may bring it back."""
        key = block_key(slice_id, index, length)
        held = self._forget_decoded(key, length)
        if self.cache is not None and self.cache.has(key):
            await self._run(self.cache.discard, key)
            held = True
        return held

    def _forget_decoded(self, key: str, length: int) -> bool:
        """Drop what memory holds of a block: decoded whole, its pages, its layout."""
        held = False
        old = self._mem.pop(key, None)
        if old is not None:
            self._mem_used -= len(old)
            held = True
        for i in range(-(-length // PAGE_SIZE)):
            page = self._pages.pop((key, i), None)
            if page is not None:
                self._pages_used -= len(page)
                held = True
        self._layouts.pop(key, None)
        return held

    # ---- writing and deleting -------------------------------------------------------------

    async def save(self, slice_id: int, index: int, data: bytes | bytearray) -> None:
        """Encode and upload one block; cache its stored form.

        A synchronous mount whose store cannot be reached (it failed after its retries, or
        staging knows it is down) stages the block instead: durable after `make_durable`,
        uploaded when the store is back. FSError EIO if staging cannot take it either.
        """
        key = block_key(slice_id, index, len(data))
        raw = await self._code(self._encode, data, key)
        if self.writeback:
            await self.staging.put(key, raw)  # durable here; uploaded in the background
        elif self.staging is not None and self.staging.store_down:
            await self._spill(key, raw, None)
        else:
            try:
                await self.store.put(key, raw)
            except StoreError as e:
                if self.staging is None or not e.retryable:
                    raise
                self.staging.note_store_down(e)
                await self._spill(key, raw, e)
        if self.cache is not None:
            await self._run(self.cache.put, key, raw)

    async def _spill(self, key: str, raw: bytes, cause: StoreError | None) -> None:
        try:
            await self.staging.put(key, raw)
        except FSError as e:
            why = f"the store failed ({cause})" if cause else "the store is unreachable"
            raise FSError(errno.EIO, f"{why} and staging refused {key}: {e}") from e

    def where(self, keys: list[str]) -> dict[str, list[str]]:
        """Where this mount holds each block (`riverfs info`): "memory" (decoded, whole or
        some pages), "disk" (the cache), then "staging" (not uploaded yet) or "store"."""
        paged = {key for key, _ in self._pages}
        places = {}
        for key in keys:
            here = []
            if key in self._mem or key in paged:
                here.append("memory")
            if self.cache is not None and self.cache.has(key):
                here.append("disk")
            staged = self.staging is not None and self.staging.holds(key)
            here.append("staging" if staged else "store")
            places[key] = here
        return places

    @property
    def memory_used(self) -> int:
        """Bytes of decoded blocks and pages held in memory."""
        return self._mem_used + self._pages_used

    @property
    def degraded(self) -> bool:
        """True while the store is unreachable (blocks are staged, reads miss what is not
        cached or staged)."""
        return self.staging is not None and self.staging.store_down

    async def make_durable(self) -> None:
        """Every block saved so far survives a crash: fsync the staged files (write-back, or
        blocks a synchronous mount spilled while the store was down)."""
        if self.staging is not None:
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
        pages = -(-self.block_size // PAGE_SIZE)
        for key in keys:
            old = self._mem.pop(key, None)
            if old is not None:
                self._mem_used -= len(old)
            for i in range(pages):
                page = self._pages.pop((key, i), None)
                if page is not None:
                    self._pages_used -= len(page)
            self._layouts.pop(key, None)
            self._damaged.pop(key, None)
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
