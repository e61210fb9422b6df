"""An mdtest-like metadata benchmark of riverfs through real FUSE mounts: PostgreSQL vs SQLite.

For each metadata engine (sqlite, postgresql) and each mount count (default 1 and 3), a fresh
volume is formatted (a new SQLite file, or a new database on a private PostgreSQL server that
this script starts), its objects in a file:// store, and mounted that many times at once.
One worker process per mount works in its own directory ("unique dir", as mdtest -u), on N
empty files, in five phases timed separately; the workers start every phase together (a
barrier), as mdtest's ranks do:

  create   os.open(O_CREAT|O_WRONLY|O_EXCL) + close of every file (empty files, as mdtest)
  stat     os.stat of every file, 1.2 s after the create phase: the default 1 s attr/entry
           timeouts have expired, so the kernel asks the filesystem for every file
  rename   os.rename(f, f + ".r") of every file, in the same directory
  readdir  os.listdir of the directory, three times; the best is kept (entries/s)
  unlink   os.unlink of every file

A phase's aggregate rate is all workers' operations over the wall time from the first
worker's start to the slowest worker's end; per-mount rates use each worker's own time.
Run as root (FUSE mounts; the PostgreSQL server runs as the `postgres` user):

    .venv/bin/python benchmarks/meta_bench.py [--files 10000] [--mounts 1,3]
        [--only sqlite|postgresql] [--workdir /dev/shm] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import multiprocessing as mp
import os
import platform
import queue
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from pg_server import PostgresServer, start_server  # noqa: E402

ENGINES = ("sqlite", "postgresql")
PHASES = ("create", "stat", "rename", "readdir", "unlink")
TIMEOUT = 1.0  # riverfs's default attr/entry timeouts, which the mounts keep
READDIR_ROUNDS = 3


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def is_mounted(path: Path) -> bool:
    """Whether `path` is a mountpoint, from /proc (never stats `path`: a hung daemon would
    hang us)."""
    target = os.path.join(os.path.realpath(path.parent), path.name)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


# ---------------------------------------------------------------- mounts


class Mount:
    """One riverfs mount of a volume, with its own mountpoint and cache directory."""

    def __init__(self, meta_url: str, directory: Path) -> None:
        self.meta_url = meta_url
        self.mnt = directory / "mnt"
        self.cache_dir = directory / "cache"
        self.cli_log = directory / "cli.log"

    def cli(self, *args: str, timeout: float = 180) -> None:
        """Run `riverfs ARGS`, output to a file (a daemon keeping a pipe open would hang us)."""
        with open(self.cli_log, "ab") as logf:
            logf.write(f"\n$ riverfs {' '.join(args)}\n".encode())
            logf.flush()
            p = subprocess.run(
                [sys.executable, "-m", "riverfs", *args],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                start_new_session=True,
            )
        if p.returncode != 0:
            raise RuntimeError(f"riverfs {args[0]} failed ({p.returncode}):\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        out = []
        for f in (self.cli_log, self.cache_dir / "mount.log"):
            with contextlib.suppress(OSError):
                out.append(f"--- {f}\n" + f.read_text(errors="replace")[-chars:].strip())
        return "\n".join(out)

    def mount(self) -> None:
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.cli(
            "mount",
            self.meta_url,
            str(self.mnt),
            "--background",
            "--cache-dir",
            str(self.cache_dir),
        )
        if not is_mounted(self.mnt):
            raise RuntimeError(f"riverfs mount returned but {self.mnt} is not mounted")

    def daemons(self) -> list[psutil.Process]:
        """The riverfs daemon(s) serving this mountpoint (found by their command line)."""
        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if str(self.mnt) in cmdline and "riverfs" in " ".join(cmdline):
                found.append(proc)
        return found

    def unmount(self) -> None:
        """Unmount for sure: `riverfs umount` (flushes, waits for the daemon), else force it."""
        daemons = self.daemons()
        if is_mounted(self.mnt):
            try:
                self.cli("umount", str(self.mnt), "--timeout", "120", timeout=180)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                log(f"warning: riverfs umount {self.mnt} failed, forcing: {e}")
        for cmd in (["fusermount3", "-u"], ["fusermount3", "-uz"], ["umount", "-l"]):
            if is_mounted(self.mnt):
                run([*cmd, str(self.mnt)])
        for proc in daemons:  # only the daemons of our own mounts
            with contextlib.suppress(psutil.NoSuchProcess):
                try:
                    proc.wait(timeout=30)
                except psutil.TimeoutExpired:
                    log(f"warning: riverfs daemon {proc.pid} still running; killing it")
                    proc.kill()


# ---------------------------------------------------------------- the workload


def worker(index: int, root: Path, files: int, barrier, results) -> None:
    """Run the five phases on `files` files in `root`/w<index>; put (index, timings) on
    `results`, timings[phase] being a list of (start, end, operations) per round, with
    time.monotonic(), which all processes share; or (index, error text) on failure."""
    try:
        d = root / f"w{index}"
        d.mkdir()
        names = [os.fsencode(d / f"f{i:07d}") for i in range(files)]
        renamed = [n + b".r" for n in names]
        timings: dict[str, list[tuple[float, float, int]]] = {}

        def phase(name: str, body) -> None:
            barrier.wait()
            t0 = time.monotonic()
            ops = body()
            timings.setdefault(name, []).append((t0, time.monotonic(), ops))

        def create() -> int:
            flags = os.O_CREAT | os.O_WRONLY | os.O_EXCL
            for n in names:
                os.close(os.open(n, flags, 0o644))
            return files

        def stat_all() -> int:
            for n in names:
                st = os.stat(n)
                if not stat.S_ISREG(st.st_mode) or st.st_size != 0:
                    raise RuntimeError(f"{os.fsdecode(n)}: mode {st.st_mode:o} size {st.st_size}")
            return files

        def rename() -> int:
            for a, b in zip(names, renamed, strict=True):
                os.rename(a, b)
            return files

        def readdir() -> int:
            entries = os.listdir(d)
            if len(entries) != files or not all(e.endswith(".r") for e in entries):
                raise RuntimeError(f"{d}: listed {len(entries)} entries, expected {files} *.r")
            return len(entries)

        def unlink() -> int:
            for n in renamed:
                os.unlink(n)
            return files

        phase("create", create)
        barrier.wait()  # everyone has created; now let the kernel's caches expire
        time.sleep(TIMEOUT + 0.2)
        phase("stat", stat_all)
        phase("rename", rename)
        for _ in range(READDIR_ROUNDS):
            phase("readdir", readdir)
        phase("unlink", unlink)
        d.rmdir()
        results.put((index, timings))
    except BaseException as e:
        barrier.abort()  # the others must not wait for us forever
        results.put((index, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))


def run_workers(mounts: list[Mount], files: int, timeout: float) -> dict:
    """Start one worker per mount together; return the aggregate and per-mount rates."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(len(mounts), timeout=timeout)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=worker, args=(i, m.mnt, files, barrier, results), daemon=True)
        for i, m in enumerate(mounts)
    ]
    got: dict[int, object] = {}
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout * (len(PHASES) + READDIR_ROUNDS + 2)
        while len(got) < len(procs):
            with contextlib.suppress(queue.Empty):
                index, value = results.get(timeout=1)
                got[index] = value
                continue
            dead = [i for i, p in enumerate(procs) if not p.is_alive() and i not in got]
            if dead and results.empty():
                time.sleep(0.5)  # a result may still be in the pipe
                if results.empty():
                    raise RuntimeError(f"worker(s) {dead} died without a result")
            if time.monotonic() > deadline:
                raise RuntimeError("timed out waiting for the workers")
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(10)
    errors = [v for v in got.values() if isinstance(v, str)]
    if errors:  # the first real error, not a BrokenBarrierError it caused in the others
        errors.sort(key=lambda v: v.startswith("BrokenBarrierError"))
        raise RuntimeError(f"worker failed: {errors[0]}")
    return summarize([got[i] for i in range(len(procs))])


def summarize(timings: list[dict[str, list[tuple[float, float, int]]]]) -> dict:
    """Rates per phase: aggregate (all operations over first start .. last end of a round)
    and per mount (its operations over its own time); the best round of each."""
    agg: dict[str, float] = {}
    per_mount: list[dict[str, float]] = [{} for _ in timings]
    for ph in PHASES:
        rounds = len(timings[0][ph])
        for r in range(rounds):
            spans = [t[ph][r] for t in timings]
            wall = max(e for _, e, _ in spans) - min(s for s, _, _ in spans)
            agg[ph] = max(agg.get(ph, 0.0), sum(n for _, _, n in spans) / wall)
            for i, (s, e, n) in enumerate(spans):
                per_mount[i][ph] = max(per_mount[i].get(ph, 0.0), n / (e - s))
    return {"aggregate": agg, "per_mount": per_mount}


def run_config(
    engine: str, n_mounts: int, workdir: Path, server: PostgresServer | None, args
) -> dict:
    """Format a fresh volume, mount it `n_mounts` times, run the workers, unmount."""
    workdir.mkdir(parents=True)
    if engine == "sqlite":
        meta_url = f"sqlite://{workdir}/meta.db"
    else:
        assert server is not None
        meta_url = server.create_database(f"meta_bench_{n_mounts}")
    mounts = [Mount(meta_url, workdir / f"m{i}") for i in range(n_mounts)]
    for m in mounts:
        m.mnt.parent.mkdir()
    mounts[0].cli("format", meta_url, "--storage", f"file://{workdir}/store")
    try:
        for m in mounts:
            m.mount()
        log(f"{engine}, {n_mounts} mount(s): {args.files} files per mount")
        try:
            return run_workers(mounts, args.files, args.timeout)
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n" + "\n".join(m.log_tail() for m in mounts)) from None
    finally:
        for m in mounts:
            m.unmount()


# ---------------------------------------------------------------- report


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def table(results: dict[str, dict[int, dict]]) -> str:
    header = ["engine", "mounts", "create/s", "stat/s", "rename/s", "readdir entries/s", "unlink/s"]
    rows = []
    for engine in ENGINES:
        for n, res in sorted(results.get(engine, {}).items()):
            rows.append([engine, str(n), *(fmt(res["aggregate"].get(p)) for p in PHASES)])
            if n > 1:
                for i, pm in enumerate(res["per_mount"]):
                    rows.append(["", f"· mount {i + 1}", *(fmt(pm.get(p)) for p in PHASES)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    sep = (
        "|"
        + "|".join("-" * (w + 2) if i < 2 else "-" * (w + 1) + ":" for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def ratios(results: dict[str, dict[int, dict]]) -> list[str]:
    out = []
    for n in sorted(set(results.get("sqlite", {})) & set(results.get("postgresql", {}))):
        pg, sq = results["postgresql"][n]["aggregate"], results["sqlite"][n]["aggregate"]
        parts = [f"{p} {pg[p] / sq[p]:.2f}x" for p in PHASES]
        out.append(f"PostgreSQL/SQLite, {n} mount(s): " + ", ".join(parts))
    return out


def git_version() -> str:
    p = run(["git", "-C", str(HERE), "describe", "--always", "--dirty"])
    return p.stdout.strip() if p.returncode == 0 else "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(
        description="mdtest-like metadata benchmark of riverfs: PostgreSQL vs SQLite."
    )
    parser.add_argument(
        "--files",
        type=int,
        default=10_000,
        help="files per mount (worker) and phase (default 10000)",
    )
    parser.add_argument("--only", choices=ENGINES, help="run only this engine")
    parser.add_argument(
        "--mounts", default="1,3", help="comma-separated mount counts (default 1,3)"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where to make the temporary working directory (volumes, "
        "PostgreSQL data, mountpoints; default $TMPDIR or /tmp; e.g. /dev/shm); "
        "must be traversable by the postgres user",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800,
        help="seconds a worker may wait for the others at a phase start (default 1800)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw numbers as JSON here")
    args = parser.parse_args()
    try:
        counts = sorted({int(x) for x in args.mounts.split(",") if x.strip()})
    except ValueError:
        parser.error(f"--mounts: not a list of numbers: {args.mounts!r}")
    if not counts or min(counts) < 1 or args.files < 1:
        parser.error("--mounts and --files must be at least 1")
    if os.geteuid() != 0:
        print("meta_bench: run as root (FUSE mounts, a PostgreSQL server)", file=sys.stderr)
        return 2
    engines = [args.only] if args.only else list(ENGINES)

    def on_term(signum, frame):  # SIGTERM unwinds like Ctrl-C, through every `finally`
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    root = Path(tempfile.mkdtemp(prefix="riverfs-meta-", dir=args.workdir))
    os.chmod(root, 0o755)  # the postgres user must reach its data directory inside
    log(f"working directory {root}")
    results: dict[str, dict[int, dict]] = {}
    failures: dict[str, str] = {}
    server: PostgresServer | None = None
    interrupted = False
    try:
        for engine in engines:
            if engine == "postgresql":
                log("starting a PostgreSQL server")
                server = start_server(root / "pg")
            for n in counts:
                try:
                    res = run_config(engine, n, root / f"{engine}-{n}", server, args)
                    results.setdefault(engine, {})[n] = res
                except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                    failures[f"{engine}, {n} mount(s)"] = f"{type(e).__name__}: {e}"
                    log(f"{engine}, {n} mount(s): FAILED: {e}")
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; unmounting and cleaning up")
    finally:
        if server is not None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                server.stop("immediate")
        leftover = [p for p in root.glob("*/m*/mnt") if is_mounted(p)]
        if leftover:
            log(f"warning: still mounted, not removing {root}: {leftover}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    exe = sys.executable
    if exe.startswith(os.getcwd() + "/"):
        exe = os.path.relpath(exe)
    load1 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print(f"riverfs metadata benchmark (mdtest-like), {started}, riverfs {git_version()}")
    print(
        f"host: {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}; load {load0} at the start, {load1} at the end"
    )
    print(f"command: {shlex.join([exe, *sys.argv])}")
    print(
        f"{args.files:,} empty files per mount, one directory and one worker per mount; "
        f"aggregate rows: all mounts' operations over the slowest's wall time"
    )
    print()
    if results:
        print(table(results))
        for line in ratios(results):
            print(line)
    for name, err in failures.items():
        print(f"\n{name} failed: {err}")
    if args.json:
        raw = {
            "date": started,
            "nproc": os.cpu_count(),
            "kernel": platform.release(),
            "command": sys.argv,
            "files": args.files,
            "results": results,
            "failures": failures,
        }
        args.json.write_text(json.dumps(raw, indent=2))
    return 130 if interrupted else (1 if failures else 0)


if __name__ == "__main__":
    sys.exit(main())
