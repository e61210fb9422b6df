"""The old Python FUSE ceiling: a minimal in-memory filesystem on pyfuse3 (asyncio mode).

riverfs served its mounts through pyfuse3 until issue 9 replaced it with its own protocol
layer (src/riverfs/fuse/). This filesystem is kept, unchanged, so that fs_bench.py can show
in every run the ratio between the new layer (benchmarks/memfs.py, the same filesystem on
riverfs.fuse.session) and pyfuse3. It does the least a pyfuse3 filesystem can do (a dict of
inodes, file data in bytes objects, no persistence), with riverfs's mount options and kernel
cache timeouts.

pyfuse3 is no dependency of riverfs: fs_bench.py installs it (and trio) into its own venv,
benchmarks/.venv-pyfuse3 (building it needs libfuse3-dev, pkg-config and gcc).

    benchmarks/.venv-pyfuse3/bin/python benchmarks/memfs_pyfuse3.py MOUNTPOINT [--timeout S]
    # foreground; stop with fusermount3 -u MOUNTPOINT
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import errno
import itertools
import os
import signal
import stat
import time

import pyfuse3
import pyfuse3.asyncio

pyfuse3.asyncio.enable()

ROOT = pyfuse3.ROOT_INODE
BLOCK = 4096


class Data:
    """File contents with the least copying: appended writes keep pyfuse3's bytes objects
    as they are (a list of segments); any other write or truncate flattens to one bytearray."""

    __slots__ = ("starts", "segments", "size")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.segments: list[bytes | bytearray] = []
        self.size = 0

    def _flat(self) -> bytearray:
        if len(self.segments) != 1 or not isinstance(self.segments[0], bytearray):
            flat = bytearray(b"".join(self.segments))
            self.starts, self.segments = [0], [flat]
        return self.segments[0]

    def write(self, off: int, buf: bytes) -> None:
        if off == self.size:
            self.starts.append(off)
            self.segments.append(buf)
            self.size += len(buf)
            return
        flat = self._flat()
        if off > len(flat):
            flat.extend(bytes(off - len(flat)))
        flat[off : off + len(buf)] = buf
        self.size = len(flat)

    def truncate(self, size: int) -> None:
        if size == 0:
            self.starts, self.segments = [], []
        elif size != self.size:
            flat = self._flat()
            if size < len(flat):
                del flat[size:]
            else:
                flat.extend(bytes(size - len(flat)))
        self.size = size

    def read(self, off: int, size: int) -> bytes | memoryview:
        end = min(off + size, self.size)
        if off >= end:
            return b""
        i = bisect.bisect_right(self.starts, off) - 1
        seg_start, seg = self.starts[i], self.segments[i]
        if end <= seg_start + len(seg):  # the common case: one segment, no copy
            return memoryview(seg)[off - seg_start : end - seg_start]
        parts = []
        while off < end:
            seg_start, seg = self.starts[i], self.segments[i]
            take = min(end, seg_start + len(seg)) - off
            parts.append(memoryview(seg)[off - seg_start : off - seg_start + take])
            off += take
            i += 1
        return b"".join(parts)


class Node:
    __slots__ = ("ino", "mode", "uid", "gid", "nlink", "atime", "mtime", "ctime", "data", "entries")

    def __init__(self, ino: int, mode: int, uid: int, gid: int) -> None:
        now = time.time_ns()
        self.ino = ino
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.nlink = 2 if stat.S_ISDIR(mode) else 1
        self.atime = self.mtime = self.ctime = now
        self.data = Data()
        self.entries: dict[bytes, int] | None = {} if stat.S_ISDIR(mode) else None


class MemFS(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, timeout: float = 1.0) -> None:
        super().__init__()
        self.timeout = timeout
        self.nodes: dict[int, Node] = {ROOT: Node(ROOT, stat.S_IFDIR | 0o755, os.getuid(), 0)}
        self.next_ino = itertools.count(ROOT + 1)
        self.next_fh = itertools.count(1)
        self.handles: dict[int, Node] = {}
        self.dir_handles: dict[int, list[tuple[bytes, int]]] = {}
        self.open_count: dict[int, int] = {}
        self.parents: dict[int, int] = {}

    # helpers

    def _node(self, ino: int) -> Node:
        try:
            return self.nodes[ino]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def _dir(self, ino: int) -> Node:
        node = self._node(ino)
        if node.entries is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return node

    def _attr(self, node: Node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.ino
        a.generation = 0
        a.entry_timeout = self.timeout
        a.attr_timeout = self.timeout
        a.st_mode = node.mode
        a.st_nlink = node.nlink
        a.st_uid = node.uid
        a.st_gid = node.gid
        a.st_rdev = 0
        a.st_size = node.data.size
        a.st_blksize = BLOCK
        a.st_blocks = (node.data.size + 511) // 512
        a.st_atime_ns = node.atime
        a.st_mtime_ns = node.mtime
        a.st_ctime_ns = node.ctime
        return a

    def _new(self, parent: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext) -> Node:
        pdir = self._dir(parent)
        if name in pdir.entries:
            raise pyfuse3.FUSEError(errno.EEXIST)
        if len(name) > 255:
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
        node = Node(next(self.next_ino), mode, ctx.uid, ctx.gid)
        self.nodes[node.ino] = node
        pdir.entries[name] = node.ino
        pdir.mtime = pdir.ctime = node.ctime
        if stat.S_ISDIR(mode):
            pdir.nlink += 1
            self.parents[node.ino] = parent
        return node

    def _maybe_free(self, node: Node) -> None:
        if node.nlink == 0 and not self.open_count.get(node.ino):
            self.nodes.pop(node.ino, None)

    # metadata

    async def lookup(self, parent_inode, name, ctx=None):
        pdir = self._dir(parent_inode)
        if name == b".":
            return self._attr(pdir)
        ino = pdir.entries.get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(self.nodes[ino])

    async def forget(self, inode_list):
        pass

    async def getattr(self, inode, ctx=None):
        return self._attr(self._node(inode))

    async def setattr(self, inode, attr, fields, fh, ctx):
        node = self._node(inode)
        now = time.time_ns()
        if fields.update_size:
            node.data.truncate(attr.st_size)
            node.mtime = now
        if fields.update_mode:
            node.mode = (node.mode & ~0o7777) | (attr.st_mode & 0o7777)
        if fields.update_uid:
            node.uid = attr.st_uid
        if fields.update_gid:
            node.gid = attr.st_gid
        if fields.update_atime:
            node.atime = attr.st_atime_ns
        if fields.update_mtime:
            node.mtime = attr.st_mtime_ns
        node.ctime = now
        return self._attr(node)

    async def mkdir(self, parent_inode, name, mode, ctx):
        return self._attr(self._new(parent_inode, name, stat.S_IFDIR | (mode & 0o7777), ctx))

    async def unlink(self, parent_inode, name, ctx):
        pdir = self._dir(parent_inode)
        ino = pdir.entries.get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        node = self.nodes[ino]
        if node.entries is not None:
            raise pyfuse3.FUSEError(errno.EISDIR)
        del pdir.entries[name]
        pdir.mtime = pdir.ctime = node.ctime = time.time_ns()
        node.nlink -= 1
        self._maybe_free(node)

    async def rmdir(self, parent_inode, name, ctx):
        pdir = self._dir(parent_inode)
        ino = pdir.entries.get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        node = self._dir(ino)
        if node.entries:
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        del pdir.entries[name]
        pdir.nlink -= 1
        pdir.mtime = pdir.ctime = time.time_ns()
        node.nlink = 0
        self.parents.pop(ino, None)
        self._maybe_free(node)

    async def opendir(self, inode, ctx):
        node = self._dir(inode)
        fh = next(self.next_fh)
        parent = self.parents.get(inode, ROOT)
        # A snapshot per handle: offsets stay stable while entries change.
        self.dir_handles[fh] = [(b".", inode), (b"..", parent), *node.entries.items()]
        return fh

    async def readdir(self, fh, start_id, token):
        entries = self.dir_handles[fh]
        for i in range(start_id, len(entries)):
            name, ino = entries[i]
            node = self.nodes.get(ino)
            if node is None:
                continue
            if not pyfuse3.readdir_reply(token, name, self._attr(node), i + 1):
                break

    async def releasedir(self, fh):
        self.dir_handles.pop(fh, None)

    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        used = sum((n.data.size + BLOCK - 1) // BLOCK for n in self.nodes.values())
        total = 1 << 38  # 1 PiB in 4 KiB blocks
        s.f_bsize = s.f_frsize = BLOCK
        s.f_blocks = total
        s.f_bfree = s.f_bavail = total - used
        s.f_files = 1 << 32
        s.f_ffree = s.f_favail = (1 << 32) - len(self.nodes)
        s.f_namemax = 255
        return s

    # data

    def _open(self, node: Node, flags: int) -> pyfuse3.FileInfo:
        fh = next(self.next_fh)
        self.handles[fh] = node
        self.open_count[node.ino] = self.open_count.get(node.ino, 0) + 1
        # Data never changes behind the kernel's back: keep the page cache across opens.
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    async def open(self, inode, flags, ctx):
        node = self._node(inode)
        if node.entries is not None:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & os.O_TRUNC:
            node.data.truncate(0)
            node.mtime = node.ctime = time.time_ns()
        return self._open(node, flags)

    async def create(self, parent_inode, name, mode, flags, ctx):
        node = self._new(parent_inode, name, stat.S_IFREG | (mode & 0o7777), ctx)
        return self._open(node, flags), self._attr(node)

    async def read(self, fh, off, size):
        return self.handles[fh].data.read(off, size)

    async def write(self, fh, off, buf):
        node = self.handles[fh]
        node.data.write(off, buf)
        node.mtime = node.ctime = time.time_ns()
        return len(buf)

    async def flush(self, fh):
        pass

    async def fsync(self, fh, datasync):
        pass

    async def release(self, fh):
        node = self.handles.pop(fh)
        self.open_count[node.ino] -= 1
        if not self.open_count[node.ino]:
            del self.open_count[node.ino]
            self._maybe_free(node)


def mount_options(fsname: str) -> set[str]:
    """The options riverfs mounts with (src/riverfs/fuse/mount.py: fuse_options)."""
    opts = {f"fsname={fsname}", "subtype=memfs", "default_permissions"}
    if os.getuid() == 0:
        opts.add("allow_other")
    return opts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mountpoint")
    parser.add_argument("--timeout", type=float, default=1.0, help="attr/entry timeout (s)")
    parser.add_argument("--fsname", default="memfs")
    args = parser.parse_args()

    fs = MemFS(timeout=args.timeout)
    pyfuse3.init(fs, args.mountpoint, mount_options(args.fsname))

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, pyfuse3.terminate)
        await pyfuse3.main()

    try:
        asyncio.run(serve())
    finally:
        # After fusermount3 -u the kernel side is gone already; after a signal, unmount here.
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()
