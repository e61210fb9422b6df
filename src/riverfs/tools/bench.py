"""`riverfs bench`'s workload and its measurements, on any directory (a riverfs mount or a
local disk, so the two can be compared); `cli/bench.py` prints them.

Like `juicefs bench -p N`: each of N threads writes, then reads, a big file of its own, then
writes, reads and stats its share of the small files, in a fresh `PATH/riverfs-bench-<pid>`
that is removed at the end, also on an error or Ctrl-C. Every call is an `os` call on a
reused buffer of random bytes, so the figures are the filesystem's, not Python's: a big file
is written and read in `block_size` requests (each one timed), a small file is timed from
`open` to `close`. Before a read phase the files are fsynced and dropped from the page cache
(`posix_fadvise(DONTNEED)`), and `mincore` measures what is left, so a result says whether
its reads were cold.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from riverfs.errors import RiverError

BIG_WRITE = "big-file write"
BIG_READ = "big-file read"
SMALL_WRITE = "small-file write"
SMALL_READ = "small-file read"
SMALL_STAT = "small-file stat"
PHASES = (BIG_WRITE, BIG_READ, SMALL_WRITE, SMALL_READ, SMALL_STAT)


@dataclass
class Phase:
    """One phase's figures. `seconds` is the wall time from the threads' common start to the
    last one's end (a big-file write's includes its fsync and close); throughput is bytes (big
    files) or files (small files) over it. Latencies are of one operation: a `block_size`
    request for a big file, open..close (or the stat) of one small file."""

    name: str
    files: int
    operations: int
    bytes: int
    seconds: float
    throughput: float
    unit: str  # "MiB/s" or "files/s"
    mean_ms: float
    p50_ms: float
    p99_ms: float
    # Big-file write: mean fsync + close time of one file (also in `seconds`).
    sync_ms: float | None = None
    # Reads: the fraction of the files' pages in the page cache as the phase started (0: a
    # cold read), None where it could not be measured (mincore refused).
    cached_fraction: float | None = None


@dataclass
class BenchResult:
    path: str
    filesystem: str  # the type /proc/self/mountinfo gives PATH: ext4, tmpfs, fuse.riverfs
    threads: int
    big_file_size: int
    small_file_size: int
    small_file_count: int
    block_size: int
    phases: list[Phase] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def run_bench(
    path: Path,
    *,
    big_file_size: int = 1 << 30,
    small_file_size: int = 128 << 10,
    small_file_count: int = 100,
    threads: int = 1,
    block_size: int = 1 << 20,
    on_phase: Callable[[str], None] = lambda name: None,
) -> BenchResult:
    """Run the five phases in a fresh directory under `path` and remove it again.

    RiverError (one line, saying what to do) for a missing, non-directory or unwritable
    `path`, too little free space, or a full disk midway; nothing is left behind.
    `big_file_size` 0 skips the big-file phases, `small_file_count` 0 the small-file ones.
    """
    if threads < 1:
        raise RiverError(f"--threads {threads}: use 1 or more")
    if block_size < 1:
        raise RiverError("--block-size must be at least 1 byte")
    path = Path(os.path.abspath(path))
    _check_target(path, threads * big_file_size + small_file_count * small_file_size)
    work = path / f"riverfs-bench-{os.getpid()}"
    try:
        os.mkdir(work)
    except OSError as e:
        raise _target_error(path, e) from None
    result = BenchResult(
        path=str(path),
        filesystem=filesystem_type(path),
        threads=threads,
        big_file_size=big_file_size,
        small_file_size=small_file_size,
        small_file_count=small_file_count,
        block_size=block_size,
    )
    try:
        _Workload(work, result, on_phase).run()
    except BaseException as e:
        # The first error is the one to report; a leftover directory is then added to it.
        try:
            _remove(work)
        except RiverError as leftover:
            e.add_note(str(leftover))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise RiverError(
                f"{path} filled up during the benchmark ({e.strerror}): free space there or "
                "use a smaller --big-file-size, --small-file-count or --threads"
            ) from None
        raise
    _remove(work)
    return result


def _check_target(path: Path, needed: int) -> None:
    if not path.exists():
        raise RiverError(f"{path} does not exist: create it (mkdir -p {path}) or give another")
    if not path.is_dir():
        raise RiverError(f"{path} is not a directory: give the directory to benchmark in")
    st = os.statvfs(path)
    if st.f_flag & os.ST_RDONLY:
        raise _target_error(path, OSError(errno.EROFS, os.strerror(errno.EROFS)))
    if not os.access(path, os.W_OK | os.X_OK):
        raise _target_error(path, OSError(errno.EACCES, os.strerror(errno.EACCES)))
    free = st.f_bavail * st.f_frsize
    if needed > free:
        raise RiverError(
            f"{path} has {free >> 20} MiB free, the benchmark writes {-(-needed >> 20)} MiB: "
            "free space or use a smaller --big-file-size, --small-file-count or --threads"
        )


def _target_error(path: Path, e: OSError) -> RiverError:
    if e.errno in (errno.EACCES, errno.EPERM):
        return RiverError(f"cannot write in {path} (permission denied): give a writable directory")
    if e.errno == errno.EROFS:
        return RiverError(f"{path} is on a read-only filesystem: give a writable directory")
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return RiverError(f"{path} is full ({e.strerror}): free space or give another directory")
    return RiverError(f"cannot create a directory in {path}: {e.strerror}")


def _remove(work: Path) -> None:
    """Remove the work directory; a leftover (another error) is named, never silent."""
    shutil.rmtree(work, ignore_errors=True)
    if os.path.lexists(work):
        raise RiverError(f"could not remove the benchmark's directory {work}: remove it by hand")


def filesystem_type(path: Path) -> str:
    """The type of the filesystem `path` is on, from the deepest mount containing it."""
    target, best, kind = os.path.realpath(path), "", "unknown"
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                point = fields[4].replace("\\040", " ")
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, fields[fields.index("-") + 1]
    except OSError:
        pass
    return kind


class _Workload:
    """The files of one run and the threads that work on them, phase by phase."""

    def __init__(self, work: Path, result: BenchResult, on_phase: Callable[[str], None]):
        self.result = result
        self.on_phase = on_phase
        self.n = result.threads
        self.buffer = os.urandom(max(result.block_size, 1))
        self.big = [str(work / f"big.{t}") for t in range(self.n)]
        small_dir = work / "small"
        os.mkdir(small_dir)
        count = result.small_file_count
        share = [count // self.n + (t < count % self.n) for t in range(self.n)]
        self.small = [[str(small_dir / f"{t}.{i}") for i in range(share[t])] for t in range(self.n)]

    def run(self) -> None:
        r = self.result
        if r.big_file_size:
            self._phase(BIG_WRITE, self._write_big, files=self.n, size=r.big_file_size)
            cached = _drop_cached(self.big)
            self._phase(BIG_READ, self._read_big, files=self.n, size=r.big_file_size)
            r.phases[-1].cached_fraction = cached
        if r.small_file_count:
            files, size = r.small_file_count, r.small_file_size
            self._phase(SMALL_WRITE, self._write_small, files=files, size=size)
            cached = _drop_cached([p for share in self.small for p in share])
            self._phase(SMALL_READ, self._read_small, files=files, size=size)
            r.phases[-1].cached_fraction = cached
            self._phase(SMALL_STAT, self._stat_small, files=files, size=0)

    def _phase(self, name: str, work, *, files: int, size: int) -> None:
        """Run `work(thread, record)` in every thread from a common start; add the Phase."""
        self.on_phase(name)
        latencies: list[list[float]] = [[] for _ in range(self.n)]
        syncs: list[list[float]] = [[] for _ in range(self.n)]
        ends = [0.0] * self.n
        errors: list[BaseException] = []
        stop = threading.Event()
        start = threading.Barrier(self.n + 1)

        def body(t: int) -> None:
            try:
                start.wait()
                work(t, latencies[t], syncs[t], stop)
            except BaseException as e:  # the main thread re-raises it
                errors.append(e)
                stop.set()
            finally:
                ends[t] = time.perf_counter()

        workers = [
            threading.Thread(target=body, args=(t,), name=f"bench-{t}", daemon=True)
            for t in range(self.n)
        ]
        for w in workers:
            w.start()
        try:
            start.wait()
            began = time.perf_counter()
            for w in workers:
                w.join()
        except BaseException:  # Ctrl-C: the workers stop at their next operation
            stop.set()
            start.abort()
            for w in workers:
                w.join()
            raise
        if errors:
            raise errors[0]
        ops = sorted(x for each in latencies for x in each)
        sync = [x for each in syncs for x in each]
        seconds = max(max(ends) - began, 1e-9)
        total = files * size
        big = name in (BIG_WRITE, BIG_READ)
        self.result.phases.append(
            Phase(
                name=name,
                files=files,
                operations=len(ops),
                bytes=total,
                seconds=seconds,
                throughput=(total / (1 << 20) if big else files) / seconds,
                unit="MiB/s" if big else "files/s",
                mean_ms=1e3 * sum(ops) / len(ops) if ops else 0.0,
                p50_ms=1e3 * _percentile(ops, 0.50),
                p99_ms=1e3 * _percentile(ops, 0.99),
                sync_ms=1e3 * sum(sync) / len(sync) if sync else None,
            )
        )

    # ---- the operations of each phase; each appends its timings and stops when told ----

    def _write_big(self, t: int, ops: list[float], syncs: list[float], stop) -> None:
        fd = os.open(self.big[t], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            self._write_timed(fd, self.result.big_file_size, ops, stop)
            began = time.perf_counter()
            os.fsync(fd)
        finally:
            os.close(fd)
        syncs.append(time.perf_counter() - began)

    def _read_big(self, t: int, ops: list[float], syncs: list[float], stop) -> None:
        fd = os.open(self.big[t], os.O_RDONLY)
        try:
            buf = bytearray(self.result.block_size)
            done, size = 0, self.result.big_file_size
            while done < size and not stop.is_set():
                began = time.perf_counter()
                n = os.readv(fd, [buf])
                ops.append(time.perf_counter() - began)
                if n == 0:
                    raise RiverError(f"{self.big[t]} ended at {done} of {size} bytes: short read")
                done += n
        finally:
            os.close(fd)

    def _write_small(self, t: int, ops: list[float], syncs: list[float], stop) -> None:
        for name in self.small[t]:
            if stop.is_set():
                return
            began = time.perf_counter()
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                self._write_timed(fd, self.result.small_file_size, None, stop)
            finally:
                os.close(fd)
            ops.append(time.perf_counter() - began)

    def _read_small(self, t: int, ops: list[float], syncs: list[float], stop) -> None:
        buf = bytearray(max(self.result.small_file_size, 1))
        for name in self.small[t]:
            if stop.is_set():
                return
            began = time.perf_counter()
            fd = os.open(name, os.O_RDONLY)
            try:
                done = 0
                while n := os.readv(fd, [buf]):
                    done += n
            finally:
                os.close(fd)
            ops.append(time.perf_counter() - began)
            if done != self.result.small_file_size:
                raise RiverError(f"{name} has {done} bytes, {self.result.small_file_size} written")

    def _stat_small(self, t: int, ops: list[float], syncs: list[float], stop) -> None:
        for name in self.small[t]:
            if stop.is_set():
                return
            began = time.perf_counter()
            os.stat(name)
            ops.append(time.perf_counter() - began)

    def _write_timed(self, fd: int, size: int, ops: list[float] | None, stop) -> None:
        """Write `size` bytes of the buffer in `block_size` requests, timing each into `ops`."""
        view = memoryview(self.buffer)
        done = 0
        while done < size and not stop.is_set():
            began = time.perf_counter()
            n = os.write(fd, view[: min(len(view), size - done)])
            if ops is not None:
                ops.append(time.perf_counter() - began)
            done += n


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * q // 1))
    return sorted_values[int(rank) - 1]


def _drop_cached(paths: list[str]) -> float | None:
    """Flush `paths` and drop them from the page cache; the fraction of their pages still
    cached after that (None where mincore cannot tell)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
        finally:
            os.close(fd)
    return cached_fraction(paths)


_libc = None


def cached_fraction(paths: list[str]) -> float | None:
    """The fraction of the files' pages in the page cache now (mincore of a read-only
    mapping), or None if a file cannot be mapped (a filesystem refusing mmap)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        _libc.mmap.restype = ctypes.c_void_p
        _libc.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        _libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    page = mmap.PAGESIZE
    cached = total = 0
    for p in paths:
        size = os.path.getsize(p)
        if size == 0:
            continue
        fd = os.open(p, os.O_RDONLY)
        try:
            addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        finally:
            os.close(fd)
        if addr in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            pages = -(-size // page)
            vec = ctypes.create_string_buffer(pages)
            if _libc.mincore(addr, size, vec) != 0:
                return None
            cached += sum(b & 1 for b in vec.raw)
            total += pages
        finally:
            _libc.munmap(addr, size)
    return cached / total if total else 0.0  # empty files: nothing to cache
