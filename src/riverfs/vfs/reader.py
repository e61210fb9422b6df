"""Reading file data: resolve a byte range to slices, and slices to blocks.

A chunk's slice list resolves into a gap-free list of visible segments (meta/slices.py), cached
per (inode, chunk) until the file changes, with the decoded data of the chunk's inline slices
(meta/inline.py), which come with the records. Sequential readers get read-ahead: the window of
blocks fetched ahead grows while reads keep following each other.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict

from riverfs.chunk.block import CHUNK_SIZE, BlockCorrupt, block_key, decode_block
from riverfs.chunk.store import BlockStore
from riverfs.meta import Meta
from riverfs.meta.slices import Slice, visible_segments
from riverfs.objects import ObjectNotFound

MAX_VIEWS = 4096
MAX_WINDOW_BLOCKS = 8


class ChunkView:
    """What a read needs of one chunk: its visible segments (and their start offsets, for
    bisect) and the decoded data of its inline slices."""

    __slots__ = ("starts", "segments", "inline")

    def __init__(
        self,
        starts: list[int],
        segments: list[Slice],
        inline: dict[int, bytes | memoryview | BlockCorrupt],
    ) -> None:
        self.starts = starts
        self.segments = segments
        self.inline = inline


class ReadState:
    """Per-handle read pattern, for read-ahead."""

    __slots__ = ("next_offset", "window")

    def __init__(self) -> None:
        self.next_offset = -1
        self.window = 0


class FileReader:
    """Reads for every file of a mount (one instance; it caches chunk views)."""

    def __init__(self, meta: Meta, blocks: BlockStore) -> None:
        self.meta = meta
        self.blocks = blocks
        self._views: OrderedDict[tuple[int, int], ChunkView] = OrderedDict()
        self._chunks_of: dict[int, set[int]] = {}  # inode -> chunk indexes with a cached view
        self._invalidations = 0  # a view loaded across an invalidation is not cached

    def invalidate(self, inode: int) -> None:
        """Forget cached views of `inode` (its data changed)."""
        self._invalidations += 1
        for index in self._chunks_of.pop(inode, ()):
            del self._views[(inode, index)]

    async def _view(self, inode: int, index: int) -> ChunkView:
        key = (inode, index)
        view = self._views.get(key)
        if view is not None:
            self._views.move_to_end(key)
            return view
        seen = self._invalidations
        slices, stored = await self.meta.read_chunk_data(inode, index)
        segments = visible_segments(slices, CHUNK_SIZE)
        inline = self._decode_inline(stored, slices)
        view = ChunkView([seg.pos for seg in segments], segments, inline)
        if seen == self._invalidations:
            self._views[key] = view
            self._chunks_of.setdefault(inode, set()).add(index)
            if len(self._views) > MAX_VIEWS:
                (old_inode, old_index), _ = self._views.popitem(last=False)
                chunks = self._chunks_of[old_inode]
                chunks.discard(old_index)
                if not chunks:
                    del self._chunks_of[old_inode]
        return view

    def _decode_inline(
        self, stored: dict[int, bytes], slices: list[Slice]
    ) -> dict[int, bytes | memoryview | BlockCorrupt]:
        """Decoded inline blocks; a corrupt one is kept as its error, raised when read."""
        sizes = {s.id: s.size for s in slices}
        decoded: dict[int, bytes | memoryview | BlockCorrupt] = {}
        for sid, raw in stored.items():
            try:
                decoded[sid] = decode_block(raw, block_key(sid, 0, sizes[sid]), self.blocks.cipher)
            except BlockCorrupt as e:
                decoded[sid] = e
        return decoded

    async def _segment(self, inode: int, offset: int) -> tuple[int, Slice, ChunkView]:
        """The visible segment holding file offset `offset`, the chunk index, and its view."""
        index, pos = divmod(offset, CHUNK_SIZE)
        view = await self._view(inode, index)
        return index, view.segments[bisect.bisect_right(view.starts, pos) - 1], view

    async def read(
        self, inode: int, offset: int, size: int, length: int, state: ReadState | None = None
    ) -> bytes:
        """Bytes [offset, offset+size) of a file of `length` bytes (short at EOF)."""
        return b"".join(await self.read_pieces(inode, offset, size, length, state))

    async def read_pieces(
        self, inode: int, offset: int, size: int, length: int, state: ReadState | None = None
    ) -> list[bytes | memoryview]:
        """`read` as the buffers the bytes live in (views of cached blocks, no copy): what a
        FUSE reply writes out with one writev.

        A block missing from the store may be a slice replaced (compaction elsewhere) and
        deleted since this mount cached the chunk's view: the view is reloaded and the read
        tried once more before the error stands."""
        try:
            return await self._read_pieces(inode, offset, size, length, state)
        except BlockCorrupt as e:
            if not isinstance(e.__cause__, ObjectNotFound):
                raise
            self.invalidate(inode)
            return await self._read_pieces(inode, offset, size, length, state)

    async def _read_pieces(
        self, inode: int, offset: int, size: int, length: int, state: ReadState | None
    ) -> list[bytes | memoryview]:
        end = min(offset + size, length)
        # A handle jumping around reads only the pages it needs, not whole blocks.
        jumped = state is not None and offset not in (0, state.next_offset)
        pieces = []
        pos = offset
        bs = self.blocks.block_size
        while pos < end:
            index, seg, view = await self._segment(inode, pos)
            in_chunk = pos - index * CHUNK_SIZE
            n = min(seg.end - in_chunk, end - pos)
            if seg.id == 0:
                pieces.append(bytes(n))
            elif seg.id in view.inline:
                data = view.inline[seg.id]
                if isinstance(data, BlockCorrupt):
                    raise data
                at = seg.offset + (in_chunk - seg.pos)
                pieces.append(memoryview(data)[at : at + n])
            else:
                at = seg.offset + (in_chunk - seg.pos)  # offset within the stored slice
                want = n
                while want:
                    bi, bo = divmod(at, bs)
                    blen = min(bs, seg.size - bi * bs)
                    take = min(want, blen - bo)
                    if jumped:
                        pieces.append(await self.blocks.load_range(seg.id, bi, blen, bo, bo + take))
                    else:
                        # the whole block, or (a bad page in it) the range page by page
                        pieces.append(await self.blocks.load_span(seg.id, bi, blen, bo, bo + take))
                    at += take
                    want -= take
            pos += n
        if state is not None and end > offset:
            await self._read_ahead(inode, offset, end, length, state)
        return pieces

    async def _read_ahead(
        self, inode: int, offset: int, end: int, length: int, state: ReadState
    ) -> None:
        bs = self.blocks.block_size
        if offset == state.next_offset:
            state.window = min(max(state.window * 2, 1), MAX_WINDOW_BLOCKS)
        else:
            state.window = 0
        state.next_offset = end
        if not state.window:
            return
        pos, stop = end, min(end + state.window * bs, length)
        while pos < stop:
            index, seg, view = await self._segment(inode, pos)
            in_chunk = pos - index * CHUNK_SIZE
            n = min(seg.end - in_chunk, stop - pos)
            if seg.id and seg.id not in view.inline:
                at = seg.offset + (in_chunk - seg.pos)
                for bi in range(at // bs, (at + n - 1) // bs + 1):
                    self.blocks.prefetch(seg.id, bi, min(bs, seg.size - bi * bs))
            pos += n
