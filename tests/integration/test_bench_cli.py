"""`riverfs bench PATH` (issue 12) on a real riverfs mount and on a local directory: every
phase present with the right counts and positive figures, cold reads, the work directory
gone afterwards (also after a full disk and Ctrl-C), and a one-line error for a bad PATH."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import CLI, Volume, is_mounted, run_cli, wait_until

from riverfs.tools.bench import PHASES, cached_fraction

MiB = 1 << 20
root_only = pytest.mark.skipif(os.getuid() != 0, reason="mounts a tmpfs (root only)")


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 1 and exactly one line on stderr, `riverfs: error: ...`, with every needle."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, (proc.returncode, proc.stderr)
    assert lines[0].startswith("riverfs: error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def bench_json(path: Path, *args: str) -> dict:
    proc = run_cli("bench", str(path), "--json", *args)
    assert proc.stderr == ""
    return json.loads(proc.stdout)


def leftovers(path: Path) -> list[str]:
    return [n for n in os.listdir(path) if n.startswith("riverfs-bench-")]


def creates(mnt: Path) -> float:
    for line in (mnt / ".riverfs" / "stats").read_text().splitlines():
        if line.startswith('riverfs_fuse_op_seconds_count{op="create"} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def check_phases(result: dict, *, threads: int, big: int, small: int, count: int) -> None:
    """The five phases in order, with the counts the arguments imply and positive figures."""
    phases = {p["name"]: p for p in result["phases"]}
    assert [p["name"] for p in result["phases"]] == list(PHASES)
    assert result["threads"] == threads and result["small_file_count"] == count
    for p in result["phases"]:
        assert p["seconds"] > 0 and p["throughput"] > 0, p
        assert 0 < p["p50_ms"] <= p["p99_ms"], p
        assert p["mean_ms"] > 0, p
    blocks = threads * -(-big // MiB)
    assert phases["big-file write"]["operations"] == blocks
    assert phases["big-file write"]["bytes"] == threads * big
    assert phases["big-file write"]["unit"] == "MiB/s"
    assert phases["big-file write"]["sync_ms"] > 0
    assert phases["big-file read"]["operations"] >= blocks  # a read may return less than asked
    assert phases["big-file read"]["bytes"] == threads * big
    for name in ("small-file write", "small-file read", "small-file stat"):
        assert phases[name]["operations"] == phases[name]["files"] == count, name
        assert phases[name]["unit"] == "files/s"
    assert phases["small-file read"]["bytes"] == count * small
    # fsynced and dropped before reading: nothing of the files was in the page cache
    assert phases["big-file read"]["cached_fraction"] == 0.0
    assert phases["small-file read"]["cached_fraction"] == 0.0


def test_bench_on_a_riverfs_mount(mnt):
    before = creates(mnt)
    result = bench_json(
        mnt, "--big-file-size", "3M", "--small-file-size", "20K", "--small-file-count", "7",
        "-p", "2",
    )  # fmt: skip
    assert result["filesystem"] == "fuse.riverfs"
    check_phases(result, threads=2, big=3 * MiB, small=20 << 10, count=7)
    # it ran on the mount: 2 big files and 7 small ones were created there, and are gone
    assert creates(mnt) - before == 2 + 7
    assert leftovers(mnt) == []


def test_bench_on_a_local_directory(tmp_path):
    result = bench_json(
        tmp_path, "--big-file-size", "2.5M", "--small-file-size", "4K",
        "--small-file-count", "5", "--threads", "1",
    )  # fmt: skip
    assert result["filesystem"] not in ("unknown", "fuse.riverfs")
    check_phases(result, threads=1, big=5 * MiB // 2, small=4 << 10, count=5)
    assert os.listdir(tmp_path) == []
    table = run_cli("bench", str(tmp_path), "--big-file-size", "1M", "--small-file-count", "3")
    for name in PHASES:
        assert name in table.stdout
    assert "MiB/s" in table.stdout and "files/s" in table.stdout
    assert table.stdout.count("cold: page cache dropped") == 2
    assert os.listdir(tmp_path) == []


def test_the_cache_measure_sees_warm_pages(tmp_path):
    """The 0.0 the benchmark reports is a measurement: a just-written file shows as cached."""
    f = tmp_path / "warm"
    f.write_bytes(os.urandom(MiB))
    assert cached_fraction([str(f)]) == 1.0


@pytest.mark.parametrize(
    ("name", "needles"),
    [("missing", ("does not exist", "mkdir -p")), ("a-file", ("not a directory",))],
)
def test_a_bad_path_is_one_line(tmp_path, name, needles):
    (tmp_path / "a-file").write_text("x")
    proc = run_cli("bench", str(tmp_path / name), check=False)
    assert_one_line_error(proc, *needles)
    assert sorted(os.listdir(tmp_path)) == ["a-file"]


@contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        assert not is_mounted(path)


@root_only
def test_a_read_only_path_is_one_line(tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=4M") as ro:
        proc = run_cli("bench", str(ro), "--big-file-size", "1M", check=False)
        assert_one_line_error(proc, "read-only", "writable")


def test_too_little_space_is_refused_before_writing(tmp_path):
    """A volume of 8 MiB (statfs says so) cannot take a 64 MiB file: refused up front."""
    root = tmp_path / "small"
    root.mkdir()
    vol = Volume(root, f"sqlite://{root}/meta.db", f"file://{root}/store", root / "cache")
    run_cli("format", vol.meta_url, "--storage", vol.storage_url, "--capacity", "8M")
    try:
        mnt = vol.mount().path
        proc = run_cli("bench", str(mnt), "--big-file-size", "64M", check=False)
        assert_one_line_error(proc, "free", "--big-file-size")
        assert leftovers(mnt) == []
    finally:
        vol.cleanup()


@root_only
def test_a_disk_filling_up_midway_leaves_nothing(tmp_path):
    """Inodes run out after a few small files (no up-front check can see that): one line,
    and the files already written are removed."""
    with tmpfs(tmp_path / "full", "size=16M,nr_inodes=12") as full:
        proc = run_cli(
            "bench", str(full), "--big-file-size", "1M", "--small-file-size", "1K",
            "--small-file-count", "50", check=False,
        )  # fmt: skip
        assert_one_line_error(proc, "filled up", "--small-file-count")
        assert os.listdir(full) == []


def test_ctrl_c_removes_the_work_directory(tmp_path):
    proc = subprocess.Popen(
        [*CLI, "bench", str(tmp_path), "--big-file-size", "4G"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Python raises KeyboardInterrupt for SIGINT only if it was not ignored at its start
        # (a background job of a shell starts with it ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        big = tmp_path / f"riverfs-bench-{proc.pid}" / "big.0"
        wait_until(lambda: big.exists() and big.stat().st_size > 0, timeout=30)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert (proc.returncode, err.strip()) == (1, "riverfs: aborted")  # as every command
    assert os.listdir(tmp_path) == []
