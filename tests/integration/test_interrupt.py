"""Interrupts: a read stuck on a stalled object store gives way to a signal.

The store is the moto S3 server behind the fault proxy, which holds every block download for
STALL seconds. A child process reads a file whose blocks are in no cache (written, then read
through a new mount with --cache-size 0), so its read waits on the store. SIGINT to the
child must bring it back promptly, long before the stall ends, and the mount keeps serving.

Two cases differ in the kernel:
- a signal that kills (SIGINT with its default action, as for `cat`): every wait of a read
  on FUSE is at least killable, so the reader dies at once whatever the daemon does;
- a signal the reader handles (Python's SIGINT handler raises KeyboardInterrupt): the read
  must come back with EINTR. The kernel sends FUSE_INTERRUPT only for a request the reader
  itself waits on; the daemon cancels it and answers EINTR.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from objects_support import S3_ENV
from support import Mount, Volume, run_cli, wait_until

pytest_plugins = ["objects_fixtures"]  # the moto server and the fault proxy

STALL = 25.0  # seconds the proxy holds each block download (below the store's read timeout)
PROMPTLY = 5.0  # seconds within which the interrupted reader must be back
FOREVER = 1_000_000  # requests

READER = r"""
import json, os, signal, sys
path, offset, mode, on_sigint = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
if on_sigint == "default":
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # SIGINT kills, as it kills cat(1)
fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if mode == "direct" else 0))
print(json.dumps({"opened": True}), flush=True)
sys.stdin.readline()  # go
try:
    n = len(os.pread(fd, 1 << 20, offset))
    print(json.dumps({"read": n}), flush=True)
except KeyboardInterrupt:  # the handler ran: pread(2) came back with EINTR
    print(json.dumps({"interrupted": "KeyboardInterrupt"}), flush=True)
except OSError as e:
    print(json.dumps({"errno": e.errno}), flush=True)
"""


@pytest.fixture
def stalled(tmp_path: Path, fault_proxy, moto_server, monkeypatch):
    """A volume on the fault proxy with two files, mounted again with no cache:
    (mount, proxy, contents). Every mount is gone at teardown, also a hung one."""
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    root = tmp_path / "vol"
    root.mkdir()
    bucket = moto_server.new_bucket()
    vol = Volume(root, f"sqlite://{root}/meta.db", fault_proxy.url(bucket, "v"), root / "cache")
    run_cli("format", vol.meta_url, "--storage", vol.storage_url)
    contents = {"stuck": os.urandom(8 << 20), "other": os.urandom(3 << 20)}
    try:
        m = vol.mount(None)
        for name, data in contents.items():
            (m.path / name).write_bytes(data)
        m.umount()
        yield vol.mount(None, "--cache-size", "0"), fault_proxy, contents
    finally:
        fault_proxy.clear()
        vol.cleanup()


class Reader:
    """A child process that preads 1 MiB at `offset` of `path` when told to go."""

    def __init__(self, path: Path, offset: int, mode: str, on_sigint: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", READER, str(path), str(offset), mode, on_sigint],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert json.loads(self.line()) == {"opened": True}

    def line(self, timeout: float = 30.0) -> str | None:
        """The reader's next line; None if it says nothing within `timeout` seconds."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline() if ready else None

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def syscall(self) -> int | None:
        try:
            with open(f"/proc/{self.proc.pid}/syscall") as f:
                first = f.read().split()[0]
        except (FileNotFoundError, IndexError):
            return None
        return int(first) if first.isdigit() else None

    def stop(self, mount: Mount) -> None:
        """Kill the reader; if even SIGKILL cannot end its read, end the daemon (the kernel
        then aborts the connection and the read fails)."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(PROMPTLY)
        except subprocess.TimeoutExpired:
            mount.kill9()
            self.proc.wait(30)


SYS_PREAD64 = 17  # x86_64, as /proc/PID/syscall shows it


def start_stuck_read(mount: Mount, proxy, mode: str, on_sigint: str) -> Reader:
    proxy.add(f"delay:{STALL}", FOREVER, method="GET", path="/chunks/")
    reader = Reader(mount.path / "stuck", 4 << 20, mode, on_sigint)
    try:
        reader.go()
        wait_until(lambda: proxy.count("GET", f"delay:{STALL}") >= 1, 10)  # the store stalls
        wait_until(lambda: reader.syscall() == SYS_PREAD64, 10)  # and the reader waits on it
        assert reader.proc.poll() is None and reader.line(timeout=0) is None
    except BaseException:
        reader.stop(mount)
        raise
    return reader


def assert_the_mount_keeps_serving(mount: Mount, proxy, contents: dict[str, bytes]) -> None:
    """Metadata and writes at once while the store still stalls; reads once it answers."""
    mnt = mount.path
    start = time.monotonic()
    assert sorted(os.listdir(mnt)) == ["other", "stuck"]
    assert (mnt / "stuck").stat().st_size == len(contents["stuck"])
    (mnt / "new").write_bytes(b"fresh")  # uploads: only downloads stall
    os.rename(mnt / "new", mnt / "newer")
    assert time.monotonic() - start < PROMPTLY
    proxy.clear()
    assert (mnt / "newer").read_bytes() == b"fresh"
    os.unlink(mnt / "newer")
    assert (mnt / "other").read_bytes() == contents["other"]
    assert (mnt / "stuck").read_bytes() == contents["stuck"]


def test_a_reader_killed_by_sigint_while_the_store_stalls_dies_at_once(stalled):
    mount, proxy, contents = stalled
    reader = start_stuck_read(mount, proxy, "buffered", "default")
    try:
        sent = time.monotonic()
        os.kill(reader.proc.pid, signal.SIGINT)
        assert reader.proc.wait(PROMPTLY + 5) == -signal.SIGINT
        assert time.monotonic() - sent < PROMPTLY
    finally:
        reader.stop(mount)
    assert_the_mount_keeps_serving(mount, proxy, contents)


ASYNC_READ_REASON = (
    "riverfs negotiates FUSE_ASYNC_READ: a buffered read reaches the daemon as readahead, a "
    "background request the reader does not wait on (it waits, killable only, on the page "
    "lock), so the kernel never sends FUSE_INTERRUPT and the read returns only when the "
    "store answers. Without ASYNC_READ the same read gets EINTR in milliseconds."
)


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("buffered", marks=pytest.mark.xfail(strict=True, reason=ASYNC_READ_REASON)),
        "direct",
    ],
)
def test_a_read_stuck_on_a_stalled_store_is_interrupted_by_sigint(stalled, mode):
    mount, proxy, contents = stalled
    reader = start_stuck_read(mount, proxy, mode, "handled")
    try:
        sent = time.monotonic()
        os.kill(reader.proc.pid, signal.SIGINT)
        line = reader.line(timeout=PROMPTLY)
        took = time.monotonic() - sent
        assert line is not None, f"the reader was not back within {PROMPTLY}s of SIGINT"
        assert json.loads(line) == {"interrupted": "KeyboardInterrupt"}, line
        assert took < PROMPTLY
        assert reader.proc.wait(10) == 0
    finally:
        reader.stop(mount)
    assert_the_mount_keeps_serving(mount, proxy, contents)
