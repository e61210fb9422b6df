"""chunk/block.py: object naming and the verified block format."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from riverfs.chunk.block import (
    HEADER,
    PAGE_SIZE,
    SEALED,
    BlockCorrupt,
    block_key,
    block_lengths,
    decode_block,
    decode_page,
    encode_block,
    head_size,
    payload_offset,
    read_layout,
    slice_keys,
)

KEY = "chunks/0/0/42_0_4096"
COMPRESSIBLE = b"riverfs " * 4096
ALGOS = ["none", "zstd", "lz4"]
CIPHER = AESGCM(bytes(range(32)))


def flags_of(raw: bytes) -> int:
    return HEADER.unpack_from(raw)[2]


@pytest.mark.parametrize("compression", ALGOS)
@pytest.mark.parametrize(
    "data",
    [b"", b"x", COMPRESSIBLE, os.urandom(10_000), bytes(1 << 16)],
    ids=["empty", "one", "text", "random", "zeros"],
)
def test_encode_decode_round_trip(compression, data):
    raw = encode_block(data, compression)
    assert decode_block(raw, KEY) == data
    assert decode_block(memoryview(raw), KEY) == data


@pytest.mark.parametrize("compression", ["zstd", "lz4"])
def test_compressible_data_is_stored_compressed(compression):
    raw = encode_block(COMPRESSIBLE, compression)
    assert len(raw) < len(COMPRESSIBLE) // 4
    assert flags_of(raw) & 0x03 != 0


@pytest.mark.parametrize("compression", ["zstd", "lz4"])
def test_incompressible_data_is_stored_raw(compression):
    data = os.urandom(8192)
    raw = encode_block(data, compression)
    assert flags_of(raw) & 0x03 == 0
    assert raw[payload_offset(len(data)) :] == data
    assert decode_block(raw, KEY) == data


def test_encode_accepts_bytearray_and_memoryview():
    data = bytearray(COMPRESSIBLE)
    for compression in ALGOS:
        assert decode_block(encode_block(data, compression), KEY) == bytes(data)
        assert decode_block(encode_block(memoryview(data), compression), KEY) == bytes(data)


@pytest.mark.parametrize("compression", ALGOS)
def test_flipped_payload_byte_raises_block_corrupt_naming_the_key(compression):
    raw = bytearray(encode_block(COMPRESSIBLE, compression))
    raw[HEADER.size + (len(raw) - HEADER.size) // 2] ^= 0x55
    with pytest.raises(BlockCorrupt, match="42_0_4096"):
        decode_block(bytes(raw), KEY)


@pytest.mark.parametrize("cipher", [None, CIPHER], ids=["clear", "encrypted"])
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("compression", ALGOS)
def test_no_single_bit_flip_anywhere_returns_wrong_data_or_other_errors(
    compression, version, cipher
):
    data = (b"abcdefgh" * 40) + bytes(range(256))
    raw = encode_block(data, compression, cipher, KEY, version=version)
    problems = []
    for i in range(len(raw)):
        for bit in range(8):
            bad = bytearray(raw)
            bad[i] ^= 1 << bit
            try:
                out = decode_block(bytes(bad), KEY, cipher)
            except BlockCorrupt as e:
                if KEY not in str(e):
                    problems.append(f"byte {i} bit {bit}: message without key: {e}")
            except Exception as e:
                problems.append(f"byte {i} bit {bit}: {type(e).__name__}: {e}")
            else:
                # Only bits that do not describe the data may go unnoticed (reserved bytes).
                if out != data:
                    problems.append(f"byte {i} bit {bit}: wrong data")
    assert problems == []


def test_lz4_block_whose_header_length_has_its_top_bit_flipped_raises_block_corrupt():
    raw = bytearray(encode_block(COMPRESSIBLE, "lz4"))
    raw[11] ^= 0x80  # top bit of the plain length (not covered by the checksum)
    with pytest.raises(BlockCorrupt, match=KEY):
        decode_block(bytes(raw), KEY)


@pytest.mark.parametrize("cut", [0, 1, HEADER.size - 1])
def test_block_shorter_than_header_raises_block_corrupt(cut):
    raw = encode_block(b"hello world", "none")
    with pytest.raises(BlockCorrupt, match=KEY):
        decode_block(raw[:cut], KEY)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("compression", ALGOS)
def test_truncated_payload_raises_block_corrupt(compression, version):
    raw = encode_block(COMPRESSIBLE, compression, version=version)
    with pytest.raises(BlockCorrupt, match=KEY):
        decode_block(raw[:-1], KEY)
    with pytest.raises(BlockCorrupt, match=KEY):
        decode_block(raw[: HEADER.size], KEY)


def test_bad_magic_raises_block_corrupt():
    raw = bytearray(encode_block(b"hello", "none"))
    raw[0:4] = b"XXXX"
    with pytest.raises(BlockCorrupt, match=f"{KEY}.*magic"):
        decode_block(bytes(raw), KEY)


def test_unknown_version_raises_block_corrupt():
    raw = bytearray(encode_block(b"hello", "none"))
    raw[4] = 99
    with pytest.raises(BlockCorrupt, match=KEY):
        decode_block(bytes(raw), KEY)


@pytest.mark.parametrize("compression", ALGOS)
@pytest.mark.parametrize("delta", [-1, 1, 1000])
def test_wrong_plain_length_in_header_raises_block_corrupt(compression, delta):
    raw = bytearray(encode_block(COMPRESSIBLE, compression))
    fields = list(HEADER.unpack_from(raw))
    fields[5] += delta  # plain length
    struct.pack_into(HEADER.format, raw, 0, *fields)
    with pytest.raises(BlockCorrupt, match=KEY):
        decode_block(bytes(raw), KEY)


def test_unknown_compression_flag_raises_block_corrupt():
    raw = bytearray(encode_block(b"hello", "none"))
    raw[5] = 3
    with pytest.raises(BlockCorrupt, match=KEY):
        decode_block(bytes(raw), KEY)


def test_block_key_layout_matches_design():
    assert block_key(1_234_567_890, 3, 4096) == "chunks/1234/1234567/1234567890_3_4096"
    assert block_key(7, 0, 1) == "chunks/0/0/7_0_1"
    assert block_key(999_999, 1, 5) == "chunks/0/999/999999_1_5"
    assert block_key(1_000_000, 2, 6) == "chunks/1/1000/1000000_2_6"


@pytest.mark.parametrize(
    ("size", "block_size", "lengths"),
    [(0, 4, []), (1, 4, [1]), (4, 4, [4]), (8, 4, [4, 4]), (10, 4, [4, 4, 2])],
)
def test_block_lengths_and_slice_keys(size, block_size, lengths):
    assert block_lengths(size, block_size) == lengths
    assert slice_keys(5, size, block_size) == [
        f"chunks/0/0/5_{i}_{n}" for i, n in enumerate(lengths)
    ]
    assert sum(lengths) == size


THREADS_SCRIPT = """
import os, sys
from concurrent.futures import ThreadPoolExecutor
from riverfs.chunk.block import decode_block, encode_block

compression = sys.argv[1]
blocks = [os.urandom(1000) * (64 + i % 7) + bytes(i % 251) * 1000 for i in range(200)]

def attempt(fn, arg):
    try:
        return fn(arg)
    except Exception as e:
        return e

with ThreadPoolExecutor(4) as pool:
    encoded = list(pool.map(lambda b: attempt(lambda d: encode_block(d, compression), b), blocks))
    errors = [repr(e) for e in encoded if isinstance(e, Exception)]
    if not errors:
        decoded = list(pool.map(lambda r: attempt(lambda x: decode_block(x, "k"), r), encoded))
        errors = [repr(e) for e in decoded if isinstance(e, Exception)]
        if not errors and decoded != blocks:
            errors = ["wrong data"]
print(f"{len(errors)} errors", errors[:2])
sys.exit(1 if errors else 0)
"""


@pytest.mark.parametrize("compression", ALGOS)
def test_encode_and_decode_are_safe_from_several_threads(compression):
    """The block store runs them in a thread pool, so they must not share unsafe state.

    Runs in a subprocess: a shared zstd context used from several threads can segfault.
    """
    proc = subprocess.run(
        [sys.executable, "-c", THREADS_SCRIPT, compression],
        capture_output=True,
        text=True,
        timeout=120,
    )
    crashed = f" (killed by signal {-proc.returncode})" if proc.returncode < 0 else ""
    assert proc.returncode == 0, f"exit {proc.returncode}{crashed}: {proc.stdout[-500:]}"


# ---- format version 2: pages compressed and encrypted each on its own ----------------------

LENGTHS = [0, 1, PAGE_SIZE - 1, PAGE_SIZE, PAGE_SIZE + 1, 4 << 20]
CODECS = [(c, None) for c in ALGOS] + [(c, CIPHER) for c in ALGOS]
CODEC_IDS = [f"{c}{'+aes' if k else ''}" for c, k in CODECS]


def mixed(n: int) -> bytes:
    """`n` bytes whose pages alternate: compressible, incompressible, zeros."""
    kinds = [(COMPRESSIBLE * 2)[:PAGE_SIZE], os.urandom(PAGE_SIZE), bytes(PAGE_SIZE)]
    return b"".join(kinds[i % 3] for i in range(-(-n // PAGE_SIZE)))[:n]


def page_of(raw, layout, index: int):
    lo, hi = layout.span(range(index, index + 1))
    return raw[lo:hi]


@pytest.mark.parametrize(("compression", "cipher"), CODECS, ids=CODEC_IDS)
@pytest.mark.parametrize("length", LENGTHS)
def test_v2_blocks_round_trip_whole_and_page_by_page(compression, cipher, length):
    data = mixed(length)
    raw = encode_block(data, compression, cipher, KEY)
    assert HEADER.unpack_from(raw)[1] == 2
    assert bytes(decode_block(raw, KEY, cipher)) == data
    layout = read_layout(raw[: head_size(length)], KEY, length)  # the head alone is enough
    assert layout.paged and layout.size == len(raw)
    assert layout.page_count == -(-length // PAGE_SIZE)
    for i in range(layout.page_count):
        page = decode_page(layout, i, page_of(raw, layout, i), cipher)
        assert bytes(page) == data[i * PAGE_SIZE : (i + 1) * PAGE_SIZE]


@pytest.mark.parametrize("cipher", [None, CIPHER], ids=["clear", "encrypted"])
@pytest.mark.parametrize("compression", ["zstd", "lz4"])
def test_each_page_is_compressed_alone_and_incompressible_pages_are_stored_raw(compression, cipher):
    data = mixed(3 * PAGE_SIZE)  # compressible, random, zeros
    raw = encode_block(data, compression, cipher, KEY)
    layout = read_layout(raw, KEY)
    sizes = [hi - lo for lo, hi in zip(layout.bounds, layout.bounds[1:], strict=False)]
    extra = SEALED if cipher else 0
    assert sizes[0] < PAGE_SIZE // 4 + extra
    assert sizes[1] == PAGE_SIZE + extra  # raw: its stored length says so
    assert sizes[2] < 1000 + extra


def test_a_plain_v2_block_is_laid_out_as_v1_and_decodes_as_a_view():
    data = os.urandom(PAGE_SIZE * 3 + 5)
    raw = encode_block(data)
    old = encode_block(data, version=1)
    assert len(raw) == payload_offset(len(data)) + len(data)  # what fsck expects of plain
    assert raw[HEADER.size :] == old[HEADER.size :]  # same table, same payload
    assert HEADER.unpack_from(raw)[2:7] == HEADER.unpack_from(old)[2:7]  # only the version
    for blob in (raw, old):
        out = decode_block(blob, KEY)
        assert isinstance(out, memoryview) and out.obj is blob and out == data
    # Incompressible data on a compressed volume is stored the same way.
    assert encode_block(data, "zstd") == raw


@pytest.mark.parametrize(("compression", "cipher"), CODECS, ids=CODEC_IDS)
def test_v1_blocks_still_decode(compression, cipher):
    for data in (COMPRESSIBLE, os.urandom(70_000), b""):
        raw = encode_block(data, compression, cipher, KEY, version=1)
        assert HEADER.unpack_from(raw)[1] == 1
        assert bytes(decode_block(raw, KEY, cipher)) == data
        layout = read_layout(raw, KEY, len(data))
        # Only plain v1 blocks read by page; the others decode whole.
        assert layout.paged == (layout.plain and HEADER.unpack_from(raw)[2] == 0)


@pytest.mark.parametrize(("compression", "cipher"), CODECS, ids=CODEC_IDS)
def test_a_flipped_byte_in_page_k_fails_page_k_alone(compression, cipher):
    length = 5 * PAGE_SIZE + 100
    data = mixed(length)
    for k in (0, 2, 5):
        raw = bytearray(encode_block(data, compression, cipher, KEY))
        layout = read_layout(raw, KEY)
        lo, hi = layout.span(range(k, k + 1))
        raw[(lo + hi) // 2] ^= 0x10
        with pytest.raises(BlockCorrupt, match=f"{KEY}.*page.* {k}") as exc:
            decode_block(bytes(raw), KEY, cipher)
        assert exc.value.pages == (k,)
        for i in range(layout.page_count):
            stored = page_of(bytes(raw), layout, i)
            if i == k:
                with pytest.raises(BlockCorrupt, match=f"page {k}") as exc:
                    decode_page(layout, i, stored, cipher)
                assert exc.value.pages == (k,)
            else:
                want = data[i * PAGE_SIZE : (i + 1) * PAGE_SIZE]
                assert bytes(decode_page(layout, i, stored, cipher)) == want


@pytest.mark.parametrize("compression", ALGOS)
def test_a_flipped_byte_in_the_page_table_fails_the_whole_block(compression):
    raw = bytearray(encode_block(mixed(3 * PAGE_SIZE), compression, CIPHER, KEY))
    raw[HEADER.size + 5] ^= 1
    with pytest.raises(BlockCorrupt, match="header") as exc:
        decode_block(bytes(raw), KEY, CIPHER)
    assert exc.value.pages == ()


def _rewrite(raw: bytes, lengths: list[int], pages: list[bytes], **fields) -> bytes:
    """A block with another page table and pages, and a header with a valid crc (what an
    attacker can forge: only the AES-GCM tags stand in the way)."""
    import zlib

    magic, version, flags, shift, reserved, plain, _, _ = HEADER.unpack_from(raw)
    plain = fields.get("plain", plain)
    flags = fields.get("flags", flags)
    table = struct.pack(f"<{len(lengths)}I", *lengths)
    head = (magic, version, flags, shift, reserved, plain, sum(lengths))
    crc = zlib.crc32(table, zlib.crc32(HEADER.pack(*head, 0)))
    return HEADER.pack(*head, crc) + table + b"".join(pages)


def _split(raw: bytes):
    layout = read_layout(raw, KEY)
    pages = [page_of(raw, layout, i) for i in range(layout.page_count)]
    return layout, [len(p) for p in pages], pages


@pytest.mark.parametrize("compression", ALGOS)
def test_encrypted_pages_cannot_be_swapped_moved_dropped_or_relabelled(compression):
    data = os.urandom(3 * PAGE_SIZE)
    raw = bytes(encode_block(data, compression, CIPHER, KEY))
    _, lengths, pages = _split(raw)
    assert len(set(lengths)) == 1  # all raw: same length, so a swap fits the table

    swapped = _rewrite(raw, lengths, [pages[1], pages[0], pages[2]])
    with pytest.raises(BlockCorrupt, match="authentication failed") as exc:
        decode_block(swapped, KEY, CIPHER)
    assert exc.value.pages == (0, 1)

    other_key = "chunks/0/0/43_0_196608"
    other = bytes(encode_block(os.urandom(3 * PAGE_SIZE), compression, CIPHER, other_key))
    _, _, theirs = _split(other)
    planted = _rewrite(raw, lengths, [pages[0], theirs[1], pages[2]])
    with pytest.raises(BlockCorrupt) as exc:
        decode_block(planted, KEY, CIPHER)
    assert exc.value.pages == (1,)
    with pytest.raises(BlockCorrupt):  # a whole block moved to another key
        decode_block(raw, other_key, CIPHER)

    dropped = _rewrite(raw, lengths[:2], pages[:2], plain=2 * PAGE_SIZE)
    with pytest.raises(BlockCorrupt):
        decode_block(dropped, KEY, CIPHER)

    relabelled = _rewrite(raw, lengths, pages, flags=HEADER.unpack_from(raw)[2] ^ 0x01)
    with pytest.raises(BlockCorrupt):
        decode_block(relabelled, KEY, CIPHER)


@pytest.mark.parametrize(("compression", "cipher"), CODECS, ids=CODEC_IDS)
def test_a_truncated_v2_block_fails_the_pages_it_cut(compression, cipher):
    data = mixed(3 * PAGE_SIZE)
    raw = encode_block(data, compression, cipher, KEY)
    layout = read_layout(raw, KEY)
    for cut in (1, layout.size - layout.bounds[2]):
        with pytest.raises(BlockCorrupt, match=f"{KEY}.*truncated") as exc:
            decode_block(raw[:-cut], KEY, cipher)
        assert exc.value.pages == (2,)
    with pytest.raises(BlockCorrupt) as exc:
        decode_block(raw[: layout.bounds[0] - 1], KEY, cipher)  # into the page table
    assert exc.value.pages == ()
    with pytest.raises(BlockCorrupt, match="longer"):
        decode_block(bytes(raw) + b"x", KEY, cipher)


def test_an_encrypted_block_on_a_clear_volume_and_the_reverse_are_refused():
    for version in (1, 2):
        sealed = encode_block(b"secret" * 20000, "zstd", CIPHER, KEY, version=version)
        with pytest.raises(BlockCorrupt, match="is encrypted"):
            decode_block(sealed, KEY)
        planted = encode_block(b"planted" * 20000, "zstd", version=version)
        with pytest.raises(BlockCorrupt, match="not encrypted"):
            decode_block(planted, KEY, CIPHER)
        layout = read_layout(planted, KEY)
        if layout.paged:
            with pytest.raises(BlockCorrupt, match="not encrypted"):
                decode_page(layout, 0, page_of(planted, layout, 0), CIPHER)
