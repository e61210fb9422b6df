"""chunk/block.py: object naming and the verified block format."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import pytest

from riverfs.chunk.block import (
    HEADER,
    BlockCorrupt,
    block_key,
    block_lengths,
    decode_block,
    decode_range,
    encode_block,
    page_span,
    payload_offset,
    slice_keys,
)

KEY = "chunks/0/0/42_0_4096"
COMPRESSIBLE = b"riverfs " * 4096
ALGOS = ["none", "zstd", "lz4"]


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


@pytest.mark.parametrize("compression", ALGOS)
def test_no_single_bit_flip_anywhere_returns_wrong_data_or_other_errors(compression):
    data = (b"abcdefgh" * 40) + bytes(range(256))
    raw = encode_block(data, compression)
    problems = []
    for i in range(len(raw)):
        for bit in range(8):
            bad = bytearray(raw)
            bad[i] ^= 1 << bit
            try:
                out = decode_block(bytes(bad), KEY)
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


@pytest.mark.parametrize("compression", ALGOS)
def test_truncated_payload_raises_block_corrupt(compression):
    raw = encode_block(COMPRESSIBLE, compression)
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


def _range(raw: bytes, length: int, start: int, end: int) -> bytes:
    _, lo, hi = page_span(length, start, end)
    return decode_range(raw[: payload_offset(length)], raw[lo:hi], KEY, length, start, end)


def test_any_byte_range_of_an_uncompressed_block_reads_from_its_pages_alone():
    data = os.urandom((1 << 20) + 12345)
    raw = encode_block(data, "none")
    for start, end in [
        (0, 1),
        (0, 4096),
        (65535, 65537),
        (70000, 300000),
        (len(data) - 5, len(data)),
    ]:
        assert _range(raw, len(data), start, end) == data[start:end]


def test_a_flipped_byte_in_a_fetched_page_raises_block_corrupt():
    data = os.urandom(300_000)
    raw = bytearray(encode_block(data, "none"))
    raw[payload_offset(len(data)) + 70_000] ^= 1  # in page 1
    with pytest.raises(BlockCorrupt, match="page 1"):
        _range(bytes(raw), len(data), 69_000, 71_000)
    assert _range(bytes(raw), len(data), 0, 1000) == data[:1000]  # page 0 is intact


def test_a_range_of_a_block_whose_header_lies_about_its_length_raises_block_corrupt():
    raw = encode_block(os.urandom(5000), "none")
    with pytest.raises(BlockCorrupt, match=KEY):
        decode_range(raw[:100], raw[100:200], KEY, 6000, 0, 100)
