"""Extended attributes through a real riverfs mount: get/set (XATTR_CREATE, XATTR_REPLACE),
list, remove, and the errno values Linux gives.

Every test works in its own directory of one mount shared by the module. Where Linux
defines an errno, the same operation also runs on the local disk and must agree.
Set RIVERFS_POSIX_ON_LOCAL=1 to run the module against a local directory instead.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from pathlib import Path

import pytest
from posix_support import ON_LOCAL, errno_of, same_errno
from support import wait_until

ENGINES = ("sqlite", "postgresql")  # see conftest.py: these tests run on both engines

# extra `riverfs mount` options, e.g. "--attr-timeout 0 --entry-timeout 0" to bypass kernel caches
riverfs_only = pytest.mark.skipif(ON_LOCAL, reason="riverfs-specific expectation")


_libc = ctypes.CDLL(None, use_errno=True)
_libc.getxattr.restype = ctypes.c_ssize_t
_libc.getxattr.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
_libc.listxattr.restype = ctypes.c_ssize_t
_libc.listxattr.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]


def raw_getxattr(path: Path, name: str, size: int) -> int:
    """getxattr(2) into a buffer of `size` bytes; the returned length, or raises OSError."""
    buf = ctypes.create_string_buffer(max(size, 1))
    n = _libc.getxattr(os.fsencode(path), name.encode(), buf if size else None, size)
    if n < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return n


def raw_listxattr(path: Path, size: int) -> int:
    buf = ctypes.create_string_buffer(max(size, 1))
    n = _libc.listxattr(os.fsencode(path), buf if size else None, size)
    if n < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return n


def touch(path: Path) -> Path:
    with open(path, "wb"):
        pass
    return path


def test_setxattr_then_getxattr_returns_the_value(d: Path):
    f = touch(d / "f")
    os.setxattr(f, "user.color", b"blue")
    assert os.getxattr(f, "user.color") == b"blue"


def test_xattr_values_are_binary_and_may_be_empty(d: Path):
    f = touch(d / "f")
    binary = bytes(range(256)) * 4
    os.setxattr(f, "user.bin", binary)
    os.setxattr(f, "user.empty", b"")
    assert os.getxattr(f, "user.bin") == binary
    assert os.getxattr(f, "user.empty") == b""
    assert sorted(os.listxattr(f)) == ["user.bin", "user.empty"]


@riverfs_only
def test_xattr_value_up_to_64_kib(d: Path):
    f = touch(d / "f")
    value = os.urandom(65536)
    os.setxattr(f, "user.big", value)
    assert os.getxattr(f, "user.big") == value


def test_xattr_value_over_64_kib_fails_e2big(d: Path, local: Path):
    def scenario(base: Path):
        os.setxattr(touch(base / "f"), "user.huge", b"x" * 65537)

    same_errno(scenario, d, local, errno.E2BIG)


def test_getxattr_of_missing_name_fails_enodata(d: Path, local: Path):
    def scenario(base: Path):
        f = touch(base / "f")
        os.setxattr(f, "user.present", b"1")
        os.getxattr(f, "user.absent")

    same_errno(scenario, d, local, errno.ENODATA)


def test_xattr_create_flag_on_existing_name_fails_eexist(d: Path, local: Path):
    def scenario(base: Path):
        f = touch(base / "f")
        os.setxattr(f, "user.k", b"first", os.XATTR_CREATE)
        os.setxattr(f, "user.k", b"second", os.XATTR_CREATE)

    same_errno(scenario, d, local, errno.EEXIST)
    assert os.getxattr(d / "f", "user.k") == b"first"


def test_xattr_replace_flag_on_missing_name_fails_enodata(d: Path, local: Path):
    def scenario(base: Path):
        os.setxattr(touch(base / "f"), "user.k", b"v", os.XATTR_REPLACE)

    same_errno(scenario, d, local, errno.ENODATA)
    assert os.listxattr(d / "f") == []


def test_xattr_replace_flag_overwrites_existing_value(d: Path):
    f = touch(d / "f")
    os.setxattr(f, "user.k", b"a much longer first value")
    os.setxattr(f, "user.k", b"short", os.XATTR_REPLACE)
    assert os.getxattr(f, "user.k") == b"short"
    os.setxattr(f, "user.k", b"third")  # no flag: create or replace
    assert os.getxattr(f, "user.k") == b"third"
    assert os.listxattr(f) == ["user.k"]


def test_listxattr_lists_exactly_the_names_set(d: Path):
    f = touch(d / "f")
    assert os.listxattr(f) == []
    names = [f"user.attr{i:03d}" for i in range(100)]
    for n in names:
        os.setxattr(f, n, n.encode())
    assert sorted(os.listxattr(f)) == names
    for n in names[::7]:
        assert os.getxattr(f, n) == n.encode()


def test_removexattr_removes_the_name(d: Path):
    f = touch(d / "f")
    os.setxattr(f, "user.a", b"1")
    os.setxattr(f, "user.b", b"2")
    os.removexattr(f, "user.a")
    assert os.listxattr(f) == ["user.b"]
    assert errno_of(os.getxattr, f, "user.a") == errno.ENODATA
    os.setxattr(f, "user.a", b"again", os.XATTR_CREATE)
    assert os.getxattr(f, "user.a") == b"again"


def test_removexattr_of_missing_name_fails_enodata(d: Path, local: Path):
    same_errno(lambda base: os.removexattr(touch(base / "f"), "user.nope"), d, local, errno.ENODATA)


def test_xattr_name_longer_than_255_bytes_fails_erange(d: Path, local: Path):
    def scenario(base: Path):
        os.setxattr(touch(base / "f"), "user." + "n" * 251, b"v")

    same_errno(scenario, d, local, errno.ERANGE)


def test_xattr_name_of_255_bytes_works(d: Path):
    f = touch(d / "f")
    name = "user." + "n" * 250
    os.setxattr(f, name, b"v")
    assert os.getxattr(f, name) == b"v"
    assert os.listxattr(f) == [name]


def test_xattr_in_unknown_namespace_fails_eopnotsupp(d: Path, local: Path):
    same_errno(
        lambda base: os.setxattr(touch(base / "f"), "bogus.name", b"v"), d, local, errno.EOPNOTSUPP
    )


def test_user_xattr_on_symlink_itself_fails_eperm(d: Path, local: Path):
    def scenario(base: Path):
        touch(base / "t")
        os.symlink("t", base / "l")
        os.setxattr(base / "l", "user.k", b"v", follow_symlinks=False)

    same_errno(scenario, d, local, errno.EPERM)


def test_xattr_through_symlink_applies_to_target(d: Path):
    touch(d / "t")
    os.symlink("t", d / "l")
    os.setxattr(d / "l", "user.k", b"v")
    assert os.getxattr(d / "t", "user.k") == b"v"


def test_xattrs_on_directories(d: Path):
    os.mkdir(d / "sub")
    os.setxattr(d / "sub", "user.dir", b"yes")
    assert os.getxattr(d / "sub", "user.dir") == b"yes"
    assert os.listxattr(d / "sub") == ["user.dir"]
    os.removexattr(d / "sub", "user.dir")
    assert os.listxattr(d / "sub") == []


def test_xattrs_follow_the_inode_through_rename_and_hard_links(d: Path):
    f = touch(d / "f")
    os.setxattr(f, "user.k", b"v")
    os.rename(f, d / "g")
    os.link(d / "g", d / "h")
    assert os.getxattr(d / "h", "user.k") == b"v"
    os.setxattr(d / "h", "user.k2", b"w")
    assert sorted(os.listxattr(d / "g")) == ["user.k", "user.k2"]


def test_xattrs_are_per_file(d: Path):
    a, b = touch(d / "a"), touch(d / "b")
    os.setxattr(a, "user.k", b"for a")
    assert os.listxattr(b) == []
    assert errno_of(os.getxattr, b, "user.k") == errno.ENODATA


def test_xattrs_vanish_with_the_file_and_do_not_leak_to_a_new_one(d: Path):
    f = touch(d / "f")
    os.setxattr(f, "user.k", b"v")
    os.unlink(f)
    touch(d / "f")
    assert os.listxattr(d / "f") == []


def test_setxattr_and_removexattr_update_ctime(d: Path):
    f = touch(d / "f")
    for op in (lambda: os.setxattr(f, "user.k", b"v"), lambda: os.removexattr(f, "user.k")):
        ctime = os.stat(f).st_ctime_ns
        wait_until(lambda c=ctime: time.time_ns() > c + 20_000_000, timeout=2, interval=0.005)
        op()
        assert os.stat(f).st_ctime_ns > ctime


def test_xattrs_on_open_fd(d: Path):
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.setxattr(fd, "user.fd", b"via fd")
        assert os.getxattr(fd, "user.fd") == b"via fd"
        assert os.listxattr(fd) == ["user.fd"]
    finally:
        os.close(fd)
    assert os.getxattr(d / "f", "user.fd") == b"via fd"


def test_trusted_xattr_as_root(d: Path):
    f = touch(d / "f")
    os.setxattr(f, "trusted.k", b"root only")
    assert os.getxattr(f, "trusted.k") == b"root only"
    assert "trusted.k" in os.listxattr(f)


def test_xattr_on_missing_file_fails_enoent(d: Path, local: Path):
    same_errno(lambda base: os.getxattr(base / "missing", "user.k"), d, local, errno.ENOENT)
    same_errno(lambda base: os.setxattr(base / "missing", "user.k", b""), d, local, errno.ENOENT)
    same_errno(lambda base: os.listxattr(base / "missing"), d, local, errno.ENOENT)


def test_getxattr_size_query_and_too_small_buffer_erange(d: Path, local: Path):
    def scenario(base: Path):
        f = touch(base / "f")
        os.setxattr(f, "user.k", b"0123456789")
        assert raw_getxattr(f, "user.k", 0) == 10  # size query
        assert raw_getxattr(f, "user.k", 10) == 10
        raw_getxattr(f, "user.k", 3)

    same_errno(scenario, d, local, errno.ERANGE)


def test_listxattr_size_query_and_too_small_buffer_erange(d: Path, local: Path):
    def scenario(base: Path):
        f = touch(base / "f")
        os.setxattr(f, "user.a", b"")
        os.setxattr(f, "user.bb", b"")
        assert raw_listxattr(f, 0) == len(b"user.a\0user.bb\0")
        raw_listxattr(f, 4)

    same_errno(scenario, d, local, errno.ERANGE)


@pytest.mark.parametrize("name", ["user.", "trusted.", "security."])
def test_xattr_name_with_empty_suffix_fails_einval(d: Path, local: Path, name: str):
    same_errno(lambda base: os.setxattr(touch(base / "f"), name, b"v"), d, local, errno.EINVAL)


def test_trusted_xattr_on_a_symlink_itself_as_root(d: Path, local: Path):
    for base in (local, d):
        touch(base / "t")
        os.symlink("t", base / "l")
        os.setxattr(base / "l", "trusted.k", b"on the link", follow_symlinks=False)
    for base in (local, d):
        assert os.getxattr(base / "l", "trusted.k", follow_symlinks=False) == b"on the link"
        assert os.listxattr(base / "l", follow_symlinks=False) == ["trusted.k"]
        assert os.listxattr(base / "t") == []


def test_xattr_names_are_bytes(d: Path, local: Path):
    for base in (local, d):
        f = touch(base / "f")
        os.setxattr(f, b"user.\xff\xfe raw", b"v1")
        os.setxattr(f, "user.ünï".encode(), b"v2")
    for base in (local, d):
        assert sorted(os.fsencode(n) for n in os.listxattr(base / "f")) == sorted(
            [b"user.\xff\xfe raw", "user.ünï".encode()]
        )
        assert os.getxattr(base / "f", b"user.\xff\xfe raw") == b"v1"
