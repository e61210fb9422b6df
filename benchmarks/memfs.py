"""A minimal in-memory filesystem on riverfs's own FUSE layer: the Python FUSE ceiling.

The same filesystem as memfs_pyfuse3.py (a dict of inodes, file data kept as the buffers the
requests arrived in, no persistence), served by riverfs.fuse.session instead of pyfuse3, with
the mount options and kernel cache timeouts riverfs uses. Every handler answers inline (it
never awaits), so the session replies before reading the next request, without a task: this
is the least a Python filesystem on this layer can do, and fs_bench.py shows it next to
memfs_pyfuse3 (the ratio is what the new layer gained) and next to riverfs (the ratio is
riverfs's own cost).

    .venv/bin/python benchmarks/memfs.py MOUNTPOINT [--timeout S]
    # foreground; stop with fusermount3 -u MOUNTPOINT (or umount), SIGINT or SIGTERM
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import errno
import itertools
import logging
import os
import signal
import stat
import time

from riverfs.errors import FSError
from riverfs.fuse import protocol as p
from riverfs.fuse import session as fuse

ROOT = 1  # FUSE_ROOT_ID
BLOCK = 4096
MAX_WRITE = 1 << 20
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


class Data:
    """File contents with the least copying: appended writes keep the request's buffer as it
    is (a list of segments); any other write or truncate flattens to one bytearray."""

    __slots__ = ("starts", "segments", "size")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.segments: list[bytes | bytearray | memoryview] = []
        self.size = 0

    def _flat(self) -> bytearray:
        if len(self.segments) != 1 or not isinstance(self.segments[0], bytearray):
            flat = bytearray(b"".join(self.segments))
            self.starts, self.segments = [0], [flat]
        return self.segments[0]

    def write(self, off: int, buf: memoryview) -> None:
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


def _name(body: memoryview, start: int = 0) -> bytes:
    raw = bytes(body[start:])
    end = raw.find(b"\0")
    if end < 0:
        raise FSError(errno.EINVAL, "name without its terminating NUL")
    return raw[:end]


def _two_names(body: memoryview, start: int) -> tuple[bytes, bytes]:
    parts = bytes(body[start:]).split(b"\0")
    if len(parts) < 3:
        raise FSError(errno.EINVAL, "request without both of its names")
    return parts[0], parts[1]


class MemFS:
    def __init__(self, timeout: float = 1.0) -> None:
        whole = int(timeout)
        self.valid = (whole, int((timeout - whole) * 1e9))
        self.nodes: dict[int, Node] = {ROOT: Node(ROOT, stat.S_IFDIR | 0o755, os.getuid(), 0)}
        self.next_ino = itertools.count(ROOT + 1)
        self.next_fh = itertools.count(1)
        self.handles: dict[int, Node] = {}
        self.dir_handles: dict[int, list[tuple[bytes, int]]] = {}
        self.open_count: dict[int, int] = {}
        self.parents: dict[int, int] = {}

    def handlers(self) -> dict[int, fuse.Handler]:
        ops = {
            p.Op.LOOKUP: self.lookup,
            p.Op.FORGET: self.forget,
            p.Op.BATCH_FORGET: self.forget,
            p.Op.GETATTR: self.getattr,
            p.Op.SETATTR: self.setattr,
            p.Op.MKDIR: self.mkdir,
            p.Op.UNLINK: self.unlink,
            p.Op.RMDIR: self.rmdir,
            p.Op.RENAME: self.rename,
            p.Op.RENAME2: self.rename2,
            p.Op.OPEN: self.open,
            p.Op.CREATE: self.create,
            p.Op.READ: self.read,
            p.Op.WRITE: self.write,
            p.Op.FLUSH: self.ok,
            p.Op.FSYNC: self.ok,
            p.Op.RELEASE: self.release,
            p.Op.OPENDIR: self.opendir,
            p.Op.READDIR: self.readdir,
            p.Op.READDIRPLUS: self.readdirplus,
            p.Op.RELEASEDIR: self.releasedir,
            p.Op.FSYNCDIR: self.ok,
            p.Op.STATFS: self.statfs,
            p.Op.DESTROY: self.ok,
        }
        return {int(k): v for k, v in ops.items()}

    # helpers

    def _node(self, ino: int) -> Node:
        try:
            return self.nodes[ino]
        except KeyError:
            raise FSError(errno.ENOENT) from None

    def _dir(self, ino: int) -> Node:
        node = self._node(ino)
        if node.entries is None:
            raise FSError(errno.ENOTDIR)
        return node

    def _attr(self, node: Node) -> tuple:
        """The fields of a struct fuse_attr."""
        size = node.data.size
        a_s, a_ns = divmod(node.atime, 1_000_000_000)
        m_s, m_ns = divmod(node.mtime, 1_000_000_000)
        c_s, c_ns = divmod(node.ctime, 1_000_000_000)
        return (node.ino, size, (size + 511) // 512, a_s, m_s, c_s, a_ns, m_ns, c_ns,
                node.mode, node.nlink, node.uid, node.gid, 0, BLOCK, 0)  # fmt: skip

    def _entry(self, node: Node) -> bytes:
        s, ns = self.valid
        return p.ENTRY_OUT.pack(node.ino, 0, s, s, ns, ns, *self._attr(node))

    def _attr_out(self, node: Node) -> bytes:
        s, ns = self.valid
        return p.ATTR_OUT.pack(s, ns, 0, *self._attr(node))

    def _new(self, parent: int, name: bytes, mode: int, req: fuse.Request) -> Node:
        pdir = self._dir(parent)
        if name in pdir.entries:
            raise FSError(errno.EEXIST)
        if len(name) > 255:
            raise FSError(errno.ENAMETOOLONG)
        node = Node(next(self.next_ino), mode, req.uid, req.gid)
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

    async def lookup(self, req: fuse.Request, body: memoryview) -> bytes:
        pdir = self._dir(req.nodeid)
        name = _name(body)
        if name == b".":
            return self._entry(pdir)
        if name == b"..":
            return self._entry(self._node(self.parents.get(req.nodeid, ROOT)))
        ino = pdir.entries.get(name)
        if ino is None:
            raise FSError(errno.ENOENT)
        return self._entry(self.nodes[ino])

    async def forget(self, req: fuse.Request, body: memoryview) -> None:
        return None  # nodes live until unlinked and closed, as in memfs_pyfuse3

    async def getattr(self, req: fuse.Request, body: memoryview) -> bytes:
        return self._attr_out(self._node(req.nodeid))

    async def setattr(self, req: fuse.Request, body: memoryview) -> bytes:
        (valid, _, _fh, size, _owner, atime, mtime, _ctime, atime_ns, mtime_ns, _ctime_ns, mode,
         _, uid, gid, _) = p.SETATTR_IN.unpack_from(body)  # fmt: skip
        node = self._node(req.nodeid)
        now = time.time_ns()
        if valid & p.FATTR_SIZE:
            node.data.truncate(size)
            node.mtime = now
        if valid & p.FATTR_MODE:
            node.mode = (node.mode & ~0o7777) | (mode & 0o7777)
        if valid & p.FATTR_UID:
            node.uid = uid
        if valid & p.FATTR_GID:
            node.gid = gid
        if valid & p.FATTR_ATIME:
            node.atime = now if valid & p.FATTR_ATIME_NOW else atime * 1_000_000_000 + atime_ns
        if valid & p.FATTR_MTIME:
            node.mtime = now if valid & p.FATTR_MTIME_NOW else mtime * 1_000_000_000 + mtime_ns
        node.ctime = now
        return self._attr_out(node)

    async def mkdir(self, req: fuse.Request, body: memoryview) -> bytes:
        mode, _umask = p.MKDIR_IN.unpack_from(body)
        name = _name(body, p.MKDIR_IN.size)
        return self._entry(self._new(req.nodeid, name, stat.S_IFDIR | (mode & 0o7777), req))

    async def unlink(self, req: fuse.Request, body: memoryview) -> bytes:
        pdir = self._dir(req.nodeid)
        name = _name(body)
        ino = pdir.entries.get(name)
        if ino is None:
            raise FSError(errno.ENOENT)
        node = self.nodes[ino]
        if node.entries is not None:
            raise FSError(errno.EISDIR)
        del pdir.entries[name]
        pdir.mtime = pdir.ctime = node.ctime = time.time_ns()
        node.nlink -= 1
        self._maybe_free(node)
        return b""

    async def rmdir(self, req: fuse.Request, body: memoryview) -> bytes:
        pdir = self._dir(req.nodeid)
        name = _name(body)
        ino = pdir.entries.get(name)
        if ino is None:
            raise FSError(errno.ENOENT)
        node = self._dir(ino)
        if node.entries:
            raise FSError(errno.ENOTEMPTY)
        del pdir.entries[name]
        pdir.nlink -= 1
        pdir.mtime = pdir.ctime = time.time_ns()
        node.nlink = 0
        self.parents.pop(ino, None)
        self._maybe_free(node)
        return b""

    async def rename(self, req: fuse.Request, body: memoryview) -> bytes:
        (new_parent,) = p.RENAME_IN.unpack_from(body)
        old, new = _two_names(body, p.RENAME_IN.size)
        self._rename(req.nodeid, old, new_parent, new, 0)
        return b""

    async def rename2(self, req: fuse.Request, body: memoryview) -> bytes:
        new_parent, flags, _ = p.RENAME2_IN.unpack_from(body)
        old, new = _two_names(body, p.RENAME2_IN.size)
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE):
            raise FSError(errno.EINVAL)
        self._rename(req.nodeid, old, new_parent, new, flags)
        return b""

    def _rename(self, parent: int, old: bytes, new_parent: int, new: bytes, flags: int) -> None:
        src, dst = self._dir(parent), self._dir(new_parent)
        ino = src.entries.get(old)
        if ino is None:
            raise FSError(errno.ENOENT)
        node = self.nodes[ino]
        other = dst.entries.get(new)
        now = time.time_ns()
        if flags & RENAME_EXCHANGE:
            if other is None:
                raise FSError(errno.ENOENT)
            src.entries[old], dst.entries[new] = other, ino
            for child, home in ((ino, new_parent), (other, parent)):
                if child in self.parents:
                    self.parents[child] = home
            if parent != new_parent:
                moved = (self.nodes[ino].entries is not None) - (
                    self.nodes[other].entries is not None
                )
                src.nlink -= moved
                dst.nlink += moved
            src.mtime = src.ctime = dst.mtime = dst.ctime = now
            return
        if other == ino:
            return
        if other is not None:
            if flags & RENAME_NOREPLACE:
                raise FSError(errno.EEXIST)
            victim = self.nodes[other]
            if node.entries is not None:
                if victim.entries is None:
                    raise FSError(errno.ENOTDIR)
                if victim.entries:
                    raise FSError(errno.ENOTEMPTY)
                dst.nlink -= 1
                victim.nlink = 0
                self.parents.pop(other, None)
            elif victim.entries is not None:
                raise FSError(errno.EISDIR)
            else:
                victim.nlink -= 1
            victim.ctime = now
            self._maybe_free(victim)
        del src.entries[old]
        dst.entries[new] = ino
        if node.entries is not None:
            self.parents[ino] = new_parent
            src.nlink -= 1
            dst.nlink += 1
        node.ctime = src.mtime = src.ctime = dst.mtime = dst.ctime = now

    # directories

    async def opendir(self, req: fuse.Request, body: memoryview) -> bytes:
        node = self._dir(req.nodeid)
        fh = next(self.next_fh)
        parent = self.parents.get(req.nodeid, ROOT)
        # A snapshot per handle: offsets stay stable while entries change.
        self.dir_handles[fh] = [(b".", req.nodeid), (b"..", parent), *node.entries.items()]
        return p.OPEN_OUT.pack(fh, 0, 0)

    async def readdir(self, req: fuse.Request, body: memoryview) -> bytearray:
        return self._readdir(body, plus=False)

    async def readdirplus(self, req: fuse.Request, body: memoryview) -> bytearray:
        return self._readdir(body, plus=True)

    def _readdir(self, body: memoryview, plus: bool) -> bytearray:
        fh, start, size = p.READ_IN.unpack_from(body)[:3]
        entries = self.dir_handles.get(fh)
        if entries is None:
            raise FSError(errno.EBADF)
        out = bytearray()
        for i in range(start, len(entries)):
            name, ino = entries[i]
            node = self.nodes.get(ino)
            if node is None:
                continue
            if len(out) + p.dirent_size(len(name), plus) > size:
                break
            if plus:
                out += self._entry(node)
            out += p.DIRENT.pack(ino, i + 1, len(name), stat.S_IFMT(node.mode) >> 12)
            out += name
            out += b"\0" * (-len(name) % 8)
        return out

    async def releasedir(self, req: fuse.Request, body: memoryview) -> bytes:
        self.dir_handles.pop(p.RELEASE_IN.unpack_from(body)[0], None)
        return b""

    async def statfs(self, req: fuse.Request, body: memoryview) -> bytes:
        used = sum((n.data.size + BLOCK - 1) // BLOCK for n in self.nodes.values())
        total = 1 << 38  # 1 PiB in 4 KiB blocks
        files = 1 << 32
        free = files - len(self.nodes)
        return p.STATFS_OUT.pack(
            total, total - used, total - used, files, free, BLOCK, 255, BLOCK, 0
        )

    # data

    def _open(self, node: Node) -> bytes:
        fh = next(self.next_fh)
        self.handles[fh] = node
        self.open_count[node.ino] = self.open_count.get(node.ino, 0) + 1
        # Data never changes behind the kernel's back: keep the page cache across opens.
        return p.OPEN_OUT.pack(fh, p.FOPEN_KEEP_CACHE, 0)

    async def open(self, req: fuse.Request, body: memoryview) -> bytes:
        flags, _ = p.OPEN_IN.unpack_from(body)
        node = self._node(req.nodeid)
        if node.entries is not None:
            raise FSError(errno.EISDIR)
        if flags & os.O_TRUNC:
            node.data.truncate(0)
            node.mtime = node.ctime = time.time_ns()
        return self._open(node)

    async def create(self, req: fuse.Request, body: memoryview) -> list[bytes]:
        _flags, mode, _umask, _ = p.CREATE_IN.unpack_from(body)
        name = _name(body, p.CREATE_IN.size)
        node = self._new(req.nodeid, name, stat.S_IFREG | (mode & 0o7777), req)
        return [self._entry(node), self._open(node)]

    async def read(self, req: fuse.Request, body: memoryview) -> bytes | memoryview:
        fh, off, size = p.READ_IN.unpack_from(body)[:3]
        return self.handles[fh].data.read(off, size)

    async def write(self, req: fuse.Request, body: memoryview) -> bytes:
        fh, off, size = p.WRITE_IN.unpack_from(body)[:3]
        data = body[p.WRITE_IN.size : p.WRITE_IN.size + size]
        if len(data) != size:
            raise FSError(errno.EINVAL, f"write of {size} bytes carries {len(data)}")
        node = self.handles[fh]
        node.data.write(off, data)  # keeps the request's buffer: no copy
        node.mtime = node.ctime = time.time_ns()
        return p.WRITE_OUT.pack(size, 0)

    async def ok(self, req: fuse.Request, body: memoryview) -> bytes:
        return b""

    async def release(self, req: fuse.Request, body: memoryview) -> bytes:
        node = self.handles.pop(p.RELEASE_IN.unpack_from(body)[0])
        self.open_count[node.ino] -= 1
        if not self.open_count[node.ino]:
            del self.open_count[node.ino]
            self._maybe_free(node)
        return b""


def mount_options() -> list[str]:
    """The options riverfs mounts with (src/riverfs/fuse/mount.py: fuse_options)."""
    opts = ["default_permissions", f"max_read={MAX_WRITE}"]
    if os.getuid() == 0:
        opts.append("allow_other")
    else:
        opts += ["fsname=memfs", "subtype=memfs"]  # fusermount3 builds the type from these
    return opts


async def serve(mountpoint: str, timeout: float) -> None:
    # The path mountinfo will show; only the parent is resolved (as riverfs's mount_path).
    path = os.path.abspath(mountpoint)
    target = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    fs = MemFS(timeout)
    device = os.environ.get("RIVERFS_FUSE_DEVICE", "/dev/fuse")
    fd = fuse.mount(device, target, mount_options(), read_only=False)
    session = fuse.Session(fd, fs.handlers(), fuse.Settings(max_write=MAX_WRITE))
    session.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, session.stop)
    try:
        await session.wait_closed()
    finally:
        session.stop()
        fuse.unmount(target)  # a no-op once the kernel side is gone
        await session.drain()
        session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mountpoint")
    parser.add_argument("--timeout", type=float, default=1.0, help="attr/entry timeout (s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve(args.mountpoint, args.timeout))


if __name__ == "__main__":
    main()
