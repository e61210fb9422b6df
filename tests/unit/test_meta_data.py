"""meta/engine.py on both engines: file data (slices, truncate, deletes) and usage counters."""

from __future__ import annotations

import errno
import random
import time

import pytest
from unit_helpers import DIR, FILE, ROOT, async_test, new_meta, sql_all, sql_one

from riverfs.errors import FSError
from riverfs.meta.engine import CHUNK_SIZE
from riverfs.meta.slices import Slice

PIB = 1 << 50

pytestmark = pytest.mark.usefixtures("meta_engine")


def never(_inode: int) -> bool:
    return False


async def queued(meta) -> list[tuple[int, int]]:
    return sorted((s, size) for _, s, size in await meta.pending_deletes(10_000))


async def check_counters(meta) -> None:
    """The counters agree with the nodes table."""
    usage = await meta.usage()
    stored, count = await sql_one(meta, "SELECT COALESCE(SUM(stored), 0), COUNT(*) FROM nodes")
    assert (usage.used_bytes, usage.inodes) == (int(stored), count)
    # stored never exceeds the length, never negative
    assert await sql_all(meta, "SELECT inode FROM nodes WHERE stored > length OR stored < 0") == []


@async_test
async def test_write_slices_appends_in_order_and_read_chunk_returns_them(tmp_path):
    meta = await new_meta(tmp_path)
    f = await meta.create(ROOT, b"f", FILE, 0, 0)
    s1, s2, s3, s4 = [await meta.next_slice_id() for _ in range(4)]
    a = await meta.write_slices(
        f.inode,
        [(0, Slice(0, s1, 100, 0, 100)), (1, Slice(0, s2, 50, 0, 50)), (0, Slice(10, s3, 5, 0, 5))],
        CHUNK_SIZE + 50,
        1234,
    )
    assert a.size == CHUNK_SIZE + 50
    assert a.mtime == a.ctime == 1234
    assert a.stored == 155
    await meta.write_slices(f.inode, [(0, Slice(20, s4, 7, 0, 7))], 27, 1300)
    assert await meta.read_chunk(f.inode, 0) == [
        Slice(0, s1, 100, 0, 100),
        Slice(10, s3, 5, 0, 5),
        Slice(20, s4, 7, 0, 7),
    ]
    assert await meta.read_chunk(f.inode, 1) == [Slice(0, s2, 50, 0, 50)]
    assert await meta.read_chunk(f.inode, 2) == []
    attr = await meta.getattr(f.inode)
    assert attr.size == CHUNK_SIZE + 50  # a write inside the file does not shrink it
    assert attr.mtime == 1300
    await check_counters(meta)
    await meta.close()


@async_test
async def test_write_slices_to_a_deleted_inode_queues_them_for_deletion(tmp_path):
    meta = await new_meta(tmp_path)
    f = await meta.create(ROOT, b"f", FILE, 0, 0)
    await meta.unlink(ROOT, b"f", never)
    sid = await meta.next_slice_id()
    assert await meta.write_slices(f.inode, [(0, Slice(0, sid, 9, 0, 9))], 9, 1) is None
    assert await queued(meta) == [(sid, 9)]
    await check_counters(meta)
    await meta.close()


@async_test
async def test_truncate_down_queues_slices_of_removed_chunks_and_adds_a_hole(tmp_path):
    meta = await new_meta(tmp_path)
    f = await meta.create(ROOT, b"f", FILE, 0, 0)
    ids = [await meta.next_slice_id() for _ in range(4)]
    await meta.write_slices(
        f.inode,
        [
            (0, Slice(0, ids[0], 1000, 0, 1000)),
            (1, Slice(0, ids[1], 2000, 0, 2000)),
            (1, Slice(100, ids[2], 10, 0, 10)),
            (3, Slice(5, ids[3], 30, 0, 30)),
        ],
        3 * CHUNK_SIZE + 35,
        1,
    )
    attr = await meta.truncate(f.inode, 500)
    assert attr.size == 500
    assert attr.stored <= 500
    assert await queued(meta) == sorted([(ids[1], 2000), (ids[2], 10), (ids[3], 30)])
    assert await meta.read_chunk(f.inode, 1) == []
    assert await meta.read_chunk(f.inode, 3) == []
    assert await meta.read_chunk(f.inode, 0) == [
        Slice(0, ids[0], 1000, 0, 1000),
        Slice(500, 0, 0, 0, CHUNK_SIZE - 500),
    ]
    await check_counters(meta)
    # Truncating to a chunk boundary removes whole chunks and adds no hole.
    await meta.truncate(f.inode, 0)
    assert await meta.read_chunk(f.inode, 0) == []
    assert (ids[0], 1000) in await queued(meta)
    assert (await meta.getattr(f.inode)).stored == 0
    await check_counters(meta)
    await meta.close()


@async_test
async def test_truncate_up_keeps_data_and_extends_with_a_hole(tmp_path):
    meta = await new_meta(tmp_path)
    f = await meta.create(ROOT, b"f", FILE, 0, 0)
    sid = await meta.next_slice_id()
    await meta.write_slices(f.inode, [(0, Slice(0, sid, 10, 0, 10))], 10, 1)
    attr = await meta.truncate(f.inode, 5 * CHUNK_SIZE, t=77)
    assert (attr.size, attr.stored, attr.mtime, attr.ctime) == (5 * CHUNK_SIZE, 10, 77, 77)
    assert await meta.read_chunk(f.inode, 0) == [Slice(0, sid, 10, 0, 10)]
    assert await meta.pending_deletes(10) == []
    await meta.close()


@async_test
async def test_truncate_of_a_directory_or_symlink_fails(tmp_path):
    meta = await new_meta(tmp_path)
    d = await meta.create(ROOT, b"d", DIR, 0, 0)
    s = await meta.create(ROOT, b"s", 0o120777, 0, 0, target=b"x")
    with pytest.raises(FSError) as e:
        await meta.truncate(d.inode, 0)
    assert e.value.errno == errno.EISDIR
    with pytest.raises(FSError) as e:
        await meta.truncate(s.inode, 0)
    assert e.value.errno == errno.EINVAL
    await meta.close()


@async_test
async def test_truncate_of_a_1_pib_sparse_file_is_instant(tmp_path):
    meta = await new_meta(tmp_path)
    f = await meta.create(ROOT, b"huge", FILE, 0, 0)
    last_chunk = PIB // CHUNK_SIZE - 1
    sid = await meta.next_slice_id()
    start = time.perf_counter()
    await meta.truncate(f.inode, PIB)
    await meta.write_slices(f.inode, [(last_chunk, Slice(100, sid, 10, 0, 10))], PIB, 1)
    await meta.write_slices(f.inode, [(0, Slice(0, sid + 1, 10, 0, 10))], 10, 1)
    assert (await meta.getattr(f.inode)).size == PIB
    assert (await meta.getattr(f.inode)).stored == 20
    await meta.truncate(f.inode, PIB - 1)  # partial last chunk: a hole record
    assert await meta.read_chunk(f.inode, last_chunk) == [
        Slice(100, sid, 10, 0, 10),
        Slice(CHUNK_SIZE - 1, 0, 0, 0, 1),
    ]
    await meta.truncate(f.inode, PIB // 2 + 12345)  # lands in an empty chunk: no record
    assert await meta.read_chunk(f.inode, (PIB // 2) // CHUNK_SIZE) == []
    assert await queued(meta) == [(sid, 10)]
    await meta.truncate(f.inode, PIB)
    await meta.truncate(f.inode, 0)
    await meta.unlink(ROOT, b"huge", never)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"sparse 1 PiB file operations took {elapsed:.1f}s"
    assert await queued(meta) == [(sid, 10), (sid + 1, 10)]
    assert await sql_all(meta, "SELECT * FROM chunks") == []
    await check_counters(meta)
    await meta.close()


@async_test
async def test_unlinking_a_file_queues_each_of_its_slices_once(tmp_path):
    meta = await new_meta(tmp_path)
    f = await meta.create(ROOT, b"f", FILE, 0, 0)
    a, b = await meta.next_slice_id(), await meta.next_slice_id()
    # One slice seen through two records (e.g. after compaction or partial overwrite).
    await meta.write_slices(
        f.inode,
        [
            (0, Slice(0, a, 100, 0, 40)),
            (0, Slice(40, b, 20, 0, 20)),
            (0, Slice(60, a, 100, 60, 40)),
        ],
        100,
        1,
    )
    await meta.unlink(ROOT, b"f", never)
    assert await queued(meta) == [(a, 100), (b, 20)]
    await check_counters(meta)
    await meta.close()


@async_test
async def test_finish_deletes_removes_them_from_the_queue(tmp_path):
    meta = await new_meta(tmp_path)
    f = await meta.create(ROOT, b"f", FILE, 0, 0)
    ids = [await meta.next_slice_id() for _ in range(3)]
    await meta.write_slices(
        f.inode, [(i, Slice(0, sid, 5, 0, 5)) for i, sid in enumerate(ids)], 2 * CHUNK_SIZE + 5, 1
    )
    await meta.unlink(ROOT, b"f", never)
    pending = await meta.pending_deletes(2)
    assert len(pending) == 2
    await meta.finish_deletes([qid for qid, _, _ in pending])
    rest = await meta.pending_deletes(10)
    assert len(rest) == 1 and rest[0][1] not in {s for _, s, _ in pending}
    await meta.close()


@async_test
async def test_usage_counters_stay_consistent_over_random_operations(tmp_path):
    meta = await new_meta(tmp_path)
    rng = random.Random(2024)
    files: dict[bytes, int] = {}
    dirs = {ROOT}
    open_inodes: set[int] = set()
    sustained: set[int] = set()

    def in_use(inode: int) -> bool:
        return inode in open_inodes

    for step in range(400):
        op = rng.choice(
            ["create", "create", "write", "write", "truncate", "unlink", "link", "rename", "mkdir",
             "rmdir", "open", "release", "symlink"]
        )  # fmt: skip
        try:
            if op == "create":
                name = b"f%d" % step
                files[name] = (await meta.create(rng.choice(sorted(dirs)), name, FILE, 0, 0)).inode
                # remember only root-level names for simplicity of later ops
                if (await sql_one(meta, "SELECT parent FROM edges WHERE name = ?", name))[
                    0
                ] != ROOT:
                    del files[name]
            elif op == "symlink":
                await meta.create(
                    ROOT, b"s%d" % step, 0o120777, 0, 0, target=b"t" * rng.randint(1, 50)
                )
            elif op == "mkdir":
                dirs.add((await meta.create(ROOT, b"d%d" % step, DIR, 0, 0)).inode)
            elif op == "rmdir" and len(dirs) > 1:
                victim = rng.choice(sorted(dirs - {ROOT}))
                row = await sql_one(meta, "SELECT name FROM edges WHERE inode = ?", victim)
                await meta.rmdir(ROOT, bytes(row[0]))
                dirs.discard(victim)
            elif files and op == "write":
                name = rng.choice(sorted(files))
                attr = await meta.lookup(ROOT, name)
                pos = rng.randrange(0, 3 * CHUNK_SIZE)
                length = rng.randint(1, 1 << 20)
                index, off = divmod(pos, CHUNK_SIZE)
                length = min(length, CHUNK_SIZE - off)
                sid = await meta.next_slice_id()
                await meta.write_slices(
                    attr.inode, [(index, Slice(off, sid, length, 0, length))], pos + length, step
                )
            elif files and op == "truncate":
                attr = await meta.lookup(ROOT, rng.choice(sorted(files)))
                await meta.truncate(attr.inode, rng.choice([0, 10, attr.size // 2, attr.size * 2]))
            elif files and op == "unlink":
                name = rng.choice(sorted(files))
                await meta.unlink(ROOT, name, in_use)
                linked = await sql_one(meta, "SELECT 1 FROM edges WHERE inode = ?", files[name])
                if not linked and files[name] in open_inodes:
                    sustained.add(files[name])
                del files[name]
            elif files and op == "link":
                name = rng.choice(sorted(files))
                new = b"l%d" % step
                await meta.link(files[name], ROOT, new)
                files[new] = files[name]
            elif files and op == "rename":
                src = rng.choice(sorted(files))
                dst = rng.choice([*sorted(files), b"r%d" % step])
                await meta.rename(ROOT, src, ROOT, dst, 0, in_use)
                if dst in files and files[dst] != files[src]:
                    gone = files[dst]
                    if gone in open_inodes and not (
                        await sql_one(meta, "SELECT 1 FROM edges WHERE inode = ?", gone)
                    ):
                        sustained.add(gone)
                if dst in files and files[dst] == files[src]:
                    pass  # same inode: nothing happened
                else:
                    files[dst] = files.pop(src)
            elif files and op == "open":
                open_inodes.add(files[rng.choice(sorted(files))])
            elif open_inodes and op == "release":
                inode = rng.choice(sorted(open_inodes))
                open_inodes.discard(inode)
                if inode in sustained:
                    sustained.discard(inode)
                    assert await meta.release(inode)
        except FSError as e:
            assert e.errno in (errno.ENOTEMPTY, errno.EEXIST), f"step {step} {op}: {e}"
        await check_counters(meta)
    await meta.close()
