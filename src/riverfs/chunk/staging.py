"""Write-back staging: blocks kept durably on local disk until the store has them.

With `mount --writeback`, saving a block writes its stored form here (temporary file,
rename) and returns; before the blocks' metadata is committed (close, fsync, a full buffer),
`sync` fsyncs them and the directory. A fixed number of upload workers moves them
to the store, retrying failures with backoff for as long as it takes (a staged block is
never dropped), and removes the staged file once the store has it. Reads look here before
the store: a block committed in metadata but not uploaded yet is only here.

After a crash the next mount finds the staged files (their names are the object keys,
flattened), serves reads of them from here and queues their uploads. Unmount waits until
everything is uploaded, or until the store has been unreachable for `--unmount-wait`
seconds: then the blocks stay here for the next mount (other mounts cannot read them
meanwhile; nothing is lost). Staging refuses new blocks (ENOSPC) when its disk is 95% full.

Every mount has a staging area, not only write-back ones: a synchronous mount spills here the
blocks the store refuses (so fsync can still return 0, the data being durable) and sends its
blocks here directly while the store is down (`store_down`: set by a failed upload or by a
mount that started without reaching the store, cleared by the next upload or probe that
succeeds; one log line each way).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
from pathlib import Path

from riverfs.errors import FSError
from riverfs.objects import ObjectStore

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0
DRAIN_BACKOFF = 2.0  # longest pause between retries while unmount waits
DRAIN_CHECK = 0.5  # seconds between looks at the store's state while unmount waits
MIN_FREE = 0.05  # staging fails writes with ENOSPC before its disk is this close to full


def _name(key: str) -> str:
    return key.replace("/", "~")


def _key(name: str) -> str:
    return name.replace("~", "/")


class Staging:
    def __init__(self, directory: Path, store: ObjectStore, concurrency: int = 4) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.store = store
        self._concurrency = concurrency
        self._queue_: asyncio.Queue[str] = asyncio.Queue()  # bounded by the staged files
        self._workers: list[asyncio.Task] = []
        self._sizes: dict[str, int] = {}  # staged key -> bytes, until uploaded
        self._unsynced: set[str] = set()  # written, not fsynced yet
        self._sync_lock = asyncio.Lock()
        self._hurry = asyncio.Event()  # set while draining: retry now, not after the backoff
        # After a failed fsync nobody can tell which staged blocks are durable: every later
        # sync fails (the writes that needed it fail with it), uploads carry on.
        self._broken: FSError | None = None
        self.failures = 0  # upload attempts that failed (retried)
        self.store_down = False  # the last upload (or probe) failed: degraded until one works
        self._probe: asyncio.Task | None = None

    def start(self, probe_key: str | None = None) -> None:
        """Start the upload workers; with `probe_key` (the store was unreachable at mount),
        also try to read that object with backoff until the store answers."""
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._work()) for _ in range(self._concurrency)]
        if probe_key is not None:
            self.store_down = True
            self._probe = loop.create_task(self._wait_for_store(probe_key))

    async def _wait_for_store(self, key: str) -> None:
        delay = 0.5
        while self.store_down:
            try:
                await self.store.head(key)
            except Exception as e:
                log.debug("store still unreachable: %s", e)
                await asyncio.sleep(delay * (1 + random.random() / 2))
                delay = min(delay * 2, MAX_BACKOFF)
            else:
                self.note_store_up()

    def note_store_down(self, cause: BaseException) -> None:
        """An upload failed: the mount is degraded (blocks go here) until one succeeds."""
        if not self.store_down:
            self.store_down = True
            log.warning(
                "store unreachable (%s): degraded, writes are staged in %s and uploaded "
                "when it is back",
                cause,
                self.dir,
            )

    def note_store_up(self) -> None:
        if self.store_down:
            self.store_down = False
            log.warning(
                "store reachable again: no longer degraded (%d blocks to upload)", self.waiting
            )

    @property
    def waiting_bytes(self) -> int:
        return sum(self._sizes.values())

    @property
    def waiting(self) -> int:
        return len(self._sizes)

    def resume(self) -> int:
        """Queue the uploads a previous mount left (after a crash); return how many."""
        for entry in os.scandir(self.dir):
            if entry.name.endswith(".tmp"):
                os.unlink(entry.path)  # never renamed: its write never returned
                continue
            self._queue(_key(entry.name), entry.stat().st_size)
        return len(self._sizes)

    def _write(self, key: str, raw: bytes) -> None:
        path = self.dir / _name(key)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(raw)
            os.rename(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            code = errno.ENOSPC if e.errno in (errno.ENOSPC, errno.EDQUOT) else errno.EIO
            raise FSError(code, f"staging {key} in {self.dir}: {e.strerror}") from e

    def _check_room(self, size: int) -> None:
        usage = os.statvfs(self.dir)
        if (usage.f_bavail * usage.f_frsize - size) < MIN_FREE * usage.f_blocks * usage.f_frsize:
            raise FSError(errno.ENOSPC, f"staging {self.dir}: disk almost full")

    async def put(self, key: str, raw: bytes) -> None:
        """Stage a block (durable after `sync`), then upload it in the background."""
        self._check_room(len(raw))
        await asyncio.get_running_loop().run_in_executor(None, self._write, key, raw)
        self._unsynced.add(key)
        self._queue(key, len(raw))

    async def sync(self) -> None:
        """Make every block staged so far durable (before its metadata is committed)."""
        async with self._sync_lock:  # a sync in progress may hold a caller's blocks
            if self._broken is not None:
                raise self._broken
            keys, self._unsynced = self._unsynced, set()
            if keys:
                try:
                    await asyncio.get_running_loop().run_in_executor(None, self._fsync, keys)
                except FSError as e:
                    log.error("staging is unusable until remount: %s", e)
                    self._broken = FSError(e.errno, f"an earlier fsync failed: {e}")
                    raise

    def _fsync(self, keys: set[str]) -> None:
        try:
            for key in keys:
                try:
                    fd = os.open(self.dir / _name(key), os.O_RDONLY)
                except FileNotFoundError:
                    continue  # uploaded already: durable in the store
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            fd = os.open(self.dir, os.O_RDONLY)  # the renames
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            code = errno.ENOSPC if e.errno in (errno.ENOSPC, errno.EDQUOT) else errno.EIO
            raise FSError(code, f"syncing staged blocks in {self.dir}: {e.strerror}") from e

    def holds(self, key: str) -> bool:
        """True while the block waits here to be uploaded (`riverfs info`)."""
        return key in self._sizes

    def get(self, key: str) -> bytes | None:
        """The staged block, or None (blocking: run it in a thread)."""
        if key not in self._sizes:
            return None
        try:
            return (self.dir / _name(key)).read_bytes()
        except FileNotFoundError:
            return None  # uploaded (and removed) meanwhile: the store has it

    def discard(self, key: str) -> None:
        """The block's slice was deleted: do not upload it (if not on its way already)."""
        if self._sizes.pop(key, None) is not None:
            (self.dir / _name(key)).unlink(missing_ok=True)

    def _queue(self, key: str, size: int) -> None:
        if key not in self._sizes:
            self._sizes[key] = size
            self._queue_.put_nowait(key)

    async def _work(self) -> None:
        while True:
            key = await self._queue_.get()
            try:
                await self._upload(key)
            except Exception:  # a worker must survive anything one block does
                log.exception("upload worker: staged %s", key)
            finally:
                self._queue_.task_done()

    async def _upload(self, key: str) -> None:
        """Upload one staged block, retrying until the store has it; then unstage it."""
        delay = 0.5
        path = self.dir / _name(key)
        loop = asyncio.get_running_loop()
        while key in self._sizes:
            try:
                raw = await loop.run_in_executor(None, path.read_bytes)
                await self.store.put(key, raw)
                self.note_store_up()
                break
            except FileNotFoundError:
                break  # discarded
            except Exception as e:
                self.failures += 1
                self.note_store_down(e)
                log.warning("upload of staged %s failed (retrying in %.0fs): %s", key, delay, e)
            wait = delay * (1 + random.random() / 2)
            try:  # draining (unmount): a long backoff shrinks to a short one
                await asyncio.wait_for(self._hurry.wait(), wait)
                await asyncio.sleep(min(wait, DRAIN_BACKOFF))
            except TimeoutError:
                pass
            delay = min(delay * 2, MAX_BACKOFF)
        path.unlink(missing_ok=True)
        self._sizes.pop(key, None)

    async def drain(self, patience: float | None = None) -> int:
        """Wait until every staged block is in the store (retrying failures without waiting
        out their backoff); return how many are left. With `patience`, stop waiting once the
        store has been unreachable for that many seconds in a row: the blocks left stay
        here, durable, for the next mount to upload (unmount must not hang on a dead store).
        """
        self._hurry.set()
        joined = asyncio.ensure_future(self._queue_.join())
        loop = asyncio.get_running_loop()
        down_since: float | None = None
        try:
            while not joined.done():
                await asyncio.wait([joined], timeout=DRAIN_CHECK)
                if patience is None or joined.done():
                    continue
                if not self.store_down:
                    down_since = None
                elif down_since is None:
                    down_since = loop.time()
                elif loop.time() - down_since >= patience:
                    break
            return self.waiting
        finally:
            joined.cancel()
            self._hurry.clear()

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
