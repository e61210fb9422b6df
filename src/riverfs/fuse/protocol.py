"""The FUSE kernel ABI: opcodes, INIT flags and the struct layouts, in one place.

Everything here mirrors `include/uapi/linux/fuse.h` (protocol 7.x); each struct lists the
kernel header's field names in a comment, and tests/unit/test_fuse_protocol.py checks the
sizes and offsets. All integers are native-endian (`=`), as the kernel writes them.
"""

from __future__ import annotations

import enum
import struct

KERNEL_VERSION = 7
KERNEL_MINOR_VERSION = 41  # the newest minor whose layouts this module knows
MIN_MINOR_VERSION = 12  # older kernels are refused (they predate every struct used here)


class Op(enum.IntEnum):
    LOOKUP = 1
    FORGET = 2
    GETATTR = 3
    SETATTR = 4
    READLINK = 5
    SYMLINK = 6
    MKNOD = 8
    MKDIR = 9
    UNLINK = 10
    RMDIR = 11
    RENAME = 12
    LINK = 13
    OPEN = 14
    READ = 15
    WRITE = 16
    STATFS = 17
    RELEASE = 18
    FSYNC = 20
    SETXATTR = 21
    GETXATTR = 22
    LISTXATTR = 23
    REMOVEXATTR = 24
    FLUSH = 25
    INIT = 26
    OPENDIR = 27
    READDIR = 28
    RELEASEDIR = 29
    FSYNCDIR = 30
    GETLK = 31
    SETLK = 32
    SETLKW = 33
    ACCESS = 34
    CREATE = 35
    INTERRUPT = 36
    BMAP = 37
    DESTROY = 38
    IOCTL = 39
    POLL = 40
    NOTIFY_REPLY = 41
    BATCH_FORGET = 42
    FALLOCATE = 43
    READDIRPLUS = 44
    RENAME2 = 45
    LSEEK = 46
    COPY_FILE_RANGE = 47
    SETUPMAPPING = 48
    REMOVEMAPPING = 49
    SYNCFS = 50
    TMPFILE = 51
    STATX = 52


class Notify(enum.IntEnum):
    """fuse_notify_code: the `error` field of an unsolicited message (unique 0)."""

    POLL = 1
    INVAL_INODE = 2
    INVAL_ENTRY = 3
    STORE = 4
    RETRIEVE = 5
    DELETE = 6


class Init(enum.IntFlag):
    """INIT flags (fuse_init_in/out.flags; bits 32..63 travel in flags2)."""

    ASYNC_READ = 1 << 0
    POSIX_LOCKS = 1 << 1
    FILE_OPS = 1 << 2
    ATOMIC_O_TRUNC = 1 << 3
    EXPORT_SUPPORT = 1 << 4
    BIG_WRITES = 1 << 5
    DONT_MASK = 1 << 6
    SPLICE_WRITE = 1 << 7
    SPLICE_MOVE = 1 << 8
    SPLICE_READ = 1 << 9
    FLOCK_LOCKS = 1 << 10
    HAS_IOCTL_DIR = 1 << 11
    AUTO_INVAL_DATA = 1 << 12
    DO_READDIRPLUS = 1 << 13
    READDIRPLUS_AUTO = 1 << 14
    ASYNC_DIO = 1 << 15
    WRITEBACK_CACHE = 1 << 16
    NO_OPEN_SUPPORT = 1 << 17
    PARALLEL_DIROPS = 1 << 18
    HANDLE_KILLPRIV = 1 << 19
    POSIX_ACL = 1 << 20
    ABORT_ERROR = 1 << 21
    MAX_PAGES = 1 << 22
    CACHE_SYMLINKS = 1 << 23
    NO_OPENDIR_SUPPORT = 1 << 24
    EXPLICIT_INVAL_DATA = 1 << 25
    MAP_ALIGNMENT = 1 << 26
    SUBMOUNTS = 1 << 27
    HANDLE_KILLPRIV_V2 = 1 << 28
    SETXATTR_EXT = 1 << 29
    INIT_EXT = 1 << 30
    INIT_RESERVED = 1 << 31
    SECURITY_CTX = 1 << 32
    HAS_INODE_DAX = 1 << 33
    CREATE_SUPP_GROUP = 1 << 34
    HAS_EXPIRE_ONLY = 1 << 35
    DIRECT_IO_ALLOW_MMAP = 1 << 36
    PASSTHROUGH = 1 << 37
    NO_EXPORT_SUPPORT = 1 << 38
    HAS_RESEND = 1 << 39


# fuse_open_out.open_flags
FOPEN_DIRECT_IO = 1 << 0
FOPEN_KEEP_CACHE = 1 << 1
FOPEN_NONSEEKABLE = 1 << 2
FOPEN_CACHE_DIR = 1 << 3
FOPEN_STREAM = 1 << 4
FOPEN_NOFLUSH = 1 << 5

# fuse_setattr_in.valid
FATTR_MODE = 1 << 0
FATTR_UID = 1 << 1
FATTR_GID = 1 << 2
FATTR_SIZE = 1 << 3
FATTR_ATIME = 1 << 4
FATTR_MTIME = 1 << 5
FATTR_FH = 1 << 6
FATTR_ATIME_NOW = 1 << 7
FATTR_MTIME_NOW = 1 << 8
FATTR_LOCKOWNER = 1 << 9
FATTR_CTIME = 1 << 10
FATTR_KILL_SUIDGID = 1 << 11

FUSE_GETATTR_FH = 1 << 0  # fuse_getattr_in.getattr_flags
FUSE_RELEASE_FLUSH = 1 << 0  # fuse_release_in.release_flags
FUSE_RELEASE_FLOCK_UNLOCK = 1 << 1
FUSE_WRITE_CACHE = 1 << 0  # fuse_write_in.write_flags
FUSE_WRITE_LOCKOWNER = 1 << 1
FUSE_WRITE_KILL_SUIDGID = 1 << 2
FUSE_READ_LOCKOWNER = 1 << 1  # fuse_read_in.read_flags
FUSE_OPEN_KILL_SUIDGID = 1 << 0  # fuse_open_in.open_flags
FUSE_LK_FLOCK = 1 << 0  # fuse_lk_in.lk_flags
FUSE_FSYNC_FDATASYNC = 1 << 0  # fuse_fsync_in.fsync_flags
FUSE_EXPIRE_ONLY = 1 << 0  # fuse_notify_inval_entry_out.flags (7.38)

OFFSET_MAX = (1 << 63) - 1  # fuse_file_lock.end of a lock "to end of file"

FUSE_MIN_READ_BUFFER = 8192
COMPAT_INIT_OUT_SIZE = 24  # FUSE_COMPAT_22_INIT_OUT_SIZE: the reply to minors < 23
COMPAT_SETXATTR_IN_SIZE = 8  # fuse_setxattr_in without SETXATTR_EXT
COMPAT_WRITE_IN_SIZE = 24  # FUSE_COMPAT_WRITE_IN_SIZE (minor < 9)


def _s(fmt: str) -> struct.Struct:
    return struct.Struct("=" + fmt)


# struct fuse_in_header: len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding
IN_HEADER = _s("IIQQIIIHH")
# struct fuse_out_header: len, error, unique
OUT_HEADER = _s("IiQ")
# struct fuse_attr: ino, size, blocks, atime, mtime, ctime, atimensec, mtimensec, ctimensec,
#   mode, nlink, uid, gid, rdev, blksize, flags
ATTR = _s("QQQqqqIIIIIIIIII")
# struct fuse_entry_out: nodeid, generation, entry_valid, attr_valid, entry_valid_nsec,
#   attr_valid_nsec, attr (struct fuse_attr)
ENTRY_OUT = _s("QQQQII" + ATTR.format[1:])
# struct fuse_attr_out: attr_valid, attr_valid_nsec, dummy, attr
ATTR_OUT = _s("QII" + ATTR.format[1:])
# struct fuse_forget_in: nlookup
FORGET_IN = _s("Q")
# struct fuse_batch_forget_in: count, dummy; then count x struct fuse_forget_one: nodeid, nlookup
BATCH_FORGET_IN = _s("II")
FORGET_ONE = _s("QQ")
# struct fuse_getattr_in: getattr_flags, dummy, fh
GETATTR_IN = _s("IIQ")
# struct fuse_setattr_in: valid, padding, fh, size, lock_owner, atime, mtime, ctime, atimensec,
#   mtimensec, ctimensec, mode, unused4, uid, gid, unused5
SETATTR_IN = _s("IIQQQqqqIIIIIIII")  # times are signed (s64 in the kernel)
# struct fuse_mknod_in: mode, rdev, umask, padding (then the name)
MKNOD_IN = _s("IIII")
# struct fuse_mkdir_in: mode, umask (then the name)
MKDIR_IN = _s("II")
# struct fuse_rename_in: newdir (then both names)
RENAME_IN = _s("Q")
# struct fuse_rename2_in: newdir, flags, padding
RENAME2_IN = _s("QII")
# struct fuse_link_in: oldnodeid (then the name)
LINK_IN = _s("Q")
# struct fuse_open_in: flags, open_flags
OPEN_IN = _s("II")
# struct fuse_create_in: flags, mode, umask, open_flags (then the name)
CREATE_IN = _s("IIII")
# struct fuse_open_out: fh, open_flags, padding (backing_id since 7.40)
OPEN_OUT = _s("QII")
# struct fuse_release_in: fh, flags, release_flags, lock_owner
RELEASE_IN = _s("QIIQ")
# struct fuse_flush_in: fh, unused, padding, lock_owner
FLUSH_IN = _s("QIIQ")
# struct fuse_read_in: fh, offset, size, read_flags, lock_owner, flags, padding
READ_IN = _s("QQIIQII")
# struct fuse_write_in: fh, offset, size, write_flags, lock_owner, flags, padding (then data)
WRITE_IN = _s("QQIIQII")
# struct fuse_write_out: size, padding
WRITE_OUT = _s("II")
# struct fuse_statfs_out / struct fuse_kstatfs: blocks, bfree, bavail, files, ffree, bsize,
#   namelen, frsize, padding, spare[6]
STATFS_OUT = _s("QQQQQIIII24x")
# struct fuse_fsync_in: fh, fsync_flags, padding
FSYNC_IN = _s("QII")
# struct fuse_setxattr_in (compat, without SETXATTR_EXT): size, flags (then name, value)
SETXATTR_IN = _s("II")
# struct fuse_setxattr_in with SETXATTR_EXT: size, flags, setxattr_flags, padding
SETXATTR_IN_EXT = _s("IIII")
FUSE_SETXATTR_ACL_KILL_SGID = 1 << 0  # setxattr_flags: the ACL's setter may not keep setgid
# struct fuse_getxattr_in: size, padding (then the name)
GETXATTR_IN = _s("II")
# struct fuse_getxattr_out: size, padding
GETXATTR_OUT = _s("II")
# struct fuse_file_lock: start, end, type, pid
FILE_LOCK = _s("QQII")
# struct fuse_lk_in: fh, owner, lk (struct fuse_file_lock), lk_flags, padding
LK_IN = _s("QQQQIIII")
# struct fuse_lk_out: lk (struct fuse_file_lock)
LK_OUT = FILE_LOCK
# struct fuse_access_in: mask, padding
ACCESS_IN = _s("II")
# struct fuse_init_in: major, minor, max_readahead, flags (16 bytes up to 7.35), then
#   flags2, unused[11] (64 bytes since 7.36)
INIT_IN = _s("IIII")
INIT_IN_EXT = _s("I44x")
# struct fuse_init_out: major, minor, max_readahead, flags, max_background,
#   congestion_threshold, max_write, time_gran, max_pages, map_alignment, flags2,
#   max_stack_depth (7.40; unused before), unused[6]
INIT_OUT = _s("IIIIHHIIHHII24x")
# struct fuse_interrupt_in: unique
INTERRUPT_IN = _s("Q")
# struct fuse_fallocate_in: fh, offset, length, mode, padding
FALLOCATE_IN = _s("QQQII")
# struct fuse_lseek_in: fh, offset, whence, padding
LSEEK_IN = _s("QQII")
# struct fuse_lseek_out: offset
LSEEK_OUT = _s("Q")
# struct fuse_copy_file_range_in: fh_in, off_in, nodeid_out, fh_out, off_out, len, flags
COPY_FILE_RANGE_IN = _s("QQQQQQQ")
# struct fuse_dirent: ino, off, namelen, type (then the name, padded to 8 bytes)
DIRENT = _s("QQII")
# struct fuse_notify_inval_inode_out: ino, off, len
NOTIFY_INVAL_INODE_OUT = _s("Qqq")
# struct fuse_notify_inval_entry_out: parent, namelen, flags (then the name and a NUL)
NOTIFY_INVAL_ENTRY_OUT = _s("QII")
# struct fuse_notify_delete_out: parent, child, namelen, padding (then the name and a NUL)
NOTIFY_DELETE_OUT = _s("QQII")


# The fixed part of each request's body: a shorter body is malformed (EINVAL).
BODY_SIZE: dict[int, int] = {
    Op.FORGET: FORGET_IN.size,
    Op.BATCH_FORGET: BATCH_FORGET_IN.size,
    Op.GETATTR: GETATTR_IN.size,
    Op.SETATTR: SETATTR_IN.size,
    Op.MKNOD: MKNOD_IN.size,
    Op.MKDIR: MKDIR_IN.size,
    Op.RENAME: RENAME_IN.size,
    Op.RENAME2: RENAME2_IN.size,
    Op.LINK: LINK_IN.size,
    Op.OPEN: OPEN_IN.size,
    Op.OPENDIR: OPEN_IN.size,
    Op.CREATE: CREATE_IN.size,
    Op.READ: READ_IN.size,
    Op.READDIR: READ_IN.size,
    Op.READDIRPLUS: READ_IN.size,
    Op.WRITE: WRITE_IN.size,
    Op.RELEASE: RELEASE_IN.size,
    Op.RELEASEDIR: RELEASE_IN.size,
    Op.FLUSH: FLUSH_IN.size,
    Op.FSYNC: FSYNC_IN.size,
    Op.FSYNCDIR: FSYNC_IN.size,
    Op.SETXATTR: SETXATTR_IN.size,
    Op.GETXATTR: GETXATTR_IN.size,
    Op.LISTXATTR: GETXATTR_IN.size,
    Op.GETLK: LK_IN.size,
    Op.SETLK: LK_IN.size,
    Op.SETLKW: LK_IN.size,
    Op.ACCESS: ACCESS_IN.size,
    Op.INIT: INIT_IN.size,
    Op.INTERRUPT: INTERRUPT_IN.size,
    Op.FALLOCATE: FALLOCATE_IN.size,
    Op.LSEEK: LSEEK_IN.size,
    Op.COPY_FILE_RANGE: COPY_FILE_RANGE_IN.size,
}


def dirent_size(namelen: int, plus: bool = False) -> int:
    """Bytes one directory entry takes in a READDIR(PLUS) reply (FUSE_DIRENT_ALIGN)."""
    size = DIRENT.size + namelen
    size = (size + 7) & ~7
    return size + ENTRY_OUT.size if plus else size
