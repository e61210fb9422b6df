"""The filesystem: POSIX semantics over the metadata engine and the block store.

Every FUSE request becomes one call here. This layer owns what neither metadata nor blocks
know alone: open handles and files deleted while open, buffered writers (a read first flushes
the file's pending writes), close-to-open (open keeps the kernel page cache only if the file
did not change), atime by a relatime rule, and read-only mounts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import stat
from collections import Counter, OrderedDict

from riverfs.chunk.block import BlockCorrupt
from riverfs.chunk.budget import BufferBudget
from riverfs.chunk.store import BlockStore
from riverfs.errors import FSError
from riverfs.meta import Attr, AttrChange, Entry, Meta, VolumeSettings, acl
from riverfs.meta.engine import now_ns
from riverfs.objects import StoreError
from riverfs.vfs import introspect, ranges
from riverfs.vfs.compactor import CompactionSettings, Compactor
from riverfs.vfs.deleter import Deleter
from riverfs.vfs.handles import Caller, HandleTable
from riverfs.vfs.locks import FileLocks
from riverfs.vfs.options import MountOptions
from riverfs.vfs.reader import FileReader
from riverfs.vfs.session import Session
from riverfs.vfs.watcher import ChangeWatcher
from riverfs.vfs.writer import FileWriter

log = logging.getLogger(__name__)

DAY_NS = 86_400 * 10**9
FREE_BATCH_DELAY = 0.005  # seconds a forgotten deleted inode waits to be freed with others
MAX_CACHE_STAMPS = 100_000
XATTR_NAMESPACES = (b"user.", b"trusted.", b"security.")  # system.*: only acl.NAMES
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND


@dataclasses.dataclass(slots=True, frozen=True)
class FsStats:
    block_size: int
    capacity: int
    used_bytes: int
    inodes: int


class VFS:
    # POSIX ACLs served (the kernel agreed to FUSE_POSIX_ACL and FUSE_DONT_MASK at INIT; the
    # FUSE layer sets it): system.posix_acl_* readable and settable, creates inherit them.
    acls = False

    def __init__(
        self, meta: Meta, blocks: BlockStore, settings: VolumeSettings, options: MountOptions
    ) -> None:
        self.meta = meta
        self.blocks = blocks
        self.settings = settings
        self.options = options
        self.handles = HandleTable()
        self.reader = FileReader(meta, blocks)
        self.budget = BufferBudget(options.buffer_size, self._relieve_pressure)
        self._relieving: asyncio.Task | None = None
        self._upload_slots = asyncio.Semaphore(options.upload_concurrency)
        self._writers: dict[int, FileWriter] = {}
        # Inodes deleted while this mount still uses them (open handles or kernel references):
        # freed when the last handle closes and the kernel forgets them.
        self._sustained: set[int] = set()
        self._kernel_refs: Counter[int] = Counter()  # FUSE lookup counts
        # Deleted inodes the kernel just forgot, freed together in one transaction soon
        # after (an rm -r sends a FORGET per file: one commit each would double its cost).
        self._forgotten: set[int] = set()
        self._freeing: asyncio.Task | None = None
        # Committed length of every open file: every change in this mount goes through here,
        # and open refreshes it from metadata (close-to-open), so reads need no query.
        self._lengths: dict[int, int] = {}
        self._stamps: OrderedDict[int, tuple[int, int]] = OrderedDict()  # page cache validity
        self.deleter = Deleter(meta, blocks)
        self.session = Session(
            meta,
            self.deleter,
            options.heartbeat,
            options.doom_grace,
            self._staged_bytes,
            options.metrics,
        )
        self.locks = FileLocks(meta)  # flock and POSIX locks, across every mount
        self.watcher = ChangeWatcher(self)
        self.compactor = Compactor(  # chunks this mount writes in many pieces, rewritten
            meta,
            blocks,
            CompactionSettings(
                min_slices=0 if options.read_only else options.compact_slices,
                max_overlap=options.compact_overlap,
                rate=options.compact_rate,
                delay=options.compact_delay,
            ),
            self.reader.invalidate,
        )

    # ---- life cycle -----------------------------------------------------------------------

    async def start(self, mountpoint: str) -> None:
        await self.session.start(mountpoint)
        self.deleter.start()
        self.watcher.start()
        self.compactor.start()

    async def stop(self) -> str | None:
        """Flush every writer, drain deletes, end the session. Called after unmount. Returns
        what the user must know about blocks left in staging (None: everything uploaded)."""
        note = None
        if self._freeing is not None:
            await self._freeing
        await self.compactor.stop()
        for inode in list(self._writers):
            try:
                await self._flush(inode)
            except FSError as e:
                log.error("flushing inode %d at unmount failed: %s", inode, e)
                self._writers[inode].abandon()
        await self.watcher.stop()
        staging = self.blocks.staging
        if staging is not None and staging.waiting:
            log.info("uploading %d staged blocks before unmounting", staging.waiting)
            if await staging.drain(self.options.unmount_wait):
                note = (
                    f"the store was unreachable for {self.options.unmount_wait:.0f}s: "
                    f"{staging.waiting} blocks ({staging.waiting_bytes:,} bytes) were not "
                    f"uploaded and stay in {staging.dir}; mount the volume again with this "
                    "cache dir to upload them (until then other mounts get EIO reading them)"
                )
                log.warning("%s", note)
        await self.deleter.stop()
        freed = await self.session.stop()
        if freed:
            log.info("freed %d deleted-but-open files at unmount", freed)
        try:
            await self.deleter.drain()
        except Exception as e:
            log.warning("deleting unreferenced data at unmount failed (gc will): %s", e)
        await self.blocks.close()
        self.meta.sync()
        await self.meta.close()
        return note

    # ---- helpers --------------------------------------------------------------------------

    def _writable(self) -> None:
        if self.options.read_only:
            raise FSError(errno.EROFS)

    def _merge(self, attr: Attr) -> Attr:
        """Attributes as this mount sees them, including writes not yet committed."""
        w = self._writers.get(attr.inode)
        if w is None or not w.dirty:
            return attr
        return dataclasses.replace(
            attr,
            size=max(attr.size, w.pending_length),
            mtime=w.mtime,
            ctime=max(attr.ctime, w.mtime),
        )

    async def _flush(self, inode: int) -> None:
        w = self._writers.get(inode)
        if w is not None and w.dirty:
            chunks = {s.index for s in w.slices}  # what this commit writes, for the compactor
            try:
                attr = await w.flush()
            finally:
                self.reader.invalidate(inode)
            if attr is not None:
                self._keep_cache(attr)  # the kernel's pages hold exactly what we committed
                self._note_length(attr)
                self.compactor.touched(inode, chunks)

    def _note_length(self, attr: Attr) -> None:
        if attr.inode in self._lengths:
            self._lengths[attr.inode] = attr.size

    def _relieve_pressure(self) -> None:
        """Write buffers are full: commit the file holding the most buffered bytes."""
        if self._relieving is not None and not self._relieving.done():
            return
        fullest = max(self._writers.values(), key=lambda w: w.buffered, default=None)
        if fullest is None or not fullest.buffered:
            return  # only uploads in flight: they release the budget when done
        self._relieving = asyncio.get_running_loop().create_task(self._flush_quietly(fullest))

    async def _flush_quietly(self, w: FileWriter) -> None:
        try:
            await self._flush(w.inode)
        except FSError as e:  # reported again by the file's own flush/close
            log.warning("early flush of inode %d failed: %s", w.inode, e)

    def in_use(self, inode: int) -> bool:
        """True while a handle is open or the kernel still refers to the inode."""
        return self.handles.is_open(inode) or self._kernel_refs.get(inode, 0) > 0

    def remember(self, inode: int) -> None:
        """The kernel learned of `inode` once more (a lookup-like reply)."""
        self._kernel_refs[inode] += 1

    async def forget(self, inode: int, count: int) -> None:
        """The kernel dropped `count` references to `inode`."""
        left = self._kernel_refs.get(inode, 0) - count
        if left > 0:
            self._kernel_refs[inode] = left
            return
        self._kernel_refs.pop(inode, None)
        if inode in self._sustained and not self.handles.is_open(inode):
            self._sustained.discard(inode)
            self._forgotten.add(inode)
            if self._freeing is None or self._freeing.done():
                self._freeing = asyncio.get_running_loop().create_task(self._free_forgotten())

    async def _free_forgotten(self) -> None:
        await asyncio.sleep(FREE_BATCH_DELAY)  # let the FORGETs of a burst gather
        while self._forgotten:
            batch = [self._forgotten.pop() for _ in range(min(len(self._forgotten), 1000))]
            try:
                if await self.meta.release_many(batch):
                    self.deleter.poke()
            except FSError as e:  # the session's end (or the next mount's cleanup) frees them
                log.warning("freeing %d deleted inodes failed: %s", len(batch), e)

    async def _free_sustained(self, inode: int) -> None:
        self._sustained.discard(inode)
        if await self.meta.release(inode):
            self.deleter.poke()

    def _staged_bytes(self) -> int:
        return self.blocks.staging.waiting_bytes if self.blocks.staging is not None else 0

    def is_open(self, inode: int) -> bool:
        """True while a handle of this mount is open on `inode`."""
        return self.handles.is_open(inode)

    def kernel_knows(self, inode: int) -> bool:
        """True if the kernel may cache entries or attributes of `inode`."""
        return inode == 1 or self._kernel_refs.get(inode, 0) > 0

    def known_inodes(self) -> list[int]:
        return [1, *self._kernel_refs]

    def open_inodes(self) -> list[int]:
        """Inodes with open handles in this mount."""
        return list(self._lengths)

    def sustained_here(self, inode: int) -> None:
        """Another mount deleted `inode`, which this mount uses: free it when done with it."""
        self._sustained.add(inode)

    async def changed_elsewhere(self, inode: int) -> None:
        """Another mount changed the contents of `inode`."""
        self.reader.invalidate(inode)
        w = self._writers.get(inode)
        if inode in self._lengths and (w is None or not w.dirty):
            try:
                self._lengths[inode] = (await self.meta.getattr(inode)).size
            except FSError:
                pass

    def _note_removed(self, attr: Attr | None) -> None:
        """An entry of `attr` was removed: if that was its last link, the inode lives on
        (sustained) while this mount still uses it."""
        if attr is None or (not attr.is_dir and attr.nlink > 1):
            return
        if self.in_use(attr.inode):
            self._sustained.add(attr.inode)
        self.deleter.poke()

    # ---- namespace ------------------------------------------------------------------------

    async def lookup(self, parent: int, name: bytes) -> Attr:
        return self._merge(await self.meta.lookup(parent, name))

    async def getattr(self, inode: int) -> Attr:
        return self._merge(await self.meta.getattr(inode))

    async def setattr(
        self,
        inode: int,
        change: AttrChange,
        size: int | None,
        caller: Caller = Caller(),
        kill_priv: bool = False,
    ) -> Attr:
        """Change attributes and/or the size. `kill_priv`: the kernel asks riverfs to drop
        setuid/setgid as a truncate or chown does (FATTR_KILL_SUIDGID)."""
        self._writable()
        attr = None
        if (size is not None or change.gid is not None or kill_priv) and change.mode is None:
            before = await self.meta.getattr(inode)  # judged on the group before a chgrp
            mode = _killed_mode(before, caller, kill_priv)
            if mode != before.mode:
                change.mode = mode
        if size is not None:
            await self._flush(inode)
            attr = await self.meta.truncate(inode, size)
            self.reader.invalidate(inode)
            self.deleter.poke()
        if any(v is not None for v in dataclasses.astuple(change)):
            if change.mtime is not None:
                await self._flush(inode)  # or the commit would stamp the write's own mtime
            attr = await self.meta.setattr(inode, change)
        if attr is None:
            attr = await self.meta.getattr(inode)
        self._note_length(attr)
        return self._merge(attr)

    async def create(
        self,
        parent: int,
        name: bytes,
        mode: int,
        uid: int,
        gid: int,
        rdev: int = 0,
        umask: int | None = None,
    ) -> Attr:
        """mknod/mkdir: make an inode of the type in `mode`. `umask`: riverfs applies it, or
        the parent's default ACL instead (None: the kernel applied it)."""
        self._writable()
        return await self.meta.create(parent, name, mode, uid, gid, rdev, umask=umask)

    async def symlink(self, parent: int, name: bytes, target: bytes, uid: int, gid: int) -> Attr:
        self._writable()
        if len(target) > 4095:
            raise FSError(errno.ENAMETOOLONG, "symlink target")
        return await self.meta.create(parent, name, stat.S_IFLNK | 0o777, uid, gid, target=target)

    async def readlink(self, inode: int) -> bytes:
        return await self.meta.readlink(inode)

    async def link(self, inode: int, parent: int, name: bytes) -> Attr:
        self._writable()
        return self._merge(await self.meta.link(inode, parent, name))

    async def unlink(self, parent: int, name: bytes) -> None:
        self._writable()
        self._note_removed(await self.meta.unlink(parent, name, self.in_use))

    async def rmdir(self, parent: int, name: bytes) -> None:
        self._writable()
        self._note_removed(await self.meta.rmdir(parent, name, self.in_use))

    async def rename(
        self,
        old_parent: int,
        old_name: bytes,
        new_parent: int,
        new_name: bytes,
        flags: int,
        caller: Caller = Caller(),
    ) -> None:
        """rename/renameat2; a RENAME_WHITEOUT's whiteout belongs to `caller`."""
        self._writable()
        replaced = await self.meta.rename(
            old_parent, old_name, new_parent, new_name, flags, self.in_use, caller.uid, caller.gid
        )
        if not flags & 2:  # RENAME_EXCHANGE keeps both
            self._note_removed(replaced)

    async def readdir(self, inode: int, after: int, limit: int) -> list[Entry]:
        entries = await self.meta.readdir(inode, after, limit)
        if not self._writers:
            return entries
        # readdirplus attributes overwrite the kernel's: they must include pending writes.
        return [dataclasses.replace(e, attr=self._merge(e.attr)) for e in entries]

    # ---- file data ------------------------------------------------------------------------

    def _keep_cache(self, attr: Attr) -> bool:
        """Close-to-open: the kernel's cached pages are good only if the file is unchanged."""
        stamp = (attr.size, attr.mtime)
        keep = self._stamps.get(attr.inode) == stamp
        self._stamps[attr.inode] = stamp
        self._stamps.move_to_end(attr.inode)
        if len(self._stamps) > MAX_CACHE_STAMPS:
            self._stamps.popitem(last=False)
        return keep

    async def open(
        self, inode: int, flags: int, caller: Caller, kill_priv: bool = False
    ) -> tuple[int, bool]:
        """Open a file; return (handle, keep kernel cache). `kill_priv`: an O_TRUNC open
        also drops setuid/setgid (FUSE_OPEN_KILL_SUIDGID)."""
        if flags & _WRITE_FLAGS:
            self._writable()
        attr = await self.meta.getattr(inode, fresh=True)  # close-to-open: ask the database
        if attr.is_dir:
            raise FSError(errno.EISDIR)
        if flags & os.O_TRUNC and attr.is_file:
            await self._flush(inode)  # pending writes of other handles count too
            attr = await self.meta.getattr(inode)
        if flags & os.O_TRUNC and attr.is_file and attr.size:
            attr = await self.meta.truncate(inode, 0)
            self.reader.invalidate(inode)
            self.deleter.poke()
        if kill_priv and flags & os.O_TRUNC and attr.is_file:
            mode = _killed_mode(attr, caller, True)
            if mode != attr.mode:
                attr = await self.meta.setattr(inode, AttrChange(mode=mode))
        if not self.handles.is_open(inode):
            self.reader.invalidate(inode)  # another mount may have changed it
        keep = self._keep_cache(attr)
        h = self.handles.open(inode, flags, caller)
        self._lengths[inode] = attr.size
        return h.fh, keep

    async def create_file(
        self,
        parent: int,
        name: bytes,
        mode: int,
        flags: int,
        caller: Caller,
        umask: int | None = None,
    ) -> tuple[int, Attr]:
        self._writable()
        attr = await self.meta.create(
            parent, name, stat.S_IFREG | stat.S_IMODE(mode), caller.uid, caller.gid, umask=umask
        )
        self._keep_cache(attr)
        h = self.handles.open(attr.inode, flags, caller)
        self._lengths[attr.inode] = attr.size
        h.wrote = True  # a new file carries no setgid bit to drop
        return h.fh, attr

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        return b"".join(await self.read_pieces(fh, offset, size))

    async def read_pieces(self, fh: int, offset: int, size: int) -> list[bytes | memoryview]:
        """`read` as the buffers holding the bytes (cached blocks are not copied)."""
        h = self.handles.get(fh)
        await self._flush(h.inode)
        length = self._lengths.get(h.inode)
        if length is None or not h.atime_checked:
            attr = await self.meta.getattr(h.inode)
            length = attr.size
            if not h.atime_checked:
                h.atime_checked = self.options.atime != "strictatime"  # strict: every read
                await self.touch_atime(attr)
        try:
            data = await self.reader.read_pieces(h.inode, offset, size, length, h.read_state)
        except BlockCorrupt as e:
            log.error("read inode %d at %d: corrupt block: %s", h.inode, offset, e)
            raise FSError(errno.EIO, str(e)) from e
        except StoreError as e:
            log.error("read inode %d at %d: store failed: %s", h.inode, offset, e)
            raise FSError(errno.EIO, str(e)) from e
        return data

    async def touch_atime(self, attr: Attr) -> None:
        """Update atime for a read as the mount's atime mode says: relatime (the default) if
        older than mtime/ctime or a day old, strictatime always, noatime never; nodiratime
        leaves directories alone."""
        mode = self.options.atime
        if self.options.read_only or mode == "noatime":
            return
        if self.options.nodiratime and stat.S_ISDIR(attr.mode):
            return
        t = now_ns()
        if (
            mode == "strictatime"
            or attr.atime <= attr.mtime
            or attr.atime <= attr.ctime
            or t - attr.atime >= DAY_NS
        ):
            await self.meta.touch_atime(attr.inode, t)

    async def write(self, fh: int, offset: int, data: bytes, kill_priv: bool = False) -> int:
        """Buffer a write. `kill_priv`: the kernel asks riverfs to drop setuid/setgid first,
        as a write by an unprivileged process does (FUSE_WRITE_KILL_SUIDGID)."""
        h = self.handles.get(fh)
        if not h.wrote or kill_priv:
            h.wrote = True
            attr = await self.meta.getattr(h.inode)
            mode = _killed_mode(attr, h.caller, kill_priv)
            if mode != attr.mode:
                await self.meta.setattr(h.inode, AttrChange(mode=mode))
        w = self._writers.get(h.inode)
        if w is None:
            w = self._writers[h.inode] = FileWriter(
                h.inode,
                self.meta,
                self.blocks,
                self.budget,
                self._upload_slots,
                self.settings.inline_limit,
            )
        await w.write(offset, data)
        return len(data)

    async def flush(self, fh: int) -> None:
        """close(2): everything written through this file is in the store and committed."""
        await self._flush(self.handles.get(fh).inode)

    async def fsync(self, fh: int) -> None:
        await self._flush(self.handles.get(fh).inode)
        self.meta.sync()

    async def release(self, fh: int) -> None:
        h, last = self.handles.close(fh)
        if not last:
            return
        try:
            await self._flush(h.inode)
        finally:
            w = self._writers.pop(h.inode, None)
            if w is not None and w.slices:
                w.abandon()  # not durable anywhere: the log says which bytes are lost
            self._lengths.pop(h.inode, None)
            if h.inode in self._sustained and not self._kernel_refs.get(h.inode):
                await self._free_sustained(h.inode)

    # ---- byte ranges: fallocate, SEEK_DATA / SEEK_HOLE, copy_file_range (meta/ranges.py) ---

    async def fallocate(self, fh: int, offset: int, length: int, mode: int) -> None:
        """fallocate(2), as ext4 answers it. Mode 0 allocates [offset, offset + length) (the
        file grows to its end; its holes read as zeros and count in st_blocks); KEEP_SIZE
        allocates within the size only; PUNCH_HOLE|KEEP_SIZE makes the range a real hole (the
        slice map holds nothing there, blocks nothing needs any more are deleted);
        ZERO_RANGE (with or without KEEP_SIZE) makes it read zeros, as allocated space.

        Errors: EINVAL (offset < 0, length <= 0), EOPNOTSUPP (any other mode, PUNCH_HOLE
        without KEEP_SIZE, COLLAPSE/INSERT/UNSHARE_RANGE), EROFS (read-only mount), EBADF (fh
        not open for writing), EFBIG (offset + length beyond 2**63 - 1), EISDIR / ENODEV (not
        a regular file), ENOSPC (allocating beyond the volume's capacity). Pending writes of
        the file are committed first.
        """
        ranges.check_fallocate(offset, length, mode)
        self._writable()
        h = self.handles.get(fh)
        ranges.check_write_handle(h)
        await self._flush(h.inode)
        try:
            attr = await self.meta.fallocate(
                h.inode,
                offset,
                length,
                mode,
                block_size=self.settings.block_size,
                capacity=self.settings.capacity,
            )
        finally:
            self.reader.invalidate(h.inode)
        self._note_length(attr)
        self.deleter.poke()

    async def lseek(self, fh: int, offset: int, whence: int) -> int:
        """lseek(2) SEEK_DATA (3) and SEEK_HOLE (4), from the slice map, in 4 KiB blocks as
        ext4 answers: a block holding any written byte is data; holes are ranges no slice
        covers, punched ranges and fallocated space (unwritten, as on ext4); the end of the
        file is a hole. ENXIO when offset >= size, and for SEEK_DATA when no data follows;
        EINVAL for another whence (SEEK_SET/CUR/END stay in the kernel); EBADF for a bad fh.
        Pending writes of the file are committed first."""
        ranges.check_seek(whence)
        h = self.handles.get(fh)
        await self._flush(h.inode)
        return await self.meta.seek(h.inode, offset, whence)

    async def copy_range(
        self, fh_in: int, off_in: int, fh_out: int, off_out: int, length: int
    ) -> int:
        """copy_file_range(2) within the volume: the destination's chunks name the source's
        slices (no block is read or written; one metadata transaction). Returns the bytes
        copied: `length` cut at the source's end, 0 at or after it. The destination grows as
        needed; later writes to either file never show in the other (slices are immutable;
        shared ones are counted in slice_refs and deleted with their last reference).

        Errors: EBADF (fh_in not readable, fh_out not writable or O_APPEND), EINVAL (negative
        offsets, overlapping ranges of one file, not regular files), EISDIR, EOVERFLOW (an
        offset + length beyond 2**63 - 1), EFBIG, EROFS. Pending writes of both files are
        committed first.
        """
        self._writable()
        h_in, h_out = self.handles.get(fh_in), self.handles.get(fh_out)
        ranges.check_copy(h_in, off_in, h_out, off_out, length)
        await self._flush(h_in.inode)
        await self._flush(h_out.inode)
        if not length:
            return 0
        if not h_out.wrote:  # a copy writes the destination: as `write` does
            h_out.wrote = True
            before = await self.meta.getattr(h_out.inode)
            mode = _killed_mode(before, h_out.caller, False)
            if mode != before.mode:
                await self.meta.setattr(h_out.inode, AttrChange(mode=mode))
        try:
            copied, attr = await self.meta.copy_range(
                h_in.inode, off_in, h_out.inode, off_out, length,
                block_size=self.settings.block_size,
            )  # fmt: skip
        finally:
            self.reader.invalidate(h_out.inode)
        self._note_length(attr)
        self.deleter.poke()
        return copied

    # ---- volume and extended attributes ---------------------------------------------------

    async def statfs(self) -> FsStats:
        usage = await self.meta.usage()
        return FsStats(
            self.settings.block_size, self.settings.capacity, usage.used_bytes, usage.inodes
        )

    async def getxattr(self, inode: int, name: bytes) -> bytes:
        if introspect.is_virtual(name):  # riverfs.*: answered by the daemon, never stored
            return await introspect.getxattr(self, inode, name)
        _check_xattr_name(name, self.acls)
        return await self.meta.getxattr(inode, name)

    async def listxattr(self, inode: int, caller: Caller) -> list[bytes]:
        names = await self.meta.listxattr(inode)
        if caller.uid != 0:  # trusted.* is for privileged processes only
            names = [n for n in names if not n.startswith(b"trusted.")]
        if not self.acls:  # a kernel without ACLs could not read them back
            names = [n for n in names if n not in acl.NAMES]
        return names

    async def setxattr(
        self, inode: int, name: bytes, value: bytes, flags: int, kill_sgid: bool = False
    ) -> None:
        """`kill_sgid`: the kernel found that the setter of an access ACL may not keep the
        file's setgid bit (FUSE_SETXATTR_ACL_KILL_SGID)."""
        introspect.refuse(name)
        self._writable()
        _check_xattr_name(name, self.acls)
        if name == acl.ACCESS:  # the mode follows the ACL, in the same transaction
            await acl.set_access(self.meta, inode, value, kill_sgid)
            return
        if name == acl.DEFAULT:
            acl.parse(value)  # the kernel checked it; another client may not have
        await self.meta.setxattr(
            inode,
            name,
            value,
            create=bool(flags & os.XATTR_CREATE),
            replace=bool(flags & os.XATTR_REPLACE),
        )

    async def removexattr(self, inode: int, name: bytes) -> None:
        introspect.refuse(name)
        self._writable()
        _check_xattr_name(name, self.acls)
        await self.meta.removexattr(inode, name)


def _check_xattr_name(name: bytes, acls: bool) -> None:
    """Namespaces as a local filesystem has them; the POSIX ACLs only while the kernel
    enforces them (`acls`), as a filesystem mounted without ACL support answers."""
    if name in acl.NAMES:
        if not acls:
            raise FSError(errno.EOPNOTSUPP, "POSIX ACLs need the kernel's FUSE_POSIX_ACL")
        return
    if not name.startswith(XATTR_NAMESPACES):
        raise FSError(errno.EOPNOTSUPP, f"xattr namespace of {name!r} is not supported")
    if name in XATTR_NAMESPACES:
        raise FSError(errno.EINVAL, "xattr name without a name after the namespace")


def _killed_mode(attr: Attr, caller: Caller, kill_priv: bool) -> int:
    """The mode after a write, truncate or chown by `caller`: without setgid when Linux drops
    it for that caller (`_kills_setgid`); and when the kernel asked (`kill_priv`, it decided
    the caller is unprivileged) without setuid, and without setgid if group-executable."""
    mode = attr.mode
    if not attr.is_file:
        return mode
    if kill_priv:
        mode &= ~stat.S_ISUID
        if mode & stat.S_IXGRP:
            mode &= ~stat.S_ISGID
    if _kills_setgid(attr, caller):
        mode &= ~stat.S_ISGID
    return mode


def _kills_setgid(attr: Attr, caller: Caller) -> bool:
    """Whether a write, truncate or chgrp by `caller` drops the file's setgid bit.

    Local Linux drops it when the caller is neither privileged nor in the file's group, even
    without group-exec; the kernel's FUSE code handles only the group-exec case (and setuid),
    so this one is ours.
    """
    mode = attr.mode
    if not attr.is_file or not mode & stat.S_ISGID or mode & stat.S_IXGRP:
        return False
    return not (caller.uid == 0 or caller.gid == attr.gid or attr.gid in _groups(caller.pid))


def _groups(pid: int) -> set[int]:
    """The supplementary groups of a process (empty if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()
