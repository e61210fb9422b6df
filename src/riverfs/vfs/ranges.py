"""The argument checks of fallocate, lseek (SEEK_DATA / SEEK_HOLE) and copy_file_range.

Linux makes them before a filesystem sees the call (fs/open.c vfs_fallocate, fs/read_write.c
generic_copy_file_checks), so the kernel answers most of them itself; the VFS repeats them so
that its methods give the same errno when called directly. The work is in meta/ranges.py.
"""

from __future__ import annotations

import errno
import os

from riverfs.errors import FSError
from riverfs.meta.ranges import KEEP_SIZE, MAX_SIZE, PUNCH_HOLE, SEEK_DATA, SEEK_HOLE, ZERO_RANGE
from riverfs.vfs.handles import Handle

# What ext4 does too; COLLAPSE_RANGE, INSERT_RANGE, UNSHARE_RANGE, WRITE_ZEROES, PUNCH_HOLE
# without KEEP_SIZE and every other combination: EOPNOTSUPP.
FALLOCATE_MODES = frozenset(
    {0, KEEP_SIZE, PUNCH_HOLE | KEEP_SIZE, ZERO_RANGE, ZERO_RANGE | KEEP_SIZE}
)


def check_fallocate(offset: int, length: int, mode: int) -> None:
    if offset < 0 or length <= 0:
        raise FSError(errno.EINVAL, f"fallocate offset {offset}, length {length}")
    if mode not in FALLOCATE_MODES:
        raise FSError(errno.EOPNOTSUPP, f"fallocate mode {mode:#x}")
    if offset + length > MAX_SIZE:
        raise FSError(errno.EFBIG)


def check_seek(whence: int) -> None:
    if whence not in (SEEK_DATA, SEEK_HOLE):  # SEEK_SET/CUR/END never leave the kernel
        raise FSError(errno.EINVAL, f"lseek whence {whence}")


def readable(h: Handle) -> bool:
    return h.flags & os.O_ACCMODE != os.O_WRONLY


def writable(h: Handle) -> bool:
    return h.flags & os.O_ACCMODE != os.O_RDONLY


def check_write_handle(h: Handle) -> None:
    if not writable(h):
        raise FSError(errno.EBADF, f"file handle {h.fh} is not open for writing")


def check_copy(h_in: Handle, off_in: int, h_out: Handle, off_out: int, length: int) -> None:
    if off_in < 0 or off_out < 0 or length < 0:
        raise FSError(errno.EINVAL, "negative offset or length")
    if not readable(h_in) or not writable(h_out) or h_out.flags & os.O_APPEND:
        raise FSError(errno.EBADF, "copy_file_range needs a readable source and a writable,"
                      " non-append destination")  # fmt: skip
    if off_in + length > MAX_SIZE or off_out + length > MAX_SIZE:
        raise FSError(errno.EOVERFLOW)
