"""The counters of metadata transactions, shared by the two engines (sqlite.py, postgres.py):
latency by kind (read, write), retries, and the `--trace` share of a request spent in them."""

from __future__ import annotations

import time

from riverfs import metrics

_TXN = metrics.family(
    "meta_txn_seconds", "Metadata transactions (read, write): latency.", metrics.Histogram, "kind"
)
_TXN_READ, _TXN_WRITE = _TXN.child("read"), _TXN.child("write")
RETRIES = metrics.counter(
    "meta_txn_retries", "Metadata transactions retried (busy database, conflict)."
)


def begin() -> tuple[int, metrics.Timing | None]:
    """Call when a transaction starts; hand what it returns to `end`."""
    start = time.perf_counter_ns()
    return start, metrics.begin("meta", start)


def end(started: tuple[int, metrics.Timing | None], write: bool) -> None:
    """Count a finished transaction (committed or failed) started by `begin`."""
    start, timing = started
    now = time.perf_counter_ns()
    (_TXN_WRITE if write else _TXN_READ).observe_ns(now - start)
    metrics.end("meta", timing, now)
