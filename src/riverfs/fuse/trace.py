"""What the session tells about completed requests when someone listens: the access log
(`.riverfs/accesslog`, one line per operation to every reader) and the trace (`--trace`: a
summary by operation each interval and one log line for every operation slower than
`--slow-ms`, with where its time went).

The session calls `Observer.completed` only while it has a listener, so nobody listening costs
nothing. Neither ever blocks a request: each reader has a bounded queue and a reader that falls
behind loses events, counted (`riverfs_accesslog_dropped_total`) and told in its stream.

Paths are known for inodes the kernel reached by name while the observer was on (lookups,
creates, renames it saw); others are shown by inode only.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections import OrderedDict, deque
from urllib.parse import quote

from riverfs import metrics
from riverfs.fuse import protocol as p
from riverfs.fuse.session import Session, op_label

log = logging.getLogger(__name__)

READER_QUEUE = 10_000  # lines a reader may fall behind by before it loses events
KNOWN_PATHS = 100_000
ROOT = 1
SUMMARY_INTERVAL = 10.0
# The first inode of the mount's virtual files (fuse/virtual.py), whose own requests are not
# logged: a reader's reads would feed it forever
VIRTUAL_FIRST = 0xFFFF_FFFF_FFFF_FF00

DROPPED = metrics.counter("accesslog_dropped", "Access-log lines lost by readers too slow.")

# Requests that name an entry: the offset of the name in their body (RENAME*: old, new).
_NAME_AT = {
    p.Op.LOOKUP: 0,
    p.Op.UNLINK: 0,
    p.Op.RMDIR: 0,
    p.Op.SYMLINK: 0,
    p.Op.MKNOD: p.MKNOD_IN.size,
    p.Op.MKDIR: p.MKDIR_IN.size,
    p.Op.CREATE: p.CREATE_IN.size,
    p.Op.LINK: p.LINK_IN.size,
    p.Op.RENAME: p.RENAME_IN.size,
    p.Op.RENAME2: p.RENAME2_IN.size,
}
_MAKES_ENTRY = frozenset(
    (p.Op.LOOKUP, p.Op.MKNOD, p.Op.MKDIR, p.Op.CREATE, p.Op.SYMLINK, p.Op.LINK)
)
_IO = frozenset((p.Op.READ, p.Op.WRITE))


def _errno_name(err: int) -> str:
    return "OK" if err == 0 else errno.errorcode.get(err, str(err))


class Paths:
    """inode -> (parent, name) of entries the kernel reached by name, most recent kept (and
    the reverse, so an unlink or rename finds its inode at once)."""

    def __init__(self, limit: int = KNOWN_PATHS) -> None:
        self.limit = limit
        self._up: OrderedDict[int, tuple[int, bytes]] = OrderedDict()
        self._down: dict[tuple[int, bytes], int] = {}

    def learn(self, inode: int, parent: int, name: bytes) -> None:
        self._drop_up(inode)
        self._up[inode] = (parent, name)
        self._down[(parent, name)] = inode
        if len(self._up) > self.limit:
            self._drop_up(next(iter(self._up)))

    def _drop_up(self, inode: int) -> None:
        up = self._up.pop(inode, None)
        if up is not None and self._down.get(up) == inode:
            del self._down[up]

    def forget(self, parent: int, name: bytes) -> None:
        inode = self._down.pop((parent, name), None)
        if inode is not None and self._up.get(inode) == (parent, name):
            del self._up[inode]

    def rename(self, parent: int, name: bytes, new_parent: int, new_name: bytes) -> None:
        self.forget(new_parent, new_name)
        inode = self._down.pop((parent, name), None)
        if inode is not None:
            self.learn(inode, new_parent, new_name)

    def of(self, inode: int) -> bytes | None:
        """The path of `inode` from the mount root, if every step up is known."""
        parts: list[bytes] = []
        while inode != ROOT:
            up = self._up.get(inode)
            if up is None or len(parts) > 4096:
                return None
            inode, name = up
            parts.append(name)
        return b"/" + b"/".join(reversed(parts))


class Reader:
    """One open `.riverfs/accesslog`: the lines it has not read yet."""

    def __init__(self) -> None:
        self.lines: deque[bytes] = deque()
        self.dropped = 0
        self.closed = False
        self.ready = asyncio.Event()

    def put(self, line: bytes) -> None:
        if len(self.lines) >= READER_QUEUE:
            self.dropped += 1
            DROPPED.inc()
            return
        if self.dropped:
            self.lines.append(b"# %d events dropped: this reader fell behind\n" % self.dropped)
            self.dropped = 0
        self.lines.append(line)
        self.ready.set()

    async def take(self, size: int) -> bytes:
        """Up to `size` bytes of whole lines (at least one line, waiting for it), b"" once
        closed."""
        while not self.lines:
            if self.closed:
                return b""
            self.ready.clear()
            await self.ready.wait()
        out = bytearray()
        while self.lines and len(out) + len(self.lines[0]) <= size:
            out += self.lines.popleft()
        if not out:  # a line longer than the read: give it in pieces
            line = self.lines.popleft()
            out += line[:size]
            self.lines.appendleft(line[size:])
        return bytes(out)

    def close(self) -> None:
        self.closed = True
        self.ready.set()


class Observer:
    """Listens to the session while it has access-log readers or the trace is on."""

    def __init__(self, session: Session, *, trace: bool = False, slow_ms: float = 50.0) -> None:
        self.session = session
        self.trace = trace
        self.slow_ns = int(slow_ms * 1e6)
        self.readers: set[Reader] = set()
        self.paths = Paths()
        self._summary: dict[str, list[int]] = {}  # op -> [count, errors, sum ns, max ns]
        self._summary_timer: asyncio.TimerHandle | None = None
        self._update()

    # -- who listens

    def open_reader(self) -> Reader:
        reader = Reader()
        self.readers.add(reader)
        self._update()
        return reader

    def close_reader(self, reader: Reader) -> None:
        reader.close()
        self.readers.discard(reader)
        self._update()

    def close(self) -> None:
        for reader in list(self.readers):
            self.close_reader(reader)
        if self._summary_timer is not None:
            self._summary_timer.cancel()
        self.session.observer = None
        self.session.timed = False

    def _update(self) -> None:
        listening = self.trace or bool(self.readers)
        self.session.observer = self if listening else None
        self.session.timed = self.trace

    def start(self) -> None:
        if self.trace:
            loop = asyncio.get_running_loop()
            self._summary_timer = loop.call_later(SUMMARY_INTERVAL, self._log_summary)

    # -- requests

    def completed(self, req, body: memoryview, reply, err: int, ns: int) -> None:
        opcode = req.opcode
        name = new_name = None
        at = _NAME_AT.get(opcode)
        if at is not None:
            name, new_name = _names(body, at, opcode)
        path = self._path(req.nodeid, name)
        if err == 0:
            self._learn(req, reply, name, new_name, body)
        op = op_label(opcode)
        if self.readers and req.nodeid < VIRTUAL_FIRST:
            line = self._line(req, op, path, body, err, ns)
            for reader in self.readers:
                reader.put(line)
        if self.trace and req.nodeid < VIRTUAL_FIRST:
            self._account(req, op, path, err, ns)

    def _path(self, inode: int, name: bytes | None) -> bytes | None:
        base = self.paths.of(inode)
        if name is None or base is None:
            return base
        return base.rstrip(b"/") + b"/" + name

    def _learn(self, req, reply, name, new_name, body: memoryview) -> None:
        opcode = req.opcode
        if opcode in _MAKES_ENTRY and name is not None and reply:
            entry = reply[0] if isinstance(reply, list) else reply
            if len(entry) >= 8:
                self.paths.learn(int.from_bytes(entry[:8], "little"), req.nodeid, name)
        elif opcode in (p.Op.UNLINK, p.Op.RMDIR) and name is not None:
            self.paths.forget(req.nodeid, name)
        elif opcode in (p.Op.RENAME, p.Op.RENAME2) and name is not None and new_name is not None:
            new_parent = p.RENAME_IN.unpack_from(body)[0]
            self.paths.rename(req.nodeid, name, new_parent, new_name)

    def _line(self, req, op: str, path, body: memoryview, err: int, ns: int) -> bytes:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
        fields = [stamp, f"pid={req.pid}", f"uid={req.uid}", f"op={op}", f"inode={req.nodeid}"]
        if path is not None:
            fields.append("path=" + quote(path, safe="/!$&'()*+,;:=@~-._"))
        if req.opcode in _IO:
            _fh, offset, size = p.READ_IN.unpack_from(body)[:3]
            fields += [f"offset={offset}", f"size={size}"]
        fields += [f"result={_errno_name(err)}", f"duration={ns / 1e9:.6f}"]
        return (" ".join(fields) + "\n").encode()

    # -- the trace

    def _account(self, req, op: str, path, err: int, ns: int) -> None:
        entry = self._summary.get(op)
        if entry is None:
            entry = self._summary[op] = [0, 0, 0, 0]
        entry[0] += 1
        entry[1] += err != 0
        entry[2] += ns
        entry[3] = max(entry[3], ns)
        if ns >= self.slow_ns:
            log.warning("slow %s", slow_line(req, op, path, err, ns))

    def _log_summary(self) -> None:
        summary, self._summary = self._summary, {}
        if summary:
            ranked = sorted(summary.items(), key=lambda kv: -kv[1][2])
            parts = [
                f"{op} {n} ({errs} failed) avg {total / n / 1e6:.3f} ms max {peak / 1e6:.1f} ms"
                for op, (n, errs, total, peak) in ranked
            ]
            log.info("trace, last %.0f s: %s", SUMMARY_INTERVAL, "; ".join(parts))
        loop = asyncio.get_running_loop()
        self._summary_timer = loop.call_later(SUMMARY_INTERVAL, self._log_summary)


def slow_line(req, op: str, path, err: int, ns: int) -> str:
    """`op inode=N path=P took T ms (result): store A ms, meta B ms, cache C ms, other D ms`,
    the largest part first."""
    timing = req.timing
    parts = []
    if timing is not None:
        spent = dict(timing.spent)
        spent["other"] = max(0, ns - sum(spent.values()))  # queueing, CPU (or parallel kinds)
        parts = [f"{k} {v / 1e6:.1f} ms" for k, v in sorted(spent.items(), key=lambda kv: -kv[1])]
    where = f" path={path.decode(errors='backslashreplace')}" if path is not None else ""
    return f"{op} inode={req.nodeid}{where} took {ns / 1e6:.1f} ms ({_errno_name(err)})" + (
        ": " + ", ".join(parts) if parts else ""
    )


def _names(body: memoryview, at: int, opcode: int) -> tuple[bytes | None, bytes | None]:
    raw = bytes(body[at:])
    parts = raw.split(b"\0")
    if len(parts) < 2:
        return None, None
    if opcode in (p.Op.RENAME, p.Op.RENAME2):
        return (parts[0], parts[1]) if len(parts) >= 3 else (None, None)
    return parts[0], None
