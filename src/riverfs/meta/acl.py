"""POSIX ACLs: the kernel's binary xattr format and the mode <-> ACL rules of Linux.

The kernel enforces ACLs itself (FUSE_POSIX_ACL): it reads `system.posix_acl_access` and
`system.posix_acl_default` through getxattr, caches them, and stores what setfacl gives it
through setxattr. What it leaves to the filesystem, and this module computes as
fs/posix_acl.c does for ext4:

- at create, inheritance from the parent's default ACL (`inherit`, posix_acl_create): the
  new entry's access ACL is the parent's default masked by the requested mode, a directory
  also gets the default itself, and the umask is not applied; without a default ACL the
  umask is (the kernel sends it unapplied: FUSE_DONT_MASK);
- at setxattr of an access ACL, the mode follows the ACL (`update_mode`,
  posix_acl_update_mode): owner/other bits from their entries, group bits from the mask;
  an ACL the mode says all of is not stored;
- at chmod, the ACL follows the mode (`chmod`, posix_acl_chmod).

The format (include/uapi/linux/posix_acl_xattr.h): a u32 version 2, then entries of tag
u16, perm u16, id u32, little-endian; ids are uid/gid for named entries, otherwise -1.
"""

from __future__ import annotations

import errno
import stat
import struct
import time
from typing import TYPE_CHECKING, NamedTuple

from riverfs.errors import FSError

if TYPE_CHECKING:
    from riverfs.meta import Meta

ACCESS = b"system.posix_acl_access"
DEFAULT = b"system.posix_acl_default"
NAMES = (ACCESS, DEFAULT)

VERSION = 2
HEADER = struct.Struct("<I")
ENTRY = struct.Struct("<HHI")
UNDEFINED_ID = 0xFFFFFFFF

USER_OBJ = 0x01
USER = 0x02
GROUP_OBJ = 0x04
GROUP = 0x08
MASK = 0x10
OTHER = 0x20
_ORDER = (USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER)  # the order the kernel keeps
_NAMED = (USER, GROUP)


class Entry(NamedTuple):
    tag: int
    perm: int  # rwx as 4|2|1
    id: int = UNDEFINED_ID


def parse(value: bytes) -> list[Entry]:
    """The entries of an ACL xattr value; EINVAL for anything posix_acl_valid refuses."""
    if len(value) < HEADER.size or (len(value) - HEADER.size) % ENTRY.size:
        raise FSError(errno.EINVAL, f"ACL of {len(value)} bytes")
    (version,) = HEADER.unpack_from(value)
    if version != VERSION:
        raise FSError(errno.EOPNOTSUPP, f"ACL version {version}")
    entries = [Entry(*e) for e in ENTRY.iter_unpack(value[HEADER.size :])]
    _validate(entries)
    return entries


def _validate(entries: list[Entry]) -> None:
    """posix_acl_valid: one USER_OBJ, GROUP_OBJ and OTHER; a MASK when there are named
    entries; named entries without duplicates; sorted by tag, then id."""
    counts = {t: 0 for t in _ORDER}
    previous = None
    for e in entries:
        if e.tag not in counts or e.perm & ~0o7:
            raise FSError(errno.EINVAL, f"ACL entry {e}")
        counts[e.tag] += 1
        key = (_ORDER.index(e.tag), e.id if e.tag in _NAMED else 0)
        if previous is not None and key <= previous:
            raise FSError(errno.EINVAL, "ACL entries out of order or repeated")
        previous = key
    if any(counts[t] != 1 for t in (USER_OBJ, GROUP_OBJ, OTHER)) or counts[MASK] > 1:
        raise FSError(errno.EINVAL, "ACL without exactly one owner, group and other entry")
    if (counts[USER] or counts[GROUP]) and not counts[MASK]:
        raise FSError(errno.EINVAL, "ACL with named entries and no mask")


def encode(entries: list[Entry]) -> bytes:
    """The xattr value of `entries` (in the order given: keep them sorted)."""
    return HEADER.pack(VERSION) + b"".join(ENTRY.pack(*e) for e in entries)


def from_mode(mode: int) -> list[Entry]:
    """The minimal ACL a mode stands for (owner, group, other)."""
    return [
        Entry(USER_OBJ, (mode >> 6) & 7),
        Entry(GROUP_OBJ, (mode >> 3) & 7),
        Entry(OTHER, mode & 7),
    ]


def mode_bits(entries: list[Entry]) -> int:
    """The rwx bits of the mode an ACL shows: group bits are the mask's when it has one."""
    perms = {e.tag: e.perm for e in entries if e.tag not in _NAMED}
    group = perms[MASK] if MASK in perms else perms[GROUP_OBJ]
    return perms[USER_OBJ] << 6 | group << 3 | perms[OTHER]


def is_minimal(entries: list[Entry]) -> bool:
    """Whether the mode says all of the ACL (posix_acl_equiv_mode == 0): nothing to store."""
    return all(e.tag in (USER_OBJ, GROUP_OBJ, OTHER) for e in entries)


def update_mode(mode: int, entries: list[Entry], kill_sgid: bool) -> tuple[int, bytes | None]:
    """setxattr of an access ACL: the new mode and the value to store (None: the ACL is
    minimal, the mode alone keeps it and the xattr goes). `kill_sgid`: the kernel found the
    caller neither in the file's group nor privileged (FUSE_SETXATTR_ACL_KILL_SGID)."""
    mode = (mode & ~0o777) | mode_bits(entries)
    if kill_sgid:
        mode &= ~stat.S_ISGID
    return mode, None if is_minimal(entries) else encode(entries)


def chmod(entries: list[Entry], mode: int) -> list[Entry]:
    """The access ACL after a chmod (posix_acl_chmod): owner and other entries take the new
    owner and other bits, the mask (the group entry when there is no mask) the group bits;
    named entries keep theirs, the mask now limits them."""
    has_mask = any(e.tag == MASK for e in entries)
    group_tag = MASK if has_mask else GROUP_OBJ
    bits = {USER_OBJ: (mode >> 6) & 7, group_tag: (mode >> 3) & 7, OTHER: mode & 7}
    return [e._replace(perm=bits[e.tag]) if e.tag in bits else e for e in entries]


def inherit(
    default: bytes | None, mode: int, umask: int, is_dir: bool
) -> tuple[int, list[tuple[bytes, bytes]]]:
    """A new inode's mode and ACL xattrs (posix_acl_create) from its parent's default ACL
    (`default`: the stored value, None without one) and the caller's `mode` and `umask`.

    Without a default ACL the umask applies and nothing is stored. With one the umask does
    not apply: the access ACL is the default with each of owner, group-class (the mask, or
    the group entry without one) and other limited by the mode, and the mode's bits limited
    back by them; a directory also gets the default as its own default."""
    if default is None:
        return mode & ~(umask & 0o777), []
    entries = parse(default)
    req = mode & 0o777
    has_mask = any(e.tag == MASK for e in entries)
    group_tag = MASK if has_mask else GROUP_OBJ
    limit = {USER_OBJ: (req >> 6) & 7, group_tag: (req >> 3) & 7, OTHER: req & 7}
    access = [e._replace(perm=e.perm & limit[e.tag]) if e.tag in limit else e for e in entries]
    mode = (mode & ~0o777) | mode_bits(access)
    xattrs = [] if is_minimal(access) else [(ACCESS, encode(access))]
    if is_dir:
        xattrs.append((DEFAULT, default))
    return mode, xattrs


async def chmod_in(tx, inode: int, mode: int) -> None:
    """Keep the stored access ACL of `inode` true to its new `mode`, in the chmod's
    transaction `tx` (the kernel drops its cached ACL after a chmod and reads it again)."""
    row = await tx.one("SELECT value FROM xattrs WHERE inode = ? AND name = ?", inode, ACCESS)
    if row is None:
        return
    value = bytes(row[0])
    new = encode(chmod(parse(value), mode))
    if new != value:
        await tx.run("UPDATE xattrs SET value = ? WHERE inode = ? AND name = ?", new, inode, ACCESS)


async def set_access_in(tx, inode: int, value: bytes, kill_sgid: bool) -> None:
    """setxattr of `system.posix_acl_access` in transaction `tx`: the mode follows the ACL,
    and a minimal ACL is not stored (ext4 keeps it in the mode alone)."""
    row = await tx.one("SELECT mode FROM nodes WHERE inode = ?", inode)
    if row is None:
        raise FSError(errno.ENOENT, f"inode {inode}")
    mode, stored = update_mode(row[0], parse(value), kill_sgid)
    await tx.run("DELETE FROM xattrs WHERE inode = ? AND name = ?", inode, ACCESS)
    if stored is not None:
        await tx.run("INSERT INTO xattrs VALUES (?, ?, ?)", inode, ACCESS, stored)
    await tx.run(
        "UPDATE nodes SET mode = ?, ctime = ? WHERE inode = ?", mode, time.time_ns(), inode
    )
    tx.changes.attr(inode)


async def set_access(meta: Meta, inode: int, value: bytes, kill_sgid: bool) -> None:
    """setxattr of `system.posix_acl_access` on `inode`: one transaction (`set_access_in`)."""

    async def fn(tx):
        await set_access_in(tx, inode, value, kill_sgid)

    await meta.db.txn(fn)
