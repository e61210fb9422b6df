"""POSIX gaps closed by issue 14, through a real riverfs mount on both engines: direct and
buffered I/O see each other, refused flags, timestamps beyond what riverfs stores, xattrs of
directories as ext4 lists and copies them, and file handles (name_to_handle_at).

Where Linux defines the answer, the same steps run on the local disk (ext4 under /tmp) and
must agree.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from posix_support import errno_of

ENGINES = ("sqlite", "postgresql")  # see conftest.py: these tests run on both engines

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4
PAGE = 4096


def _raise_errno(result: int) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def renameat2(src: Path, dst: Path, flags: int) -> None:
    _raise_errno(_libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags))


# ---- direct and buffered I/O ----------------------------------------------------------------


def _aligned(data: bytes) -> mmap.mmap:
    """`data` in a page-aligned buffer (O_DIRECT needs one)."""
    buf = mmap.mmap(-1, max(len(data), PAGE))
    buf[: len(data)] = data
    return buf


def _direct_write(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    try:
        with _aligned(data) as buf:
            assert os.pwritev(fd, [memoryview(buf)[: len(data)]], offset) == len(data)
    finally:
        os.close(fd)


def _direct_read(path: Path, offset: int, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        with mmap.mmap(-1, max(size, PAGE)) as buf:
            n = os.preadv(fd, [memoryview(buf)[:size]], offset)
            return bytes(buf[:n])
    finally:
        os.close(fd)


def _mixed_io(base: Path, direct_offset: int, buffered_offset: int) -> list[bytes]:
    """Buffered reads cached, then a direct write, a buffered read through a descriptor open all
    along, a buffered write and a direct read of it: what each read saw."""
    f = base / "f"
    f.write_bytes(bytes(range(256)) * 256)  # 64 KiB
    seen = []
    with open(f, "rb", buffering=0) as cached:
        seen.append(cached.read())  # the whole file in the page cache
        _direct_write(f, direct_offset, b"D" * 8192)
        cached.seek(0)
        seen.append(cached.read())
        with open(f, "rb") as fresh:
            seen.append(fresh.read())
        with open(f, "r+b", buffering=0) as w:
            w.seek(buffered_offset)
            w.write(b"B" * 5000)
            seen.append(_direct_read(f, 0, 65536))
    seen.append(f.read_bytes())
    return seen


@pytest.mark.parametrize("direct_offset", [0, 8192, 61440])
def test_direct_write_then_buffered_read_and_back_as_ext4(d: Path, local: Path, direct_offset):
    got = _mixed_io(d, direct_offset, 1234)
    want = _mixed_io(local, direct_offset, 1234)
    assert got == want
    assert got[1][direct_offset : direct_offset + 8192] == b"D" * 8192


def test_direct_write_at_unaligned_offset_is_seen_by_the_page_cache(d: Path):
    """FUSE takes O_DIRECT at any offset (ext4 refuses unaligned ones): still no stale page."""
    f = d / "f"
    f.write_bytes(b"a" * 20000)
    with open(f, "rb", buffering=0) as cached:
        assert cached.read() == b"a" * 20000
        _direct_write(f, 4097, b"Z" * 3000)
        cached.seek(0)
        want = b"a" * 4097 + b"Z" * 3000 + b"a" * (20000 - 7097)
        assert cached.read() == want
    assert _direct_read(f, 4096, 4096) == b"a" + b"Z" * 3000 + b"a" * 1095


def test_copy_file_range_and_fallocate_invalidate_cached_pages(d: Path):
    src, dst = d / "src", d / "dst"
    src.write_bytes(b"s" * 16384)
    dst.write_bytes(b"d" * 16384)
    with open(dst, "r+b", buffering=0) as cached:
        assert cached.read() == b"d" * 16384
        with open(src, "rb") as fi:
            assert os.copy_file_range(fi.fileno(), cached.fileno(), 4096, 0, 4096) == 4096
        cached.seek(0)
        assert cached.read() == b"d" * 4096 + b"s" * 4096 + b"d" * 8192
        os.posix_fallocate(cached.fileno(), 0, 16384)  # mode 0 never changes data
        falloc_punch = 0x02 | 0x01  # PUNCH_HOLE | KEEP_SIZE
        _raise_errno(_libc.fallocate(cached.fileno(), falloc_punch, 8192, 4096))
        cached.seek(0)
        assert cached.read() == b"d" * 4096 + b"s" * 4096 + b"\0" * 4096 + b"d" * 4096
        falloc_zero = 0x10  # ZERO_RANGE
        _raise_errno(_libc.fallocate(cached.fileno(), falloc_zero, 1000, 3000))
        cached.seek(0)
        want = b"d" * 1000 + b"\0" * 3000 + b"d" * 96 + b"s" * 4096 + b"\0" * 4096 + b"d" * 4096
        assert cached.read() == want


# ---- flags ----------------------------------------------------------------------------------


def _whiteout_rename(base: Path) -> list[tuple]:
    (base / "a").write_bytes(b"x")
    (base / "over").write_bytes(b"old")
    (base / "dir").mkdir()
    (base / "sgid").mkdir()
    os.chown(base / "sgid", 0, 4321)
    os.chmod(base / "sgid", 0o2775)
    (base / "sgid" / "f").write_bytes(b"")
    renameat2(base / "a", base / "b", RENAME_WHITEOUT)
    renameat2(base / "b", base / "over", RENAME_WHITEOUT)  # replacing a file
    renameat2(base / "dir", base / "dir2", RENAME_WHITEOUT)  # a directory
    renameat2(base / "sgid" / "f", base / "g", RENAME_WHITEOUT)
    assert (base / "over").read_bytes() == b"x"
    seen = []
    for name in ("a", "b", "dir", "sgid/f", "over", "dir2"):
        st = os.lstat(base / name)
        seen.append((name, st.st_mode, os.major(st.st_rdev), os.minor(st.st_rdev), st.st_nlink,
                     st.st_uid, st.st_gid, st.st_size))  # fmt: skip
    seen.append(("nlink of base", os.stat(base).st_nlink))
    seen.append(sorted(os.listdir(base)))
    seen.append(("open whiteout", errno_of(os.open, base / "a", os.O_RDONLY)))
    return seen


@pytest.mark.skipif(os.geteuid() != 0, reason="RENAME_WHITEOUT needs CAP_MKNOD")
def test_rename_whiteout_leaves_a_whiteout_as_ext4(d: Path, local: Path):
    got, want = _whiteout_rename(d), _whiteout_rename(local)
    assert got[:-1] == want[:-1]
    assert got[0][1:4] == (stat.S_IFCHR, 0, 0)
    assert got[-1][1] in (errno.ENXIO, errno.EACCES)  # ENXIO on ext4; a nodev mount: EACCES


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting overlayfs needs root")
def test_overlayfs_with_a_riverfs_upper_layer_hides_deleted_lower_files(d: Path, local: Path):
    lower, merged = local / "lower", local / "merged"
    lower.mkdir()
    merged.mkdir()
    (lower / "keep").write_bytes(b"k")
    (lower / "gone").write_bytes(b"g")
    (d / "upper").mkdir()
    (d / "work").mkdir()
    opts = f"lowerdir={lower},upperdir={d}/upper,workdir={d}/work"
    r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)])
    if r.returncode:
        pytest.skip("overlayfs cannot be mounted here")
    try:
        (merged / "gone").unlink()
        (merged / "keep").rename(merged / "kept")
        (merged / "new").write_bytes(b"n")
        assert sorted(os.listdir(merged)) == ["kept", "new"]
        assert (merged / "kept").read_bytes() == b"k"
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    whiteouts = {
        n for n in os.listdir(d / "upper") if stat.S_ISCHR(os.lstat(d / "upper" / n).st_mode)
    }
    assert whiteouts == {"gone", "keep"}
    assert sorted(os.listdir(lower)) == ["gone", "keep"]  # the lower layer is untouched


def test_rename_whiteout_with_exchange_or_noreplace_is_refused_as_on_ext4(d: Path, local: Path):
    for base in (d, local):
        (base / "a").write_bytes(b"x")
        (base / "b").write_bytes(b"y")
        assert errno_of(renameat2, base / "a", base / "b", RENAME_WHITEOUT | RENAME_EXCHANGE) == (
            errno.EINVAL
        )
        assert (base / "a").read_bytes() == b"x"


def test_unknown_rename_flags_are_refused_as_on_ext4(d: Path, local: Path):
    for base in (d, local):
        (base / "a").write_bytes(b"x")
        assert errno_of(renameat2, base / "a", base / "b", 1 << 5) == errno.EINVAL
        both = RENAME_NOREPLACE | RENAME_EXCHANGE
        assert errno_of(renameat2, base / "a", base / "b", both) == errno.EINVAL
        assert (base / "a").exists()


def test_unknown_xattr_flags_are_refused_as_on_ext4(d: Path, local: Path):
    for base in (d, local):
        (base / "f").write_bytes(b"")
        assert errno_of(os.setxattr, base / "f", "user.a", b"1", 8) == errno.EINVAL
        with pytest.raises(OSError) as e:
            os.getxattr(base / "f", "user.a")
        assert e.value.errno == errno.ENODATA


def test_unknown_fallocate_mode_is_refused_as_on_ext4(d: Path, local: Path):
    for base in (d, local):
        with open(base / "f", "wb") as f:
            assert errno_of(_raise_errno, _libc.fallocate(f.fileno(), 0x400, 0, 4096)) in (
                errno.EOPNOTSUPP,
            )
        assert (base / "f").stat().st_size == 0


def test_unknown_lseek_whence_is_refused_as_on_ext4(d: Path, local: Path):
    for base in (d, local):
        (base / "f").write_bytes(b"x" * 10)
        with open(base / "f", "rb") as f:
            assert errno_of(os.lseek, f.fileno(), 0, 7) == errno.EINVAL


def test_copy_file_range_flags_are_refused_as_on_ext4(d: Path, local: Path):
    for base in (d, local):
        (base / "a").write_bytes(b"x" * 10)
        with open(base / "a", "rb") as fi, open(base / "b", "wb") as fo:
            assert _copy_with_flags(fi.fileno(), fo.fileno(), 1) == errno.EINVAL
        assert (base / "b").stat().st_size == 0


def _copy_with_flags(fd_in: int, fd_out: int, flags: int) -> int:
    """copy_file_range(2) of 10 bytes with `flags`: its errno, 0 on success."""
    fn = _libc.copy_file_range
    fn.restype = ctypes.c_ssize_t
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    fn.argtypes += [ctypes.c_size_t, ctypes.c_uint]
    return ctypes.get_errno() if fn(fd_in, None, fd_out, None, 10, flags) < 0 else 0


def test_unknown_lock_type_is_refused_as_on_ext4(d: Path, local: Path):
    import fcntl
    import struct

    for base in (d, local):
        (base / "f").write_bytes(b"x")
        with open(base / "f", "r+b") as f:
            bad = struct.pack("hhqqi", 7, 0, 0, 0, 0)
            assert errno_of(fcntl.fcntl, f.fileno(), fcntl.F_SETLK, bad) == errno.EINVAL


# ---- timestamps beyond the stored range -----------------------------------------------------

MAX_NS = (1 << 63) - 1
MIN_NS = -(1 << 63)


@pytest.mark.parametrize(
    "seconds, expected_ns",
    [
        (17_000_000_000, MAX_NS),  # 2508: past 2262
        (-10_000_000_000, MIN_NS),  # 1653: before 1677
        (9_000_000_000, 9_000_000_000 * 10**9),  # 2255: inside
        (-9_000_000_000, -9_000_000_000 * 10**9),  # 1684: inside
    ],
)
def test_timestamps_beyond_the_stored_range_are_clamped(d: Path, seconds, expected_ns):
    f = d / "f"
    f.write_bytes(b"")
    os.utime(f, ns=(seconds * 10**9, seconds * 10**9))
    st = f.stat()
    assert (st.st_atime_ns, st.st_mtime_ns) == (expected_ns, expected_ns)
    os.utime(d, ns=(seconds * 10**9, seconds * 10**9))  # directories too
    assert d.stat().st_mtime_ns == expected_ns


def test_touch_far_future_succeeds(d: Path):
    f = d / "f"
    subprocess.run(["touch", "-d", "2514-01-01", str(f)], check=True)
    assert f.stat().st_mtime_ns == MAX_NS


# ---- xattrs of directories ------------------------------------------------------------------


def _xattr_tree(base: Path) -> Path:
    top = base / "tree"
    (top / "sub" / "deeper").mkdir(parents=True)
    (top / "sub" / "file").write_bytes(b"data")
    for path, name, value in [
        (top, "user.top", b"1"),
        (top, "trusted.top", b"t"),
        (top / "sub", "user.sub", b"two words"),
        (top / "sub", "user.bin", bytes(range(8))),
        (top / "sub" / "deeper", "trusted.deep", b"x" * 300),
        (top / "sub" / "file", "user.f", b"f"),
    ]:
        os.setxattr(path, name, value)
    return top


def _getfattr(top: Path) -> str:
    out = subprocess.run(
        ["getfattr", "-R", "-d", "-m", "-", "-e", "hex", "."],
        cwd=top,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    blocks = sorted(b for b in out.split("\n\n") if b.strip())  # order of readdir differs
    return "\n\n".join(blocks)


@pytest.mark.skipif(not shutil.which("getfattr"), reason="getfattr (attr package) missing")
def test_directory_xattrs_listed_as_on_ext4(d: Path, local: Path):
    got = _getfattr(_xattr_tree(d))
    assert got == _getfattr(_xattr_tree(local))
    assert "# file: sub/deeper\ntrusted.deep=0x" in got


@pytest.mark.parametrize("tool", ["cp", "rsync"])
def test_directory_xattrs_copied_as_on_ext4(d: Path, local: Path, tool):
    if not shutil.which(tool):
        pytest.skip(f"{tool} missing")
    src = _xattr_tree(local)
    for dst in (d / "copy", local / "copy"):
        cmd = ["cp", "-a", str(src), str(dst)]
        if tool == "rsync":
            cmd = ["rsync", "-aX", f"{src}/", f"{dst}/"]
        subprocess.run(cmd, check=True)
    assert _getfattr(d / "copy") == _getfattr(local / "copy") == _getfattr(src)
    back = local / "back"  # and back from riverfs to ext4
    subprocess.run(["cp", "-a", str(d / "copy"), str(back)], check=True)
    assert _getfattr(back) == _getfattr(src)


# ---- file handles ---------------------------------------------------------------------------


class FileHandle(ctypes.Structure):
    _fields_ = [
        ("handle_bytes", ctypes.c_uint),
        ("handle_type", ctypes.c_int),
        ("f_handle", ctypes.c_ubyte * 128),
    ]


def name_to_handle(path: Path) -> FileHandle:
    fh = FileHandle(handle_bytes=128)
    mount_id = ctypes.c_int()
    _raise_errno(
        _libc.name_to_handle_at(
            AT_FDCWD, os.fsencode(path), ctypes.byref(fh), ctypes.byref(mount_id), 0
        )
    )
    return fh


def open_by_handle(mount_fd: int, fh: FileHandle, flags: int) -> int:
    return _raise_errno(_libc.open_by_handle_at(mount_fd, ctypes.byref(fh), flags))


def _drop_kernel_caches(mountpoint: Path) -> None:
    """Make the kernel forget every unused inode of the mount (dentries, then inodes)."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("2")


@pytest.fixture
def mount_fd(fs_root: Path):
    fd = os.open(fs_root, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


@pytest.mark.skipif(os.geteuid() != 0, reason="open_by_handle_at needs CAP_DAC_READ_SEARCH")
def test_file_handles_open_live_files_and_go_stale_when_deleted(d: Path, fs_root, mount_fd):
    f = d / "f"
    f.write_bytes(b"handle me")
    sub = d / "sub"
    sub.mkdir()
    (sub / "inside").write_bytes(b"")
    fh, dh = name_to_handle(f), name_to_handle(sub)
    fd = open_by_handle(mount_fd, fh, os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b"handle me"
        assert os.fstat(fd).st_ino == f.stat().st_ino
    finally:
        os.close(fd)
    _drop_kernel_caches(fs_root)  # the kernel then asks riverfs: LOOKUP "." of the inode
    fd = open_by_handle(mount_fd, fh, os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b"handle me"
    finally:
        os.close(fd)
    fd = open_by_handle(mount_fd, dh, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert os.listdir(fd) == ["inside"]
        assert os.readlink(f"/proc/self/fd/{fd}") == str(sub)  # reconnected through ".."
    finally:
        os.close(fd)
    f.unlink()
    _drop_kernel_caches(fs_root)
    assert errno_of(open_by_handle, mount_fd, fh, os.O_RDONLY) == errno.ESTALE


def test_random_mix_of_direct_buffered_and_mapped_io_never_reads_stale_bytes(d: Path):
    """fsx-like: direct and buffered writes and reads, mapped reads and truncates on one file
    through descriptors open all along; every read agrees with the model of the bytes."""
    import random

    rng = random.Random(14)
    f = d / "f"
    f.write_bytes(b"")
    model = bytearray()
    buffered = os.open(f, os.O_RDWR)
    direct = os.open(f, os.O_RDWR | os.O_DIRECT)
    span = 256 << 10
    try:
        with mmap.mmap(-1, span) as buf:
            for step in range(1500):
                op = rng.choice(["bw", "dw", "br", "dr", "mr", "tr"])
                if op in ("dw", "dr"):
                    offset = rng.randrange(0, span // PAGE) * PAGE
                    size = rng.randrange(1, 16) * PAGE
                else:
                    offset = rng.randrange(0, span)
                    size = rng.randrange(1, 40000)
                if op in ("bw", "dw"):
                    data = bytes([step % 251 + 1]) * size
                    if op == "dw":
                        buf[:size] = data
                        os.pwritev(direct, [memoryview(buf)[:size]], offset)
                    else:
                        os.pwrite(buffered, data, offset)
                    if len(model) < offset:
                        model.extend(bytes(offset - len(model)))
                    model[offset : offset + size] = data
                elif op == "br":
                    assert os.pread(buffered, size, offset) == model[offset : offset + size], step
                elif op == "dr":
                    n = os.preadv(direct, [memoryview(buf)[:size]], offset)
                    assert buf[:n] == model[offset : offset + size], step
                elif op == "mr" and model:
                    with mmap.mmap(buffered, 0, prot=mmap.PROT_READ) as m:
                        assert m[offset : offset + size] == model[offset : offset + size], step
                elif op == "tr":
                    size = rng.randrange(0, span)
                    os.ftruncate(buffered, size)
                    model = (model + bytes(max(size - len(model), 0)))[:size]
    finally:
        os.close(direct)
        os.close(buffered)
    assert f.read_bytes() == model


@pytest.mark.skipif(os.geteuid() != 0, reason="open_by_handle_at needs CAP_DAC_READ_SEARCH")
def test_file_handles_outlive_a_remount(volume):
    """A handle names the inode number, which riverfs never reuses: valid after a remount (what
    an NFS server re-exporting the mount needs after a restart)."""
    first = volume.mount()
    (first.path / "dir").mkdir()
    (first.path / "dir" / "f").write_bytes(b"still here")
    fh, dh = name_to_handle(first.path / "dir" / "f"), name_to_handle(first.path / "dir")
    first.umount()
    again = volume.mount(first.path)
    mount_fd = os.open(again.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = open_by_handle(mount_fd, fh, os.O_RDONLY)
        try:
            assert os.read(fd, 100) == b"still here"
        finally:
            os.close(fd)
        fd = open_by_handle(mount_fd, dh, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert os.listdir(fd) == ["f"]
        finally:
            os.close(fd)
    finally:
        os.close(mount_fd)


def test_o_tmpfile_is_refused_with_eopnotsupp(d: Path):
    assert errno_of(os.open, d, os.O_TMPFILE | os.O_RDWR, 0o600) == errno.EOPNOTSUPP
    assert os.listdir(d) == []
