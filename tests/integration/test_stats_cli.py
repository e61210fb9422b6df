"""`riverfs stats`, `riverfs profile` and the metrics address in `riverfs status`, through real
mounts (issue 12)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import time
import urllib.request
from pathlib import Path

import pytest
from support import CLI, run_cli, wait_until

import riverfs


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The single `riverfs: error: ...` line of a failed command."""
    assert proc.returncode == 1, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("riverfs: error: "), proc.stderr
    return lines[0]


def fuse_row(text: str, op: str) -> list[str]:
    """The cells of `op`'s row in the FUSE section of `stats --once`."""
    section = text.split("\n\n")[1]
    assert section.startswith("FUSE operations"), text
    for line in section.splitlines()[1:]:
        cells = line.split()
        if cells[0] == op:
            return cells
    raise AssertionError(f"no {op} row in:\n{section}")


def row(text: str, title: str, name: str) -> list[str]:
    """The numbers of row `name` in the section titled `title` of `stats --once`."""
    for section in text.split("\n\n"):
        if section.startswith(title):
            for line in section.splitlines()[1:]:
                if line.strip().startswith(name):
                    return line.strip()[len(name) :].split()
    raise AssertionError(f"no {title}/{name} in:\n{text}")


def test_stats_once_shows_the_creates_and_bytes_of_known_work(mnt):
    for i in range(25):
        (mnt / f"f{i}").write_bytes(b"y" * (i * 100))
    out = run_cli("stats", str(mnt), "--once", "--interval", "0.2").stdout
    assert out.startswith(f"riverfs stats {mnt} (rates over 0.2")
    create = fuse_row(out, "create")
    # op, per s, mean ms (interval), mean ms (all), total, errors/s, errors
    assert create[4] == "25" and create[6] == "0", create
    assert create[1] == "0.0" and create[2] == "-"  # nothing created during the interval
    assert float(create[3]) > 0
    assert fuse_row(out, "write")[4] == "24"  # f0 writes nothing
    assert row(out, "data", "written bytes") == ["0", str(sum(i * 100 for i in range(25)))]
    assert int(row(out, "memory", "resident (RSS)")[0]) > 10 << 20
    for title in ("block cache", "object store", "uploads", "metadata transactions"):
        assert f"\n{title}" in out, title
    assert int(row(out, "metadata transactions", "write")[-1]) > 0


def test_stats_json_measures_rates_while_work_goes_on(mnt):
    (mnt / "busy").mkdir()
    proc = subprocess.Popen(
        [*CLI, "stats", str(mnt), "--json", "--interval", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    made = 0
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:  # creates all along its interval
        (mnt / "busy" / f"b{made}").write_bytes(b"z" * 1000)
        made += 1
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    got = json.loads(out)
    assert got["mountpoint"] == str(mnt)
    fig = got["figures"]
    assert 0.9 < fig["interval"] < 5
    create = fig["fuse"]["create"]
    assert 0 < create["count"] <= made and create["rate"] > 0 and create["mean"] > 0
    assert fig["written_bytes"]["rate"] > 0
    assert fig["written_bytes"]["total"] == got["samples"]["riverfs_fuse_written_bytes_total"]
    assert got["samples"]['riverfs_fuse_op_seconds_count{op="mkdir"}'] == 1
    assert fig["meta"]["write"]["rate"] > 0
    assert set(fig["gauges"]) >= {"uploads_waiting", "process_resident_bytes"}


def test_stats_of_a_path_inside_the_mount_finds_its_root(mnt):
    (mnt / "a" / "b").mkdir(parents=True)
    (mnt / "a" / "b" / "f").write_bytes(b"1")
    for inside in (mnt / "a" / "b", mnt / "a" / "b" / "f"):
        got = json.loads(run_cli("stats", str(inside), "--json", "--interval", "0.1").stdout)
        assert got["mountpoint"] == str(mnt)
        assert got["figures"]["fuse"]["mkdir"]["count"] == 2


def test_stats_outside_a_mount_is_one_line(tmp_path, mnt):
    error = one_line_error(run_cli("stats", str(tmp_path), "--once", check=False))
    assert "is not in a riverfs mount" in error and str(tmp_path) in error
    error = one_line_error(run_cli("stats", str(tmp_path / "nothing"), check=False))
    assert "no such file or directory" in error
    error = one_line_error(run_cli("profile", str(tmp_path), "--duration", "1", check=False))
    assert "is not in a riverfs mount" in error


def test_live_stats_view_refreshes_and_ends_cleanly_on_ctrl_c(mnt):
    (mnt / "seen").write_bytes(b"x")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 150, 0, 0))
    proc = subprocess.Popen(
        [*CLI, "stats", str(mnt), "--interval", "0.2"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        env={**os.environ, "COLUMNS": "150", "LINES": "60", "TERM": "xterm"},
    )
    os.close(slave)
    screen = bytearray()

    def shown(pattern: bytes) -> bool:
        while select.select([master], [], [], 0.05)[0]:
            try:
                screen.extend(os.read(master, 1 << 16))
            except OSError:  # the child closed the terminal
                break
        return re.search(pattern, bytes(screen)) is not None

    try:
        # refreshed: after the first frame (over 0.0 s), one with a real interval
        wait_until(lambda: shown(rb"rates over the last 0\.[1-9] s"), timeout=30)
        assert shown(rb"FUSE operations") and shown(rb"object store") and shown(rb"memory")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        shown(rb".")
        assert b"Traceback" not in screen and b"KeyboardInterrupt" not in screen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_profile_shows_an_op_its_path_and_the_pid_that_did_it(mnt):
    (mnt / "work").mkdir()
    proc = subprocess.Popen(
        [*CLI, "profile", str(mnt), "--duration", "1", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    hot = mnt / "work" / "hot file"
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:  # busy while it collects
        with open(hot, "wb") as f:
            f.write(b"h" * 512)
        os.unlink(hot)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    got = json.loads(out)
    assert got["mountpoint"] == str(mnt) and 1 <= got["seconds"] < 5
    assert got["events"] > 0 and got["dropped"] == 0
    ops = {o["op"]: o for o in got["ops"]}
    assert ops["create"]["count"] > 0 and ops["create"]["errors"] == 0
    assert ops["write"]["bytes"] == 512 * ops["write"]["count"]
    assert ops["unlink"]["count"] > 0
    paths = {p["path"]: p for p in got["paths"]}
    assert "/work/hot file" in paths, paths
    assert paths["/work/hot file"]["count"] >= ops["create"]["count"]
    procs = {p["pid"]: p for p in got["processes"]}
    with open("/proc/self/comm") as f:
        assert procs[os.getpid()]["name"] == f.read().strip()
    assert procs[os.getpid()]["count"] >= ops["create"]["count"] * 3  # create, write, unlink


def test_profile_duration_prints_a_plain_summary(mnt):
    proc = subprocess.Popen(
        [*CLI, "profile", str(mnt), "--duration", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    i = 0
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        os.mkdir(mnt / f"dir{i}")
        i += 1
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert re.match(rf"riverfs profile {re.escape(str(mnt))}: \d+ operations in 1\.\d s\n", out)
    assert re.search(r"\n  mkdir +\d+ ", out), out
    assert re.search(rf"\n  {os.getpid()} +\S+ +\d+ ", out), out
    assert re.search(r"\n  /dir\d+ +2 ", out), out  # its lookup (ENOENT), its mkdir


def _python_for(user: str) -> list[str]:
    """An interpreter `user` can run riverfs with (the venv's, unless it lies under a
    directory the user cannot enter: then the system Python with our paths)."""
    probe = ["runuser", "-u", user, "--", sys.executable, "-c", "import riverfs"]
    if subprocess.run(probe, capture_output=True, timeout=60).returncode == 0:
        return [sys.executable]
    src = str(Path(riverfs.__file__).resolve().parent.parent)
    site = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        cmd = ["env", f"PYTHONPATH={src}:{site}", candidate]
        probe = ["runuser", "-u", user, "--", *cmd, "-c", "import riverfs"]
        if (
            os.access(candidate, os.X_OK)
            and subprocess.run(probe, capture_output=True, timeout=60).returncode == 0
        ):
            return cmd
    pytest.skip(f"{user} can run no Python with riverfs importable")


@pytest.mark.skipif(os.getuid() != 0, reason="runs riverfs profile as nobody: root")
def test_profile_as_a_user_is_the_one_line_root_only_error(volume):
    where = Path(tempfile.mkdtemp(prefix="riverfs-profile-", dir="/tmp"))
    os.chmod(where, 0o755)  # a mountpoint nobody can reach (pytest's tmp dirs are root-only)
    try:
        m = volume.mount(where / "mnt")
        os.chmod(m.path, 0o755)
        got = subprocess.run(
            ["runuser", "-u", "nobody", "--", *_python_for("nobody"), "-m", "riverfs"]
            + ["profile", str(m.path), "--duration", "1"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
        error = one_line_error(got)
        assert "root only" in error and ".riverfs/accesslog" in error, error
        # stats is for everyone
        got = subprocess.run(
            ["runuser", "-u", "nobody", "--", *_python_for("nobody"), "-m", "riverfs"]
            + ["stats", str(m.path), "--once", "--interval", "0.1"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
        assert got.returncode == 0 and "FUSE operations" in got.stdout, got.stderr
        m.umount()
    finally:
        for p in (where / "mnt", where):
            try:
                p.rmdir()
            except OSError:
                pass


def test_status_lists_the_metrics_address_of_a_mount(volume):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    served = volume.mount(None, "--metrics", f"127.0.0.1:{port}")
    plain = volume.mount(None)
    out = run_cli("status", volume.meta_url).stdout
    [line] = [x for x in out.splitlines() if f" at {served.path} " in x]
    assert f"metrics at 127.0.0.1:{port})" in line, out
    [line] = [x for x in out.splitlines() if f" at {plain.path} " in x]
    assert "metrics at" not in line, out
    # the address answers
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert b"riverfs_fuse_op_seconds" in r.read()
