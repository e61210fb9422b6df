"""fallocate, SEEK_DATA / SEEK_HOLE and copy_file_range through a real mount, compared with
the local disk (ext4 here): sizes, st_blocks, contents, where the holes are, errno.

st_blocks is compared where ext4 and riverfs count alike: ranges of whole 4 KiB blocks
(riverfs counts bytes, ext4 blocks). After a copy only contents and sizes are compared: ext4
copies through the page cache and turns holes into written zeros, riverfs keeps them.

Set RIVERFS_POSIX_ON_LOCAL=1 to run the module against a local directory instead of a mount.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import random
from pathlib import Path

import pytest
from posix_support import ON_LOCAL, errno_of, same_errno
from support import Volume, run_cli, wait_until

ENGINES = ("sqlite", "postgresql")  # see conftest.py: these tests run on both engines

riverfs_only = pytest.mark.skipif(ON_LOCAL, reason="riverfs-specific expectation")

KiB = 1024
MiB = 1024 * KiB
G = 4096
KEEP_SIZE, PUNCH_HOLE, COLLAPSE, ZERO_RANGE, INSERT, UNSHARE = 0x1, 0x2, 0x8, 0x10, 0x20, 0x40

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2) itself (os.posix_fallocate knows mode 0 only, and glibc falls back)."""
    if _libc.fallocate(fd, mode, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def extents(fd: int) -> list[tuple[int, int]]:
    """The data ranges SEEK_DATA / SEEK_HOLE report, start to end."""
    out, pos = [], 0
    while True:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            assert e.errno == errno.ENXIO
            return out
        end = os.lseek(fd, start, os.SEEK_HOLE)
        out.append((start, end))
        pos = end


def seek_or_errno(fd: int, offset: int, whence: int) -> int | str:
    try:
        return os.lseek(fd, offset, whence)
    except OSError as e:
        return errno.errorcode[e.errno]


def layout(path: Path, blocks: bool = True) -> dict:
    """Everything compared: size, st_blocks, the data extents, SEEK_DATA / SEEK_HOLE answers
    at a few offsets (at, inside and past the end), and a hash of the contents. The contents
    are read last: on ext4, pages read into the page cache make allocated (unwritten) space
    count as data."""
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        probes = sorted({0, 1, 4095, 4096, 70_000, st.st_size // 2, st.st_size - 1, st.st_size})
        seeks = {
            off: (seek_or_errno(fd, off, os.SEEK_DATA), seek_or_errno(fd, off, os.SEEK_HOLE))
            for off in probes
            if off >= 0
        }
        found = extents(fd)
        digest = hashlib.sha256()
        while chunk := os.read(fd, MiB):
            digest.update(chunk)
        return {
            "size": st.st_size,
            "blocks": st.st_blocks if blocks else None,
            "extents": found,
            "seeks": seeks,
            "sha256": digest.hexdigest(),
        }
    finally:
        os.close(fd)


def same_layout(scenario, d: Path, local: Path, blocks: bool = True) -> dict:
    """Run `scenario(path)` on the mount and on the local disk; the files must look alike."""
    results = []
    for base in (local, d):
        path = base / "f"
        scenario(path)
        results.append(layout(path, blocks))
    assert results[1] == results[0]
    return results[1]


def written(path: Path, size: int, seed: int = 1) -> bytes:
    """A file of random bytes, fsynced: on ext4, zeroing dirty pages leaves them in the page
    cache, where SEEK_DATA sees data."""
    data = random.Random(seed).randbytes(size)
    with open(path, "wb") as f:
        f.write(data)
        os.fsync(f.fileno())
    return data


# ---- fallocate ------------------------------------------------------------------------------


def test_posix_fallocate_grows_a_file_with_zeros_as_ext4_does(d, local):
    def scenario(path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, b"x" * G, 0)
            os.posix_fallocate(fd, 0, MiB)
            os.posix_fallocate(fd, 512 * KiB, MiB)  # partly over allocated space
            os.posix_fallocate(fd, 0, G)  # changes nothing
        finally:
            os.close(fd)

    got = same_layout(scenario, d, local)
    assert got["size"] == MiB + 512 * KiB and got["blocks"] == got["size"] // 512
    assert got["extents"] == [(0, G)]  # allocated space is a hole for SEEK_DATA


@pytest.mark.parametrize("mode", [0, KEEP_SIZE], ids=["mode0", "keep-size"])
def test_fallocate_within_a_sparse_file(d, local, mode):
    def scenario(path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, b"y" * 64 * KiB, 128 * KiB)
            os.ftruncate(fd, MiB)
            fallocate(fd, mode, 256 * KiB, 256 * KiB)
        finally:
            os.close(fd)

    got = same_layout(scenario, d, local)
    assert got["size"] == MiB and got["blocks"] == 320 * KiB // 512


def test_fallocate_keep_size_past_the_end_changes_no_size(d, local):
    def scenario(path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"z" * 1000)
            fallocate(fd, KEEP_SIZE, 0, MiB)
        finally:
            os.close(fd)

    # ext4 allocates the blocks past the end too (st_blocks); riverfs has nothing to allocate
    got = same_layout(scenario, d, local, blocks=False)
    assert got["size"] == 1000


@pytest.mark.parametrize(
    "lo,hi",
    [(64 * KiB, 192 * KiB), (0, 4 * G), (MiB - 8 * G, MiB), (0, MiB), (G, 2 * MiB)],
    ids=["middle", "start", "end", "all", "past-end"],
)
def test_punch_hole_leaves_a_real_hole_as_ext4_does(d, local, lo, hi):
    def scenario(path: Path) -> None:
        written(path, MiB)
        fd = os.open(path, os.O_RDWR)
        try:
            fallocate(fd, PUNCH_HOLE | KEEP_SIZE, lo, hi - lo)
        finally:
            os.close(fd)

    got = same_layout(scenario, d, local)
    assert got["size"] == MiB


def test_punch_hole_at_unaligned_offsets_zeroes_the_range(d, local):
    def scenario(path: Path) -> None:
        written(path, 300 * KiB)
        fd = os.open(path, os.O_RDWR)
        try:
            fallocate(fd, PUNCH_HOLE | KEEP_SIZE, 100, 50_000)  # frees blocks 1..11 only
            fallocate(fd, PUNCH_HOLE | KEEP_SIZE, 200_001, 7)
        finally:
            os.close(fd)

    got = same_layout(scenario, d, local, blocks=False)  # ext4 counts 4 KiB blocks
    assert got["extents"] == [(0, G), (12 * G, 300 * KiB)]


@pytest.mark.parametrize("keep", [0, KEEP_SIZE], ids=["grow", "keep-size"])
def test_zero_range_as_ext4_does(d, local, keep):
    def scenario(path: Path) -> None:
        written(path, 512 * KiB)
        fd = os.open(path, os.O_RDWR)
        try:
            fallocate(fd, ZERO_RANGE | keep, 64 * KiB, 64 * KiB)
            os.ftruncate(fd, 768 * KiB)
            fallocate(fd, ZERO_RANGE | keep, 700 * KiB, 200 * KiB)  # over a hole, past the end
        finally:
            os.close(fd)

    # Four extents at most: a fifth costs ext4 an extent block, counted in st_blocks.
    got = same_layout(scenario, d, local, blocks=not keep)  # ext4 allocates past the end
    assert got["size"] == (768 if keep else 900) * KiB


@pytest.mark.parametrize(
    "mode,offset,length,expected",
    [
        (PUNCH_HOLE, 0, G, errno.EOPNOTSUPP),  # punch needs KEEP_SIZE
        (PUNCH_HOLE | ZERO_RANGE | KEEP_SIZE, 0, G, errno.EOPNOTSUPP),
        (UNSHARE, 0, G, errno.EOPNOTSUPP),
        (0x4, 0, G, errno.EOPNOTSUPP),  # NO_HIDE_STALE
        (0, 0, 0, errno.EINVAL),
        (0, -1, G, errno.EINVAL),
        (PUNCH_HOLE | KEEP_SIZE, 0, -5, errno.EINVAL),
        (0, 1 << 62, 1 << 62, errno.EFBIG),
    ],
)
def test_fallocate_errors_as_ext4(d, local, mode, offset, length, expected):
    def scenario(base: Path) -> None:
        fd = os.open(base / "e", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fallocate(fd, mode, offset, length)
        finally:
            os.close(fd)

    same_errno(scenario, d, local, expected)


def test_fallocate_needs_a_descriptor_open_for_writing(d, local):
    def scenario(base: Path) -> None:
        (base / "r").write_bytes(b"r")
        fd = os.open(base / "r", os.O_RDONLY)
        try:
            fallocate(fd, 0, 0, G)
        finally:
            os.close(fd)

    same_errno(scenario, d, local, errno.EBADF)

    def on_dir(base: Path) -> None:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fallocate(fd, 0, 0, G)
        finally:
            os.close(fd)

    same_errno(on_dir, d, local, errno.EBADF)


@riverfs_only
@pytest.mark.parametrize("mode", [COLLAPSE, INSERT], ids=["collapse", "insert"])
def test_collapse_and_insert_range_are_not_supported(d, mode):
    fd = os.open(d / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"c" * 64 * KiB)
        assert errno_of(fallocate, fd, mode, 0, G) == errno.EOPNOTSUPP
    finally:
        os.close(fd)
    assert (d / "f").read_bytes() == b"c" * 64 * KiB


# ---- SEEK_DATA / SEEK_HOLE ------------------------------------------------------------------


def test_seek_data_and_hole_of_a_file_made_sparse_by_aligned_writes(d, local):
    rnd = random.Random(7)
    # Disjoint pieces: riverfs counts overwritten bytes in st_blocks until compaction.
    slots = sorted(rnd.sample(range(0, 128, 4), 4))  # four extents: no ext4 extent block
    pieces = [(slot * 64 * KiB, rnd.randrange(1, 4) * 64 * KiB) for slot in slots]

    def scenario(path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for off, n in pieces:
                os.pwrite(fd, b"s" * n, off)
            os.ftruncate(fd, 8 * MiB)  # a hole up to the end
        finally:
            os.close(fd)

    got = same_layout(scenario, d, local)
    assert got["seeks"][8 * MiB] == ("ENXIO", "ENXIO")
    answers = []
    for base in (local, d):  # every 16 KiB, both answers
        fd = os.open(base / "f", os.O_RDONLY)
        try:
            answers.append(
                [
                    (seek_or_errno(fd, off, os.SEEK_DATA), seek_or_errno(fd, off, os.SEEK_HOLE))
                    for off in range(0, 8 * MiB + 1, 16 * KiB)
                ]
            )
        finally:
            os.close(fd)
    assert answers[1] == answers[0]


def test_seek_on_small_unaligned_writes_answers_in_4k_blocks(d, local):
    def scenario(path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, b"a" * 10, 5000)
            os.pwrite(fd, b"b", 70_000)
            os.pwrite(fd, b"c" * 3, 200_000)
        finally:
            os.close(fd)

    got = same_layout(scenario, d, local, blocks=False)
    assert got["extents"] == [(G, 2 * G), (17 * G, 18 * G), (48 * G, 200_003)]


def test_seek_past_the_last_data_and_on_empty_files(d, local):
    def scenario(base: Path) -> None:
        with open(base / "sparse", "wb") as f:
            f.truncate(MiB)
        (base / "empty").write_bytes(b"")
        (base / "full").write_bytes(b"x" * 10_000)

    scenario(d)
    scenario(local)
    for name, off, whence in [
        ("sparse", 0, os.SEEK_DATA),
        ("sparse", MiB, os.SEEK_HOLE),
        ("empty", 0, os.SEEK_DATA),
        ("empty", 0, os.SEEK_HOLE),
        ("full", 10_000, os.SEEK_DATA),
        ("full", 1 << 40, os.SEEK_HOLE),
    ]:
        answers = []
        for base in (local, d):
            fd = os.open(base / name, os.O_RDONLY)
            try:
                answers.append(seek_or_errno(fd, off, whence))
            finally:
                os.close(fd)
        assert answers[1] == answers[0] == "ENXIO", (name, off, whence)
    fd = os.open(d / "sparse", os.O_RDONLY)
    try:
        assert os.lseek(fd, 12345, os.SEEK_HOLE) == 12345
    finally:
        os.close(fd)
    fd = os.open(d / "full", os.O_RDONLY)
    try:
        assert os.lseek(fd, 5, os.SEEK_HOLE) == 10_000
    finally:
        os.close(fd)


# ---- copy_file_range ------------------------------------------------------------------------


def copy_all(src: int, dst: int, count: int, off_in: int, off_out: int) -> int:
    done = 0
    while done < count:
        n = os.copy_file_range(src, dst, count - done, off_in + done, off_out + done)
        if n == 0:
            break
        done += n
    return done


def test_copy_file_range_copies_contents_and_clamps_at_the_end(d, local):
    results = []
    for base in (local, d):
        data = written(base / "src", 300 * KiB + 7)
        with open(base / "src", "r+b") as f:
            f.truncate(2 * MiB)  # a hole at the end of the source
        src = os.open(base / "src", os.O_RDONLY)
        dst = os.open(base / "dst", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(dst, b"o" * 100_000, 0)
            answers = [
                copy_all(src, dst, 100 * KiB, 12345, 5000),
                os.copy_file_range(src, dst, 100, 2 * MiB, 0),  # at the end: 0
                os.copy_file_range(src, dst, 100, 3 * MiB, 0),  # past it: 0
                copy_all(src, dst, 10 * MiB, 2 * MiB - 1000, 400 * KiB),  # cut at the end
                copy_all(src, dst, 64 * KiB, 0, 3 * MiB + 3),  # grows the destination
            ]
        finally:
            os.close(src)
            os.close(dst)
        results.append((answers, layout(base / "dst", blocks=False)["size"], data))
        results[-1] += (hashlib.sha256((base / "dst").read_bytes()).hexdigest(),)
    assert results[1] == results[0]
    assert results[1][0] == [100 * KiB, 0, 0, 1000, 64 * KiB]


@pytest.mark.parametrize(
    "case",
    ["overlap", "dst-readonly", "dst-append", "src-writeonly"],
)
def test_copy_file_range_errors_as_ext4(d, local, case):
    def scenario(base: Path) -> None:
        (base / "a").write_bytes(b"a" * 100_000)
        (base / "b").write_bytes(b"")
        flags_in, flags_out, name_out, off_out = os.O_RDONLY, os.O_WRONLY, "b", 0
        if case == "overlap":
            flags_in, flags_out, name_out, off_out = os.O_RDWR, os.O_RDWR, "a", 50_000
        elif case == "dst-readonly":
            flags_out = os.O_RDONLY
        elif case == "dst-append":
            flags_out = os.O_WRONLY | os.O_APPEND
        else:
            flags_in = os.O_WRONLY
        src = os.open(base / "a", flags_in)
        dst = os.open(base / name_out, flags_out)
        try:
            os.copy_file_range(src, dst, 60_000, 0, off_out)
        finally:
            os.close(src)
            os.close(dst)

    same_errno(scenario, d, local, errno.EINVAL if case == "overlap" else errno.EBADF)


def test_copy_file_range_within_one_file_without_overlap(d, local):
    results = []
    for base in (local, d):
        data = written(base / "f", 256 * KiB)
        fd = os.open(base / "f", os.O_RDWR)
        try:
            n = copy_all(fd, fd, 128 * KiB, 0, 128 * KiB)
            m = copy_all(fd, fd, 256 * KiB, 0, MiB)
        finally:
            os.close(fd)
        results.append((n, m, (base / "f").read_bytes()))
    assert results[1] == results[0]
    assert results[1][2][: 256 * KiB] == data[: 128 * KiB] * 2


# ---- riverfs: the store's side ----------------------------------------------------------------


def store_objects(vol: Volume) -> set[Path]:
    return {p for p in (vol.root / "store" / "chunks").rglob("*") if p.is_file()}


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


@riverfs_only
def test_copy_of_a_large_file_writes_no_block_and_survives_the_source(volume: Volume):
    m = volume.mount()
    size = 150 * MiB + 12345
    rnd = random.Random(3)
    with open(m.path / "src", "wb") as f:
        for _ in range(0, size, 8 * MiB):
            f.write(rnd.randbytes(8 * MiB))
        f.truncate(size)
    want = sha(m.path / "src")
    before = store_objects(volume)
    src = os.open(m.path / "src", os.O_RDONLY)
    dst = os.open(m.path / "dst", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        assert copy_all(src, dst, size + MiB, 0, 0) == size
    finally:
        os.close(src)
        os.close(dst)
    assert store_objects(volume) == before  # metadata only
    assert os.stat(m.path / "dst").st_size == size
    assert sha(m.path / "dst") == want
    # Writes to either file do not show in the other.
    with open(m.path / "src", "r+b") as f:
        f.seek(MiB)
        f.write(b"S" * 1000)
    with open(m.path / "dst", "r+b") as f:
        f.seek(100 * MiB)
        f.write(b"D" * 1000)
    with open(m.path / "src", "rb") as f:
        f.seek(100 * MiB)
        assert f.read(1000) != b"D" * 1000
    with open(m.path / "dst", "rb") as f:
        f.seek(MiB)
        assert f.read(1000) != b"S" * 1000
    dst_sha = sha(m.path / "dst")
    (m.path / "src").unlink()
    wait_until(lambda: len(store_objects(volume)) <= len(before) + 1, timeout=20)
    assert sha(m.path / "dst") == dst_sha
    m.umount()
    out = run_cli("gc", volume.meta_url, "--min-age", "0").stdout
    assert "unreferenced:         0 " in out, out
    assert run_cli("fsck", volume.meta_url).stdout.strip().endswith("clean")
    run_cli("gc", volume.meta_url, "--delete", "--min-age", "0")
    m = volume.mount()
    assert sha(m.path / "dst") == dst_sha
    (m.path / "dst").unlink()
    wait_until(lambda: not store_objects(volume), timeout=20)


@riverfs_only
def test_punch_hole_deletes_the_whole_blocks_inside_it(volume: Volume):
    m = volume.mount()
    data = written(m.path / "f", 16 * MiB)  # one slice of four 4 MiB blocks
    assert len(store_objects(volume)) == 4
    fd = os.open(m.path / "f", os.O_RDWR)
    try:
        fallocate(fd, PUNCH_HOLE | KEEP_SIZE, 4 * MiB - 100, 8 * MiB + 200)
    finally:
        os.close(fd)
    wait_until(lambda: len(store_objects(volume)) == 2, timeout=20)
    want = data[: 4 * MiB - 100] + bytes(8 * MiB + 200) + data[12 * MiB + 100 :]
    assert (m.path / "f").read_bytes() == want
    assert os.stat(m.path / "f").st_blocks == (8 * MiB - 200) // 512 + 1
    m.umount()
    assert run_cli("fsck", volume.meta_url).stdout.strip().endswith("clean")
