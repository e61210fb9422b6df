"""Benchmark riverfs against its peers and ceilings, in one run, with the figures and ratios
that the targets of issue 10 name (and issue 9's memfs / memfs_pyfuse3 ratios).

The filesystems (benchmarks/fs_targets.py): riverfs (a fresh volume), riverfs-enc (encrypted
+ zstd), riverfs-wb (mounted --writeback), rclone (`rclone mount` of a local directory, full
VFS cache; when rclone is installed), tmpfs, disk (a directory on the --tmp disk), memfs
(benchmarks/memfs.py: the Python FUSE ceiling, on riverfs.fuse) and memfs_pyfuse3 (the same
filesystem on pyfuse3). On each:
  - sequential write of one file (1 MiB writes, then fsync; the time includes fsync and close;
    riverfs-wb: the burst, done when its blocks are staged durably)
  - sequential read, cold: every cache emptied (riverfs and rclone: unmounted, their cache
    directories emptied, mounted again; rclone once its uploads have reached its directory;
    the kernel page cache dropped), then warm: the same file read again
  - 4 KiB random reads (os.pread at 4 KiB-aligned random offsets, kernel page cache dropped
    first; riverfs and rclone keep their own caches)
  - create (write 1 KiB, close) of many files in one directory; then, cold (remounted as
    above; memfs, which cannot be remounted: after its 1 s entry/attr timeout), stat of each;
    again cold, `ls -l` (scandir + lstat of each entry); then unlink of each
and, once per filesystem named by --rewrite-on (default riverfs), a random-rewrite run on one
8 MiB file (fsx if it is on PATH, else a Python workload of the same shape), with operations/s
by tenth of the run and the store's size against the file's live bytes. With --rss, it also
samples the riverfs daemon's peak RSS while writing and reading a --rss-size file. The report
ends with issue 10's targets, each measured and met or not. Run as root (it mounts tmpfs and
drops the kernel caches):

    .venv/bin/python benchmarks/fs_bench.py [--size 1G] [--files 10000] [--only riverfs,memfs]

pyfuse3 is no dependency of riverfs: for memfs_pyfuse3 this script creates a venv of its own,
benchmarks/.venv-pyfuse3, and installs pyfuse3 and trio there with pip (once; building
pyfuse3 needs libfuse3-dev, pkg-config and gcc: `make bench` installs them, and rclone).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
from fs_targets import (
    TARGETS,
    MiB,
    Riverfs,
    Target,
    drop_kernel_caches,
    log,
    make_target,
    mounts_under,
    run,
)

IO_SIZE = MiB
POOL_SIZE = 64 * MiB  # random data, repeated only every 64 MiB (beyond any block size)
SMALL_FILE = 1024
# issue 9: memfs (riverfs.fuse) / memfs_pyfuse3, at least
NEW_LAYER_TARGETS = {"create": 2.5, "unlink": 2.5, "stat": 2.0, "write": 1.5, "read_cold": 1.5}
REWRITE_FILE = 8 * MiB  # the random-rewrite file's largest size (fsx -l)
REWRITE_OP = MiB  # its largest operation (fsx -o)
REWRITE_FSYNC_EVERY = 100  # operations between two fsyncs (the Python workload)
COMPACTION_WAIT = 60.0  # seconds the store is watched after the rewrite run
COMPACTION_SAMPLE = 5.0  # seconds between two samples of its size


def parse_size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    try:
        value = int(float(num) * units[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512M, 1G)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return value


def parse_cpus(text: str) -> set[int]:
    """A CPU list as taskset takes it: "0", "0,2", "0-1"."""
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a CPU list: {text!r} (e.g. 0, 0-1)") from None
    if not cpus:
        raise argparse.ArgumentTypeError(f"empty CPU list: {text!r}")
    return cpus


def human(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------- measuring


class RssSampler:
    """Samples a process's RSS every `interval` seconds in a thread; keeps the peak.

    `find_pid` is asked again whenever the process goes away (riverfs is remounted
    between phases, so its daemon changes)."""

    def __init__(self, find_pid: Callable[[], int | None], interval: float = 0.05):
        self.find_pid = find_pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        proc = None
        while not self._stop.is_set():
            try:
                if proc is None:
                    pid = self.find_pid()
                    proc = psutil.Process(pid) if pid else None
                if proc is not None:
                    self.peak = max(self.peak, proc.memory_info().rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
                proc = None
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------- workloads


class Data:
    """Deterministic incompressible file contents: a random pool repeated every 64 MiB."""

    def __init__(self) -> None:
        self.pool = random.Random(1).randbytes(POOL_SIZE)
        self.view = memoryview(self.pool)

    def at(self, off: int, n: int) -> memoryview | bytes:
        """The n bytes at offset `off` of the file (a view when possible: for writing)."""
        start = off % POOL_SIZE
        if start + n <= POOL_SIZE:
            return self.view[start : start + n]
        return self.pool[start:] + bytes(self.at(0, n - (POOL_SIZE - start)))

    def same(self, off: int, got: bytes | bytearray) -> bool:
        """Whether `got` is what the file holds at `off` (bytes compare: memcmp, fast)."""
        start = off % POOL_SIZE
        if start + len(got) <= POOL_SIZE:
            return got == self.pool[start : start + len(got)]
        return got == self.at(off, len(got))


def seq_write(path: Path, size: int, data: Data) -> float:
    """Seconds to write `size` bytes in 1 MiB writes, fsync and close."""
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        off = 0
        while off < size:
            buf = data.at(off, min(IO_SIZE, size - off))
            while buf:
                n = os.write(fd, buf)
                buf = buf[n:]
                off += n
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def seq_read(path: Path, size: int, data: Data) -> float:
    """Seconds spent in open/read/close of the whole file (verification not counted)."""
    buf = bytearray(IO_SIZE)
    spent = 0.0
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    spent += time.perf_counter() - t0
    try:
        off = 0
        while True:
            t0 = time.perf_counter()
            n = os.readv(fd, [buf])
            spent += time.perf_counter() - t0
            if n == 0:
                break
            if not data.same(off, buf if n == IO_SIZE else buf[:n]):
                raise RuntimeError(f"{path}: wrong data read at offset {off} (+{n})")
            off += n
        if off != size:
            raise RuntimeError(f"{path}: read {off} bytes, expected {size}")
    finally:
        t0 = time.perf_counter()
        os.close(fd)
        spent += time.perf_counter() - t0
    return spent


def random_reads(path: Path, size: int, count: int, data: Data) -> float:
    """Seconds spent in `count` 4 KiB preads at random 4 KiB-aligned offsets."""
    rng = random.Random(2)
    pages = max(1, size // 4096)
    offsets = [rng.randrange(pages) * 4096 for _ in range(count)]
    fd = os.open(path, os.O_RDONLY)
    spent = 0.0
    try:
        for off in offsets:
            t0 = time.perf_counter()
            got = os.pread(fd, 4096, off)
            spent += time.perf_counter() - t0
            if not data.same(off, got):
                raise RuntimeError(f"{path}: wrong data in random read at offset {off}")
    finally:
        os.close(fd)
    return spent


def small_files(
    root: Path, count: int, make_cold: Callable[[], None]
) -> tuple[float, float, float, float]:
    """Seconds to create (write 1 KiB, close) `count` files in one directory, to stat each
    and to list the directory as `ls -l` does (each after `make_cold`), and to unlink each."""
    d = root / "small"
    d.mkdir()
    names = [os.fsencode(d / f"f{i:06d}") for i in range(count)]
    payload = os.urandom(SMALL_FILE)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    t0 = time.perf_counter()
    for name in names:
        fd = os.open(name, flags, 0o644)
        try:
            os.write(fd, payload)
        finally:
            os.close(fd)
    t_create = time.perf_counter() - t0

    make_cold()
    t0 = time.perf_counter()
    for name in names:
        st = os.stat(name)
        if st.st_size != SMALL_FILE:
            raise RuntimeError(f"{os.fsdecode(name)}: size {st.st_size}, expected {SMALL_FILE}")
    t_stat = time.perf_counter() - t0

    make_cold()
    t_list = list_long(d, count)

    t0 = time.perf_counter()
    for name in names:
        os.unlink(name)
    t_unlink = time.perf_counter() - t0
    d.rmdir()
    return t_create, t_stat, t_list, t_unlink


def list_long(d: Path, count: int) -> float:
    """Seconds to read directory `d` and lstat each entry, which is what `ls -l` asks of the
    filesystem (less the xattr probe for ACLs), checking there are `count` 1 KiB files."""
    seen = 0
    t0 = time.perf_counter()
    with os.scandir(os.fsencode(d)) as entries:
        for entry in entries:
            st = os.lstat(entry.path)
            if st.st_size != SMALL_FILE:
                raise RuntimeError(f"{entry.path!r}: size {st.st_size}, expected {SMALL_FILE}")
            seen += 1
    spent = time.perf_counter() - t0
    if seen != count:
        raise RuntimeError(f"{d}: listed {seen} entries, expected {count}")
    return spent


# A rewrite run's progress: (operations done, seconds since its start) at the start and at
# the end of each tenth of the run.
Marks = list[tuple[int, float]]


def rewrite_python(path: Path, ops: int, data: Data) -> Marks:
    """fsx's workload in Python: `ops` random operations on one file of at most 8 MiB:
    writes (40%) and reads (40%) of 1 B to 1 MiB at random offsets, truncates (20%) to a
    random size; an fsync every 100 operations. Every read, and the whole file at the end,
    is checked against a copy of the contents kept in memory."""
    rng = random.Random(3)  # the same operations in every run
    model = bytearray()
    ends = {ops * k // 10: k for k in range(1, 11)}
    marks: Marks = [(0, 0.0)]
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        t0 = time.perf_counter()
        for i in range(1, ops + 1):
            kind = rng.random()
            if kind < 0.2:
                size = rng.randrange(REWRITE_FILE + 1)
                os.ftruncate(fd, size)
                if size < len(model):
                    del model[size:]
                else:
                    model.extend(bytes(size - len(model)))
            elif kind < 0.6 and model:
                off = rng.randrange(len(model))
                n = rng.randint(1, min(REWRITE_OP, len(model) - off))
                if os.pread(fd, n, off) != model[off : off + n]:
                    raise RuntimeError(f"{path}: operation {i}: wrong data read at {off} (+{n})")
            else:
                off = rng.randrange(REWRITE_FILE)
                n = rng.randint(1, min(REWRITE_OP, REWRITE_FILE - off))
                buf = data.at(rng.randrange(POOL_SIZE), n)
                if os.pwrite(fd, buf, off) != n:
                    raise RuntimeError(f"{path}: operation {i}: short write at {off} (+{n})")
                if off > len(model):
                    model.extend(bytes(off - len(model)))
                model[off : off + n] = buf
            if i % REWRITE_FSYNC_EVERY == 0:
                os.fsync(fd)
            if i in ends:
                marks.append((i, time.perf_counter() - t0))
        os.fsync(fd)
        size = os.fstat(fd).st_size
        if size != len(model):
            raise RuntimeError(f"{path}: size {size} after the run, expected {len(model)}")
        for off in range(0, size, IO_SIZE):
            if os.pread(fd, IO_SIZE, off) != model[off : off + IO_SIZE]:
                raise RuntimeError(f"{path}: wrong data at {off} after the run")
    finally:
        os.close(fd)
    return marks


def rewrite_fsx(fsx: str, path: Path, ops: int, logdir: Path) -> Marks:
    """The same with fsx: `fsx -N ops -l 8388608 -o 1048576`. fsx prints a line numbered with
    the operation every `-p` operations; each line is timed as it arrives (line-buffered)."""
    interval = max(1, ops // 100)
    cmd = [
        fsx, "-N", str(ops), "-l", str(REWRITE_FILE), "-o", str(REWRITE_OP),
        "-S", "1", "-p", str(interval), "-P", str(logdir), str(path),
    ]  # fmt: skip
    if shutil.which("stdbuf"):
        cmd = ["stdbuf", "-oL", *cmd]
    progress = [(0, 0.0)]
    tail: collections.deque[str] = collections.deque(maxlen=30)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=logdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    try:
        for line in proc.stdout:
            now = time.perf_counter() - t0
            tail.append(line.rstrip())
            if m := re.match(r"\s*(\d+)\D", line):
                progress.append((int(m[1]), now))
        rc = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: it must not keep the mount busy
            proc.kill()
            proc.wait()
    if rc != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({rc}):\n" + "\n".join(tail))
    progress.append((ops, time.perf_counter() - t0))
    # each tenth's end: the first progress line at or past it
    marks: Marks = [(0, 0.0)]
    for k in range(1, 11):
        marks.append(next(p for p in progress if p[0] >= ops * k // 10))
    return marks


def tenth_rates(marks: Marks) -> list[float | None]:
    """Operations per second in each tenth of a run."""
    rates: list[float | None] = []
    for (n0, t0), (n1, t1) in zip(marks, marks[1:], strict=False):
        rates.append((n1 - n0) / (t1 - t0) if t1 > t0 else None)
    return rates


def store_usage(d: Path) -> tuple[int, int]:
    """(bytes, files) under `d`: the sizes of its files (os.walk + lstat)."""
    total = files = 0
    for top, _, names in os.walk(d):
        for name in names:
            with contextlib.suppress(FileNotFoundError):  # deleted while we walk
                total += os.lstat(os.path.join(top, name)).st_size
                files += 1
    return total, files


# ---------------------------------------------------------------- the run

# (key, label, unit, compare across filesystems)
METRICS = [
    ("write", "seq write {size} (1 MiB writes + fsync)", "MiB/s", True),
    ("read_cold", "seq read {size}, cold cache", "MiB/s", True),
    ("read_warm", "seq read {size}, warm cache", "MiB/s", True),
    ("rand_read", "random 4 KiB reads ({reads} preads)", "reads/s", True),
    ("create", "create {files} files (1 KiB each)", "files/s", True),
    ("stat", "stat {files} files, cold", "stats/s", True),
    ("ls", "ls -l of the {files} files, cold", "entries/s", True),
    ("unlink", "unlink {files} files", "files/s", True),
    ("rss_peak", "daemon peak RSS during the above", "MiB", False),
    ("rss_write", "riverfs: write {rss_size}, throughput", "MiB/s", False),
    ("rss_write_peak", "riverfs: peak RSS writing {rss_size}", "MiB", False),
    ("rss_read", "riverfs: read {rss_size} (cold), throughput", "MiB/s", False),
    ("rss_read_peak", "riverfs: peak RSS reading {rss_size}", "MiB", False),
]
# ratio columns of the table: (numerator, denominator, as a percentage)
RATIOS = [
    ("riverfs", "memfs", True),
    ("riverfs", "rclone", False),
    ("riverfs-enc", "riverfs", True),
    ("riverfs-wb", "riverfs", True),
    ("memfs", "memfs_pyfuse3", False),
]


def run_suite(t: Target, args, data: Data) -> dict[str, float]:
    res: dict[str, float] = {}
    path = t.mnt / "bench.dat"
    size = args.size
    with RssSampler(t.daemon_pid) as rss:
        log(f"{t.name}: sequential write of {human(size)}")
        res["write"] = size / MiB / seq_write(path, size, data)

        log(f"{t.name}: sequential read, cold cache")
        t.make_cold()
        res["read_cold"] = size / MiB / seq_read(path, size, data)

        log(f"{t.name}: sequential read, warm cache")
        res["read_warm"] = size / MiB / seq_read(path, size, data)

        log(f"{t.name}: {args.random_reads} random 4 KiB reads")
        drop_kernel_caches()
        res["rand_read"] = args.random_reads / random_reads(path, size, args.random_reads, data)
        os.unlink(path)

        log(f"{t.name}: create / stat / ls -l / unlink of {args.files} files")
        c, s, ls, u = small_files(t.mnt, args.files, t.make_cold_metadata)
        for key, spent in (("create", c), ("stat", s), ("ls", ls), ("unlink", u)):
            res[key] = args.files / spent
    if rss.peak and t.name not in ("tmpfs", "disk"):
        res["rss_peak"] = rss.peak / MiB
    return res


def run_rss(t: Riverfs, args, data: Data) -> dict[str, float]:
    res: dict[str, float] = {}
    path = t.mnt / "rss.dat"
    size = args.rss_size
    log(f"riverfs: writing {human(size)} while sampling the daemon's RSS")
    with RssSampler(t.daemon_pid) as rss:
        res["rss_write"] = size / MiB / seq_write(path, size, data)
    res["rss_write_peak"] = rss.peak / MiB
    t.make_cold()
    log(f"riverfs: reading {human(size)} (cold) while sampling the daemon's RSS")
    with RssSampler(t.daemon_pid) as rss:
        res["rss_read"] = size / MiB / seq_read(path, size, data)
    res["rss_read_peak"] = rss.peak / MiB
    os.unlink(path)
    return res


def settled_store_usage(store: Path, quiet: float = 3.0, limit: float = 60.0) -> tuple[int, int]:
    """The store's (bytes, files) once they stay the same for `quiet` seconds (at most `limit`)."""
    deadline = time.monotonic() + limit
    usage, since = store_usage(store), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.5)
        now = store_usage(store)
        if now != usage:
            usage, since = now, time.monotonic()
    return usage


def run_rewrite(t: Target, args, data: Data) -> dict:
    """The random-rewrite run on `t`, then COMPACTION_WAIT seconds watching its store."""
    store = t.store_dir()
    path = t.mnt / "rewrite.dat"
    fsx = shutil.which("fsx")
    tool = "fsx" if fsx else "python"
    log(f"{t.name}: random rewrite, {args.rewrite_ops} operations on one file ({tool})")
    # earlier phases' files are still being deleted: the base is taken once that is over
    base = settled_store_usage(store) if store else (0, 0)
    if fsx:
        marks = rewrite_fsx(fsx, path, args.rewrite_ops, t.workdir)
    else:
        marks = rewrite_python(path, args.rewrite_ops, data)
    res: dict = {
        "tool": tool,
        "ops": args.rewrite_ops,
        "seconds": marks[-1][1],
        "rates": tenth_rates(marks),
        "live_bytes": os.stat(path).st_size,
    }
    if store:
        samples = [store_usage(store)]
        if t.store_settles:
            log(f"{t.name}: watching the store's size for {COMPACTION_WAIT:.0f}s")
        deadline = time.monotonic() + (COMPACTION_WAIT if t.store_settles else 0)
        while time.monotonic() < deadline:
            time.sleep(min(COMPACTION_SAMPLE, max(0.0, deadline - time.monotonic())))
            samples.append(store_usage(store))
        # what the rest of the volume holds (the suite's files, being deleted) is not counted
        res["store_before"] = {"bytes": base[0], "files": base[1]}
        res["store_bytes"] = [b - base[0] for b, _ in samples]
        res["store_files"] = [f - base[1] for _, f in samples]
    os.unlink(path)
    return res


# ---------------------------------------------------------------- the report


def machine_info() -> dict[str, str]:
    mem = psutil.virtual_memory().total
    free = run(["free", "-h"]).stdout.strip() if shutil.which("free") else ""
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{mem / (1 << 30):.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "free -h": free,
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def fmt_ratio(v: float | None, percent: bool) -> str:
    if v is None:
        return "-"
    return f"{v:.0%}" if percent else f"{v:.2f}x"


def markdown(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """A markdown table, its first `left` columns left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        out = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(out) + " |"

    rules = ["-" * (w + 2) if i < left else "-" * (w + 1) + ":" for i, w in enumerate(widths)]
    sep = "|" + "|".join(rules) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def table(results: dict[str, dict[str, float]], args) -> str:
    names = [n for n in TARGETS if n in results]
    subst = {
        "size": human(args.size),
        "files": f"{args.files:,}",
        "reads": f"{args.random_reads:,}",
        "rss_size": human(args.rss_size),
    }
    ratios = [(a, b, pct) for a, b, pct in RATIOS if a in results and b in results]
    header = ["figure", "unit", *names, *(f"{a} / {b}" for a, b, _ in ratios)]
    rows = []
    for key, label, unit, compare in METRICS:
        values = [results[n].get(key) for n in names]
        if all(v is None for v in values):
            continue
        row = [label.format(**subst), unit, *map(fmt, values)]
        for a, b, pct in ratios:
            x, y = results[a].get(key), results[b].get(key)
            row.append(fmt_ratio(x / y, pct) if compare and x and y else "")
        rows.append(row)
    return markdown(header, rows, left=2)


def rewrite_tables(rewrites: dict[str, dict]) -> str:
    if not rewrites:
        return ""
    first = next(iter(rewrites.values()))
    if first["tool"] == "fsx":
        shape = f"fsx -N {first['ops']} -l {REWRITE_FILE} -o {REWRITE_OP}"
    else:
        shape = (
            f"{first['ops']:,} random writes, reads and truncates of one {human(REWRITE_FILE)} "
            f"file, up to {human(REWRITE_OP)} each, fsync every {REWRITE_FSYNC_EVERY}"
        )
    rows = []
    for name, r in rewrites.items():
        rates = r["rates"]
        last_first = rates[-1] / rates[0] if rates[0] and rates[-1] else None
        rows.append([name, *map(fmt, rates), fmt_ratio(last_first, False), f"{r['seconds']:.0f}"])
    header = ["fs", *(str(k) for k in range(1, 11)), "last / first", "s"]
    out = [f"Random rewrite ({shape}): operations/s by tenth of the run", ""]
    out.append(markdown(header, rows))
    rows = []
    for name, r in rewrites.items():
        if "store_bytes" not in r:
            continue
        live, sizes = r["live_bytes"], r["store_bytes"]
        rows.append([
            name,
            f"{live / MiB:.1f}",
            f"{sizes[0] / MiB:.1f}",
            f"{min(sizes) / MiB:.1f}",
            f"{sizes[-1] / MiB:.1f}",
            f"{r['store_files'][-1]:,}",
            fmt_ratio(sizes[-1] / live if live else None, False),
        ])  # fmt: skip
    if rows:
        header = ["fs", "live MiB", "store MiB at the end", f"min in {COMPACTION_WAIT:.0f} s",
                  f"after {COMPACTION_WAIT:.0f} s", "objects", "store / live"]  # fmt: skip
        out += ["", "Store after the run (bytes of its files, less what it held before)", ""]
        out.append(markdown(header, rows))
    return "\n".join(out)


# issue 10's targets: (what, numerator (fs, figure), denominator (fs, figure), at least)
ISSUE10_RATIOS = [
    ("seq write, riverfs / memfs", ("riverfs", "write"), ("memfs", "write"), 0.8),
    ("cold read, riverfs / memfs", ("riverfs", "read_cold"), ("memfs", "read_cold"), 0.8),
    ("warm read, riverfs / tmpfs (page-cache speed)", ("riverfs", "read_warm"),
     ("tmpfs", "read_warm"), 0.8),
    ("creates, riverfs / memfs", ("riverfs", "create"), ("memfs", "create"), 0.5),
    ("cold stats, riverfs / memfs", ("riverfs", "stat"), ("memfs", "stat"), 0.7),
    ("unlinks, riverfs / memfs", ("riverfs", "unlink"), ("memfs", "unlink"), 0.5),
    ("ls -l, riverfs / memfs", ("riverfs", "ls"), ("memfs", "ls"), 0.7),
    ("seq write, riverfs / rclone", ("riverfs", "write"), ("rclone", "write"), 1.0),
    ("cold read, riverfs / rclone", ("riverfs", "read_cold"), ("rclone", "read_cold"), 1.0),
    ("creates, riverfs / rclone", ("riverfs", "create"), ("rclone", "create"), 1.0),
    ("cold stats, riverfs / rclone", ("riverfs", "stat"), ("rclone", "stat"), 1.0),
    ("unlinks, riverfs / rclone", ("riverfs", "unlink"), ("rclone", "unlink"), 1.0),
    ("seq write, riverfs-enc / riverfs", ("riverfs-enc", "write"), ("riverfs", "write"), 0.8),
    ("cold read, riverfs-enc / riverfs", ("riverfs-enc", "read_cold"),
     ("riverfs", "read_cold"), 0.8),
    ("random 4 KiB reads, riverfs-enc / riverfs", ("riverfs-enc", "rand_read"),
     ("riverfs", "rand_read"), 0.5),
    ("burst (seq write), riverfs-wb / disk", ("riverfs-wb", "write"), ("disk", "write"), 0.7),
    ("creates, riverfs-wb / riverfs", ("riverfs-wb", "create"), ("riverfs", "create"), 2.0),
]  # fmt: skip


@dataclass(slots=True, frozen=True)
class Goal:
    """One target of issue 10 and what this run measured for it (None: not in this run)."""

    what: str
    got: float | None
    want: float
    unit: str  # "%" or "x" (ratios) or "MiB"
    at_most: bool = False

    @property
    def met(self) -> bool | None:
        if self.got is None:
            return None
        return self.got <= self.want if self.at_most else self.got >= self.want

    def show(self, v: float | None) -> str:
        if self.unit == "MiB":
            return "-" if v is None else f"{v:.0f} MiB"
        return fmt_ratio(v, self.unit == "%")


def issue10_targets(
    results: dict[str, dict[str, float]], rewrites: dict[str, dict], args
) -> list[Goal]:
    """Every target of issue 10 that this script measures."""
    goals = []
    for what, (a, ka), (b, kb), want in ISSUE10_RATIOS:
        x, y = results.get(a, {}).get(ka), results.get(b, {}).get(kb)
        goals.append(Goal(what, x / y if x and y else None, want, "%" if want < 1 else "x"))
    for name in [n for n in rewrites if n.startswith("riverfs")] or ["riverfs"]:
        r = rewrites.get(name, {})
        rates = r.get("rates") or [None]
        got = rates[-1] / rates[0] if rates[0] and rates[-1] else None
        goals.append(Goal(f"rewrite ops/s, last / first tenth ({name})", got, 0.5, "x"))
        sizes, live = r.get("store_bytes"), r.get("live_bytes")
        got = sizes[-1] / live if sizes and live else None
        what = f"store / live bytes after {COMPACTION_WAIT:.0f} s ({name})"
        goals.append(Goal(what, got, 3.0, "x", at_most=True))
    peaks = [results.get("riverfs", {}).get(k) for k in ("rss_write_peak", "rss_read_peak")]
    what = f"riverfs peak RSS streaming {human(args.rss_size)} (--rss; the target: 10 GiB)"
    goals.append(Goal(what, max(peaks) if all(peaks) else None, 300, "MiB", at_most=True))
    return goals


VERDICT = {True: "met", False: "NOT met", None: "not in this run"}


def issue10_table(goals: list[Goal]) -> str:
    cells = [
        [g.what, g.show(g.got), ("<= " if g.at_most else ">= ") + g.show(g.want), VERDICT[g.met]]
        for g in goals
    ]
    return "Targets (issue 10), this run:\n\n" + markdown(
        ["target", "measured", "wanted", ""], cells
    )


def layer_targets(results: dict[str, dict[str, float]]) -> str:
    """memfs / memfs_pyfuse3 against the targets of issue 9, one line each."""
    new, old = results.get("memfs"), results.get("memfs_pyfuse3")
    if not new or not old:
        return ""
    labels = {
        "create": "creates",
        "unlink": "unlinks",
        "stat": "stats",
        "write": "seq write",
        "read_cold": "seq read, cold",
    }
    out = ["Targets of issue 9 (memfs on riverfs.fuse / memfs_pyfuse3):"]
    for key, want in NEW_LAYER_TARGETS.items():
        if new.get(key) and old.get(key):
            got = new[key] / old[key]
            verdict = "met" if got >= want else "NOT met"
            out.append(f"  {labels[key]:<16} {got:5.2f}x (target >= {want}x): {verdict}")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark riverfs against its peers and ceilings (see the module docstring)."
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=parse_size("1G"),
        help="size of the sequential file (default 1G)",
    )
    parser.add_argument(
        "--files", type=int, default=10_000, help="number of small files (default 10000)"
    )
    parser.add_argument(
        "--random-reads",
        type=int,
        default=20_000,
        help="number of 4 KiB random reads (default 20000)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="run each filesystem's figures this many times and keep the best (default 3)",
    )
    parser.add_argument(
        "--only",
        default=None,
        help=f"comma-separated subset of {','.join(TARGETS)} (default: all; rclone only "
        "when it is installed)",
    )
    parser.add_argument(
        "--rewrite-ops",
        type=int,
        default=50_000,
        help="operations of the random-rewrite run (default 50000; 0: no rewrite run)",
    )
    parser.add_argument(
        "--rewrite-on",
        default="riverfs",
        help="comma-separated filesystems of the run to do the rewrite run on, once each, after "
        "their rounds (default riverfs)",
    )
    parser.add_argument(
        "--rss",
        action="store_true",
        help="also sample riverfs's peak RSS writing and reading --rss-size (slow)",
    )
    parser.add_argument(
        "--rss-size",
        type=parse_size,
        default=parse_size("4G"),
        help="file size for --rss (default 4G; issue 10's target names 10G)",
    )
    parser.add_argument(
        "--tmp",
        type=Path,
        default=None,
        help="directory for the volumes, caches and mountpoints, and the 'disk' filesystem "
        "(default: $TMPDIR or /tmp; must not be tmpfs for a fair riverfs)",
    )
    parser.add_argument(
        "--riverfs-args",
        default="",
        help="extra arguments for 'riverfs mount', e.g. '--cache-size 2G'",
    )
    parser.add_argument(
        "--cpus",
        type=parse_cpus,
        default=None,
        help="run the benchmark and every daemon it starts on these CPUs only (e.g. 0): with "
        "one CPU, a request and its reply need no wake-up of another CPU, which on a VM costs "
        "more than the filesystem itself and makes unpinned metadata figures vary several-fold "
        "between runs (see docs/BENCHMARKS.md)",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()

    skipped: dict[str, str] = {}
    if args.only is None:
        only = list(TARGETS)
        if not shutil.which("rclone"):
            only.remove("rclone")
            skipped["rclone"] = "not installed (apt-get install rclone; make bench does)"
    else:
        only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(only) - set(TARGETS)
    if unknown or not only:
        parser.error(f"--only: unknown filesystem(s) {sorted(unknown)}; choose from {TARGETS}")
    if "rclone" in only and not shutil.which("rclone"):
        parser.error("--only rclone: rclone is not on PATH (apt-get install rclone)")
    rewrite_on = [n.strip() for n in args.rewrite_on.split(",") if n.strip()]
    if set(rewrite_on) - set(TARGETS):
        parser.error(f"--rewrite-on: unknown filesystem(s); choose from {TARGETS}")
    if args.rewrite_ops:
        for name in rewrite_on:
            if name not in only:
                skipped[f"rewrite run on {name}"] = "not in --only"
    if args.repeat < 1 or args.files < 1 or args.random_reads < 1:
        parser.error("--repeat, --files and --random-reads must be at least 1")
    if args.rewrite_ops and args.rewrite_ops < 10:
        parser.error("--rewrite-ops must be 0 or at least 10 (it is reported by tenths)")
    if args.rss and "riverfs" not in only:
        parser.error("--rss needs riverfs in --only")
    if os.geteuid() != 0:
        print(
            "fs_bench: run as root (it mounts tmpfs and drops the kernel caches)", file=sys.stderr
        )
        return 2
    for what, why in skipped.items():
        log(f"{what}: skipped ({why})")

    # SIGTERM unwinds like Ctrl-C, so every `finally` unmounts what was mounted.
    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored

    if args.cpus is not None:
        try:  # inherited by every process started from here on (daemons and their threads)
            os.sched_setaffinity(0, args.cpus)
        except OSError as e:
            parser.error(f"--cpus: {e.strerror}")
    info = machine_info()
    if args.cpus is not None:
        info["pinned to CPUs"] = ",".join(map(str, sorted(args.cpus)))
    root = Path(tempfile.mkdtemp(prefix="riverfs-bench-", dir=args.tmp))
    log(f"working directory {root}")
    data = Data()
    results: dict[str, dict[str, float]] = {}
    rewrites: dict[str, dict] = {}
    failures: dict[str, str] = {}
    interrupted = False
    try:
        for name in TARGETS:
            if name not in only:
                continue
            target: Target | None = None
            try:
                target = make_target(
                    name,
                    root / name,
                    args.riverfs_args.split(),
                    tmpfs_size=max(args.size, args.rss_size) + 512 * MiB,
                )
                with target:
                    best: dict[str, float] = {}
                    for rep in range(args.repeat):
                        if args.repeat > 1:
                            log(f"{name}: round {rep + 1} of {args.repeat}")
                        for key, value in run_suite(target, args, data).items():
                            best[key] = max(value, best.get(key, value))
                    results[name] = best
                    if name == "riverfs" and args.rss:
                        results[name].update(run_rss(target, args, data))
                    if args.rewrite_ops and name in rewrite_on:
                        rewrites[name] = run_rewrite(target, args, data)
            except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                failures[name] = f"{type(e).__name__}: {e}"
                if isinstance(target, Riverfs) and not isinstance(e, RuntimeError):
                    failures[name] += "\n" + target.log_tail()  # RuntimeErrors carry it
                log(f"{name}: FAILED: {failures[name]}")
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; everything mounted has been unmounted")
    finally:
        leftover = mounts_under(root)
        if leftover:
            log(f"warning: still mounted, not removing {root}: {leftover}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    print()
    print(
        f"riverfs benchmark, {info['date']}: {info['nproc']} CPUs ({info['cpu']}), "
        f"{info['memory']} RAM, Linux {info['kernel']}, Python {info['python']}"
    )
    exe = sys.executable
    if exe.startswith(os.getcwd() + "/"):
        exe = os.path.relpath(exe)
    print(f"command: {shlex.join([exe, *sys.argv])}")
    end_load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average (1/5/15 min): {info['load']} at the start, {end_load} at the end")
    if args.cpus is not None:
        print(f"benchmark and daemons pinned to CPU(s) {info['pinned to CPUs']}")
    if args.repeat > 1:
        print(f"each figure: the best of {args.repeat} rounds (the rewrite run: one)")
    for what, why in skipped.items():
        print(f"{what}: skipped ({why})")
    print()
    targets = issue10_targets(results, rewrites, args)
    if results:
        print(table(results, args))
    if rewrites:
        print()
        print(rewrite_tables(rewrites))
    if results:
        print()
        print(issue10_table(targets))
        layer = layer_targets(results)
        if layer:
            print()
            print(layer)
    for name, err in failures.items():
        print(f"\n{name} failed: {err}")
    if args.json:
        report = {
            "machine": info,
            "args": sys.argv[1:],
            "results": results,
            "rewrite": rewrites,
            "targets_issue10": [
                {
                    "target": g.what,
                    "measured": g.got,
                    "wanted": ("<= " if g.at_most else ">= ") + g.show(g.want),
                    "verdict": VERDICT[g.met],
                }
                for g in targets
            ],
            "skipped": skipped,
            "failures": failures,
        }
        args.json.write_text(json.dumps(report, indent=2))
    return 130 if interrupted else (1 if failures else 0)


if __name__ == "__main__":
    sys.exit(main())
