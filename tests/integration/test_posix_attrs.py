"""Attributes through a real riverfs mount: chmod, chown, utimes (incl. UTIME_NOW/UTIME_OMIT),
time bookkeeping, directory link counts, st_blocks, inode numbers and statfs.

Every test works in its own directory of one mount shared by the module. Timestamps are
checked against stamps set far in the past with utime, or after the wall clock has
moved past the previous value, so a coarse clock cannot make a change invisible.
Set RIVERFS_POSIX_ON_LOCAL=1 to run the module against a local directory instead.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from posix_support import MOUNT_ARGS, ON_LOCAL, errno_of, shared_mount
from support import Volume, force_unmount, run_cli, wait_until

# extra `riverfs mount` options, e.g. "--attr-timeout 0 --entry-timeout 0" to bypass kernel caches
riverfs_only = pytest.mark.skipif(ON_LOCAL, reason="riverfs-specific expectation")

MiB = 1024 * 1024
PiB = 1024**5
SEC = 10**9
OLD = 1_000_000_000 * SEC  # 2001-09-09, far before any test runs
OLDER = 900_000_000 * SEC

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(Timespec), ctypes.c_int]


def _ts(value: int) -> Timespec:
    if value in (UTIME_NOW, UTIME_OMIT):
        return Timespec(0, value)
    return Timespec(value // SEC, value % SEC)


def utimensat(path: Path, atime: int, mtime: int, flags: int = 0) -> None:
    """utimensat(2): each time is ns since the epoch, or UTIME_NOW / UTIME_OMIT."""
    times = (Timespec * 2)(_ts(atime), _ts(mtime))
    if _libc.utimensat(AT_FDCWD, os.fsencode(path), times, flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))


@pytest.fixture(scope="module")
def volume_and_root(tmp_path_factory) -> Iterator[tuple[Volume | None, Path]]:
    """One riverfs mount (SQLite + file:// store) shared by the tests of this module."""
    with shared_mount(tmp_path_factory, "posix_attrs") as volume_and_root:
        yield volume_and_root


@pytest.fixture
def fs_root(volume_and_root) -> Path:
    return volume_and_root[1]


def write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def clock_past(ns: int) -> None:
    """Wait (bounded) until the wall clock is clearly past a timestamp, so a new one differs."""
    wait_until(lambda: time.time_ns() > ns + 20_000_000, timeout=2, interval=0.005)


def is_recent(ns: int, since: int) -> bool:
    """`ns` is a timestamp taken after `since` (allowing for a coarse kernel clock)."""
    return since - 50_000_000 <= ns <= time.time_ns() + 50_000_000


def age(path: Path) -> int:
    """Stamp atime and mtime far in the past; return the ctime afterwards."""
    os.utime(path, ns=(OLD, OLD), follow_symlinks=False)
    ctime = os.lstat(path).st_ctime_ns
    clock_past(ctime)
    return ctime


# --- chmod --------------------------------------------------------------------------------


def test_chmod_sets_permission_bits_and_updates_ctime_not_mtime(d: Path):
    write(d / "f", b"x")
    ctime = age(d / "f")
    for mode in (0o000, 0o777, 0o4755, 0o2710, 0o1644, 0o7777, 0o640):
        os.chmod(d / "f", mode)
        st = os.stat(d / "f")
        assert stat.S_IMODE(st.st_mode) == mode
        assert stat.S_ISREG(st.st_mode)
    st = os.stat(d / "f")
    assert st.st_ctime_ns > ctime
    assert st.st_mtime_ns == OLD


def test_fchmod_on_open_fd_applies_to_the_file(d: Path):
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.fchmod(fd, 0o604)
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o604
    finally:
        os.close(fd)
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o604


def test_chmod_keeps_file_type_of_directories_and_special_files(d: Path):
    os.mkdir(d / "dir")
    os.mkfifo(d / "fifo")
    os.mknod(d / "dev", 0o600 | stat.S_IFBLK, os.makedev(7, 0))
    for name, kind in (("dir", stat.S_IFDIR), ("fifo", stat.S_IFIFO), ("dev", stat.S_IFBLK)):
        os.chmod(d / name, 0o1751)
        st = os.lstat(d / name)
        assert stat.S_IFMT(st.st_mode) == kind
        assert stat.S_IMODE(st.st_mode) == 0o1751
    assert os.lstat(d / "dev").st_rdev == os.makedev(7, 0)


# --- chown --------------------------------------------------------------------------------


def test_chown_by_root_sets_uid_and_gid_and_updates_ctime(d: Path):
    write(d / "f", b"x")
    ctime = age(d / "f")
    os.chown(d / "f", 1234, 5678)
    st = os.stat(d / "f")
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert st.st_ctime_ns > ctime
    assert st.st_mtime_ns == OLD


def test_chown_with_minus_one_leaves_that_id_unchanged(d: Path):
    write(d / "f", b"x")
    os.chown(d / "f", 1000, 2000)
    os.chown(d / "f", -1, 3000)
    assert (os.stat(d / "f").st_uid, os.stat(d / "f").st_gid) == (1000, 3000)
    os.chown(d / "f", 4000, -1)
    assert (os.stat(d / "f").st_uid, os.stat(d / "f").st_gid) == (4000, 3000)


def test_lchown_changes_the_symlink_not_its_target(d: Path):
    write(d / "t", b"")
    os.symlink("t", d / "l")
    os.lchown(d / "l", 111, 222)
    assert (os.lstat(d / "l").st_uid, os.lstat(d / "l").st_gid) == (111, 222)
    assert (os.stat(d / "t").st_uid, os.stat(d / "t").st_gid) == (0, 0)
    os.chown(d / "l", 333, 444)  # follows
    assert (os.stat(d / "t").st_uid, os.stat(d / "t").st_gid) == (333, 444)
    assert os.lstat(d / "l").st_uid == 111


def test_chown_of_large_ids(d: Path):
    write(d / "f", b"")
    os.chown(d / "f", 2**32 - 2, 2**31 + 5)
    st = os.stat(d / "f")
    assert (st.st_uid, st.st_gid) == (2**32 - 2, 2**31 + 5)


# --- utimes -------------------------------------------------------------------------------


def test_utime_sets_exact_nanosecond_times_and_updates_ctime(d: Path):
    write(d / "f", b"x")
    ctime = os.stat(d / "f").st_ctime_ns
    clock_past(ctime)
    atime, mtime = 1_234_567_890_123_456_789, 1_111_111_111_987_654_321
    os.utime(d / "f", ns=(atime, mtime))
    st = os.stat(d / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (atime, mtime)
    assert st.st_ctime_ns > ctime


def test_utime_accepts_times_before_1970_and_far_in_the_future(d: Path):
    write(d / "f", b"x")
    for atime, mtime in ((-123_456_789_000, -1), (4_102_444_800 * SEC + 5, 0)):
        os.utime(d / "f", ns=(atime, mtime))
        st = os.stat(d / "f")
        assert (st.st_atime_ns, st.st_mtime_ns) == (atime, mtime)


def test_utime_without_times_sets_both_to_now(d: Path):
    write(d / "f", b"x")
    os.utime(d / "f", ns=(OLD, OLD))
    before = time.time_ns()
    os.utime(d / "f")
    st = os.stat(d / "f")
    assert is_recent(st.st_atime_ns, before)
    assert is_recent(st.st_mtime_ns, before)


def test_utimensat_omit_atime_sets_only_mtime(d: Path):
    write(d / "f", b"x")
    os.utime(d / "f", ns=(OLD, OLD))
    utimensat(d / "f", UTIME_OMIT, OLDER + 7)
    st = os.stat(d / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (OLD, OLDER + 7)


def test_utimensat_omit_mtime_with_now_atime(d: Path):
    write(d / "f", b"x")
    os.utime(d / "f", ns=(OLD, OLD))
    before = time.time_ns()
    utimensat(d / "f", UTIME_NOW, UTIME_OMIT)
    st = os.stat(d / "f")
    assert is_recent(st.st_atime_ns, before)
    assert st.st_mtime_ns == OLD


def test_utimensat_now_mtime_with_explicit_atime(d: Path):
    write(d / "f", b"x")
    os.utime(d / "f", ns=(OLD, OLD))
    before = time.time_ns()
    utimensat(d / "f", OLDER, UTIME_NOW)
    st = os.stat(d / "f")
    assert st.st_atime_ns == OLDER
    assert is_recent(st.st_mtime_ns, before)


def test_utimensat_omit_both_changes_nothing(d: Path):
    write(d / "f", b"x")
    os.utime(d / "f", ns=(OLD, OLDER))
    st0 = os.stat(d / "f")
    clock_past(st0.st_ctime_ns)
    utimensat(d / "f", UTIME_OMIT, UTIME_OMIT)
    st = os.stat(d / "f")
    assert (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns) == (
        OLD,
        OLDER,
        st0.st_ctime_ns,
    )


def test_utime_on_symlink_without_following(d: Path):
    write(d / "t", b"")
    os.utime(d / "t", ns=(OLD, OLD))
    os.symlink("t", d / "l")
    utimensat(d / "l", OLDER, OLDER + 1, AT_SYMLINK_NOFOLLOW)
    assert os.lstat(d / "l").st_mtime_ns == OLDER + 1
    assert os.stat(d / "t").st_mtime_ns == OLD


def test_futimens_on_open_fd(d: Path):
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.utime(fd, ns=(OLD + 1, OLD + 2))
        assert os.fstat(fd).st_mtime_ns == OLD + 2
    finally:
        os.close(fd)
    assert os.stat(d / "f").st_atime_ns == OLD + 1


# --- time bookkeeping ---------------------------------------------------------------------


def test_new_file_has_current_times(d: Path):
    before = time.time_ns()
    write(d / "f", b"")
    st = os.stat(d / "f")
    for t in (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns):
        assert is_recent(t, before)


def test_write_updates_mtime_and_ctime(d: Path):
    write(d / "f", b"x" * 100)
    ctime = age(d / "f")
    before = time.time_ns()
    with open(d / "f", "r+b") as f:
        f.write(b"y")
    st = os.stat(d / "f")
    assert is_recent(st.st_mtime_ns, before)
    assert st.st_ctime_ns > ctime


def test_mtime_of_a_write_is_visible_before_close(d: Path):
    write(d / "f", b"")
    os.utime(d / "f", ns=(OLD, OLD))
    fd = os.open(d / "f", os.O_WRONLY)
    try:
        before = time.time_ns()
        os.write(fd, b"data")
        assert is_recent(os.stat(d / "f").st_mtime_ns, before)
        assert is_recent(os.fstat(fd).st_mtime_ns, before)
    finally:
        os.close(fd)


def test_times_set_after_writing_but_before_close_are_kept(d: Path):
    """cp -p, rsync and tar write, then set times on the open file, then close."""
    fd = os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"x" * 300_000)
        os.utime(fd, ns=(OLDER, OLD))
    finally:
        os.close(fd)
    st = os.stat(d / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (OLDER, OLD)
    assert st.st_size == 300_000

    fd = os.open(d / "g", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"y" * 1000)
        os.utime(d / "g", ns=(OLDER + 1, OLD + 1))  # by path, file still open
        os.chmod(d / "g", 0o600)
    finally:
        os.close(fd)
    st = os.stat(d / "g")
    assert (st.st_atime_ns, st.st_mtime_ns) == (OLDER + 1, OLD + 1)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_size == 1000


def test_truncate_updates_mtime_and_ctime(d: Path):
    write(d / "f", b"x" * 100)
    for size in (10, 1000):
        ctime = age(d / "f")
        before = time.time_ns()
        os.truncate(d / "f", size)
        st = os.stat(d / "f")
        assert st.st_size == size
        assert is_recent(st.st_mtime_ns, before)
        assert st.st_ctime_ns > ctime


def test_read_updates_atime_when_older_than_mtime(d: Path):
    """relatime: a read moves atime when atime <= mtime (or ctime)."""
    write(d / "f", b"data to read")
    os.utime(d / "f", ns=(OLDER, OLD))  # atime before mtime
    with open(d / "f", "rb") as f:
        assert f.read() == b"data to read"
    wait_until(lambda: os.stat(d / "f").st_atime_ns > OLD, timeout=3)


def test_listing_a_directory_updates_its_atime_when_older_than_mtime(d: Path):
    os.mkdir(d / "sub")
    write(d / "sub" / "f", b"")
    os.utime(d / "sub", ns=(OLDER, OLD))
    assert os.listdir(d / "sub") == ["f"]
    wait_until(lambda: os.stat(d / "sub").st_atime_ns > OLD, timeout=3)


def test_write_through_shared_mmap_updates_mtime(d: Path):
    write(d / "f", b"\0" * 8192)
    os.utime(d / "f", ns=(OLD, OLD))
    with open(d / "f", "r+b") as f:
        m = mmap.mmap(f.fileno(), 0)
        try:
            m[100:105] = b"hello"
            m.flush()
        finally:
            m.close()
    wait_until(lambda: os.stat(d / "f").st_mtime_ns > OLD, timeout=3)


def test_read_keeps_an_atime_newer_than_mtime_and_ctime(d: Path):
    """relatime: no update when atime is after mtime and ctime and less than a day old."""
    write(d / "f", b"data")
    future = time.time_ns() + 3600 * SEC
    os.utime(d / "f", ns=(future, OLD))
    with open(d / "f", "rb") as f:
        assert f.read() == b"data"
    assert os.stat(d / "f").st_atime_ns == future


def test_read_does_not_change_mtime_or_ctime(d: Path):
    write(d / "f", b"abc")
    ctime = age(d / "f")
    with open(d / "f", "rb") as f:
        f.read()
    st = os.stat(d / "f")
    assert st.st_mtime_ns == OLD
    assert st.st_ctime_ns == ctime


def test_creating_and_removing_entries_updates_parent_mtime_and_ctime(d: Path):
    write(d / "existing", b"")
    os.mkdir(d / "emptydir")
    ops: list[tuple[str, Callable[[], object]]] = [
        ("create", lambda: write(d / "new", b"")),
        ("mkdir", lambda: os.mkdir(d / "newdir")),
        ("symlink", lambda: os.symlink("x", d / "sym")),
        ("link", lambda: os.link(d / "existing", d / "hard")),
        ("mknod", lambda: os.mkfifo(d / "fifo")),
        ("rename", lambda: os.rename(d / "new", d / "renamed")),
        ("unlink", lambda: os.unlink(d / "renamed")),
        ("rmdir", lambda: os.rmdir(d / "emptydir")),
    ]
    for name, op in ops:
        ctime = age(d)
        before = time.time_ns()
        op()
        st = os.stat(d)
        assert is_recent(st.st_mtime_ns, before), f"{name} did not update the parent's mtime"
        assert st.st_ctime_ns > ctime, f"{name} did not update the parent's ctime"


def test_unlink_of_one_hard_link_updates_ctime_of_the_inode(d: Path):
    write(d / "a", b"")
    os.link(d / "a", d / "b")
    ctime = age(d / "a")
    os.unlink(d / "b")
    assert os.stat(d / "a").st_ctime_ns > ctime


# --- link counts, blocks, inode numbers ---------------------------------------------------


def test_directory_nlink_is_two_plus_number_of_subdirectories(d: Path):
    assert os.stat(d).st_nlink == 2
    for i in range(5):
        os.mkdir(d / f"sub{i}")
        assert os.stat(d).st_nlink == 3 + i
    write(d / "file", b"")
    os.symlink("sub0", d / "link")
    os.mkfifo(d / "fifo")
    assert os.stat(d).st_nlink == 7  # non-directories do not count
    os.rmdir(d / "sub4")
    assert os.stat(d).st_nlink == 6
    os.makedirs(d / "sub0" / "a" / "b")
    assert os.stat(d).st_nlink == 6
    assert os.stat(d / "sub0").st_nlink == 3
    os.rename(d / "sub0" / "a", d / "a")
    assert os.stat(d).st_nlink == 7
    assert os.stat(d / "sub0").st_nlink == 2


def test_root_directory_nlink_counts_its_subdirectories(fs_root: Path, d: Path):
    before = os.stat(fs_root).st_nlink
    assert before >= 3  # ".", "..", and at least this test's directory
    os.mkdir(fs_root / "extra_root_subdir")
    try:
        assert os.stat(fs_root).st_nlink == before + 1
    finally:
        os.rmdir(fs_root / "extra_root_subdir")
    assert os.stat(fs_root).st_nlink == before


def test_regular_file_nlink_is_one_and_symlink_nlink_is_one(d: Path):
    write(d / "f", b"")
    os.symlink("f", d / "l")
    assert os.stat(d / "f").st_nlink == 1
    assert os.lstat(d / "l").st_nlink == 1


def test_st_blocks_reflects_stored_bytes(d: Path):
    write(d / "empty", b"")
    assert os.stat(d / "empty").st_blocks == 0
    write(d / "tiny", b"0123456789")
    assert os.stat(d / "tiny").st_blocks > 0  # tar and cp treat 0 blocks as all-hole
    write(d / "mib", os.urandom(MiB))
    wait_until(lambda: os.stat(d / "mib").st_blocks * 512 >= MiB, timeout=3)
    assert os.stat(d / "mib").st_blocks * 512 <= MiB + 64 * 1024
    os.truncate(d / "mib", 4096)
    wait_until(lambda: os.stat(d / "mib").st_blocks * 512 <= 64 * 1024, timeout=3)


def test_st_blksize_is_a_sensible_io_size(d: Path):
    write(d / "f", b"")
    assert os.stat(d / "f").st_blksize >= 4096


def test_inode_number_is_stable_across_rename_write_chmod_and_links(d: Path):
    write(d / "f", b"x")
    ino = os.stat(d / "f").st_ino
    os.mkdir(d / "sub")
    os.rename(d / "f", d / "sub" / "g")
    with open(d / "sub" / "g", "ab") as f:
        f.write(b"more" * 100_000)
    os.chmod(d / "sub" / "g", 0o600)
    os.truncate(d / "sub" / "g", 1)
    os.link(d / "sub" / "g", d / "h")
    os.unlink(d / "sub" / "g")
    assert os.stat(d / "h").st_ino == ino
    with os.scandir(d) as it:
        assert {e.name: e.inode() for e in it}["h"] == ino


def test_inode_numbers_are_unique_and_not_reused_while_file_is_open(d: Path):
    inos = set()
    for i in range(200):
        write(d / f"f{i}", b"")
        inos.add(os.stat(d / f"f{i}").st_ino)
    assert len(inos) == 200
    fd = os.open(d / "f0", os.O_RDONLY)
    try:
        held = os.fstat(fd).st_ino
        os.unlink(d / "f0")
        for i in range(50):
            write(d / f"n{i}", b"")
            assert os.stat(d / f"n{i}").st_ino != held
    finally:
        os.close(fd)


@riverfs_only  # ext4 reuses inode numbers; riverfs promises not to (docs/SEMANTICS.md)
def test_inode_numbers_of_deleted_files_are_not_handed_out_again(d: Path):
    gone = set()
    for i in range(100):
        write(d / f"f{i}", b"")
        gone.add(os.stat(d / f"f{i}").st_ino)
        os.unlink(d / f"f{i}")
    for i in range(100):
        os.mkdir(d / f"n{i}")
        assert os.stat(d / f"n{i}").st_ino not in gone


def test_all_files_of_the_mount_share_st_dev(d: Path, fs_root: Path):
    write(d / "f", b"")
    os.mkdir(d / "sub")
    assert os.stat(d / "f").st_dev == os.stat(d / "sub").st_dev == os.stat(fs_root).st_dev


def drop_kernel_caches() -> None:
    """Make the kernel forget cached dentries and inodes (FUSE sends FORGET for them)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")


@pytest.mark.skipif(not os.access("/proc/sys/vm/drop_caches", os.W_OK), reason="needs root")
def test_inode_numbers_and_data_survive_the_kernel_forgetting_inodes(d: Path):
    os.makedirs(d / "a" / "b")
    write(d / "a" / "b" / "f", b"deep")
    write(d / "g", b"linked")
    os.link(d / "g", d / "a" / "g2")
    os.symlink("a/b/f", d / "sym")
    names = ["a", "a/b", "a/b/f", "g", "a/g2", "sym"]
    before = {n: os.lstat(d / n) for n in names}
    held = os.open(d / "g", os.O_RDONLY)
    try:
        os.unlink(d / "g")
        os.unlink(d / "a" / "g2")  # now only the open fd keeps it
        drop_kernel_caches()
        for n in ("a", "a/b", "a/b/f", "sym"):
            st = os.lstat(d / n)
            assert st.st_ino == before[n].st_ino, n
            assert (st.st_mode, st.st_nlink, st.st_size) == (
                before[n].st_mode,
                before[n].st_nlink,
                before[n].st_size,
            ), n
        with open(d / "sym", "rb") as f:
            assert f.read() == b"deep"
        assert os.fstat(held).st_nlink == 0
        os.posix_fadvise(held, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(held, 10, 0) == b"linked"
    finally:
        os.close(held)


def test_mount_root_attributes_can_be_changed(fs_root: Path, d: Path):
    st = os.stat(fs_root)
    try:
        os.chmod(fs_root, 0o1777)
        os.chown(fs_root, 123, 456)
        os.setxattr(fs_root, "user.root", b"r")
        st2 = os.stat(fs_root)
        assert stat.S_IMODE(st2.st_mode) == 0o1777
        assert (st2.st_uid, st2.st_gid) == (123, 456)
        assert os.getxattr(fs_root, "user.root") == b"r"
    finally:
        os.chmod(fs_root, stat.S_IMODE(st.st_mode))
        os.chown(fs_root, st.st_uid, st.st_gid)
        os.removexattr(fs_root, "user.root")


# --- statfs -------------------------------------------------------------------------------


@riverfs_only
def test_statfs_reports_one_pib_capacity_and_name_limit(fs_root: Path):
    sv = os.statvfs(fs_root)
    assert sv.f_bsize > 0 and sv.f_frsize > 0
    total = sv.f_blocks * sv.f_frsize
    assert abs(total - PiB) <= PiB // 100, f"capacity {total} is not the 1 PiB default"
    assert 0 <= sv.f_bavail <= sv.f_bfree <= sv.f_blocks
    assert 0 <= sv.f_ffree <= sv.f_files
    assert sv.f_files > 0
    assert sv.f_namemax == 255


@riverfs_only
def test_statfs_used_space_and_inodes_follow_writes_and_deletes(volume: Volume):
    fs_root = volume.mount(None, *MOUNT_ARGS).path  # a fresh volume: no deletes in flight
    d = fs_root

    def used_bytes() -> int:
        sv = os.statvfs(fs_root)
        return (sv.f_blocks - sv.f_bfree) * sv.f_frsize

    def used_inodes() -> int:
        sv = os.statvfs(fs_root)
        return sv.f_files - sv.f_ffree

    bytes0, inodes0 = used_bytes(), used_inodes()
    write(d / "big", os.urandom(16 * MiB))
    for i in range(10):
        write(d / f"small{i}", b"s")
    wait_until(lambda: used_bytes() >= bytes0 + 16 * MiB - 64 * 1024, timeout=10)
    wait_until(lambda: used_inodes() >= inodes0 + 11, timeout=10)
    os.unlink(d / "big")
    for i in range(10):
        os.unlink(d / f"small{i}")
    wait_until(lambda: used_bytes() <= bytes0 + 64 * 1024, timeout=30)
    wait_until(lambda: used_inodes() <= inodes0, timeout=10)


@riverfs_only
def test_statfs_reports_the_capacity_given_at_format(tmp_path: Path):
    vol = Volume(
        root=tmp_path,
        meta_url=f"sqlite://{tmp_path}/meta.db",
        storage_url=f"file://{tmp_path}/store",
        cache_dir=tmp_path / "cache",
    )
    try:
        run_cli("format", vol.meta_url, "--storage", vol.storage_url, "--capacity", "10G")
        mnt = vol.mount(tmp_path / "mnt", *MOUNT_ARGS).path
        sv = os.statvfs(mnt)
        assert sv.f_blocks * sv.f_frsize == 10 * 1024**3
        free0 = sv.f_bavail * sv.f_frsize
        write(mnt / "f", os.urandom(8 * MiB))
        wait_until(lambda: os.statvfs(mnt).f_bavail * sv.f_frsize <= free0 - 8 * MiB + 65536)
    finally:
        vol.cleanup()
        force_unmount(tmp_path / "mnt")


def test_statvfs_works_on_a_file_inside_the_mount(d: Path):
    write(d / "f", b"")
    assert os.statvfs(d / "f").f_namemax == 255
    assert errno_of(os.statvfs, d / "missing") == errno.ENOENT
