"""A FUSE session: the /dev/fuse device, mount and unmount, the read loop, dispatch, replies
and kernel notifications.

One asyncio loop serves the device. The fd is non-blocking and watched by the loop; each
request read from it is dispatched at once: its handler runs its first step inline, so a
request that needs no waiting (a cached lookup, a buffered write, a SQLite query) is answered
before the next one is read, without a task. A handler that has to wait goes on as a task.
At most `max_in_flight` such tasks run (lock waits excepted: they may wait on a request still
to come); at the bound the loop stops reading the device until one finishes (back-pressure:
the kernel queues the rest).

Replies go out with one `os.writev` each, from the buffers the handler returned (no joining
copy). Notifications to the kernel (forget an entry or an inode's attributes and pages) are
written by one small thread from a bounded queue: the kernel may block such a write on pages
that an in-flight request of ours holds, which would deadlock the loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import queue
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from riverfs import metrics
from riverfs.errors import FSError, RiverError
from riverfs.fuse import protocol as p

log = logging.getLogger(__name__)

# Requests a FUSE_INTERRUPT may abandon (nothing is half done when they are cancelled).
INTERRUPTIBLE = frozenset(
    (p.Op.READ, p.Op.GETLK, p.Op.SETLK, p.Op.SETLKW, p.Op.LSEEK, p.Op.READDIR)
)
# Requests not counted against max_in_flight: a lock wait may wait for an unlock still queued.
UNBOUNDED = frozenset((p.Op.SETLKW, p.Op.SETLK))
NO_REPLY = None  # what a handler returns for FORGET-like requests
Reply = bytes | bytearray | memoryview | Sequence[bytes | bytearray | memoryview] | None
Handler = Callable[["Request", memoryview], Awaitable[Reply]]

MAX_IOV = 1000  # buffers of one reply's writev (IOV_MAX is 1024)
READ_BURST = 64  # requests read per readiness callback before other callbacks get a turn
SPIN_NS = 30_000  # how long the read loop polls for the next request before sleeping
SPIN_MAX_MISSES = 8  # polls in a row that found nothing: stop polling ...
SPIN_RETRY_AFTER = 256  # ... for this many wake-ups
NOTIFY_QUEUE_LIMIT = 10_000
MS_NOSUID, MS_NODEV, MS_RDONLY = 2, 4, 1

OP_SECONDS = metrics.family(
    "fuse_op_seconds", "FUSE requests answered, by operation: latency.", metrics.Histogram, "op"
)
OP_ERRORS = metrics.family(
    "fuse_op_errors", "FUSE requests answered with an error, by operation.", metrics.Counter, "op"
)
MNT_DETACH = 2


@dataclass(slots=True)
class Request:
    """The fuse_in_header of one request."""

    opcode: int
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int
    start: int = 0  # perf_counter_ns when it was read
    timing: metrics.Timing | None = None  # where its time went, when the trace asks


@dataclass(slots=True)
class Settings:
    """What riverfs asks of the kernel at INIT."""

    max_write: int = 1 << 20
    max_background: int = 64
    writeback_cache: bool = False
    max_in_flight: int = 256
    # POSIX ACLs: the kernel enforces them and sends the umask unapplied (the filesystem
    # then applies it, or a default ACL); a filesystem that does not store ACLs leaves it off
    posix_acl: bool = False


WANTED = (
    p.Init.ASYNC_READ
    | p.Init.POSIX_LOCKS
    | p.Init.FLOCK_LOCKS
    | p.Init.ATOMIC_O_TRUNC
    | p.Init.EXPORT_SUPPORT
    | p.Init.BIG_WRITES
    | p.Init.MAX_PAGES
    | p.Init.PARALLEL_DIROPS
    | p.Init.DO_READDIRPLUS
    | p.Init.READDIRPLUS_AUTO
    | p.Init.CACHE_SYMLINKS
    | p.Init.EXPLICIT_INVAL_DATA
    | p.Init.HANDLE_KILLPRIV_V2
)
ACL_WANTED = (
    p.Init.POSIX_ACL  # the kernel enforces ACLs; riverfs stores and inherits them
    | p.Init.DONT_MASK  # the umask comes unapplied: with a default ACL it does not apply
    | p.Init.SETXATTR_EXT  # tells whether setting an ACL drops setgid
)

# ---- device, mount, unmount ---------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def mount(
    device: str,
    target: str,
    options: list[str],
    read_only: bool,
    *,
    source: str = "riverfs",
    dev: bool = False,
    suid: bool = False,
) -> int:
    """Mount a FUSE filesystem at `target`; return the open device fd to serve it on.

    As root through mount(2); otherwise through fusermount3, which mounts and hands the fd
    back over a socket pair (the `_FUSE_COMMFD` protocol of libfuse). `source` is the device
    name /proc/mounts shows; `dev`/`suid` drop nodev/nosuid (root only: fusermount3 always
    mounts nodev,nosuid for a user).
    """
    opts = ",".join(options)
    if os.getuid() != 0:
        return _fusermount(target, f"{opts},fsname={source}" + (",ro" if read_only else ""))
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise RiverError(f"cannot open the FUSE device {device}: {e.strerror}") from e
    data = f"fd={fd},rootmode={stat.S_IFDIR:o},user_id=0,group_id=0,{opts}"
    flags = (0 if suid else MS_NOSUID) | (0 if dev else MS_NODEV) | (MS_RDONLY if read_only else 0)
    if _libc.mount(source.encode(), target.encode(), b"fuse.riverfs", flags, data.encode()) != 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise RiverError(f"cannot mount at {target}: {os.strerror(err)}")
    return fd


def _fusermount(target: str, opts: str) -> int:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        env = {**os.environ, "_FUSE_COMMFD": str(theirs.fileno())}
        try:
            proc = subprocess.Popen(
                ["fusermount3", "-o", opts, "--", target],
                env=env,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        except FileNotFoundError as e:
            raise RiverError("fusermount3 not found: install fuse3 (apt-get install fuse3)") from e
        theirs.close()
        try:
            _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        except OSError:
            fds = []
        _, err = proc.communicate()
        if not fds:
            detail = err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"
            raise RiverError(f"cannot mount at {target}: {detail.removeprefix('fusermount3: ')}")
    os.set_inheritable(fds[0], False)
    return fds[0]


def unmount(target: str) -> None:
    """Detach the mount at `target` (lazily: open files keep the connection until closed)."""
    if os.getuid() == 0:
        if _libc.umount2(target.encode(), MNT_DETACH) == 0:
            return
        err = ctypes.get_errno()
        if err != errno.EINVAL:  # EINVAL: not mounted (any more)
            log.warning("unmount of %s: %s", target, os.strerror(err))
        return
    subprocess.run(["fusermount3", "-u", "-z", "--", target], capture_output=True)


# ---- running requests ---------------------------------------------------------------------


class _Resume:
    """Await a coroutine whose first step already ran outside any task.

    The task that awaits this passes every wake-up (a result or an exception such as a
    cancellation) on to the coroutine, exactly as `await coro` would.
    """

    __slots__ = ("coro", "first")

    def __init__(self, coro, first) -> None:
        self.coro = coro
        self.first = first

    def __await__(self):
        coro, value = self.coro, self.first
        while True:
            try:
                yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as e:
                try:
                    value = coro.throw(e)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(None)
                except StopIteration as stop:
                    return stop.value


class Session:
    """Serves requests from one FUSE device fd with `handlers` (opcode -> coroutine)."""

    def __init__(self, fd: int, handlers: dict[int, Handler], settings: Settings) -> None:
        self.fd = fd
        self.handlers = handlers
        self._special_first: int = 1 << 64  # see `route_special`
        self._special: dict[int, Handler] = {}
        self._special_other: Handler | None = None
        self.observer = None  # a trace.Observer while someone listens to completed requests
        self.timed = False  # the trace wants to know where each request's time went
        self._latency: dict[int, metrics.Histogram] = {}
        self.settings = settings
        self.proto_minor = 0
        self.agreed = p.Init(0)
        self.on_init: Callable[[p.Init], None] = lambda agreed: None  # before any request
        self.initialized: asyncio.Future[None] | None = None
        self._tasks: dict[int, tuple[asyncio.Task, int]] = {}  # unique -> (task, opcode)
        self._bounded = 0  # tasks counted against max_in_flight
        self._interrupted: set[int] = set()
        self._reading = False
        self._done: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bufsize = max(p.FUSE_MIN_READ_BUFFER, settings.max_write + 4096)
        self._spin_ns = SPIN_NS
        self._spin_misses = 0
        self._spin_skipped = 0
        self.notifier = Notifier(fd)

    def route_special(self, first: int, handlers: dict[int, Handler], other: Handler) -> None:
        """Serve requests on inodes from `first` up with `handlers` (by opcode; `other` for
        the rest): the mount's virtual files, which the vfs never sees."""
        self._special_first, self._special, self._special_other = first, handlers, other

    # -- life cycle

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.initialized = self._loop.create_future()
        self._done = self._loop.create_future()
        os.set_blocking(self.fd, False)
        self._resume_reading()
        self.notifier.start()

    async def wait_closed(self) -> None:
        """Return once the kernel ended the session (unmount) or `stop` was called."""
        assert self._done is not None
        await self._done

    def stop(self) -> None:
        """Stop reading requests (the caller unmounts)."""
        self._pause_reading()
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    async def drain(self, timeout: float = 30.0) -> None:
        """Let the requests in flight finish (up to `timeout`), then cancel the rest."""
        tasks = [t for t, _ in self._tasks.values()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)

    def close(self) -> None:
        self._pause_reading()
        self.notifier.stop()
        try:
            os.close(self.fd)
        except OSError:
            pass

    def _resume_reading(self) -> None:
        if not self._reading and self._loop is not None:
            self._loop.add_reader(self.fd, self._on_readable)
            self._reading = True

    def _pause_reading(self) -> None:
        if self._reading and self._loop is not None:
            self._loop.remove_reader(self.fd)
            self._reading = False

    # -- the read loop

    def _on_readable(self) -> None:
        fd, size = self.fd, self._bufsize
        for _ in range(READ_BURST):
            try:
                buf = os.read(fd, size)
            except BlockingIOError:
                buf = self._poll_briefly()
                if buf is None:
                    return
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.EINTR):  # interrupted before we read it
                    continue
                if e.errno != errno.ENODEV:
                    log.error("reading the FUSE device failed: %s; ending the session", e)
                self.stop()  # ENODEV: unmounted
                return
            self.dispatch(buf)
            if not self._reading:
                return

    def _poll_briefly(self) -> bytes | None:
        """Retry the read for up to `spin_ns` before going back to sleep in the loop.

        A process issuing requests back to back sends the next one a few microseconds after
        our reply; sleeping in epoll and being woken again costs tens of microseconds on a
        VM (an idle vCPU halts). The window adapts: it closes after polls that find nothing
        and opens again after a quiet period, so an idle or sparse mount does not spin.
        """
        if self._spin_ns == 0:
            self._spin_skipped += 1
            if self._spin_skipped < SPIN_RETRY_AFTER:
                return None
            self._spin_ns = SPIN_NS
        deadline = time.perf_counter_ns() + self._spin_ns
        fd, size = self.fd, self._bufsize
        while time.perf_counter_ns() < deadline:
            try:
                buf = os.read(fd, size)
            except BlockingIOError:
                os.sched_yield()  # a client on this same CPU gets to send its request
                continue
            except OSError:
                return None  # the next readiness event handles it
            self._spin_misses = 0
            return buf
        self._spin_misses += 1
        if self._spin_misses >= SPIN_MAX_MISSES:
            self._spin_ns, self._spin_skipped, self._spin_misses = 0, 0, 0
        return None

    def dispatch(self, buf: bytes) -> None:
        """Serve one request: inline if its handler finishes without waiting, else as a task."""
        if len(buf) < p.IN_HEADER.size:
            log.error("short FUSE request (%d bytes) ignored", len(buf))
            return
        length, opcode, unique, nodeid, uid, gid, pid, extlen, _ = p.IN_HEADER.unpack_from(buf)
        end = length - extlen * 8
        if length != len(buf) or end < p.IN_HEADER.size:
            log.error(
                "malformed FUSE request (opcode %d, %d of %d bytes)", opcode, len(buf), length
            )
            self.reply_error(unique, errno.EIO)
            return
        body = memoryview(buf)[p.IN_HEADER.size : end]
        if len(body) < p.BODY_SIZE.get(opcode, 0):
            log.error("%s request with a body of %d bytes", _op_name(opcode), len(body))
            self.reply_error(unique, errno.EINVAL)
            return
        if nodeid >= self._special_first:
            handler = self._special.get(opcode, self._special_other)
        else:
            handler = self.handlers.get(opcode)
        if handler is None:
            if opcode == p.Op.INIT:
                self._init(unique, body)
            elif opcode == p.Op.INTERRUPT:
                self._interrupt(body)
            elif opcode not in (p.Op.FORGET, p.Op.BATCH_FORGET):
                self.reply_error(unique, errno.ENOSYS)
            return
        req = Request(opcode, unique, nodeid, uid, gid, pid, time.perf_counter_ns())
        if self.timed:
            req.timing = metrics.Timing()
            token = metrics.current.set(req.timing)
            try:
                self._start(req, body, handler)
            finally:
                metrics.current.reset(token)
        else:
            self._start(req, body, handler)

    def _start(self, req: Request, body: memoryview, handler: Handler) -> None:
        coro = handler(req, body)
        try:
            first = coro.send(None)
        except StopIteration as done:
            self._answer(req, body, done.value, 0)
            return
        except BaseException as e:
            self._answer(req, body, None, self._failed(req, e))
            return
        opcode = req.opcode
        task = self._loop.create_task(self._finish(req, body, _Resume(coro, first)))
        self._tasks[req.unique] = (task, opcode)
        if opcode not in UNBOUNDED:
            self._bounded += 1
            if self._bounded >= self.settings.max_in_flight:
                self._pause_reading()

    def _answer(self, req: Request, body: memoryview, reply: Reply, err: int) -> None:
        """Count the request, then reply (the errno `err`, or `reply`): a caller that has
        its answer finds it counted in `.riverfs/stats` and the Prometheus endpoint."""
        self._completed(req, body, reply, err)
        if err:
            self.reply_error(req.unique, err)
        else:
            self.reply(req.unique, reply)

    def _completed(self, req: Request, body: memoryview, reply: Reply, err: int) -> None:
        """Count an answered request (and tell the observer, if someone listens)."""
        ns = time.perf_counter_ns() - req.start
        latency = self._latency.get(req.opcode)
        if latency is None:
            latency = self._latency[req.opcode] = OP_SECONDS.child(op_label(req.opcode))
        latency.observe_ns(ns)
        if err:
            OP_ERRORS.child(op_label(req.opcode)).inc()
        if self.observer is not None:
            self.observer.completed(req, body, reply, err, ns)

    async def _finish(self, req: Request, body: memoryview, work: _Resume) -> None:
        try:
            result = await work
        except asyncio.CancelledError:
            if req.unique in self._interrupted:
                self._answer(req, body, None, errno.EINTR)
            else:
                self._answer(req, body, None, errno.EIO)
                raise
        except BaseException as e:
            self._answer(req, body, None, self._failed(req, e))
        else:
            self._answer(req, body, result, 0)
        finally:
            self._interrupted.discard(req.unique)
            _, opcode = self._tasks.pop(req.unique)
            if opcode not in UNBOUNDED:
                self._bounded -= 1
                if self._bounded < self.settings.max_in_flight and not self._done.done():
                    self._resume_reading()

    def _failed(self, req: Request, e: BaseException) -> int:
        """Errors are translated here, once: FSError to its errno; anything else is logged
        and answered EIO (the mount keeps running). Returns the errno to answer."""
        if isinstance(e, FSError):
            return e.errno
        if isinstance(e, Exception):
            log.error(
                "%s of inode %d failed unexpectedly; answering EIO",
                _op_name(req.opcode),
                req.nodeid,
                exc_info=e,
            )
            return errno.EIO
        raise e

    def _interrupt(self, body: memoryview) -> None:
        (target,) = p.INTERRUPT_IN.unpack_from(body)
        entry = self._tasks.get(target)
        # Only requests that are safe to abandon are cancelled; the others finish normally,
        # which the protocol allows. An unknown unique was answered already.
        if entry is not None and entry[1] in INTERRUPTIBLE:
            self._interrupted.add(target)
            # Not at once: a task cancelled before its first step never runs its handler's
            # error path, so the request would get no reply. Its first step is queued ahead.
            self._loop.call_soon(entry[0].cancel)

    # -- replies

    def reply(self, unique: int, data: Reply) -> None:
        if data is None:
            return
        if isinstance(data, bytes | bytearray | memoryview):
            bufs: list = [b"", data]
            size = len(data)
        elif len(data) < MAX_IOV:
            bufs = [b"", *data]
            size = sum(len(b) for b in data)
        else:  # writev takes at most IOV_MAX (1024) buffers
            joined = b"".join(data)
            bufs = [b"", joined]
            size = len(joined)
        bufs[0] = p.OUT_HEADER.pack(p.OUT_HEADER.size + size, 0, unique)
        self._write(bufs)

    def reply_error(self, unique: int, err: int) -> None:
        self._write([p.OUT_HEADER.pack(p.OUT_HEADER.size, -err, unique)])

    def _write(self, bufs: list) -> None:
        try:
            os.writev(self.fd, bufs)
        except OSError as e:
            # ENOENT: the request was interrupted and is gone; ENODEV: unmounted meanwhile
            if e.errno not in (errno.ENOENT, errno.ENODEV, errno.EBADF):
                log.error("writing a FUSE reply failed: %s", e)

    # -- INIT

    def _init(self, unique: int, body: memoryview) -> None:
        major, minor, max_readahead, flags = p.INIT_IN.unpack_from(body)
        if major > p.KERNEL_VERSION:  # the kernel then retries with our major
            self.reply(unique, p.INIT_OUT.pack(p.KERNEL_VERSION, p.KERNEL_MINOR_VERSION, *[0] * 10))
            return
        if major < p.KERNEL_VERSION or minor < p.MIN_MINOR_VERSION:
            log.error(
                "kernel FUSE protocol %d.%d is too old (need 7.%d)",
                major,
                minor,
                p.MIN_MINOR_VERSION,
            )
            self.reply_error(unique, errno.EPROTO)
            self.stop()
            return
        offered = p.Init(flags)
        if flags & p.Init.INIT_EXT and len(body) >= p.INIT_IN.size + p.INIT_IN_EXT.size:
            (flags2,) = p.INIT_IN_EXT.unpack_from(body, p.INIT_IN.size)
            offered |= p.Init(flags2 << 32)
        wanted = WANTED | (p.Init.WRITEBACK_CACHE if self.settings.writeback_cache else 0)
        if self.settings.posix_acl:
            wanted |= ACL_WANTED
        if not offered & p.Init.POSIX_ACL:  # then the kernel applies the umask, as before
            wanted &= ~p.Init.DONT_MASK
        agreed = offered & wanted
        if offered & p.Init.INIT_EXT:
            agreed |= p.Init.INIT_EXT
        self.proto_minor = min(minor, p.KERNEL_MINOR_VERSION)
        self.agreed = agreed
        self.on_init(agreed)
        max_write = self.settings.max_write
        max_pages = 0
        if agreed & p.Init.MAX_PAGES:
            max_pages = (max_write + 4095) // 4096
        else:
            max_write = min(max_write, 128 << 10)  # the kernel's limit without MAX_PAGES
        self._bufsize = max(p.FUSE_MIN_READ_BUFFER, max_write + 4096)
        background = self.settings.max_background
        out = p.INIT_OUT.pack(
            p.KERNEL_VERSION,
            self.proto_minor,
            max_readahead,
            int(agreed) & 0xFFFFFFFF,
            background,
            background * 3 // 4,
            max_write,
            1,  # time_gran: nanoseconds
            max_pages,
            0,
            int(agreed) >> 32,
            0,
        )
        if minor < 23:
            out = out[: p.COMPAT_INIT_OUT_SIZE]
        self.reply(unique, out)
        log.info(
            "FUSE %d.%d (kernel %d.%d): max_write %d, max_readahead %d, agreed %s",
            p.KERNEL_VERSION,
            self.proto_minor,
            major,
            minor,
            max_write,
            max_readahead,
            "|".join(f.name for f in p.Init if f in agreed and f.name),
        )
        if self.initialized is not None and not self.initialized.done():
            self.initialized.set_result(None)


def _op_name(opcode: int) -> str:
    try:
        return p.Op(opcode).name
    except ValueError:
        return f"opcode {opcode}"


def op_label(opcode: int) -> str:
    """The operation's name in metrics and logs of requests: `lookup`, `op4099`."""
    try:
        return p.Op(opcode).name.lower()
    except ValueError:
        return f"op{opcode}"


# ---- notifications ------------------------------------------------------------------------


class Notifier:
    """Writes FUSE notifications to the device from one thread, fed by a bounded queue.

    When the queue is full a notification is dropped with a warning: the kernel then keeps the
    stale item until its attribute or entry timeout, the behaviour without invalidation, never
    a wrong answer forever.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.dropped = 0
        self._queue: queue.Queue[list | None] = queue.Queue(NOTIFY_QUEUE_LIMIT)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fuse-notify", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the notifications queued so far (a blocked one gets `timeout`)."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._thread = None

    # The two calls the change watcher makes (vfs.watcher.Kernel).
    def forget_entry(self, parent: int, name: bytes) -> None:
        body = p.NOTIFY_INVAL_ENTRY_OUT.pack(parent, len(name), 0)
        self._put(p.Notify.INVAL_ENTRY, [body, name, b"\0"])

    def forget_inode(self, inode: int, data: bool) -> None:
        """Forget the attributes of `inode`, and its cached pages too if `data`."""
        self.forget_range(inode, 0 if data else -1, 0)

    def forget_range(self, inode: int, offset: int, length: int) -> None:
        """Forget attributes and the cached pages of [offset, offset+length) (0: to the end;
        a negative offset: attributes only)."""
        self._put(p.Notify.INVAL_INODE, [p.NOTIFY_INVAL_INODE_OUT.pack(inode, offset, length)])

    def _put(self, code: int, bufs: list) -> None:
        size = p.OUT_HEADER.size + sum(len(b) for b in bufs)
        try:
            self._queue.put_nowait([p.OUT_HEADER.pack(size, code, 0), *bufs])
        except queue.Full:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning(
                    "kernel notification queue full: %d notifications dropped", self.dropped
                )

    def _run(self) -> None:
        while True:
            bufs = self._queue.get()
            if bufs is None:
                return
            try:
                os.writev(self.fd, bufs)
            except OSError as e:
                if e.errno in (errno.ENODEV, errno.EBADF):
                    return
                if e.errno not in (errno.ENOENT, errno.ENOTDIR):  # the kernel forgot it already
                    log.warning("kernel notification failed: %s", e)
