"""meta/acl.py: the kernel's POSIX ACL xattr format and the mode <-> ACL rules of Linux
(fs/posix_acl.c: posix_acl_valid, _create_masq, _equiv_mode, _chmod_masq); and what the
kernel's INIT answer decides: ACLs served, or refused as a filesystem without them does."""

from __future__ import annotations

import asyncio
import errno
import stat
import struct
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from riverfs.errors import FSError
from riverfs.fuse import protocol as p
from riverfs.fuse.operations import Operations
from riverfs.meta import acl
from riverfs.meta.acl import GROUP, GROUP_OBJ, MASK, OTHER, USER, USER_OBJ, Entry
from riverfs.vfs.fs import VFS, _check_xattr_name
from riverfs.vfs.handles import Caller
from riverfs.vfs.options import MountOptions

# `setfacl -m u:nobody:rw f` on a 0600 file, as this machine's kernel sent it
SETFACL_BYTES = bytes.fromhex(
    "02000000" "01000600ffffffff" "02000600feff0000" "04000000ffffffff"
    "10000600ffffffff" "20000000ffffffff"
)  # fmt: skip


def test_parses_what_the_kernel_sends():
    entries = acl.parse(SETFACL_BYTES)
    assert entries == [
        Entry(USER_OBJ, 6),
        Entry(USER, 6, 65534),
        Entry(GROUP_OBJ, 0),
        Entry(MASK, 6),
        Entry(OTHER, 0),
    ]
    assert acl.encode(entries) == SETFACL_BYTES


@pytest.mark.parametrize(
    ("value", "err"),
    [
        (b"", errno.EINVAL),
        (b"\x02\x00\x00", errno.EINVAL),
        (struct.pack("<I", 1) + acl.encode(acl.from_mode(0o644))[4:], errno.EOPNOTSUPP),
        (acl.encode(acl.from_mode(0o644)) + b"\x00", errno.EINVAL),  # a partial entry
        (acl.encode([Entry(USER_OBJ, 6), Entry(OTHER, 4)]), errno.EINVAL),  # no group
        (acl.encode([Entry(USER_OBJ, 6), Entry(USER, 6, 1), Entry(GROUP_OBJ, 4),
                     Entry(OTHER, 4)]), errno.EINVAL),  # named entry without a mask
        (acl.encode([Entry(USER_OBJ, 6), Entry(USER, 6, 2), Entry(USER, 6, 1),
                     Entry(GROUP_OBJ, 4), Entry(MASK, 6), Entry(OTHER, 4)]), errno.EINVAL),
        (acl.encode([Entry(USER_OBJ, 6), Entry(USER, 6, 1), Entry(USER, 4, 1),
                     Entry(GROUP_OBJ, 4), Entry(MASK, 6), Entry(OTHER, 4)]), errno.EINVAL),
        (acl.encode([Entry(GROUP_OBJ, 4), Entry(USER_OBJ, 6), Entry(OTHER, 4)]), errno.EINVAL),
        (acl.encode([Entry(USER_OBJ, 8), Entry(GROUP_OBJ, 4), Entry(OTHER, 4)]), errno.EINVAL),
        (acl.encode([Entry(USER_OBJ, 6), Entry(GROUP_OBJ, 4), Entry(0x40, 4),
                     Entry(OTHER, 4)]), errno.EINVAL),
    ],
)  # fmt: skip
def test_refuses_what_posix_acl_valid_refuses(value, err):
    with pytest.raises(FSError) as e:
        acl.parse(value)
    assert e.value.errno == err


# ---- random valid ACLs -------------------------------------------------------------------

perm = st.integers(0, 7)
ids = st.lists(st.integers(0, 70000), unique=True, max_size=4).map(sorted)


@st.composite
def acls(draw, with_mask=None):
    """A valid ACL in the kernel's order; named entries force a mask."""
    users, groups = draw(ids), draw(ids)
    mask = with_mask if with_mask is not None else draw(st.booleans())
    mask = mask or bool(users or groups)
    out = [Entry(USER_OBJ, draw(perm))]
    out += [Entry(USER, draw(perm), u) for u in users]
    out.append(Entry(GROUP_OBJ, draw(perm)))
    out += [Entry(GROUP, draw(perm), g) for g in groups]
    if mask:
        out.append(Entry(MASK, draw(perm)))
    out.append(Entry(OTHER, draw(perm)))
    return out


def _perm(entries, tag):
    return next(e.perm for e in entries if e.tag == tag)


@given(acls())
def test_encode_then_parse_is_the_same_acl(entries):
    value = acl.encode(entries)
    assert len(value) == 4 + 8 * len(entries)
    assert acl.parse(value) == entries


@given(st.integers(0, 0o7777))
def test_a_mode_is_a_minimal_acl(mode):
    entries = acl.from_mode(mode)
    assert acl.is_minimal(entries)
    assert acl.mode_bits(entries) == mode & 0o777
    assert acl.parse(acl.encode(entries)) == entries


@given(acls(), st.integers(0, 0o7777), st.booleans())
def test_setting_an_access_acl_sets_the_mode(entries, mode, kill):
    new, stored = acl.update_mode(stat.S_IFREG | mode, entries, kill)
    assert stat.S_IFMT(new) == stat.S_IFREG
    assert (new >> 6) & 7 == _perm(entries, USER_OBJ)
    has_mask = any(e.tag == MASK for e in entries)
    assert (new >> 3) & 7 == _perm(entries, MASK if has_mask else GROUP_OBJ)
    assert new & 7 == _perm(entries, OTHER)
    assert new & (stat.S_ISUID | stat.S_ISVTX) == mode & (stat.S_ISUID | stat.S_ISVTX)
    assert bool(new & stat.S_ISGID) == bool(mode & stat.S_ISGID and not kill)
    # stored unless the mode says everything (three entries, no mask)
    assert (stored is None) == (len(entries) == 3)
    if stored is not None:
        assert acl.parse(stored) == entries


@given(acls(), st.integers(0, 0o777))
def test_chmod_rewrites_owner_mask_and_other(entries, mode):
    after = acl.chmod(entries, mode)
    assert acl.mode_bits(after) == mode
    has_mask = any(e.tag == MASK for e in entries)
    for before, now in zip(entries, after, strict=True):
        assert (before.tag, before.id) == (now.tag, now.id)
        if before.tag in (USER, GROUP) or (before.tag == GROUP_OBJ and has_mask):
            assert now.perm == before.perm  # the mask limits them, their own bits stay
    acl.parse(acl.encode(after))


def test_chmod_of_a_named_acl_changes_the_mask_not_the_group_entry():
    entries = acl.parse(SETFACL_BYTES)
    after = acl.chmod(entries, 0o640)
    assert _perm(after, MASK) == 4 and _perm(after, GROUP_OBJ) == 0
    assert _perm(after, USER) == 6  # effective r-- through the mask


@given(st.integers(0, 0o7777), st.integers(0, 0o777), st.booleans())
def test_without_a_default_acl_the_umask_applies(mode, umask, is_dir):
    new, xattrs = acl.inherit(None, mode, umask, is_dir)
    assert new == mode & ~umask
    assert xattrs == []


@given(acls(), st.integers(0, 0o7777), st.integers(0, 0o777), st.booleans())
def test_inheritance_masks_the_mode_and_ignores_the_umask(default, mode, umask, is_dir):
    value = acl.encode(default)
    new, xattrs = acl.inherit(value, mode, umask, is_dir)
    got = dict(xattrs)
    assert (acl.DEFAULT in got) == is_dir
    if is_dir:
        assert got[acl.DEFAULT] == value  # the default itself, unmasked
    assert new & ~0o777 == mode & ~0o777  # type, setuid, setgid, sticky untouched
    has_mask = any(e.tag == MASK for e in default)
    group_tag = MASK if has_mask else GROUP_OBJ
    expect = (
        (_perm(default, USER_OBJ) & (mode >> 6) & 7) << 6
        | (_perm(default, group_tag) & (mode >> 3) & 7) << 3
        | (_perm(default, OTHER) & mode & 7)
    )
    assert new & 0o777 == expect  # no umask in it
    if acl.ACCESS in got:
        access = acl.parse(got[acl.ACCESS])
        assert acl.mode_bits(access) == new & 0o777
        assert [(e.tag, e.id) for e in access] == [(e.tag, e.id) for e in default]
    else:
        assert len(default) == 3  # only a minimal result goes unstored


def test_inheritance_as_ext4_does_it():
    # setfacl -d -m u:nobody:rwx,m::rx d; then open(d/f, O_CREAT, 0666) and mkdir(d/s, 0777)
    default = acl.encode([Entry(USER_OBJ, 7), Entry(USER, 7, 65534), Entry(GROUP_OBJ, 5),
                          Entry(MASK, 5), Entry(OTHER, 5)])  # fmt: skip
    mode, xattrs = acl.inherit(default, stat.S_IFREG | 0o666, 0o077, False)
    assert mode == stat.S_IFREG | 0o644  # user rw- (no x asked), mask r-x & rw- = r--
    access = acl.parse(dict(xattrs)[acl.ACCESS])
    assert _perm(access, USER_OBJ) == 6 and _perm(access, MASK) == 4
    assert _perm(access, USER) == 7  # effective r-- through the mask, as getfacl shows
    mode, xattrs = acl.inherit(default, stat.S_IFDIR | 0o777, 0o077, True)
    assert mode == stat.S_IFDIR | 0o755
    assert dict(xattrs)[acl.DEFAULT] == default


# ---- a kernel without FUSE_POSIX_ACL -------------------------------------------------------


def test_what_init_agreed_decides_whether_acls_are_served(tmp_path):
    vfs = SimpleNamespace(acls=False)
    ops = Operations(vfs, MountOptions(cache_dir=tmp_path))
    ops.initialized(p.Init.POSIX_ACL | p.Init.DONT_MASK | p.Init.SETXATTR_EXT)
    assert vfs.acls and ops._umask(0o022) == 0o022 and ops.setxattr_in is p.SETXATTR_IN_EXT
    ops.initialized(p.Init.ASYNC_READ)  # an old kernel: it applies the umask, no ACLs
    assert not vfs.acls and ops._umask(0o022) is None and ops.setxattr_in is p.SETXATTR_IN


@pytest.mark.parametrize("name", acl.NAMES)
def test_without_acls_their_names_are_refused_and_not_listed(name):
    with pytest.raises(FSError) as e:
        _check_xattr_name(name, acls=False)
    assert e.value.errno == errno.EOPNOTSUPP
    _check_xattr_name(name, acls=True)
    with pytest.raises(FSError) as e:
        _check_xattr_name(b"system.other", acls=True)
    assert e.value.errno == errno.EOPNOTSUPP

    async def listxattr(inode):
        return [name, b"user.x"]

    for served, listed in ((False, [b"user.x"]), (True, [name, b"user.x"])):
        vfs = SimpleNamespace(meta=SimpleNamespace(listxattr=listxattr), acls=served)
        assert asyncio.run(VFS.listxattr(vfs, 2, Caller(0, 0, 0))) == listed
