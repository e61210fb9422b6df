"""Encrypted volumes through real mounts: tampering is caught, passphrases guard the key."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from support import Volume, is_mounted, run_cli

SECRET = "correct horse battery staple"
MARKER = b"plaintext marker that must never reach the disk"


@pytest.fixture
def enc(tmp_path: Path, monkeypatch) -> Volume:
    """An encrypted, zstd-compressed volume with its disk cache on (a file:// store has it off
    by default); the passphrase in the environment, as a user would set it."""
    monkeypatch.setenv("RIVERFS_PASSPHRASE", SECRET)
    root = tmp_path / "vol"
    root.mkdir()
    vol = Volume(root, f"sqlite://{root}/meta.db", f"file://{root}/store", root / "cache")
    run_cli("format", vol.meta_url, "--storage", vol.storage_url, "--encrypt", "--compress", "zstd")
    try:
        yield vol
    finally:
        vol.cleanup()


def objects(vol: Volume) -> set[Path]:
    return {p for p in (vol.root / "store" / "chunks").rglob("*") if p.is_file()}


def write_files(vol: Volume, names: list[str]) -> dict[str, set[Path]]:
    """Write each file through a mount (closed and unmounted); map it to its objects."""
    m = vol.mount(None, "--cache-size", "64M")
    made: dict[str, set[Path]] = {}
    for name in names:
        before = objects(vol)
        (m.path / name).write_bytes(MARKER + name.encode() * 50_000)
        os.sync()
        made[name] = objects(vol) - before
        assert made[name], name
    m.umount()
    return made


def read_errno(path: Path) -> int:
    try:
        path.read_bytes()
    except OSError as e:
        return e.errno
    return 0


def test_nothing_readable_on_disk_and_cache_names_reveal_nothing(enc):
    made = write_files(enc, ["a"])
    stored = [p.read_bytes() for p in objects(enc)] + [
        p.read_bytes() for p in (enc.cache_dir).rglob("*") if p.is_file()
    ]
    assert stored and not any(MARKER in data for data in stored)
    names = [p.name for p in (enc.cache_dir).rglob("blocks/*")]
    assert names, "the disk cache holds the blocks"
    keys = {p.name for p in made["a"]}
    assert all(len(n) == 64 and n not in keys and "chunks" not in n for n in names)
    m = enc.mount(None, "--cache-size", "64M")
    assert (m.path / "a").read_bytes() == MARKER + b"a" * 50_000


@pytest.mark.parametrize("damage", ["flip", "truncate", "swap"])
def test_tampered_objects_give_eio_and_the_other_files_still_read(enc, damage):
    made = write_files(enc, ["a", "b", "c"])
    (a,), (b,) = made["a"], made["b"]
    if damage == "flip":
        data = bytearray(a.read_bytes())
        data[len(data) // 2] ^= 0x40
        a.write_bytes(bytes(data))
    elif damage == "truncate":
        a.write_bytes(a.read_bytes()[:-100])
    else:
        da, db = a.read_bytes(), b.read_bytes()
        a.write_bytes(db)
        b.write_bytes(da)
    m = enc.mount(None, "--cache-size", "0")  # read from the store, not from the cache
    assert read_errno(m.path / "a") == errno.EIO
    if damage == "swap":
        assert read_errno(m.path / "b") == errno.EIO
    else:
        assert (m.path / "b").read_bytes() == MARKER + b"b" * 50_000
    assert (m.path / "c").read_bytes() == MARKER + b"c" * 50_000
    log = (enc.cache_dir / "mount.log").read_text()
    assert a.name in log  # the log names the damaged object


def test_a_wrong_passphrase_is_one_line_and_mounts_nothing(enc, tmp_path):
    write_files(enc, ["a"])
    mnt = tmp_path / "m"
    mnt.mkdir()
    for env in ({"RIVERFS_PASSPHRASE": "wrong"}, {"RIVERFS_PASSPHRASE": ""}):
        proc = run_cli("mount", enc.meta_url, str(mnt), "--background", env=env, check=False)
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "passphrase" in lines[0], proc.stderr
        assert not is_mounted(mnt)


def test_passphrase_change_keeps_the_data_and_retires_the_old_one(enc, tmp_path):
    write_files(enc, ["a"])
    env = {"RIVERFS_NEW_PASSPHRASE": "a new one"}
    out = run_cli("passphrase", "change", enc.meta_url, env=env)
    assert "passphrase changed" in out.stdout
    mnt = tmp_path / "m"
    mnt.mkdir()
    old = run_cli("mount", enc.meta_url, str(mnt), "--background", check=False)
    assert old.returncode == 1 and "wrong passphrase" in old.stderr
    key_file = tmp_path / "key"
    key_file.write_text("a new one\n")
    m = enc.mount(mnt, "--key-file", str(key_file))
    assert (m.path / "a").read_bytes() == MARKER + b"a" * 50_000
    assert "AES-256-GCM" in run_cli("status", enc.meta_url).stdout
