"""Write-back: how fast a burst of writes completes, against the cache disk written directly.

In one run, on the same disk:
  - direct: 1 MiB writes of SIZE bytes to a file in the cache directory, then fsync;
  - riverfs --writeback: the same through a mount whose blocks are staged in that directory
    (store: a file:// directory on the same disk, so uploads compete for it, as they would
    for the disk's bandwidth with a remote store); the time ends when fsync returns, which
    is when the data is durable in staging;
  - riverfs (no write-back): the same, for reference: fsync waits for the store.
It also reports how long the staged uploads took to drain (unmount waits for them).

    .venv/bin/python benchmarks/writeback_bench.py [--size 1G] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = 1 << 20


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].isalpha() else int(text)


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "riverfs", *args], check=True, capture_output=True)


def write_burst(path: Path, size: int, block: bytes) -> float:
    """Seconds to write `size` bytes in 1 MiB writes and fsync them."""
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(size // CHUNK):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def through_mount(work: Path, size: int, block: bytes, *extra: str) -> tuple[float, float]:
    """(seconds for the burst, seconds more until unmount returned)."""
    work.mkdir()
    meta = f"sqlite://{work}/meta.db"
    cli("format", meta, "--storage", f"file://{work}/store")
    mnt = work / "mnt"
    mnt.mkdir()
    cli("mount", meta, str(mnt), "--background", "--cache-dir", str(work / "cache"), *extra)
    try:
        burst = write_burst(mnt / "burst", size, block)
        start = time.perf_counter()
    finally:
        cli("umount", str(mnt))
    return burst, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    size = parse_size(args.size)
    block = os.urandom(CHUNK)  # incompressible
    root = Path(tempfile.mkdtemp(prefix="riverfs-wb-", dir=args.dir))
    try:
        (root / "direct").mkdir()
        direct = write_burst(root / "direct" / "burst", size, block)
        wb, wb_drain = through_mount(root / "wb", size, block, "--writeback")
        plain, _ = through_mount(root / "plain", size, block)
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)
    mib = size / CHUNK
    print(f"riverfs write-back benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs")
    print(f"command: {shlex.join(sys.argv)}")
    print("| target | MiB/s | vs direct |")
    print("|---|---:|---:|")
    for name, secs in (("cache disk, direct", direct), ("riverfs --writeback", wb),
                       ("riverfs (upload before fsync returns)", plain)):  # fmt: skip
        print(f"| {name} | {mib / secs:,.0f} | {direct / secs:.0%} |")
    print(f"staged uploads drained {wb_drain:.1f} s after the burst's fsync (at unmount)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
