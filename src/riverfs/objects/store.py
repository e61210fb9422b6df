"""The async object-store interface riverfs uses for every byte it stores.

A thin layer over obstore: it maps store URLs to obstore stores, turns obstore's errors into
two of ours (`ObjectNotFound`, `StoreError`), and exposes exactly the operations the block store
and the maintenance tools need.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import LocalStore, MemoryStore

from riverfs.errors import RiverError

log = logging.getLogger(__name__)

# obstore raises NotFoundError for remote stores and FileNotFoundError for local ones.
_NOT_FOUND = (NotFoundError, FileNotFoundError)

SUPPORTED_SCHEMES = ("file", "memory")
PLANNED_SCHEMES = ("s3", "gs", "az")


class StoreError(Exception):
    """The store failed an operation (after obstore's own retries)."""


class ObjectNotFound(StoreError):
    """The object does not exist."""


class StoreFull(StoreError):
    """The store has no space left (a local store on a full disk, or a quota)."""


@dataclass(slots=True, frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime


class ObjectStore:
    """Objects under one prefix of one store; keys are relative to that prefix."""

    def __init__(self, url: str, store: obstore.store.ObjectStore) -> None:
        self.url = url
        self._store = store

    async def get(self, key: str) -> bytes:
        try:
            result = await obstore.get_async(self._store, key)
            return bytes(await result.bytes_async())
        except _NOT_FOUND as e:
            raise ObjectNotFound(key) from e
        except Exception as e:
            raise StoreError(f"get {key}: {e}") from e

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object."""
        try:
            return bytes(await obstore.get_range_async(self._store, key, start=start, end=end))
        except _NOT_FOUND as e:
            raise ObjectNotFound(key) from e
        except Exception as e:
            raise StoreError(f"get {key}[{start}:{end}]: {e}") from e

    async def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        try:
            await obstore.put_async(self._store, key, data)
        except Exception as e:
            message = str(e).split("\n", 1)[0]
            if "No space left on device" in message or "StorageFull" in str(e):
                raise StoreFull(f"put {key}: {message}") from e
            raise StoreError(f"put {key}: {message}") from e

    async def head(self, key: str) -> ObjectInfo:
        try:
            meta = await obstore.head_async(self._store, key)
        except _NOT_FOUND as e:
            raise ObjectNotFound(key) from e
        except Exception as e:
            raise StoreError(f"head {key}: {e}") from e
        return ObjectInfo(meta["path"], meta["size"], meta["last_modified"])

    async def delete(self, key: str) -> None:
        """Delete one object; deleting a missing object is not an error."""
        await self.delete_many([key])

    async def delete_many(self, keys: list[str]) -> None:
        if not keys:
            return
        try:
            await obstore.delete_async(self._store, keys)
        except _NOT_FOUND:
            for key in keys:  # one of them was missing: delete the rest one by one
                try:
                    await obstore.delete_async(self._store, key)
                except _NOT_FOUND:
                    pass
        except Exception as e:
            raise StoreError(f"delete {len(keys)} objects: {e}") from e

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, streamed in pages."""
        try:
            async for page in obstore.list(self._store, prefix or None, chunk_size=1000):
                for meta in page:
                    yield ObjectInfo(meta["path"], meta["size"], meta["last_modified"])
        except _NOT_FOUND:
            return
        except Exception as e:
            raise StoreError(f"list {prefix!r}: {e}") from e


_memory_stores: dict[str, MemoryStore] = {}


def open_store(url: str) -> ObjectStore:
    """Open the store a URL names; raise RiverError for URLs we cannot serve."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise RiverError(f"storage URL {url!r} must be file:///absolute/path")
        root = Path(parts.path)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RiverError(f"cannot create storage directory {root}: {e.strerror}") from e
        return ObjectStore(url, LocalStore(root))
    if scheme == "memory":
        # One store per URL per process, so a format and a mount in one process see the same data.
        return ObjectStore(url, _memory_stores.setdefault(url, MemoryStore()))
    if scheme in PLANNED_SCHEMES:
        raise RiverError(f"storage scheme {scheme}:// is not supported yet; use file:///path")
    raise RiverError(
        f"unknown storage URL {url!r}: use file:///absolute/path (or memory:// for tests)"
    )
