"""Running the mount daemon in the background, and stopping it.

`mount --background` starts the same command in the foreground as a new session, with a pipe
on which the child reports "ok" once the kernel serves the mount, or the one-line error that
stopped it. `umount` asks the kernel to unmount, then waits for the daemon (found through its
pid file) to finish flushing and exit.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from riverfs.cli.defaults import pid_file
from riverfs.errors import RiverError
from riverfs.fuse.mount import mount_path
from riverfs.vfs.session import pid_alive

READY = "ok"
# The metadata URL may carry a password: the daemon gets it through its environment, so that
# it never shows in `ps`; its argv says META_URL_FROM_ENV instead.
META_URL_ENV = "RIVERFS_MOUNT_META_URL"
META_URL_FROM_ENV = "@env"


def spawn_background(
    argv: list[str], log_path: Path, env: dict[str, str] | None = None, timeout: float = 120.0
) -> int:
    """Start `riverfs mount ARGV` detached (with `env` added to its environment); return its
    pid once the mount is ready."""
    read_fd, write_fd = os.pipe()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        child = subprocess.Popen(
            [sys.executable, "-m", "riverfs", "mount", *argv, "--ready-fd", str(write_fd)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            pass_fds=(write_fd,),
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    os.close(write_fd)
    deadline = time.monotonic() + timeout
    with os.fdopen(read_fd) as pipe:
        ready, _, _ = select.select([pipe], [], [], timeout)
        if not ready:
            child.kill()
            raise RiverError(
                f"the mount did not become ready within {timeout:.0f}s; see {log_path}"
            )
        message = pipe.readline().strip()  # EOF (empty) if the child died first
    if message == READY:
        return child.pid
    if not message:
        try:
            child.wait(max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            child.kill()
        message = f"the mount daemon exited without mounting; see {log_path}"
    raise RiverError(message.removeprefix("error: "))


def report_ready(fd: int | None) -> None:
    if fd is not None:
        with os.fdopen(fd, "w") as f:
            f.write(READY + "\n")


def report_error(fd: int | None, message: str) -> None:
    if fd is not None:
        try:
            with os.fdopen(fd, "w") as f:
                f.write(f"error: {message}\n")
        except OSError:
            pass


def write_pid(mountpoint: Path) -> Path:
    path = pid_file(mountpoint)
    path.write_text(f"{os.getpid()}\n")
    return path


def read_pid(mountpoint: Path) -> int | None:
    try:
        return int(pid_file(mountpoint).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def mount_type(mountpoint: Path) -> str | None:
    """The filesystem type mounted at `mountpoint`, or None."""
    target = mount_path(mountpoint)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == target:
                return fields[fields.index("-") + 1]
    return None


def unmount(mountpoint: Path, timeout: float) -> None:
    """Unmount a riverfs mount and wait until its daemon has exited."""
    fstype = mount_type(mountpoint)
    if fstype is None:
        raise RiverError(f"{mountpoint} is not mounted")
    if fstype != "fuse.riverfs":
        raise RiverError(f"{mountpoint} is a {fstype} mount, not riverfs; use umount(8)")
    pid = read_pid(mountpoint)
    proc = subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True, text=True)
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        if "busy" in detail:
            raise RiverError(
                f"{mountpoint} is busy: close the files open in it (lsof "
                f"{mountpoint}) and leave it (cd /), then retry"
            )
        raise RiverError(f"cannot unmount {mountpoint}: {detail}")
    if pid is None:
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise RiverError(
                f"unmounted, but the daemon (pid {pid}) is still flushing after "
                f"{timeout:.0f}s; it keeps going, check its log"
            )
        time.sleep(0.02)
