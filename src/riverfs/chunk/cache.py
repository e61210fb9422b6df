"""The local disk cache of stored blocks.

Blocks are cached exactly as stored (header and checksum included), so every read from the
cache is verified like a read from the store, and an encrypted volume's cache is encrypted for
free. A random reader reads just the pages it needs of a cached block (`get_range`). A file's
name is the object key with '/' flattened, under `<dir>/blocks/`; for an encrypted volume it
is a keyed hash of the object key (`name_of`), so the cache reveals neither paths nor object
keys.

Limits: `capacity` bytes, and at least `min_free` (a ratio) of the disk left free. Eviction is
least-recently-used; the index is rebuilt from the directory at start-up. All file I/O runs in
the block store's thread pool (the callers pass an executor).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


class DiskCache:
    def __init__(
        self,
        directory: Path,
        capacity: int,
        min_free: float = 0.1,
        name_of: Callable[[str], str] | None = None,
    ) -> None:
        self.dir = directory / "blocks"
        if name_of is not None:
            self._name = name_of
        self.capacity = capacity
        self.min_free = min_free
        self._index: OrderedDict[str, int] = OrderedDict()  # file name -> size, LRU first
        self.used = 0
        self._lock = threading.Lock()  # get/put run in several pool threads
        self.dir.mkdir(parents=True, exist_ok=True)
        self._scan()

    def _scan(self) -> None:
        for entry in os.scandir(self.dir):
            if entry.name.endswith(".tmp"):
                os.unlink(entry.path)  # an interrupted write
                continue
            size = entry.stat().st_size
            self._index[entry.name] = size
            self.used += size
        self._evict(0)

    @staticmethod
    def _name(key: str) -> str:
        return key.replace("/", "~")

    def has(self, key: str) -> bool:
        return self._name(key) in self._index

    def get(self, key: str) -> bytes | None:
        """The cached block, or None (blocking: run it in a thread)."""
        name = self._name(key)
        with self._lock:
            if name not in self._index:
                return None
            self._index.move_to_end(name)
        try:
            with open(self.dir / name, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            with self._lock:
                self._forget(name)
            return None
        return data

    def get_range(self, key: str, start: int, end: int) -> bytes | None:
        """Bytes [start, end) of the cached block (fewer if it ends before `end`), or None
        (blocking: run it in a thread). Reads only those bytes. The caller verifies them,
        as it verifies a whole block, and discards the block if they are bad."""
        name = self._name(key)
        with self._lock:
            if name not in self._index:
                return None
            self._index.move_to_end(name)
        try:
            fd = os.open(self.dir / name, os.O_RDONLY)
        except FileNotFoundError:
            with self._lock:
                self._forget(name)
            return None
        try:
            return os.pread(fd, max(end - start, 0), start)
        finally:
            os.close(fd)

    def put(self, key: str, data: bytes) -> None:
        """Cache a block (blocking: run it in a thread). Never raises: a cache is optional."""
        if self.capacity <= 0 or len(data) > self.capacity:
            return
        name = self._name(key)
        with self._lock:
            if name in self._index:
                return
            self._evict(len(data))
            if self.used + len(data) > self.capacity or self._free_ratio() < self.min_free:
                return  # the room is held by puts still writing (not evictable yet)
            # Reserved while the file is written: puts in other threads count it, or
            # together they would each find room for themselves and overfill the cache.
            self.used += len(data)
        tmp = self.dir / f"{name}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.rename(tmp, self.dir / name)
        except OSError as e:
            log.warning("cannot cache block %s: %s", key, e)
            with self._lock:
                self.used -= len(data)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return
        with self._lock:
            if name not in self._index:
                self._index[name] = len(data)
            else:  # another thread cached it meanwhile: its bytes are counted once
                self.used -= len(data)

    def discard(self, key: str) -> None:
        """Drop a block (it was deleted from the store, or failed verification)."""
        name = self._name(key)
        with self._lock:
            known = name in self._index
            self._forget(name)
        if known:
            try:
                os.unlink(self.dir / name)
            except FileNotFoundError:
                pass

    def _forget(self, name: str) -> None:
        self.used -= self._index.pop(name, 0)

    def _free_ratio(self) -> float:
        st = os.statvfs(self.dir)
        return st.f_bavail / st.f_blocks if st.f_blocks else 1.0

    def _evict(self, incoming: int) -> None:
        while self._index and (
            self.used + incoming > self.capacity or self._free_ratio() < self.min_free
        ):
            name, size = self._index.popitem(last=False)
            self.used -= size
            try:
                os.unlink(self.dir / name)
            except FileNotFoundError:
                pass
