"""Persistence: what a mount acknowledged is there after unmount/remount and after kill -9.

Every remount here is a new daemon process reading the volume back from SQLite and the
object store. The clean-remount test also deletes the disk cache first, so data must come
from the store; the kill -9 tests keep the (possibly half-written) cache, as a crash would.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import random
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
from support import Mount, Volume, is_mounted, run_cli, wait_until

MiB = 1 << 20
CHUNK = 64 * MiB


def data(seed: int, size: int) -> bytes:
    """Deterministic pseudo-random bytes (every 32-byte piece differs)."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=64).digest()
        i += 1
    return bytes(out[:size])


def big_data(seed: int, size: int) -> bytes:
    """Fast pseudo-random bytes for tens of MiB: distinct 1 MiB pieces."""
    piece = data(seed, MiB)
    return (
        b"".join(i.to_bytes(8, "little") + piece[8:] for i in range(size // MiB))
        + piece[: size % MiB]
    )


def digest(path: bytes) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MiB):
            h.update(block)
    return h.hexdigest()


STAT_FIELDS = (
    "st_mode",
    "st_ino",
    "st_nlink",
    "st_uid",
    "st_gid",
    "st_size",
    "st_rdev",
    "st_blocks",
    "st_mtime_ns",
    "st_ctime_ns",
)


def snapshot(root: Path) -> dict:
    """Every entry under root (bytes names): stat fields (no atime), content, target, xattrs."""
    out = {}
    broot = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(broot):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            s = os.lstat(p)
            info = {f: getattr(s, f) for f in STAT_FIELDS}
            info["xattrs"] = sorted(
                (n, os.getxattr(p, n, follow_symlinks=False))
                for n in os.listxattr(p, follow_symlinks=False)
            )
            if stat.S_ISREG(s.st_mode):
                info["sha256"] = digest(p)
            elif stat.S_ISLNK(s.st_mode):
                info["target"] = os.readlink(p)
            elif stat.S_ISDIR(s.st_mode):
                info["listing"] = sorted(os.listdir(p))
            out[os.path.relpath(p, broot)] = info
    root_stat = os.stat(root)
    out[b"."] = {"st_nlink": root_stat.st_nlink, "listing": sorted(os.listdir(broot))}
    return out


def assert_same(before: dict, after: dict) -> None:
    assert sorted(after) == sorted(before), "set of paths differs after remount"
    for path, info in before.items():
        for key, value in info.items():
            assert after[path][key] == value, (
                f"{path!r}: {key} was {value!r:.200} before, {after[path][key]!r:.200} after"
            )


def statfs_counters(root: Path) -> tuple:
    s = os.statvfs(root)
    return (s.f_bsize, s.f_blocks, s.f_bfree, s.f_files, s.f_ffree)


def remount(volume: Volume, old: Mount) -> Mount:
    """Mount the volume again at the same mountpoint: a new daemon process."""
    assert not is_mounted(old.path)
    new = volume.mount(old.path)
    return new


def build_tree(root: Path) -> dict[str, bytes]:
    """A tree covering every kind of object and attribute; returns expected file contents."""
    expected: dict[str, bytes] = {}

    def put(rel: str, content: bytes, mode: int = 0o644) -> None:
        (root / rel).write_bytes(content)
        os.chmod(root / rel, mode)
        expected[rel] = content

    for d in ["d1", "d1/d2", "d1/d2/d3", "sticky", "empty"]:
        (root / d).mkdir()
    os.chmod(root / "sticky", 0o1777)
    os.chmod(root / "d1/d2", 0o2750)

    put("empty.txt", b"")
    put("small.txt", b"hello riverfs\n")
    put("d1/d2/d3/deep.bin", data(1, 1000), 0o600)
    # several 4 MiB blocks, ending inside a block
    put("blocks.bin", big_data(2, 3 * 4 * MiB + 12345))
    # crosses the 64 MiB chunk boundary
    put("chunks.bin", big_data(3, CHUNK + 5 * MiB + 7), 0o640)
    put("setuid", b"#!/bin/sh\n", 0o4755)
    put("setgid", b"x", 0o2711)
    put("nomode", b"secret", 0o000)

    # sparse: holes, data at 1 MiB, straddling the chunk boundary, near the end
    sparse = root / "sparse.bin"
    with open(sparse, "wb") as f:
        f.truncate(2 * CHUNK + 3 * MiB)
        f.seek(MiB)
        f.write(b"A" * 1000)
        f.seek(CHUNK - 500)
        f.write(data(4, 1000))
        f.seek(2 * CHUNK + 3 * MiB - 3)
        f.write(b"end")
    expected["sparse.bin"] = None  # compared through the snapshot (too big to hold twice)
    # a file truncated down in the middle of a block, and one truncated up
    put("trunc_down.bin", big_data(5, 5 * MiB))
    os.truncate(root / "trunc_down.bin", 4 * MiB + 99)
    expected["trunc_down.bin"] = expected["trunc_down.bin"][: 4 * MiB + 99]
    put("trunc_up.bin", b"abc")
    os.truncate(root / "trunc_up.bin", 5 * MiB)
    expected["trunc_up.bin"] = b"abc" + bytes(5 * MiB - 3)
    # overwritten in place (later slices win)
    put("overwrite.bin", data(6, 3 * MiB))
    with open(root / "overwrite.bin", "r+b") as f:
        f.seek(MiB - 10)
        f.write(b"Z" * 20)
    exp = bytearray(expected["overwrite.bin"])
    exp[MiB - 10 : MiB + 10] = b"Z" * 20
    expected["overwrite.bin"] = bytes(exp)

    # hard links: one inode, three names in three directories
    put("d1/linked", b"linked content")
    os.link(root / "d1/linked", root / "d1/d2/linked2")
    os.link(root / "d1/linked", root / "sticky/linked3")
    expected["d1/d2/linked2"] = expected["sticky/linked3"] = b"linked content"

    # symlinks: relative, absolute, dangling, to a directory, a long target
    os.symlink("small.txt", root / "link_rel")
    os.symlink("/etc/hostname", root / "link_abs")
    os.symlink("does/not/exist", root / "link_dangling")
    os.symlink("d1/d2", root / "link_dir")
    os.symlink("t" * 4000, root / "link_long")

    # xattrs: on a file, a directory; binary, empty and large values
    os.setxattr(root / "small.txt", "user.text", b"value")
    os.setxattr(root / "small.txt", "user.empty", b"")
    os.setxattr(root / "small.txt", "user.binary", bytes(range(256)))
    os.setxattr(root / "d1", "user.dir", b"on a directory")
    os.setxattr(root / "blocks.bin", "user.large", data(7, 3000))
    os.setxattr(root / "empty.txt", "user.max", data(9, 65536))  # XATTR_SIZE_MAX
    for i in range(100):
        os.setxattr(root / "d1/d2/d3/deep.bin", f"user.k{i:03d}", str(i).encode())
    os.setxattr(root / "empty", "user." + "n" * 250, b"255-byte name")

    # special files, ownership, explicit times
    os.mkfifo(root / "fifo", 0o620)
    os.mknod(root / "chardev", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    os.chown(root / "small.txt", 1234, 5678)
    os.chown(root / "d1/d2/d3", 4321, 8765)
    put("times", b"t")
    os.utime(root / "times", ns=EXPLICIT_TIMES)
    os.utime(root / "d1/d2/d3", ns=(1_000_000_000_000_000_001, 1_100_000_000_000_000_002))

    # names are bytes: non-UTF-8 and 255 bytes long
    weird = os.fsencode(root) + b"/caf\xe9-\xff\xfe"
    with open(weird, "wb") as f:
        f.write(b"latin-1 name")
    with open(os.fsencode(root) + b"/" + b"n" * 255, "wb") as f:
        f.write(b"long name")

    # a directory with many entries (several readdir pages)
    (root / "many").mkdir()
    for i in range(300):
        (root / "many" / f"f{i:04d}").write_bytes(str(i).encode())

    # deleted before unmount: must stay deleted
    put("deleted.bin", data(8, 2 * MiB))
    os.unlink(root / "deleted.bin")
    del expected["deleted.bin"]
    return expected


def first_difference(a: bytes, b: bytes) -> str:
    if len(a) != len(b):
        return f"size {len(a)} != expected {len(b)}"
    i = next(i for i in range(0, len(a), 4096) if a[i : i + 4096] != b[i : i + 4096])
    return f"first differing 4 KiB page at offset {i}"


def assert_contents(root: Path, snap: dict, expected: dict[str, bytes | None]) -> None:
    """Contents as written (by hash from the snapshot); on mismatch, say where."""
    for rel, content in expected.items():
        if content is None:
            continue
        if snap[os.fsencode(rel)]["sha256"] != hashlib.sha256(content).hexdigest():
            got = (root / rel).read_bytes()
            raise AssertionError(f"{rel}: content differs: {first_difference(got, content)}")
    with open(root / "sparse.bin", "rb") as f:
        assert f.read(MiB) == bytes(MiB)
        assert f.read(1000) == b"A" * 1000
        f.seek(CHUNK - 500)
        assert f.read(1000) == data(4, 1000)
        f.seek(2 * CHUNK + 3 * MiB - 4)
        assert f.read() == b"\0end"
    assert os.stat(root / "sparse.bin").st_size == 2 * CHUNK + 3 * MiB


EXPLICIT_TIMES = (1_234_567_890_123_456_789, 987_654_321_987_654_321)


def test_tree_is_identical_after_unmount_and_remount_in_new_process(volume: Volume):
    m = volume.mount()
    expected = build_tree(m.path)
    s = os.stat(m.path / "times")
    assert (s.st_atime_ns, s.st_mtime_ns) == EXPLICIT_TIMES
    before = snapshot(m.path)
    assert_contents(m.path, before, expected)
    times_before = os.stat(m.path / "times")
    counters_before = statfs_counters(m.path)
    pid = m.daemon_pid()
    m.umount()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    # Read everything back from the object store, not from the local block cache.
    shutil.rmtree(volume.cache_dir, ignore_errors=True)

    m2 = remount(volume, m)
    assert m2.daemon_pid() != pid
    times_after = os.stat(m2.path / "times")  # before anything reads it (atime)
    assert (times_after.st_atime_ns, times_after.st_mtime_ns) == (
        times_before.st_atime_ns,
        times_before.st_mtime_ns,
    )
    assert statfs_counters(m2.path) == counters_before, "statfs totals changed over a remount"
    after = snapshot(m2.path)
    assert_same(before, after)
    assert_contents(m2.path, after, expected)
    assert not (m2.path / "deleted.bin").exists()


def test_second_remount_still_identical_after_changes_in_between(volume: Volume):
    """Changes made in a remounted volume persist too (ids/counters continue correctly)."""
    m = volume.mount()
    (m.path / "first").write_bytes(data(10, 5 * MiB))
    (m.path / "dir").mkdir()
    m.umount()
    m = remount(volume, m)
    # new inodes and slices allocated after a remount must not collide with old ones
    for i in range(20):
        (m.path / "dir" / f"n{i}").write_bytes(data(100 + i, 70_000))
    with open(m.path / "first", "r+b") as f:
        f.seek(4 * MiB)
        f.write(b"B" * 1000)
    before = snapshot(m.path)
    inodes = {os.stat(m.path / "dir" / f"n{i}").st_ino for i in range(20)}
    assert len(inodes) == 20 and os.stat(m.path / "first").st_ino not in inodes
    m.umount()
    m = remount(volume, m)
    assert_same(before, snapshot(m.path))
    expected = bytearray(data(10, 5 * MiB))
    expected[4 * MiB : 4 * MiB + 1000] = b"B" * 1000
    assert (m.path / "first").read_bytes() == bytes(expected)
    for i in range(20):
        assert (m.path / "dir" / f"n{i}").read_bytes() == data(100 + i, 70_000)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_fsynced_data_survives_kill9_of_daemon(volume: Volume):
    m = volume.mount()
    (m.path / "dir").mkdir()
    fsync_path(m.path)
    payload = big_data(20, 9 * MiB + 17)
    fd = os.open(m.path / "dir" / "fsynced.bin", os.O_CREAT | os.O_WRONLY, 0o640)
    try:
        # written in several pieces, one out of order, then fsync: all of it must be durable
        os.pwrite(fd, payload[4 * MiB :], 4 * MiB)
        os.pwrite(fd, payload[: 4 * MiB], 0)
        os.fsync(fd)
        fsync_path(m.path / "dir")  # the new directory entry, as POSIX asks
        m.kill9()  # while the file is still open
    finally:
        try:
            os.close(fd)
        except OSError:
            pass  # the connection is gone: close may fail
    assert not is_mounted(m.path)
    m2 = remount(volume, m)
    p = m2.path / "dir" / "fsynced.bin"
    assert os.stat(p).st_size == len(payload)
    assert p.read_bytes() == payload
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640


def test_fsynced_overwrite_and_truncate_survive_kill9(volume: Volume):
    m = volume.mount()
    p = m.path / "f.bin"
    p.write_bytes(data(30, 6 * MiB))
    fd = os.open(p, os.O_WRONLY)
    try:
        os.pwrite(fd, b"X" * 4096, 4 * MiB - 2048)  # across a block boundary
        os.ftruncate(fd, 5 * MiB + 3)
        os.fsync(fd)
        m.kill9()
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    expected = bytearray(data(30, 6 * MiB))
    expected[4 * MiB - 2048 : 4 * MiB + 2048] = b"X" * 4096
    m2 = remount(volume, m)
    assert (m2.path / "f.bin").read_bytes() == bytes(expected[: 5 * MiB + 3])


def test_fsynced_metadata_changes_survive_kill9(volume: Volume):
    m = volume.mount()
    root = m.path
    (root / "a").mkdir()
    (root / "a" / "f").write_bytes(b"content")
    (root / "b").mkdir()
    os.rename(root / "a" / "f", root / "b" / "g")
    os.link(root / "b" / "g", root / "b" / "h")
    os.symlink("b/g", root / "s")
    os.chmod(root / "b" / "g", 0o751)
    os.setxattr(root / "b" / "g", "user.k", b"v")
    os.utime(root / "b" / "g", ns=(5_000_000_007, 6_000_000_009))
    os.rmdir(root / "a")
    for d in (root, root / "b"):
        fsync_path(d)
    fsync_path(root / "b" / "g")
    before = snapshot(root)
    m.kill9()
    m2 = remount(volume, m)
    assert_same(before, snapshot(m2.path))


def test_closed_file_data_survives_kill9_without_fsync(volume: Volume):
    """close() returns only once the data is in the store and committed (no --writeback)."""
    m = volume.mount()
    payloads = {f"closed{i}.bin": big_data(40 + i, (i + 1) * 3 * MiB + i) for i in range(3)}
    payloads["tiny"] = b"t"
    for name, payload in payloads.items():
        with open(m.path / name, "wb") as f:
            f.write(payload)
    m.kill9()
    m2 = remount(volume, m)
    for name, payload in payloads.items():
        assert (m2.path / name).read_bytes() == payload, f"{name} lost data after kill -9"


def nonzero_data(seed: int, size: int) -> bytes:
    """Pseudo-random bytes without any zero byte (zeros then mean 'hole', never data)."""
    return big_data(seed, size).replace(b"\0", b"\1")


def test_kill9_during_unsynced_writes_leaves_no_garbage(volume: Volume):
    """Unsynced data may be lost in a crash, but what remains is never wrong: each byte of the
    file after remount is either the byte written there or a zero of a hole, and the fsynced
    file next to it is complete."""
    m = volume.mount()
    synced = nonzero_data(60, 6 * MiB)
    with open(m.path / "synced", "wb") as f:
        f.write(synced)
        f.flush()
        os.fsync(f.fileno())
    payload = nonzero_data(61, 24 * MiB + 5)
    fd = os.open(m.path / "unsynced", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        fsync_path(m.path)  # the entry itself is durable; its data is not synced
        for off in range(0, len(payload), MiB):
            os.pwrite(fd, payload[off : off + MiB], off)
        m.kill9()  # no fsync, no close
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    m = remount(volume, m)
    assert (m.path / "synced").read_bytes() == synced
    got = (m.path / "unsynced").read_bytes()
    assert len(got) <= len(payload)
    for off in range(0, len(got), MiB):
        piece = got[off : off + MiB]
        want = payload[off : off + len(piece)]
        if piece != want:
            bad = [i for i, (g, w) in enumerate(zip(piece, want, strict=True)) if g not in (w, 0)]
            assert not bad, f"{len(bad)} garbage bytes from offset {off + bad[0]} after kill -9"


def test_volume_mounts_and_works_after_repeated_kill9(volume: Volume):
    """A crashed session does not block later mounts, and new writes do not clobber old ones."""
    m = volume.mount()
    for round_ in range(3):
        with open(m.path / f"r{round_}", "wb") as f:
            f.write(data(50 + round_, 300_000))
        m.kill9()
        m = remount(volume, m)
        for r in range(round_ + 1):
            assert (m.path / f"r{r}").read_bytes() == data(50 + r, 300_000)


def test_one_pib_sparse_file_persists_with_its_few_stored_bytes(volume: Volume):
    """Costs follow stored bytes, not logical size: a 1 PiB sparse file round-trips quickly."""
    pib = 1 << 50
    m = volume.mount()
    p = m.path / "huge"
    with open(p, "wb") as f:
        f.truncate(pib)
        f.seek(1 << 40)
        f.write(b"middle")
        f.seek(pib - 4)
        f.write(b"tail")
    before = {f: getattr(os.stat(p), f) for f in STAT_FIELDS}
    assert before["st_size"] == pib
    m.umount()
    m = remount(volume, m)
    p = m.path / "huge"
    assert {f: getattr(os.stat(p), f) for f in STAT_FIELDS} == before
    with open(p, "rb") as f:
        assert os.pread(f.fileno(), 10, (1 << 40) - 2) == b"\0\0middle\0\0"
        assert os.pread(f.fileno(), 8, pib - 8) == b"\0\0\0\0tail"
        assert os.pread(f.fileno(), 4096, 12_345_678_901_234) == bytes(4096)
        assert os.pread(f.fileno(), 10, pib) == b""
    os.truncate(p, (1 << 40) + 3)
    m.umount()
    m = remount(volume, m)
    p = m.path / "huge"
    assert os.stat(p).st_size == (1 << 40) + 3
    with open(p, "rb") as f:
        assert os.pread(f.fileno(), 10, (1 << 40) - 2) == b"\0\0mid"
    os.unlink(p)
    assert os.listdir(m.path) == []


def stored_objects(volume: Volume) -> list[Path]:
    """Block objects in the file:// store (everything but the settings copy)."""
    store = Path(volume.storage_url.removeprefix("file://"))
    return sorted(p for p in store.rglob("*") if p.is_file() and p.name != "riverfs.json")


def used_inodes(root: Path) -> int:
    s = os.statvfs(root)
    return s.f_files - s.f_ffree


def test_removed_truncated_and_replaced_data_leaves_no_objects_in_store(volume: Volume):
    m = volume.mount()
    assert stored_objects(volume) == []
    (m.path / "unlinked").write_bytes(big_data(70, 9 * MiB))
    (m.path / "truncated").write_bytes(big_data(71, 5 * MiB))
    (m.path / "replaced").write_bytes(big_data(72, 5 * MiB))
    (m.path / "renamed_over").write_bytes(big_data(73, MiB))
    (m.path / "open_unlinked").write_bytes(big_data(74, MiB))
    (m.path / "dir").mkdir()
    (m.path / "dir" / "in_dir").write_bytes(b"x" * 100)
    assert stored_objects(volume)

    os.unlink(m.path / "unlinked")
    os.truncate(m.path / "truncated", 0)
    (m.path / "replaced").write_bytes(b"")  # O_TRUNC
    (m.path / "src").write_bytes(b"")
    os.rename(m.path / "src", m.path / "renamed_over")
    with open(m.path / "open_unlinked", "rb") as f:
        os.unlink(m.path / "open_unlinked")
        assert f.read() == big_data(74, MiB)  # still readable until the last close
    os.unlink(m.path / "dir" / "in_dir")
    os.rmdir(m.path / "dir")
    # Only empty files remain: every block object is deleted (deferred, so poll).
    wait_until(lambda: stored_objects(volume) == [], timeout=30)
    m.umount()
    m = remount(volume, m)
    assert sorted(os.listdir(m.path)) == ["renamed_over", "replaced", "truncated"]
    assert stored_objects(volume) == []


def test_file_unlinked_while_open_is_freed_after_kill9_at_next_mount(volume: Volume):
    m = volume.mount()
    (m.path / "keep").write_bytes(b"kept")
    objects_before = stored_objects(volume)
    inodes_before = used_inodes(m.path)
    fd = os.open(m.path / "doomed", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, big_data(80, 6 * MiB))
        os.fsync(fd)
        os.unlink(m.path / "doomed")
        assert len(stored_objects(volume)) > len(objects_before)  # kept while open
        m.kill9()  # the crashed session still holds the unlinked inode
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    m = remount(volume, m)
    # The new mount frees what the dead session held: objects and the inode.
    wait_until(lambda: stored_objects(volume) == objects_before, timeout=30)
    assert used_inodes(m.path) == inodes_before
    assert os.listdir(m.path) == ["keep"]
    out = run_cli("status", volume.meta_url).stdout
    assert out.count(str(m.path)) == 1, f"the dead session is still listed:\n{out}"


def test_mmap_writes_survive_kill9_after_msync_and_fsync(volume: Volume):
    m = volume.mount()
    p = m.path / "mapped"
    size = 6 * MiB
    with open(p, "wb") as f:
        f.truncate(size)
    expected = bytearray(size)
    fd = os.open(p, os.O_RDWR)
    try:
        with mmap.mmap(fd, size) as mm:
            for off, chunk in [(100, b"hello"), (4 * MiB - 2, b"across"), (size - 5, b"tail!")]:
                mm[off : off + len(chunk)] = chunk
                expected[off : off + len(chunk)] = chunk
            mm.flush()  # msync(MS_SYNC)
        os.fsync(fd)
        m.kill9()
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    m = remount(volume, m)
    assert (m.path / "mapped").read_bytes() == bytes(expected)


def test_concurrent_writers_fsynced_data_survives_kill9(volume: Volume):
    """Eight threads write at once: four to their own files, four to disjoint regions of one
    shared file through their own descriptors. After every fsync returned, kill -9: nothing
    of it is lost, and no region overwrote another."""
    m = volume.mount()
    region = 3 * MiB + 4096 + 7  # not block aligned: neighbouring regions share blocks
    piece = 64 * 1024 + 3

    def payload(i: int) -> bytes:
        return nonzero_data(90 + i, region)

    def writer(i: int) -> None:
        shared = i >= 4
        path = m.path / ("shared" if shared else f"own{i}")
        base = (i - 4) * region if shared else 0
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            data_i = payload(i)
            # back to front, so every pwrite is its own slice
            for off in reversed(range(0, region, piece)):
                os.pwrite(fd, data_i[off : off + piece], base + off)
            os.fsync(fd)
        finally:
            os.close(fd)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(writer, range(8)))
    fsync_path(m.path)
    m.kill9()
    m = remount(volume, m)
    for i in range(4):
        got = (m.path / f"own{i}").read_bytes()
        assert got == payload(i), f"own{i}: {first_difference(got, payload(i))}"
    expected = b"".join(payload(i) for i in range(4, 8))
    got = (m.path / "shared").read_bytes()
    assert got == expected, f"shared: {first_difference(got, expected)}"


def test_many_overlapping_writes_and_truncates_read_back_identically_after_remount(
    volume: Volume,
):
    """Thousands of small overlapping writes (many slices per chunk, later ones win), with
    truncates and reopenings in between, read back like a bytearray model, also from a new
    daemon that rebuilds the file from its stored slices."""
    rng = random.Random(1234)
    m = volume.mount()
    p = m.path / "fragmented"
    model = bytearray()
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        for step in range(2000):
            if step % 250 == 249:  # commit point: close and reopen
                os.close(fd)
                fd = os.open(p, os.O_RDWR)
            if rng.random() < 0.02:
                size = rng.randrange(0, 5 * MiB)
                os.ftruncate(fd, size)
                model = model[:size] + bytes(max(0, size - len(model)))
                continue
            off = rng.randrange(0, 5 * MiB)
            buf = rng.randbytes(rng.randrange(1, 20_000))
            os.pwrite(fd, buf, off)
            if off > len(model):
                model += bytes(off - len(model))
            model[off : off + len(buf)] = buf
        assert os.fstat(fd).st_size == len(model)
        got = os.pread(fd, len(model) + 1, 0)
        assert got == model, f"before remount: {first_difference(got, bytes(model))}"
    finally:
        os.close(fd)
    m.umount()
    shutil.rmtree(volume.cache_dir, ignore_errors=True)
    m = remount(volume, m)
    got = (m.path / "fragmented").read_bytes()
    assert got == model, f"after remount: {first_difference(got, bytes(model))}"
