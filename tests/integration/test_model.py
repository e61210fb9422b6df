"""Model-based test: random operation sequences on riverfs and on a local directory agree.

A Hypothesis ``RuleBasedStateMachine`` applies the same operation to a riverfs mount and to a
directory on the local (ext4/tmpfs) filesystem and checks, after every step, that both sides
gave the same result (the same errno, or both succeeded) and that the two trees are identical:
listings, file types, modes, sizes, link counts, hard-link grouping, contents, symlink targets,
xattrs, and mtimes wherever the test set them explicitly.

One mount serves the whole run; every example starts from two empty roots.

Kernel caching: the riverfs side is compared through fresh ``os.stat``/``open`` calls on the
same mount that performed the operations. The kernel caches attributes and entries for the
attr/entry timeout (1 s), but every operation in this test goes through that same kernel
mount, so the kernel either updates or invalidates what it cached (setattr/write replies,
fuse_dir_changed on namespace changes, nlink on link/unlink). A stale value seen here is
therefore a riverfs bug (a wrong reply), not a race of the test.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from support import Mount, Volume, is_mounted, run_cli

# Small name pool, two directory levels: operations collide often.
NAMES = ["a", "b", "c", "d"]
PATHS = NAMES + [f"{p}/{c}" for p in NAMES for c in NAMES]
# Half of the draws are top-level names, so that level-2 parents exist often enough.
paths = st.one_of(st.sampled_from(NAMES), st.sampled_from(PATHS[len(NAMES) :]))
# Symlink targets stay inside the root (relative, no ".."), some dangle, some loop.
link_targets = st.sampled_from(["a", "b", "a/b", "c/d", "missing", "d/../a"])

# The model volume uses small blocks so that a few KiB..MiB cross block boundaries.
BLOCK_SIZE = "64K"
OFFSETS = [0, 1, 4095, 4096, 65535, 65536, 65537, 131072 + 7, 300_000, 1_000_000]
offsets = st.sampled_from(OFFSETS)
sizes = st.sampled_from([0, 1, 100, 4096, 65536, 70_000, 140_000])
truncate_sizes = st.sampled_from([0, 1, 4096, 65535, 65536, 100_000, 1_100_000])
file_modes = st.sampled_from([0o644, 0o600, 0o755, 0o000, 0o4755, 0o2775, 0o1644])
dir_modes = st.sampled_from([0o755, 0o700, 0o1777, 0o2755, 0o555])
xattr_names = st.sampled_from(["user.k1", "user.k2"])
xattr_values = st.sampled_from([b"", b"v", b"\x00\xffbinary\x00", b"x" * 1000])
# Explicit timestamps in ns, including nanosecond parts and times before 1970, kept inside
# what ext4 stores exactly (1901..2446; at -2**31 s it drops the nanoseconds).
times_ns = st.integers(min_value=-(2**30) * 10**9, max_value=2**33 * 10**9)

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(src: str, dst: str, flags: int) -> None:
    res = _libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags)
    if res != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), src, None, dst)


def pattern(seed: int, size: int) -> bytes:
    """Deterministic, non-repeating-per-block data (so misplaced blocks are detected)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def outcome(fn, *args, **kwargs):
    """('ok', result) or ('err', errno) for one side."""
    try:
        return ("ok", fn(*args, **kwargs))
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno, e.errno))


def clear_dir(root: Path) -> None:
    for entry in os.scandir(root):
        if entry.is_dir(follow_symlinks=False):
            # Make every directory writable/searchable again before removing it.
            for dirpath, dirnames, _ in os.walk(entry.path):
                os.chmod(dirpath, 0o755)
                for d in dirnames:
                    p = os.path.join(dirpath, d)
                    if not os.path.islink(p):
                        os.chmod(p, 0o755)
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
    assert os.listdir(root) == []


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def tree_snapshot(root: str):
    """Everything comparable about a tree, keyed by relative path; plus hard-link groups."""
    entries = {}
    by_inode: dict[int, list[str]] = {}
    listings = {}

    def walk(rel: str):
        full = os.path.join(root, rel) if rel else root
        names = sorted(os.listdir(full))
        listings[rel] = names
        for name in names:
            r = f"{rel}/{name}" if rel else name
            p = os.path.join(root, r)
            s = os.lstat(p)
            info = {
                "type": stat.S_IFMT(s.st_mode),
                "mode": oct(s.st_mode),
                "nlink": s.st_nlink,
                "uid": s.st_uid,
                "gid": s.st_gid,
                "xattrs": sorted(
                    (n, os.getxattr(p, n, follow_symlinks=False))
                    for n in os.listxattr(p, follow_symlinks=False)
                ),
            }
            by_inode.setdefault(s.st_ino, []).append(r)
            if stat.S_ISREG(s.st_mode):
                info["size"] = s.st_size
                info["digest"] = file_digest(p)
            elif stat.S_ISLNK(s.st_mode):
                info["size"] = s.st_size
                info["target"] = os.readlink(p)
            entries[r] = (info, s)
            if stat.S_ISDIR(s.st_mode):
                walk(r)

    walk("")
    groups = sorted(sorted(g) for g in by_inode.values())
    return entries, listings, groups


class FsModel(RuleBasedStateMachine):
    """Same operation on riverfs (``self.rv``) and on a local directory (``self.ref``)."""

    rv_root: Path
    ref_root: Path

    def __init__(self):
        super().__init__()
        clear_dir(self.rv_root)
        clear_dir(self.ref_root)
        # local inode -> mtime (ns) that the test set explicitly and nothing changed since
        self.pinned_mtime: dict[int, int] = {}
        # open handles: (local fd, riverfs fd), kept across steps
        self.handles: list[tuple[int, int]] = []

    # -- helpers ---------------------------------------------------------------------------

    def both(self, fn, *rel_paths, **kwargs):
        """Apply fn to the same relative path(s) on both sides; the outcomes must agree."""
        ref = outcome(fn, *(str(self.ref_root / p) for p in rel_paths), **kwargs)
        rv = outcome(fn, *(str(self.rv_root / p) for p in rel_paths), **kwargs)
        if ref[0] == "err" or rv[0] == "err":
            assert ref == rv, f"{fn.__name__}{rel_paths} {kwargs}: local {ref} riverfs {rv}"
        return ref, rv

    def local_ino(self, rel: str, follow: bool = True) -> int | None:
        try:
            return os.stat(self.ref_root / rel, follow_symlinks=follow).st_ino
        except OSError:
            return None

    def unpin(self, rel: str, follow: bool = True) -> None:
        ino = self.local_ino(rel, follow)
        if ino is not None:
            self.pinned_mtime.pop(ino, None)

    def unpin_dirs(self) -> None:
        """A namespace change moves some directory's mtime: forget pinned directory mtimes."""
        for dirpath, _, _ in os.walk(self.ref_root):
            self.pinned_mtime.pop(os.lstat(dirpath).st_ino, None)

    @initialize()
    def populate(self):
        """Start from a small tree (a directory, files, a symlink) so that rules collide."""
        self.both(os.mkdir, "a")
        for rel, size in [("b", 70_000), ("a/c", 5)]:
            self.both(lambda p, size=size: Path(p).write_bytes(pattern(7, size)), rel)
        self.both(lambda p: os.symlink("a", p), "d")

    # -- rules: files ----------------------------------------------------------------------

    @rule(
        path=paths,
        mode=st.sampled_from([0o644, 0o600, 0o755]),
        flags=st.sampled_from(
            [os.O_CREAT, os.O_CREAT | os.O_EXCL, os.O_CREAT | os.O_TRUNC, os.O_TRUNC]
        ),
        seed=st.integers(0, 3),
        size=sizes,
    )
    def create(self, path, mode, flags, seed, size):
        self.unpin_dirs()
        self.unpin(path)
        data = pattern(seed, size)

        def op(p):
            fd = os.open(p, os.O_WRONLY | flags, mode)
            try:
                return os.write(fd, data)
            finally:
                os.close(fd)

        self.both(op, path)
        self.unpin(path)  # a new local inode may reuse an old number

    @rule(path=paths, offset=offsets, seed=st.integers(0, 3), size=sizes)
    def write_at(self, path, offset, seed, size):
        """pwrite at an offset, also far beyond EOF (leaves a hole); creates missing files."""
        self.unpin_dirs()
        self.unpin(path)
        data = pattern(seed, size)

        def op(p):
            fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                return os.pwrite(fd, data, offset)
            finally:
                os.close(fd)

        self.both(op, path)
        self.unpin(path)

    @rule(path=paths, seed=st.integers(0, 3), size=sizes)
    def append(self, path, seed, size):
        self.unpin(path)
        data = pattern(seed, size)

        def op(p):
            fd = os.open(p, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, data)
                return os.lseek(fd, 0, os.SEEK_CUR)
            finally:
                os.close(fd)

        self.both(op, path)

    @rule(path=paths, size=truncate_sizes)
    def truncate(self, path, size):
        self.unpin(path)
        self.both(os.truncate, path, length=size)

    @rule(path=paths, offset=offsets, size=st.sampled_from([1, 4096, 70_000, 2_000_000]))
    def read_range(self, path, offset, size):
        def op(p):
            fd = os.open(p, os.O_RDONLY)
            try:
                return os.pread(fd, size, offset)
            finally:
                os.close(fd)

        ref, rv = self.both(op, path)
        assert ref == rv, f"pread({path}, {size}, {offset}) differs"

    @rule(path=paths)
    def unlink(self, path):
        self.unpin_dirs()
        self.both(os.unlink, path)

    @rule(src=paths, dst=paths)
    def link(self, src, dst):
        self.unpin_dirs()
        self.both(os.link, src, dst, follow_symlinks=False)

    @rule(dest=link_targets, path=paths)
    def symlink(self, dest, path):
        self.unpin_dirs()

        def op(p):
            os.symlink(dest, p)

        self.both(op, path)
        self.unpin(path, follow=False)

    # -- rules: directories ----------------------------------------------------------------

    @rule(path=paths, mode=dir_modes)
    def mkdir(self, path, mode):
        self.unpin_dirs()
        self.both(os.mkdir, path, mode=mode)
        self.unpin(path, follow=False)

    @rule(path=paths)
    def rmdir(self, path):
        self.unpin_dirs()
        self.both(os.rmdir, path)

    @rule(path=paths)
    def listdir(self, path):
        ref, rv = self.both(lambda p: sorted(os.listdir(p)), path)
        assert ref == rv

    # -- rules: rename ---------------------------------------------------------------------

    @rule(src=paths, dst=paths)
    def rename(self, src, dst):
        """Plain rename, also over existing files and (empty or not) directories."""
        self.unpin_dirs()
        self.both(os.rename, src, dst)

    @rule(src=paths, dst=paths, flags=st.sampled_from([RENAME_NOREPLACE, RENAME_EXCHANGE]))
    def rename_flags(self, src, dst, flags):
        self.unpin_dirs()
        self.both(renameat2, src, dst, flags=flags)

    # -- rules: attributes -----------------------------------------------------------------

    @rule(path=paths, mode=st.one_of(file_modes, dir_modes))
    def chmod(self, path, mode):
        self.both(os.chmod, path, mode=mode)

    @rule(path=paths, atime=times_ns, mtime=times_ns, follow=st.booleans())
    def utime(self, path, atime, mtime, follow):
        ref, rv = self.both(os.utime, path, ns=(atime, mtime), follow_symlinks=follow)
        if ref[0] == "ok":
            s_ref = os.stat(self.ref_root / path, follow_symlinks=follow)
            s_rv = os.stat(self.rv_root / path, follow_symlinks=follow)
            assert s_ref.st_mtime_ns == mtime
            assert (s_rv.st_atime_ns, s_rv.st_mtime_ns) == (atime, mtime), (
                f"utime({path}) on riverfs: got atime/mtime "
                f"{(s_rv.st_atime_ns, s_rv.st_mtime_ns)}, set {(atime, mtime)}"
            )
            self.pinned_mtime[s_ref.st_ino] = mtime

    @rule(
        path=paths,
        name=xattr_names,
        value=xattr_values,
        flags=st.sampled_from([0, os.XATTR_CREATE, os.XATTR_REPLACE]),
    )
    def setxattr(self, path, name, value, flags):
        self.both(os.setxattr, path, attribute=name, value=value, flags=flags)

    @rule(path=paths, name=xattr_names)
    def getxattr(self, path, name):
        ref, rv = self.both(os.getxattr, path, attribute=name)
        assert ref == rv

    @rule(path=paths, name=xattr_names)
    def removexattr(self, path, name):
        self.both(os.removexattr, path, attribute=name)

    # -- rules: handles kept open across steps (unlink/rename while open) -----------------

    @precondition(lambda self: len(self.handles) < 3)
    @rule(path=paths)
    def open_handle(self, path):
        ref, rv = self.both(os.open, path, flags=os.O_RDWR)
        if ref[0] == "ok":
            self.handles.append((ref[1], rv[1]))

    @precondition(lambda self: self.handles)
    @rule(data=st.data(), offset=offsets, seed=st.integers(0, 3), size=sizes)
    def handle_write(self, data, offset, seed, size):
        i = data.draw(st.integers(0, len(self.handles) - 1))
        fd_ref, fd_rv = self.handles[i]
        self.pinned_mtime.pop(os.fstat(fd_ref).st_ino, None)
        buf = pattern(seed, size)
        assert outcome(os.pwrite, fd_ref, buf, offset) == outcome(os.pwrite, fd_rv, buf, offset)

    @precondition(lambda self: self.handles)
    @rule(data=st.data(), size=truncate_sizes)
    def handle_truncate(self, data, size):
        i = data.draw(st.integers(0, len(self.handles) - 1))
        fd_ref, fd_rv = self.handles[i]
        self.pinned_mtime.pop(os.fstat(fd_ref).st_ino, None)
        assert outcome(os.ftruncate, fd_ref, size) == outcome(os.ftruncate, fd_rv, size)

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def handle_read_all(self, data):
        """The whole file through the handle: also after it was unlinked or renamed over."""
        i = data.draw(st.integers(0, len(self.handles) - 1))
        fd_ref, fd_rv = self.handles[i]
        s_ref, s_rv = os.fstat(fd_ref), os.fstat(fd_rv)
        assert s_rv.st_size == s_ref.st_size
        assert s_rv.st_nlink == s_ref.st_nlink
        assert os.pread(fd_rv, s_ref.st_size + 1, 0) == os.pread(fd_ref, s_ref.st_size + 1, 0)

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def close_handle(self, data):
        i = data.draw(st.integers(0, len(self.handles) - 1))
        fd_ref, fd_rv = self.handles.pop(i)
        os.close(fd_ref)
        os.close(fd_rv)

    # -- the comparison after every step ---------------------------------------------------

    @invariant()
    def trees_are_identical(self):
        ref_entries, ref_listings, ref_groups = tree_snapshot(str(self.ref_root))
        rv_entries, rv_listings, rv_groups = tree_snapshot(str(self.rv_root))
        assert rv_listings == ref_listings, "directory listings differ"
        for rel, (ref_info, ref_stat) in ref_entries.items():
            rv_info, rv_stat = rv_entries[rel]
            assert rv_info == ref_info, f"{rel}: riverfs {rv_info} != local {ref_info}"
            if ref_stat.st_ino in self.pinned_mtime:
                want = self.pinned_mtime[ref_stat.st_ino]
                assert ref_stat.st_mtime_ns == want  # sanity of the model itself
                assert rv_stat.st_mtime_ns == want, f"{rel}: mtime changed on riverfs"
        assert rv_groups == ref_groups, "hard-link groups (paths sharing an inode) differ"
        root_ref, root_rv = os.stat(self.ref_root), os.stat(self.rv_root)
        assert root_rv.st_nlink == root_ref.st_nlink, "root directory link count differs"
        # Forget pinned inodes that no longer exist (their numbers may be reused).
        live = {s.st_ino for _, s in ref_entries.values()}
        live |= {os.fstat(fd).st_ino for fd, _ in self.handles}
        for ino in list(self.pinned_mtime):
            if ino not in live:
                del self.pinned_mtime[ino]

    def teardown(self):
        for fd_ref, fd_rv in self.handles:
            os.close(fd_ref)
            os.close(fd_rv)
        self.handles.clear()


MOUNT_OPTIONS = {
    "kernel-cache": (),
    # Every lookup and stat reaches the daemon: its own replies are checked, not the kernel's.
    "no-kernel-cache": ("--attr-timeout", "0", "--entry-timeout", "0"),
}


@pytest.fixture(scope="module", params=sorted(MOUNT_OPTIONS))
def model_mount(request, tmp_path_factory) -> Mount:
    """One riverfs mount (small blocks) for the whole state-machine run."""
    root = tmp_path_factory.mktemp("modelvol")
    vol = Volume(
        root=root,
        meta_url=f"sqlite://{root}/meta.db",
        storage_url=f"file://{root}/store",
        cache_dir=root / "cache",
    )
    try:
        run_cli("format", vol.meta_url, "--storage", vol.storage_url, "--block-size", BLOCK_SIZE)
        yield vol.mount(None, *MOUNT_OPTIONS[request.param])
    finally:
        vol.cleanup()


MODEL_SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
}


def test_random_operation_sequences_match_local_filesystem(model_mount: Mount, tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    old_umask = os.umask(0o022)
    try:

        class Machine(FsModel):
            rv_root = model_mount.path
            ref_root = ref

        run_state_machine_as_test(
            Machine,
            settings=settings(max_examples=50, stateful_step_count=30, **MODEL_SETTINGS),
        )
    finally:
        os.umask(old_umask)
    assert is_mounted(model_mount.path), "the riverfs mount died during the run"


@pytest.mark.parametrize("model_mount", ["kernel-cache"], indirect=True)
def test_random_operation_sequences_survive_remounts(model_mount: Mount, tmp_path):
    """The same machine plus rules that unmount and mount again (a new daemon), or fsync all
    and kill -9 the daemon: the tree read back from the volume still matches in every detail."""
    ref = tmp_path / "ref"
    ref.mkdir()
    current = [model_mount]
    old_umask = os.umask(0o022)
    try:

        class Machine(FsModel):
            rv_root = model_mount.path
            ref_root = ref

            @precondition(lambda self: not self.handles)
            @rule()
            def remount(self):
                mount = current[0]
                mount.umount()
                current[0] = mount.volume.mount(mount.path, *mount.args[5:])

            @rule()
            def fsync_all_then_kill9_and_remount(self):
                """A crash after fsync of every file and directory (and of open handles)
                loses nothing: the remounted tree still matches."""
                for _, fd in self.handles:
                    os.fsync(fd)
                for dirpath, _, filenames in os.walk(self.rv_root):
                    for p in [dirpath, *(os.path.join(dirpath, f) for f in filenames)]:
                        if os.path.islink(p):
                            continue
                        fd = os.open(p, os.O_RDONLY)
                        try:
                            os.fsync(fd)
                        finally:
                            os.close(fd)
                mount = current[0]
                mount.kill9()
                for fd_ref, fd_rv in self.handles:
                    os.close(fd_ref)
                    try:
                        os.close(fd_rv)
                    except OSError:
                        pass  # ENOTCONN: that daemon is gone
                self.handles.clear()
                current[0] = mount.volume.mount(mount.path, *mount.args[5:])

        run_state_machine_as_test(
            Machine,
            settings=settings(max_examples=15, stateful_step_count=30, **MODEL_SETTINGS),
        )
    finally:
        os.umask(old_umask)
    assert is_mounted(model_mount.path), "the riverfs mount died during the run"
