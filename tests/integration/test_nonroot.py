"""A mount by an unprivileged user: riverfs goes through fusermount3 (setuid root), which
mounts and hands the /dev/fuse fd back over a socket pair (_FUSE_COMMFD).

The test runs riverfs as that user with runuser(1): format, `mount --background`, file I/O,
`umount`. Everything lives in a directory the user owns, outside the test's tmp_path (which
the user cannot reach).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import force_unmount, is_mounted, wait_until

USER = "nobody"  # exists on every Debian system; created below if missing
CREATED_USER = "riverfs-nonroot"
FUSE_DEVICE = "/dev/fuse"
TIMEOUT = 120

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="runs riverfs as another user: root")


@dataclass
class AsUser:
    name: str
    uid: int
    gid: int
    base: Path  # a directory the user owns
    python: list[str]  # an interpreter the user can run, with riverfs importable
    env: list[str]  # KEY=VALUE for env(1)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["runuser", "-u", self.name, "--", "env", "-i", *self.env, *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            cwd=self.base,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"as {self.name}: {' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def riverfs(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(*self.python, "-m", "riverfs", *args, check=check)

    def python_code(self, code: str, *args: str) -> str:
        return self.run(*self.python, "-c", code, *args).stdout


def _user() -> Iterator[pwd.struct_passwd]:
    try:
        yield pwd.getpwnam(USER)
        return
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        pytest.skip(f"no user {USER!r} and no useradd to create an unprivileged user")
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", CREATED_USER],
        check=True,
        capture_output=True,
    )
    try:
        yield pwd.getpwnam(CREATED_USER)
    finally:
        subprocess.run(["userdel", CREATED_USER], capture_output=True)


def _interpreter(name: str, base: Path) -> tuple[list[str], list[str]]:
    """A Python the user can run riverfs with: the venv's own, else (when its interpreter is
    in a directory the user cannot enter, as under /root) the system Python of the same
    version with the venv's packages and riverfs's sources on PYTHONPATH."""
    env = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        f"HOME={base}",
        f"XDG_RUNTIME_DIR={base / 'run'}",
        "LANG=C.UTF-8",
    ]
    probe = "import riverfs, sys; print(sys.version_info[:2])"

    def works(python: str, extra: list[str]) -> bool:
        proc = subprocess.run(
            ["runuser", "-u", name, "--", "env", "-i", *env, *extra, python, "-c", probe],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            cwd=base,
        )
        return proc.returncode == 0 and proc.stdout.strip() == str(sys.version_info[:2])

    if works(sys.executable, []):
        return [sys.executable], env
    import riverfs

    src = str(Path(riverfs.__file__).resolve().parent.parent)
    site = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
    extra = [f"PYTHONPATH={src}:{site}"]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        if os.access(candidate, os.X_OK) and works(candidate, extra):
            return [candidate], env + extra
    pytest.skip(
        f"user {name} can run neither {sys.executable} nor a system {version} "
        "(the venv's interpreter lies in a directory it cannot enter)"
    )


def _fusermount_is_setuid_root() -> str | None:
    path = shutil.which("fusermount3")
    if path is None:
        return "fusermount3 not installed (apt-get install fuse3)"
    st = os.stat(path)
    if st.st_uid != 0 or not st.st_mode & stat.S_ISUID:
        return f"{path} is not setuid root: an unprivileged user cannot mount with it"
    return None


@pytest.fixture
def fuse_for_everyone() -> Iterator[None]:
    """/dev/fuse readable and writable by every user (0666, as fuse3 installs it) for the
    test's duration; restored afterwards."""
    if not os.path.exists(FUSE_DEVICE):
        pytest.skip(f"{FUSE_DEVICE} not found")
    reason = _fusermount_is_setuid_root()
    if reason:
        pytest.skip(reason)
    mode = stat.S_IMODE(os.stat(FUSE_DEVICE).st_mode)
    if mode & 0o666 == 0o666:
        yield
        return
    try:
        os.chmod(FUSE_DEVICE, mode | 0o666)
    except OSError as e:
        pytest.skip(f"{FUSE_DEVICE} is mode {mode:o} and cannot be opened up: {e.strerror}")
    try:
        yield
    finally:
        os.chmod(FUSE_DEVICE, mode)


@pytest.fixture
def user(fuse_for_everyone) -> Iterator[AsUser]:
    for pw in _user():
        base = Path(tempfile.mkdtemp(prefix="riverfs-nonroot-", dir="/tmp"))
        try:
            os.chown(base, pw.pw_uid, pw.pw_gid)
            python, env = _interpreter(pw.pw_name, base)
            yield AsUser(pw.pw_name, pw.pw_uid, pw.pw_gid, base, python, env)
        finally:
            mnt = base / "mnt"
            if is_mounted(mnt):
                force_unmount(mnt)
            shutil.rmtree(base, ignore_errors=True)


def _mount_options(path: Path) -> tuple[str, str] | None:
    """(fstype, super options) of the mount at `path`."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == target:
                rest = fields[fields.index("-") + 1 :]
                return rest[0], rest[2]
    return None


def _uid_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_an_unprivileged_user_mounts_through_fusermount3(user: AsUser):
    base = user.base
    meta = f"sqlite://{base}/meta.db"
    user.riverfs("format", meta, "--storage", f"file://{base}/store")
    mnt = base / "mnt"
    user.run("mkdir", str(mnt))

    out = user.riverfs("mount", meta, str(mnt), "--background", "--cache-dir", str(base / "cache"))
    found = re.search(r"daemon pid (\d+)", out.stdout + out.stderr)
    assert found, out.stdout + out.stderr
    daemon = int(found.group(1))
    try:
        assert is_mounted(mnt)
        fstype, options = _mount_options(mnt)
        assert fstype == "fuse.riverfs"
        assert f"user_id={user.uid}" in options.split(",")  # mounted for the user by fusermount3
        assert "allow_other" not in options.split(",")
        assert _uid_of(daemon) == user.uid  # the daemon is not root

        data = os.urandom(3 << 20)
        (base / "payload").write_bytes(data)
        os.chown(base / "payload", user.uid, user.gid)
        user.run("cp", str(base / "payload"), str(mnt / "file"))
        user.run("mkdir", str(mnt / "dir"))
        user.run("mv", str(mnt / "file"), str(mnt / "dir" / "file"))
        listing = user.python_code(
            "import os, sys, hashlib\n"
            "p = os.path.join(sys.argv[1], 'dir', 'file')\n"
            "st = os.stat(p)\n"
            "print(st.st_uid, st.st_size, hashlib.sha256(open(p, 'rb').read()).hexdigest())",
            str(mnt),
        )
        assert listing.split() == [str(user.uid), str(len(data)), hashlib.sha256(data).hexdigest()]
        # Without allow_other the kernel lets only the mounting user in, not even root.
        with pytest.raises(PermissionError):
            os.stat(mnt / "dir")

        user.riverfs("umount", str(mnt))
        assert not is_mounted(mnt)
        wait_until(lambda: not _alive(daemon), 30)

        # The data was written to the store: a second mount reads it back.
        user.riverfs("mount", meta, str(mnt), "--background", "--cache-dir", str(base / "cache"))
        again = user.python_code(
            "import sys, hashlib\n"
            "print(hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest())",
            str(mnt / "dir" / "file"),
        )
        assert again.strip() == hashlib.sha256(data).hexdigest()
        user.riverfs("umount", str(mnt))
        assert not is_mounted(mnt)
    finally:
        if is_mounted(mnt):
            user.riverfs("umount", str(mnt), check=False)
        left = subprocess.run(
            ["pgrep", "-u", str(user.uid), "-f", f"riverfs mount .*{mnt}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        for pid in left:  # daemons of this test only (their command line names its mount)
            os.kill(int(pid), signal.SIGKILL)
        force_unmount(mnt)
