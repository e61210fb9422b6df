"""POSIX behaviour of regular files and special nodes through a real riverfs mount.

Every test works in its own directory of one mount shared by the module. Where Linux
defines an errno, the same operation is also run on the local disk (tmp_path) and the
two results must agree.

Set RIVERFS_POSIX_ON_LOCAL=1 to run the module against a local directory instead of a
mount: that checks the tests themselves against what the kernel's own filesystems do.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import random
import shutil
import socket
import sqlite3
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
from posix_support import MOUNT_ARGS, ON_LOCAL, errno_of, same_errno

ENGINES = ("sqlite", "postgresql")  # see conftest.py: these tests run on both engines

# extra `riverfs mount` options, e.g. "--attr-timeout 0 --entry-timeout 0" to bypass kernel caches
riverfs_only = pytest.mark.skipif(ON_LOCAL, reason="riverfs-specific expectation")

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
PiB = 1024**5
BLOCK = 4 * MiB
CHUNK = 64 * MiB


def read_all(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        piece = os.pread(fd, size - len(out), offset + len(out))
        if not piece:
            break
        out += piece
    return bytes(out)


def drop_page_cache(fd: int) -> None:
    """Make the next reads of `fd` go to the filesystem instead of the kernel page cache."""
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def evict_page_cache(fd: int) -> None:
    """Drop the file's (clean, written-through) page cache without fsync: pending writes stay
    pending in riverfs, so the next read must combine them with what is stored."""
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


# --- create, open flags -------------------------------------------------------------------


def test_create_write_close_then_read_back_same_bytes(d: Path):
    data = b"hello riverfs\n" * 1000
    write_file(d / "f", data)
    assert read_all(d / "f") == data
    st = os.stat(d / "f")
    assert stat.S_ISREG(st.st_mode)
    assert st.st_size == len(data)


def test_new_file_mode_is_masked_by_umask(d: Path, local: Path):
    old = os.umask(0o027)
    try:
        for base in (local, d):
            os.close(os.open(base / "f", os.O_CREAT | os.O_WRONLY, 0o666))
            os.mknod(base / "n", 0o777 | stat.S_IFREG)
        for name, mode in (("f", 0o640), ("n", 0o750)):
            assert stat.S_IMODE(os.stat(local / name).st_mode) == mode
            assert stat.S_IMODE(os.stat(d / name).st_mode) == mode
    finally:
        os.umask(old)


def test_new_file_is_owned_by_creator(d: Path):
    os.close(os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o644))
    st = os.stat(d / "f")
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    assert st.st_nlink == 1
    assert st.st_size == 0


def test_o_excl_on_existing_file_fails_eexist(d: Path, local: Path):
    def scenario(base: Path):
        os.close(os.open(base / "f", os.O_CREAT | os.O_WRONLY, 0o644))
        os.open(base / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)

    same_errno(scenario, d, local, errno.EEXIST)


def test_o_excl_on_existing_directory_or_dangling_symlink_fails_eexist(d: Path, local: Path):
    def on_dir(base: Path):
        os.mkdir(base / "sub")
        os.open(base / "sub", os.O_CREAT | os.O_EXCL | os.O_WRONLY)

    def on_dangling_symlink(base: Path):
        os.symlink("nowhere", base / "dangling")
        os.open(base / "dangling", os.O_CREAT | os.O_EXCL | os.O_WRONLY)

    same_errno(on_dir, d, local, errno.EEXIST)
    same_errno(on_dangling_symlink, d, local, errno.EEXIST)
    assert not os.path.lexists(d / "nowhere")


def test_o_excl_creates_missing_file(d: Path):
    fd = os.open(d / "f", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.write(fd, b"x")
    finally:
        os.close(fd)
    assert read_all(d / "f") == b"x"


def test_o_creat_without_excl_opens_existing_file_unchanged(d: Path):
    write_file(d / "f", b"keep me")
    os.chmod(d / "f", 0o644)
    os.close(os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o600))
    assert read_all(d / "f") == b"keep me"
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o644


def test_open_missing_file_without_creat_fails_enoent(d: Path, local: Path):
    same_errno(lambda base: os.open(base / "missing", os.O_RDONLY), d, local, errno.ENOENT)


def test_create_in_missing_directory_fails_enoent(d: Path, local: Path):
    same_errno(
        lambda base: os.open(base / "nodir" / "f", os.O_CREAT | os.O_WRONLY), d, local, errno.ENOENT
    )


def test_create_below_a_regular_file_fails_enotdir(d: Path, local: Path):
    def scenario(base: Path):
        write_file(base / "file", b"")
        os.open(base / "file" / "f", os.O_CREAT | os.O_WRONLY)

    same_errno(scenario, d, local, errno.ENOTDIR)


def test_open_directory_for_writing_fails_eisdir(d: Path, local: Path):
    def scenario(base: Path):
        os.mkdir(base / "sub")
        os.open(base / "sub", os.O_WRONLY)

    same_errno(scenario, d, local, errno.EISDIR)


def test_o_trunc_discards_old_content(d: Path):
    write_file(d / "f", b"a" * (5 * MiB))
    fd = os.open(d / "f", os.O_WRONLY | os.O_TRUNC)
    try:
        assert os.fstat(fd).st_size == 0
        os.write(fd, b"xy")
    finally:
        os.close(fd)
    assert os.stat(d / "f").st_size == 2
    assert read_all(d / "f") == b"xy"


def test_o_trunc_discards_pending_writes_of_other_descriptors(d: Path):
    w = os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(w, b"a" * (BLOCK + 1000))  # still pending in riverfs
        t = os.open(d / "f", os.O_WRONLY | os.O_TRUNC)
        os.close(t)
        assert os.stat(d / "f").st_size == 0
    finally:
        os.close(w)
    assert os.stat(d / "f").st_size == 0
    assert read_all(d / "f") == b""


def test_o_trunc_with_o_rdonly_truncates_as_linux_does(d: Path, local: Path):
    for base in (local, d):
        write_file(base / "f", b"content")
        os.close(os.open(base / "f", os.O_RDONLY | os.O_TRUNC))
    assert os.stat(local / "f").st_size == 0
    assert os.stat(d / "f").st_size == 0


def test_racing_exclusive_creates_of_the_same_names_succeed_exactly_once(d: Path):
    names = [f"n{i}" for i in range(60)]
    wins: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def racer(t: int):
        try:
            start.wait()
            for n in names:
                try:
                    fd = os.open(d / n, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    continue
                os.write(fd, b"%d" % t)
                os.close(fd)
                with lock:
                    wins.append(n)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=racer, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sorted(wins) == sorted(names), "a name was created twice (or never)"
    assert sorted(os.listdir(d)) == sorted(names)


def test_o_trunc_updates_mtime(d: Path):
    write_file(d / "f", b"content")
    os.utime(d / "f", ns=(1_000_000_000 * 10**9, 1_000_000_000 * 10**9))
    before = time.time_ns()
    os.close(os.open(d / "f", os.O_WRONLY | os.O_TRUNC))
    st = os.stat(d / "f")
    assert st.st_size == 0
    assert st.st_mtime_ns >= before - 10**9  # "now", not the old stamp


def test_o_append_always_writes_at_end(d: Path):
    write_file(d / "f", b"abc")
    plain = os.open(d / "f", os.O_RDWR)
    appender = os.open(d / "f", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(appender, b"def")
        os.pwrite(plain, b"X", 0)
        os.lseek(appender, 0, os.SEEK_SET)
        os.write(appender, b"gh")
        os.write(plain, b"YZ")  # plain fd's position is 0: overwrites
        assert pread_exact(plain, 100, 0) == b"YZcdefgh"
        os.write(plain, b"1")
        os.write(appender, b"!")
    finally:
        os.close(plain)
        os.close(appender)
    assert read_all(d / "f") == b"YZ1defgh!"


def test_o_append_on_empty_file_and_after_truncate(d: Path):
    fd = os.open(d / "f", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
    try:
        os.write(fd, b"one")
        os.truncate(d / "f", 1)
        os.write(fd, b"two")
    finally:
        os.close(fd)
    assert read_all(d / "f") == b"otwo"


# --- reading and writing ------------------------------------------------------------------


def test_read_past_eof_returns_empty_and_short_reads_at_eof(d: Path):
    write_file(d / "f", b"0123456789")
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        assert os.pread(fd, 100, 5) == b"56789"
        assert os.pread(fd, 100, 10) == b""
        assert os.pread(fd, 100, 1000) == b""
        assert os.pread(fd, 100, 10 * GiB) == b""
        os.lseek(fd, 0, os.SEEK_END)
        assert os.read(fd, 10) == b""
    finally:
        os.close(fd)


def test_overwrite_in_middle_keeps_surrounding_bytes(d: Path):
    size = 10 * MiB
    data = bytearray(os.urandom(size))
    write_file(d / "f", bytes(data))
    patch = os.urandom(1000)
    for off in (17, BLOCK - 500, 2 * BLOCK - 1, size - 1000):
        with open(d / "f", "r+b") as f:
            f.seek(off)
            f.write(patch)
        data[off : off + len(patch)] = patch
    assert os.stat(d / "f").st_size == size
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        drop_page_cache(fd)
        assert hashlib.sha256(pread_exact(fd, size, 0)).digest() == hashlib.sha256(data).digest()
    finally:
        os.close(fd)


def test_many_small_unaligned_writes_accumulate_in_order(d: Path):
    expected = bytearray()
    fd = os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        for i in range(2000):
            piece = f"{i:05d}|".encode() * (1 + i % 3)
            os.write(fd, piece)
            expected += piece
    finally:
        os.close(fd)
    assert read_all(d / "f") == bytes(expected)


def test_data_written_is_visible_to_other_fds_before_close(d: Path):
    w = os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(w, b"a" * 100_000)
        assert os.stat(d / "f").st_size == 100_000
        r = os.open(d / "f", os.O_RDONLY)
        try:
            assert pread_exact(r, 200_000, 0) == b"a" * 100_000
            os.pwrite(w, b"B", 50_000)
            assert os.pread(r, 3, 49_999) == b"aBa"
        finally:
            os.close(r)
    finally:
        os.close(w)


def test_listing_the_directory_of_a_file_with_pending_writes_keeps_its_size(d: Path):
    fd = os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"z" * (BLOCK + 100))
        with os.scandir(d) as it:  # readdirplus: attributes come with the entries
            sizes = {e.name: e.stat().st_size for e in it}
        assert sizes == {"f": BLOCK + 100}
        assert os.stat(d / "f").st_size == BLOCK + 100
        os.write(fd, b"z")
        os.listdir(d)
        assert os.stat(d / "f").st_size == BLOCK + 101
    finally:
        os.close(fd)
    assert os.stat(d / "f").st_size == BLOCK + 101


def test_write_at_chunk_boundary_straddles_two_chunks(d: Path):
    payload = bytes(range(65, 85))  # 20 bytes: 10 in chunk 0, 10 in chunk 1
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        assert os.pwrite(fd, payload, CHUNK - 10) == 20
        assert os.fstat(fd).st_size == CHUNK + 10
        drop_page_cache(fd)
        assert os.pread(fd, 20, CHUNK - 10) == payload
        assert os.pread(fd, 40, CHUNK - 20) == b"\0" * 10 + payload
        assert os.pread(fd, 4096, 0) == b"\0" * 4096
        assert os.pread(fd, 100, CHUNK) == payload[10:]
    finally:
        os.close(fd)
    with open(d / "f", "rb") as f:
        f.seek(CHUNK - 10)
        assert f.read() == payload


def test_70_mib_file_spanning_blocks_and_chunks_reads_back_identical(d: Path):
    size = 70 * MiB + 12345
    data = os.urandom(size)
    with open(d / "big", "wb") as f:
        for off in range(0, size, 3 * MiB + 7):  # pieces not aligned to blocks
            f.write(data[off : off + 3 * MiB + 7])
    assert os.stat(d / "big").st_size == size
    fd = os.open(d / "big", os.O_RDONLY)
    try:
        drop_page_cache(fd)
        h = hashlib.sha256()
        off = 0
        while True:
            piece = os.pread(fd, 1 * MiB, off)
            if not piece:
                break
            h.update(piece)
            off += len(piece)
        assert off == size
        assert h.hexdigest() == hashlib.sha256(data).hexdigest()
        # random access across block and chunk boundaries
        for off in (BLOCK - 3, 15 * BLOCK + 1, CHUNK - 1, CHUNK + BLOCK - 2, size - 5):
            assert os.pread(fd, 10, off) == data[off : off + 10]
        # a sequential pass with an odd read size (read-ahead windows never line up)
        evict_page_cache(fd)
        os.lseek(fd, 0, os.SEEK_SET)
        h = hashlib.sha256()
        while piece := os.read(fd, 100_003):
            h.update(piece)
        assert h.hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        os.close(fd)


def test_concurrent_writers_to_disjoint_ranges_all_land(d: Path):
    piece = 2 * MiB + 3
    parts = [os.urandom(piece) for _ in range(6)]
    os.close(os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o644))
    errors: list[BaseException] = []

    def writer(i: int):
        try:
            fd = os.open(d / "f", os.O_WRONLY)
            try:
                view = memoryview(parts[i])
                for off in range(0, piece, 64 * KiB):
                    os.pwrite(fd, view[off : off + 64 * KiB], i * piece + off)
            finally:
                os.close(fd)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(len(parts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert read_all(d / "f") == b"".join(parts)


def test_concurrent_random_reads_of_one_file_return_correct_bytes(d: Path):
    size = 40 * MiB + 333
    data = os.urandom(size)
    write_file(d / "f", data)
    errors: list[BaseException] = []

    def reader(t: int):
        rng = random.Random(t)
        try:
            fd = os.open(d / "f", os.O_RDONLY)
            try:
                for i in range(60):
                    if i % 10 == 0:
                        evict_page_cache(fd)
                    off = rng.randrange(size)
                    n = rng.choice([1, 4096, 131072, 1_000_000, 5 * MiB])
                    got = pread_exact(fd, n, off)
                    if got != data[off : off + n]:
                        raise AssertionError(f"reader {t}: wrong bytes at {off}+{n}")
            finally:
                os.close(fd)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]


def test_sequential_readers_and_a_writer_on_other_files_at_once(d: Path):
    files = {f"f{i}": os.urandom(9 * MiB + i) for i in range(3)}
    for name, data in files.items():
        write_file(d / name, data)
    errors: list[BaseException] = []

    def seq_reader(name: str):
        try:
            fd = os.open(d / name, os.O_RDONLY)
            try:
                evict_page_cache(fd)
                h = hashlib.sha256()
                while piece := os.read(fd, 65536):
                    h.update(piece)
                assert h.digest() == hashlib.sha256(files[name]).digest(), name
            finally:
                os.close(fd)
        except BaseException as e:
            errors.append(e)

    def writer():
        try:
            with open(d / "w", "wb") as f:
                for _ in range(20):
                    f.write(os.urandom(MiB))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=seq_reader, args=(n,)) for n in files]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert os.stat(d / "w").st_size == 20 * MiB


@pytest.mark.skipif(ON_LOCAL, reason="needs its own riverfs mount")
def test_many_writers_beyond_a_small_write_buffer_neither_deadlock_nor_corrupt(volume):
    """Eight writers of 24 MiB each through a 16 MiB write buffer: back-pressure must make
    them wait and flush, never hang, and every byte must land."""
    mnt = volume.mount(None, "--buffer-size", "16M", *MOUNT_ARGS).path
    datas = {i: os.urandom(24 * MiB) for i in range(8)}
    errors: list[BaseException] = []

    def writer(i: int):
        try:
            data = datas[i]
            fd = os.open(mnt / f"w{i}", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                for off in range(0, len(data), 3 * MiB + 11):
                    os.pwrite(fd, data[off : off + 3 * MiB + 11], off)
                    if off % (6 * MiB) == 0:
                        evict_page_cache(fd)
                        assert os.pread(fd, 100, off) == data[off : off + 100]
            finally:
                os.close(fd)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "writers hung"
    assert not errors, errors[:3]
    for i, data in datas.items():
        assert hashlib.sha256(read_all(mnt / f"w{i}")).digest() == hashlib.sha256(data).digest()


def test_fsync_and_fdatasync_succeed_and_keep_data(d: Path):
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"durable" * 1000)
        os.fsync(fd)
        os.write(fd, b"more")
        os.fdatasync(fd)
        assert os.fstat(fd).st_size == 7004
    finally:
        os.close(fd)
    assert read_all(d / "f") == b"durable" * 1000 + b"more"


def test_shared_mmap_write_is_visible_through_read(d: Path):
    write_file(d / "f", b"\0" * 3 * 4096)
    with open(d / "f", "r+b") as f:
        m = mmap.mmap(f.fileno(), 0)
        try:
            m[4090:4100] = b"0123456789"
            m.flush()
        finally:
            m.close()
    data = read_all(d / "f")
    assert data[4090:4100] == b"0123456789"
    assert len(data) == 3 * 4096
    with open(d / "f", "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        assert m[4088:4102] == b"\0\x000123456789\0\0"


def test_copied_executable_runs_from_the_mount(d: Path):
    shutil.copy2("/bin/true", d / "true")
    os.chmod(d / "true", 0o755)
    assert subprocess.run([str(d / "true")], timeout=30).returncode == 0
    script = d / "hello.sh"
    write_file(script, b"#!/bin/sh\necho hello from riverfs\n")
    os.chmod(script, 0o755)
    out = subprocess.run([str(script)], capture_output=True, timeout=30)
    assert out.stdout == b"hello from riverfs\n"


def test_copy_file_range_and_sendfile_within_the_mount(d: Path):
    data = os.urandom(5 * MiB + 77)
    write_file(d / "src", data)
    src = os.open(d / "src", os.O_RDONLY)
    dst = os.open(d / "dst", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        copied = 0
        while copied < len(data):
            n = os.copy_file_range(src, dst, len(data) - copied, copied, copied)
            assert n > 0
            copied += n
    finally:
        os.close(src)
        os.close(dst)
    assert read_all(d / "dst") == data
    shutil.copyfile(d / "src", d / "copy")  # sendfile on Linux
    assert read_all(d / "copy") == data


def test_random_overlapping_writes_and_truncates_match_a_model(d: Path):
    """Many overlapping slices in a few blocks: later writes win, truncated bytes stay gone."""
    rng = random.Random(20260521)
    model = bytearray()
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        for step in range(400):
            if rng.random() < 0.1:
                size = rng.randrange(0, 3 * BLOCK)
                os.ftruncate(fd, size)
                model[size:] = b""
                model.extend(b"\0" * (size - len(model)))
            else:
                off = rng.randrange(0, 3 * BLOCK)
                n = rng.choice((1, 7, 4096, 65536, 300_000, BLOCK + 5))
                buf = rng.randbytes(n)
                assert os.pwrite(fd, buf, off) == n
                if off > len(model):
                    model.extend(b"\0" * (off - len(model)))
                model[off : off + n] = buf
            if step % 100 == 99:
                drop_page_cache(fd)
                assert os.fstat(fd).st_size == len(model)
                assert pread_exact(fd, len(model) + 10, 0) == bytes(model), f"step {step}"
    finally:
        os.close(fd)
    assert read_all(d / "f") == bytes(model)


def test_random_writes_truncates_and_reads_through_several_fds_and_links_match_a_model(
    d: Path,
):
    """Pending (not yet fsynced) writes from several descriptors of one inode, truncates
    by path and by descriptor, and reads that bypass the page cache all agree with a model."""
    rng = random.Random(99)
    model = bytearray()
    os.close(os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o644))
    os.link(d / "f", d / "alias")
    fds = [
        os.open(d / "f", os.O_RDWR),
        os.open(d / "alias", os.O_RDWR),
        os.open(d / "f", os.O_RDWR),
    ]
    edges = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK - 3, CHUNK - 2, CHUNK, CHUNK + 5]
    try:
        for step in range(300):
            fd = rng.choice(fds)
            r = rng.random()
            if r < 0.08:
                size = rng.choice(
                    [0, 5, BLOCK, BLOCK + 7, CHUNK - 1, CHUNK + 3, rng.randrange(CHUNK)]
                )
                if rng.random() < 0.5:
                    os.ftruncate(fd, size)
                else:
                    os.truncate(d / rng.choice(["f", "alias"]), size)
                del model[size:]
                model.extend(b"\0" * (size - len(model)))
            elif r < 0.25:
                if rng.random() < 0.5:
                    evict_page_cache(fd)
                off = rng.choice([rng.randrange(len(model) + 1), *edges])
                n = rng.choice([1, 100, 4096, 1_000_003])
                assert os.fstat(fd).st_size == len(model), f"step {step}"
                assert pread_exact(fd, n, off) == bytes(model[off : off + n]), f"step {step}"
            else:
                off = max(0, rng.choice(edges) + rng.randrange(-8, 8))
                if rng.random() < 0.5:
                    off = rng.randrange(CHUNK + BLOCK)
                n = rng.choice([1, 13, 4096, 100_000, MiB + 7])
                buf = rng.randbytes(n)
                assert os.pwrite(fd, buf, off) == n
                if off > len(model):
                    model.extend(b"\0" * (off - len(model)))
                model[off : off + n] = buf
            if step == 150:
                os.fsync(rng.choice(fds))
    finally:
        for fd in fds:
            os.close(fd)
    fd = os.open(d / "alias", os.O_RDONLY)
    try:
        evict_page_cache(fd)
        got = pread_exact(fd, len(model) + 1, 0)
    finally:
        os.close(fd)
    assert len(got) == len(model)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(model).hexdigest()


def test_pending_writes_are_visible_to_reads_that_bypass_the_page_cache(d: Path):
    w = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(w, b"x" * (BLOCK + 10))
        os.pwrite(w, b"pending", 3)
        evict_page_cache(w)
        r = os.open(d / "f", os.O_RDONLY)
        try:
            assert os.pread(r, 12, 0) == b"xxxpendingxx"
            assert os.pread(r, 20, BLOCK) == b"x" * 10
        finally:
            os.close(r)
    finally:
        os.close(w)


def test_overwrite_across_chunk_boundary_of_an_existing_file(d: Path):
    size = CHUNK + 3 * MiB
    data = bytearray(os.urandom(size))
    write_file(d / "f", bytes(data))
    patch = os.urandom(2 * MiB)
    off = CHUNK - MiB - 5
    with open(d / "f", "r+b") as f:
        f.seek(off)
        f.write(patch)
    data[off : off + len(patch)] = patch
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        drop_page_cache(fd)
        got = pread_exact(fd, size + 1, 0)
    finally:
        os.close(fd)
    assert len(got) == size
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize("offset", [4 * GiB - 3, 5 * GiB, 1024 * GiB + 12345])
def test_write_at_large_offset_beyond_32_bits(d: Path, offset: int):
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"far away", offset)
        assert os.fstat(fd).st_size == offset + 8
        drop_page_cache(fd)
        assert os.pread(fd, 12, offset - 2) == b"\0\0far away"
        assert os.pread(fd, 8, offset // 2) == b"\0" * 8
    finally:
        os.close(fd)
    os.unlink(d / "f")


def test_concurrent_o_append_writers_never_interleave_or_lose_records(d: Path):
    os.close(os.open(d / "log", os.O_CREAT | os.O_WRONLY, 0o644))
    errors: list[BaseException] = []

    def appender(w: int):
        try:
            fd = os.open(d / "log", os.O_WRONLY | os.O_APPEND)
            try:
                for i in range(300):
                    record = f"writer {w} record {i:04d} ".encode() + b"." * (w * 37 % 200) + b"\n"
                    assert os.write(fd, record) == len(record)
            finally:
                os.close(fd)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=appender, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    lines = read_all(d / "log").split(b"\n")
    assert lines[-1] == b""
    lines = lines[:-1]
    assert len(lines) == 1200
    for w in range(4):
        mine = [ln for ln in lines if ln.startswith(f"writer {w} ".encode())]
        assert mine == [
            f"writer {w} record {i:04d} ".encode() + b"." * (w * 37 % 200) for i in range(300)
        ]


def test_trailing_slash_on_a_file_fails_enotdir(d: Path, local: Path):
    def open_it(base: Path):
        write_file(base / "f", b"")
        os.open(f"{base}/f/", os.O_RDONLY)

    def rename_to_it(base: Path):
        os.rename(f"{base}/f", f"{base}/g/")

    same_errno(open_it, d, local, errno.ENOTDIR)
    same_errno(lambda base: os.stat(f"{base}/f/"), d, local, errno.ENOTDIR)
    same_errno(rename_to_it, d, local, errno.ENOTDIR)


def test_unicode_names_are_not_normalized(d: Path):
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    write_file(d / nfc, b"composed")
    write_file(d / nfd, b"decomposed")
    assert sorted(os.listdir(d)) == sorted([nfc, nfd])
    assert read_all(d / nfc) == b"composed"
    assert read_all(d / nfd) == b"decomposed"


def test_o_tmpfile_works_or_is_refused_with_eopnotsupp(d: Path):
    try:
        fd = os.open(d, os.O_TMPFILE | os.O_RDWR, 0o600)
    except OSError as e:
        assert e.errno == errno.EOPNOTSUPP, f"O_TMPFILE failed with {errno.errorcode[e.errno]}"
        return
    try:
        os.write(fd, b"anonymous")
        assert os.pread(fd, 20, 0) == b"anonymous"
        assert os.listdir(d) == []
    finally:
        os.close(fd)


def test_posix_fallocate_extends_file_with_zeros(d: Path):
    write_file(d / "f", b"head")
    fd = os.open(d / "f", os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, 2 * MiB)
        assert os.fstat(fd).st_size == 2 * MiB
        assert os.pread(fd, 8, 0) == b"head\0\0\0\0"
        assert pread_exact(fd, MiB, MiB) == b"\0" * MiB
    finally:
        os.close(fd)


def _try_lock_in_child(path: Path, kind: str) -> int:
    """Fork a process that tries a non-blocking lock; return the errno it got (0: locked)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fd = os.open(path, os.O_RDWR)
            try:
                if kind == "posix":
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                else:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                code = e.errno
        except BaseException:
            code = 255
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("kind", ["posix", "flock"])
def test_file_locks_conflict_between_processes(d: Path, kind: str):
    write_file(d / "lockfile", b"")
    fd = os.open(d / "lockfile", os.O_RDWR)
    try:
        if kind == "posix":
            fcntl.lockf(fd, fcntl.LOCK_EX)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX)
        assert _try_lock_in_child(d / "lockfile", kind) in (errno.EAGAIN, errno.EACCES)
        if kind == "posix":
            fcntl.lockf(fd, fcntl.LOCK_UN)
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
        assert _try_lock_in_child(d / "lockfile", kind) == 0
    finally:
        os.close(fd)


def test_sqlite_database_on_the_mount(d: Path):
    db = sqlite3.connect(d / "test.db")
    try:
        db.execute("create table t (k integer primary key, v blob)")
        for batch in range(20):
            with db:
                db.executemany(
                    "insert into t values (?, ?)",
                    [(batch * 100 + i, os.urandom(500)) for i in range(100)],
                )
        with db:
            db.execute("delete from t where k % 3 = 0")
            db.execute("update t set v = x'00' where k % 3 = 1")
        db.execute("vacuum")
    finally:
        db.close()
    db = sqlite3.connect(d / "test.db")
    try:
        assert db.execute("pragma integrity_check").fetchone() == ("ok",)
        assert db.execute("select count(*) from t").fetchone() == (2000 - 667,)
        assert db.execute("select count(*) from t where v = x'00'").fetchone() == (667,)
    finally:
        db.close()


def test_pwrite_on_o_append_fd_appends_regardless_of_offset(d: Path, local: Path):
    for base in (local, d):
        write_file(base / "f", b"abc")
        fd = os.open(base / "f", os.O_WRONLY | os.O_APPEND)
        try:
            os.pwrite(fd, b"XY", 0)  # Linux ignores the offset with O_APPEND
        finally:
            os.close(fd)
    assert read_all(local / "f") == b"abcXY"
    assert read_all(d / "f") == b"abcXY"


def test_o_direct_aligned_write_and_read(d: Path):
    size = MiB
    buf = mmap.mmap(-1, size)  # page-aligned memory
    data = os.urandom(size)
    buf[:] = data
    try:
        fd = os.open(d / "f", os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o644)
    except OSError as e:
        pytest.fail(f"O_DIRECT open failed: {errno.errorcode[e.errno]}")
    try:
        assert os.pwritev(fd, [buf], 0) == size
        out = mmap.mmap(-1, size)
        assert os.preadv(fd, [out], 0) == size
        assert out[:] == data
    finally:
        os.close(fd)
    assert read_all(d / "f") == data


# --- sparse files and truncate ------------------------------------------------------------


def test_sparse_file_holes_read_as_zeros(d: Path):
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"start", 0)
        os.pwrite(fd, b"middle", 5 * MiB + 3)
        os.pwrite(fd, b"end", 130 * MiB)  # two chunk boundaries later
        assert os.fstat(fd).st_size == 130 * MiB + 3
        drop_page_cache(fd)
        assert os.pread(fd, 10, 0) == b"start" + b"\0" * 5
        assert pread_exact(fd, MiB, 1 * MiB) == b"\0" * MiB
        assert os.pread(fd, 12, 5 * MiB) == b"\0\0\0middle\0\0\0"
        assert pread_exact(fd, 2 * MiB, CHUNK - MiB) == b"\0" * (2 * MiB)
        assert os.pread(fd, 10, 130 * MiB - 2) == b"\0\0end"
    finally:
        os.close(fd)


@riverfs_only
def test_sparse_file_uses_blocks_only_for_written_bytes(d: Path):
    with open(d / "f", "wb") as f:
        f.seek(200 * MiB)
        f.write(b"x" * 4096)
    st = os.stat(d / "f")
    assert st.st_size == 200 * MiB + 4096
    assert st.st_blocks * 512 < 4 * MiB


def test_seek_data_past_eof_and_seek_end(d: Path):
    write_file(d / "f", b"abc")
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_END) == 3
        assert os.lseek(fd, 100, os.SEEK_SET) == 100
        assert os.read(fd, 5) == b""
    finally:
        os.close(fd)


def test_truncate_down_then_up_exposes_zeros_not_old_data(d: Path):
    data = os.urandom(3 * BLOCK)
    write_file(d / "f", data)
    for new_size in (2 * BLOCK + 100, BLOCK, 1000, 0):
        os.truncate(d / "f", new_size)
        assert os.stat(d / "f").st_size == new_size
        os.truncate(d / "f", 3 * BLOCK)
        got = read_all(d / "f")
        assert len(got) == 3 * BLOCK
        assert got[:new_size] == data[:new_size]
        assert got[new_size:] == b"\0" * (3 * BLOCK - new_size), f"stale data after {new_size}"
        write_file(d / "f", data)


def test_ftruncate_on_open_fd_with_buffered_writes(d: Path):
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"a" * 10_000)
        os.ftruncate(fd, 100)
        assert os.fstat(fd).st_size == 100
        os.pwrite(fd, b"b", 200)
        assert os.fstat(fd).st_size == 201
        drop_page_cache(fd)
        assert pread_exact(fd, 1000, 0) == b"a" * 100 + b"\0" * 100 + b"b"
    finally:
        os.close(fd)
    assert read_all(d / "f") == b"a" * 100 + b"\0" * 100 + b"b"


def test_truncate_up_extends_with_zeros(d: Path):
    write_file(d / "f", b"abc")
    os.truncate(d / "f", 10 * MiB + 1)
    assert os.stat(d / "f").st_size == 10 * MiB + 1
    data = read_all(d / "f")
    assert data[:3] == b"abc"
    assert data[3:] == b"\0" * (10 * MiB - 2)


def test_truncate_across_chunk_boundary_cuts_both_chunks(d: Path):
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"x" * 100, CHUNK - 50)
        os.pwrite(fd, b"y" * 100, CHUNK + 1000)
        os.ftruncate(fd, CHUNK - 10)
        os.ftruncate(fd, CHUNK + 2000)
        drop_page_cache(fd)
        assert os.pread(fd, 60, CHUNK - 50) == b"x" * 40 + b"\0" * 20
        assert os.pread(fd, 100, CHUNK + 1000) == b"\0" * 100
    finally:
        os.close(fd)


@riverfs_only
def test_truncate_to_one_pib_then_read_and_truncate_back_is_fast(d: Path):
    write_file(d / "f", b"hello")
    t0 = time.monotonic()
    os.truncate(d / "f", PiB)
    assert os.stat(d / "f").st_size == PiB
    fd = os.open(d / "f", os.O_RDWR)
    try:
        assert os.pread(fd, 10, 0) == b"hello" + b"\0" * 5
        assert os.pread(fd, 4096, PiB // 2 + 12345) == b"\0" * 4096
        assert os.pread(fd, 4096, PiB - 100) == b"\0" * 100
        assert os.pread(fd, 10, PiB) == b""
        os.pwrite(fd, b"tail", PiB - 4)
        assert os.pread(fd, 10, PiB - 6) == b"\0\0tail"
        os.ftruncate(fd, 5)
        assert os.fstat(fd).st_size == 5
    finally:
        os.close(fd)
    assert read_all(d / "f") == b"hello"
    st = os.stat(d / "f")
    assert st.st_blocks * 512 < MiB
    os.truncate(d / "f", PiB)
    os.unlink(d / "f")
    assert time.monotonic() - t0 < 10, "1 PiB sparse file operations must not scale with size"


def test_truncate_missing_file_enoent_and_directory_eisdir(d: Path, local: Path):
    same_errno(lambda base: os.truncate(base / "missing", 0), d, local, errno.ENOENT)

    def on_dir(base: Path):
        os.mkdir(base / "sub")
        os.truncate(base / "sub", 0)

    same_errno(on_dir, d, local, errno.EISDIR)


def test_truncate_negative_size_fails_einval(d: Path, local: Path):
    def scenario(base: Path):
        write_file(base / "f", b"x")
        os.truncate(base / "f", -1)

    same_errno(scenario, d, local, errno.EINVAL)


# --- names and paths ----------------------------------------------------------------------


def test_name_of_255_bytes_works_and_256_fails_enametoolong(d: Path, local: Path):
    ascii255 = "n" * 255
    utf8_255 = "€" * 85  # 3 bytes each
    for name in (ascii255, utf8_255):
        assert len(name.encode()) == 255
        write_file(d / name, name.encode())
        assert read_all(d / name) == name.encode()
    assert sorted(os.listdir(d)) == sorted([ascii255, utf8_255])
    os.unlink(d / ascii255)

    for too_long in ("n" * 256, "€" * 85 + "x"):
        same_errno(
            lambda base, n=too_long: os.open(base / n, os.O_CREAT | os.O_WRONLY),
            d,
            local,
            errno.ENAMETOOLONG,
        )
        same_errno(lambda base, n=too_long: os.stat(base / n), d, local, errno.ENAMETOOLONG)


def test_names_are_arbitrary_bytes(d: Path):
    names = [b"\xff\xfe", b"sp ace", b"new\nline", b"tab\t", b"\x01ctl", "ünï©ødé".encode()]
    base = os.fsencode(d)
    for n in names:
        write_file(Path(os.fsdecode(base + b"/" + n)), n)
    assert sorted(os.listdir(base)) == sorted(names)
    for n in names:
        assert read_all(Path(os.fsdecode(base + b"/" + n))) == n


def test_names_are_case_sensitive(d: Path):
    write_file(d / "Name", b"upper")
    write_file(d / "name", b"lower")
    assert read_all(d / "Name") == b"upper"
    assert read_all(d / "name") == b"lower"
    assert sorted(os.listdir(d)) == ["Name", "name"]


def test_path_longer_than_4096_fails_enametoolong_but_deep_tree_works(d: Path, local: Path):
    part = "p" * 250
    depth = 18  # 18 * 251 > 4096

    def build(base: Path) -> str:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for _ in range(depth):
                os.mkdir(part, dir_fd=fd)
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = nfd
            wfd = os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
            os.write(wfd, b"deep")
            os.close(wfd)
        finally:
            os.close(fd)
        return str(base) + ("/" + part) * depth + "/leaf"

    for base in (local, d):
        full = build(base)
        assert len(full) > 4096
        assert errno_of(os.stat, full) == errno.ENAMETOOLONG
        assert errno_of(os.open, full, os.O_RDONLY) == errno.ENAMETOOLONG
        # the same file through a path of fewer than 4096 bytes, relative to a deep dir
        half = str(base) + ("/" + part) * (depth // 2)
        fd = os.open(half, os.O_RDONLY | os.O_DIRECTORY)
        try:
            rel = "/".join([part] * (depth - depth // 2) + ["leaf"])
            rfd = os.open(rel, os.O_RDONLY, dir_fd=fd)
            assert os.read(rfd, 10) == b"deep"
            os.close(rfd)
        finally:
            os.close(fd)


# --- mknod: special files -----------------------------------------------------------------


def test_mknod_regular_file_is_empty_regular_file(d: Path):
    os.mknod(d / "r", 0o640 | stat.S_IFREG)
    st = os.stat(d / "r")
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640 & ~_umask()
    assert st.st_size == 0
    assert read_all(d / "r") == b""


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_mknod_fifo_is_a_working_fifo(d: Path):
    os.mkfifo(d / "fifo", 0o600)
    st = os.lstat(d / "fifo")
    assert stat.S_ISFIFO(st.st_mode)
    assert st.st_size == 0
    r = os.open(d / "fifo", os.O_RDONLY | os.O_NONBLOCK)
    try:
        w = os.open(d / "fifo", os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(w, b"through the pipe")
        finally:
            os.close(w)
        assert os.read(r, 100) == b"through the pipe"
    finally:
        os.close(r)


def test_mknod_socket_creates_socket_node(d: Path):
    os.mknod(d / "sock", 0o600 | stat.S_IFSOCK)
    assert stat.S_ISSOCK(os.lstat(d / "sock").st_mode)
    assert "sock" in os.listdir(d)
    with os.scandir(d) as it:
        entry = next(e for e in it if e.name == "sock")
        assert not entry.is_file() and not entry.is_dir()


def test_unix_socket_can_be_bound_and_connected_in_the_mount(d: Path):
    cwd = os.getcwd()
    os.chdir(d)  # sun_path is limited to 108 bytes: bind a relative name
    try:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind("s.sock")
            server.listen(1)
            assert stat.S_ISSOCK(os.lstat("s.sock").st_mode)
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                client.connect("s.sock")
                conn, _ = server.accept()
                with conn:
                    client.sendall(b"ping")
                    assert conn.recv(10) == b"ping"
            finally:
                client.close()
        finally:
            server.close()
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize(
    ("kind", "major", "minor"),
    [(stat.S_IFCHR, 1, 3), (stat.S_IFBLK, 8, 17), (stat.S_IFCHR, 4095, 1048575)],
)
def test_mknod_device_node_preserves_type_and_rdev(d: Path, kind: int, major: int, minor: int):
    rdev = os.makedev(major, minor)
    os.mknod(d / "dev", 0o600 | kind, rdev)
    st = os.lstat(d / "dev")
    assert stat.S_IFMT(st.st_mode) == kind
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (major, minor)
    assert stat.S_IMODE(st.st_mode) == 0o600 & ~_umask()


def mount_options(path: Path) -> set[str]:
    """The per-mount options (nodev, nosuid, ...) of the mount holding `path`."""
    best, opts = "", set()
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mp = fields[4]
            if (real == mp or real.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                best, opts = mp, set(fields[5].split(","))
    return opts


def test_char_device_node_opens_the_device_unless_mounted_nodev(d: Path):
    os.mknod(d / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    if "nodev" in mount_options(d):
        assert errno_of(os.open, d / "null", os.O_WRONLY) == errno.EACCES
        return
    with open(d / "null", "wb") as f:
        f.write(b"discarded")
    assert read_all(d / "null") == b""


def test_mknod_existing_name_fails_eexist(d: Path, local: Path):
    def scenario(base: Path):
        write_file(base / "x", b"")
        os.mknod(base / "x", 0o600 | stat.S_IFIFO)

    same_errno(scenario, d, local, errno.EEXIST)
