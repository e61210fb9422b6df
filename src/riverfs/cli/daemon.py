"""Running the mount daemon in the background, and stopping it.

`mount --background` starts the same command in the foreground as a new session, with a pipe
on which the child reports "ok" once the kernel serves the mount, or the one-line error that
stopped it. `umount` asks the kernel to unmount, then waits for the daemon (found through its
pid file) to finish flushing and exit.

Secrets (the metadata URL, which may carry a database password, and the passphrase of an
encrypted volume) never reach the daemon through its argv or its environment: both stay
readable in /proc/PID/cmdline and /proc/PID/environ for the daemon's whole life, whatever it
does to os.environ later. The parent writes them as one JSON document to a second pipe, whose
read end the daemon inherits as `--secrets-fd N` and reads to the end before anything else; the
daemon's environment is the parent's without the variables that carry secrets.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

from riverfs.cli.defaults import pid_file
from riverfs.cli.passphrase import ENV, NEW_ENV
from riverfs.errors import RiverError
from riverfs.fuse.mount import mount_path
from riverfs.meta import POSTGRES_SCHEMES
from riverfs.vfs.session import pid_alive

READY = "ok"
# The daemon's argv names its metadata URL by this placeholder; the URL is in its secrets.
META_URL_FROM_SECRETS = "@secrets"
META_PASSWORD_ENV = "RIVERFS_META_PASSWORD"
# Left out of the daemon's environment: what it needs of them comes through its secrets.
SECRET_ENV = frozenset({ENV, NEW_ENV, META_PASSWORD_ENV, "PGPASSWORD"})


def spawn_background(
    argv: list[str], log_path: Path, secrets: dict[str, str], timeout: float = 120.0
) -> int:
    """Start `riverfs mount ARGV` detached, handing it `secrets` over a pipe (see the module
    docstring); return its pid once the mount is ready."""
    read_fd, write_fd = os.pipe()
    secrets_read, secrets_write = os.pipe()
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # 0600: with --trace the log names paths, which only root may see (.riverfs/accesslog)
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)  # a log an older riverfs created 0644
        with open(fd, "ab") as log_file:
            child = subprocess.Popen(
                [
                    *(sys.executable, "-m", "riverfs", "mount", *argv),
                    *("--ready-fd", str(write_fd), "--secrets-fd", str(secrets_read)),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                pass_fds=(write_fd, secrets_read),
                start_new_session=True,
                env=env,
            )
    except BaseException:
        os.close(read_fd)
        os.close(secrets_write)
        raise
    finally:
        os.close(write_fd)
        os.close(secrets_read)
    _send_secrets(secrets_write, secrets)
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


def _send_secrets(fd: int, secrets: dict[str, str]) -> None:
    data = memoryview(json.dumps(secrets).encode())
    try:
        while data:
            data = data[os.write(fd, data) :]
    except BrokenPipeError:
        pass  # the daemon died before reading them: its ready pipe says why
    finally:
        os.close(fd)


def read_secrets(fd: int | None) -> dict[str, str]:
    """The secrets the parent wrote to `fd` (none without one); `fd` is closed."""
    if fd is None:
        return {}
    with os.fdopen(fd, "rb") as pipe:
        data = pipe.read()
    try:
        secrets = json.loads(data)
    except ValueError:
        secrets = None
    if not isinstance(secrets, dict):
        raise RiverError(
            "the mount daemon got no readable secrets from the command that started it"
        )
    return secrets


def with_meta_password(url: str) -> str:
    """`url` with the database password that a foreground mount would take from the
    environment (RIVERFS_META_PASSWORD, then PGPASSWORD) added, for the daemon, whose
    environment has neither. A URL with a password of its own, or not PostgreSQL, comes back
    as it is; ~/.pgpass still works in the daemon."""
    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES:
        return url
    if parts.password is not None or any(k == "password" for k, _ in parse_qsl(parts.query)):
        return url
    password = os.environ.get(META_PASSWORD_ENV) or os.environ.get("PGPASSWORD")
    if not password:
        return url
    # A libpq URI takes any connection parameter in its query, percent-decoded (not "+").
    base = url.rstrip("?&")
    return f"{base}{'&' if '?' in base else '?'}password={quote(password, safe='')}"


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
    _note_file(mountpoint).unlink(missing_ok=True)  # a note of an earlier daemon is stale
    return path


def _note_file(mountpoint: Path) -> Path:
    return pid_file(mountpoint).with_suffix(".note")


def leave_note(mountpoint: Path, note: str) -> None:
    """What an exiting daemon wants the user of `riverfs umount` to read (one line)."""
    _note_file(mountpoint).write_text(note + "\n")


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


UNMOUNT_TIMEOUT = 10.0  # seconds fusermount3 -u may take before a lazy detach replaces it


def unmount(mountpoint: Path, timeout: float) -> str:
    """Unmount a riverfs mount and wait until its daemon has exited; return what was done
    (one line). `mountpoint` is resolved (mount_path) by the caller. A mount whose daemon
    is dead, or an unmount that does not finish within UNMOUNT_TIMEOUT, is detached lazily
    (`fusermount3 -u -z`): umount never hangs on a dead or stuck mount."""
    fstype = mount_type(mountpoint)
    if fstype is None:
        raise RiverError(f"{mountpoint} is not mounted")
    if fstype != "fuse.riverfs":
        raise RiverError(f"{mountpoint} is a {fstype} mount, not riverfs; use umount(8)")
    pid = read_pid(mountpoint)
    dead = pid is not None and not pid_alive(pid)
    done = f"unmounted {mountpoint}"
    try:
        proc = subprocess.run(
            ["fusermount3", "-u", "--", str(mountpoint)],
            capture_output=True,
            text=True,
            timeout=UNMOUNT_TIMEOUT,
        )
        failed = proc.returncode != 0
        detail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
    except subprocess.TimeoutExpired:
        failed, detail = True, f"no answer within {UNMOUNT_TIMEOUT:.0f}s"
    if failed and "busy" in detail and not dead:
        raise RiverError(
            f"{mountpoint} is busy: close the files open in it (lsof "
            f"{mountpoint}) and leave it (cd /), then retry"
        )
    if failed:
        lazy = subprocess.run(
            ["fusermount3", "-u", "-z", "--", str(mountpoint)],
            capture_output=True,
            text=True,
            timeout=UNMOUNT_TIMEOUT,
        )
        if lazy.returncode != 0:
            raise RiverError(f"cannot unmount {mountpoint}: {detail}")
        done = f"detached {mountpoint} lazily ({detail}): it goes once nothing uses it"
    if dead:
        pid_file(mountpoint).unlink(missing_ok=True)
        done += f"; its daemon (pid {pid}) had died: data it had not written back is lost"
    elif pid is not None:
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                raise RiverError(
                    f"unmounted, but the daemon (pid {pid}) is still flushing after "
                    f"{timeout:.0f}s; it keeps going, check its log"
                )
            time.sleep(0.02)
        note = _note_file(mountpoint)
        if note.exists():
            done += "; " + note.read_text().strip()
            note.unlink(missing_ok=True)
    if mount_type(mountpoint) is not None:
        done += "; another mount remains beneath it: run riverfs umount again"
    return done
