"""Damage never turns into wrong data: corrupt or missing blocks, broken metadata, a full store.

Each case answers the affected operation with an errno, logs what is wrong, and keeps the
mount serving everything else.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from support import Volume, run_cli

BLOCK = 64 << 10


@pytest.fixture
def small_block_volume(tmp_path: Path):
    root = tmp_path / "vol"
    root.mkdir()
    vol = Volume(root, f"sqlite://{root}/meta.db", f"file://{root}/store", root / "cache")
    run_cli("format", vol.meta_url, "--storage", vol.storage_url, "--block-size", "64K")
    try:
        yield vol
    finally:
        vol.cleanup()


def _objects(store: Path) -> list[Path]:
    return sorted(p for p in (store / "chunks").rglob("*") if p.is_file())


def _mount_log(vol: Volume) -> str:
    return (vol.cache_dir / "mount.log").read_text()


def test_flipped_byte_in_a_block_gives_eio_and_other_files_still_read(small_block_volume):
    vol = small_block_volume
    m = vol.mount()
    victim = os.urandom(3 * BLOCK)
    (m.path / "victim").write_bytes(victim)
    victim_objects = _objects(vol.root / "store")
    bystander = os.urandom(2 * BLOCK)
    (m.path / "bystander").write_bytes(bystander)
    m.umount()

    target = victim_objects[1]
    raw = bytearray(target.read_bytes())
    raw[100] ^= 0xFF
    target.write_bytes(bytes(raw))

    m = vol.mount()
    with pytest.raises(OSError) as exc:
        (m.path / "victim").read_bytes()
    assert exc.value.errno == errno.EIO
    assert (m.path / "bystander").read_bytes() == bystander
    # The intact blocks of the damaged file still read.
    with open(m.path / "victim", "rb") as f:
        assert f.read(BLOCK) == victim[:BLOCK]
    assert "checksum mismatch" in _mount_log(vol)
    assert target.name in _mount_log(vol)


def test_truncated_or_missing_block_gives_eio(small_block_volume):
    vol = small_block_volume
    m = vol.mount()
    (m.path / "a").write_bytes(os.urandom(BLOCK))
    a_objects = _objects(vol.root / "store")
    (m.path / "b").write_bytes(os.urandom(BLOCK))
    b_objects = [p for p in _objects(vol.root / "store") if p not in a_objects]
    c = os.urandom(BLOCK)
    (m.path / "c").write_bytes(c)
    m.umount()

    a_objects[0].write_bytes(a_objects[0].read_bytes()[:1000])
    b_objects[0].unlink()

    m = vol.mount()
    for name in ("a", "b"):
        with pytest.raises(OSError) as exc:
            (m.path / name).read_bytes()
        assert exc.value.errno == errno.EIO, name
    assert (m.path / "c").read_bytes() == c
    log = _mount_log(vol)
    assert "object missing from the store" in log
    assert a_objects[0].name in log


def test_unexpected_error_in_a_handler_answers_eio_and_the_mount_keeps_running(volume):
    m = volume.mount()
    (m.path / "broken").write_bytes(b"x" * 1000)
    (m.path / "fine").write_bytes(b"fine")
    inode = os.stat(m.path / "broken").st_ino
    m.umount()
    # Garbage in the file's slice records: decoding them fails in an unforeseen way.
    with sqlite3.connect(volume.root / "meta.db") as db:
        db.execute("UPDATE chunks SET slices = ? WHERE inode = ?", (b"garbage", inode))

    m = volume.mount()
    with pytest.raises(OSError) as exc:
        (m.path / "broken").read_bytes()
    assert exc.value.errno == errno.EIO
    assert (m.path / "fine").read_bytes() == b"fine"
    (m.path / "new").write_bytes(b"still serving")
    assert (m.path / "new").read_bytes() == b"still serving"
    assert "failed unexpectedly" in _mount_log(volume)


@pytest.fixture
def tiny_store_volume(tmp_path: Path):
    """A volume whose store is a 4 MiB tmpfs, so it fills up."""
    root = tmp_path / "vol"
    store = root / "store"
    store.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(store)], check=True)
    vol = Volume(root, f"sqlite://{root}/meta.db", f"file://{store}", root / "cache")
    try:
        run_cli("format", vol.meta_url, "--storage", vol.storage_url, "--block-size", "64K")
        yield vol
    finally:
        vol.cleanup()
        subprocess.run(["umount", str(store)], check=False)


def test_full_store_gives_enospc_and_loses_nothing_already_written(tiny_store_volume):
    vol = tiny_store_volume
    m = vol.mount()
    kept = os.urandom(1 << 20)
    (m.path / "kept").write_bytes(kept)

    with pytest.raises(OSError) as exc, open(m.path / "too-big", "wb") as f:
        for _ in range(16):
            f.write(os.urandom(1 << 20))
    assert exc.value.errno == errno.ENOSPC

    assert (m.path / "kept").read_bytes() == kept
    os.unlink(m.path / "too-big")
    m.umount()
    m = vol.mount()
    assert (m.path / "kept").read_bytes() == kept
