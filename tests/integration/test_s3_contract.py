"""The ObjectStore contract, the same tests against memory://, file:// and S3 (a moto server)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from objects_support import FAST_RETRY, TEST_CREDENTIALS

from riverfs.objects import CommonPrefix, InvalidRange, ObjectNotFound, open_store
from riverfs.objects.store import PART_SIZE

pytest_plugins = ["objects_fixtures"]  # the moto server and fault proxy fixtures


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(params=["memory", "file", "s3"])
def store(request, tmp_path):
    if request.param == "memory":
        return open_store(f"memory://contract-{uuid.uuid4().hex}", policy=FAST_RETRY)
    if request.param == "file":
        return open_store(f"file://{tmp_path}/store", policy=FAST_RETRY)
    server = request.getfixturevalue("moto_server")
    bucket = server.new_bucket()
    return open_store(server.url(bucket, "vol"), credentials=TEST_CREDENTIALS, policy=FAST_RETRY)


async def put_many(store, keys, limit=16):
    """Bounded concurrency: a test server is not a fleet."""
    sem = asyncio.Semaphore(limit)

    async def one(key):
        async with sem:
            await store.put(key, b"x")

    await asyncio.gather(*(one(k) for k in keys))


async def keys(store, prefix="", **kw):
    return [info.key async for info in store.list(prefix, **kw)]


def test_put_get_head_delete_round_trip(store):
    async def go():
        await store.put("a/b", b"hello")
        assert await store.get("a/b") == b"hello"
        info = await store.head("a/b")
        assert (info.key, info.size) == ("a/b", 5)
        await store.delete("a/b")
        with pytest.raises(ObjectNotFound):
            await store.get("a/b")
        with pytest.raises(ObjectNotFound):
            await store.head("a/b")
        await store.delete("a/b")  # deleting a missing object is fine

    run(go())


def test_get_range_and_streamed_parts(store):
    data = bytes(range(256)) * 4096  # 1 MiB

    async def go():
        await store.put("r", data)
        assert await store.get_range("r", 10, 20) == data[10:20]
        assert await store.get_range("r", len(data) - 5, len(data) + 100) == data[-5:]
        reader = await store.open("r", start=1000, end=300_000, part_size=64 << 10)
        parts = [p async for p in reader]
        assert b"".join(parts) == data[1000:300_000]
        assert all(len(p) >= 64 << 10 for p in parts[:-1])
        if store.kind != "memory":  # a memory store hands out what it holds in one piece
            assert len(parts) > 1
        assert await (await store.open("r", suffix=7)).read() == data[-7:]
        assert await (await store.open("r", start=len(data) - 3)).read() == data[-3:]
        with pytest.raises(InvalidRange):
            await store.open("r", start=len(data) + 10, end=len(data) + 20)

    run(go())


def test_list_is_ordered_and_honours_prefix_start_after_and_max_keys(store):
    names = ["b/2", "b/10", "Z", "a-b", "c/1/x", "a/x", "a.txt", "a/y/z"]

    async def go():
        for n in names:
            await store.put(n, n.encode())
        assert await keys(store) == sorted(names)
        assert await keys(store, "a") == ["a-b", "a.txt", "a/x", "a/y/z"]
        assert await keys(store, "a/") == ["a/x", "a/y/z"]
        assert await keys(store, "b/1") == ["b/10"]
        assert await keys(store, start_after="a/x") == ["a/y/z", "b/10", "b/2", "c/1/x"]
        assert await keys(store, "a", start_after="a.txt", max_keys=1) == ["a/x"]
        assert await keys(store, "nothing/") == []
        entries = [e async for e in store.list_entries(delimiter="/")]
        shown = [e.prefix if isinstance(e, CommonPrefix) else e.key for e in entries]
        assert shown == ["Z", "a-b", "a.txt", "a/", "b/", "c/"]
        entries = [e async for e in store.list_entries("a/", delimiter="/")]
        assert [getattr(e, "prefix", None) or e.key for e in entries] == ["a/x", "a/y/"]
        entries = [e async for e in store.list_entries(delimiter="/", start_after="a/", max_keys=2)]
        assert [getattr(e, "prefix", None) or e.key for e in entries] == ["b/", "c/"]

    run(go())


def test_list_streams_many_pages(store):
    async def go():
        await put_many(store, [f"k/{i:05d}" for i in range(1050)])
        pages = [len(p) async for p in store.list_pages("k/")]
        assert sum(pages) == 1050 and len(pages) >= 2
        assert await keys(store, "k/", start_after="k/01045") == [
            f"k/{i:05d}" for i in range(1046, 1050)
        ]

    run(go())


def test_delete_many_in_batches_ignores_missing(store):
    async def go():
        await put_many(store, [f"d/{i}" for i in range(1203)])
        await store.delete_many([f"d/{i}" for i in range(1203)] + ["d/missing"])
        assert await keys(store, "d/") == []

    run(go())


def test_copy_keeps_data_and_attributes(store):
    async def go():
        await store.put("src", b"payload", attributes={"Content-Type": "text/plain", "m": "1"})
        await store.copy("src", "dst")
        assert await store.get("dst") == b"payload"
        info = await store.stat("dst")
        assert info.attributes["Content-Type"] == "text/plain" and info.attributes["m"] == "1"

    run(go())


def test_put_stream_from_async_iterator_is_atomic_and_multipart(store):
    part = b"0123456789abcdef" * (PART_SIZE // 16)

    async def parts():
        for i in range(3):
            yield part[:-i] if i else part  # parts of uneven size

    async def go():
        await store.put_stream("big", parts(), attributes={"x": "y"})
        data = await store.get("big")
        assert data == part + part[:-1] + part[:-2]
        assert (await store.stat("big")).attributes["x"] == "y"

    run(go())


def test_failed_stream_leaves_no_object(store):
    async def parts():
        yield b"x" * PART_SIZE
        raise RuntimeError("source broke")

    async def go():
        with pytest.raises(Exception, match="source broke"):
            await store.put_stream("half", parts())
        with pytest.raises(ObjectNotFound):
            await store.head("half")
        assert await keys(store, "half") == []

    run(go())


def test_attributes_round_trip_and_overwrite_drops_them(store):
    async def go():
        await store.put("m", b"1", attributes={"Content-Type": "application/json", "k": "v"})
        info = await store.stat("m")
        assert info.attributes["Content-Type"] == "application/json"
        assert info.attributes["k"] == "v"
        await store.put("m", b"2")
        assert "k" not in ((await store.stat("m")).attributes or {})

    run(go())
