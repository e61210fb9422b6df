"""vfs/ranges.py, meta/ranges.py, meta/refs.py: fallocate, SEEK_DATA/SEEK_HOLE and
copy_file_range through the VFS on a memory store, compared with a bytes model; shared slices
(copies) against the deleter, gc, fsck, compaction and dump/load."""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit_helpers import FILE, ROOT, async_test, keys, new_meta, run, sql_all, vfs_env

from riverfs.chunk.block import CHUNK_SIZE
from riverfs.errors import FSError
from riverfs.meta import AttrChange, dump, open_meta
from riverfs.meta.ranges import pieces
from riverfs.meta.slices import Slice
from riverfs.tools.fsck import check_volume
from riverfs.tools.gc import collect_garbage
from riverfs.vfs.compact import compact_chunks
from riverfs.vfs.volume import Volume

KIB = 1 << 10
MIB = 1 << 20
BS = 64 * KIB
G = 4096  # SEEK_DATA / SEEK_HOLE granularity

KEEP = 0x01
PUNCH = 0x02
ZERO = 0x10
SEEK_DATA, SEEK_HOLE = os.SEEK_DATA, os.SEEK_HOLE


def errno_of(excinfo) -> int:
    return excinfo.value.errno


# ---- the model: a file's bytes and which of them are written data --------------------------


class Model:
    """A file as bytes, and a flag per byte: written data (1) or a hole (0)."""

    def __init__(self) -> None:
        self.content = bytearray()
        self.data = bytearray()

    @property
    def size(self) -> int:
        return len(self.content)

    def resize(self, n: int) -> None:
        if n < self.size:
            del self.content[n:]
            del self.data[n:]
        else:
            self.content.extend(bytes(n - self.size))
            self.data.extend(bytes(n - len(self.data)))

    def put(self, off: int, content: bytes, data: bytes) -> None:
        self.resize(max(self.size, off + len(content)))
        self.content[off : off + len(content)] = content
        self.data[off : off + len(data)] = data

    def zero(self, lo: int, hi: int) -> None:
        hi = min(hi, self.size)
        if lo < hi:
            self.content[lo:hi] = bytes(hi - lo)
            self.data[lo:hi] = bytes(hi - lo)

    def fallocate(self, off: int, n: int, mode: int) -> None:
        if not mode & KEEP:
            self.resize(max(self.size, off + n))
        if mode & (PUNCH | ZERO):
            self.zero(off, off + n)

    def seek(self, off: int, whence: int) -> int:
        """ext4's answer at 4 KiB blocks: a block with any data byte is data."""
        if off >= self.size:
            raise FSError(errno.ENXIO)
        blocks = -(-self.size // G)

        def is_data(k: int) -> bool:
            return any(self.data[k * G : (k + 1) * G])

        k = off // G
        if whence == SEEK_DATA:
            if is_data(k):
                return off
            for j in range(k + 1, blocks):
                if is_data(j):
                    return j * G
            raise FSError(errno.ENXIO)
        if not is_data(k):
            return off
        for j in range(k + 1, blocks):
            if not is_data(j):
                return j * G
        return self.size


async def pieces_bytes(env, inode: int, size: int) -> int:
    """Bytes of data and allocated space the slice map shows (at most what `stored` says)."""
    total = 0
    rows = await sql_all(env.meta, "SELECT idx FROM chunks WHERE inode = ?", inode)
    for (idx,) in rows:
        records = await env.meta.read_chunk(inode, idx)
        total += sum(p.length for p in pieces(records, size - idx * CHUNK_SIZE))
    return total


def volume_of(env) -> Volume:
    return Volume(env.meta, env.vfs.settings, env.store)


async def assert_clean(env) -> None:
    """fsck finds nothing wrong and gc no garbage (no object is unreferenced)."""
    report = await check_volume(volume_of(env))
    assert report.clean, (report.problems, report.damaged)
    garbage = await collect_garbage(volume_of(env), min_age=0)
    assert garbage.leaked == 0, garbage.sample


# ---- random operations against the model ----------------------------------------------------

WINDOW = 600 * KIB
MODES = [0, KEEP, PUNCH | KEEP, ZERO, ZERO | KEEP]


def ops_strategy():
    f = st.integers(0, 1)
    off = st.integers(0, WINDOW)
    write = st.tuples(st.just("write"), f, off, st.integers(1, 150 * KIB), st.integers(0, 99))
    fallocate = st.tuples(
        st.just("fallocate"), f, off, st.integers(1, 200 * KIB), st.sampled_from(MODES)
    )
    copy = st.tuples(st.just("copy"), f, off, f, off, st.integers(0, 250 * KIB))
    seek = st.tuples(st.just("seek"), f, off, st.sampled_from([SEEK_DATA, SEEK_HOLE]))
    truncate = st.tuples(st.just("truncate"), f, off)
    read = st.tuples(st.just("read"), f, off, st.integers(1, 300 * KIB))
    other = st.sampled_from([("flush", 0), ("flush", 1), ("drain",)])
    return st.lists(
        st.one_of(write, write, fallocate, fallocate, copy, copy, seek, truncate, read, other),
        min_size=1,
        max_size=14,
    )


@pytest.mark.parametrize("base", [0, CHUNK_SIZE - 300 * KIB], ids=["start", "chunk-boundary"])
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(ops=ops_strategy())
def test_random_fallocate_seek_and_copies_match_a_bytes_model(base, ops):
    async def scenario(directory: Path):
        async with vfs_env(directory, block_size=BS) as env:
            vfs = env.vfs
            files = [await env.create(b"a"), await env.create(b"b")]
            models = [Model(), Model()]
            for op in ops:
                kind = op[0]
                if kind == "write":
                    _, i, rel, n, seed = op
                    chunk = random.Random(seed).randbytes(n)
                    await vfs.write(files[i][0], base + rel, chunk)
                    models[i].put(base + rel, chunk, b"\1" * n)
                elif kind == "fallocate":
                    _, i, rel, n, mode = op
                    await vfs.fallocate(files[i][0], base + rel, n, mode)
                    models[i].fallocate(base + rel, n, mode)
                elif kind == "copy":
                    _, i, rel_in, j, rel_out, n = op
                    src, dst = models[i], models[j]
                    off_in, off_out = base + rel_in, base + rel_out
                    count = max(0, min(n, src.size - off_in))
                    if i == j and count and off_out + count > off_in and off_out < off_in + count:
                        with pytest.raises(FSError) as e:
                            await vfs.copy_range(files[i][0], off_in, files[j][0], off_out, n)
                        assert errno_of(e) == errno.EINVAL
                        continue
                    got = await vfs.copy_range(files[i][0], off_in, files[j][0], off_out, n)
                    assert got == count
                    if count:
                        dst.put(
                            off_out,
                            bytes(src.content[off_in : off_in + count]),
                            bytes(src.data[off_in : off_in + count]),
                        )
                elif kind == "seek":
                    _, i, rel, whence = op
                    try:
                        want = models[i].seek(base + rel, whence)
                    except FSError as e:
                        with pytest.raises(FSError) as got:
                            await vfs.lseek(files[i][0], base + rel, whence)
                        assert errno_of(got) == e.errno
                    else:
                        assert await vfs.lseek(files[i][0], base + rel, whence) == want
                elif kind == "truncate":
                    _, i, rel = op
                    await vfs.setattr(files[i][1], AttrChange(), base + rel)
                    models[i].resize(base + rel)
                elif kind == "read":
                    _, i, rel, n = op
                    off = base + rel
                    got = await vfs.read(files[i][0], off, n)
                    assert got == bytes(models[i].content[off : off + n])
                elif kind == "flush":
                    await vfs.flush(files[op[1]][0])
                else:
                    await vfs.deleter.drain()
            for (fh, inode), model in zip(files, models, strict=True):
                await vfs.flush(fh)
                attr = await vfs.getattr(inode)
                assert attr.size == model.size
                assert await vfs.read(fh, 0, model.size + 10) == bytes(model.content)
                shown = await pieces_bytes(env, inode, model.size)
                assert shown <= attr.stored <= model.size
                assert attr.stored > 0 or not any(model.data)
            await vfs.deleter.drain()
            await assert_clean(env)
            for name, (fh, _) in zip((b"a", b"b"), files, strict=True):
                await vfs.release(fh)
                await vfs.unlink(ROOT, name)
            await vfs.deleter.drain()
            assert await keys(env.store, "chunks/") == []  # every slice, shared or not
            assert await sql_all(env.meta, "SELECT * FROM slice_refs") == []
            assert await sql_all(env.meta, "SELECT * FROM pending_block_deletes") == []

    with tempfile.TemporaryDirectory() as tmp:
        run(scenario(Path(tmp)))


# ---- fallocate ------------------------------------------------------------------------------


@async_test
async def test_fallocate_mode_0_grows_the_file_with_zeros_counted_in_st_blocks(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, inode = await env.create(b"f")
        await vfs.write(fh, 0, b"x" * 10)
        await vfs.fallocate(fh, 0, MIB, 0)  # the pending write is committed first
        attr = await vfs.getattr(inode)
        assert (attr.size, attr.stored) == (MIB, MIB)
        assert await vfs.read(fh, 0, MIB) == b"x" * 10 + bytes(MIB - 10)
        assert await vfs.lseek(fh, 0, SEEK_DATA) == 0
        assert await vfs.lseek(fh, 0, SEEK_HOLE) == G  # allocated space is a hole, as on ext4
        with pytest.raises(FSError) as e:
            await vfs.lseek(fh, G, SEEK_DATA)
        assert errno_of(e) == errno.ENXIO
        await vfs.fallocate(fh, 0, MIB, 0)  # again: nothing more to allocate
        assert (await vfs.getattr(inode)).stored == MIB
        await vfs.fallocate(fh, 512 * KIB, MIB, 0)
        attr = await vfs.getattr(inode)
        assert (attr.size, attr.stored) == (MIB + 512 * KIB, MIB + 512 * KIB)
        assert await keys(env.store, "chunks/") != []  # the one written block, nothing more
        assert len(await keys(env.store, "chunks/")) == 1


@async_test
async def test_fallocate_keep_size_changes_no_size_and_allocates_only_within_it(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, inode = await env.create(b"f")
        await vfs.setattr(inode, AttrChange(), 100 * KIB)
        before = await vfs.getattr(inode)
        await vfs.fallocate(fh, 0, 300 * KIB, KEEP)
        attr = await vfs.getattr(inode)
        assert (attr.size, attr.stored) == (100 * KIB, 100 * KIB)
        assert attr.mtime == before.mtime and attr.ctime >= before.ctime
        await vfs.fallocate(fh, 200 * KIB, 10, KEEP)  # wholly beyond the end: nothing
        assert (await vfs.getattr(inode)).size == 100 * KIB
        assert await vfs.read(fh, 0, MIB) == bytes(100 * KIB)


@async_test
async def test_punch_hole_makes_a_real_hole_and_deletes_the_blocks_inside_it(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, inode = await env.create(b"f")
        payload = os.urandom(16 * BS)  # one slice of 16 blocks
        await vfs.write(fh, 0, payload)
        await vfs.flush(fh)
        assert len(await keys(env.store, "chunks/")) == 16
        await vfs.fallocate(fh, 4 * BS + 100, 8 * BS - 200, PUNCH | KEEP)  # blocks 5-10 whole
        want = payload[: 4 * BS + 100] + bytes(8 * BS - 200) + payload[12 * BS - 100 :]
        assert await vfs.read(fh, 0, 16 * BS) == want
        attr = await vfs.getattr(inode)
        assert (attr.size, attr.stored) == (16 * BS, 8 * BS + 200)
        await vfs.deleter.drain()
        assert len(await keys(env.store, "chunks/")) == 10  # 4 and 11 still hold data
        assert await vfs.read(fh, 0, 16 * BS) == want
        assert await vfs.lseek(fh, 0, SEEK_HOLE) == 4 * BS + G  # the block holding byte 100
        assert await vfs.lseek(fh, 4 * BS + G, SEEK_DATA) == 12 * BS - G
        await assert_clean(env)
        await vfs.fallocate(fh, 0, 16 * BS, PUNCH | KEEP)  # everything: the slice goes
        assert await env.meta.read_chunk(inode, 0) == []
        assert (await vfs.getattr(inode)).stored == 0
        await vfs.deleter.drain()
        assert await keys(env.store, "chunks/") == []
        assert await vfs.read(fh, 0, 16 * BS) == bytes(16 * BS)
        with pytest.raises(FSError) as e:
            await vfs.lseek(fh, 0, SEEK_DATA)
        assert errno_of(e) == errno.ENXIO
        assert await vfs.lseek(fh, 0, SEEK_HOLE) == 0
        await assert_clean(env)


@async_test
async def test_punch_hole_beyond_the_end_changes_nothing(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        fh, inode = await env.create(b"f")
        await env.vfs.write(fh, 0, b"abc")
        await env.vfs.flush(fh)
        before = await env.vfs.getattr(inode)
        await env.vfs.fallocate(fh, 3, 100, PUNCH | KEEP)
        assert await env.vfs.getattr(inode) == before
        await env.vfs.fallocate(fh, 1, 100, PUNCH | KEEP)  # cut at the end, no size change
        assert (await env.vfs.getattr(inode)).size == 3
        assert await env.vfs.read(fh, 0, 10) == b"a\0\0"


@async_test
async def test_zero_range_reads_zeros_keeps_space_and_grows_unless_keep_size(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, inode = await env.create(b"f")
        payload = os.urandom(4 * BS)
        await vfs.write(fh, 0, payload)
        await vfs.fallocate(fh, BS, 2 * BS, ZERO)
        assert await vfs.read(fh, 0, 4 * BS) == payload[:BS] + bytes(2 * BS) + payload[3 * BS :]
        attr = await vfs.getattr(inode)
        assert (attr.size, attr.stored) == (4 * BS, 4 * BS)  # allocated zeros still count
        assert await vfs.lseek(fh, 0, SEEK_HOLE) == BS
        assert await vfs.lseek(fh, BS, SEEK_DATA) == 3 * BS
        await vfs.fallocate(fh, 3 * BS, 2 * BS, ZERO | KEEP)
        assert (await vfs.getattr(inode)).size == 4 * BS
        await vfs.fallocate(fh, 3 * BS, 2 * BS, ZERO)
        attr = await vfs.getattr(inode)
        assert (attr.size, attr.stored) == (5 * BS, 5 * BS)
        assert await vfs.read(fh, 0, 8 * BS) == payload[:BS] + bytes(4 * BS)
        await vfs.deleter.drain()
        assert len(await keys(env.store, "chunks/")) == 1  # blocks 1-3 went
        await assert_clean(env)


@async_test
async def test_fallocate_errors_are_those_of_linux(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, inode = await env.create(b"f")
        cases = [
            ((-1, 10, 0), errno.EINVAL),
            ((0, 0, 0), errno.EINVAL),
            ((0, -5, 0), errno.EINVAL),
            ((0, 10, PUNCH), errno.EOPNOTSUPP),  # punch without KEEP_SIZE
            ((0, 10, 0x08), errno.EOPNOTSUPP),  # COLLAPSE_RANGE
            ((0, 10, 0x20), errno.EOPNOTSUPP),  # INSERT_RANGE
            ((0, 10, 0x40), errno.EOPNOTSUPP),  # UNSHARE_RANGE
            ((0, 10, 0x04), errno.EOPNOTSUPP),  # NO_HIDE_STALE
            ((0, 10, PUNCH | ZERO | KEEP), errno.EOPNOTSUPP),
            ((1 << 62, 1 << 62, 0), errno.EFBIG),
        ]
        for args, code in cases:
            with pytest.raises(FSError) as e:
                await vfs.fallocate(fh, *args)
            assert errno_of(e) == code, args
        ro = await env.open(inode, os.O_RDONLY)
        with pytest.raises(FSError) as e:
            await vfs.fallocate(ro, 0, 10, 0)
        assert errno_of(e) == errno.EBADF
        with pytest.raises(FSError) as e:
            await vfs.fallocate(12345, 0, 10, 0)
        assert errno_of(e) == errno.EBADF
        vfs.settings = dataclasses.replace(vfs.settings, capacity=MIB)
        with pytest.raises(FSError) as e:
            await vfs.fallocate(fh, 0, 2 * MIB, 0)
        assert errno_of(e) == errno.ENOSPC
        with pytest.raises(FSError) as e:
            await vfs.fallocate(fh, 0, 1 << 50, 0)  # refused before planning 16M chunks
        assert errno_of(e) == errno.ENOSPC
        assert (await vfs.getattr(inode)).size == 0
        await vfs.fallocate(fh, 0, 2 * MIB, PUNCH | KEEP)  # frees space: never ENOSPC
        vfs.options = dataclasses.replace(vfs.options, read_only=True)
        with pytest.raises(FSError) as e:
            await vfs.fallocate(fh, 0, 10, 0)
        assert errno_of(e) == errno.EROFS


@async_test
async def test_fallocate_on_a_directory_or_device_inode(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        d = await env.meta.create(ROOT, b"d", 0o040755, 0, 0)
        dev = await env.meta.create(ROOT, b"c", 0o020644, 0, 0, rdev=1)
        for inode, code in ((d.inode, errno.EISDIR), (dev.inode, errno.ENODEV)):
            with pytest.raises(FSError) as e:
                await env.meta.fallocate(inode, 0, 10, 0, block_size=BS)
            assert errno_of(e) == code


# ---- SEEK_DATA / SEEK_HOLE ------------------------------------------------------------------


@async_test
async def test_seek_on_a_sparse_file_made_by_aligned_writes_and_truncate(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, inode = await env.create(b"f")
        await vfs.write(fh, 64 * KIB, b"a" * 64 * KIB)
        await vfs.write(fh, 256 * KIB, b"b" * 128 * KIB)  # pending: lseek commits it first
        await vfs.setattr(inode, AttrChange(), MIB)
        assert await vfs.lseek(fh, 0, SEEK_DATA) == 64 * KIB
        assert await vfs.lseek(fh, 0, SEEK_HOLE) == 0
        assert await vfs.lseek(fh, 70 * KIB, SEEK_DATA) == 70 * KIB
        assert await vfs.lseek(fh, 70 * KIB, SEEK_HOLE) == 128 * KIB
        assert await vfs.lseek(fh, 128 * KIB, SEEK_DATA) == 256 * KIB
        assert await vfs.lseek(fh, 300 * KIB, SEEK_HOLE) == 384 * KIB
        for whence in (SEEK_DATA,):
            with pytest.raises(FSError) as e:
                await vfs.lseek(fh, 384 * KIB, whence)
            assert errno_of(e) == errno.ENXIO
        assert await vfs.lseek(fh, 384 * KIB, SEEK_HOLE) == 384 * KIB
        assert await vfs.lseek(fh, MIB - 1, SEEK_HOLE) == MIB - 1
        for off in (MIB, MIB + 1, 1 << 40, -1):
            for whence in (SEEK_DATA, SEEK_HOLE):
                with pytest.raises(FSError) as e:
                    await vfs.lseek(fh, off, whence)
                assert errno_of(e) == errno.ENXIO
        for whence in (os.SEEK_SET, os.SEEK_CUR, os.SEEK_END, 5):
            with pytest.raises(FSError) as e:
                await vfs.lseek(fh, 0, whence)
            assert errno_of(e) == errno.EINVAL


@async_test
async def test_seek_rounds_to_4k_blocks_and_the_end_of_the_file_is_a_hole(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, _ = await env.create(b"f")
        await vfs.write(fh, 5000, b"x" * 10)
        await vfs.write(fh, 20000, b"y")
        assert await vfs.lseek(fh, 0, SEEK_DATA) == G
        assert await vfs.lseek(fh, 0, SEEK_HOLE) == 0
        assert await vfs.lseek(fh, 4500, SEEK_HOLE) == 2 * G
        assert await vfs.lseek(fh, 2 * G, SEEK_DATA) == 4 * G
        assert await vfs.lseek(fh, 4 * G, SEEK_HOLE) == 20001  # the end, not a whole block


@async_test
async def test_seek_finds_data_and_holes_across_chunks_of_a_huge_sparse_file(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        fh, inode = await env.create(b"f")
        far = 1000 * CHUNK_SIZE + 12345  # 62.5 GiB: only two chunk rows exist
        await vfs.write(fh, CHUNK_SIZE - 100, b"z" * 200)  # across a chunk boundary
        await vfs.write(fh, far, b"w")
        await vfs.setattr(inode, AttrChange(), 1 << 50)
        assert await vfs.lseek(fh, 0, SEEK_DATA) == CHUNK_SIZE - G
        assert await vfs.lseek(fh, CHUNK_SIZE - G, SEEK_HOLE) == CHUNK_SIZE + G
        assert await vfs.lseek(fh, CHUNK_SIZE + G, SEEK_DATA) == far // G * G
        assert await vfs.lseek(fh, far, SEEK_HOLE) == far // G * G + G
        with pytest.raises(FSError) as e:
            await vfs.lseek(fh, far + G, SEEK_DATA)
        assert errno_of(e) == errno.ENXIO


# ---- copy_file_range ------------------------------------------------------------------------


@async_test
async def test_copy_range_shares_slices_and_writes_no_block(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        a, a_inode = await env.create(b"a")
        payload = os.urandom(3 * MIB + 123)
        await vfs.write(a, 0, payload)  # pending: the copy commits it first
        b, b_inode = await env.create(b"b")
        puts = env.store.put
        written = []

        async def counting_put(key, *args, **kwargs):
            written.append(key)
            return await puts(key, *args, **kwargs)

        await vfs.flush(a)
        objects = await keys(env.store, "chunks/")
        env.store.put = counting_put
        reads = env.blocks.load
        env.blocks.load = None  # a copy must not read a block
        try:
            assert await vfs.copy_range(a, 0, b, 0, 10 * MIB) == len(payload)
        finally:
            env.store.put = puts
            env.blocks.load = reads
        assert written == [] and await keys(env.store, "chunks/") == objects
        attr = await vfs.getattr(b_inode)
        assert (attr.size, attr.stored) == (len(payload), len(payload))
        assert await vfs.read(b, 0, 4 * MIB) == payload
        assert await sql_all(env.meta, "SELECT refs FROM slice_refs") == [(2,)]
        # Later writes to either file do not show in the other.
        await vfs.write(a, 0, b"A" * 100)
        await vfs.write(b, MIB, b"B" * 100)
        assert await vfs.read(a, 0, 4 * MIB) == b"A" * 100 + payload[100:]
        assert await vfs.read(b, 0, 4 * MIB) == payload[:MIB] + b"B" * 100 + payload[MIB + 100 :]
        await assert_clean(env)
        # Deleting the source keeps the copy readable: its blocks stay.
        await vfs.release(a)
        await vfs.unlink(ROOT, b"a")
        await vfs.deleter.drain()
        assert await vfs.read(b, 0, 4 * MIB) == payload[:MIB] + b"B" * 100 + payload[MIB + 100 :]
        assert await sql_all(env.meta, "SELECT refs FROM slice_refs") == []
        await assert_clean(env)
        garbage = await collect_garbage(volume_of(env), delete=True, min_age=0)
        assert garbage.deleted == 0
        assert await vfs.read(b, 0, 4 * MIB) == payload[:MIB] + b"B" * 100 + payload[MIB + 100 :]
        await vfs.release(b)
        await vfs.unlink(ROOT, b"b")
        await vfs.deleter.drain()
        assert await keys(env.store, "chunks/") == []


@async_test
async def test_copy_range_at_unaligned_offsets_across_chunk_boundaries(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        a, _ = await env.create(b"a")
        b, b_inode = await env.create(b"b")
        start = CHUNK_SIZE - 100 * KIB
        payload = os.urandom(200 * KIB)
        await vfs.write(a, start, payload)
        await vfs.write(b, 0, b"old" * 100_000)  # replaced where the copy lands
        n = await vfs.copy_range(a, start - 10, b, 2 * CHUNK_SIZE - 12345, 300 * KIB)
        assert n == 200 * KIB + 10
        assert await vfs.read(b, 2 * CHUNK_SIZE - 12345, MIB) == bytes(10) + payload
        assert (await vfs.getattr(b_inode)).size == 2 * CHUNK_SIZE - 12345 + n
        assert await vfs.read(b, 0, 300_000) == b"old" * 100_000
        # A hole of the source replaces data of the destination.
        assert await vfs.copy_range(a, 0, b, 0, 1000) == 1000
        assert await vfs.read(b, 0, 2000) == bytes(1000) + (b"old" * 1000)[1000:2000]
        assert await vfs.lseek(b, 0, SEEK_DATA) == 0  # block 0 still holds "old" bytes
        await assert_clean(env)


@async_test
async def test_copy_range_is_cut_at_the_source_end(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        a, _ = await env.create(b"a")
        b, b_inode = await env.create(b"b")
        await vfs.write(a, 0, b"0123456789")
        assert await vfs.copy_range(a, 4, b, 0, 100) == 6
        assert await vfs.copy_range(a, 10, b, 0, 100) == 0
        assert await vfs.copy_range(a, 50, b, 0, 100) == 0
        assert await vfs.copy_range(a, 0, b, 0, 0) == 0
        assert (await vfs.getattr(b_inode)).size == 6
        assert await vfs.copy_range(a, 0, b, 100, 3) == 3  # grows the destination
        assert await vfs.read(b, 0, 200) == b"456789" + bytes(94) + b"012"


@async_test
async def test_copy_range_within_one_file(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        a, inode = await env.create(b"a")
        payload = os.urandom(256 * KIB)
        await vfs.write(a, 0, payload)
        for off_in, off_out, n in ((0, 100, 200), (100, 0, 200), (0, 0, 10), (1000, 500, 501)):
            with pytest.raises(FSError) as e:
                await vfs.copy_range(a, off_in, a, off_out, n)
            assert errno_of(e) == errno.EINVAL, (off_in, off_out, n)
        assert await vfs.copy_range(a, 300 * KIB, a, 0, 10) == 0  # past the end: no overlap
        assert await vfs.copy_range(a, 0, a, 2 * CHUNK_SIZE, 256 * KIB) == 256 * KIB
        assert await vfs.copy_range(a, 0, a, 128 * KIB, 128 * KIB) == 128 * KIB  # adjacent
        want = payload[: 128 * KIB] + payload[: 128 * KIB]
        assert await vfs.read(a, 0, 256 * KIB) == want
        assert await vfs.read(a, 2 * CHUNK_SIZE, MIB) == payload
        assert await sql_all(env.meta, "SELECT refs FROM slice_refs") == [(2,)]
        await vfs.deleter.drain()
        await assert_clean(env)
        await vfs.setattr(inode, AttrChange(), 256 * KIB)  # drops the copy's chunk
        assert await sql_all(env.meta, "SELECT refs FROM slice_refs") == []
        await vfs.deleter.drain()
        assert await vfs.read(a, 0, MIB) == want
        await assert_clean(env)


@async_test
async def test_copy_range_errors_are_those_of_linux(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        a, a_inode = await env.create(b"a")
        await vfs.write(a, 0, b"data")
        b, b_inode = await env.create(b"b")
        wo = await env.open(a_inode, os.O_WRONLY)
        ro = await env.open(b_inode, os.O_RDONLY)
        app = await env.open(b_inode, os.O_WRONLY | os.O_APPEND)
        for args in ((wo, 0, b, 0, 4), (a, 0, ro, 0, 4), (a, 0, app, 0, 4), (999, 0, b, 0, 4)):
            with pytest.raises(FSError) as e:
                await vfs.copy_range(*args)
            assert errno_of(e) == errno.EBADF, args
        for args, code in (
            ((a, -1, b, 0, 4), errno.EINVAL),
            ((a, 0, b, -1, 4), errno.EINVAL),
            ((a, (1 << 63) - 2, b, 0, 4), errno.EOVERFLOW),
            ((a, 0, b, (1 << 63) - 2, 4), errno.EOVERFLOW),
        ):
            with pytest.raises(FSError) as e:
                await vfs.copy_range(*args)
            assert errno_of(e) == code, args
        d = await env.meta.create(ROOT, b"d", 0o040755, 0, 0)
        with pytest.raises(FSError) as e:
            await env.meta.copy_range(a_inode, 0, d.inode, 0, 4, block_size=BS)
        assert errno_of(e) == errno.EISDIR
        vfs.options = dataclasses.replace(vfs.options, read_only=True)
        with pytest.raises(FSError) as e:
            await vfs.copy_range(a, 0, b, 0, 4)
        assert errno_of(e) == errno.EROFS


@async_test
async def test_copy_range_commits_pending_writes_of_both_files_first(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        a, _ = await env.create(b"a")
        b, _ = await env.create(b"b")
        await vfs.write(a, 0, b"source")
        await vfs.write(b, 0, b"destination")
        assert await vfs.copy_range(a, 0, b, 2, 6) == 6
        assert await vfs.read(b, 0, 100) == b"desourceion"
        await vfs.write(b, 0, b"X")
        assert await vfs.read(b, 0, 100) == b"Xesourceion"
        assert await vfs.read(a, 0, 100) == b"source"


@async_test
async def test_compaction_of_a_copy_keeps_the_source_readable(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        a, _ = await env.create(b"a")
        pieces_ = [os.urandom(10 * KIB) for _ in range(5)]
        for i, p in enumerate(pieces_):
            await vfs.write(a, i * 20 * KIB, p)
            await vfs.flush(a)  # five slices
        b, _ = await env.create(b"b")
        assert await vfs.copy_range(a, 0, b, 0, MIB) == 90 * KIB
        want = await vfs.read(a, 0, MIB)
        await vfs.release(a)
        await vfs.release(b)
        report = await compact_chunks(volume_of(env), env.blocks, min_slices=2)
        assert report.chunks == 2
        await vfs.deleter.drain()
        assert await sql_all(env.meta, "SELECT * FROM slice_refs") == []
        for name in (b"a", b"b"):
            inode = (await vfs.lookup(ROOT, name)).inode
            fh = await env.open(inode, os.O_RDONLY)
            assert await vfs.read(fh, 0, MIB) == want
            await vfs.release(fh)
        await assert_clean(env)


@async_test
async def test_fsck_finds_and_repairs_wrong_reference_counts(tmp_path):
    async with vfs_env(tmp_path, block_size=BS) as env:
        vfs = env.vfs
        a, _ = await env.create(b"a")
        await vfs.write(a, 0, os.urandom(100 * KIB))
        b, _ = await env.create(b"b")
        await vfs.copy_range(a, 0, b, 0, MIB)
        (sid,) = [r[0] for r in await sql_all(env.meta, "SELECT slice FROM slice_refs")]
        await env.meta.db.txn(lambda tx: tx.run("DELETE FROM slice_refs"))
        report = await check_volume(volume_of(env))
        assert not report.clean and "counted 1" in report.problems[0]
        report = await check_volume(volume_of(env), repair=True)
        assert report.repaired
        assert await sql_all(env.meta, "SELECT slice, refs FROM slice_refs") == [(sid, 2)]
        await env.meta.db.txn(lambda tx: tx.run("UPDATE slice_refs SET refs = 5"))
        assert not (await check_volume(volume_of(env))).clean
        await check_volume(volume_of(env), repair=True)
        await assert_clean(env)


@async_test
async def test_dump_and_load_keep_shared_slices_counted(tmp_path):
    async with vfs_env(tmp_path / "a", block_size=BS) as env:
        vfs = env.vfs
        a, _ = await env.create(b"a")
        await vfs.write(a, 0, os.urandom(200 * KIB))
        b, _ = await env.create(b"b")
        await vfs.copy_range(a, 0, b, 0, MIB)
        await vfs.fallocate(a, 0, BS, PUNCH | KEEP)
        out = io.StringIO()
        await dump.dump(env.meta, out, progress=lambda n: None)
        want = await sql_all(env.meta, "SELECT slice, size, refs FROM slice_refs")
        assert want
    restored = await open_meta(f"sqlite://{tmp_path}/b/meta.db", create=True)
    await dump.load(restored, io.StringIO(out.getvalue()), uuid="v2", progress=lambda n: None)
    assert await sql_all(restored, "SELECT slice, size, refs FROM slice_refs") == want
    await restored.close()


# ---- shared slices at the metadata level, on both engines -----------------------------------


@pytest.mark.usefixtures("meta_engine")
@async_test
async def test_slices_shared_by_three_files_freed_in_one_transaction_are_queued_once(tmp_path):
    meta = await new_meta(tmp_path)
    await meta.open_session("h", 1, "/m", "t")
    a = await meta.create(ROOT, b"a", FILE, 0, 0)
    sid = await meta.next_slice_id()
    await meta.write_slices(a.inode, [(0, Slice(0, sid, 1000, 0, 1000))], 1000, 1)
    copies = [await meta.create(ROOT, b"c%d" % i, FILE, 0, 0) for i in range(2)]
    for c in copies:
        assert (await meta.copy_range(a.inode, 0, c.inode, 0, 1000, block_size=BS))[0] == 1000
    assert await sql_all(meta, "SELECT slice, refs FROM slice_refs") == [(sid, 3)]
    await meta.unlink(ROOT, b"c0", lambda _: False)  # freed at once: the count goes down
    assert await sql_all(meta, "SELECT slice, refs FROM slice_refs") == [(sid, 2)]
    assert await meta.pending_deletes(10) == []
    for name in (b"a", b"c1"):
        await meta.unlink(ROOT, name, lambda _: True)  # kept open by this session
    assert await meta.pending_deletes(10) == []
    assert await meta.close_session(meta.session_id) == 2  # both freed in one transaction
    assert [s for _, s, _ in await meta.pending_deletes(10)] == [sid]
    assert await sql_all(meta, "SELECT * FROM slice_refs") == []
    await meta.close()


@pytest.mark.usefixtures("meta_engine")
@async_test
async def test_punch_and_copy_at_the_metadata_level_on_both_engines(tmp_path):
    meta = await new_meta(tmp_path)
    a = await meta.create(ROOT, b"a", FILE, 0, 0)
    sid = await meta.next_slice_id()
    size = 8 * BS
    await meta.write_slices(a.inode, [(0, Slice(0, sid, size, 0, size))], size, 1)
    await meta.fallocate(a.inode, 2 * BS, 3 * BS, PUNCH | KEEP, block_size=BS)
    assert await meta.read_chunk(a.inode, 0) == [
        Slice(0, sid, size, 0, 2 * BS),
        Slice(5 * BS, sid, size, 5 * BS, 3 * BS),
    ]
    rows = await sql_all(meta, "SELECT slice, first_block, last_block FROM pending_block_deletes")
    assert rows == [(sid, 2, 4)]
    b = await meta.create(ROOT, b"b", FILE, 0, 0)
    n, attr = await meta.copy_range(a.inode, BS, b.inode, 0, size, block_size=BS)
    assert (n, attr.size, attr.stored) == (7 * BS, 7 * BS, 4 * BS)
    assert await meta.seek(b.inode, 0, SEEK_HOLE) == BS
    assert await meta.seek(b.inode, BS, SEEK_DATA) == 4 * BS
    await meta.fallocate(a.inode, 0, 2 * BS, PUNCH | KEEP, block_size=BS)  # shared: kept
    rows = await sql_all(meta, "SELECT slice, first_block, last_block FROM pending_block_deletes")
    assert rows == [(sid, 2, 4)]
    await meta.truncate(b.inode, 0)
    assert await sql_all(meta, "SELECT * FROM slice_refs") == []
    await meta.truncate(a.inode, 0)
    assert [s for _, s, _ in await meta.pending_deletes(10)] == [sid]
    await meta.close()
