"""Open-but-unlinked files through a real riverfs mount.

POSIX: after unlink (or a rename over it) a file that is still open stays readable and
writable through its open descriptors; its data goes away only after the last close.
Reads here first drop the kernel page cache of the descriptor so they really reach the
filesystem. The object store of the volume is inspected to check that blocks survive
while the file is open and are deleted after the last close.
Set RIVERFS_POSIX_ON_LOCAL=1 to run the module against a local directory instead.
"""

from __future__ import annotations

import mmap
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from posix_support import MOUNT_ARGS, ON_LOCAL, fresh_dir, shared_mount
from support import Volume, wait_until

# extra `riverfs mount` options, e.g. "--attr-timeout 0 --entry-timeout 0" to bypass kernel caches
riverfs_only = pytest.mark.skipif(ON_LOCAL, reason="riverfs-specific expectation")

MiB = 1024 * 1024
BLOCK = 4 * MiB


@pytest.fixture(scope="module")
def volume_and_root(tmp_path_factory) -> Iterator[tuple[Volume | None, Path]]:
    """One riverfs mount (SQLite + file:// store) shared by the tests of this module."""
    with shared_mount(tmp_path_factory, "posix_open_unlinked") as volume_and_root:
        yield volume_and_root


@pytest.fixture
def d(volume_and_root, request) -> Path:
    """A fresh directory of the shared mount for one test."""
    return fresh_dir(volume_and_root[1], request)


@pytest.fixture
def store(volume_and_root) -> Path | None:
    """The directory of the volume's file:// object store (None when run on the local disk)."""
    vol = volume_and_root[0]
    return None if vol is None else Path(vol.storage_url.removeprefix("file://"))


def objects(store: Path | None) -> set[str]:
    """Keys of the data objects in the store (chunk blocks)."""
    if store is None:
        return set()
    found = set()
    for dirpath, _dirs, files in os.walk(store):
        rel = os.path.relpath(dirpath, store)
        if "chunks" in rel.split(os.sep):
            found.update(os.path.join(rel, f) for f in files)
    return found


def drop_page_cache(fd: int) -> None:
    """Make the next reads of `fd` go to the filesystem instead of the kernel page cache."""
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        piece = os.pread(fd, size - len(out), offset + len(out))
        if not piece:
            break
        out += piece
    return bytes(out)


def write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def read(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_unlink_while_open_keeps_data_until_release(d: Path, store: Path | None):
    data = os.urandom(2 * BLOCK + 12345)
    before = objects(store)
    write(d / "f", data)
    fd = os.open(d / "f", os.O_RDWR)
    try:
        mine = objects(store) - before
        if store is not None:
            assert mine, "writing 8 MiB stored no objects under chunks/"
        os.unlink(d / "f")
        assert not os.path.lexists(d / "f")
        assert os.listdir(d) == []
        assert os.fstat(fd).st_nlink == 0
        assert os.fstat(fd).st_size == len(data)
        drop_page_cache(fd)
        assert pread_exact(fd, len(data), 0) == data
        assert mine <= objects(store), "blocks of an open unlinked file were deleted"
    finally:
        os.close(fd)
    if store is not None:
        wait_until(lambda: not (mine & objects(store)), timeout=60)


def test_unlinked_open_file_stays_writable_and_extendable(d: Path):
    write(d / "f", b"a" * 1000)
    fd = os.open(d / "f", os.O_RDWR)
    try:
        os.unlink(d / "f")
        os.pwrite(fd, b"B" * 10, 500)
        os.pwrite(fd, b"tail", BLOCK + 3)
        os.fsync(fd)
        assert os.fstat(fd).st_size == BLOCK + 7
        drop_page_cache(fd)
        assert os.pread(fd, 20, 495) == b"aaaaa" + b"B" * 10 + b"aaaaa"
        assert os.pread(fd, 100, BLOCK) == b"\0\0\0tail"
        assert pread_exact(fd, BLOCK - 1000, 1000) == b"\0" * (BLOCK - 1000)
    finally:
        os.close(fd)


def test_unlinked_open_file_can_be_reopened_through_proc_fd(d: Path):
    write(d / "f", b"original")
    fd = os.open(d / "f", os.O_RDWR)
    try:
        os.unlink(d / "f")
        os.write(fd, b"ORIG")
        again = os.open(f"/proc/self/fd/{fd}", os.O_RDWR)
        try:
            assert os.fstat(again).st_ino == os.fstat(fd).st_ino
            assert os.pread(again, 100, 0) == b"ORIGinal"
            os.pwrite(again, b"!", 8)
        finally:
            os.close(again)
        drop_page_cache(fd)
        assert os.pread(fd, 100, 0) == b"ORIGinal!"
    finally:
        os.close(fd)


def test_two_fds_on_unlinked_file_keep_data_until_the_last_close(d: Path, store: Path | None):
    data = os.urandom(BLOCK + 1)
    before = objects(store)
    write(d / "f", data)
    mine = objects(store) - before
    fd1 = os.open(d / "f", os.O_RDONLY)
    fd2 = os.open(d / "f", os.O_RDWR)
    try:
        os.unlink(d / "f")
        os.close(fd1)
        fd1 = -1
        drop_page_cache(fd2)
        assert pread_exact(fd2, len(data), 0) == data
        assert mine <= objects(store)
    finally:
        if fd1 >= 0:
            os.close(fd1)
        os.close(fd2)
    if store is not None:
        wait_until(lambda: not (mine & objects(store)), timeout=60)


def test_rename_over_open_file_keeps_old_data_readable_through_fd(d: Path, store: Path | None):
    old = os.urandom(BLOCK + 100)
    before = objects(store)
    write(d / "target", old)
    mine = objects(store) - before
    write(d / "src", b"replacement")
    fd = os.open(d / "target", os.O_RDWR)
    try:
        os.replace(d / "src", d / "target")
        assert read(d / "target") == b"replacement"
        assert os.fstat(fd).st_nlink == 0
        drop_page_cache(fd)
        assert pread_exact(fd, len(old), 0) == old
        os.pwrite(fd, b"still writable", 0)
        drop_page_cache(fd)
        assert os.pread(fd, 14, 0) == b"still writable"
        assert read(d / "target") == b"replacement"
    finally:
        os.close(fd)
    if store is not None:
        wait_until(lambda: not (mine & objects(store)), timeout=60)


def test_unlink_one_of_two_hard_links_while_open_keeps_the_file(d: Path):
    write(d / "a", b"linked")
    os.link(d / "a", d / "b")
    fd = os.open(d / "a", os.O_RDWR)
    try:
        os.unlink(d / "a")
        assert os.fstat(fd).st_nlink == 1
        os.pwrite(fd, b"L", 0)
    finally:
        os.close(fd)
    assert read(d / "b") == b"Linked"
    assert os.stat(d / "b").st_nlink == 1


def test_same_name_recreated_while_old_file_is_open_is_a_distinct_file(d: Path):
    write(d / "f", b"old file")
    fd = os.open(d / "f", os.O_RDWR)
    try:
        old_ino = os.fstat(fd).st_ino
        os.unlink(d / "f")
        write(d / "f", b"new file, other data")
        assert os.stat(d / "f").st_ino != old_ino
        os.pwrite(fd, b"OLD", 0)
        drop_page_cache(fd)
        assert os.pread(fd, 100, 0) == b"OLD file"
        assert read(d / "f") == b"new file, other data"
    finally:
        os.close(fd)
    assert read(d / "f") == b"new file, other data"


def test_setattr_and_xattrs_work_on_an_unlinked_open_file(d: Path):
    write(d / "f", b"0123456789")
    fd = os.open(d / "f", os.O_RDWR)
    try:
        os.unlink(d / "f")
        os.ftruncate(fd, 4)
        os.fchmod(fd, 0o600)
        os.fchown(fd, 1234, 4321)
        os.utime(fd, ns=(10**18, 10**18))
        os.setxattr(fd, "user.orphan", b"yes")
        st = os.fstat(fd)
        assert st.st_size == 4
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert (st.st_uid, st.st_gid) == (1234, 4321)
        assert st.st_mtime_ns == 10**18
        assert os.getxattr(fd, "user.orphan") == b"yes"
        drop_page_cache(fd)
        assert os.pread(fd, 100, 0) == b"0123"
    finally:
        os.close(fd)


def test_mmap_of_unlinked_file_remains_usable(d: Path):
    write(d / "f", b"m" * 8192)
    with open(d / "f", "r+b") as f:
        m = mmap.mmap(f.fileno(), 0)
        try:
            os.unlink(d / "f")
            assert m[:4] == b"mmmm"
            m[0:4] = b"MMMM"
            m.flush()
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            assert os.pread(f.fileno(), 6, 0) == b"MMMMmm"
        finally:
            m.close()


def test_unlinked_directory_fd_and_file_fd_inside_it(d: Path):
    os.mkdir(d / "sub")
    write(d / "sub" / "f", b"inside")
    fd = os.open(d / "sub" / "f", os.O_RDONLY)
    try:
        os.unlink(d / "sub" / "f")
        os.rmdir(d / "sub")
        drop_page_cache(fd)
        assert os.pread(fd, 100, 0) == b"inside"
    finally:
        os.close(fd)
    assert os.listdir(d) == []


@riverfs_only
def test_statfs_space_of_unlinked_open_file_is_released_after_last_close(volume: Volume):
    d = volume.mount(None, *MOUNT_ARGS).path  # a fresh volume: no deletes in flight

    def used() -> int:
        sv = os.statvfs(d)
        return (sv.f_blocks - sv.f_bfree) * sv.f_frsize

    base = used()
    write(d / "f", os.urandom(12 * MiB))
    wait_until(lambda: used() >= base + 12 * MiB - 64 * 1024, timeout=10)
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        os.unlink(d / "f")
        drop_page_cache(fd)
        assert len(pread_exact(fd, 12 * MiB, 0)) == 12 * MiB
    finally:
        os.close(fd)
    wait_until(lambda: used() <= base + 64 * 1024, timeout=60)


def test_unlink_with_pending_writes_then_close_succeeds_and_cleans_up(d: Path, store: Path | None):
    before = objects(store)
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, os.urandom(3 * BLOCK))  # not fsynced
        os.unlink(d / "f")
        os.write(fd, b"more")
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(fd, 4, 3 * BLOCK) == b"more"
    finally:
        os.close(fd)  # must not fail
    if store is not None:
        wait_until(lambda: not (objects(store) - before), timeout=60)


def test_rename_of_file_with_pending_writes_keeps_the_data(d: Path):
    os.mkdir(d / "a")
    fd = os.open(d / "a" / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"first half ")
        os.rename(d / "a" / "f", d / "g")
        os.rename(d / "a", d / "b")
        os.write(fd, b"second half")
    finally:
        os.close(fd)
    assert read(d / "g") == b"first half second half"


def test_unlinked_file_held_only_by_an_o_path_descriptor_reopens_with_its_data(d: Path):
    """The kernel still references the inode (lookup count), so Linux keeps it and its data."""
    data = b"kept by O_PATH " * 1000
    write(d / "f", data)
    opath = os.open(d / "f", os.O_PATH)
    try:
        os.unlink(d / "f")
        fd = os.open(f"/proc/self/fd/{opath}", os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            assert os.fstat(fd).st_nlink == 0
            assert pread_exact(fd, len(data) + 1, 0) == data
        finally:
            os.close(fd)
    finally:
        os.close(opath)


@riverfs_only
def test_closing_an_unlinked_fd_keeps_blocks_that_another_link_still_uses(
    d: Path, store: Path | None
):
    before = objects(store)
    data = os.urandom(BLOCK + 5)
    write(d / "a", data)
    os.link(d / "a", d / "b")
    mine = objects(store) - before
    assert mine
    fd = os.open(d / "a", os.O_RDONLY)
    os.unlink(d / "a")
    os.close(fd)
    # let the background deleter demonstrably run: another file's blocks go away
    before_other = objects(store)
    write(d / "other", os.urandom(BLOCK))
    other = objects(store) - before_other
    os.unlink(d / "other")
    wait_until(lambda: not (other & objects(store)), timeout=60)
    assert mine <= objects(store), "blocks of a file that still has a link were deleted"
    assert read(d / "b") == data
