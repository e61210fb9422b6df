"""The counters of a mount: what every layer counts, read by `.riverfs/stats`, the Prometheus
endpoint (`--metrics`), `riverfs stats` and the trace.

A layer registers its metrics once, at import, and increments plain Python objects on the event
loop thread: an increment is one attribute add, cheap enough for every FUSE request. Histograms
count latencies in power-of-two buckets of nanoseconds (`int.bit_length`, no search). Gauges
are read when someone asks (`Gauge.read`), so the write buffer or the upload queue pays
nothing to be watched.

Nothing here formats text for people: `samples()` gives (name, labels, value) triples with
stable names (`riverfs_...`, Prometheus naming), which the stats file and the Prometheus
collector serialize and the CLI presents. Names are documented in docs/METRICS.md.

`begin`/`end` around a call charge its time to the request being served, when the trace asked
for a breakdown (`Timing`, carried in a context variable that is unset otherwise).
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Iterator

from riverfs.errors import RiverError

PREFIX = "riverfs_"
# Latency buckets: bucket i counts durations below 2**(FIRST_BIT + i) ns (8.2 us ... 68.7 s);
# the last one is +Inf.
FIRST_BIT = 13
BUCKETS = 24
BOUNDS = tuple((1 << (FIRST_BIT + i)) / 1e9 for i in range(BUCKETS - 1)) + (float("inf"),)

Sample = tuple[str, tuple[tuple[str, str], ...], float]


class Counter:
    """A monotonically growing number (events, bytes, nanoseconds)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, n: int = 1) -> None:
        self.value += n


class Histogram:
    """Durations in power-of-two buckets, with their count and sum."""

    __slots__ = ("buckets", "sum_ns")

    def __init__(self) -> None:
        self.buckets = [0] * BUCKETS
        self.sum_ns = 0

    def observe_ns(self, ns: int) -> None:
        i = ns.bit_length() - FIRST_BIT
        self.buckets[0 if i < 0 else (i if i < BUCKETS else BUCKETS - 1)] += 1
        self.sum_ns += ns

    @property
    def count(self) -> int:
        return sum(self.buckets)

    def quantile(self, q: float) -> float:
        """The upper bound (s) of the bucket holding quantile `q` (0 without observations)."""
        total = self.count
        if total == 0:
            return 0.0
        rank, seen = q * total, 0
        for i, n in enumerate(self.buckets):
            seen += n
            if seen >= rank:
                return BOUNDS[min(i, BUCKETS - 2)]
        return BOUNDS[BUCKETS - 2]


class Gauge:
    """A value read when sampled (`read` is set by whoever owns the thing measured)."""

    __slots__ = ("read",)

    def __init__(self) -> None:
        self.read: Callable[[], float] = lambda: 0


class Family:
    """One metric name: a single child, or one child per value of its label."""

    def __init__(self, name: str, help: str, kind: type, label: str | None) -> None:
        self.name = name
        self.help = help
        self.kind = kind
        self.label = label
        self.children: dict[str, Counter | Histogram | Gauge] = {}

    def child(self, value: str = ""):
        """The metric for label value `value` (created at first use)."""
        metric = self.children.get(value)
        if metric is None:
            metric = self.children[value] = self.kind()
        return metric

    @property
    def type_name(self) -> str:
        return {Counter: "counter", Histogram: "histogram", Gauge: "gauge"}[self.kind]


_families: dict[str, Family] = {}


def _register(name: str, help: str, kind: type, label: str | None) -> Family:
    family = _families.get(name)
    if family is None:
        family = _families[name] = Family(name, help, kind, label)
    elif family.kind is not kind or family.label != label:
        raise ValueError(f"metric {name} registered twice with different shapes")
    return family


def counter(name: str, help: str) -> Counter:
    return _register(name, help, Counter, None).child()


def histogram(name: str, help: str) -> Histogram:
    return _register(name, help, Histogram, None).child()


def gauge(name: str, help: str) -> Gauge:
    return _register(name, help, Gauge, None).child()


def family(name: str, help: str, kind: type, label: str) -> Family:
    """A labelled metric (`kind` Counter, Histogram or Gauge), children made by `child(value)`."""
    return _register(name, help, kind, label)


def families() -> list[Family]:
    return list(_families.values())


def samples() -> Iterator[Sample]:
    """Every sample, as Prometheus names them: counters `..._total`, histograms `..._bucket`
    (cumulative, `le` in seconds), `..._sum` (seconds) and `..._count`; gauges as they are.
    Histograms that never observed anything are left out (counters at 0 and gauges are
    not)."""
    for family in families():
        base = PREFIX + family.name
        for value, metric in list(family.children.items()):
            labels = ((family.label, value),) if family.label else ()
            if isinstance(metric, Counter):
                yield base + "_total", labels, metric.value
            elif isinstance(metric, Gauge):
                try:
                    yield base, labels, float(metric.read())
                except Exception:  # a gauge whose owner is gone or broken reads as absent
                    continue
            else:
                buckets = list(metric.buckets)
                total = sum(buckets)
                if total == 0:
                    continue
                seen = 0
                for bound, n in zip(BOUNDS, buckets, strict=True):
                    seen += n
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    yield base + "_bucket", (*labels, ("le", le)), seen
                yield base + "_sum", labels, metric.sum_ns / 1e9
                yield base + "_count", labels, total


def sample_line(sample: Sample) -> str:
    """`name{label="value",...} value`, the line format of `.riverfs/stats`."""
    name, labels, value = sample
    if labels:
        name += "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}"
    number = repr(value) if isinstance(value, float) and not value.is_integer() else int(value)
    return f"{name} {number}"


# ---- time charged to the request being served (the trace's breakdown) ----


class Timing:
    """Where one request's time went: nanoseconds by kind ("meta", "store", "cache"), each the
    wall time during which at least one call of that kind was in flight (calls in parallel
    count once)."""

    __slots__ = ("spent", "_open")

    def __init__(self) -> None:
        self.spent = {"store": 0, "meta": 0, "cache": 0}
        self._open: dict[str, tuple[int, int]] = {}  # kind -> (calls in flight, since)

    def begin(self, kind: str, now: int) -> None:
        calls, since = self._open.get(kind, (0, now))
        self._open[kind] = (calls + 1, since)

    def end(self, kind: str, now: int) -> None:
        calls, since = self._open.pop(kind, (1, now))
        if calls > 1:
            self._open[kind] = (calls - 1, since)
        else:
            self.spent[kind] += now - since


current: contextvars.ContextVar[Timing | None] = contextvars.ContextVar(
    "riverfs_timing", default=None
)


def begin(kind: str, now: int) -> Timing | None:
    """A call of `kind` starts for the request being served (if the trace is timing it);
    pass what this returns to `end` when the call is over."""
    timing = current.get()
    if timing is not None:
        timing.begin(kind, now)
    return timing


def end(kind: str, timing: Timing | None, now: int) -> None:
    if timing is not None:
        timing.end(kind, now)


# ---- the Prometheus endpoint ----


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:PORT` for IPv6) of `--metrics`."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RiverError(f"metrics address {text!r}: use HOST:PORT, e.g. 127.0.0.1:9567")
    return host, int(port)


class _Collector:
    """Hands prometheus-client every family at scrape time (run in its server's thread:
    it only reads numbers the event loop writes)."""

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        for fam in families():
            name = PREFIX + fam.name
            labels = [fam.label] if fam.label else []
            if fam.kind is Counter:
                out = CounterMetricFamily(name, fam.help, labels=labels)
            elif fam.kind is Gauge:
                out = GaugeMetricFamily(name, fam.help, labels=labels)
            else:
                out = HistogramMetricFamily(name, fam.help, labels=labels)
            for value, metric in list(fam.children.items()):
                key = [value] if fam.label else []
                if isinstance(metric, Counter):
                    out.add_metric(key, metric.value)
                elif isinstance(metric, Gauge):
                    try:
                        out.add_metric(key, float(metric.read()))
                    except Exception:
                        continue
                else:
                    buckets, seen = [], 0
                    for bound, n in zip(BOUNDS, list(metric.buckets), strict=True):
                        seen += n
                        buckets.append(("+Inf" if bound == float("inf") else repr(bound), seen))
                    if seen:
                        out.add_metric(key, buckets, metric.sum_ns / 1e9)
            yield out


def serve_prometheus(address: str):
    """Serve every metric at http://ADDRESS/metrics from a thread; returns the server
    (`shutdown()` it at the end)."""
    from prometheus_client import CollectorRegistry, start_http_server

    host, port = parse_address(address)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        raise RiverError(
            f"cannot serve metrics at {address}: {e.strerror or e}; choose another --metrics "
            "address (or free that port)"
        ) from e
    return server


# ---- the process ----

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> float:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


gauge("process_resident_bytes", "Resident memory of the mount's process.").read = _rss
