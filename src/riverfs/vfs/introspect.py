"""Virtual extended attributes: questions a client asks the mount about a path, answered by
the daemon (as CephFS answers `ceph.dir.rentries`).

`getxattr(path, "riverfs.info")` returns what `riverfs info` prints, computed by the daemon
from its metadata and its caches. These names are not stored anywhere: they never reach the
metadata's xattr table, listxattr does not show them, and setxattr/removexattr of any
`riverfs.` name is refused with EPERM.

The Linux kernel hands any xattr name to a FUSE filesystem (fuse registers one handler with
an empty prefix, so `riverfs.` passes through as unknown namespaces do; the VFS only checks
read permission on the inode for a getxattr of it), which is why no `trusted.` prefix (root
only) is needed.

A name may carry an argument after a colon: `riverfs.info:500` asks for the blocks of a file
from its 500th on (a value must fit in 64 KiB, the kernel's limit, so long lists come in
pages). Adding a name: decorate an async function `(vfs, inode, arg) -> bytes` with
`@virtual(b"riverfs.NAME")`.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from riverfs.errors import FSError
from riverfs.vfs import info, warmup

if TYPE_CHECKING:
    from riverfs.vfs.fs import VFS

PREFIX = b"riverfs."
MAX_VALUE = 64 << 10  # XATTR_SIZE_MAX: the kernel refuses longer values

Handler = Callable[["VFS", int, str], Awaitable[bytes]]
NAMES: dict[bytes, Handler] = {}


def virtual(name: bytes) -> Callable[[Handler], Handler]:
    """Register `fn` as the answer to getxattr of `name` (which must start with `riverfs.`)."""
    if not name.startswith(PREFIX) or b":" in name:
        raise ValueError(f"virtual xattr names start with {PREFIX!r} and hold no colon: {name!r}")

    def register(fn: Handler) -> Handler:
        NAMES[name] = fn
        return fn

    return register


def is_virtual(name: bytes) -> bool:
    """True for every name of the `riverfs.` namespace (known or not): it is ours, never
    stored."""
    return name.startswith(PREFIX)


async def getxattr(vfs: VFS, inode: int, name: bytes) -> bytes:
    """The value of virtual xattr `name` of `inode`; ENODATA for a name nobody registered."""
    base, _, arg = name.partition(b":")
    handler = NAMES.get(base)
    if handler is None:
        raise FSError(errno.ENODATA, f"no virtual xattr {name!r}")
    return await handler(vfs, inode, arg.decode(errors="replace"))


def refuse(name: bytes) -> None:
    """setxattr/removexattr of a `riverfs.` name: EPERM (they are answers, not storage)."""
    if is_virtual(name):
        raise FSError(errno.EPERM, f"{name!r} is a virtual xattr of riverfs")


# ---- the names ----------------------------------------------------------------------------


@virtual(b"riverfs.info")
async def _info(vfs: VFS, inode: int, arg: str) -> bytes:
    """What `riverfs info` shows (vfs/info.py); `arg`: the first block to list of a file."""
    try:
        first_block = int(arg or 0)
    except ValueError:
        raise FSError(errno.EINVAL, f"riverfs.info:{arg}: not a block number") from None
    return json.dumps(await info.describe(vfs, inode, first_block, MAX_VALUE)).encode()


@virtual(b"riverfs.warmup")
async def _warmup(vfs: VFS, inode: int, arg: str) -> bytes:
    """Fetch the file's blocks into the mount's cache (vfs/warmup.py, `riverfs warmup`)."""
    return await warmup.warm(vfs, inode)


@virtual(b"riverfs.evict")
async def _evict(vfs: VFS, inode: int, arg: str) -> bytes:
    """Drop the file's blocks from the mount's caches (`riverfs warmup --evict`)."""
    return await warmup.evict(vfs, inode)
