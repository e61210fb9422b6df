"""Object SDK benchmark: riverfs.objects against raw obstore on the same store, in one run.

    python benchmarks/obj_bench.py                # a file:// store in a temp dir
    python benchmarks/obj_bench.py --s3           # also a moto S3 server on loopback
    python benchmarks/obj_bench.py --size 512M --small 2000

For each store it measures, alternating SDK and obstore runs and keeping the median:
- put and get throughput of large objects (bytes in memory, one object at a time),
- latency of small-object put, get and head (sequential, SDK and obstore interleaved operation
  by operation, median),
both through the async client (`AsyncClient`) and through the sync facade (`Client`, which
hops to its loop thread on every call), and prints SDK/obstore ratios (1.00 = same; for
throughput higher is better, for latency lower is better).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import obstore
from obstore.store import LocalStore, S3Store

from riverfs.objects import AsyncClient, Client, Credentials

CREDS = Credentials("bench", "bench-secret", region="us-east-1", source="bench")


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    return int(t[:-1]) * units[t[-1]] if t[-1] in units else int(t)


def start_moto() -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).read()
            return proc, endpoint
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit("moto server did not start") from None
            time.sleep(0.1)


def median_of(fn, reps: int) -> float:
    return statistics.median(fn() for _ in range(reps))


class Case:
    """One store, reached both ways."""

    def __init__(self, name: str, url: str, raw_store, bucket: str) -> None:
        self.name, self.url, self.raw, self.bucket = name, url, raw_store, bucket


async def run_async(case: Case, big: bytes, count: int, small: int, reps: int) -> dict:
    sdk = AsyncClient(case.url, credentials=CREDS)
    b = case.bucket
    tiny = os.urandom(4096)
    results: dict[str, tuple[float, float]] = {}

    async def timed(coro_fn) -> float:
        t = time.perf_counter()
        await coro_fn()
        return time.perf_counter() - t

    async def sdk_put():
        for i in range(count):
            await sdk.put_object(b, f"big/{i}", big)

    async def raw_put():
        for i in range(count):
            await obstore.put_async(case.raw, f"rbig/{i}", big)

    async def sdk_get():
        for i in range(count):
            await sdk.get_object(b, f"big/{i}")

    async def raw_get():
        for i in range(count):
            bytes(await (await obstore.get_async(case.raw, f"rbig/{i}")).bytes_async())

    total = len(big) * count
    for label, s_fn, r_fn in (("put MiB/s", sdk_put, raw_put), ("get MiB/s", sdk_get, raw_get)):
        s_times, r_times = [], []
        for _ in range(reps):
            s_times.append(await timed(s_fn))
            r_times.append(await timed(r_fn))
        mib = total / (1 << 20)
        results[label] = (mib / statistics.median(s_times), mib / statistics.median(r_times))

    async def lat_pair(s_fn, r_fn) -> tuple[float, float]:
        """Median latency of each, the two interleaved operation by operation (less drift)."""
        s_samples, r_samples = [], []
        for i in range(small):
            t = time.perf_counter()
            await s_fn(i)
            s_samples.append(time.perf_counter() - t)
            t = time.perf_counter()
            await r_fn(i)
            r_samples.append(time.perf_counter() - t)
        return statistics.median(s_samples) * 1e6, statistics.median(r_samples) * 1e6

    ops = {
        "small put µs": (
            lambda i: sdk.put_object(b, f"s/{i}", tiny),
            lambda i: obstore.put_async(case.raw, f"rs/{i}", tiny),
        ),
        "small get µs": (
            lambda i: sdk.get_object(b, f"s/{i}"),
            lambda i: _raw_get(case.raw, f"rs/{i}"),
        ),
        "small head µs": (
            lambda i: sdk.head_object(b, f"s/{i}"),
            lambda i: obstore.head_async(case.raw, f"rs/{i}"),
        ),
    }
    for label, (s_fn, r_fn) in ops.items():
        pairs = [await lat_pair(s_fn, r_fn) for _ in range(reps)]
        results[label] = tuple(statistics.median(p[k] for p in pairs) for k in (0, 1))
    return results


async def _raw_get(store, key):
    # bytes(), as the SDK returns: both sides hand the caller a Python bytes object.
    return bytes(await (await obstore.get_async(store, key)).bytes_async())


def run_sync(case: Case, small: int, reps: int) -> dict:
    tiny = os.urandom(4096)
    results = {}
    with Client(case.url, credentials=CREDS) as c:
        for i in range(small):
            c.put_object(case.bucket, f"ss/{i}", tiny)
            obstore.put(case.raw, f"rss/{i}", tiny)

        def lat_pair(s_fn, r_fn) -> tuple[float, float]:
            s_samples, r_samples = [], []
            for i in range(small):
                t = time.perf_counter()
                s_fn(i)
                s_samples.append(time.perf_counter() - t)
                t = time.perf_counter()
                r_fn(i)
                r_samples.append(time.perf_counter() - t)
            return statistics.median(s_samples) * 1e6, statistics.median(r_samples) * 1e6

        ops = {
            "sync small get µs": (
                lambda i: c.get_object(case.bucket, f"ss/{i}"),
                lambda i: bytes(obstore.get(case.raw, f"rss/{i}").bytes()),
            ),
            "sync small head µs": (
                lambda i: c.head_object(case.bucket, f"ss/{i}"),
                lambda i: obstore.head(case.raw, f"rss/{i}"),
            ),
        }
        for label, (s_fn, r_fn) in ops.items():
            pairs = [lat_pair(s_fn, r_fn) for _ in range(reps)]
            results[label] = tuple(statistics.median(p[k] for p in pairs) for k in (0, 1))
    return results


def report(case: Case, results: dict) -> None:
    print(f"\n{case.name}")
    print(f"  {'measure':22} {'SDK':>10} {'obstore':>10} {'SDK/obstore':>12}")
    for label, (sdk, raw) in results.items():
        print(f"  {label:22} {sdk:10.1f} {raw:10.1f} {sdk / raw:12.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="256M", help="bytes moved per large-object round")
    ap.add_argument("--object", default="16M", help="size of one large object")
    ap.add_argument("--small", type=int, default=500, help="small objects per latency round")
    ap.add_argument("--reps", type=int, default=3, help="alternating rounds per measure")
    ap.add_argument("--s3", action="store_true", help="also measure a moto S3 server")
    args = ap.parse_args()
    obj_size = parse_size(args.object)
    count = max(1, parse_size(args.size) // obj_size)
    big = os.urandom(obj_size)
    tmp = Path(tempfile.mkdtemp(prefix="riverfs-objbench-"))
    proc = None
    try:
        root = tmp / "store"
        (root / "bench").mkdir(parents=True)
        cases = [
            Case("file:// (local directory)", f"file://{root}", LocalStore(root / "bench"), "bench")
        ]
        if args.s3:
            proc, endpoint = start_moto()
            urllib.request.urlopen(
                urllib.request.Request(f"{endpoint}/bench", method="PUT"), timeout=10
            ).read()
            raw = S3Store(
                "bench",
                endpoint=endpoint,
                region="us-east-1",
                access_key_id="bench",
                secret_access_key="bench-secret",
                virtual_hosted_style_request=False,
                client_options={"allow_http": True},
            )
            cases.append(
                Case("s3:// (moto server on loopback)", f"s3://?endpoint={endpoint}", raw, "bench")
            )
        print(
            f"objects: {count} x {obj_size >> 20} MiB per round, {args.small} small (4 KiB) "
            f"objects per latency round, {args.reps} alternating rounds, median"
        )
        for case in cases:
            results = asyncio.run(run_async(case, big, count, args.small, args.reps))
            results.update(run_sync(case, args.small, args.reps))
            report(case, results)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # obstore's runtime threads can race interpreter finalization
