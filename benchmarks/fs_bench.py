"""Benchmark riverfs against tmpfs and two minimal in-memory filesystems: memfs (riverfs's
own FUSE layer, riverfs.fuse.session) and memfs_pyfuse3 (the same filesystem on pyfuse3).

In one run, on each filesystem:
  - sequential write of one file (1 MiB writes, then fsync; the time includes fsync and close)
  - sequential read, cold: the kernel page cache dropped (riverfs: also unmounted, its disk
    cache emptied and mounted again), then warm: the same file read again
  - 4 KiB random reads (os.pread at 4 KiB-aligned random offsets, kernel page cache dropped
    first; riverfs keeps its own caches)
  - create (write 1 KiB, close), stat, unlink of many small files; stat runs after the
    1 s entry/attr timeout has expired, so the kernel asks the filesystem for every file
and prints a table with riverfs's ratio to memfs, the Python FUSE ceiling on this machine,
and memfs's ratio to memfs_pyfuse3 (what the new FUSE layer gained over pyfuse3, against the
targets of issue 9). With --rss, it also samples the riverfs daemon's peak RSS while writing
and reading a 4 GiB file. Run as root (it mounts tmpfs and drops the kernel caches):

    .venv/bin/python benchmarks/fs_bench.py [--size 1G] [--files 10000] [--only riverfs,memfs]

pyfuse3 is no dependency of riverfs: for memfs_pyfuse3 this script creates a venv of its own,
benchmarks/.venv-pyfuse3, and installs pyfuse3 and trio there with pip (once; building
pyfuse3 needs libfuse3-dev, pkg-config and gcc: `make bench` installs them).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
MiB = 1 << 20
IO_SIZE = MiB
POOL_SIZE = 64 * MiB  # random data, repeated only every 64 MiB (beyond any block size)
SMALL_FILE = 1024
TIMEOUT = 1.0  # attr/entry timeout of riverfs (default) and memfs
TARGETS = ("riverfs", "riverfs-enc", "tmpfs", "memfs", "memfs_pyfuse3")
DEFAULT_TARGETS = "riverfs,tmpfs,memfs,memfs_pyfuse3"
PYFUSE3_VENV = HERE / ".venv-pyfuse3"
PYFUSE3_PACKAGES = ["pyfuse3>=3.4", "trio"]  # pyfuse3 imports trio even in asyncio mode
# issue 9: memfs (riverfs.fuse) / memfs_pyfuse3, at least
NEW_LAYER_TARGETS = {"create": 2.5, "unlink": 2.5, "stat": 2.0, "write": 1.5, "read_cold": 1.5}
ENCRYPTED_FORMAT = ["--encrypt", "--compress", "zstd"]  # riverfs-enc: zstd + AES-256-GCM


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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


# ---------------------------------------------------------------- system helpers


def real(path: Path) -> str:
    """The real path of `path` without touching `path` itself: realpath() would lstat it,
    and a mountpoint whose daemon does not answer hangs whoever stats it."""
    return os.path.join(os.path.realpath(path.parent), path.name)


def is_mounted(path: Path) -> bool:
    target = real(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def answers(path: Path, timeout: float = 10) -> bool:
    """Whether the filesystem mounted at `path` answers a stat within `timeout` seconds
    (asked from a child process, which is killed if it hangs)."""
    try:
        return run(["stat", "-t", str(path)], timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def mounts_under(root: Path) -> list[str]:
    prefix = real(root) + "/"
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


_drop_warned = False


def drop_kernel_caches() -> None:
    global _drop_warned
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        if not _drop_warned:
            log(f"warning: cannot drop the kernel caches ({e}); 'cold' reads may be warm")
            _drop_warned = True


def wait_for(cond: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def run(cmd: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def force_unmount(path: Path) -> None:
    if is_mounted(path):
        run(["fusermount3", "-uz", str(path)])
    if is_mounted(path):
        run(["umount", "-l", str(path)])


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


# ---------------------------------------------------------------- filesystems under test


class Target:
    """A filesystem under test: mounted by `__enter__`, always unmounted by `__exit__`."""

    name = ""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.mnt = workdir / "mnt"

    def __enter__(self) -> Target:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mnt.mkdir(exist_ok=True)
        try:
            self.mount()
        except BaseException:
            self.unmount()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.unmount()

    def mount(self) -> None:
        raise NotImplementedError

    def unmount(self) -> None:
        raise NotImplementedError

    def make_cold(self) -> None:
        """Forget every cached byte of file data (kernel and filesystem caches)."""
        drop_kernel_caches()

    def daemon_pid(self) -> int | None:
        return None


class Tmpfs(Target):
    name = "tmpfs"

    def __init__(self, workdir: Path, size: int):
        super().__init__(workdir)
        self.size = size

    def mount(self) -> None:
        p = run(["mount", "-t", "tmpfs", "-o", f"size={self.size}", "bench-tmpfs", str(self.mnt)])
        if p.returncode != 0:
            raise RuntimeError(f"mount -t tmpfs failed (are you root?): {p.stderr.strip()}")

    def unmount(self) -> None:
        if is_mounted(self.mnt):
            run(["umount", str(self.mnt)])
        force_unmount(self.mnt)


def pyfuse3_python() -> str:
    """The python of benchmarks/.venv-pyfuse3, created and filled with pyfuse3 if needed."""
    python = PYFUSE3_VENV / "bin" / "python"
    check = [str(python), "-c", "import pyfuse3, pyfuse3.asyncio, trio"]
    if python.exists() and run(check).returncode == 0:
        return str(python)
    log(f"installing {' '.join(PYFUSE3_PACKAGES)} into {PYFUSE3_VENV} (once)")
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(PYFUSE3_VENV)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         *PYFUSE3_PACKAGES],
    ]  # fmt: skip
    for i, cmd in enumerate(steps):
        p = run(cmd, timeout=900)
        if p.returncode != 0:
            raise RuntimeError(
                f"{shlex.join(cmd)} failed ({p.returncode}); building pyfuse3 needs libfuse3-dev, "
                f"pkg-config and gcc (apt-get install libfuse3-dev pkg-config gcc):\n"
                + (p.stderr or p.stdout).strip()[-2000:]
            )
        if i == 0:  # keep the venv out of git status (what Python 3.13's venv does itself)
            (PYFUSE3_VENV / ".gitignore").write_text("*\n")
    if run(check).returncode != 0:
        raise RuntimeError(f"pyfuse3 installed into {PYFUSE3_VENV} but does not import")
    return str(python)


class Memfs(Target):
    """benchmarks/memfs.py, on riverfs.fuse (MemfsPyfuse3: the pyfuse3 one, run by `python`)."""

    name = "memfs"
    script = "memfs.py"

    def __init__(self, workdir: Path, python: str | None = None):
        super().__init__(workdir)
        self.python = python or sys.executable
        self.proc: subprocess.Popen | None = None
        self.logfile = workdir / f"{self.name}.log"

    def mount(self) -> None:
        with open(self.logfile, "wb") as logf:
            self.proc = subprocess.Popen(
                [self.python, str(HERE / self.script), str(self.mnt), "--timeout", str(TIMEOUT)],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches only us; we unmount it
            )

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.proc.returncode}): {self.log_tail()}"
                )
            return is_mounted(self.mnt)

        wait_for(ready, 15, f"{self.name} to mount")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.logfile.read_text(errors="replace")[-2000:].strip()
        return ""

    def unmount(self) -> None:
        if is_mounted(self.mnt):
            run(["fusermount3", "-u", str(self.mnt)])
        force_unmount(self.mnt)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def daemon_pid(self) -> int | None:
        return self.proc.pid if self.proc else None


class MemfsPyfuse3(Memfs):
    name = "memfs_pyfuse3"
    script = "memfs_pyfuse3.py"


class Riverfs(Target):
    name = "riverfs"

    def __init__(
        self, workdir: Path, extra_mount_args: list[str], format_args: list[str] | None = None
    ):
        super().__init__(workdir)
        self.format_args = format_args or []
        self.meta_url = f"sqlite://{workdir}/meta.db"
        self.store_url = f"file://{workdir}/store"
        self.cache_dir = workdir / "cache"
        self.extra = extra_mount_args
        self.logfile = workdir / "riverfs.log"
        self.pids: set[int] = set()

    def cli(self, *args: str, timeout: float = 300) -> None:
        cmd = [sys.executable, "-m", "riverfs", *args]
        # Output to a file, not a pipe: a daemon that keeps the pipe open would hang us.
        with open(self.logfile, "ab") as logf:
            logf.write(f"\n$ riverfs {' '.join(args)}\n".encode())
            logf.flush()
            p = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                start_new_session=True,
                env={**os.environ, "RIVERFS_PASSPHRASE": "benchmark passphrase"},
            )
        if p.returncode != 0:
            raise RuntimeError(f"riverfs {args[0]} failed ({p.returncode}):\n{self.log_tail()}")

    def log_tail(self) -> str:
        out = []
        for f in (self.logfile, self.cache_dir / "mount.log"):
            with contextlib.suppress(OSError):
                out.append(f"--- {f}\n" + f.read_text(errors="replace")[-2000:].strip())
        return "\n".join(out)

    def __enter__(self) -> Target:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(exist_ok=True)
        self.cli("format", self.meta_url, "--storage", self.store_url, *self.format_args)
        return super().__enter__()

    def mount(self) -> None:
        self.cli(
            "mount",
            self.meta_url,
            str(self.mnt),
            "--background",
            "--cache-dir",
            str(self.cache_dir),
            *self.extra,
            timeout=120,
        )
        if not is_mounted(self.mnt):
            raise RuntimeError(f"riverfs mount returned but {self.mnt} is not mounted")
        pid = self.daemon_pid()
        if pid:
            self.pids.add(pid)

    def unmount(self) -> None:
        pid = self.daemon_pid() if is_mounted(self.mnt) else None
        if pid:
            self.pids.add(pid)
        if is_mounted(self.mnt):
            if answers(self.mnt):
                try:
                    self.cli("umount", str(self.mnt), timeout=600)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    log(f"warning: riverfs umount failed, forcing: {e}")
            else:
                # Killing the daemon aborts the FUSE connection: every waiting request fails.
                log(f"warning: {self.mnt} does not answer (daemon dead or hung); forcing")
                for p in self.pids:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        psutil.Process(p).kill()
        force_unmount(self.mnt)
        # Wait for the daemons we started to finish (they flush on unmount).
        for p in list(self.pids | ({pid} if pid else set())):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc = psutil.Process(p)
                try:
                    proc.wait(timeout=60)
                except psutil.TimeoutExpired:
                    log(f"warning: riverfs daemon {p} still running after unmount; killing it")
                    proc.kill()
            self.pids.discard(p)

    def make_cold(self) -> None:
        self.unmount()
        for entry in self.cache_dir.iterdir():
            if entry.suffix == ".log":  # the daemon's log (mount.log), not cached data
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        drop_kernel_caches()
        self.mount()

    def daemon_pid(self) -> int | None:
        me = os.getpid()
        out = run(["pgrep", "-f", f"riverfs mount .*{self.mnt}"]).stdout.split()
        pids = [int(p) for p in out if int(p) != me]
        if not pids:  # daemons that rewrite their command line: look for the mountpoint
            for proc in psutil.process_iter(["pid", "cmdline"]):
                cmdline = proc.info["cmdline"] or []
                if (
                    proc.info["pid"] != me
                    and str(self.mnt) in cmdline
                    and "riverfs" in " ".join(cmdline)
                ):
                    pids.append(proc.info["pid"])
        return min(pids) if pids else None


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


def small_files(root: Path, count: int) -> tuple[float, float, float]:
    """Seconds to create (write 1 KiB, close), stat and unlink `count` files in one directory."""
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

    time.sleep(TIMEOUT + 0.2)  # let the kernel's entry/attr cache expire
    t0 = time.perf_counter()
    for name in names:
        st = os.stat(name)
        if st.st_size != SMALL_FILE:
            raise RuntimeError(f"{os.fsdecode(name)}: size {st.st_size}, expected {SMALL_FILE}")
    t_stat = time.perf_counter() - t0

    t0 = time.perf_counter()
    for name in names:
        os.unlink(name)
    t_unlink = time.perf_counter() - t0
    d.rmdir()
    return t_create, t_stat, t_unlink


# ---------------------------------------------------------------- the run

# (key, label, unit, compare with memfs)
METRICS = [
    ("write", "seq write {size} (1 MiB writes + fsync)", "MiB/s", True),
    ("read_cold", "seq read {size}, cold cache", "MiB/s", True),
    ("read_warm", "seq read {size}, warm cache", "MiB/s", True),
    ("rand_read", "random 4 KiB reads ({reads} preads)", "reads/s", True),
    ("create", "create {files} files (1 KiB each)", "files/s", True),
    ("stat", "stat {files} files", "stats/s", True),
    ("unlink", "unlink {files} files", "files/s", True),
    ("rss_peak", "daemon peak RSS during the above", "MiB", False),
    ("rss_write", "riverfs: write {rss_size}, throughput", "MiB/s", False),
    ("rss_write_peak", "riverfs: peak RSS writing {rss_size}", "MiB", False),
    ("rss_read", "riverfs: read {rss_size} (cold), throughput", "MiB/s", False),
    ("rss_read_peak", "riverfs: peak RSS reading {rss_size}", "MiB", False),
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

        log(f"{t.name}: create / stat / unlink of {args.files} files")
        c, s, u = small_files(t.mnt, args.files)
        res["create"], res["stat"], res["unlink"] = args.files / c, args.files / s, args.files / u
    if rss.peak and t.name != "tmpfs":
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


def table(results: dict[str, dict[str, float]], args) -> str:
    names = [n for n in TARGETS if n in results]
    subst = {
        "size": human(args.size),
        "files": f"{args.files:,}",
        "reads": f"{args.random_reads:,}",
        "rss_size": human(args.rss_size),
    }
    ratio = "riverfs" in results and "memfs" in results
    enc = "riverfs" in results and "riverfs-enc" in results
    layer = "memfs" in results and "memfs_pyfuse3" in results
    header = (
        ["figure", "unit", *names]
        + (["riverfs / memfs"] if ratio else [])
        + (["riverfs-enc / riverfs"] if enc else [])
        + (["memfs / memfs_pyfuse3"] if layer else [])
    )
    rows = []
    for key, label, unit, compare in METRICS:
        values = [results[n].get(key) for n in names]
        if all(v is None for v in values):
            continue
        row = [label.format(**subst), unit, *map(fmt, values)]
        if ratio:
            r, m = results["riverfs"].get(key), results["memfs"].get(key)
            row.append(f"{r / m:.0%}" if compare and r and m else "")
        if enc:
            e, r = results["riverfs-enc"].get(key), results["riverfs"].get(key)
            row.append(f"{e / r:.0%}" if compare and e and r else "")
        if layer:
            n, o = results["memfs"].get(key), results["memfs_pyfuse3"].get(key)
            row.append(f"{n / o:.2f}x" if compare and n and o else "")
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        out = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(out) + " |"

    sep = (
        "|"
        + "|".join(("-" * (w + 2) if i < 2 else "-" * (w + 1) + ":") for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


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
        description="Benchmark riverfs against tmpfs and memfs (see the module docstring)."
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
        default=DEFAULT_TARGETS,
        help="comma-separated subset of riverfs,riverfs-enc,tmpfs,memfs,memfs_pyfuse3 "
        "(default riverfs,tmpfs,memfs,memfs_pyfuse3; riverfs-enc: an encrypted, "
        "zstd-compressed volume)",
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
        help="file size for --rss (default 4G)",
    )
    parser.add_argument(
        "--tmp",
        type=Path,
        default=None,
        help="directory for the riverfs volume and mountpoints "
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

    only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(only) - set(TARGETS)
    if unknown or not only:
        parser.error(f"--only: unknown filesystem(s) {sorted(unknown)}; choose from {TARGETS}")
    if args.repeat < 1 or args.files < 1 or args.random_reads < 1:
        parser.error("--repeat, --files and --random-reads must be at least 1")
    if args.rss and "riverfs" not in only:
        parser.error("--rss needs riverfs in --only")
    if os.geteuid() != 0:
        print(
            "fs_bench: run as root (it mounts tmpfs and drops the kernel caches)", file=sys.stderr
        )
        return 2

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
    failures: dict[str, str] = {}
    interrupted = False
    try:
        for name in TARGETS:
            if name not in only:
                continue
            workdir = root / name
            if name == "riverfs":
                target: Target = Riverfs(workdir, args.riverfs_args.split())
            elif name == "riverfs-enc":
                target = Riverfs(workdir, args.riverfs_args.split(), ENCRYPTED_FORMAT)
            elif name == "tmpfs":
                target = Tmpfs(workdir, max(args.size, args.rss_size) + 512 * MiB)
            elif name == "memfs":
                target = Memfs(workdir)
            else:
                target = None
            try:
                if target is None:  # memfs_pyfuse3: its venv first (not timed)
                    target = MemfsPyfuse3(workdir, pyfuse3_python())
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
        print(f"each figure: the best of {args.repeat} rounds")
    print()
    if results:
        print(table(results, args))
        targets = layer_targets(results)
        if targets:
            print()
            print(targets)
    for name, err in failures.items():
        print(f"\n{name} failed: {err}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": info, "args": sys.argv[1:], "results": results, "failures": failures},
                indent=2,
            )
        )
    return 130 if interrupted else (1 if failures else 0)


if __name__ == "__main__":
    sys.exit(main())
