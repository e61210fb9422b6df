"""How a block is named in the store and laid out as bytes.

A slice (one contiguous write, volume-unique id) is stored as blocks of at most `block_size`
bytes. Block `i` of slice `id` holds slice bytes [i * block_size, (i + 1) * block_size) and is
stored at `chunks/<id // 1_000_000>/<id // 1000>/<id>_<i>_<len>`. Objects are immutable.

Each stored block is self-checking, so corruption is detected, never served:

    header (20 bytes): magic "RVBK" | version u8 | flags u8 | page shift u8 | reserved u8
                       | plain length u32 | stored length u32 | header crc32 u32
    page table:        crc32 u32 of each page (1 << page shift bytes) of the stored payload
    payload:           the block, compressed or not, `stored length` bytes

flags bits 0-1: compression (0 none, 1 zstd, 2 lz4); bit 7: encrypted. The header crc covers
the header's other fields and the page table; each page crc covers its page. So a flipped bit
anywhere is caught before decompression, and a reader that needs a few KiB of an uncompressed
block can fetch and verify just the pages holding them (`page_span`).

An encrypted block's payload is `nonce (12 bytes) | AES-256-GCM ciphertext and tag` of the
(compressed) block, with the object key and the header fields as associated data: a block
moved to another key, truncated or altered fails authentication and is never served. On an
encrypted volume a block without the flag is refused too (it could be a planted one).
"""

from __future__ import annotations

import os
import struct
import threading
import zlib

import lz4.block
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CHUNK_SIZE = 64 << 20
MAGIC = b"RVBK"
VERSION = 1
HEADER = struct.Struct("<4sBBBBIII")
PAGE_SHIFT = 16  # 64 KiB pages
PAGE_SIZE = 1 << PAGE_SHIFT
COMPRESSIONS = {"none": 0, "zstd": 1, "lz4": 2}
_COMPRESSION_MASK = 0x03
ENCRYPTED = 0x80
NONCE = 12


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


def _pages(n: int) -> int:
    return -(-n // PAGE_SIZE)


def table_size(stored_len: int) -> int:
    return 4 * _pages(stored_len)


def payload_offset(stored_len: int) -> int:
    """Where the payload of a block with `stored_len` payload bytes starts."""
    return HEADER.size + table_size(stored_len)


def _page_crcs(payload) -> bytes:
    view = memoryview(payload)
    crcs = [zlib.crc32(view[i : i + PAGE_SIZE]) for i in range(0, len(view), PAGE_SIZE)]
    return struct.pack(f"<{len(crcs)}I", *crcs)


def _aad(key: str, flags: int, plain: int, stored: int) -> bytes:
    return b"%s|%d|%d|%d" % (key.encode(), flags, plain, stored)


def encode_block(
    data: bytes | bytearray | memoryview,
    compression: str = "none",
    cipher: AESGCM | None = None,
    key: str = "",
) -> bytes:
    """The stored form of block `key`: header, page table, (compressed, encrypted) payload."""
    algo = COMPRESSIONS[compression]
    if algo == 1:
        payload = _zstd()[0].compress(data)
    elif algo == 2:
        payload = lz4.block.compress(data, store_size=False)
    else:
        payload = data
    if algo and len(payload) >= len(data):  # incompressible: store raw, say so in the flags
        algo, payload = 0, data
    flags = algo
    if cipher is not None:
        flags |= ENCRYPTED
        nonce = os.urandom(NONCE)
        stored = NONCE + len(payload) + 16
        payload = nonce + cipher.encrypt(nonce, bytes(payload), _aad(key, flags, len(data), stored))
    table = _page_crcs(payload)
    fields = (MAGIC, VERSION, flags, PAGE_SHIFT, 0, len(data), len(payload))
    crc = zlib.crc32(table, zlib.crc32(HEADER.pack(*fields, 0)))
    return b"".join((HEADER.pack(*fields, crc), table, payload))


def _read_header(head, key: str, plain_len: int | None = None) -> tuple[int, int, int, bytes]:
    """Check a block's header and page table; return (flags, plain len, stored len, table)."""
    if len(head) < HEADER.size:
        raise BlockCorrupt(f"{key}: truncated ({len(head)} bytes, shorter than the header)")
    magic, version, flags, shift, reserved, plain, stored, crc = HEADER.unpack_from(head)
    if magic != MAGIC:
        raise BlockCorrupt(f"{key}: bad magic {bytes(magic)!r}")
    if version != VERSION:
        raise BlockCorrupt(f"{key}: unknown block format version {version}")
    table = bytes(head[HEADER.size : HEADER.size + table_size(stored)])
    if len(table) != table_size(stored):
        raise BlockCorrupt(f"{key}: truncated page table")
    fields = (magic, version, flags, shift, reserved, plain, stored, 0)
    if zlib.crc32(table, zlib.crc32(HEADER.pack(*fields))) != crc or shift != PAGE_SHIFT:
        raise BlockCorrupt(f"{key}: checksum mismatch in the header")
    if plain_len is not None and plain != plain_len:
        raise BlockCorrupt(f"{key}: header says {plain} bytes, the key {plain_len}")
    return flags, plain, stored, table


def _check_pages(payload, table: bytes, first_page: int, key: str) -> None:
    view = memoryview(payload)
    for n, i in enumerate(range(0, len(view), PAGE_SIZE)):
        (want,) = struct.unpack_from("<I", table, 4 * (first_page + n))
        if zlib.crc32(view[i : i + PAGE_SIZE]) != want:
            raise BlockCorrupt(f"{key}: checksum mismatch in page {first_page + n}")


def decode_block(
    raw: bytes | memoryview, key: str, cipher: AESGCM | None = None
) -> bytes | memoryview:
    """The plaintext of a stored block; BlockCorrupt if anything does not check out.

    An uncompressed, unencrypted block comes back as a view into `raw` (no copy).
    """
    flags, plain_len, stored, table = _read_header(raw, key)
    start = payload_offset(stored)
    payload = memoryview(raw)[start:]
    if len(payload) != stored:
        raise BlockCorrupt(f"{key}: {len(payload)} payload bytes, the header says {stored}")
    _check_pages(payload, table, 0, key)
    if bool(flags & ENCRYPTED) != (cipher is not None):
        if flags & ENCRYPTED:
            raise BlockCorrupt(f"{key}: block is encrypted, the volume is not")
        raise BlockCorrupt(f"{key}: block is not encrypted, the volume is")
    if cipher is not None:
        if stored < NONCE + 16:
            raise BlockCorrupt(f"{key}: encrypted payload of {stored} bytes is too short")
        try:
            payload = cipher.decrypt(
                payload[:NONCE], payload[NONCE:], _aad(key, flags, plain_len, stored)
            )
        except InvalidTag:
            raise BlockCorrupt(
                f"{key}: authentication failed (altered, or moved from another key)"
            ) from None
    algo = flags & _COMPRESSION_MASK
    try:
        if algo == 0:
            data = payload
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


def page_span(length: int, start: int, end: int) -> tuple[int, int, int]:
    """For bytes [start, end) of an uncompressed block of `length` bytes: the first page and
    the byte range [lo, hi) of the stored object holding those pages."""
    first, last = start >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT
    base = payload_offset(length)
    return first, base + (first << PAGE_SHIFT), base + min((last + 1) << PAGE_SHIFT, length)


def decode_range(head, pages, key: str, length: int, start: int, end: int) -> bytes:
    """Bytes [start, end) of an uncompressed block, from its verified header (`head`: the
    object's first `payload_offset(length)` bytes) and the pages `page_span` named."""
    flags, _, stored, table = _read_header(head, key, plain_len=length)
    if flags & (_COMPRESSION_MASK | ENCRYPTED) or stored != length:
        raise BlockCorrupt(f"{key}: compressed, cannot read a range")  # callers check first
    first, lo, hi = page_span(length, start, end)
    if len(pages) != hi - lo:
        raise BlockCorrupt(f"{key}: short range read ({len(pages)} of {hi - lo} bytes)")
    _check_pages(pages, table, first, key)
    offset = start - (first << PAGE_SHIFT)
    return bytes(memoryview(pages)[offset : offset + end - start])
