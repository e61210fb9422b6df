"""File locks across mounts: flock and POSIX record locks held in the metadata engine.

Two mounts of one volume (SQLite on this host, and PostgreSQL) must exclude each other
exactly as two processes exclude each other on a local directory. POSIX locks belong to a
process, so every lock owner here is its own process: an `Agent`, a small Python child that
runs lock calls it is sent (one JSON line each) and answers with their outcome. The same
sequences run between two agents on a local file (the reference: what Linux does) and
between an agent on mount A and one on mount B; the outcomes must be equal.
"""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import Mount, Volume, run_cli, wait_until

ENGINES = ("sqlite", "postgresql")
MOUNT_ARGS = ("--heartbeat", "1")  # dead sessions are noticed within a few seconds
REPLY_WITHIN = 10.0  # seconds an agent has to answer a call that must not block
CLEANUP_WITHIN = 30.0  # seconds for a dead mount's locks to be freed by the leader
EWOULDBLOCK = errno.errorcode[errno.EWOULDBLOCK]  # "EAGAIN": the same number on Linux
SYS_FCNTL, SYS_FLOCK = 72, 73  # x86_64 syscall numbers, as /proc/PID/syscall shows them

AGENT = r"""
import errno, fcntl, json, os, signal, struct, sys

class Interrupted(Exception):
    pass

waiting = False  # inside a call that may block: a signal then ends it

def interrupted(signum, frame):
    if waiting:
        raise Interrupted  # PEP 475: only a raising handler stops Python retrying on EINTR

signal.signal(signal.SIGUSR1, interrupted)
TYPES = {"r": fcntl.F_RDLCK, "w": fcntl.F_WRLCK, "u": fcntl.F_UNLCK}
NAMES = {v: k for k, v in TYPES.items()}
# struct flock on x86_64: short l_type, short l_whence, (pad), off_t l_start, off_t l_len,
# pid_t l_pid, (pad): 32 bytes
FLOCK = "hhqqi4x"
CMDS = {"setlk": fcntl.F_SETLK, "setlkw": fcntl.F_SETLKW, "getlk": fcntl.F_GETLK}
HOW = {"ex": fcntl.LOCK_EX, "sh": fcntl.LOCK_SH, "un": fcntl.LOCK_UN}

def handle(cmd):
    op = cmd["op"]
    if op == "open":
        return os.open(cmd["path"], os.O_RDWR | os.O_CREAT, 0o666)
    if op == "close":
        os.close(cmd["fd"])
        return None
    if op in CMDS:
        arg = struct.pack(FLOCK, TYPES[cmd["type"]], os.SEEK_SET, cmd["start"], cmd["len"], 0)
        out = fcntl.fcntl(cmd["fd"], CMDS[op], arg)
        if op == "getlk":
            type_, whence, start, length, pid = struct.unpack(FLOCK, out)
            return [NAMES[type_], start, length, pid]
        return None
    if op == "lockf":
        how = {"w": fcntl.LOCK_EX, "r": fcntl.LOCK_SH, "u": fcntl.LOCK_UN}[cmd["type"]]
        fcntl.lockf(cmd["fd"], how | (fcntl.LOCK_NB if cmd.get("nb") else 0), cmd["len"],
                    cmd["start"])
        return None
    if op == "flock":
        fcntl.flock(cmd["fd"], HOW[cmd["how"]] | (fcntl.LOCK_NB if cmd.get("nb") else 0))
        return None
    raise ValueError(op)

for line in sys.stdin:
    try:
        waiting = True
        try:
            reply = {"ok": handle(json.loads(line))}
        finally:
            waiting = False
    except Interrupted:
        reply = {"interrupted": True}
    except OSError as e:
        reply = {"errno": errno.errorcode[e.errno]}
    print(json.dumps(reply), flush=True)
"""


class Agent:
    """A child process that owns POSIX locks: it runs the calls it is sent, one at a time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-c", AGENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.pid = self.proc.pid
        self._buf = b""

    def send(self, op: str, **args) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}).encode() + b"\n")
        self.proc.stdin.flush()

    def answered(self, timeout: float = 0.0) -> bool:
        """Whether the agent's answer is there (waiting up to `timeout` for it)."""
        if b"\n" in self._buf:
            return True
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
            if ready:
                chunk = os.read(fd, 65536)
                assert chunk, f"agent {self.name} died (status {self.proc.poll()})"
                self._buf += chunk
                if b"\n" in self._buf:
                    return True
            if time.monotonic() >= deadline:
                return False

    def reply(self, timeout: float = REPLY_WITHIN):
        assert self.answered(timeout), f"agent {self.name} did not answer within {timeout}s"
        line, _, self._buf = self._buf.partition(b"\n")
        answer = json.loads(line)
        if "ok" in answer:
            return answer["ok"]
        return answer.get("errno") or "interrupted"

    def call(self, op: str, **args):
        self.send(op, **args)
        return self.reply()

    def syscall(self) -> int | None:
        """The number of the system call the agent is blocked in, if any."""
        try:
            with open(f"/proc/{self.pid}/syscall") as f:
                first = f.read().split()[0]
        except (FileNotFoundError, IndexError):
            return None
        return int(first) if first.lstrip("-").isdigit() else None

    def wait_blocked_in(self, nr: int) -> None:
        """Wait until the agent sits in system call `nr` without having answered."""
        wait_until(lambda: self.syscall() == nr or self.answered(), timeout=REPLY_WITHIN)
        assert not self.answered(), f"agent {self.name} answered {self.reply()!r}: not blocked"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


@pytest.fixture
def agents() -> Iterator:
    """agents("A", "B", ...) starts lock-owning processes; all are killed at teardown."""
    started: list[Agent] = []

    def start(*names: str) -> list[Agent]:
        new = [Agent(n) for n in names]
        started.extend(new)
        return new

    try:
        yield start
    finally:
        for a in started:
            a.stop()


# ---- the volumes ----------------------------------------------------------------------------


@contextmanager
def two_mounts(
    tmp_path_factory, request, engine: str, name: str
) -> Iterator[tuple[Volume, Mount, Mount]]:
    """One fresh volume (metadata on `engine`, file:// store) mounted twice, each mount with
    its own cache: (volume, mount A, mount B). Both are unmounted at the end."""
    root = tmp_path_factory.mktemp(name)
    server, database = None, f"{name}_{uuid.uuid4().hex[:8]}"
    if engine == "sqlite":
        meta_url = f"sqlite://{root}/meta.db"
    else:
        server = request.getfixturevalue("postgres")
        meta_url = server.create_database(database)
    vol = Volume(root, meta_url, f"file://{root}/store", root / "cache")
    try:
        run_cli("format", meta_url, "--storage", vol.storage_url)
        a = vol.mount(root / "a", *MOUNT_ARGS, "--cache-dir", str(root / "cache-a"))
        b = vol.mount(root / "b", *MOUNT_ARGS, "--cache-dir", str(root / "cache-b"))
        yield vol, a, b
    finally:
        vol.cleanup()
        if server is not None:
            server.drop_database(database)


@pytest.fixture(scope="module", params=ENGINES)
def pair(tmp_path_factory, request) -> Iterator[tuple[Path, Path]]:
    """Two mounts of one volume, shared by the module's tests on one engine."""
    with two_mounts(tmp_path_factory, request, request.param, f"locks_{request.param}") as m:
        yield m[1].path, m[2].path


@pytest.fixture
def files(pair, request, tmp_path) -> tuple[Path, Path, Path]:
    """A fresh file, by its path through mount A and through mount B, and a local file."""
    name = f"{request.node.name[:60]}-{uuid.uuid4().hex[:6]}"
    a, b = pair[0] / name, pair[1] / name
    a.write_bytes(b"x" * 4096)
    wait_until(b.exists)
    local = tmp_path / "local"
    local.write_bytes(b"x" * 4096)
    return a, b, local


# ---- the same sequence, locally and across mounts -------------------------------------------

# Steps: (who, op, args). `who` 0 and 1 are the two owners, each with the file open once; a
# "getlk" answer's pid is replaced by the name of the owner it belongs to.
W, R, U = "w", "r", "u"
EOF = 0  # l_len 0: to the end of the file, however far it grows


def lk(who: int, type_: str, start: int, length: int, op: str = "setlk"):
    return (who, op, {"type": type_, "start": start, "len": length})


def getlk(who: int, type_: str, start: int, length: int):
    return lk(who, type_, start, length, "getlk")


SCENARIOS = {
    "overlapping_and_disjoint_write_locks": [
        lk(0, W, 0, 100),
        lk(1, W, 50, 100),  # overlaps [50, 100): refused
        lk(1, W, 100, 100),  # [100, 200) touches, does not overlap: granted
        lk(1, W, 99, 1),
        getlk(1, W, 0, 10),  # reports 0's lock
        getlk(0, R, 150, 10),  # reports 1's lock
        getlk(1, R, 100, 100),  # its own lock does not conflict with itself
        getlk(0, W, 300, 10),  # nothing there
        lk(0, U, 0, 100),
        lk(1, W, 0, 100),
    ],
    "read_locks_share_write_locks_exclude": [
        lk(0, R, 0, 100),
        lk(1, R, 50, 100),  # read over read: granted
        lk(1, W, 0, 10),  # write over 0's read: refused
        lk(0, W, 120, 10),  # write over 1's read: refused
        getlk(0, R, 120, 10),  # a read probe over a read lock: no conflict
        getlk(0, W, 120, 10),
        getlk(1, W, 0, 200),
        lk(0, W, 0, 50),  # 0 alone holds [0, 50): converted in place
        getlk(1, R, 0, 60),
    ],
    "upgrade_and_downgrade": [
        lk(0, R, 0, 100),
        lk(0, W, 0, 100),  # upgrade, nobody else reads: granted
        lk(1, R, 10, 10),
        getlk(1, R, 10, 10),
        lk(0, R, 0, 100),  # downgrade
        lk(1, R, 10, 10),
        lk(0, W, 0, 100),  # upgrade now conflicts with 1's read: refused, 0 keeps its read
        getlk(1, W, 50, 10),
        lk(1, U, 0, EOF),
        lk(0, W, 0, 100),
        getlk(1, R, 0, EOF),
    ],
    "unlock_of_a_middle_range_splits_the_lock": [
        lk(0, W, 0, 300),
        lk(0, U, 100, 100),  # [0, 100) and [200, 300) remain
        lk(1, W, 100, 100),  # the hole: granted
        lk(1, W, 50, 10),
        lk(1, W, 250, 10),
        getlk(1, W, 0, 60),  # [0, 100) of 0
        getlk(1, W, 260, 10),  # [200, 300) of 0
        getlk(0, R, 150, 1),  # [100, 200) of 1
        lk(1, U, 0, EOF),
        lk(0, U, 0, 300),
        lk(1, W, 0, EOF),
    ],
    "a_lock_inside_another_of_other_type_splits_it": [
        lk(0, R, 0, 300),
        lk(0, W, 100, 100),  # r [0,100) w [100,200) r [200,300)
        lk(1, R, 0, 50),
        lk(1, R, 150, 1),
        lk(1, R, 250, 10),
        getlk(1, R, 90, 20),  # the write part
        getlk(1, W, 0, 10),  # the first read part
        getlk(1, W, 299, 10),  # the last read part
    ],
    "adjacent_locks_merge": [
        lk(0, W, 0, 10),
        lk(0, W, 10, 10),
        lk(0, W, 30, 10),
        getlk(1, W, 5, 10),  # one lock [0, 20)
        lk(0, W, 20, 10),  # fills the gap: [0, 40)
        getlk(1, R, 35, 1),
        lk(0, U, 5, 30),
        getlk(1, W, 0, 100),
        getlk(1, W, 10, 100),
    ],
    "locks_to_end_of_file": [
        lk(0, W, 100, EOF),
        lk(1, W, 1 << 40, 1),  # far beyond the file's size, still locked
        lk(1, W, 0, 100),
        getlk(1, R, 5000, 1),
        getlk(0, R, 0, EOF),
        lk(0, U, 1000, EOF),  # [100, 1000) remains
        lk(1, W, 1000, EOF),
        getlk(0, W, 2000, 1),
    ],
    "flock_and_posix_locks_are_independent": [
        (0, "flock", {"how": "ex", "nb": True}),
        lk(1, W, 0, EOF),  # a POSIX lock does not see the flock lock
        (1, "flock", {"how": "sh", "nb": True}),
        (0, "flock", {"how": "un"}),
        (1, "flock", {"how": "sh", "nb": True}),
        (0, "flock", {"how": "sh", "nb": True}),
        (0, "flock", {"how": "ex", "nb": True}),  # conversion refused (and the old lock gone)
        (1, "flock", {"how": "ex", "nb": True}),  # so 1 can convert
        (0, "flock", {"how": "sh", "nb": True}),
        getlk(0, W, 0, EOF),
    ],
}


def run_scenario(agents, paths: tuple[Path, Path], steps) -> list:
    owners = agents("0", "1")
    fds = [o.call("open", path=str(p)) for o, p in zip(owners, paths, strict=True)]
    label = {o.pid: f"owner{i}" for i, o in enumerate(owners)}
    outcomes = []
    try:
        for who, op, args in steps:
            got = owners[who].call(op, fd=fds[who], **args)
            if op == "getlk":
                got[3] = label.get(got[3], got[3])
            outcomes.append((who, op, args.get("type", args.get("how")), got))
    finally:
        for o in owners:
            o.stop()
    return outcomes


@pytest.mark.parametrize("layout", ["two_mounts", "one_mount"])
@pytest.mark.parametrize("name", SCENARIOS)
def test_lock_sequences_conflict_across_mounts_as_between_local_processes(
    agents, files, name, layout
):
    a, b, local = files
    expected = run_scenario(agents, (local, local), SCENARIOS[name])
    got = run_scenario(agents, (a, b) if layout == "two_mounts" else (a, a), SCENARIOS[name])
    for step, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert have == want, f"step {step} {SCENARIOS[name][step]}: riverfs {have}, Linux {want}"


def test_getlk_reports_the_holder_with_its_pid(agents, files):
    a, b, _ = files
    holder, prober = agents("holder", "prober")
    hf = holder.call("open", path=str(a))
    pf = prober.call("open", path=str(b))
    assert holder.call("setlk", fd=hf, type=W, start=10, len=20) is None
    assert holder.call("setlk", fd=hf, type=R, start=100, len=EOF) is None
    assert prober.call("getlk", fd=pf, type=R, start=0, len=15) == [W, 10, 20, holder.pid]
    assert prober.call("getlk", fd=pf, type=R, start=200, len=1) == [U, 200, 1, 0]
    assert prober.call("getlk", fd=pf, type=W, start=500, len=1) == [R, 100, 0, holder.pid]
    assert prober.call("setlk", fd=pf, type=W, start=25, len=1) == "EAGAIN"


# ---- flock -----------------------------------------------------------------------------------


def test_flock_excludes_across_mounts_and_a_blocking_flock_waits_for_the_release(agents, files):
    a, b, _ = files
    holder, other, waiter = agents("holder", "other", "waiter")
    hf = holder.call("open", path=str(a))
    of = other.call("open", path=str(b))
    wf = waiter.call("open", path=str(b))
    assert holder.call("flock", fd=hf, how="ex") is None
    assert other.call("flock", fd=of, how="ex", nb=True) == EWOULDBLOCK
    assert other.call("flock", fd=of, how="sh", nb=True) == EWOULDBLOCK

    waiter.send("flock", fd=wf, how="ex")
    waiter.wait_blocked_in(SYS_FLOCK)
    assert not waiter.answered(timeout=1.0)  # still waiting while the holder holds
    assert holder.call("flock", fd=hf, how="un") is None
    assert waiter.reply() is None  # granted after the release
    assert holder.call("flock", fd=hf, how="sh", nb=True) == EWOULDBLOCK

    # A flock lock belongs to the open file: closing it (RELEASE reaches the daemon
    # asynchronously) lets the others in.
    assert waiter.call("close", fd=wf) is None
    wait_until(lambda: holder.call("flock", fd=hf, how="sh", nb=True) is None, REPLY_WITHIN)
    assert other.call("flock", fd=of, how="sh", nb=True) is None
    assert waiter.call("open", path=str(a)) is not None


def test_shared_flocks_on_two_mounts_keep_out_an_exclusive_one(agents, files):
    a, b, _ = files
    r1, r2, w = agents("r1", "r2", "w")
    f1, f2 = r1.call("open", path=str(a)), r2.call("open", path=str(b))
    fw = w.call("open", path=str(a))
    assert r1.call("flock", fd=f1, how="sh", nb=True) is None
    assert r2.call("flock", fd=f2, how="sh", nb=True) is None
    assert w.call("flock", fd=fw, how="ex", nb=True) == EWOULDBLOCK
    w.send("flock", fd=fw, how="ex")
    w.wait_blocked_in(SYS_FLOCK)
    assert r1.call("flock", fd=f1, how="un") is None
    assert not w.answered(timeout=1.0)  # r2 on the other mount still reads
    assert r2.call("flock", fd=f2, how="un") is None
    assert w.reply() is None


@pytest.mark.skipif(shutil.which("flock") is None, reason="flock(1) of util-linux not installed")
def test_flock_command_sees_a_lock_held_through_the_other_mount(agents, files):
    a, b, _ = files
    (holder,) = agents("holder")
    hf = holder.call("open", path=str(a))

    def flock_n(path: Path) -> int:
        return subprocess.run(["flock", "-n", str(path), "true"], timeout=REPLY_WITHIN).returncode

    assert flock_n(b) == 0
    assert holder.call("flock", fd=hf, how="ex") is None
    assert flock_n(b) == 1
    assert flock_n(a) == 1  # another open file on the same mount: excluded too
    assert subprocess.run(["flock", "-n", "-s", str(b), "true"]).returncode == 1

    waiting = subprocess.Popen(["flock", str(b), "true"])
    try:
        wait_until(lambda: _syscall_of(waiting.pid) == SYS_FLOCK or waiting.poll() is not None)
        assert waiting.poll() is None, "flock(1) did not wait for the lock"
        assert holder.call("flock", fd=hf, how="un") is None
        assert waiting.wait(REPLY_WITHIN) == 0
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert flock_n(b) == 0


def _syscall_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/syscall") as f:
            first = f.read().split()[0]
    except (FileNotFoundError, IndexError):
        return None
    return int(first) if first.isdigit() else None


# ---- POSIX locks: waiting, interruption, close ----------------------------------------------


def test_setlkw_waits_until_the_range_is_unlocked_on_the_other_mount(agents, files):
    a, b, _ = files
    holder, waiter = agents("holder", "waiter")
    hf, wf = holder.call("open", path=str(a)), waiter.call("open", path=str(b))
    assert holder.call("setlk", fd=hf, type=W, start=0, len=100) is None
    waiter.send("setlkw", fd=wf, type=W, start=50, len=100)
    waiter.wait_blocked_in(SYS_FCNTL)
    assert holder.call("setlk", fd=hf, type=U, start=0, len=40) is None  # not enough
    assert not waiter.answered(timeout=1.0)
    assert holder.call("setlk", fd=hf, type=U, start=40, len=60) is None
    assert waiter.reply() is None
    assert holder.call("getlk", fd=hf, type=R, start=0, len=EOF) == [W, 50, 100, waiter.pid]


@pytest.mark.parametrize("where", ["local", "mounts"])
def test_setlkw_interrupted_by_a_signal_returns_eintr_and_takes_nothing(agents, files, where):
    a, b, local = files
    if where == "local":
        a = b = local
    holder, waiter, third = agents("holder", "waiter", "third")
    hf, wf = holder.call("open", path=str(a)), waiter.call("open", path=str(b))
    tf = third.call("open", path=str(b))
    assert holder.call("setlk", fd=hf, type=W, start=0, len=EOF) is None
    waiter.send("setlkw", fd=wf, type=W, start=0, len=10)
    waiter.wait_blocked_in(SYS_FCNTL)
    os.kill(waiter.pid, signal.SIGUSR1)
    # The handler raised inside the wait: the call came back with EINTR (not restarted).
    assert waiter.reply(timeout=5) == "interrupted"
    assert holder.call("setlk", fd=hf, type=U, start=0, len=EOF) is None
    # The interrupted request took no lock: another owner gets the range at once.
    assert third.call("getlk", fd=tf, type=W, start=0, len=EOF) == [U, 0, 0, 0]
    assert third.call("setlk", fd=tf, type=W, start=0, len=10) is None
    assert waiter.call("getlk", fd=wf, type=R, start=0, len=EOF) == [W, 0, 10, third.pid]


def _state(pid: int) -> str:
    """The scheduler state of `pid`: S (interruptible sleep), D (uninterruptible or killable)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_a_signal_that_comes_before_the_daemon_read_the_setlkw_still_interrupts_it(
    tmp_path_factory, request, agents
):
    # The daemon is stopped while the kernel marks the queued SETLKW interrupted; once the
    # daemon runs, it reads the SETLKW and its INTERRUPT in one burst, before the task that
    # serves the SETLKW has taken a step. That request must still be answered (EINTR).
    with two_mounts(tmp_path_factory, request, "sqlite", "lockintr") as (_, ma, mb):
        (ma.path / "f").write_bytes(b"x")
        wait_until((mb.path / "f").exists)
        holder, waiter = agents("holder", "waiter")
        hf = holder.call("open", path=str(ma.path / "f"))
        wf = waiter.call("open", path=str(mb.path / "f"))
        assert holder.call("setlk", fd=hf, type=W, start=0, len=EOF) is None
        daemon = mb.daemon_pid()
        os.kill(daemon, signal.SIGSTOP)
        try:
            waiter.send("setlkw", fd=wf, type=W, start=0, len=10)
            wait_until(lambda: waiter.syscall() == SYS_FCNTL and _state(waiter.pid) == "S")
            os.kill(waiter.pid, signal.SIGUSR1)
            # The kernel saw the signal: the request is marked interrupted and the waiter now
            # waits (killable only) for the daemon's answer.
            wait_until(lambda: _state(waiter.pid) == "D")
        finally:
            os.kill(daemon, signal.SIGCONT)
        if not waiter.answered(timeout=5):
            mb.kill9()  # never answered: the waiter would hang until the daemon dies
            pytest.fail("the SETLKW interrupted before the daemon read it got no answer")
        assert waiter.reply() == "interrupted"
        assert holder.call("setlk", fd=hf, type=U, start=0, len=EOF) is None
        assert holder.call("getlk", fd=hf, type=W, start=0, len=EOF) == [U, 0, 0, 0]
        assert waiter.call("setlk", fd=wf, type=W, start=0, len=10) is None  # mount B serves


@pytest.mark.parametrize("where", ["local", "mounts"])
def test_closing_any_fd_of_the_owner_drops_its_posix_locks(agents, files, where):
    a, b, local = files
    if where == "local":
        a = b = local
    holder, other = agents("holder", "other")
    locked = holder.call("open", path=str(a))
    second = holder.call("open", path=str(a))  # the same owner, another open file
    of = other.call("open", path=str(b))
    assert holder.call("lockf", fd=locked, type=W, start=0, len=EOF, nb=True) is None
    assert other.call("lockf", fd=of, type=W, start=0, len=10, nb=True) in ("EAGAIN", "EACCES")
    assert holder.call("close", fd=second) is None  # not the fd that took the lock
    assert other.call("lockf", fd=of, type=W, start=0, len=10, nb=True) is None
    assert holder.call("setlk", fd=locked, type=W, start=0, len=10) == "EAGAIN"


def test_a_lock_on_one_mount_and_a_close_on_the_other_leave_each_other_alone(agents, files):
    a, b, _ = files
    holder, other = agents("holder", "other")
    hf = holder.call("open", path=str(a))
    hb = holder.call("open", path=str(b))  # the same process, through the other mount
    of = other.call("open", path=str(b))
    assert holder.call("setlk", fd=hf, type=W, start=0, len=EOF) is None
    # Another mount's owner ids are its own: the holder's close there is no unlock here.
    assert holder.call("close", fd=hb) is None
    assert other.call("setlk", fd=of, type=W, start=0, len=1) == "EAGAIN"
    assert holder.call("close", fd=hf) is None
    assert other.call("setlk", fd=of, type=W, start=0, len=1) is None


# ---- a crashed mount --------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_kill_9_of_the_mount_holding_locks_frees_them_after_session_cleanup(
    tmp_path_factory, request, agents, engine
):
    with two_mounts(tmp_path_factory, request, engine, f"lockcrash_{engine}") as (_, ma, mb):
        name = "locked"
        (ma.path / name).write_bytes(b"data")
        a, b = ma.path / name, mb.path / name
        wait_until(b.exists)
        holder, other, waiter = agents("holder", "other", "waiter")
        hf = holder.call("open", path=str(a))
        of, wf = other.call("open", path=str(b)), waiter.call("open", path=str(b))
        assert holder.call("setlk", fd=hf, type=W, start=0, len=EOF) is None
        assert holder.call("flock", fd=hf, how="ex") is None
        assert other.call("setlk", fd=of, type=R, start=0, len=1) == "EAGAIN"
        assert other.call("flock", fd=of, how="sh", nb=True) == EWOULDBLOCK
        waiter.send("setlkw", fd=wf, type=W, start=10, len=10)
        waiter.wait_blocked_in(SYS_FCNTL)

        ma.kill9()
        start = time.monotonic()
        # The waiter is woken by its own poll once the leader removed the dead session.
        assert waiter.reply(timeout=CLEANUP_WITHIN) is None
        wait_until(
            lambda: other.call("flock", fd=of, how="sh", nb=True) is None,
            CLEANUP_WITHIN - (time.monotonic() - start),
            interval=0.2,
        )
        assert other.call("getlk", fd=of, type=W, start=0, len=EOF) == [W, 10, 10, waiter.pid]
        assert other.call("setlk", fd=of, type=R, start=0, len=10) is None
        holder.stop()  # its fd is on the dead connection
        waiter.stop()
        other.stop()
