"""`riverfs info` through real mounts: a fragmented file's chunks, slices, objects and where its
blocks are; directory counters (meta dir_usage) that match a walk after every kind of change,
on both engines, across a remount, checked and repaired by fsck; the `riverfs.info` virtual
xattr's rules (never stored, never listed, not settable)."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest
from support import Volume, run_cli

ENGINES = ("sqlite", "postgresql")
BLOCK = 64 << 10  # small blocks: a few MiB make enough objects to page the reply


def _volume(tmp_path: Path, request, engine: str) -> Volume:
    root = tmp_path / "vol"
    root.mkdir()
    meta_url = f"sqlite://{root}/meta.db"
    if engine == "postgresql":
        meta_url = request.getfixturevalue("postgres").create_database(
            f"info_{request.node.name}".replace("[", "_").replace("]", "").replace("-", "_")
        )
    vol = Volume(root, meta_url, f"file://{root}/store", root / "cache")
    run_cli("format", vol.meta_url, "--storage", vol.storage_url, "--block-size", "64K")
    return vol


@pytest.fixture(params=["sqlite"])
def vol(tmp_path, request):
    v = _volume(tmp_path, request, request.param)
    try:
        yield v
    finally:
        v.cleanup()


@pytest.fixture(params=ENGINES)
def any_vol(tmp_path, request):
    v = _volume(tmp_path, request, request.param)
    try:
        yield v
    finally:
        v.cleanup()


def info(path: Path, *args: str) -> dict:
    return json.loads(run_cli("info", "--json", *args, str(path)).stdout)


def walk_dir(d: Path) -> tuple[int, int]:
    """(entries, bytes) directly in `d`, as the counters count them."""
    entries = size = 0
    for e in os.scandir(d):
        st = e.stat(follow_symlinks=False)
        entries += 1
        if not stat.S_ISDIR(st.st_mode):
            size += st.st_size
    return entries, size


def check_counters(root: Path) -> dict:
    """Every directory's counters equal what a walk finds in it; the root's tree totals equal
    the walk's. Returns the root's info."""
    dirs = [root] + [Path(p) / n for p, ds, _ in os.walk(root) for n in ds]
    for d in dirs:
        got = info(d)
        assert (got["entries"], got["bytes"]) == walk_dir(d), d
    top = info(root, "--recursive")
    walked = top["walk"]
    assert top["tree"] == walked
    assert walked["directories"] == len(dirs)
    return top


def test_info_of_a_fragmented_file(vol):
    m = vol.mount(None, "--compact-slices", "0", "--cache-size", "256M")
    f = m.path / "f"
    with open(f, "wb") as fh:
        fh.write(os.urandom(1 << 20))
        fh.flush()
        os.fsync(fh.fileno())
        for i in range(3):  # three overlapping overwrites, each its own slice
            fh.seek(10_000 + i * 50_000)
            fh.write(b"x" * 100_000)
            fh.flush()
            os.fsync(fh.fileno())
    got = info(f)
    assert got["type"] == "file" and got["size"] == 1 << 20
    assert got["chunks"] == 1
    assert got["slices"] == 4 and got["distinct_slices"] == 4
    assert got["slices"] > got["chunks"] and got["max_slices_per_chunk"] == 4
    assert got["slice_bytes"] == (1 << 20) + 300_000  # stored, of which 1 MiB is shown
    assert got["visible_bytes"] == 1 << 20
    # 16 blocks of the first slice, 2 of each overwrite (100,000 bytes in 64 KiB blocks)
    assert got["objects"] == 16 + 3 * 2 == len(got["blocks"])
    store = vol.root / "store"
    for b in got["blocks"]:
        assert (store / b["key"]).is_file(), b["key"]  # the keys are the store's objects
        assert "disk" in b["in"] and b["in"][-1] == "store"  # written through the cache
    assert sum(b["size"] for b in got["blocks"]) == got["object_bytes"]
    fd = os.open(f, os.O_RDONLY)
    try:  # past the kernel's page cache: the mount reads the visible blocks into memory
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert len(os.read(fd, 2 << 20)) == 1 << 20
    finally:
        os.close(fd)
    read = info(f)
    assert any("memory" in b["in"] for b in read["blocks"])
    text = run_cli("info", str(f)).stdout
    assert "4 (4.0 per chunk" in text and got["blocks"][0]["key"] in text


def test_a_long_file_is_described_in_pages(vol):
    """A reply is at most 64 KiB (the kernel's xattr limit): blocks come in pages the CLI
    gathers; all of them, in order, once each."""
    m = vol.mount(None, "--compact-slices", "0")
    f = m.path / "big"
    f.write_bytes(b"\1" * (48 << 20))  # 768 blocks of 64 KiB: more than one page
    first = json.loads(os.getxattr(f, "riverfs.info"))
    assert first["next_block"] is not None and len(first["blocks"]) < 768
    second = json.loads(os.getxattr(f, f"riverfs.info:{first['next_block']}"))
    assert second["blocks"][0]["block"] == first["blocks"][-1]["block"] + 1
    got = info(f)
    assert got["objects"] == 768
    keys = [b["key"] for b in got["blocks"]]
    assert len(keys) == len(set(keys)) == 768
    assert [b["block"] for b in got["blocks"]] == sorted(b["block"] for b in got["blocks"])


def test_directory_counters_follow_every_change(any_vol):
    m = any_vol.mount(None, "--compact-slices", "0")
    root = m.path
    a, b = root / "a", root / "b"
    (a / "deep" / "er").mkdir(parents=True)
    b.mkdir()
    for i in range(20):
        (a / f"f{i}").write_bytes(b"z" * (i * 100))
    (a / "deep" / "er" / "g").write_bytes(b"g" * 5000)
    check_counters(root)
    for i in range(0, 20, 3):
        os.unlink(a / f"f{i}")
    os.rename(a / "f1", b / "moved")  # a file across directories
    os.rename(a / "deep", b / "deep")  # a directory (with its tree) across directories
    (b / "t").write_bytes(b"t" * 1000)
    os.rename(b / "t", b / "moved")  # replacing an entry
    os.truncate(a / "f2", 70_000)  # growing by truncate
    os.truncate(a / "f4", 10)  # shrinking
    with open(a / "f5", "ab") as fh:  # growing by writing
        fh.write(b"w" * 123_456)
    os.link(a / "f7", b / "hard")  # one file, two names, two directories
    with open(b / "hard", "ab") as fh:  # grows in both directories
        fh.write(b"h" * 999)
    os.symlink("some/target", b / "sym")  # its target's length is its size
    os.mkdir(b / "gone")
    os.rmdir(b / "gone")
    top = check_counters(root)
    assert info(a)["bytes"] == walk_dir(a)[1] and info(b)["entries"] == 4  # moved deep hard sym
    assert top["tree"]["entries"] == sum(1 for _ in root.rglob("*"))

    def creates(t: int) -> None:  # concurrent creates in one directory (PostgreSQL: slots)
        for i in range(40):
            (b / f"c{t}_{i}").write_bytes(b"c" * t)

    threads = [threading.Thread(target=creates, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    before = check_counters(root)
    assert info(b)["entries"] == 4 + 160

    m.umount()
    after = info(any_vol.mount(None).path, "--recursive")  # the counters are metadata
    assert after["tree"] == before["tree"] == after["walk"]


def test_fsck_finds_and_repairs_a_corrupted_counter(vol):
    m = vol.mount(None)
    d = m.path / "d"
    d.mkdir()
    for i in range(5):
        (d / f"f{i}").write_bytes(b"q" * 1000)
    inode = os.stat(d).st_ino
    m.umount()
    assert "clean" in run_cli("fsck", vol.meta_url).stdout
    with sqlite3.connect(vol.root / "meta.db") as db:
        db.execute("UPDATE dir_usage SET entries = entries + 3 WHERE inode = ?", (inode,))
    found = run_cli("fsck", vol.meta_url, check=False)
    assert found.returncode == 1
    assert "directory /d" in found.stdout and "counts 8 entries and 5000 bytes" in found.stdout
    assert "add up to 5 and 5000" in found.stdout
    fixed = run_cli("fsck", "--repair", vol.meta_url)
    assert "rebuilt the directory counters" in fixed.stdout
    assert "clean" in run_cli("fsck", vol.meta_url).stdout
    got = info(vol.mount(None).path / "d")
    assert (got["entries"], got["bytes"]) == (5, 5000)


def test_the_virtual_xattr_is_not_stored_listed_or_settable(vol):
    m = vol.mount(None)
    f = m.path / "f"
    f.write_bytes(b"abc")
    os.setxattr(f, "user.kept", b"1")
    assert json.loads(os.getxattr(f, "riverfs.info"))["size"] == 3
    assert os.listxattr(f) == ["user.kept"]
    for call in (
        lambda: os.setxattr(f, "riverfs.info", b"x"),
        lambda: os.setxattr(f, "riverfs.other", b"x"),
        lambda: os.removexattr(f, "riverfs.info"),
    ):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EPERM
    with pytest.raises(OSError) as e:
        os.getxattr(f, "riverfs.nothing")
    assert e.value.errno == errno.ENODATA
    with pytest.raises(OSError) as e:
        os.getxattr(f, "riverfs.info:x")
    assert e.value.errno == errno.EINVAL
    m.umount()
    with sqlite3.connect(vol.root / "meta.db") as db:  # nothing reached the xattr table
        assert db.execute("SELECT name FROM xattrs").fetchall() == [(b"user.kept",)]


def test_a_path_outside_a_mount_is_one_line_and_exit_1(tmp_path):
    r = run_cli("info", str(tmp_path), check=False)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        f"riverfs: error: {tmp_path} is not in a riverfs mount"
    ]
    r = run_cli("info", str(tmp_path / "nothing"), check=False)
    assert r.returncode == 1 and "no such file or directory" in r.stderr
