"""`riverfs gc` and `riverfs fsck` on real volumes, with damage injected in the store."""

from __future__ import annotations

import os
import random
import sqlite3
import time
from pathlib import Path

from support import Volume, run_cli

HOUR_AGO = time.time() - 7200


def store_objects(vol: Volume) -> set[Path]:
    return {p for p in (vol.root / "store" / "chunks").rglob("*") if p.is_file()}


def write(vol: Volume, files: dict[str, bytes]) -> dict[str, set[Path]]:
    """Write files through a mount (then unmount); map each to the objects it made."""
    m = vol.mount()
    made = {}
    for name, data in files.items():
        before = store_objects(vol)
        path = m.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        made[name] = store_objects(vol) - before
    m.umount()
    return made


def test_gc_reports_exactly_an_injected_leak_and_deletes_it_only_when_asked(volume):
    made = write(volume, {"a": os.urandom(300_000), "b": os.urandom(10)})
    (a_obj,) = made["a"]
    leak = a_obj.parent / "987654_0_5"  # a block no file references, uploaded long ago
    leak.write_bytes(b"12345")
    young = a_obj.parent / "987655_0_5"  # just uploaded: maybe a write in flight
    young.write_bytes(b"12345")
    for p in (leak, a_obj, *made["b"]):
        os.utime(p, (HOUR_AGO, HOUR_AGO))
    out = run_cli("gc", volume.meta_url).stdout
    assert "unreferenced:         1 (5 B)" in out and "987654_0_5" in out
    assert "too young to judge:   1" in out and "nothing deleted" in out
    assert leak.exists()
    out = run_cli("gc", volume.meta_url, "--delete").stdout
    assert "deleted: 1 unreferenced" in out
    assert not leak.exists() and young.exists() and a_obj.exists()
    m = volume.mount()
    assert len((m.path / "a").read_bytes()) == 300_000


def test_fsck_names_exactly_the_file_whose_object_was_deleted(volume):
    made = write(volume, {"d/keep": b"k" * 1000, "d/lost": b"l" * 5000, "other": b"o"})
    assert run_cli("fsck", volume.meta_url).stdout.strip().endswith("clean")
    (victim,) = made["d/lost"]
    victim.unlink()
    proc = run_cli("fsck", volume.meta_url, check=False)
    assert proc.returncode == 1
    damaged = [line for line in proc.stdout.splitlines() if line.startswith("DAMAGED")]
    assert len(damaged) == 1 and damaged[0].startswith("DAMAGED /d/lost: ")
    assert "missing from the store" in damaged[0]


def test_fsck_check_data_finds_a_corrupt_block_and_repair_fixes_link_counts(volume):
    made = write(volume, {"f": b"f" * 70_000, "g": b"g" * 10})
    (obj,) = made["f"]
    data = bytearray(obj.read_bytes())
    data[-10] ^= 1
    obj.write_bytes(bytes(data))  # same size: only --check-data sees it
    assert run_cli("fsck", volume.meta_url).returncode == 0
    proc = run_cli("fsck", volume.meta_url, "--check-data", check=False)
    assert proc.returncode == 1 and "DAMAGED /f: " in proc.stdout and "checksum" in proc.stdout
    obj.write_bytes(bytes(data[:-10]) + bytes([data[-10] ^ 1]) + bytes(data[-9:]))
    with sqlite3.connect(volume.root / "meta.db") as db:  # break the metadata
        db.execute(
            "UPDATE nodes SET nlink = 7 WHERE inode = (SELECT inode FROM edges"
            " WHERE name = CAST('g' AS BLOB))"
        )
        db.execute("DELETE FROM edges WHERE name = CAST('f' AS BLOB)")
    proc = run_cli("fsck", volume.meta_url, check=False)
    assert proc.returncode == 1
    assert "has nlink 7, entries say 1" in proc.stdout and "no entry reaches it" in proc.stdout
    out = run_cli("fsck", volume.meta_url, "--repair").stdout
    assert "moved orphan inode" in out and "set nlink" in out
    assert run_cli("fsck", volume.meta_url, "--check-data").stdout.strip().endswith("clean")
    m = volume.mount()
    (orphan,) = os.listdir(m.path / "lost+found")
    assert (m.path / "lost+found" / orphan).read_bytes() == b"f" * 70_000
    assert os.stat(m.path / "g").st_nlink == 1


def test_deleting_and_repairing_tools_refuse_while_the_volume_is_mounted(volume):
    m = volume.mount()
    (m.path / "f").write_bytes(b"x")
    for args in (("gc", volume.meta_url, "--delete"), ("fsck", volume.meta_url, "--repair")):
        proc = run_cli(*args, check=False)
        assert proc.returncode == 1 and "the volume is mounted" in proc.stderr, proc
        assert str(m.path) in proc.stderr
    assert "unreferenced:         0" in run_cli("gc", volume.meta_url).stdout  # reports work
    assert "mount(s) live" in run_cli("fsck", volume.meta_url).stdout


def test_gc_delete_compacts_a_chunk_written_in_many_pieces(volume):
    m = volume.mount(None, "--compact-slices", "0")  # no online compaction: gc's to do
    path = m.path / "patched"
    content = bytearray(os.urandom(1 << 20))
    path.write_bytes(content)
    rng = random.Random(7)
    for _ in range(40):  # each patch, closed, is a slice of its own
        at, piece = rng.randrange(0, (1 << 20) + 8192), os.urandom(rng.randrange(1, 9000))
        with open(path, "r+b") as f:
            f.seek(at)
            f.write(piece)
        content[at : at + len(piece)] = piece
    m.umount()
    db = sqlite3.connect(volume.root / "meta.db")
    (blob,) = db.execute("SELECT slices FROM chunks").fetchone()
    assert len(blob) // 24 >= 40
    before = store_objects(volume)
    out = run_cli("gc", volume.meta_url, "--delete").stdout
    assert "compacted: 1 fragmented chunks" in out
    (blob,) = db.execute("SELECT slices FROM chunks").fetchone()
    ids = {int.from_bytes(blob[i + 4 : i + 12], "little") for i in range(0, len(blob), 24)}
    assert len(ids - {0}) == 2  # the first, mostly visible slice stays; the patches are one
    after = store_objects(volume)
    assert len(after) == 2 and len(after & before) == 1  # the patches' objects are deleted
    m = volume.mount()
    assert (m.path / "patched").read_bytes() == bytes(content)
    m.umount()
    assert run_cli("fsck", volume.meta_url, "--check-data").returncode == 0
