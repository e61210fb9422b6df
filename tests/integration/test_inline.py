"""Inline data (meta/inline.py): small files live in the metadata database, not the store.

Through real mounts: a small file costs no object and reads back; deleting, truncating or
overwriting it lets go of its row; a file growing past the limit goes to the store; copies
share inline slices; encrypted volumes keep inline blocks encrypted; a damaged row gives EIO
for that file only, and fsck names it; `--inline-limit 0` turns it off.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path

import pytest
from support import Volume, run_cli, wait_until


def _objects(store: Path) -> list[Path]:
    return [p for p in (store / "chunks").rglob("*") if p.is_file()] if store.exists() else []


def _rows(vol: Volume) -> list[tuple[int, int, bytes]]:
    with sqlite3.connect(vol.root / "meta.db") as db:
        return db.execute("SELECT slice, size, data FROM inline_blocks ORDER BY slice").fetchall()


def _drop_caches() -> None:
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def test_small_files_cost_no_object_and_read_back(volume, mnt):
    store = volume.root / "store"
    contents = {f"f{i}": os.urandom(i * 97 + 1) for i in range(40)}  # 1 .. 3,784 bytes
    for name, data in contents.items():
        (mnt / name).write_bytes(data)
    assert _objects(store) == []
    assert len(_rows(volume)) == len(contents)
    volume.mounts[0].umount()
    m = volume.mount()
    for name, data in contents.items():
        assert (m.path / name).read_bytes() == data
        assert os.stat(m.path / name).st_blocks * 512 >= len(data)


def test_delete_truncate_and_overwrite_let_go_of_rows(volume, mnt):
    (mnt / "a").write_bytes(b"a" * 1000)
    (mnt / "b").write_bytes(b"b" * 1000)
    (mnt / "c").write_bytes(b"c" * 1000)
    assert len(_rows(volume)) == 3
    os.unlink(mnt / "a")
    os.truncate(mnt / "b", 0)
    (mnt / "c").write_bytes(b"C" * 10)  # O_TRUNC then a new slice
    wait_until(lambda: len(_rows(volume)) == 1, timeout=10)
    assert (mnt / "c").read_bytes() == b"C" * 10
    assert (mnt / "b").read_bytes() == b""
    volume.mounts[0].umount()
    assert run_cli("fsck", volume.meta_url).returncode == 0


def test_a_file_past_the_limit_is_stored_as_objects(volume, mnt):
    big = os.urandom(4097)
    (mnt / "big").write_bytes(big)
    assert len(_objects(volume.root / "store")) == 1
    assert _rows(volume) == []
    with open(mnt / "grow", "wb") as f:  # small first, then grown by a later flush
        f.write(b"x" * 100)
        f.flush()
        os.fsync(f.fileno())
        f.write(os.urandom(8000))
    assert len(_rows(volume)) == 1  # the first 100 bytes stay inline, the rest is an object
    _drop_caches()
    assert (mnt / "big").read_bytes() == big
    assert (mnt / "grow").read_bytes()[:100] == b"x" * 100
    assert os.path.getsize(mnt / "grow") == 8100


def test_partial_overwrite_of_an_inline_slice_reads_merged(volume, mnt):
    path = mnt / "f"
    model = bytearray(os.urandom(3000))
    path.write_bytes(model)
    with open(path, "r+b") as f:
        f.seek(1000)
        f.write(b"Z" * 500)
        model[1000:1500] = b"Z" * 500
    _drop_caches()
    assert path.read_bytes() == bytes(model)
    assert len(_rows(volume)) == 2  # both slices inline until compaction merges them


def test_copy_file_range_shares_an_inline_slice(volume, mnt):
    data = os.urandom(2000)
    (mnt / "src").write_bytes(data)
    with open(mnt / "src", "rb") as src, open(mnt / "dst", "wb") as dst:
        assert os.copy_file_range(src.fileno(), dst.fileno(), 2000) == 2000
    assert len(_rows(volume)) == 1
    os.unlink(mnt / "src")
    _drop_caches()
    assert (mnt / "dst").read_bytes() == data
    assert len(_rows(volume)) == 1  # dst still names it
    os.unlink(mnt / "dst")
    wait_until(lambda: _rows(volume) == [], timeout=10)


def test_a_damaged_row_gives_eio_for_that_file_only_and_fsck_names_it(volume, mnt):
    (mnt / "good").write_bytes(b"g" * 3000)
    (mnt / "bad").write_bytes(b"b" * 3000)
    volume.mounts[0].umount()
    sid = max(r[0] for r in _rows(volume))
    with sqlite3.connect(volume.root / "meta.db") as db:
        (raw,) = db.execute("SELECT data FROM inline_blocks WHERE slice = ?", (sid,)).fetchone()
        raw = bytearray(raw)
        raw[-5] ^= 0x40
        db.execute("UPDATE inline_blocks SET data = ? WHERE slice = ?", (bytes(raw), sid))
    m = volume.mount()
    with pytest.raises(OSError) as e:
        (m.path / "bad").read_bytes()
    assert e.value.errno == 5  # EIO
    assert (m.path / "good").read_bytes() == b"g" * 3000
    m.umount()
    result = run_cli("fsck", volume.meta_url, "--check-data", check=False)
    assert result.returncode != 0
    assert "/bad" in result.stdout + result.stderr
    assert "/good" not in result.stdout + result.stderr


@pytest.fixture
def encrypted_volume(tmp_path: Path):
    root = tmp_path / "vol"
    root.mkdir()
    vol = Volume(root, f"sqlite://{root}/meta.db", f"file://{root}/store", root / "cache")
    env = {**os.environ, "RIVERFS_PASSPHRASE": "inline secret"}
    run_cli("format", vol.meta_url, "--storage", vol.storage_url, "--encrypt", env=env)
    os.environ["RIVERFS_PASSPHRASE"] = "inline secret"
    try:
        yield vol
    finally:
        del os.environ["RIVERFS_PASSPHRASE"]
        vol.cleanup()


def test_inline_blocks_of_an_encrypted_volume_are_encrypted(encrypted_volume):
    m = encrypted_volume.mount()
    secret = b"plaintext-marker " * 100
    (m.path / "s").write_bytes(secret)
    ((sid, size, raw),) = _rows(encrypted_volume)
    assert size == len(secret)
    assert b"plaintext-marker" not in raw
    m.umount()
    m = encrypted_volume.mount()
    assert (m.path / "s").read_bytes() == secret


def test_inline_limit_zero_stores_every_file_as_objects(tmp_path: Path):
    root = tmp_path / "vol"
    root.mkdir()
    vol = Volume(root, f"sqlite://{root}/meta.db", f"file://{root}/store", root / "cache")
    run_cli("format", vol.meta_url, "--storage", vol.storage_url, "--inline-limit", "0")
    try:
        m = vol.mount()
        (m.path / "f").write_bytes(b"x" * 10)
        assert _rows(vol) == []
        assert len(_objects(root / "store")) == 1
        status = run_cli("status", vol.meta_url).stdout
        assert "inline data: off" in status
    finally:
        vol.cleanup()


def test_inline_limit_out_of_range_is_refused(tmp_path: Path):
    r = run_cli(
        "format",
        f"sqlite://{tmp_path}/meta.db",
        "--storage",
        f"file://{tmp_path}/store",
        "--inline-limit",
        "1M",
        check=False,
    )
    assert r.returncode != 0
    assert "--inline-limit" in r.stderr and "0 to 64K" in r.stderr
    assert not (tmp_path / "meta.db").exists() or (tmp_path / "meta.db").stat().st_size == 0


def test_locks_and_appends_on_an_inline_file(volume, mnt):
    path = mnt / "log"
    with open(path, "ab") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        for i in range(20):
            f.write(b"line %d\n" % i)
            f.flush()
            os.fsync(f.fileno())
    expected = b"".join(b"line %d\n" % i for i in range(20))
    _drop_caches()
    assert path.read_bytes() == expected
