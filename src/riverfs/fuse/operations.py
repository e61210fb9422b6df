"""The FUSE request handlers: each parses its request, makes one vfs call and packs the reply.

Handlers are coroutines `(request, body) -> reply` registered by opcode (`handlers()`); the
session runs them and translates their errors (fuse/session.py). Every reply that hands the
kernel an inode (lookup, create, mkdir, mknod, symlink, link, readdirplus entries) counts one
kernel reference (`vfs.remember`); FORGET gives them back, so a deleted inode lives exactly as
long as the kernel can still reach it.
"""

from __future__ import annotations

import errno
import logging
import os
import stat

from riverfs import metrics
from riverfs.errors import FSError
from riverfs.fuse import protocol as p
from riverfs.fuse import virtual
from riverfs.fuse.session import Handler, Request
from riverfs.meta import Attr, AttrChange
from riverfs.meta.engine import now_ns
from riverfs.vfs.fs import VFS
from riverfs.vfs.handles import Caller
from riverfs.vfs.options import MountOptions

log = logging.getLogger(__name__)

READDIR_PAGE = 128
DOT_COOKIES = 2  # "." and ".." take readdir cookies 1 and 2
BLKSIZE = 128 << 10
# Every FATTR_* bit the protocol defines (up to 7.39): FH and LOCKOWNER only say which fields
# are filled in, the others name what changes; an unknown bit is refused, never ignored.
SETATTR_VALID = (
    p.FATTR_MODE | p.FATTR_UID | p.FATTR_GID | p.FATTR_SIZE | p.FATTR_ATIME | p.FATTR_MTIME
    | p.FATTR_FH | p.FATTR_ATIME_NOW | p.FATTR_MTIME_NOW | p.FATTR_LOCKOWNER | p.FATTR_CTIME
    | p.FATTR_KILL_SUIDGID
)  # fmt: skip
RENAME_FLAGS = 1 | 2 | 4  # RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT
READ_BYTES = metrics.counter("fuse_read_bytes", "Bytes returned by FUSE reads.")
WRITE_BYTES = metrics.counter("fuse_written_bytes", "Bytes taken by FUSE writes.")


def _name(body: memoryview, start: int = 0) -> bytes:
    """The NUL-terminated name at `start` of a request body."""
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


def _not_virtual(parent: int, name: bytes) -> None:
    """Refuse to create, remove or rename `.riverfs` in the root (or anything under it)."""
    if (parent == 1 and name == virtual.NAME) or parent >= virtual.FIRST:
        raise FSError(errno.EPERM, "the .riverfs directory of the mount root is reserved")


def _split_ns(t: int) -> tuple[int, int]:
    return divmod(t, 1_000_000_000)


def _valid(seconds: float) -> tuple[int, int]:
    whole = int(seconds)
    return whole, int((seconds - whole) * 1e9)


class Operations:
    def __init__(self, vfs: VFS, options: MountOptions) -> None:
        self.vfs = vfs
        self.entry_valid = _valid(options.entry_timeout)
        self.attr_valid = _valid(options.attr_timeout)
        self.virtual: virtual.VirtualFiles | None = None  # .riverfs/ in the root, when served
        self.setxattr_in = p.SETXATTR_IN

    def initialized(self, agreed: p.Init) -> None:
        """What the kernel agreed to at INIT: with POSIX_ACL and DONT_MASK, ACLs are served
        and creates take the caller's umask (meta/acl.py); SETXATTR_EXT widens setxattr_in."""
        self.vfs.acls = bool(agreed & p.Init.POSIX_ACL and agreed & p.Init.DONT_MASK)
        self.setxattr_in = p.SETXATTR_IN_EXT if agreed & p.Init.SETXATTR_EXT else p.SETXATTR_IN

    def _umask(self, umask: int) -> int | None:
        """The umask riverfs applies at a create (None: the kernel applied it already)."""
        return umask if self.vfs.acls else None

    def handlers(self) -> dict[int, Handler]:
        """Opcode -> handler, for every request riverfs answers."""
        ops = {
            p.Op.LOOKUP: self.lookup,
            p.Op.FORGET: self.forget,
            p.Op.BATCH_FORGET: self.batch_forget,
            p.Op.GETATTR: self.getattr,
            p.Op.SETATTR: self.setattr,
            p.Op.READLINK: self.readlink,
            p.Op.SYMLINK: self.symlink,
            p.Op.MKNOD: self.mknod,
            p.Op.MKDIR: self.mkdir,
            p.Op.UNLINK: self.unlink,
            p.Op.RMDIR: self.rmdir,
            p.Op.RENAME: self.rename,
            p.Op.RENAME2: self.rename2,
            p.Op.LINK: self.link,
            p.Op.OPEN: self.open,
            p.Op.CREATE: self.create,
            p.Op.READ: self.read,
            p.Op.WRITE: self.write,
            p.Op.STATFS: self.statfs,
            p.Op.FLUSH: self.flush,
            p.Op.RELEASE: self.release,
            p.Op.FSYNC: self.fsync,
            p.Op.OPENDIR: self.opendir,
            p.Op.READDIR: self.readdir,
            p.Op.READDIRPLUS: self.readdirplus,
            p.Op.RELEASEDIR: self.releasedir,
            p.Op.FSYNCDIR: self.fsyncdir,
            p.Op.SETXATTR: self.setxattr,
            p.Op.GETXATTR: self.getxattr,
            p.Op.LISTXATTR: self.listxattr,
            p.Op.REMOVEXATTR: self.removexattr,
            p.Op.ACCESS: self.access,
            p.Op.GETLK: self.getlk,
            p.Op.SETLK: self.setlk,
            p.Op.SETLKW: self.setlkw,
            p.Op.FALLOCATE: self.fallocate,
            p.Op.LSEEK: self.lseek,
            p.Op.COPY_FILE_RANGE: self.copy_file_range,
            p.Op.DESTROY: self.destroy,
        }
        return {int(k): v for k, v in ops.items()}

    # ---- replies --------------------------------------------------------------------------

    def _attr(self, attr: Attr) -> tuple:
        """The fields of a struct fuse_attr."""
        a_s, a_ns = _split_ns(attr.atime)
        m_s, m_ns = _split_ns(attr.mtime)
        c_s, c_ns = _split_ns(attr.ctime)
        return (
            attr.inode,
            4096 if attr.is_dir else attr.size,
            (attr.stored + 511) // 512,
            a_s,
            m_s,
            c_s,
            a_ns,
            m_ns,
            c_ns,
            attr.mode,
            attr.nlink,
            attr.uid,
            attr.gid,
            attr.rdev & 0xFFFFFFFF,
            BLKSIZE,
            0,
        )

    def entry(self, attr: Attr) -> bytes:
        """A fuse_entry_out; does not count a kernel reference."""
        e_s, e_ns = self.entry_valid
        a_s, a_ns = self.attr_valid
        return p.ENTRY_OUT.pack(attr.inode, 0, e_s, a_s, e_ns, a_ns, *self._attr(attr))

    def _known(self, attr: Attr) -> bytes:
        """The reply for an inode handed to the kernel: counts one kernel reference."""
        self.vfs.remember(attr.inode)
        return self.entry(attr)

    def attr_out(self, attr: Attr) -> bytes:
        a_s, a_ns = self.attr_valid
        return p.ATTR_OUT.pack(a_s, a_ns, 0, *self._attr(attr))

    @staticmethod
    def _caller(req: Request) -> Caller:
        return Caller(req.uid, req.gid, req.pid)

    # ---- namespace ------------------------------------------------------------------------

    async def lookup(self, req: Request, body: memoryview) -> bytes:
        name = _name(body)
        if name == virtual.NAME and req.nodeid == 1 and self.virtual is not None:
            return self.virtual.dir_entry()
        return self._known(await self.vfs.lookup(req.nodeid, name))

    async def forget(self, req: Request, body: memoryview) -> None:
        (count,) = p.FORGET_IN.unpack_from(body)
        await self._forget(req.nodeid, count)

    async def batch_forget(self, req: Request, body: memoryview) -> None:
        (count, _) = p.BATCH_FORGET_IN.unpack_from(body)
        if len(body) < p.BATCH_FORGET_IN.size + count * p.FORGET_ONE.size:
            log.error("BATCH_FORGET of %d inodes in %d bytes ignored", count, len(body))
            return
        for i in range(count):
            inode, nlookup = p.FORGET_ONE.unpack_from(body, p.BATCH_FORGET_IN.size + i * 16)
            await self._forget(inode, nlookup)

    async def _forget(self, inode: int, count: int) -> None:
        try:
            await self.vfs.forget(inode, count)
        except Exception:  # forget has no reply: log, the session end frees the rest
            log.exception("forget of inode %d failed", inode)

    async def getattr(self, req: Request, body: memoryview) -> bytes:
        return self.attr_out(await self.vfs.getattr(req.nodeid))

    async def setattr(self, req: Request, body: memoryview) -> bytes:
        (valid, _, _fh, size, _owner, atime, mtime, ctime, atime_ns, mtime_ns, ctime_ns, mode, _,
         uid, gid, _) = p.SETATTR_IN.unpack_from(body)  # fmt: skip
        if valid & ~SETATTR_VALID:
            raise FSError(errno.EINVAL, f"setattr valid bits {valid & ~SETATTR_VALID:#x}")
        t = now_ns() if valid & (p.FATTR_ATIME_NOW | p.FATTR_MTIME_NOW) else 0
        atime_ns = atime * 1_000_000_000 + atime_ns
        mtime_ns = mtime * 1_000_000_000 + mtime_ns
        change = AttrChange(
            mode=mode if valid & p.FATTR_MODE else None,
            uid=uid if valid & p.FATTR_UID else None,
            gid=gid if valid & p.FATTR_GID else None,
            atime=(t if valid & p.FATTR_ATIME_NOW else atime_ns) if valid & p.FATTR_ATIME else None,
            mtime=(t if valid & p.FATTR_MTIME_NOW else mtime_ns) if valid & p.FATTR_MTIME else None,
            ctime=ctime * 1_000_000_000 + ctime_ns if valid & p.FATTR_CTIME else None,
        )
        new_size = size if valid & p.FATTR_SIZE else None
        kill = bool(valid & p.FATTR_KILL_SUIDGID)
        attr = await self.vfs.setattr(req.nodeid, change, new_size, self._caller(req), kill)
        return self.attr_out(attr)

    async def readlink(self, req: Request, body: memoryview) -> bytes:
        return await self.vfs.readlink(req.nodeid)

    async def mknod(self, req: Request, body: memoryview) -> bytes:
        mode, rdev, umask, _ = p.MKNOD_IN.unpack_from(body)
        name = _name(body, p.MKNOD_IN.size)
        _not_virtual(req.nodeid, name)
        attr = await self.vfs.create(
            req.nodeid, name, mode, req.uid, req.gid, rdev, self._umask(umask)
        )
        return self._known(attr)

    async def mkdir(self, req: Request, body: memoryview) -> bytes:
        mode, umask = p.MKDIR_IN.unpack_from(body)
        name = _name(body, p.MKDIR_IN.size)
        _not_virtual(req.nodeid, name)
        mode = stat.S_IFDIR | stat.S_IMODE(mode)
        attr = await self.vfs.create(
            req.nodeid, name, mode, req.uid, req.gid, 0, self._umask(umask)
        )
        return self._known(attr)

    async def symlink(self, req: Request, body: memoryview) -> bytes:
        name, target = _two_names(body, 0)
        _not_virtual(req.nodeid, name)
        return self._known(await self.vfs.symlink(req.nodeid, name, target, req.uid, req.gid))

    async def link(self, req: Request, body: memoryview) -> bytes:
        (inode,) = p.LINK_IN.unpack_from(body)
        name = _name(body, p.LINK_IN.size)
        _not_virtual(req.nodeid, name)
        _not_virtual(inode, b"")
        return self._known(await self.vfs.link(inode, req.nodeid, name))

    async def unlink(self, req: Request, body: memoryview) -> bytes:
        name = _name(body)
        _not_virtual(req.nodeid, name)
        await self.vfs.unlink(req.nodeid, name)
        return b""

    async def rmdir(self, req: Request, body: memoryview) -> bytes:
        name = _name(body)
        _not_virtual(req.nodeid, name)
        await self.vfs.rmdir(req.nodeid, name)
        return b""

    async def rename(self, req: Request, body: memoryview) -> bytes:
        (new_parent,) = p.RENAME_IN.unpack_from(body)
        old, new = _two_names(body, p.RENAME_IN.size)
        _not_virtual(req.nodeid, old)
        _not_virtual(new_parent, new)
        await self.vfs.rename(req.nodeid, old, new_parent, new, 0)
        return b""

    async def rename2(self, req: Request, body: memoryview) -> bytes:
        new_parent, flags, _ = p.RENAME2_IN.unpack_from(body)
        old, new = _two_names(body, p.RENAME2_IN.size)
        _not_virtual(req.nodeid, old)
        _not_virtual(new_parent, new)
        if flags & ~RENAME_FLAGS:
            raise FSError(errno.EINVAL, f"rename flags {flags:#x}")
        await self.vfs.rename(req.nodeid, old, new_parent, new, flags, self._caller(req))
        return b""

    # ---- directories ----------------------------------------------------------------------

    async def opendir(self, req: Request, body: memoryview) -> bytes:
        if not (await self.vfs.getattr(req.nodeid)).is_dir:
            raise FSError(errno.ENOTDIR)
        # cookies are stable, so a directory handle needs no state: it is the inode
        return p.OPEN_OUT.pack(req.nodeid, 0, 0)

    async def readdir(self, req: Request, body: memoryview) -> bytearray:
        return await self._readdir(req, body, plus=False)

    async def readdirplus(self, req: Request, body: memoryview) -> bytearray:
        return await self._readdir(req, body, plus=True)

    async def _readdir(self, req: Request, body: memoryview, plus: bool) -> bytearray:
        inode, start, size = p.READ_IN.unpack_from(body)[:3]
        out = bytearray()

        def add(name: bytes, attr: Attr, cookie: int) -> bool:
            need = p.dirent_size(len(name), plus)
            if len(out) + need > size:
                return False
            if plus:
                out.extend(self.entry(attr))
            kind = stat.S_IFMT(attr.mode) >> 12
            out.extend(p.DIRENT.pack(attr.inode, cookie, len(name), kind))
            out.extend(name)
            out.extend(b"\0" * ((-len(name)) % 8))
            return True

        vfs = self.vfs
        if start < 1:
            attr = await vfs.getattr(inode)
            await vfs.touch_atime(attr)
            if not add(b".", attr, 1):
                return out
        if start < 2:
            attr = await vfs.lookup(inode, b"..")
            if not add(b"..", attr, 2):
                return out
        after = max(start - DOT_COOKIES, 0)
        while True:
            entries = await vfs.readdir(inode, after, READDIR_PAGE)
            for e in entries:
                if not add(e.name, e.attr, e.cookie + DOT_COOKIES):
                    return out
                if plus:
                    vfs.remember(e.attr.inode)  # only entries the kernel gets count
                after = e.cookie
            if len(entries) < READDIR_PAGE:
                return out

    async def releasedir(self, req: Request, body: memoryview) -> bytes:
        return b""

    async def fsyncdir(self, req: Request, body: memoryview) -> bytes:
        self.vfs.meta.sync()
        return b""

    # ---- files ----------------------------------------------------------------------------

    async def open(self, req: Request, body: memoryview) -> bytes:
        flags, open_flags = p.OPEN_IN.unpack_from(body)
        kill = bool(open_flags & p.FUSE_OPEN_KILL_SUIDGID)
        fh, keep = await self.vfs.open(req.nodeid, flags, self._caller(req), kill)
        return p.OPEN_OUT.pack(fh, p.FOPEN_KEEP_CACHE if keep else 0, 0)

    async def create(self, req: Request, body: memoryview) -> list[bytes]:
        flags, mode, umask, _ = p.CREATE_IN.unpack_from(body)
        name = _name(body, p.CREATE_IN.size)
        _not_virtual(req.nodeid, name)
        fh, attr = await self.vfs.create_file(
            req.nodeid, name, mode, flags, self._caller(req), self._umask(umask)
        )
        return [self._known(attr), p.OPEN_OUT.pack(fh, 0, 0)]

    async def read(self, req: Request, body: memoryview) -> list[bytes | memoryview]:
        fh, offset, size = p.READ_IN.unpack_from(body)[:3]
        pieces = await self.vfs.read_pieces(fh, offset, size)
        n = 0
        for piece in pieces:
            n += len(piece)
        READ_BYTES.inc(n)
        return pieces

    async def write(self, req: Request, body: memoryview) -> bytes:
        fh, offset, size, write_flags = p.WRITE_IN.unpack_from(body)[:4]
        data = body[p.WRITE_IN.size : p.WRITE_IN.size + size]
        if len(data) != size:
            raise FSError(errno.EINVAL, f"write of {size} bytes carries {len(data)}")
        kill = bool(write_flags & p.FUSE_WRITE_KILL_SUIDGID)
        written = await self.vfs.write(fh, offset, data, kill)
        WRITE_BYTES.inc(written)
        return p.WRITE_OUT.pack(written, 0)

    async def flush(self, req: Request, body: memoryview) -> bytes:
        fh, _, _, lock_owner = p.FLUSH_IN.unpack_from(body)
        try:
            await self.vfs.flush(fh)
        finally:  # close(2) drops the closing process's POSIX locks on the file
            await self.vfs.locks.release_owner(req.nodeid, lock_owner)
        return b""

    async def fsync(self, req: Request, body: memoryview) -> bytes:
        fh = p.FSYNC_IN.unpack_from(body)[0]
        await self.vfs.fsync(fh)
        return b""

    async def release(self, req: Request, body: memoryview) -> bytes:
        fh, _, release_flags, lock_owner = p.RELEASE_IN.unpack_from(body)
        try:
            await self.vfs.release(fh)
        finally:
            if release_flags & p.FUSE_RELEASE_FLOCK_UNLOCK:
                await self.vfs.locks.release_flock(req.nodeid, lock_owner)
        return b""

    async def fallocate(self, req: Request, body: memoryview) -> bytes:
        fh, offset, length, mode, _ = p.FALLOCATE_IN.unpack_from(body)
        await self.vfs.fallocate(fh, offset, length, mode)
        return b""

    async def lseek(self, req: Request, body: memoryview) -> bytes:
        fh, offset, whence, _ = p.LSEEK_IN.unpack_from(body)
        return p.LSEEK_OUT.pack(await self.vfs.lseek(fh, offset, whence))

    async def copy_file_range(self, req: Request, body: memoryview) -> bytes:
        fh_in, off_in, nodeid_out, fh_out, off_out, length, flags = (
            p.COPY_FILE_RANGE_IN.unpack_from(body)
        )
        _not_virtual(nodeid_out, b"")
        if flags:
            raise FSError(errno.EINVAL, f"copy_file_range flags {flags:#x}")
        length = min(length, 0xFFFFFFFF)  # fuse_write_out.size is 32 bits
        copied = await self.vfs.copy_range(fh_in, off_in, fh_out, off_out, length)
        return p.WRITE_OUT.pack(copied, 0)

    # ---- locks ----------------------------------------------------------------------------

    async def getlk(self, req: Request, body: memoryview) -> bytes:
        _fh, owner, start, end, kind, pid, _flags, _ = p.LK_IN.unpack_from(body)
        held = await self.vfs.locks.getlk(req.nodeid, owner, start, end, kind, pid)
        h_type, h_start, h_end, h_pid = held
        return p.LK_OUT.pack(h_start, h_end, h_type, h_pid)

    async def setlk(self, req: Request, body: memoryview, wait: bool = False) -> bytes:
        _fh, owner, start, end, kind, pid, flags, _ = p.LK_IN.unpack_from(body)
        flock = bool(flags & p.FUSE_LK_FLOCK)
        await self.vfs.locks.setlk(req.nodeid, owner, start, end, kind, pid, wait, flock)
        return b""

    async def setlkw(self, req: Request, body: memoryview) -> bytes:
        return await self.setlk(req, body, wait=True)

    # ---- volume and extended attributes ---------------------------------------------------

    async def statfs(self, req: Request, body: memoryview) -> bytes:
        st = await self.vfs.statfs()
        free = max(st.capacity - st.used_bytes, 0) // 4096
        files = st.inodes + (1 << 30)
        return p.STATFS_OUT.pack(
            st.capacity // 4096, free, free, files, 1 << 30, 4096, 255, 4096, 0
        )

    async def access(self, req: Request, body: memoryview) -> bytes:
        return b""  # mounted with default_permissions: the kernel checks

    async def destroy(self, req: Request, body: memoryview) -> bytes:
        return b""

    async def getxattr(self, req: Request, body: memoryview) -> bytes:
        size, _ = p.GETXATTR_IN.unpack_from(body)
        value = await self.vfs.getxattr(req.nodeid, _name(body, p.GETXATTR_IN.size))
        return _sized(value, size)

    async def listxattr(self, req: Request, body: memoryview) -> bytes:
        size, _ = p.GETXATTR_IN.unpack_from(body)
        names = await self.vfs.listxattr(req.nodeid, self._caller(req))
        return _sized(b"".join(n + b"\0" for n in names), size)

    async def setxattr(self, req: Request, body: memoryview) -> bytes:
        size, flags, *ext = self.setxattr_in.unpack_from(body)
        kill_sgid = bool(ext and ext[0] & p.FUSE_SETXATTR_ACL_KILL_SGID)
        raw = bytes(body[self.setxattr_in.size :])
        end = raw.find(b"\0")
        if end < 0 or len(raw) - end - 1 < size:
            raise FSError(errno.EINVAL, "setxattr without its name or value")
        if flags & ~(os.XATTR_CREATE | os.XATTR_REPLACE):
            raise FSError(errno.EINVAL, f"setxattr flags {flags:#x}")
        value = raw[end + 1 : end + 1 + size]
        await self.vfs.setxattr(req.nodeid, raw[:end], value, flags, kill_sgid)
        return b""

    async def removexattr(self, req: Request, body: memoryview) -> bytes:
        await self.vfs.removexattr(req.nodeid, _name(body))
        return b""


def _sized(value: bytes, size: int) -> bytes:
    """A getxattr/listxattr reply: the length alone when asked with size 0, ERANGE when the
    caller's buffer is too small."""
    if size == 0:
        return p.GETXATTR_OUT.pack(len(value), 0)
    if len(value) > size:
        raise FSError(errno.ERANGE)
    return value
