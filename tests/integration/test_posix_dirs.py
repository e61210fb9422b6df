"""POSIX behaviour of directories through a real riverfs mount: mkdir, rmdir, readdir.

Every test works in its own directory of one mount shared by the module. Where Linux
defines an errno, the same operation also runs on the local disk and must agree.
Set RIVERFS_POSIX_ON_LOCAL=1 to run the module against a local directory instead.
"""

from __future__ import annotations

import ctypes
import errno
import os
import random
import shutil
import stat
import threading
from pathlib import Path

import pytest
from posix_support import errno_of, same_errno

ENGINES = ("sqlite", "postgresql")  # see conftest.py: these tests run on both engines

# extra `riverfs mount` options, e.g. "--attr-timeout 0 --entry-timeout 0" to bypass kernel caches


class Dirent(ctypes.Structure):
    _fields_ = [
        ("d_ino", ctypes.c_uint64),
        ("d_off", ctypes.c_int64),
        ("d_reclen", ctypes.c_ushort),
        ("d_type", ctypes.c_ubyte),
        ("d_name", ctypes.c_char * 256),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.opendir.restype = ctypes.c_void_p
_libc.opendir.argtypes = [ctypes.c_char_p]
_libc.readdir.restype = ctypes.POINTER(Dirent)
_libc.readdir.argtypes = [ctypes.c_void_p]
_libc.telldir.restype = ctypes.c_long
_libc.telldir.argtypes = [ctypes.c_void_p]
_libc.seekdir.restype = None
_libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
_libc.rewinddir.restype = None
_libc.rewinddir.argtypes = [ctypes.c_void_p]
_libc.closedir.argtypes = [ctypes.c_void_p]
_libc.renameat2.argtypes = [
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_uint,
]
RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> None:
    """renameat2(a, b, RENAME_EXCHANGE)."""
    if _libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(a))


class Dir:
    """opendir/readdir/telldir/seekdir from libc, for position-dependent directory reads."""

    def __init__(self, path: Path):
        self.dirp = _libc.opendir(os.fsencode(path))
        if not self.dirp:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))

    def read(self, with_dots: bool = False) -> str | None:
        """The next name (other than "." and ".." unless `with_dots`), or None at the end."""
        while True:
            ctypes.set_errno(0)
            ent = _libc.readdir(self.dirp)
            if not ent:
                err = ctypes.get_errno()
                if err:
                    raise OSError(err, os.strerror(err))
                return None
            name = os.fsdecode(ent.contents.d_name)
            if with_dots or name not in (".", ".."):
                return name

    def tell(self) -> int:
        return _libc.telldir(self.dirp)

    def seek(self, pos: int) -> None:
        _libc.seekdir(self.dirp, pos)

    def rewind(self) -> None:
        _libc.rewinddir(self.dirp)

    def close(self) -> None:
        _libc.closedir(self.dirp)


def touch(path: Path, data: bytes = b"") -> None:
    with open(path, "wb") as f:
        f.write(data)


def make_files(d: Path, names: list[str]) -> None:
    for n in names:
        os.mknod(d / n, 0o644 | stat.S_IFREG)


# --- mkdir --------------------------------------------------------------------------------


def test_mkdir_creates_empty_directory_with_nlink_2(d: Path):
    os.mkdir(d / "sub", 0o755)
    st = os.stat(d / "sub")
    assert stat.S_ISDIR(st.st_mode)
    assert st.st_nlink == 2
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    assert os.listdir(d / "sub") == []


def test_mkdir_mode_is_masked_by_umask(d: Path):
    old = os.umask(0o027)
    try:
        os.mkdir(d / "a", 0o777)
        os.mkdir(d / "b", 0o1777)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(d / "a").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(d / "b").st_mode) == 0o1750


def test_mkdir_existing_name_fails_eexist(d: Path, local: Path):
    def over_dir(base: Path):
        os.mkdir(base / "x")
        os.mkdir(base / "x")

    def over_file(base: Path):
        touch(base / "f")
        os.mkdir(base / "f")

    def over_symlink(base: Path):
        os.symlink("target-missing", base / "l")
        os.mkdir(base / "l")

    same_errno(over_dir, d, local, errno.EEXIST)
    same_errno(over_file, d, local, errno.EEXIST)
    same_errno(over_symlink, d, local, errno.EEXIST)


def test_mkdir_in_missing_parent_fails_enoent(d: Path, local: Path):
    same_errno(lambda base: os.mkdir(base / "no" / "sub"), d, local, errno.ENOENT)


def test_mkdir_below_a_file_fails_enotdir(d: Path, local: Path):
    def scenario(base: Path):
        touch(base / "f")
        os.mkdir(base / "f" / "sub")

    same_errno(scenario, d, local, errno.ENOTDIR)


def test_mkdir_name_of_255_bytes_works_and_256_fails_enametoolong(d: Path, local: Path):
    os.mkdir(d / ("d" * 255))
    touch(d / ("d" * 255) / ("f" * 255), b"x")
    assert os.listdir(d / ("d" * 255)) == ["f" * 255]
    same_errno(lambda base: os.mkdir(base / ("d" * 256)), d, local, errno.ENAMETOOLONG)


def test_makedirs_and_rmtree_of_nested_tree(d: Path):
    os.makedirs(d / "a" / "b" / "c" / "d")
    touch(d / "a" / "b" / "c" / "d" / "f", b"x")
    touch(d / "a" / "b" / "g", b"y")
    walked = sorted(
        (os.path.relpath(root, d), sorted(dirs), sorted(files)) for root, dirs, files in os.walk(d)
    )
    assert walked == [
        (".", ["a"], []),
        ("a", ["b"], []),
        ("a/b", ["c"], ["g"]),
        ("a/b/c", ["d"], []),
        ("a/b/c/d", [], ["f"]),
    ]
    shutil.rmtree(d / "a")
    assert os.listdir(d) == []


def test_dotdot_of_subdirectory_is_parent(d: Path):
    os.makedirs(d / "a" / "b")
    assert os.stat(d / "a" / "b" / "..").st_ino == os.stat(d / "a").st_ino
    assert os.stat(d / "a" / ".").st_ino == os.stat(d / "a").st_ino
    assert os.stat(d / "a" / "b" / ".." / "..").st_ino == os.stat(d).st_ino


# --- rmdir, unlink ------------------------------------------------------------------------


def test_rmdir_removes_empty_directory(d: Path):
    os.mkdir(d / "sub")
    os.rmdir(d / "sub")
    assert not os.path.exists(d / "sub")
    assert os.listdir(d) == []
    os.mkdir(d / "sub")  # the name is free again
    assert os.listdir(d) == ["sub"]


def test_rmdir_of_nonempty_directory_fails_enotempty(d: Path, local: Path):
    def with_file(base: Path):
        os.mkdir(base / "sub")
        touch(base / "sub" / "f")
        os.rmdir(base / "sub")

    def with_subdir(base: Path):
        os.makedirs(base / "sub2" / "inner")
        os.rmdir(base / "sub2")

    same_errno(with_file, d, local, errno.ENOTEMPTY)
    same_errno(with_subdir, d, local, errno.ENOTEMPTY)
    assert os.path.exists(d / "sub" / "f")


def test_rmdir_succeeds_once_last_entry_is_removed(d: Path):
    os.mkdir(d / "sub")
    make_files(d / "sub", [f"f{i}" for i in range(50)])
    for i in range(50):
        assert errno_of(os.rmdir, d / "sub") == errno.ENOTEMPTY
        os.unlink(d / "sub" / f"f{i}")
    os.rmdir(d / "sub")


def test_rmdir_of_file_fails_enotdir(d: Path, local: Path):
    def scenario(base: Path):
        touch(base / "f")
        os.rmdir(base / "f")

    same_errno(scenario, d, local, errno.ENOTDIR)


def test_rmdir_of_symlink_to_directory_fails_enotdir(d: Path, local: Path):
    def scenario(base: Path):
        os.mkdir(base / "real")
        os.symlink("real", base / "link")
        os.rmdir(base / "link")

    same_errno(scenario, d, local, errno.ENOTDIR)


def test_rmdir_missing_fails_enoent(d: Path, local: Path):
    same_errno(lambda base: os.rmdir(base / "missing"), d, local, errno.ENOENT)


def test_rmdir_dot_fails_einval(d: Path, local: Path):
    def scenario(base: Path):
        os.mkdir(base / "sub")
        os.rmdir(f"{base}/sub/.")  # pathlib would drop the "."

    same_errno(scenario, d, local, errno.EINVAL)


def test_unlink_of_directory_fails_eisdir(d: Path, local: Path):
    def scenario(base: Path):
        os.mkdir(base / "sub")
        os.unlink(base / "sub")

    same_errno(scenario, d, local, errno.EISDIR)
    assert os.path.isdir(d / "sub")


def test_unlink_missing_fails_enoent(d: Path, local: Path):
    same_errno(lambda base: os.unlink(base / "missing"), d, local, errno.ENOENT)


def test_unlink_through_a_file_fails_enotdir(d: Path, local: Path):
    def scenario(base: Path):
        touch(base / "f")
        os.unlink(base / "f" / "x")

    same_errno(scenario, d, local, errno.ENOTDIR)


def test_removed_directory_still_open_cannot_get_new_entries(d: Path, local: Path):
    def scenario(base: Path):
        os.mkdir(base / "gone")
        fd = os.open(base / "gone", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.rmdir(base / "gone")
            assert os.fstat(fd).st_nlink == 0
            os.open("f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
        finally:
            os.close(fd)

    same_errno(scenario, d, local, errno.ENOENT)


def test_fsync_on_directory_succeeds(d: Path):
    touch(d / "f")
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- readdir ------------------------------------------------------------------------------


def test_listdir_of_empty_directory_is_empty(d: Path):
    assert os.listdir(d) == []
    with os.scandir(d) as it:
        assert list(it) == []


def test_scandir_reports_types_and_inode_numbers_of_all_kinds(d: Path):
    touch(d / "file")
    os.mkdir(d / "dir")
    os.symlink("file", d / "link")
    os.mkfifo(d / "fifo")
    os.mknod(d / "sock", 0o600 | stat.S_IFSOCK)
    os.mknod(d / "chr", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    with os.scandir(d) as it:
        entries = {e.name: e for e in it}
    assert sorted(entries) == ["chr", "dir", "fifo", "file", "link", "sock"]
    assert entries["file"].is_file(follow_symlinks=False)
    assert entries["dir"].is_dir(follow_symlinks=False)
    assert entries["link"].is_symlink()
    assert entries["link"].is_file()  # follows to "file"
    for name, e in entries.items():
        st = os.lstat(d / name)
        assert e.inode() == st.st_ino, name
        assert stat.S_IFMT(e.stat(follow_symlinks=False).st_mode) == stat.S_IFMT(st.st_mode)
    assert len({e.inode() for e in entries.values()}) == 6


def test_directory_with_20000_entries_lists_completely(d: Path):
    names = [f"entry-{i:06d}-{'x' * (i % 40)}" for i in range(20_000)]
    make_files(d, names)
    listed = os.listdir(d)
    assert len(listed) == len(names)
    assert set(listed) == set(names)
    with os.scandir(d) as it:
        inodes = [e.inode() for e in it]
    assert len(set(inodes)) == 20_000
    assert os.stat(d / names[12_345]).st_size == 0
    assert os.stat(d).st_nlink == 2


def test_readdir_while_entries_are_added_and_removed_has_no_duplicates_or_omissions(d: Path):
    rng = random.Random(1234)
    pad = "-" + "x" * 150  # long names: few entries per getdents batch, many batch boundaries
    initial = [f"f{i:05d}{pad}" for i in range(3000)]
    make_files(d, initial)
    doomed = set(rng.sample(initial, 900))  # removed during the listing
    stable = set(initial) - doomed
    doomed_order = sorted(doomed, key=lambda _: rng.random())
    added: list[str] = []
    seen: list[str] = []
    with os.scandir(d) as it:
        for i, entry in enumerate(it):
            seen.append(entry.name)
            if i % 100 == 50 and doomed_order:
                # remove some (already listed or not), add new ones
                for name in doomed_order[:60]:
                    os.unlink(d / name)
                del doomed_order[:60]
                for _ in range(40):
                    new = f"new{len(added):05d}{pad}"
                    os.mknod(d / new, 0o644 | stat.S_IFREG)
                    added.append(new)
    for name in doomed_order:
        os.unlink(d / name)
    dupes = {n for n in seen if seen.count(n) > 1} if len(seen) != len(set(seen)) else set()
    assert not dupes, f"duplicates in one listing: {sorted(dupes)[:10]}"
    missing = stable - set(seen)
    assert not missing, f"{len(missing)} entries present all along were not listed"
    assert set(seen) <= set(initial) | set(added)
    assert set(os.listdir(d)) == stable | set(added)


def test_readdir_after_removing_already_listed_entries_continues_correctly(d: Path):
    names = [f"g{i:04d}" for i in range(1500)]
    make_files(d, names)
    seen: list[str] = []
    with os.scandir(d) as it:
        for entry in it:
            seen.append(entry.name)
            if len(seen) == 10:
                # remove everything listed so far plus many others before continuing
                for n in names[:700]:
                    if os.path.lexists(d / n):
                        os.unlink(d / n)
                for n in seen:
                    if os.path.lexists(d / n):
                        os.unlink(d / n)
    assert len(seen) == len(set(seen))
    survivors = set(names[700:]) - set(seen[:10])
    assert survivors <= set(seen)


def test_names_listed_exactly_as_bytes(d: Path):
    names = [b"\xff\xfe\xfd", b"with space", b"line\nbreak", "ünï".encode(), b"-dash", b"..."]
    base = os.fsencode(d)
    for n in names:
        os.mkdir(base + b"/" + n)
    assert sorted(os.listdir(base)) == sorted(names)
    for n in names:
        assert os.path.isdir(base + b"/" + n)


def test_seekdir_to_a_telldir_position_resumes_after_that_entry(d: Path):
    names = [f"s{i:04d}-{'y' * 100}" for i in range(600)]
    make_files(d, names)
    dirp = Dir(d)
    try:
        order: list[str] = []
        positions: list[int] = []
        while (name := dirp.read()) is not None:
            order.append(name)
            positions.append(dirp.tell())
        assert sorted(order) == sorted(names)
        for k in (0, 1, 99, 250, 398, 599):
            dirp.seek(positions[k])
            assert dirp.read() == (order[k + 1] if k + 1 < len(order) else None), k
        dirp.rewind()
        assert dirp.read() == order[0]
    finally:
        dirp.close()


def test_seekdir_position_stays_valid_when_other_entries_change(d: Path):
    names = [f"t{i:04d}-{'z' * 100}" for i in range(600)]
    make_files(d, names)
    dirp = Dir(d)
    try:
        first: list[str] = []
        for _ in range(300):
            first.append(dirp.read())
        pos = dirp.tell()
        rest_before = []
        while (name := dirp.read()) is not None:
            rest_before.append(name)
        # remove entries on both sides of the saved position, add new ones
        removed = set(first[::3]) | set(rest_before[1::4])
        for n in removed:
            os.unlink(d / n)
        make_files(d, [f"added{i:03d}" for i in range(100)])
        dirp.seek(pos)
        rest_after = []
        while (name := dirp.read()) is not None:
            rest_after.append(name)
    finally:
        dirp.close()
    assert len(rest_after) == len(set(rest_after)), "duplicates after seekdir"
    assert not set(rest_after) & (set(first) - removed), "entries before the position came back"
    missing = set(rest_before) - removed - set(rest_after)
    assert not missing, f"{len(missing)} surviving entries after the position were skipped"


def test_rewinddir_sees_entries_added_since_opendir(d: Path):
    make_files(d, ["a", "b"])
    dirp = Dir(d)
    try:
        seen = {dirp.read(), dirp.read()}
        assert dirp.read() is None
        assert seen == {"a", "b"}
        make_files(d, ["c"])
        os.unlink(d / "a")
        dirp.rewind()
        again = set()
        while (name := dirp.read()) is not None:
            again.add(name)
        assert again == {"b", "c"}
    finally:
        dirp.close()


def test_mkdir_does_not_take_setgid_from_mode_outside_a_setgid_parent(d: Path, local: Path):
    for base in (local, d):
        os.mkdir(base / "g", 0o2755)
    assert stat.S_IMODE(os.stat(local / "g").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(d / "g").st_mode) == 0o755


def test_removed_current_directory_still_stats_with_nlink_0(d: Path, local: Path):
    for base in (local, d):
        os.mkdir(base / "cwd")
        cwd = os.getcwd()
        os.chdir(base / "cwd")
        try:
            os.rmdir(base / "cwd")
            st = os.stat(".")
            assert stat.S_ISDIR(st.st_mode)
            assert st.st_nlink == 0
            assert os.listdir(".") == []
            assert errno_of(os.open, "new", os.O_CREAT | os.O_WRONLY) == errno.ENOENT
        finally:
            os.chdir(cwd)


def test_concurrent_creates_renames_and_unlinks_in_one_directory_stay_consistent(d: Path):
    errors: list[BaseException] = []

    def worker(w: int):
        try:
            for i in range(150):
                tmp = d / f"tmp-{w}-{i}"
                with open(tmp, "wb") as f:
                    f.write(b"%d" % i)
                os.rename(tmp, d / f"final-{w}-{i}")
                if i % 2:
                    os.unlink(d / f"final-{w}-{i}")
                if i % 10 == 0:
                    os.mkdir(d / f"dir-{w}-{i}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    expected = {f"final-{w}-{i}" for w in range(4) for i in range(0, 150, 2)}
    expected |= {f"dir-{w}-{i}" for w in range(4) for i in range(0, 150, 10)}
    assert set(os.listdir(d)) == expected
    assert os.stat(d).st_nlink == 2 + 4 * 15
    with open(d / "final-3-148", "rb") as f:
        assert f.read() == b"148"


def test_readdir_returns_dot_and_dotdot_once_each(d: Path):
    os.mkdir(d / "sub")
    make_files(d / "sub", [f"e{i}" for i in range(300)])
    dirp = Dir(d / "sub")
    try:
        names = []
        while (name := dirp.read(with_dots=True)) is not None:
            names.append(name)
    finally:
        dirp.close()
    assert names.count(".") == 1
    assert names.count("..") == 1
    assert len(names) == 302


def test_rmdir_racing_with_creates_inside_never_orphans_entries(d: Path):
    errors: list[BaseException] = []
    for round_ in range(10):
        target = d / f"r{round_}"
        os.mkdir(target)
        created: list[str] = []

        def creator(target=target, created=created):
            try:
                for i in range(200):
                    try:
                        os.mknod(target / f"f{i}", 0o644 | stat.S_IFREG)
                    except FileNotFoundError:
                        return  # the directory is gone: fine
                    created.append(f"f{i}")
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        t = threading.Thread(target=creator)
        t.start()
        removed = False
        for _ in range(500):
            if errno_of(os.rmdir, target) == 0:
                removed = True
                break
            try:
                present = os.listdir(target)
            except FileNotFoundError:
                break
            for n in present[:20]:
                errno_of(os.unlink, target / n)
        t.join(timeout=60)
        assert not t.is_alive()
        assert not errors, errors
        if removed:
            assert not os.path.exists(target)
        else:
            assert set(os.listdir(target)) <= set(created)
    assert os.stat(d).st_nlink == 2 + sum(1 for e in os.scandir(d) if e.is_dir())


def test_removed_inodes_still_referenced_by_the_kernel_stat_after_many_other_removals(
    d: Path,
):
    """A removed cwd, an O_PATH descriptor of an unlinked file and an open descriptor of a
    removed directory keep answering fstat (nlink 0) however much else is removed since."""
    os.mkdir(d / "cwd")
    os.mkdir(d / "dirfd")
    with open(d / "opath", "wb") as f:
        f.write(b"x")
    opath = os.open(d / "opath", os.O_PATH)
    dirfd = os.open(d / "dirfd", os.O_RDONLY | os.O_DIRECTORY)
    cwd = os.getcwd()
    os.chdir(d / "cwd")
    try:
        os.rmdir(d / "cwd")
        os.rmdir(d / "dirfd")
        os.unlink(d / "opath")
        os.mkdir(d / "churn")
        for i in range(5000):
            os.mknod(d / "churn" / f"c{i}", 0o644 | stat.S_IFREG)
            os.unlink(d / "churn" / f"c{i}")
        st = os.stat(".")
        assert stat.S_ISDIR(st.st_mode) and st.st_nlink == 0
        st = os.fstat(dirfd)
        assert stat.S_ISDIR(st.st_mode) and st.st_nlink == 0
        st = os.fstat(opath)
        assert stat.S_ISREG(st.st_mode) and st.st_nlink == 0
    finally:
        os.chdir(cwd)
        os.close(opath)
        os.close(dirfd)


@pytest.mark.parametrize("change", ["exchange", "replace"])
def test_readdir_lists_names_exactly_once_while_the_inodes_behind_them_change(d: Path, change: str):
    """Names that exist throughout a listing appear exactly once, even when the inode
    behind them changes during the listing (RENAME_EXCHANGE, or a rename over them)."""
    rng = random.Random(5)
    pad = "-" + "q" * 150
    stable = [f"s{i:04d}{pad}" for i in range(2000)]
    make_files(d, stable)
    sources = [f"src{i:04d}{pad}" for i in range(800)] if change == "replace" else []
    make_files(d, sources)
    seen: list[str] = []
    with os.scandir(d) as it:
        for i, entry in enumerate(it):
            seen.append(entry.name)
            if i % 50 == 10:
                for _ in range(10):
                    if change == "exchange":
                        a, b = rng.sample(stable, 2)
                        exchange(d / a, d / b)
                    elif sources:
                        os.replace(d / sources.pop(), d / rng.choice(stable))
    counts = {n[:5]: seen.count(n) for n in stable}
    twice = sorted(n for n, c in counts.items() if c > 1)
    never = sorted(n for n, c in counts.items() if c == 0)
    assert not twice and not never, (
        f"listed more than once: {len(twice)} {twice[:5]}; never listed: {len(never)} {never[:5]}"
    )
