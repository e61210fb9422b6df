"""How a block is named in the store and laid out as bytes.

A slice (one contiguous write, volume-unique id) is stored as blocks of at most `block_size`
bytes. Block `i` of slice `id` holds slice bytes [i * block_size, (i + 1) * block_size) and is
stored at `chunks/<id // 1_000_000>/<id // 1000>/<id>_<i>_<len>`. Objects are immutable.

Each stored block starts with a 16-byte header so corruption is detected, never served:

    magic "RVBK" | version u8 | flags u8 | reserved u16 | plain length u32 | crc32 u32

flags bits 0-1: compression (0 none, 1 zstd, 2 lz4); bit 7: encrypted (reserved). The crc32
covers the header's other fields and the payload exactly as stored, so a flipped bit anywhere
is caught before decompression.
"""

from __future__ import annotations

import struct
import threading
import zlib

import lz4.block
import zstandard

CHUNK_SIZE = 64 << 20
MAGIC = b"RVBK"
VERSION = 1
HEADER = struct.Struct("<4sBBHII")
COMPRESSIONS = {"none": 0, "zstd": 1, "lz4": 2}
_COMPRESSION_MASK = 0x03


class BlockCorrupt(Exception):
    """A stored block failed verification; the message names the object and the reason."""


def block_key(slice_id: int, index: int, length: int) -> str:
    return f"chunks/{slice_id // 1_000_000}/{slice_id // 1000}/{slice_id}_{index}_{length}"


def block_lengths(slice_size: int, block_size: int) -> list[int]:
    """Lengths of the blocks a slice of `slice_size` bytes is cut into."""
    full, rest = divmod(slice_size, block_size)
    return [block_size] * full + ([rest] if rest else [])


def slice_keys(slice_id: int, slice_size: int, block_size: int) -> list[str]:
    """Object keys of every block of a slice."""
    return [block_key(slice_id, i, n) for i, n in enumerate(block_lengths(slice_size, block_size))]


_codecs = threading.local()  # zstandard (de)compressors must not be shared between threads


def _zstd() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    pair = getattr(_codecs, "zstd", None)
    if pair is None:
        pair = _codecs.zstd = (zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor())
    return pair


def encode_block(data: bytes | bytearray | memoryview, compression: str = "none") -> bytes:
    """The stored form of a block: header + (compressed) payload."""
    algo = COMPRESSIONS[compression]
    if algo == 1:
        payload = _zstd()[0].compress(data)
    elif algo == 2:
        payload = lz4.block.compress(data, store_size=False)
    else:
        payload = data
    if algo and len(payload) >= len(data):  # incompressible: store raw, say so in the flags
        algo, payload = 0, data
    crc = _checksum(HEADER.pack(MAGIC, VERSION, algo, 0, len(data), 0), payload)
    return b"".join((HEADER.pack(MAGIC, VERSION, algo, 0, len(data), crc), payload))


def _checksum(header_without_crc: bytes, payload) -> int:
    return zlib.crc32(payload, zlib.crc32(header_without_crc))


def decode_block(raw: bytes | memoryview, key: str) -> bytes:
    """The plaintext of a stored block; BlockCorrupt if anything does not check out."""
    if len(raw) < HEADER.size:
        raise BlockCorrupt(f"{key}: truncated ({len(raw)} bytes, shorter than the header)")
    magic, version, flags, reserved, plain_len, crc = HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise BlockCorrupt(f"{key}: bad magic {magic!r}")
    if version != VERSION:
        raise BlockCorrupt(f"{key}: unknown block format version {version}")
    payload = memoryview(raw)[HEADER.size :]
    if _checksum(HEADER.pack(magic, version, flags, reserved, plain_len, 0), payload) != crc:
        raise BlockCorrupt(f"{key}: checksum mismatch")
    algo = flags & _COMPRESSION_MASK
    try:
        if algo == 0:
            data = bytes(payload)
        elif algo == 1:
            data = _zstd()[1].decompress(payload, max_output_size=plain_len)
        elif algo == 2:
            data = lz4.block.decompress(payload, uncompressed_size=plain_len)
        else:
            raise BlockCorrupt(f"{key}: unknown compression {algo}")
    except (zstandard.ZstdError, lz4.block.LZ4BlockError) as e:
        raise BlockCorrupt(f"{key}: cannot decompress: {e}") from e
    if len(data) != plain_len:
        raise BlockCorrupt(f"{key}: length {len(data)} != header's {plain_len}")
    return data
