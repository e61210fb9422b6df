"""POSIX rename, hard links and symlinks through a real riverfs mount.

Every test works in its own directory of one mount shared by the module. Where Linux
defines an errno, the same operation also runs on the local disk and must agree.
renameat2 flags are exercised through libc with ctypes.
Set RIVERFS_POSIX_ON_LOCAL=1 to run the module against a local directory instead.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from posix_support import errno_of, same_errno
from support import wait_until

ENGINES = ("sqlite", "postgresql")  # see conftest.py: these tests run on both engines

# extra `riverfs mount` options, e.g. "--attr-timeout 0 --entry-timeout 0" to bypass kernel caches
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.renameat2.argtypes = [
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_uint,
]


def renameat2(src: Path | str, dst: Path | str, flags: int) -> None:
    """renameat2(2) with AT_FDCWD; raises OSError like the os module does."""
    if _libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(src), None, str(dst))


def write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def read(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def clock_past(ns: int) -> None:
    """Wait (bounded) until the wall clock is clearly past a timestamp, so a new one differs."""
    wait_until(lambda: time.time_ns() > ns + 20_000_000, timeout=2, interval=0.005)


# --- rename: files ------------------------------------------------------------------------


def test_rename_file_within_directory_keeps_inode_and_data(d: Path):
    write(d / "a", b"payload")
    ino = os.stat(d / "a").st_ino
    os.rename(d / "a", d / "b")
    assert not os.path.lexists(d / "a")
    assert os.stat(d / "b").st_ino == ino
    assert read(d / "b") == b"payload"
    assert os.listdir(d) == ["b"]


def test_rename_file_across_directories_updates_both_listings(d: Path):
    os.mkdir(d / "x")
    os.mkdir(d / "y")
    write(d / "x" / "f", b"moved")
    os.rename(d / "x" / "f", d / "y" / "g")
    assert os.listdir(d / "x") == []
    assert os.listdir(d / "y") == ["g"]
    assert read(d / "y" / "g") == b"moved"


def test_replace_over_existing_file_swaps_in_source_inode(d: Path):
    write(d / "src", b"new")
    write(d / "dst", b"old content")
    src_ino = os.stat(d / "src").st_ino
    os.replace(d / "src", d / "dst")
    assert os.listdir(d) == ["dst"]
    st = os.stat(d / "dst")
    assert st.st_ino == src_ino
    assert st.st_size == 3
    assert read(d / "dst") == b"new"


def test_rename_over_a_hard_link_of_another_file_drops_one_link(d: Path):
    write(d / "victim", b"v")
    os.link(d / "victim", d / "victim2")
    write(d / "src", b"s")
    os.rename(d / "src", d / "victim")
    assert os.stat(d / "victim2").st_nlink == 1
    assert read(d / "victim2") == b"v"
    assert read(d / "victim") == b"s"


def test_rename_to_itself_is_a_noop(d: Path):
    write(d / "a", b"same")
    os.rename(d / "a", d / "a")
    assert read(d / "a") == b"same"
    os.mkdir(d / "dir")
    os.rename(d / "dir", d / "dir")
    assert os.path.isdir(d / "dir")


def test_rename_between_two_links_of_the_same_inode_is_a_noop_keeping_both(d: Path, local: Path):
    for base in (local, d):
        write(base / "a", b"x")
        os.link(base / "a", base / "b")
        os.rename(base / "a", base / "b")  # POSIX: nothing happens
        assert sorted(os.listdir(base)) == ["a", "b"]
        assert os.stat(base / "a").st_nlink == 2


def test_rename_missing_source_fails_enoent(d: Path, local: Path):
    same_errno(lambda base: os.rename(base / "missing", base / "x"), d, local, errno.ENOENT)


def test_rename_into_missing_directory_fails_enoent(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "f", b"")
        os.rename(base / "f", base / "nodir" / "f")

    same_errno(scenario, d, local, errno.ENOENT)
    assert os.path.exists(d / "f")


def test_rename_file_over_directory_fails_eisdir(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "f", b"")
        os.mkdir(base / "dir")
        os.rename(base / "f", base / "dir")

    same_errno(scenario, d, local, errno.EISDIR)


def test_rename_directory_over_file_fails_enotdir(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "f", b"")
        os.mkdir(base / "dir")
        os.rename(base / "dir", base / "f")

    same_errno(scenario, d, local, errno.ENOTDIR)


def test_rename_to_name_of_256_bytes_fails_enametoolong(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "f", b"")
        os.rename(base / "f", base / ("n" * 255))
        os.rename(base / ("n" * 255), base / ("n" * 256))

    same_errno(scenario, d, local, errno.ENAMETOOLONG)
    assert os.listdir(d) == ["n" * 255]


def test_rename_updates_ctime_of_moved_inode_and_mtime_of_both_parents(d: Path):
    os.mkdir(d / "x")
    os.mkdir(d / "y")
    write(d / "x" / "f", b"")
    old = 1_000_000_000 * 10**9
    for p in (d / "x", d / "y"):
        os.utime(p, ns=(old, old))
    ctime = os.stat(d / "x" / "f").st_ctime_ns
    clock_past(ctime)
    os.rename(d / "x" / "f", d / "y" / "f")
    assert os.stat(d / "y" / "f").st_ctime_ns > ctime
    assert os.stat(d / "x").st_mtime_ns > old
    assert os.stat(d / "y").st_mtime_ns > old


# --- rename: directories ------------------------------------------------------------------


def test_rename_directory_moves_its_subtree(d: Path):
    os.makedirs(d / "a" / "inner" / "deep")
    write(d / "a" / "inner" / "deep" / "f", b"deep data")
    os.mkdir(d / "b")
    os.rename(d / "a", d / "b" / "moved")
    assert read(d / "b" / "moved" / "inner" / "deep" / "f") == b"deep data"
    assert not os.path.exists(d / "a")
    assert os.stat(d / "b" / "moved" / "..").st_ino == os.stat(d / "b").st_ino


def test_rename_directory_updates_parent_link_counts(d: Path):
    os.mkdir(d / "p1")
    os.mkdir(d / "p2")
    os.mkdir(d / "p1" / "child")
    assert os.stat(d / "p1").st_nlink == 3
    assert os.stat(d / "p2").st_nlink == 2
    os.rename(d / "p1" / "child", d / "p2" / "child")
    assert os.stat(d / "p1").st_nlink == 2
    assert os.stat(d / "p2").st_nlink == 3
    assert os.stat(d / "p2" / "child").st_nlink == 2


def test_rename_directory_over_empty_directory_replaces_it(d: Path):
    os.mkdir(d / "src")
    write(d / "src" / "f", b"kept")
    os.mkdir(d / "dst")
    src_ino = os.stat(d / "src").st_ino
    nlink = os.stat(d).st_nlink
    os.rename(d / "src", d / "dst")
    assert os.listdir(d) == ["dst"]
    assert os.stat(d / "dst").st_ino == src_ino
    assert read(d / "dst" / "f") == b"kept"
    assert os.stat(d).st_nlink == nlink - 1


def test_rename_directory_over_nonempty_directory_fails_enotempty(d: Path, local: Path):
    def scenario(base: Path):
        os.mkdir(base / "src")
        os.mkdir(base / "dst")
        write(base / "dst" / "occupant", b"")
        os.rename(base / "src", base / "dst")

    same_errno(scenario, d, local, errno.ENOTEMPTY)
    assert os.listdir(d / "dst") == ["occupant"]
    assert os.path.isdir(d / "src")


def test_rename_directory_into_its_own_subtree_fails_einval(d: Path, local: Path):
    def scenario(base: Path):
        os.makedirs(base / "a" / "b" / "c")
        os.rename(base / "a", base / "a" / "b" / "c" / "a")

    def into_itself(base: Path):
        os.rename(base / "a", base / "a" / "a2")

    same_errno(scenario, d, local, errno.EINVAL)
    same_errno(into_itself, d, local, errno.EINVAL)
    assert os.path.isdir(d / "a" / "b" / "c")


def test_rename_directory_over_its_own_ancestor_fails_enotempty(d: Path, local: Path):
    def scenario(base: Path):
        os.makedirs(base / "a" / "b")
        os.rename(base / "a" / "b", base / "a")

    same_errno(scenario, d, local, errno.ENOTEMPTY)


# --- renameat2 flags ----------------------------------------------------------------------


def test_rename_noreplace_fails_eexist_when_target_exists(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "a", b"a")
        write(base / "b", b"b")
        renameat2(base / "a", base / "b", RENAME_NOREPLACE)

    same_errno(scenario, d, local, errno.EEXIST)
    assert read(d / "a") == b"a"
    assert read(d / "b") == b"b"


def test_rename_noreplace_renames_when_target_missing(d: Path):
    write(d / "a", b"a")
    renameat2(d / "a", d / "b", RENAME_NOREPLACE)
    assert os.listdir(d) == ["b"]
    assert read(d / "b") == b"a"


def test_rename_noreplace_over_empty_directory_fails_eexist(d: Path, local: Path):
    def scenario(base: Path):
        os.mkdir(base / "s")
        os.mkdir(base / "t")
        renameat2(base / "s", base / "t", RENAME_NOREPLACE)

    same_errno(scenario, d, local, errno.EEXIST)


def test_rename_exchange_swaps_two_files_atomically(d: Path):
    write(d / "a", b"content A")
    write(d / "b", b"content B, longer")
    ino_a, ino_b = os.stat(d / "a").st_ino, os.stat(d / "b").st_ino
    renameat2(d / "a", d / "b", RENAME_EXCHANGE)
    assert read(d / "a") == b"content B, longer"
    assert read(d / "b") == b"content A"
    assert os.stat(d / "a").st_ino == ino_b
    assert os.stat(d / "b").st_ino == ino_a
    assert os.stat(d / "a").st_size == 17


def test_rename_exchange_file_with_directory_across_parents(d: Path):
    os.mkdir(d / "p1")
    os.mkdir(d / "p2")
    write(d / "p1" / "f", b"file")
    os.mkdir(d / "p2" / "sub")
    write(d / "p2" / "sub" / "inside", b"i")
    renameat2(d / "p1" / "f", d / "p2" / "sub", RENAME_EXCHANGE)
    assert os.path.isdir(d / "p1" / "f")
    assert read(d / "p1" / "f" / "inside") == b"i"
    assert read(d / "p2" / "sub") == b"file"
    # the directory moved from p2 to p1
    assert os.stat(d / "p1").st_nlink == 3
    assert os.stat(d / "p2").st_nlink == 2
    assert os.stat(d / "p1" / "f" / "..").st_ino == os.stat(d / "p1").st_ino


def test_rename_exchange_directories_across_parents_keeps_link_counts(d: Path):
    os.makedirs(d / "p1" / "x" / "x1")
    os.makedirs(d / "p2" / "y")
    renameat2(d / "p1" / "x", d / "p2" / "y", RENAME_EXCHANGE)
    assert os.listdir(d / "p1" / "x") == []
    assert os.listdir(d / "p2" / "y") == ["x1"]
    assert os.stat(d / "p1").st_nlink == 3
    assert os.stat(d / "p2").st_nlink == 3
    assert os.stat(d / "p1" / "x" / "..").st_ino == os.stat(d / "p1").st_ino
    assert os.stat(d / "p2" / "y" / "..").st_ino == os.stat(d / "p2").st_ino


def test_rename_exchange_with_missing_target_fails_enoent(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "a", b"")
        renameat2(base / "a", base / "missing", RENAME_EXCHANGE)

    same_errno(scenario, d, local, errno.ENOENT)
    assert os.listdir(d) == ["a"]


def test_rename_exchange_with_noreplace_fails_einval(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "a", b"")
        write(base / "b", b"")
        renameat2(base / "a", base / "b", RENAME_EXCHANGE | RENAME_NOREPLACE)

    same_errno(scenario, d, local, errno.EINVAL)


def test_rename_exchange_directory_into_its_own_subtree_fails_einval(d: Path, local: Path):
    def scenario(base: Path):
        os.makedirs(base / "a" / "b")
        renameat2(base / "a", base / "a" / "b", RENAME_EXCHANGE)

    same_errno(scenario, d, local, errno.EINVAL)


# --- hard links ---------------------------------------------------------------------------


def test_hard_link_shares_inode_and_data(d: Path):
    write(d / "a", b"shared")
    os.link(d / "a", d / "b")
    sa, sb = os.stat(d / "a"), os.stat(d / "b")
    assert sa.st_ino == sb.st_ino
    assert sa.st_nlink == sb.st_nlink == 2
    with open(d / "b", "r+b") as f:
        f.seek(6)
        f.write(b" and changed")
    assert read(d / "a") == b"shared and changed"
    os.truncate(d / "a", 3)
    assert read(d / "b") == b"sha"
    os.chmod(d / "a", 0o600)
    assert stat.S_IMODE(os.stat(d / "b").st_mode) == 0o600


def test_hard_link_counts_go_up_and_down_and_data_lives_until_last_link(d: Path):
    write(d / "l0", b"data")
    for i in range(1, 5):
        os.link(d / "l0", d / f"l{i}")
        assert os.stat(d / "l0").st_nlink == i + 1
    with os.scandir(d) as it:
        assert len({e.inode() for e in it}) == 1
    for i in range(4):
        os.unlink(d / f"l{i}")
        assert os.stat(d / "l4").st_nlink == 4 - i
        assert read(d / "l4") == b"data"
    assert os.listdir(d) == ["l4"]


def test_hard_link_across_directories_survives_rename_and_removal_of_the_other(d: Path):
    os.mkdir(d / "x")
    os.mkdir(d / "y")
    write(d / "x" / "orig", b"kept")
    os.link(d / "x" / "orig", d / "y" / "alias")
    os.rename(d / "x" / "orig", d / "x" / "renamed")
    assert os.stat(d / "y" / "alias").st_nlink == 2
    os.unlink(d / "x" / "renamed")
    os.rmdir(d / "x")
    assert os.stat(d / "y" / "alias").st_nlink == 1
    assert read(d / "y" / "alias") == b"kept"


def test_hard_link_updates_ctime_of_the_inode(d: Path):
    write(d / "a", b"")
    ctime = os.stat(d / "a").st_ctime_ns
    clock_past(ctime)
    os.link(d / "a", d / "b")
    assert os.stat(d / "a").st_ctime_ns > ctime
    ctime = os.stat(d / "a").st_ctime_ns
    clock_past(ctime)
    os.unlink(d / "b")
    assert os.stat(d / "a").st_ctime_ns > ctime


def test_hard_link_to_directory_fails_eperm(d: Path, local: Path):
    def scenario(base: Path):
        os.mkdir(base / "dir")
        os.link(base / "dir", base / "dirlink")

    same_errno(scenario, d, local, errno.EPERM)


def test_hard_link_onto_existing_name_fails_eexist(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "a", b"")
        write(base / "b", b"")
        os.link(base / "a", base / "b")

    same_errno(scenario, d, local, errno.EEXIST)


def test_hard_link_of_missing_source_fails_enoent(d: Path, local: Path):
    same_errno(lambda base: os.link(base / "missing", base / "x"), d, local, errno.ENOENT)


def test_hard_link_to_symlink_links_the_symlink_itself(d: Path):
    write(d / "target", b"t")
    os.symlink("target", d / "sym")
    os.link(d / "sym", d / "sym2", follow_symlinks=False)
    assert os.path.islink(d / "sym2")
    assert os.readlink(d / "sym2") == "target"
    assert os.lstat(d / "sym2").st_ino == os.lstat(d / "sym").st_ino
    assert os.lstat(d / "sym").st_nlink == 2
    assert os.stat(d / "target").st_nlink == 1


def test_hard_link_of_special_files(d: Path):
    os.mkfifo(d / "fifo")
    os.mknod(d / "dev", 0o600 | stat.S_IFCHR, os.makedev(5, 7))
    os.link(d / "fifo", d / "fifo2")
    os.link(d / "dev", d / "dev2")
    assert stat.S_ISFIFO(os.lstat(d / "fifo2").st_mode)
    assert os.lstat(d / "dev2").st_rdev == os.makedev(5, 7)
    assert os.lstat(d / "dev").st_nlink == 2


# --- symlinks -----------------------------------------------------------------------------


def test_symlink_and_readlink_roundtrip(d: Path):
    write(d / "target", b"via link")
    os.symlink("target", d / "rel")
    os.symlink(str(d / "target"), d / "abs")
    for name, target in (("rel", "target"), ("abs", str(d / "target"))):
        st = os.lstat(d / name)
        assert stat.S_ISLNK(st.st_mode)
        assert st.st_size == len(target.encode())
        assert os.readlink(d / name) == target
        assert read(d / name) == b"via link"
        assert os.stat(d / name).st_ino == os.stat(d / "target").st_ino


def test_symlink_to_directory_is_followed_in_paths(d: Path):
    os.makedirs(d / "real" / "sub")
    write(d / "real" / "sub" / "f", b"found")
    os.symlink("real/sub", d / "shortcut")
    assert read(d / "shortcut" / "f") == b"found"
    assert os.listdir(d / "shortcut") == ["f"]
    os.symlink("../../real", d / "real" / "sub" / "up")
    assert read(d / "real" / "sub" / "up" / "sub" / "f") == b"found"


def test_dangling_symlink_lstat_works_and_stat_fails_enoent(d: Path, local: Path):
    def scenario(base: Path):
        os.symlink("does-not-exist", base / "dangling")
        assert stat.S_ISLNK(os.lstat(base / "dangling").st_mode)
        assert os.readlink(base / "dangling") == "does-not-exist"
        os.stat(base / "dangling")

    same_errno(scenario, d, local, errno.ENOENT)


def test_open_creat_through_dangling_symlink_creates_target(d: Path):
    os.symlink("created-through-link", d / "dangling")
    write(d / "dangling", b"x")
    assert read(d / "created-through-link") == b"x"


def test_symlink_loop_fails_eloop(d: Path, local: Path):
    def loop2(base: Path):
        os.symlink("b", base / "a")
        os.symlink("a", base / "b")
        os.open(base / "a", os.O_RDONLY)

    def self_loop(base: Path):
        os.symlink("self", base / "self")
        os.stat(base / "self")

    def loop_in_path(base: Path):
        os.symlink("b/x", base / "c")
        os.open(base / "c" / "f", os.O_CREAT | os.O_WRONLY)

    same_errno(loop2, d, local, errno.ELOOP)
    same_errno(self_loop, d, local, errno.ELOOP)
    same_errno(loop_in_path, d, local, errno.ELOOP)


def test_o_nofollow_on_symlink_fails_eloop(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "t", b"")
        os.symlink("t", base / "l")
        os.open(base / "l", os.O_RDONLY | os.O_NOFOLLOW)

    same_errno(scenario, d, local, errno.ELOOP)


def test_symlink_over_existing_name_fails_eexist(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "taken", b"")
        os.symlink("x", base / "taken")

    same_errno(scenario, d, local, errno.EEXIST)


def test_symlink_target_of_4095_bytes_and_4096_fails_enametoolong(d: Path, local: Path):
    long_target = "/".join(["t" * 200] * 21)[:4095]
    assert len(long_target) == 4095
    os.symlink(long_target, d / "long")
    assert os.readlink(d / "long") == long_target
    assert os.lstat(d / "long").st_size == 4095
    same_errno(lambda base: os.symlink("t" * 4096, base / "too"), d, local, errno.ENAMETOOLONG)


def test_symlink_target_is_stored_as_raw_bytes(d: Path):
    target = b"\xff\xfe/with space/\xc3\xa9"
    os.symlink(target, os.fsencode(d / "raw"))
    assert os.readlink(os.fsencode(d / "raw")) == target


def test_readlink_of_regular_file_fails_einval(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "f", b"")
        os.readlink(base / "f")

    same_errno(scenario, d, local, errno.EINVAL)


def test_unlink_symlink_removes_link_not_target(d: Path):
    write(d / "t", b"stays")
    os.symlink("t", d / "l")
    os.unlink(d / "l")
    assert os.listdir(d) == ["t"]
    assert read(d / "t") == b"stays"


def test_rename_symlink_keeps_its_target_text(d: Path):
    os.mkdir(d / "sub")
    os.symlink("../t", d / "l")
    os.rename(d / "l", d / "sub" / "l")
    assert os.readlink(d / "sub" / "l") == "../t"


def test_rename_directory_over_empty_directory_in_another_parent_fixes_link_counts(d: Path):
    os.makedirs(d / "p1" / "src" / "kid")
    os.makedirs(d / "p2" / "dst")
    os.rename(d / "p1" / "src", d / "p2" / "dst")
    assert os.stat(d / "p1").st_nlink == 2
    assert os.stat(d / "p2").st_nlink == 3
    assert os.listdir(d / "p2" / "dst") == ["kid"]
    assert os.stat(d / "p2" / "dst").st_nlink == 3


def test_rename_and_link_to_another_filesystem_fail_exdev(d: Path, local: Path):
    if os.stat(d).st_dev == os.stat(local).st_dev:
        pytest.skip("needs the mount and the local disk to differ")
    write(d / "f", b"")
    os.mkdir(d / "dir")
    assert errno_of(os.rename, d / "f", local / "f") == errno.EXDEV
    assert errno_of(os.rename, d / "dir", local / "dir") == errno.EXDEV
    assert errno_of(os.link, d / "f", local / "f") == errno.EXDEV
    write(local / "l", b"")
    assert errno_of(os.rename, local / "l", d / "l") == errno.EXDEV


def test_racing_renames_of_the_same_source_succeed_exactly_once(d: Path):
    count = 60
    for i in range(count):
        write(d / f"src{i}", b"%d" % i)
    wins: dict[int, list[int]] = {i: [] for i in range(count)}
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(5)

    def racer(t: int):
        try:
            start.wait()
            for i in range(count):
                try:
                    os.rename(d / f"src{i}", d / f"dst{i}-{t}")
                except FileNotFoundError:
                    continue
                with lock:
                    wins[i].append(t)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=racer, args=(t,)) for t in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert all(len(w) == 1 for w in wins.values()), {i: w for i, w in wins.items() if len(w) != 1}
    expected = sorted(f"dst{i}-{w[0]}" for i, w in wins.items())
    assert sorted(os.listdir(d)) == expected
    for i, w in wins.items():
        assert read(d / f"dst{i}-{w[0]}") == b"%d" % i


def test_racing_links_and_unlinks_keep_link_counts_exact(d: Path):
    write(d / "base", b"x")
    errors: list[BaseException] = []

    def linker(t: int):
        try:
            for i in range(40):
                os.link(d / "base", d / f"l{t}-{i}")
                if i % 2:
                    os.unlink(d / f"l{t}-{i}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=linker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert os.stat(d / "base").st_nlink == 1 + 4 * 20
    assert len(os.listdir(d)) == 1 + 4 * 20


@pytest.mark.parametrize("length", [256, 1000, 1025, 4000])
def test_every_name_creating_operation_refuses_names_over_255_bytes(
    d: Path, local: Path, length: int
):
    long = "n" * length
    ops = {
        "create": lambda base: os.close(os.open(base / long, os.O_CREAT | os.O_WRONLY)),
        "mkdir": lambda base: os.mkdir(base / long),
        "mknod": lambda base: os.mkfifo(base / long),
        "symlink": lambda base: os.symlink("target", base / long),
        "link": lambda base: os.link(base / "exists", base / long),
        "rename": lambda base: os.rename(base / "exists", base / long),
        "stat": lambda base: os.stat(base / long),
        "unlink": lambda base: os.unlink(base / long),
        "setxattr": lambda base: os.setxattr(base / long, "user.k", b""),
    }
    for base in (local, d):
        write(base / "exists", b"")
    for name, op in ops.items():
        got_local, got = errno_of(op, local), errno_of(op, d)
        assert got_local == errno.ENAMETOOLONG, f"{name}: local gave {got_local}"
        assert got == errno.ENAMETOOLONG, f"{name}: riverfs gave {errno.errorcode.get(got, got)}"
    assert os.listdir(d) == ["exists"]


def test_names_of_exactly_255_bytes_work_for_every_operation(d: Path):
    n = "m" * 255
    os.mkdir(d / n)
    write(d / n / n, b"data")
    os.link(d / n / n, d / n / ("l" * 255))
    os.symlink(n, d / n / ("s" * 255))
    os.mkfifo(d / n / ("f" * 255))
    os.rename(d / n / ("f" * 255), d / n / ("r" * 255))
    assert sorted(os.listdir(d / n)) == sorted([n, "l" * 255, "s" * 255, "r" * 255])
    assert read(d / n / ("l" * 255)) == b"data"
    assert os.readlink(d / n / ("s" * 255)) == n


def test_rename_exchange_updates_ctime_of_both_inodes_and_mtime_of_both_parents(d: Path):
    os.mkdir(d / "p1")
    os.mkdir(d / "p2")
    write(d / "p1" / "a", b"a")
    os.mkdir(d / "p2" / "b")
    old = 1_000_000_000 * 10**9
    for p in (d / "p1", d / "p2"):
        os.utime(p, ns=(old, old))
    ctimes = {n: os.lstat(d / n).st_ctime_ns for n in ("p1/a", "p2/b")}
    clock_past(max(ctimes.values()))
    renameat2(d / "p1" / "a", d / "p2" / "b", RENAME_EXCHANGE)
    assert os.lstat(d / "p2" / "b").st_ctime_ns > ctimes["p1/a"]  # the file, now in p2
    assert os.lstat(d / "p1" / "a").st_ctime_ns > ctimes["p2/b"]  # the directory, now in p1
    assert os.stat(d / "p1").st_mtime_ns > old
    assert os.stat(d / "p2").st_mtime_ns > old


def test_rename_over_a_file_with_other_links_updates_its_ctime_and_nlink(d: Path):
    write(d / "victim", b"v")
    os.link(d / "victim", d / "other-link")
    write(d / "src", b"s")
    ctime = os.stat(d / "other-link").st_ctime_ns
    clock_past(ctime)
    os.replace(d / "src", d / "victim")
    st = os.stat(d / "other-link")
    assert st.st_nlink == 1
    assert st.st_ctime_ns > ctime
