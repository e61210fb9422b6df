"""Helpers shared by the unit tests: run coroutines, build Meta / BlockStore / VFS in-process.

No FUSE and no pytest-asyncio: every test runs its body with `asyncio.run`, and builds every
asyncio object (locks, events, tasks) inside that one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import os
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from riverfs.chunk.cache import DiskCache
from riverfs.chunk.store import BlockStore
from riverfs.meta import Meta, VolumeSettings, open_meta
from riverfs.objects import ObjectStore, open_store
from riverfs.objects import store as store_module
from riverfs.vfs.fs import VFS
from riverfs.vfs.options import MountOptions

ROOT = 1
TEST_TIMEOUT = 30.0
FILE = stat.S_IFREG | 0o644
DIR = stat.S_IFDIR | 0o755

_names = itertools.count()


def run(coro, timeout: float = TEST_TIMEOUT):
    """Run one coroutine to completion in a fresh event loop, with an upper bound on time."""

    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def async_test(fn):
    """Turn `async def test_x(...)` into a plain test that pytest runs synchronously."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return run(fn(*args, **kwargs))

    return wrapper


def memory_url() -> str:
    """A memory:// URL no other test uses (memory stores are per URL, per process)."""
    return f"memory://unit-{uuid.uuid4().hex}-{next(_names)}"


def forget_memory_store(url: str) -> None:
    store_module._memory_stores.pop(url, None)


POSTGRES_URL: str | None = None  # set by the meta_engine fixture for PostgreSQL runs


def meta_url(directory: Path) -> str:
    """The metadata URL of this test: PostgreSQL when meta_engine says so, else SQLite."""
    return POSTGRES_URL or f"sqlite://{directory}/meta.db"


async def new_meta(directory: Path, storage: str = "memory://x", **settings) -> Meta:
    """A freshly formatted metadata database (the engine the test runs with)."""
    directory.mkdir(parents=True, exist_ok=True)
    meta = await open_meta(meta_url(directory), create=True)
    await meta.format(VolumeSettings(uuid="u", storage=storage, **settings), 0, 0)
    return meta


async def keys(store: ObjectStore, prefix: str = "") -> list[str]:
    return sorted([info.key async for info in store.list(prefix)])


async def sql_one(meta: Meta, sql: str, *params):
    return await meta.db.txn(lambda tx: tx.one(sql, *params), write=False)


async def sql_all(meta: Meta, sql: str, *params):
    return await meta.db.txn(lambda tx: tx.all(sql, *params), write=False)


class Env:
    """A VFS over a memory store and a SQLite database, as fuse/mount.py `serve` builds it."""

    def __init__(self, vfs: VFS, meta: Meta, blocks: BlockStore, store: ObjectStore) -> None:
        self.vfs = vfs
        self.meta = meta
        self.blocks = blocks
        self.store = store

    def _caller_args(self, method) -> tuple:
        """The identity arguments `method` takes (the VFS API passes a Caller or uid, gid)."""
        params = inspect.signature(method).parameters
        if "caller" in params:
            from riverfs.vfs.handles import Caller

            return (Caller(),)
        if "uid" in params:
            return (0, 0)
        return ()

    async def create(self, name: bytes, flags: int = os.O_RDWR, parent: int = ROOT):
        """Create and open a regular file: (fh, inode)."""
        create = self.vfs.create_file
        fh, attr = await create(parent, name, 0o644, flags, *self._caller_args(create))
        return fh, attr.inode

    async def open(self, inode: int, flags: int) -> int:
        """Open an existing file: its handle."""
        fh, _keep = await self.vfs.open(inode, flags, *self._caller_args(self.vfs.open))
        return fh

    async def read_all(self, fh: int, size: int, offset: int = 0) -> bytes:
        return await self.vfs.read(fh, offset, size)


@contextlib.asynccontextmanager
async def vfs_env(
    directory: Path,
    *,
    block_size: int = 64 << 10,
    compression: str = "none",
    buffer_size: int = 256 << 20,
    disk_cache: bool = False,
    read_cache_size: int = 64 << 20,
) -> AsyncIterator[Env]:
    url = memory_url()
    store = open_store(url)
    settings = VolumeSettings(uuid="u", storage=url, block_size=block_size, compression=compression)
    directory.mkdir(parents=True, exist_ok=True)
    meta = await open_meta(f"sqlite://{directory}/meta.db", create=True)
    await meta.format(settings, 0, 0)
    options = MountOptions(
        cache_dir=directory / "cache",
        cache_size=(256 << 20) if disk_cache else 0,
        cache_min_free=0.0,
        buffer_size=buffer_size,
        read_cache_size=read_cache_size,
    )
    cache = None
    if disk_cache:
        cache = DiskCache(options.cache_dir / settings.uuid, options.cache_size, 0.0)
    blocks = BlockStore(
        store,
        block_size,
        compression,
        cache,
        memory_limit=options.read_cache_size,
        max_prefetch=options.max_prefetch,
    )
    vfs = VFS(meta, blocks, settings, options)
    try:
        yield Env(vfs, meta, blocks, store)
    finally:
        await blocks.close()
        await meta.close()
        forget_memory_store(url)
