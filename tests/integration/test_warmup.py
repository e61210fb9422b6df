"""`riverfs warmup` through real mounts (issue 12): a tree warmed into the disk cache reads back
byte-exact with the store cut off (the fault proxy refuses every request) and without one
block request reaching it; `--evict` drops it again (reads then go to the store, and fail
while it is cut off); progress bar, summary, failures by path, memory-only mounts, paths
outside a mount."""

from __future__ import annotations

import errno
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from objects_support import S3_ENV
from support import CLI, Volume, run_cli, wait_until

pytest_plugins = ["objects_fixtures"]  # the moto server and the fault proxy

FOREVER = 1_000_000  # requests: the store refuses them until the rule is cleared
MiB = 1 << 20
# name -> size: 3 blocks, 2 blocks, 1 block, inline (in the metadata), empty
TREE = {"a/f1": 3 * MiB, "a/b/f2": MiB + 5000, "c/f3": 200_000, "small": 100, "empty": 0}
STORED = 3 * MiB + MiB + 5000 + 200_000  # the bytes of the tree that live in blocks
BLOCKS = 6


@pytest.fixture
def s3_volume(tmp_path: Path, fault_proxy, moto_server, monkeypatch):
    """A volume on the S3 server, reached through the fault proxy, 1 MiB blocks."""
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    root = tmp_path / "vol"
    root.mkdir()
    bucket = moto_server.new_bucket()
    vol = Volume(root, f"sqlite://{root}/meta.db", fault_proxy.url(bucket, "v"), root / "cache")
    run_cli("format", vol.meta_url, "--storage", vol.storage_url, "--block-size", "1M")
    try:
        yield vol, fault_proxy
    finally:
        fault_proxy.clear()  # or the cleanup's unmount would wait for a store that refuses
        vol.cleanup()


def write_tree(top: Path) -> dict[str, bytes]:
    """TREE under `top`, plus a hard link (warmed once) and a symlink (not followed)."""
    data = {}
    for name, size in TREE.items():
        path = top / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data[name] = os.urandom(size)
        path.write_bytes(data[name])
    os.link(top / "c/f3", top / "c/f3-link")
    os.symlink("a/f1", top / "to-f1")
    return data


def cached_blocks(vol: Volume) -> set[str]:
    return {p.name for p in vol.cache_dir.glob("*/blocks/*") if not p.name.endswith(".tmp")}


def block_gets(proxy) -> int:
    """GET requests for blocks that reached the proxy (refused ones included)."""
    with proxy.lock:
        return sum(
            1 for method, target, _ in proxy.seen if method == "GET" and "/chunks/" in target
        )


def read_uncached(path: Path) -> bytes:
    """The file's bytes, read past the kernel's page cache (its pages are dropped first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        chunks = []
        while chunk := os.read(fd, MiB):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def disk_reads(mnt: Path) -> float:
    for line in (mnt / ".riverfs" / "stats").read_text().splitlines():
        if line.startswith('riverfs_block_reads_total{source="disk"} '):
            return float(line.split()[-1])
    return 0.0


def fresh_mount(vol: Volume, m):
    """Unmount, empty the disk cache, mount again: nothing of the volume is local."""
    m.umount()
    for p in vol.cache_dir.glob("*/blocks/*"):
        p.unlink()
    return vol.mount(None, "--cache-size", "256M")


def test_warmed_tree_reads_with_the_store_cut_off_and_evict_drops_it(s3_volume):
    vol, proxy = s3_volume
    m = vol.mount(None, "--cache-size", "256M")
    data = write_tree(m.path / "tree")
    m = fresh_mount(vol, m)
    assert not cached_blocks(vol)

    out = run_cli("warmup", str(m.path / "tree"), "--threads", "3").stdout
    assert "warmed up 5 files" in out, out
    assert f"{4.2:.1f} MiB fetched from the store, 100 B already local" in out, out
    assert "into the disk cache (capacity 256.0 MiB)" in out, out
    assert len(cached_blocks(vol)) == BLOCKS
    again = run_cli("warmup", str(m.path / "tree")).stdout  # nothing left to fetch
    assert "0 B fetched from the store, 4.2 MiB already local" in again, again

    proxy.add("503", FOREVER)  # the store is unreachable from here on
    gets, disk = block_gets(proxy), disk_reads(m.path)
    # Plain reads: a fresh mount's kernel has no page of these files (warming adds none),
    # and the pages they leave must go with --evict below.
    for name, want in data.items():
        assert (m.path / "tree" / name).read_bytes() == want, name
    assert (m.path / "tree/c/f3-link").read_bytes() == data["c/f3"]
    assert block_gets(proxy) == gets, "a warmed file's read asked the store"
    assert disk_reads(m.path) >= disk + BLOCKS, "the blocks came from the disk cache"

    out = run_cli("warmup", "--evict", str(m.path / "tree")).stdout
    assert "evicted 5 files" in out and "4.2 MiB dropped from the mount's caches" in out, out
    assert not cached_blocks(vol)
    # Inline data lives in the metadata: still readable. Block data now needs the store,
    # even for a plain read of a file whose pages the kernel had (evict dropped them too).
    assert (m.path / "tree/small").read_bytes() == data["small"]
    reader = subprocess.Popen(
        [sys.executable, "-c", f"open({str(m.path / 'tree/a/f1')!r}, 'rb').read()"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: block_gets(proxy) > gets, 30)  # the read went to the store
        try:
            reader.wait(5)
        except subprocess.TimeoutExpired:
            pass  # still waiting for the store: as good a proof as EIO
        else:
            assert reader.returncode != 0 and "Input/output error" in reader.stderr.read()
    finally:
        reader.kill()
        reader.wait(30)
    proxy.clear()  # the store is back: the evicted file is read from it
    assert read_uncached(m.path / "tree/a/f1") == data["a/f1"]


def test_progress_summary_and_failures_by_path(s3_volume):
    vol, proxy = s3_volume
    m = vol.mount(None, "--cache-size", "256M")
    data = write_tree(m.path / "tree")
    m = fresh_mount(vol, m)
    r = run_cli("warmup", str(m.path / "tree"), str(m.path / "missing"), check=False)
    assert r.returncode == 1, r
    assert r.stderr == f"riverfs: error: {m.path / 'missing'}: no such file or directory\n"
    assert not r.stdout, "nothing done: a missing PATH is refused before the walk"

    # A terminal on stderr: the progress bar is drawn there.
    text, out = _pty_run([*CLI, "warmup", str(m.path / "tree")])
    assert "warming up" in text and "5/5 files" in text, text
    assert "4.2/4.2 MiB" in text, text  # bytes done of the bytes found
    assert re.search(r"\d+(\.\d+)? [kMG]?B/s", text), text  # the rate
    assert "warmed up 5 files (4.2 MiB)" in out, out

    # One file evicted, the store cut off: it fails (by path, exit 1), the others are cached.
    run_cli("warmup", "--evict", str(m.path / "tree/a/b/f2"))
    proxy.add("503", FOREVER)
    r = run_cli("warmup", str(m.path / "tree"), check=False)
    assert r.returncode == 1, r
    assert "warmed up 4 files" in r.stdout, r.stdout
    assert r.stderr.strip().splitlines() == [
        "failed: 1 path",
        f"  {m.path / 'tree/a/b/f2'}: Input/output error",
    ], r.stderr
    proxy.clear()
    assert read_uncached(m.path / "tree/a/b/f2") == data["a/b/f2"]


def _pty_run(argv: list[str]) -> tuple[str, str]:
    """Run `argv` with a terminal on stderr; (what it drew there without escapes, stdout)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=slave, text=True)
        os.close(slave)
        slave = -1
        drawn = b""
        while True:
            try:
                piece = os.read(master, 65536)
            except OSError as e:  # EIO: every writer of the other end is gone
                if e.errno != errno.EIO:
                    raise
                break
            if not piece:
                break
            drawn += piece
        out = proc.stdout.read()
        proc.wait(120)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn.decode(errors="replace")), out


def test_a_tree_larger_than_the_cache_is_warned_about(s3_volume):
    vol, _ = s3_volume
    m = vol.mount(None, "--cache-size", "2M")
    write_tree(m.path / "tree")
    m.umount()
    m = vol.mount(None, "--cache-size", "2M")
    out = run_cli("warmup", str(m.path / "tree")).stdout
    assert "into the disk cache (capacity 2.0 MiB)" in out, out
    assert (
        "warning: 4.2 MiB is more than the disk cache (capacity 2.0 MiB) holds: "
        "the blocks warmed first were pushed out again"
    ) in out, out
    held = sum(p.stat().st_size for p in vol.cache_dir.glob("*/blocks/*"))
    assert 0 < held <= 2 * MiB


def test_memory_only_mount_warms_into_its_memory_cache(volume):
    m = volume.mount()  # a file:// store: no disk cache; 4 MiB blocks
    (m.path / "f").write_bytes(os.urandom(5 * MiB))
    (m.path / "g").write_bytes(os.urandom(8 * MiB))
    with open(m.path / "g", "r+b") as g:  # hides the first block of g's first slice
        g.write(os.urandom(4 * MiB))
    m.umount()
    m = volume.mount()
    out = run_cli("warmup", str(m.path / "f")).stdout
    assert "5.0 MiB fetched from the store" in out, out
    assert "into the memory cache (capacity 64.0 MiB)" in out, out
    out = run_cli("warmup", str(m.path)).stdout
    # g: the 4 MiB overwrite and the visible second block, not the hidden first one
    assert "8.0 MiB fetched from the store, 5.0 MiB already local" in out, out
    out = run_cli("warmup", "--evict", str(m.path)).stdout
    assert "evicted 2 files (13.0 MiB)" in out and "13.0 MiB dropped" in out, out
    out = run_cli("warmup", str(m.path)).stdout
    assert "13.0 MiB fetched from the store, 0 B already local" in out, out


def test_path_outside_a_mount_is_one_line_and_exit_1(tmp_path, mnt):
    r = run_cli("warmup", str(mnt), str(tmp_path), check=False)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"riverfs: error: {tmp_path} is not in a riverfs mount (it is on {_mount_of(tmp_path)})"
    ], r.stderr
    assert not r.stdout


def _mount_of(path: Path) -> str:
    out = subprocess.run(
        ["findmnt", "-n", "-o", "TARGET,FSTYPE", "-T", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return f"{out[0]}, {out[1]}"
