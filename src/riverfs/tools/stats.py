"""What `riverfs stats` computes: the mount a path lies in, the samples of its `.riverfs/stats`,
and the figures (totals, rates, mean latencies) between two snapshots.

Nothing here formats text for people; cli/stats.py lays the figures out. The names read are
the ones docs/METRICS.md documents (`riverfs_...`, counters `_total`, histograms `_sum` and
`_count` in seconds, gauges as they are).
"""

from __future__ import annotations

import errno
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from riverfs.errors import RiverError

FSTYPE = "fuse.riverfs"
STATS_FILE = (".riverfs", "stats")

Labels = tuple[tuple[str, str], ...]
Key = tuple[str, Labels]

_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


# ---- where the mount is -----------------------------------------------------------------


def _unescape(field_text: str) -> str:
    """A mountinfo path field: spaces, tabs, newlines and backslashes are octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_text)


def mounts(mountinfo: str) -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every line of /proc/self/mountinfo, in its order."""
    out = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        rest = fields[fields.index("-", 6) + 1 :]
        out.append((_unescape(fields[4]), rest[0] if rest else ""))
    return out


def _within(path: str, point: str) -> bool:
    return path == point or path.startswith(point.rstrip("/") + "/")


def containing_mount(path: str, mountinfo: str) -> tuple[str, str]:
    """(mount point, type) of the mount `path` (absolute, symlinks resolved) lies in: the
    longest mount point above it, the later one when mounts are stacked."""
    best = ("/", "")
    for point, fstype in mounts(mountinfo):
        if _within(path, point) and len(point) >= len(best[0]):
            best = (point, fstype)
    return best


def mount_root(path: Path) -> Path:
    """The root of the riverfs mount `path` lies in (a mountpoint or anything inside one);
    RiverError when there is no such path or it is not in a riverfs mount."""
    try:
        os.stat(path)
    except FileNotFoundError:
        raise RiverError(f"{path}: no such file or directory") from None
    except OSError as e:
        if e.errno != errno.ENOTCONN:  # a dead mount's root: found below, told when read
            raise RiverError(f"{path}: {e.strerror}") from None
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        point, fstype = containing_mount(real, f.read())
    if fstype != FSTYPE:
        raise RiverError(
            f"{path} is not in a riverfs mount (it is on {point}, {fstype or 'unknown'})"
        )
    return Path(point)


def read_virtual(root: Path, name: str) -> bytes:
    """A virtual file of the mount at `root`, with one-line errors for what goes wrong."""
    target = root / ".riverfs" / name
    try:
        fd = os.open(target, os.O_RDONLY)  # not open(): its isatty ioctl would be counted too
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise RiverError(
            f"{root} serves no .riverfs/{name}: its daemon predates it (remount with this riverfs)"
        ) from None
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            raise RiverError(
                f"the mount at {root} is not connected (its daemon is gone): riverfs umount {root}"
            ) from None
        raise RiverError(f"cannot read {target}: {e.strerror}") from None


# ---- samples ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """The samples of `.riverfs/stats` at one moment (`at`: time.monotonic())."""

    at: float
    samples: dict[Key, float]

    def value(self, name: str, **labels: str) -> float:
        """One sample (0 when absent: a child appears once it counted something)."""
        return self.samples.get((name, tuple(labels.items())), 0.0)

    def by(self, name: str, label: str) -> dict[str, float]:
        """The samples of `name` by the value of their `label`."""
        out = {}
        for (n, labels), v in self.samples.items():
            if n == name and len(labels) == 1 and labels[0][0] == label:
                out[labels[0][1]] = v
        return out

    def as_json(self) -> dict[str, float]:
        """`name{label="value"}` -> value, as the stats file writes them."""
        out = {}
        for (name, labels), v in self.samples.items():
            if labels:
                name += "{" + ",".join(f'{k}="{val}"' for k, val in labels) + "}"
            out[name] = v
        return out


def parse(text: str, at: float = 0.0) -> Snapshot:
    """The samples of a stats text (`name{k="v",...} value` lines). Lines that are not
    samples (comments, blanks, garbage) are skipped: a newer daemon may add things."""
    samples: dict[Key, float] = {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m is None:
            continue
        name, labels_text, value = m.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        labels = tuple(
            (k, v.replace('\\"', '"').replace("\\\\", "\\"))
            for k, v in _LABEL.findall(labels_text or "")
        )
        samples[(name, labels)] = number
    return Snapshot(at, samples)


def snapshot(root: Path) -> Snapshot:
    """Read the stats of the mount at `root` now."""
    text = read_virtual(root, STATS_FILE[1]).decode(errors="replace")
    return parse(text, time.monotonic())


# ---- figures ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Flow:
    """A counter: its total and its rate per second over the interval."""

    total: float
    rate: float


@dataclass(frozen=True)
class Timed:
    """A histogram of requests (with an error counter): how many, how fast, how long."""

    count: float  # since the mount started
    rate: float  # per second over the interval
    mean: float | None  # seconds, over the interval (None: none in it)
    mean_all: float | None  # seconds, since the mount started
    errors: float = 0.0
    error_rate: float = 0.0


@dataclass(frozen=True)
class Figures:
    """Everything `riverfs stats` shows, computed from two snapshots (`interval` seconds
    apart; 0 when there was only one, and then every rate is 0)."""

    interval: float
    fuse: dict[str, Timed]  # by operation, busiest first
    read_bytes: Flow
    written_bytes: Flow
    block_reads: dict[str, Flow]  # by source: memory, disk, staging, store
    cache_hits: Flow  # block reads served without the store
    cache_misses: Flow  # block reads from the store
    store: dict[str, Timed]  # by request kind, busiest first
    meta: dict[str, Timed]  # read, write
    meta_retries: Flow
    compacted_chunks: Flow
    compacted_bytes: Flow
    accesslog_dropped: Flow
    gauges: dict[str, float] = field(default_factory=dict)  # state: uploads, memory, cache


P = "riverfs_"
GAUGES = (
    "uploads_waiting",
    "uploads_waiting_bytes",
    "store_down",
    "disk_cache_bytes",
    "block_memory_bytes",
    "write_buffer_bytes",
    "process_resident_bytes",
)


def _flow(
    before: Snapshot | None, after: Snapshot, name: str, interval: float, **labels: str
) -> Flow:
    total = after.value(name, **labels)
    was = before.value(name, **labels) if before else total
    return Flow(total, _rate(total - was, interval))


def _rate(delta: float, interval: float) -> float:
    return max(delta, 0.0) / interval if interval > 0 else 0.0


def _timed(
    before: Snapshot | None, after: Snapshot, base: str, label: str, errors: str | None
) -> dict[str, Timed]:
    counts, sums = after.by(base + "_count", label), after.by(base + "_sum", label)
    was_counts = before.by(base + "_count", label) if before else counts
    was_sums = before.by(base + "_sum", label) if before else sums
    errs = after.by(errors, label) if errors else {}
    was_errs = (before.by(errors, label) if before else errs) if errors else {}
    interval = after.at - before.at if before else 0.0
    out = {}
    for key, count in counts.items():
        done = count - was_counts.get(key, 0.0)
        spent = sums.get(key, 0.0) - was_sums.get(key, 0.0)
        failed = errs.get(key, 0.0)
        out[key] = Timed(
            count=count,
            rate=_rate(done, interval),
            mean=spent / done if done > 0 else None,
            mean_all=sums.get(key, 0.0) / count if count > 0 else None,
            errors=failed,
            error_rate=_rate(failed - was_errs.get(key, 0.0), interval),
        )
    return dict(sorted(out.items(), key=lambda kv: (-kv[1].rate, -kv[1].count, kv[0])))


def figures(before: Snapshot | None, after: Snapshot) -> Figures:
    """The figures between `before` (None: only totals) and `after`."""
    interval = max(after.at - before.at, 0.0) if before else 0.0
    if interval == 0:
        before = None

    def flow(name: str) -> Flow:
        return _flow(before, after, P + name, interval)

    sources = sorted(after.by(P + "block_reads_total", "source"))
    reads = {s: _flow(before, after, P + "block_reads_total", interval, source=s) for s in sources}
    hits = [f for s, f in reads.items() if s != "store"]
    miss = reads.get("store", Flow(0.0, 0.0))
    return Figures(
        interval=interval,
        fuse=_timed(before, after, P + "fuse_op_seconds", "op", P + "fuse_op_errors_total"),
        read_bytes=flow("fuse_read_bytes_total"),
        written_bytes=flow("fuse_written_bytes_total"),
        block_reads=reads,
        cache_hits=Flow(sum(f.total for f in hits), sum(f.rate for f in hits)),
        cache_misses=miss,
        store=_timed(
            before, after, P + "store_request_seconds", "op", P + "store_request_errors_total"
        ),
        meta=_timed(before, after, P + "meta_txn_seconds", "kind", None),
        meta_retries=flow("meta_txn_retries_total"),
        compacted_chunks=flow("compacted_chunks"),
        compacted_bytes=flow("compacted_bytes"),
        accesslog_dropped=flow("accesslog_dropped_total"),
        gauges={g: after.value(P + g) for g in GAUGES},
    )
