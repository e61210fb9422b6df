"""Online compaction through real mounts (vfs/compactor.py): random rewrites compared with a
local model while chunks are rewritten in the background, on one mount and across two;
truncates and copies racing it; a crash in the middle; a write-back volume.

Reads go through O_DIRECT so that each one reaches riverfs (the page cache would otherwise
answer from what the writes left there)."""

from __future__ import annotations

import mmap
import os
import random
import sqlite3
import time
from pathlib import Path

from support import Volume, run_cli, wait_until

KIB = 1 << 10
MIB = 1 << 20
RECORD = 24  # bytes of one slice record (meta/slices.py)
FAST = ("--compact-slices", "4", "--compact-delay", "0.5", "--compact-rate", "0")


def db(vol: Volume) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{vol.root / 'meta.db'}?mode=ro", uri=True, timeout=5)


def chunk_slices(vol: Volume, inode: int) -> list[tuple[int, int]]:
    """(records, distinct data slices) of each chunk of `inode`."""
    with db(vol) as c:
        rows = c.execute("SELECT slices FROM chunks WHERE inode = ? ORDER BY idx", (inode,))
        out = []
        for (blob,) in rows.fetchall():
            ids = {int.from_bytes(blob[i + 4 : i + 12], "little") for i in range(0, len(blob), 24)}
            out.append((len(blob) // RECORD, len(ids - {0})))
        return out


def store_bytes(vol: Volume) -> int:
    """Bytes of the block objects in the store (some may go while they are counted)."""
    total = 0
    for p in (vol.root / "store" / "chunks").rglob("*_*"):
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total


def direct_pread(fd: int, size: int) -> bytes:
    """The first `size` bytes of a file opened with O_DIRECT (read by riverfs itself)."""
    buf = mmap.mmap(-1, -(-max(size, 1) // 4096) * 4096)  # page-aligned
    try:
        n = os.preadv(fd, [buf], 0)
        return bytes(buf[: min(n, size)])
    finally:
        buf.close()


def direct_read(path: Path, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        return direct_pread(fd, size)
    finally:
        os.close(fd)


def patch(fd: int, model: bytearray, rng: random.Random, most: int = 16 * KIB) -> None:
    """One random pwrite + fsync, applied to the model too."""
    at = rng.randrange(0, len(model))
    data = os.urandom(rng.randrange(1, most))
    os.pwrite(fd, data, at)
    os.fsync(fd)
    model[at : at + len(data)] = data  # (grows the model as the file grows)


def settled(vol: Volume, inode: int, min_slices: int, size: int) -> bool:
    """Compaction has caught up: each chunk of the file names fewer small slices (showing
    under 1 MiB, a quarter block) than the threshold, besides at most one larger slice per
    MiB it shows."""
    return all(n < min_slices + -(-size // MIB) for _, n in chunk_slices(vol, inode))


def fsck_clean(vol: Volume) -> None:
    out = run_cli("fsck", vol.meta_url, "--check-data").stdout
    assert out.strip().endswith("clean"), out


def test_random_rewrites_read_exactly_while_compaction_bounds_slices_and_store(volume):
    m = volume.mount(None, *FAST)
    path = m.path / "f"
    size = 2 * MIB
    model = bytearray(os.urandom(size))
    path.write_bytes(model)
    inode = os.stat(path).st_ino
    rng = random.Random(1)
    most = 0
    fd = os.open(path, os.O_RDWR)
    try:
        for i in range(600):
            patch(fd, model, rng)
            if i % 20 == 0:
                assert direct_read(path, len(model) + 1) == model, i
                most = max(most, *(n for _, n in chunk_slices(volume, inode)))
    finally:
        os.close(fd)
    assert most <= 100, most  # 600 commits, without compaction 600 slices
    wait_until(lambda: settled(volume, inode, 4, len(model)), timeout=10)
    assert direct_read(path, len(model) + 1) == model
    live = len(model)
    wait_until(lambda: store_bytes(volume) <= 3 * live, timeout=10)  # the old slices deleted
    wait_until(lambda: os.stat(path).st_blocks * 512 == -(-live // 512) * 512, timeout=5)
    m.umount()
    fsck_clean(volume)
    m = volume.mount()
    assert direct_read(m.path / "f", len(model) + 1) == model


def test_two_mounts_writing_and_reading_one_file_while_both_compact_never_see_a_wrong_byte(
    volume,
):
    mounts = [volume.mount(None, *FAST), volume.mount(None, *FAST)]
    name = "shared"
    model = bytearray(os.urandom(3 * MIB))
    (mounts[0].path / name).write_bytes(model)
    inode = os.stat(mounts[0].path / name).st_ino
    rng = random.Random(2)
    for turn in range(6):
        writer, reader = mounts[turn % 2], mounts[1 - turn % 2]
        fd = os.open(writer.path / name, os.O_RDWR)
        try:
            for _ in range(40):
                patch(fd, model, rng)
        finally:
            os.close(fd)
        # The writer's compactor now rewrites the chunk; both mounts read meanwhile, the
        # other one also through a descriptor kept open (its chunk views must follow the
        # swaps it hears of: the slices they named are deleted soon after).
        kept = os.open(reader.path / name, os.O_RDONLY | os.O_DIRECT)
        try:
            deadline = time.monotonic() + 30  # a rewrite or two; generous for a loaded machine
            reads = 0
            while True:
                assert direct_pread(kept, len(model) + 1) == model, (turn, reads)
                for m in (reader, writer):
                    assert direct_read(m.path / name, len(model) + 1) == model, (turn, reads)
                reads += 1
                if settled(volume, inode, 4, len(model)) or time.monotonic() > deadline:
                    break
            time.sleep(1.5)  # the replaced slices are deleted (0.5 s, then the deleter)
            assert direct_pread(kept, len(model) + 1) == model, turn
        finally:
            os.close(kept)
        assert settled(volume, inode, 4, len(model)), chunk_slices(volume, inode)
        with open(reader.path / name, "rb") as f:  # buffered, through the kernel's cache
            assert f.read() == model
    for m in mounts:
        m.umount()
    fsck_clean(volume)


def test_a_chunk_another_mount_fragmented_ends_compacted_after_one_write_here(volume):
    # Mount 0 does not compact (as a mount whose compactor fell behind its commits): it
    # leaves patches of spread sizes. One commit of mount 1 makes its compactor look at the
    # chunk: it must end compacted, not merge the two smallest and stop (the sizes a failed
    # run of the test above left: 397 + 1532 merged, 5374 over twice that, 13 slices left).
    plain, compacting = volume.mount(None, "--compact-slices", "0"), volume.mount(None, *FAST)
    name = "patched"
    model = bytearray(os.urandom(3 * MIB))
    (plain.path / name).write_bytes(model)
    inode = os.stat(plain.path / name).st_ino

    def pwrite(m, at: int, n: int) -> None:
        fd = os.open(m.path / name, os.O_RDWR)
        try:
            data = os.urandom(n)
            os.pwrite(fd, data, at)
            os.fsync(fd)
            model[at : at + n] = data
        finally:
            os.close(fd)

    sizes = [397, 1532, 5374, 7747, 7978, 8492, 11263, 12797, 12918, 13737, 14327]
    for i, n in enumerate(sizes):
        pwrite(plain, i * 256 * KIB, n)
    before = chunk_slices(volume, inode)[0][1]
    assert before == len(sizes) + 1  # nothing compacted
    pwrite(compacting, 3 * MIB - 100, 100)
    wait_until(lambda: settled(volume, inode, 4, len(model)), timeout=10)
    for m in (plain, compacting):
        assert direct_read(m.path / name, len(model) + 1) == model
    plain.umount()
    compacting.umount()
    fsck_clean(volume)


def test_truncates_racing_compaction_never_bring_back_bytes_cut_off(volume):
    m = volume.mount(None, "--compact-slices", "2", "--compact-delay", "0.2", "--compact-rate", "0")
    path = m.path / "t"
    model = bytearray(os.urandom(MIB))
    path.write_bytes(model)
    inode = os.stat(path).st_ino
    rng = random.Random(3)
    fd = os.open(path, os.O_RDWR)
    try:
        for i in range(200):
            patch(fd, model, rng, most=32 * KIB)
            if i % 4 == 3:  # shrink, then grow again: the cut-off bytes must read as zeros
                short = rng.randrange(0, len(model))
                os.ftruncate(fd, short)
                del model[short:]
                long = short + rng.randrange(0, MIB)
                os.ftruncate(fd, long)
                model.extend(bytes(long - short))
            if i % 10 == 0:
                assert direct_read(path, len(model) + 1) == model, i
    finally:
        os.close(fd)
    wait_until(lambda: settled(volume, inode, 2, len(model)), timeout=10)
    assert direct_read(path, len(model) + 1) == model
    m.umount()
    fsck_clean(volume)
    m = volume.mount()
    assert direct_read(m.path / "t", len(model) + 1) == model


def test_slices_shared_by_copy_file_range_survive_compaction_of_the_source(volume):
    m = volume.mount(None, *FAST)
    a, b = m.path / "a", m.path / "b"
    model = bytearray(os.urandom(MIB))
    a.write_bytes(model)
    rng = random.Random(4)
    fd = os.open(a, os.O_RDWR)
    try:
        for _ in range(3):  # three slices: below the threshold, nothing compacted yet
            patch(fd, model, rng)
        out = os.open(b, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            assert os.copy_file_range(fd, out, len(model), 0, 0) == len(model)
        finally:
            os.close(out)
        copy = bytes(model)
        with db(volume) as c:
            assert c.execute("SELECT COUNT(*) FROM slice_refs").fetchone()[0] >= 1
        for _ in range(30):  # compacts a, which lets go of the shared slices
            patch(fd, model, rng)
    finally:
        os.close(fd)
    inode_a = os.stat(a).st_ino
    wait_until(lambda: settled(volume, inode_a, 4, len(model)), timeout=10)
    assert direct_read(a, len(model) + 1) == model
    os.unlink(a)
    wait_until(lambda: store_bytes(volume) <= 2 * len(copy), timeout=15)  # a's data deleted
    assert direct_read(b, len(copy) + 1) == copy
    m.umount()
    fsck_clean(volume)
    m = volume.mount()
    assert (m.path / "b").read_bytes() == copy


def test_kill_9_during_a_compaction_loses_nothing(volume):
    m = volume.mount(None, "--compact-slices", "0")
    path = m.path / "k"
    model = bytearray()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for i in range(96):  # 96 slices of 64 KiB: 6 MiB, two blocks once compacted
            piece = os.urandom(64 * KIB)
            os.pwrite(fd, piece, i * 64 * KIB)
            os.fsync(fd)
            model += piece
    finally:
        os.close(fd)
    m.umount()
    store = volume.root / "store" / "chunks"
    objects = len(list(store.rglob("*_*")))
    # A slow compaction (1 MiB/s: its first block is stored after 4 s, the second 2 s later),
    # killed between the two.
    m = volume.mount(None, "--compact-slices", "4", "--compact-rate", "1M")
    with open(m.path / "k", "r+b") as f:  # one commit of this mount: the compactor hears of it
        f.seek(5)
        f.write(b"!")
        model[5:6] = b"!"
        f.flush()
        os.fsync(f.fileno())

    def half_written() -> bool:
        with db(volume) as c:
            leased = c.execute("SELECT COUNT(*) FROM leases WHERE name LIKE 'compact:%'")
            return leased.fetchone()[0] > 0 and len(list(store.rglob("*_*"))) > objects

    wait_until(half_written, timeout=15)
    m.kill9()
    with db(volume) as c:  # the new slice waits in the delete queue, due in an hour
        assert c.execute("SELECT COUNT(*) FROM pending_deletes").fetchone()[0] == 1
        assert len(c.execute("SELECT slices FROM chunks").fetchone()[0]) // RECORD == 97
    m = volume.mount(None, "--compact-slices", "0")
    assert direct_read(m.path / "k", len(model) + 1) == model
    m.umount()
    fsck_clean(volume)
    gc = run_cli("gc", volume.meta_url).stdout
    assert "unreferenced:         0" in gc, gc  # the half-written slice is queued, not leaked


def test_compaction_on_a_write_back_mount_reads_exactly_and_leaves_the_volume_clean(volume):
    m = volume.mount(None, "--writeback", *FAST)
    path = m.path / "w"
    model = bytearray(os.urandom(MIB))
    path.write_bytes(model)
    inode = os.stat(path).st_ino
    rng = random.Random(6)
    fd = os.open(path, os.O_RDWR)
    try:
        for i in range(150):
            patch(fd, model, rng)
            if i % 25 == 0:
                assert direct_read(path, len(model) + 1) == model, i
    finally:
        os.close(fd)
    wait_until(lambda: settled(volume, inode, 4, len(model)), timeout=10)
    assert direct_read(path, len(model) + 1) == model
    m.umount()  # waits for every upload
    fsck_clean(volume)
    m = volume.mount()
    assert direct_read(m.path / "w", len(model) + 1) == model
