"""What `riverfs profile` computes: the access log's lines (`.riverfs/accesslog`, written by
fuse/trace.py) parsed into events and aggregated by operation, path and process.

Nothing here formats text for people; cli/profile.py lays the tallies out.
"""

from __future__ import annotations

import errno
import os
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from riverfs.errors import RiverError

ACCESSLOG = "accesslog"
_DROPPED = re.compile(r"^# (\d+) events dropped")


@dataclass(frozen=True, slots=True)
class Event:
    """One completed operation, as the access log tells it."""

    time: str  # ISO 8601, UTC
    pid: int
    uid: int
    op: str
    inode: int
    path: str | None  # None: the mount did not know it (reached before the log was read)
    offset: int | None
    size: int | None
    result: str  # OK or the errno's name
    duration: float  # seconds

    @property
    def where(self) -> str:
        """The path, or the inode when the path is not known."""
        return self.path if self.path is not None else f"<inode {self.inode}>"


def parse_line(line: str) -> Event | None:
    """The event of one access-log line; None for anything else (a comment, a torn line)."""
    parts = line.split()
    if len(parts) < 7 or "=" in parts[0]:
        return None
    fields = {}
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if not eq:
            return None
        fields[key] = value
    try:
        return Event(
            time=parts[0],
            pid=int(fields["pid"]),
            uid=int(fields["uid"]),
            op=fields["op"],
            inode=int(fields["inode"]),
            path=unquote(fields["path"], errors="backslashreplace") if "path" in fields else None,
            offset=int(fields["offset"]) if "offset" in fields else None,
            size=int(fields["size"]) if "size" in fields else None,
            result=fields["result"],
            duration=float(fields["duration"]),
        )
    except (KeyError, ValueError):
        return None


def process_name(pid: int) -> str | None:
    """The command name of `pid` (/proc/PID/comm) while the process exists. Requests of pid
    0 are the kernel's own (releases, forgets, write-back of its page cache)."""
    if pid == 0:
        return "(kernel)"
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


@dataclass(slots=True)
class Tally:
    """Operations of one kind, path or process."""

    count: int = 0
    errors: int = 0
    seconds: float = 0.0  # their total duration
    slowest: float = 0.0  # the longest one
    bytes: int = 0  # read or written (the size asked for)

    def add(self, event: Event) -> None:
        self.count += 1
        self.errors += event.result != "OK"
        self.seconds += event.duration
        self.slowest = max(self.slowest, event.duration)
        if event.size is not None:
            self.bytes += event.size

    @property
    def mean(self) -> float:
        return self.seconds / self.count if self.count else 0.0


MAX_PATHS = 100_000  # paths tallied one by one; the rest are summed under OTHER_PATHS
OTHER_PATHS = "(other paths)"


@dataclass
class Profile:
    """The tallies of the events seen so far. `feed` takes the log's bytes as they come
    (lines may be split across reads)."""

    name_of: Callable[[int], str | None] = process_name
    ops: dict[str, Tally] = field(default_factory=dict)
    paths: dict[str, Tally] = field(default_factory=dict)
    processes: dict[int, Tally] = field(default_factory=dict)
    names: dict[int, str | None] = field(default_factory=dict)
    events: int = 0
    dropped: int = 0  # events the mount dropped because this reader fell behind
    unparsed: int = 0
    _partial: bytes = b""

    def feed(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            self.add_line(raw.decode(errors="backslashreplace"))

    def add_line(self, line: str) -> None:
        if not line.strip():
            return
        dropped = _DROPPED.match(line)
        if dropped:
            self.dropped += int(dropped.group(1))
            return
        event = parse_line(line)
        if event is None:
            self.unparsed += 1
            return
        self.add(event)

    def add(self, event: Event) -> None:
        self.events += 1
        where = event.where
        if where not in self.paths and len(self.paths) >= MAX_PATHS:
            where = OTHER_PATHS  # bounded: a long live view of a busy mount sees millions
        for table, key in (
            (self.ops, event.op),
            (self.paths, where),
            (self.processes, event.pid),
        ):
            tally = table.get(key)
            if tally is None:
                tally = table[key] = Tally()
            tally.add(event)
        if event.pid not in self.names:  # once: a process gone stays gone (None)
            self.names[event.pid] = self.name_of(event.pid)

    def top_ops(self, n: int, by: str = "seconds") -> list[tuple[str, Tally]]:
        """The `n` operations with the most total time (`by="seconds"`) or the most calls."""
        return _top(self.ops, n, by)

    def top_paths(self, n: int, by: str = "seconds") -> list[tuple[str, Tally]]:
        """The `n` paths whose operations took the most time."""
        return _top(self.paths, n, by)

    def top_processes(self, n: int, by: str = "seconds") -> list[tuple[int, Tally]]:
        return _top(self.processes, n, by)

    def summary(self, n: int, elapsed: float) -> dict:
        """The tallies as plain data (for --json): top `n` of each, by total time."""

        def rows(pairs, key_name: str) -> list[dict]:
            return [{key_name: k, **_tally_dict(t)} for k, t in pairs]

        procs = rows(self.top_processes(n), "pid")
        for row in procs:
            row["name"] = self.names.get(row["pid"])
        return {
            "seconds": elapsed,
            "events": self.events,
            "dropped": self.dropped,
            "ops": rows(self.top_ops(len(self.ops)), "op"),
            "paths": rows(self.top_paths(n), "path"),
            "processes": procs,
        }


def _tally_dict(t: Tally) -> dict:
    return {
        "count": t.count,
        "errors": t.errors,
        "seconds": t.seconds,
        "mean": t.mean,
        "slowest": t.slowest,
        "bytes": t.bytes,
    }


def _top(table: dict, n: int, by: str) -> list:
    if by not in ("seconds", "count"):
        raise ValueError(f"rank by seconds or count, not {by!r}")
    ranked = sorted(table.items(), key=lambda kv: (-getattr(kv[1], by), -kv[1].count, str(kv[0])))
    return ranked[:n]


class AccessLog:
    """An open `.riverfs/accesslog` of the mount at `root`, read by a thread (a read blocks
    until the mount has lines), so the caller waits with a deadline (`take`).

    The mount streams only while the file is open; it stops when this process closes it or
    exits (a read still blocked is interrupted then)."""

    def __init__(self, root: Path) -> None:
        path = root / ".riverfs" / ACCESSLOG
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except PermissionError:
            raise RiverError(
                f"the access log {path} is readable by root only (it shows every path): "
                "run riverfs profile as root"
            ) from None
        except FileNotFoundError:
            raise RiverError(
                f"{root} serves no .riverfs/{ACCESSLOG}: its daemon predates it (remount with "
                "this riverfs)"
            ) from None
        except OSError as e:
            if e.errno == errno.ENOTCONN:
                raise RiverError(
                    f"the mount at {root} is not connected (its daemon is gone): "
                    f"riverfs umount {root}"
                ) from None
            raise RiverError(f"cannot open {path}: {e.strerror}") from None
        self._chunks: queue.Queue[bytes | OSError] = queue.Queue()
        self.ended = False  # the mount closed the stream (unmounted)
        threading.Thread(target=self._read, name="accesslog", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                self._chunks.put(e)
                return
            self._chunks.put(data)
            if not data:
                return

    def take(self, timeout: float) -> bytes:
        """What the mount sent, waiting at most `timeout` seconds for the first bytes (b""
        when nothing came or the stream ended: see `ended`)."""
        out = bytearray()
        try:
            item = self._chunks.get(timeout=max(timeout, 0.0))
            while True:
                if isinstance(item, OSError):
                    self.ended = True
                    raise RiverError(f"reading the access log failed: {item.strerror}")
                if not item:
                    self.ended = True
                    break
                out += item
                item = self._chunks.get_nowait()
        except queue.Empty:
            pass
        return bytes(out)
