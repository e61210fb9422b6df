"""pyfuse3 Operations: each handler translates arguments into one vfs call and back.

Errors are translated here, once: FSError becomes FUSEError with its errno; anything
unexpected is logged with the operation and inode and answered with EIO, and the mount keeps
running. Every reply that hands the kernel an inode (lookup, create, mkdir, mknod, symlink,
link, readdirplus entries) counts one kernel reference (`vfs.remember`); `forget` gives them
back, so a deleted inode lives exactly as long as the kernel can still reach it.
"""

from __future__ import annotations

import errno
import functools
import logging
import stat

import pyfuse3

from riverfs.errors import FSError
from riverfs.meta import Attr, AttrChange
from riverfs.vfs.fs import VFS
from riverfs.vfs.handles import Caller
from riverfs.vfs.options import MountOptions

log = logging.getLogger(__name__)

READDIR_PAGE = 128
DOT_COOKIES = 2  # "." and ".." take readdir cookies 1 and 2


def _handler(fn):
    """Translate errors of one FUSE handler; log unexpected ones with op and first argument."""

    @functools.wraps(fn)
    async def wrapper(self, *args):
        try:
            return await fn(self, *args)
        except FSError as e:
            raise pyfuse3.FUSEError(e.errno) from None
        except pyfuse3.FUSEError:
            raise
        except Exception:
            log.exception("%s%r failed unexpectedly; answering EIO", fn.__name__, args[:1])
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, vfs: VFS, options: MountOptions) -> None:
        super().__init__()
        self.vfs = vfs
        self.attr_timeout = options.attr_timeout
        self.entry_timeout = options.entry_timeout

    def _known(self, attr: Attr) -> pyfuse3.EntryAttributes:
        """The reply for an inode handed to the kernel: counts one kernel reference."""
        self.vfs.remember(attr.inode)
        return self._entry(attr)

    def _entry(self, attr: Attr) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = attr.inode
        e.generation = 0
        e.entry_timeout = self.entry_timeout
        e.attr_timeout = self.attr_timeout
        e.st_mode = attr.mode
        e.st_nlink = attr.nlink
        e.st_uid = attr.uid
        e.st_gid = attr.gid
        e.st_rdev = attr.rdev
        e.st_size = 4096 if attr.is_dir else attr.size
        e.st_blksize = 128 << 10
        e.st_blocks = (attr.stored + 511) // 512
        e.st_atime_ns = attr.atime
        e.st_mtime_ns = attr.mtime
        e.st_ctime_ns = attr.ctime
        return e

    # ---- namespace ------------------------------------------------------------------------

    @_handler
    async def lookup(self, parent_inode, name, ctx=None):
        return self._known(await self.vfs.lookup(parent_inode, name))

    async def forget(self, inode_list):
        for inode, count in inode_list:
            try:
                await self.vfs.forget(inode, count)
            except Exception:  # forget has no reply: log, the session end frees the rest
                log.exception("forget of inode %d failed", inode)

    @_handler
    async def getattr(self, inode, ctx=None):
        return self._entry(await self.vfs.getattr(inode))

    @_handler
    async def setattr(self, inode, attr, fields, fh, ctx):
        change = AttrChange(
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            atime=attr.st_atime_ns if fields.update_atime else None,
            mtime=attr.st_mtime_ns if fields.update_mtime else None,
            ctime=attr.st_ctime_ns if fields.update_ctime else None,
        )
        size = attr.st_size if fields.update_size else None
        caller = Caller(ctx.uid, ctx.gid, ctx.pid)
        return self._entry(await self.vfs.setattr(inode, change, size, caller))

    @_handler
    async def readlink(self, inode, ctx):
        return await self.vfs.readlink(inode)

    @_handler
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        return self._known(await self.vfs.create(parent_inode, name, mode, ctx.uid, ctx.gid, rdev))

    @_handler
    async def mkdir(self, parent_inode, name, mode, ctx):
        mode = stat.S_IFDIR | stat.S_IMODE(mode)
        return self._known(await self.vfs.create(parent_inode, name, mode, ctx.uid, ctx.gid))

    @_handler
    async def symlink(self, parent_inode, name, target, ctx):
        return self._known(await self.vfs.symlink(parent_inode, name, target, ctx.uid, ctx.gid))

    @_handler
    async def link(self, inode, new_parent_inode, new_name, ctx):
        return self._known(await self.vfs.link(inode, new_parent_inode, new_name))

    @_handler
    async def unlink(self, parent_inode, name, ctx):
        await self.vfs.unlink(parent_inode, name)

    @_handler
    async def rmdir(self, parent_inode, name, ctx):
        await self.vfs.rmdir(parent_inode, name)

    @_handler
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        await self.vfs.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)

    # ---- directories ----------------------------------------------------------------------

    @_handler
    async def opendir(self, inode, ctx):
        if not (await self.vfs.getattr(inode)).is_dir:
            raise FSError(errno.ENOTDIR)
        return inode  # cookies are stable, so a directory handle needs no state

    @_handler
    async def readdir(self, fh, start_id, token):
        if start_id < 1:
            attr = await self.vfs.getattr(fh)
            await self.vfs.touch_atime(attr)
            if not pyfuse3.readdir_reply(token, b".", self._entry(attr), 1):
                return
        if start_id < 2:
            attr = await self.vfs.lookup(fh, b"..")
            if not pyfuse3.readdir_reply(token, b"..", self._entry(attr), 2):
                return
        after = max(start_id - DOT_COOKIES, 0)
        while True:
            entries = await self.vfs.readdir(fh, after, READDIR_PAGE)
            for e in entries:
                if not pyfuse3.readdir_reply(
                    token, e.name, self._entry(e.attr), e.cookie + DOT_COOKIES
                ):
                    return
                self.vfs.remember(e.attr.inode)  # only entries the kernel accepted count
                after = e.cookie
            if len(entries) < READDIR_PAGE:
                return

    async def releasedir(self, fh):
        pass

    async def fsyncdir(self, fh, datasync):
        self.vfs.meta.sync()

    # ---- files ----------------------------------------------------------------------------

    @_handler
    async def open(self, inode, flags, ctx):
        fh, keep = await self.vfs.open(inode, flags, Caller(ctx.uid, ctx.gid, ctx.pid))
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep)

    @_handler
    async def create(self, parent_inode, name, mode, flags, ctx):
        caller = Caller(ctx.uid, ctx.gid, ctx.pid)
        fh, attr = await self.vfs.create_file(parent_inode, name, mode, flags, caller)
        return pyfuse3.FileInfo(fh=fh), self._known(attr)

    @_handler
    async def read(self, fh, off, size):
        return await self.vfs.read(fh, off, size)

    @_handler
    async def write(self, fh, off, buf):
        return await self.vfs.write(fh, off, buf)

    @_handler
    async def flush(self, fh):
        await self.vfs.flush(fh)

    @_handler
    async def fsync(self, fh, datasync):
        await self.vfs.fsync(fh)

    @_handler
    async def release(self, fh):
        await self.vfs.release(fh)

    # ---- volume and extended attributes ---------------------------------------------------

    @_handler
    async def statfs(self, ctx):
        st = await self.vfs.statfs()
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = st.capacity // 4096
        s.f_bfree = s.f_bavail = max(st.capacity - st.used_bytes, 0) // 4096
        s.f_files = st.inodes + (1 << 30)
        s.f_ffree = s.f_favail = 1 << 30
        s.f_namemax = 255
        return s

    async def access(self, inode, mode, ctx):
        return True  # mounted with default_permissions: the kernel checks

    @_handler
    async def getxattr(self, inode, name, ctx):
        return await self.vfs.getxattr(inode, name)

    @_handler
    async def listxattr(self, inode, ctx):
        return await self.vfs.listxattr(inode, Caller(ctx.uid, ctx.gid, ctx.pid))

    @_handler
    async def setxattr(self, inode, name, value, ctx):
        await self.vfs.setxattr(inode, name, value, 0)

    @_handler
    async def removexattr(self, inode, name, ctx):
        await self.vfs.removexattr(inode, name)
