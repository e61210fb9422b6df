"""Buffered writing of one file: writes become slices, slices become blocks in the store.

A write lands in the newest open slice of its chunk when it continues that slice (or rewrites
its not-yet-uploaded tail); otherwise it starts a new slice. Every full block is uploaded in the
background at once; `flush` uploads the tails, waits for every upload, and commits the slices to
metadata in one transaction, in the order they were opened, so later writes win. The bytes held
in buffers are charged to the mount's BufferBudget: writers wait when it is spent.

Nothing is dropped when the store is down: the block store stages what the store refuses
(`BlockStore.save`), and a block that could not be made durable anywhere (staging full or
unwritable) stays with its slice, which a failed flush puts back, so a retried flush (fsync,
close) uploads it again. Only `abandon` (the file's last handle closed, its data still not
durable) drops buffered writes, and it logs exactly which bytes of the file are lost.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time

from riverfs.chunk.block import CHUNK_SIZE, block_key, encode_block
from riverfs.chunk.budget import BufferBudget
from riverfs.chunk.store import BlockStore
from riverfs.errors import FSError
from riverfs.meta import Attr, Meta
from riverfs.meta.slices import Slice
from riverfs.objects import StoreFull

log = logging.getLogger(__name__)

MAX_OPEN_SLICES = 64  # more and the writer commits what it has (random-write workloads)


class SliceBuffer:
    """One slice being written: bytes [uploaded, length) are `buf` (`filled` bytes long),
    which grows with the writes, up to a block, and is handed to the upload when full. It is
    never allocated block-sized up front: `bytearray(n)` zero-fills, which costs a 1 KiB file
    a 4 MiB memset and 1,024 page faults."""

    __slots__ = (
        "index",
        "pos",
        "id",
        "length",
        "uploaded",
        "buf",
        "filled",
        "uploads",
        "failed",
        "sealed",
    )

    def __init__(self, index: int, pos: int, slice_id: int) -> None:
        self.index = index  # chunk index in the file
        self.pos = pos  # offset of the slice within the chunk
        self.id = slice_id
        self.length = 0
        self.uploaded = 0
        self.buf: bytearray | None = None
        self.filled = 0
        self.uploads: list[asyncio.Task] = []
        self.failed: list[tuple[int, bytearray | memoryview]] = []  # (block index, bytes)
        self.sealed = False  # put back after a failed flush: later writes open a new slice

    @property
    def file_start(self) -> int:
        return self.index * CHUNK_SIZE + self.pos

    @property
    def file_end(self) -> int:
        return self.file_start + self.length

    def accepts(self, pos: int) -> bool:
        return not self.sealed and self.pos + self.uploaded <= pos <= self.pos + self.length


class FileWriter:
    def __init__(
        self,
        inode: int,
        meta: Meta,
        blocks: BlockStore,
        budget: BufferBudget,
        uploads: asyncio.Semaphore,
        inline_limit: int = 0,
    ) -> None:
        self.inode = inode
        self.inline_limit = inline_limit  # slices this small go to the database (meta/inline.py)
        self.meta = meta
        self.blocks = blocks
        self.budget = budget
        self._upload_slots = uploads
        self.slices: list[SliceBuffer] = []
        self._committing: list[SliceBuffer] = []  # being flushed right now
        self.mtime = 0
        self._commit = asyncio.Lock()
        self._failed: BaseException | None = None  # first failed upload since the last flush

    @property
    def dirty(self) -> bool:
        """True until every write so far is committed (a flush in progress counts)."""
        return bool(self.slices or self._committing)

    @property
    def buffered(self) -> int:
        """Bytes held in buffers that only a flush releases."""
        return sum(s.filled for s in self.slices)

    @property
    def pending_length(self) -> int:
        """The file length the uncommitted writes imply (0 if none)."""
        return max((s.file_end for s in (*self._committing, *self.slices)), default=0)

    async def write(self, offset: int, data: bytes) -> None:
        if self._failed is not None:  # fail fast: the store refused earlier blocks
            raise _upload_error(self._failed)
        view = memoryview(data)
        while view:
            index, pos = divmod(offset, CHUNK_SIZE)
            n = min(len(view), CHUNK_SIZE - pos)
            await self._write_piece(index, pos, view[:n])
            offset += n
            view = view[n:]
        self.mtime = time.time_ns()
        if len(self.slices) > MAX_OPEN_SLICES:
            await self.flush()

    def _open_slice(self, index: int, pos: int) -> SliceBuffer | None:
        for s in reversed(self.slices):
            if s.index == index:
                return s if s.accepts(pos) else None
        return None

    async def _write_piece(self, index: int, pos: int, data: memoryview) -> None:
        charged = len(data)
        await self.budget.acquire(charged)
        s = self._open_slice(index, pos)
        if s is None:
            slice_id = await self.meta.next_slice_id()
            s = self._open_slice(index, pos)  # another write may have opened one meanwhile
            if s is None:
                s = SliceBuffer(index, pos, slice_id)
                self.slices.append(s)
        bs = self.blocks.block_size
        start = pos - s.pos - s.uploaded  # within the current block; at most s.filled
        grown = 0
        while data:
            if s.buf is None:
                s.buf = bytearray()
            take = min(len(data), bs - start)
            # start <= filled: past the end this grows the buffer (large ones by realloc in
            # place, so a block written in 1 MiB pieces is not copied as it grows)
            s.buf[start : start + take] = data[:take]
            end = start + take
            if end > s.filled:
                grown += end - s.filled
                s.filled = end
            data = data[take:]
            start = end
            if s.filled == bs:  # a full block: hand the buffer over, no copy
                block, s.buf, s.filled, start = s.buf, None, 0, 0
                self._upload(s, block)
        s.length = s.uploaded + s.filled
        if grown < charged:
            self.budget.release(charged - grown)  # rewrote bytes already charged

    def _upload(self, s: SliceBuffer, block: bytearray | memoryview) -> None:
        index = s.uploaded // self.blocks.block_size
        s.uploaded += len(block)
        s.uploads.append(asyncio.get_running_loop().create_task(self._save(s, index, block)))

    async def _save(
        self, s: SliceBuffer, index: int, block: bytearray | memoryview, charged: bool = True
    ) -> None:
        """Save one block; if it fails, keep it in `s.failed` for the next flush. Its budget
        is released either way: bytes nothing can free must not stall every writer."""
        try:
            async with self._upload_slots:
                await self.blocks.save(s.id, index, block)
        except Exception as e:
            self._failed = self._failed or e
            s.failed.append((index, block))
            raise
        finally:
            if charged:
                self.budget.release(len(block))

    def abandon(self) -> list[tuple[int, int]]:
        """Drop the buffered writes (the file's last handle closed and a flush could not make
        them durable); log and return exactly which byte ranges [start, end) of the file are
        lost."""
        ranges = sorted((s.file_start, s.file_end) for s in self.slices if s.length)
        lost: list[tuple[int, int]] = []
        for start, end in ranges:
            if lost and start <= lost[-1][1]:
                lost[-1] = (lost[-1][0], max(lost[-1][1], end))
            else:
                lost.append((start, end))
        held = self.buffered
        self.slices = []
        self._failed = None
        if held:
            self.budget.release(held)
        if lost:
            log.error(
                "inode %d: data lost, not durable anywhere when its last handle closed: "
                "bytes %s (%d bytes)",
                self.inode,
                ", ".join(f"[{a}, {b})" for a, b in lost),
                sum(b - a for a, b in lost),
            )
        return lost

    async def flush(self) -> Attr | None:
        """Upload and commit everything written so far; EIO if the store failed.

        Returns the file's attributes after the commit (None if there was nothing to commit).
        """
        async with self._commit:
            slices, self.slices = self.slices, []
            if not slices:
                return None
            self._committing = slices
            try:
                return await self._commit_slices(slices)
            finally:
                self._committing = []

    async def _commit_slices(self, slices: list[SliceBuffer]) -> Attr | None:
        inline: dict[int, bytes] = {}  # slice id -> stored block, committed with the records
        plain: dict[int, bytearray] = {}  # slice id -> the inline slices' buffers
        held = 0  # budget of the inline slices' buffers, released once committed
        loop = asyncio.get_running_loop()
        for s in slices:
            for index, block in s.failed:  # an earlier flush could not save these: again
                s.uploads.append(loop.create_task(self._save(s, index, block, charged=False)))
            s.failed = []
            if not s.filled:
                continue
            block, s.buf, s.filled = s.buf, None, 0
            if not s.uploaded and s.length <= self.inline_limit:
                key = block_key(s.id, 0, s.length)
                inline[s.id] = encode_block(block, self.blocks.compression, self.blocks.cipher, key)
                plain[s.id] = block
                held += len(block)
            else:
                self._upload(s, block)
        try:
            return await self._store_and_commit(slices, inline)
        except _NotDurable as e:
            for s in slices:  # keep everything for the next flush
                s.sealed = True
                if s.id in plain:
                    s.buf = plain[s.id]
                    s.filled = len(s.buf)
            held = 0  # the restored buffers stay charged
            self.slices[:0] = slices  # before the slices opened since: later writes win
            raise e.error from None
        finally:
            if held:
                self.budget.release(held)

    async def _store_and_commit(
        self, slices: list[SliceBuffer], inline: dict[int, bytes]
    ) -> Attr | None:
        results = await asyncio.gather(
            *(t for s in slices for t in s.uploads), return_exceptions=True
        )
        for s in slices:
            s.uploads = []
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            log.error(
                "write inode %d: %d blocks could not be made durable (first: %s); "
                "kept buffered for the next fsync or close",
                self.inode,
                len(failures),
                failures[0],
            )
            self._failed = None
            raise _NotDurable(_upload_error(failures[0]))
        if len(inline) < len(slices):
            try:  # staged blocks (write-back, or spilled) are fsynced before their commit
                await self.blocks.make_durable()
            except FSError as e:
                log.error(
                    "write inode %d: staged blocks not durable (%s); kept buffered", self.inode, e
                )
                raise _NotDurable(e) from e
        records = [(s.index, Slice(s.pos, s.id, s.length, 0, s.length)) for s in slices]
        length = max(s.file_end for s in slices)
        return await self.meta.write_slices(self.inode, records, length, self.mtime, inline)


class _NotDurable(Exception):
    """Some blocks of a flush were saved nowhere: its slices are kept, `error` is raised."""

    def __init__(self, error: FSError) -> None:
        super().__init__(str(error))
        self.error = error


def _upload_error(cause: BaseException) -> FSError:
    if isinstance(cause, FSError):  # staging (write-back) says it itself: ENOSPC, EIO
        return cause
    code = errno.ENOSPC if isinstance(cause, StoreFull) else errno.EIO
    return FSError(code, f"upload failed: {cause}")
