"""Mount options and mountpoint handling through the real CLI (issue 14): symlinked
mountpoints, umount of a dead mount, non-empty mountpoints, -o options, atime modes, fsname,
format and fsck refusals."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from support import force_unmount, is_mounted, run_cli, wait_until


@pytest.fixture
def vol(tmp_path):
    """A formatted SQLite volume; every mountpoint a test registers is unmounted after it."""
    url = f"sqlite://{tmp_path}/meta.db"
    run_cli("format", url, "--storage", f"file://{tmp_path}/objects")
    mounted: list[Path] = []
    yield url, mounted
    for m in mounted:
        if is_mounted(m):
            run_cli("umount", str(m), check=False, timeout=60)
        force_unmount(m)


def mount(url: str, mounted: list[Path], path: Path, *opts: str, check: bool = True):
    mounted.append(path)
    cache = str(path) + ".c"
    return run_cli(
        "mount", url, str(path), "--background", "--cache-dir", cache, *opts, check=check
    )


def exited(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def mountinfo(path: Path) -> list[list[str]]:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return [line.split() for line in f if line.split()[4] == target]


def test_symlinked_mountpoint_is_the_same_mountpoint(vol, tmp_path):
    url, mounted = vol
    (tmp_path / "m").mkdir()
    (tmp_path / "link").symlink_to("m")
    mount(url, mounted, tmp_path / "m")
    for alias in ("link", "link/", "m/."):
        proc = run_cli("mount", url, f"{tmp_path}/{alias}", "--background", check=False)
        assert proc.returncode == 1 and "already mounted" in proc.stderr, proc.stderr
    assert len(mountinfo(tmp_path / "m")) == 1
    proc = run_cli("umount", str(tmp_path / "link"), timeout=30)
    assert "unmounted" in proc.stdout
    assert not is_mounted(tmp_path / "m")


def test_umount_detaches_a_mount_whose_daemon_was_killed(vol, tmp_path):
    url, mounted = vol
    (tmp_path / "m").mkdir()
    out = mount(url, mounted, tmp_path / "m").stdout
    pid = int(out.split("daemon pid ")[1].split(",")[0])
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: exited(pid))
    t = time.monotonic()
    proc = run_cli("umount", str(tmp_path / "m"), timeout=60)
    assert time.monotonic() - t < 30
    assert "died" in proc.stdout, proc.stdout
    assert not is_mounted(tmp_path / "m")


def test_non_empty_mountpoint_warns_and_mounts(vol, tmp_path):
    url, mounted = vol
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "old").write_text("x")
    proc = mount(url, mounted, tmp_path / "m")
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "hidden until unmount" in warnings[0], proc.stderr
    assert is_mounted(tmp_path / "m")
    assert not (tmp_path / "m" / "old").exists()


def test_unknown_mount_option_is_named(vol, tmp_path):
    url, mounted = vol
    (tmp_path / "m").mkdir()
    proc = mount(url, mounted, tmp_path / "m", "-o", "noatime,frobnicate", check=False)
    assert proc.returncode == 1 and "frobnicate" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not is_mounted(tmp_path / "m")


def test_o_ro_and_fsname(vol, tmp_path):
    url, mounted = vol
    (tmp_path / "m").mkdir()
    mount(url, mounted, tmp_path / "m", "-o", "ro,fsname=myvol,nodev,nosuid")
    (info,) = mountinfo(tmp_path / "m")
    assert info[info.index("-") + 2] == "myvol"
    assert "ro" in info[5].split(",")
    with pytest.raises(OSError):
        (tmp_path / "m" / "f").write_text("x")


def _atime_after_read(url, mounted, path: Path, opts: str) -> tuple[int, int]:
    path.mkdir()
    mount(url, mounted, path, "-o", opts, "--attr-timeout", "0")
    f = path / "f"
    f.write_bytes(b"data")
    old = 1_000_000_000 * 10**9
    os.utime(f, ns=(old + 5 * 10**9, old + 10**9))  # atime newer than mtime: relatime keeps it
    f.read_bytes()
    first = os.stat(f).st_atime_ns
    return old + 5 * 10**9, first


def test_atime_modes(vol, tmp_path):
    url, mounted = vol
    set_to, got = _atime_after_read(url, mounted, tmp_path / "no", "noatime")
    assert got == set_to
    set_to, got = _atime_after_read(url, mounted, tmp_path / "strict", "strictatime")
    assert got > set_to
    set_to, got = _atime_after_read(url, mounted, tmp_path / "rel", "relatime")
    assert got > set_to  # a day old: relatime updates it too


def test_mount_t_fuse_riverfs(vol, tmp_path):
    url, mounted = vol
    """mount.fuse3 (what mount -t fuse.riverfs and fstab run) starts `riverfs SOURCE MOUNTPOINT
    -o OPTS`. mount(8) itself runs helpers with a standard PATH, where .venv/bin is not, so the
    helper is run here as mount(8) would run it."""
    if not os.path.exists("/usr/sbin/mount.fuse3") or os.getuid() != 0:
        pytest.skip("needs mount.fuse3 and root")
    (tmp_path / "m").mkdir()
    mounted.append(tmp_path / "m")
    import subprocess
    import sys

    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(
        [
            "/usr/sbin/mount.fuse3",
            url,
            str(tmp_path / "m"),
            "-t",
            "fuse.riverfs",
            "-o",
            "noatime,fsname=fst",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    (info,) = mountinfo(tmp_path / "m")
    assert info[info.index("-") + 1] == "fuse.riverfs"
    assert info[info.index("-") + 2] == "fst"


def test_format_refuses_a_missing_parent_and_leaves_nothing(tmp_path):
    proc = run_cli("format", f"sqlite://{tmp_path}/missing/x.db", check=False)
    assert proc.returncode == 1 and "does not exist" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "missing").exists()
    proc = run_cli(
        "format",
        f"sqlite://{tmp_path}/x.db",
        "--storage",
        "s3://b/p?endpoint=http://127.0.0.1:9",
        check=False,
    )
    assert proc.returncode == 1
    assert not (tmp_path / "x.db").exists()


def test_fsck_checks_a_given_key(tmp_path):
    url = f"sqlite://{tmp_path}/meta.db"
    (tmp_path / "key").write_text("right passphrase\n")
    (tmp_path / "bad").write_text("wrong passphrase\n")
    run_cli("format", url, "--encrypt", "--key-file", str(tmp_path / "key"))
    assert run_cli("fsck", url, "--key-file", str(tmp_path / "key")).returncode == 0
    proc = run_cli("fsck", url, "--key-file", str(tmp_path / "bad"), check=False)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_status_shows_the_store_footprint(vol, tmp_path):
    url, mounted = vol
    (tmp_path / "m").mkdir()
    mount(url, mounted, tmp_path / "m")
    with open(tmp_path / "m" / "f", "wb") as f:
        for _ in range(20):  # overwrites in place: the store holds more than the file shows
            f.seek(0)
            f.write(os.urandom(256 << 10))
            f.flush()
            os.fsync(f.fileno())
    run_cli("umount", str(tmp_path / "m"))  # nothing changes the store while we count
    out = run_cli("status", url).stdout
    line = next(x for x in out.splitlines() if x.startswith("in store:"))
    objects = sum(1 for p in (tmp_path / "objects").rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in (tmp_path / "objects").rglob("*") if p.is_file())
    assert f"{objects:,} objects" in line, (line, objects)
    assert size > 256 << 10


def test_nodev_nosuid_by_default_dev_suid_for_root(vol, tmp_path):
    url, mounted = vol
    if os.getuid() != 0:
        pytest.skip("--dev/--suid need root")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    mount(url, mounted, tmp_path / "a")
    mount(url, mounted, tmp_path / "b", "--dev", "-o", "suid")
    (a,) = mountinfo(tmp_path / "a")
    (b,) = mountinfo(tmp_path / "b")
    assert {"nodev", "nosuid"} <= set(a[5].split(","))
    assert not {"nodev", "nosuid"} & set(b[5].split(","))
    os.mknod(tmp_path / "b" / "null", 0o666 | 0o020000, os.makedev(1, 3))
    with open(tmp_path / "b" / "null", "rb") as f:  # a usable device node: /dev/null's
        assert f.read() == b""
