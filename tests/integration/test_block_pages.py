"""Blocks read by page through real mounts: a damaged page fails only the reads that touch it
(on an encrypted, compressed volume, where pages are encrypted and compressed each on their
own), and blocks of the old format (version 1) still read."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from support import Volume, run_cli

from riverfs.chunk import crypto
from riverfs.chunk.block import PAGE_SIZE, decode_block, encode_block, read_layout

SECRET = "correct horse battery staple"
BLOCK = 1 << 20
PAGES = BLOCK // PAGE_SIZE
DAMAGED = 5  # the page of block 1 that gets a flipped byte


def contents(size: int) -> bytes:
    """Pages that alternate: text (compresses), random bytes (stored raw), zeros."""
    text = (b"the quick brown fox jumps over the lazy dog " * 2000)[:PAGE_SIZE]
    kinds = [text, None, bytes(PAGE_SIZE)]
    return b"".join(kinds[i % 3] or os.urandom(PAGE_SIZE) for i in range(size // PAGE_SIZE))


def make_volume(tmp_path: Path, monkeypatch, *flags: str) -> Volume:
    monkeypatch.setenv("RIVERFS_PASSPHRASE", SECRET)
    root = tmp_path / "vol"
    root.mkdir()
    vol = Volume(root, f"sqlite://{root}/meta.db", f"file://{root}/store", root / "cache")
    run_cli("format", vol.meta_url, "--storage", vol.storage_url, "--block-size", "1M", *flags)
    return vol


@pytest.fixture
def enc(tmp_path: Path, monkeypatch):
    vol = make_volume(tmp_path, monkeypatch, "--encrypt", "--compress", "zstd")
    try:
        yield vol
    finally:
        vol.cleanup()


@pytest.fixture
def plain(tmp_path: Path, monkeypatch):
    vol = make_volume(tmp_path, monkeypatch)
    try:
        yield vol
    finally:
        vol.cleanup()


def block_objects(vol: Volume) -> dict[int, Path]:
    """The stored blocks of the volume's only file, by block index."""
    found = {}
    for p in (vol.root / "store" / "chunks").rglob("*"):
        if p.is_file():
            _, index, _ = p.name.split("_")
            found[int(index)] = p
    return found


def object_key(vol: Volume, path: Path) -> str:
    return path.relative_to(vol.root / "store").as_posix()


def block_cipher(vol: Volume):
    settings = json.loads((vol.root / "store" / "riverfs.json").read_text())
    if not settings.get("encryption"):
        return None
    return crypto.unlock(settings["encryption"], SECRET).blocks


def write_file(vol: Volume, data: bytes) -> None:
    m = vol.mount()
    (m.path / "f").write_bytes(data)
    m.umount()


def pread_errno(fd: int, size: int, offset: int) -> bytes | int:
    try:
        return os.pread(fd, size, offset)
    except OSError as e:
        return e.errno


def damage_page(vol: Volume) -> None:
    """Flip one byte in the middle of page DAMAGED of block 1."""
    path = block_objects(vol)[1]
    raw = bytearray(path.read_bytes())
    lo, hi = read_layout(raw, object_key(vol, path)).span(range(DAMAGED, DAMAGED + 1))
    raw[(lo + hi) // 2] ^= 0x20
    path.write_bytes(bytes(raw))


def test_a_flipped_byte_in_one_page_gives_eio_for_that_page_and_the_rest_reads(enc):
    data = contents(3 * BLOCK)
    write_file(enc, data)
    damage_page(enc)
    bad = BLOCK + DAMAGED * PAGE_SIZE  # file offset of the damaged page
    m = enc.mount(None, "--cache-size", "0")  # from the store: nothing cached on disk
    fd = os.open(m.path / "f", os.O_RDONLY | os.O_DIRECT)  # every read reaches the daemon
    try:
        # Reads that jump about, as a database's would: 4 KiB inside every page.
        for page in range(3 * PAGES):
            at = page * PAGE_SIZE + 8192
            got = pread_errno(fd, 4096, at)
            if at // PAGE_SIZE * PAGE_SIZE == bad:
                assert got == errno.EIO, f"page {page}"
            else:
                assert got == data[at : at + 4096], f"page {page}"
        assert pread_errno(fd, 8192, bad - 4096) == errno.EIO  # straddling into it
        assert pread_errno(fd, 4096, bad + PAGE_SIZE - 4096) == errno.EIO  # its last 4 KiB
        at = bad + PAGE_SIZE
        assert pread_errno(fd, 4096, at) == data[at : at + 4096]  # the next page's first
        assert pread_errno(fd, 4096, bad - 4096) == data[bad - 4096 : bad]
    finally:
        os.close(fd)
    log = (enc.cache_dir / "mount.log").read_text()
    assert f"page {DAMAGED}" in log and block_objects(enc)[1].name in log


def test_a_sequential_read_over_a_damaged_page_fails_only_that_page(enc):
    data = contents(3 * BLOCK)
    write_file(enc, data)
    damage_page(enc)
    bad = BLOCK + DAMAGED * PAGE_SIZE
    m = enc.mount(None, "--cache-size", "0")
    fd = os.open(m.path / "f", os.O_RDONLY | os.O_DIRECT)
    try:
        failed = []
        for at in range(0, len(data), 32 << 10):
            got = pread_errno(fd, 32 << 10, at)
            if got == errno.EIO:
                failed.append(at)
            else:
                assert got == data[at : at + (32 << 10)], at
        assert failed == [bad, bad + (32 << 10)]
    finally:
        os.close(fd)


@pytest.mark.parametrize("kind", ["enc", "plain"])
def test_blocks_of_the_old_format_still_read(kind, request):
    vol = request.getfixturevalue(kind)
    data = contents(3 * BLOCK) + b"tail"
    write_file(vol, data)
    cipher = block_cipher(vol)
    settings = json.loads((vol.root / "store" / "riverfs.json").read_text())
    for path in block_objects(vol).values():
        key = object_key(vol, path)
        plain = decode_block(path.read_bytes(), key, cipher)
        old = encode_block(plain, settings["compression"], cipher, key, version=1)
        path.write_bytes(bytes(old))
        assert path.read_bytes()[4] == 1
    m = vol.mount(None, "--cache-size", "64M")
    assert (m.path / "f").read_bytes() == data  # sequential
    fd = os.open(m.path / "f", os.O_RDONLY | os.O_DIRECT)
    try:
        for at in (3 * BLOCK - 4096, 70_000, BLOCK + 12_345, len(data) - 4):  # random
            assert os.pread(fd, 4096, at) == data[at : at + 4096], at
    finally:
        os.close(fd)
