"""The mount's virtual files: `.riverfs/` in the mount root, served by the daemon itself.

- `.riverfs/stats` (world-readable): every metric, one `name value` line each (metrics.py)
- `.riverfs/accesslog` (root only): while open, one line per completed operation (trace.py)
- `.riverfs/config` (world-readable): the effective mount options and volume settings,
  secrets redacted

The directory is absent from the root's readdir but reachable by name. Its inodes sit at the
top of the inode space (`FIRST` up), where the metadata engine never allocates, and the session
routes their requests here (`Session(special=...)`), so they never reach the metadata engine.
Nothing can be created, removed, renamed, linked, written or changed there: EPERM.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import time
from collections.abc import Callable

from riverfs import metrics
from riverfs.errors import FSError
from riverfs.fuse import protocol as p
from riverfs.fuse.trace import VIRTUAL_FIRST, Observer, Reader
from riverfs.meta import Attr

NAME = b".riverfs"
FIRST = VIRTUAL_FIRST
DIR, STATS, ACCESSLOG, CONFIG = FIRST, FIRST + 1, FIRST + 2, FIRST + 3
FILES = {b"stats": (STATS, 0o444), b"accesslog": (ACCESSLOG, 0o400), b"config": (CONFIG, 0o444)}
FIRST_FH = 1 << 62  # handles of virtual files never meet the vfs's


def stats_text() -> bytes:
    """The contents of `.riverfs/stats`."""
    return "".join(metrics.sample_line(s) + "\n" for s in metrics.samples()).encode()


class VirtualFiles:
    """Serves every request on a virtual inode. `entry`/`attr_out` pack replies as the
    regular handlers do; `config` renders `.riverfs/config` when opened."""

    def __init__(
        self,
        entry: Callable[[Attr], bytes],
        attr_out: Callable[[Attr], bytes],
        observer: Observer,
        config: Callable[[], bytes],
    ) -> None:
        self._entry = entry
        self._attr_out = attr_out
        self.observer = observer
        self._config = config
        self._handles: dict[int, bytes | Reader] = {}
        self._fhs = itertools.count(FIRST_FH)
        now = time.time_ns()
        self._attrs = {DIR: Attr(DIR, stat.S_IFDIR | 0o555, 2, 0, 0, 0, 0, 0, now, now, now, 1)}
        for inode, mode in FILES.values():
            self._attrs[inode] = Attr(
                inode, stat.S_IFREG | mode, 1, 0, 0, 0, 0, 0, now, now, now, DIR
            )

    def routes(self, statfs) -> tuple[int, dict, Callable]:
        """What `Session(special=...)` takes: the first virtual inode, handlers by opcode,
        and the handler of everything else (EPERM)."""
        handlers = {
            p.Op.LOOKUP: self.lookup,
            p.Op.FORGET: self.forget,
            p.Op.GETATTR: self.getattr,
            p.Op.OPEN: self.open,
            p.Op.READ: self.read,
            p.Op.FLUSH: self.empty,
            p.Op.RELEASE: self.release,
            p.Op.OPENDIR: self.opendir,
            p.Op.READDIR: self.readdir,
            p.Op.READDIRPLUS: self.readdirplus,
            p.Op.RELEASEDIR: self.empty,
            p.Op.FSYNCDIR: self.empty,
            p.Op.ACCESS: self.empty,
            p.Op.GETXATTR: self.getxattr,
            p.Op.LISTXATTR: self.listxattr,
            p.Op.STATFS: statfs,
        }
        return FIRST, handlers, self.refuse

    def dir_entry(self) -> bytes:
        """The reply to a lookup of `.riverfs` in the root."""
        return self._entry(self._attrs[DIR])

    def close(self) -> None:
        """End every access-log stream (unmount): blocked reads return end of file."""
        for handle in self._handles.values():
            if isinstance(handle, Reader):
                self.observer.close_reader(handle)

    # ---- handlers

    async def refuse(self, req, body: memoryview) -> bytes:
        raise FSError(errno.EPERM, "the virtual files of .riverfs cannot be changed")

    async def empty(self, req, body: memoryview) -> bytes:
        return b""

    async def forget(self, req, body: memoryview) -> None:
        return None

    async def lookup(self, req, body: memoryview) -> bytes:
        name = bytes(body).split(b"\0", 1)[0]
        if req.nodeid != DIR:
            raise FSError(errno.ENOTDIR)
        if name == b"..":
            raise FSError(errno.ENOENT)  # the kernel resolves ".." of a directory it knows
        known = FILES.get(name)
        if known is None:
            raise FSError(errno.ENOENT)
        return self._entry(self._attrs[known[0]])

    async def getattr(self, req, body: memoryview) -> bytes:
        return self._attr_out(self._attr(req.nodeid))

    def _attr(self, inode: int) -> Attr:
        attr = self._attrs.get(inode)
        if attr is None:
            raise FSError(errno.ENOENT)
        return attr

    async def open(self, req, body: memoryview) -> bytes:
        flags, _ = p.OPEN_IN.unpack_from(body)
        inode = req.nodeid
        self._attr(inode)
        if inode == DIR:
            raise FSError(errno.EISDIR)
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            raise FSError(errno.EPERM, "the virtual files of .riverfs are read-only")
        fh = next(self._fhs)
        if inode == ACCESSLOG:
            self._handles[fh] = self.observer.open_reader()
            return p.OPEN_OUT.pack(fh, p.FOPEN_DIRECT_IO | p.FOPEN_NONSEEKABLE | p.FOPEN_STREAM, 0)
        self._handles[fh] = stats_text() if inode == STATS else self._config()
        return p.OPEN_OUT.pack(fh, p.FOPEN_DIRECT_IO, 0)

    async def read(self, req, body: memoryview) -> bytes:
        fh, offset, size = p.READ_IN.unpack_from(body)[:3]
        handle = self._handles.get(fh)
        if handle is None:
            raise FSError(errno.EBADF)
        if isinstance(handle, Reader):
            return await handle.take(size)
        return handle[offset : offset + size]

    async def release(self, req, body: memoryview) -> bytes:
        fh = p.RELEASE_IN.unpack_from(body)[0]
        handle = self._handles.pop(fh, None)
        if isinstance(handle, Reader):
            self.observer.close_reader(handle)
        return b""

    async def opendir(self, req, body: memoryview) -> bytes:
        if req.nodeid != DIR:
            raise FSError(errno.ENOTDIR)
        return p.OPEN_OUT.pack(0, 0, 0)

    async def readdir(self, req, body: memoryview) -> bytes:
        return self._listing(body, plus=False)

    async def readdirplus(self, req, body: memoryview) -> bytes:
        return self._listing(body, plus=True)

    def _listing(self, body: memoryview, plus: bool) -> bytes:
        _fh, start, size = p.READ_IN.unpack_from(body)[:3]
        names = [(b".", self._attrs[DIR]), (b"..", self._attrs[DIR])]
        names += [(name, self._attrs[inode]) for name, (inode, _) in FILES.items()]
        out = bytearray()
        for cookie, (name, attr) in enumerate(names, start=1):
            if cookie <= start:
                continue
            need = p.dirent_size(len(name), plus)
            if len(out) + need > size:
                break
            if plus:  # the kernel takes no attributes (nor a reference) for "." and ".."
                out += self._entry(attr)
            ino = 1 if name == b".." else attr.inode
            out += p.DIRENT.pack(ino, cookie, len(name), stat.S_IFMT(attr.mode) >> 12)
            out += name + b"\0" * ((-len(name)) % 8)
        return bytes(out)

    async def getxattr(self, req, body: memoryview) -> bytes:
        raise FSError(errno.ENODATA)

    async def listxattr(self, req, body: memoryview) -> bytes:
        size, _ = p.GETXATTR_IN.unpack_from(body)
        return p.GETXATTR_OUT.pack(0, 0) if size == 0 else b""
