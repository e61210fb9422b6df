"""Helpers shared by the tests: running the CLI, mounting volumes, waiting with a deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CLI = [sys.executable, "-m", "riverfs"]


def run_cli(*args: str, check: bool = True, env: dict | None = None, timeout: float = 120):
    """Run `riverfs ARGS...` and return the CompletedProcess (text mode)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"riverfs {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def wait_until(cond: Callable[[], object], timeout: float = 10.0, interval: float = 0.02):
    """Poll `cond` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {cond}")
        time.sleep(interval)


def is_mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def force_unmount(path: Path) -> None:
    if is_mounted(path):
        subprocess.run(["fusermount3", "-uz", str(path)], capture_output=True)


@dataclass
class Mount:
    path: Path
    volume: Volume
    args: tuple[str, ...]

    def umount(self) -> None:
        if is_mounted(self.path):
            run_cli("umount", str(self.path))
        assert not is_mounted(self.path)

    def daemon_pid(self) -> int:
        """The pid of the mount daemon serving this mountpoint."""
        out = subprocess.run(
            ["pgrep", "-f", f"riverfs mount .*{self.path}"], capture_output=True, text=True
        ).stdout.split()
        pids = [int(p) for p in out if int(p) != os.getpid()]
        assert pids, f"no daemon found for {self.path}"
        return pids[0]

    def kill9(self) -> None:
        """Kill the daemon like a crash would, then clear the dead mount."""
        pid = self.daemon_pid()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _alive(pid), timeout=10)
        force_unmount(self.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@dataclass
class Volume:
    root: Path
    meta_url: str
    storage_url: str
    cache_dir: Path
    mounts: list[Mount] = field(default_factory=list)

    def mount(self, mountpoint: Path | None = None, *extra: str) -> Mount:
        """Mount the volume in the background and return once it serves requests."""
        if mountpoint is None:
            mountpoint = self.root / f"mnt{len(self.mounts)}"
        mountpoint.mkdir(exist_ok=True)
        args = (
            self.meta_url,
            str(mountpoint),
            "--background",
            "--cache-dir",
            str(self.cache_dir),
            *extra,
        )
        run_cli("mount", *args)
        assert is_mounted(mountpoint)
        m = Mount(mountpoint, self, args)
        self.mounts.append(m)
        return m

    def cleanup(self) -> None:
        for m in self.mounts:
            try:
                if is_mounted(m.path):
                    run_cli("umount", str(m.path), check=False, timeout=60)
            finally:
                force_unmount(m.path)
