"""What the always-on counters cost (issue 12: < 3% on metadata and sequential I/O).

Runs the same workload on riverfs (a fresh SQLite + file:// volume) and on memfs (the FUSE
ceiling on riverfs.fuse, where a request does the least other work, so the counters weigh
the most) from two source trees: one without the counters and one with them. Rounds
alternate between the trees. Each phase is measured twice: wall time (operations/s), and
the daemon's CPU time per operation (every thread's, from /proc/PID/task/*/schedstat). CPU time
is what the counters add to, and it hardly moves when other work shares the machine, so it
is the figure to compare on a busy machine; operations/s is only fair on an idle one.

    .venv/bin/python benchmarks/counter_cost.py --without /tmp/wt_old --with . [--rounds 3]

Each tree is a checkout of riverfs: its `src/` is put first on PYTHONPATH of the daemons
(and memfs.py is taken from that tree's benchmarks/). Run as root.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fs_targets import Memfs, Riverfs, drop_kernel_caches

MiB = 1 << 20


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of `pid` so far, in ns resolution (schedstat, not the
    10 ms ticks of /proc/PID/stat)."""
    total = 0
    for task in os.scandir(f"/proc/{pid}/task"):
        try:
            with open(f"{task.path}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            pass  # a thread that ended meanwhile
    return total / 1e9


def phases(mnt: Path, files: int, size: int) -> dict[str, tuple[int, Callable[[], None]]]:
    """name -> (operations, the work), in the order they run."""
    names = [mnt / f"f{i:06d}" for i in range(files)]
    payload = os.urandom(1024)
    block = os.urandom(MiB)

    def create() -> None:
        for p in names:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, payload)
            os.close(fd)

    def stat() -> None:
        for p in names:
            os.stat(p)

    def unlink() -> None:
        for p in names:
            os.unlink(p)

    def write() -> None:
        fd = os.open(mnt / "big", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for _ in range(size // MiB):
            os.write(fd, block)
        os.fsync(fd)
        os.close(fd)

    def read() -> None:
        fd = os.open(mnt / "big", os.O_RDONLY)
        while os.read(fd, MiB):
            pass
        os.close(fd)

    return {
        "create": (files, create),
        "stat": (files, stat),
        "unlink": (files, unlink),
        "seq write": (size // MiB, write),
        "seq read": (size // MiB, read),
    }


def run_round(kind: str, tree: Path, work: Path, files: int, size: int) -> dict[str, tuple]:
    """One round on a fresh filesystem: phase -> (ops/s, daemon CPU µs per operation)."""
    os.environ["PYTHONPATH"] = str(tree / "src")
    if kind == "memfs":
        target = Memfs(work)
        target.script = str(tree / "benchmarks" / "memfs.py")
    else:
        # attr/entry timeout 0: every stat is a request, not the kernel's cache
        target = Riverfs(work, ["--attr-timeout", "0", "--entry-timeout", "0"])
    out = {}
    with target:
        pid = target.daemon_pid()
        for name, (ops, work_fn) in phases(target.mnt, files, size).items():
            if name == "seq read":
                drop_kernel_caches()
            if name == "stat" and kind == "memfs":
                target.make_cold_metadata()  # its 1 s attr/entry timeout runs out first
            cpu, t = cpu_seconds(pid), time.perf_counter()
            work_fn()
            wall, cpu = time.perf_counter() - t, cpu_seconds(pid) - cpu
            out[name] = (ops / wall, cpu / ops * 1e6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--without", type=Path, required=True, help="tree without the counters")
    ap.add_argument("--with", dest="with_", type=Path, required=True, help="tree with them")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--size", type=int, default=256, help="MiB of the sequential file")
    ap.add_argument("--only", default="memfs,riverfs")
    args = ap.parse_args()
    trees = {"without": args.without.resolve(), "with": args.with_.resolve()}
    results: dict[tuple[str, str], list[dict]] = {}
    base = Path(tempfile.mkdtemp(prefix="counter-cost-", dir="/var/tmp"))
    for r in range(args.rounds):
        for kind in args.only.split(","):
            for side, tree in trees.items():
                work = base / f"{kind}-{side}-{r}"
                print(f"round {r + 1}: {kind} {side} counters", file=sys.stderr, flush=True)
                results.setdefault((kind, side), []).append(
                    run_round(kind, tree, work, args.files, args.size * MiB)
                )
    print(f"median of {args.rounds} rounds; {args.files:,} files, {args.size} MiB file")
    print(
        "| fs | phase | ops/s without | ops/s with | CPU µs/op without | CPU µs/op with "
        "| CPU cost |"
    )
    print("|---|---|--:|--:|--:|--:|--:|")
    for kind in args.only.split(","):
        for phase in results[(kind, "without")][0]:
            row = []
            for side in trees:
                runs = results[(kind, side)]
                row.append(statistics.median(x[phase][0] for x in runs))
                row.append(statistics.median(x[phase][1] for x in runs))
            (ops0, cpu0), (ops1, cpu1) = row[:2], row[2:]
            print(
                f"| {kind} | {phase} | {ops0:,.0f} | {ops1:,.0f} | {cpu0:,.1f} | {cpu1:,.1f} "
                f"| {(cpu1 / cpu0 - 1) * 100:+.1f}% |"
            )


if __name__ == "__main__":
    main()
