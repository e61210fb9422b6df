"""How a block is named in the store and laid out as bytes.

A slice (one contiguous write, volume-unique id) is stored as blocks of at most `block_size`
bytes. Block `i` of slice `id` holds slice bytes [i * block_size, (i + 1) * block_size) and is
stored at `chunks/<id // 1_000_000>/<id // 1000>/<id>_<i>_<len>`. Objects are immutable.

Each stored block is self-checking, so corruption is detected, never served. Format version 2
(what is written) cuts the block's plain bytes into pages of 64 KiB (the last one shorter) and
stores each page on its own, so a reader can fetch and decode just the pages holding a range:

    header (20 bytes): magic "RVBK" | version u8 (2) | flags u8 | page shift u8 (16)
                       | reserved u8 (0) | plain length u32 | stored length u32
                       | header crc32 u32
    page table (n = ceil(plain length / 64 KiB) entries of u32):
        plain block (flags 0):     crc32 of each page                            4n bytes
        compressed, not encrypted: stored length of each page, then each crc32   8n bytes
        encrypted:                 stored length of each page                    4n bytes
    payload:           the pages in order, `stored length` bytes; page i starts where page
                       i - 1 ends (the first right after the table)

flags bits 0-1: the compression of the volume (0 none, 1 zstd, 2 lz4); bit 7: encrypted. A
compressed page is one zstd frame or one lz4 block of its plain bytes; a page that does not
shrink is stored raw, which its stored length says (equal to its plain length). An encrypted
page is `nonce (12 bytes) | AES-256-GCM ciphertext of the (compressed or raw) page | tag (16)`,
a fresh random nonce per page, with associated data binding the object key, the version, the
flags, the plain length, the page shift and the page index: a page moved to another offset,
to another block or key, pages reordered or swapped, a block truncated or its header altered
all fail authentication, page by page. On an encrypted volume a block without the flag is
refused (it could be a planted one).

The header crc covers the header's other fields and the table, so every page's place is
known before a page is read. Unencrypted pages carry a crc32 of their stored bytes, checked
before decompression. Encrypted pages carry none: the GCM tag already authenticates every
stored byte of the page (a flip is caught before decryption yields anything), and a reader
must check the tag anyway, so a crc would be a second pass over every byte on each write and
read that detects nothing the tag misses. A bad page fails only the reads that need it:
`BlockCorrupt.pages` names it, and the other pages of the block still decode.

A plain block (no compression, no encryption) has the same layout as in version 1, so its
pages sit at fixed offsets (`payload_offset`) and it decodes as a view of the stored bytes.

Nonces: a random 96-bit nonce per 64 KiB page keeps the chance of a repeat under 2^-32 for
up to 2^32 pages (256 TiB written under one volume key, NIST SP 800-38D's bound for random
nonces); version 1 spent one nonce per block.

Version 1 (still read, written only when asked: `encode_block(..., version=1)`) has the same
header, a table with the crc32 of each 64 KiB page of the stored payload, and a payload that
is the whole block compressed (or raw if it did not shrink, flags then say none), then, when
encrypted, `nonce | ciphertext and tag` of all of it with the object key and header fields
as associated data. Its compressed or encrypted blocks decode only whole; its plain blocks
read by page like version 2's.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from array import array
from dataclasses import dataclass
from itertools import accumulate

import lz4.block
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CHUNK_SIZE = 64 << 20
MAGIC = b"RVBK"
VERSION = 2
HEADER = struct.Struct("<4sBBBBIII")
PAGE_SHIFT = 16  # 64 KiB pages
PAGE_SIZE = 1 << PAGE_SHIFT
COMPRESSIONS = {"none": 0, "zstd": 1, "lz4": 2}
_COMPRESSION_MASK = 0x03
ENCRYPTED = 0x80
NONCE = 12
TAG = 16
SEALED = NONCE + TAG  # what encryption adds to a page


class BlockCorrupt(Exception):
    """A stored block failed verification; the message names the object and the reason.

    `pages` names the pages that are bad when the rest of the block is intact (a reader may
    still use the others); empty when the block as a whole is unusable (missing, bad header).
    """

    def __init__(self, message: str, pages: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.pages = pages


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
    """Bytes of the page table of a plain block (either version) of `stored_len` bytes."""
    return 4 * _pages(stored_len)


def payload_offset(stored_len: int) -> int:
    """Where the payload of a plain block with `stored_len` payload bytes starts (its object
    is `payload_offset(n) + n` bytes long, in either version)."""
    return HEADER.size + table_size(stored_len)


def head_size(length: int) -> int:
    """The most bytes the header and page table of any block of `length` plain bytes take:
    what to fetch to learn where its pages are."""
    return HEADER.size + max(8 * _pages(length), 4 * _pages(length + SEALED))


def _paged(version: int, flags: int) -> bool:
    return version >= 2 or not flags & (_COMPRESSION_MASK | ENCRYPTED)


@dataclass(slots=True, frozen=True)
class Layout:
    """A block's verified header and page table: where each page lies in the object."""

    key: str
    version: int
    flags: int
    length: int  # plain bytes
    bounds: array  # page i is object bytes [bounds[i], bounds[i + 1])
    crcs: bytes  # crc32 u32 of each stored page; empty for encrypted version-2 blocks

    @property
    def paged(self) -> bool:
        """Whether each page decodes on its own (else only the whole block does)."""
        return _paged(self.version, self.flags)

    @property
    def plain(self) -> bool:
        """Stored as is: each page is its plain bytes."""
        return not self.flags & (_COMPRESSION_MASK | ENCRYPTED)

    @property
    def size(self) -> int:
        """The length of the whole object."""
        return self.bounds[-1]

    @property
    def page_count(self) -> int:
        return len(self.bounds) - 1

    def span(self, pages: range) -> tuple[int, int]:
        """The object bytes [lo, hi) that hold `pages`."""
        return self.bounds[pages.start], self.bounds[pages.stop]


def read_layout(head, key: str, length: int | None = None) -> Layout:
    """Check a block's header and page table (`head`: at least its first `head_size` bytes,
    or the whole object); BlockCorrupt if they do not check out, or if the header's length
    is not `length`."""
    if len(head) < HEADER.size:
        raise BlockCorrupt(f"{key}: truncated ({len(head)} bytes, shorter than the header)")
    magic, version, flags, shift, reserved, plain, stored, crc = HEADER.unpack_from(head)
    if magic != MAGIC:
        raise BlockCorrupt(f"{key}: bad magic {bytes(magic)!r}")
    if version not in (1, 2):
        raise BlockCorrupt(f"{key}: unknown block format version {version}")
    fixed = version == 1 or not flags & (_COMPRESSION_MASK | ENCRYPTED)
    n = _pages(stored if version == 1 else plain)
    entry = 4 if fixed or flags & ENCRYPTED else 8
    table = bytes(head[HEADER.size : HEADER.size + entry * n])
    if len(table) != entry * n:
        raise BlockCorrupt(f"{key}: truncated page table")
    fields = (magic, version, flags, shift, reserved, plain, stored, 0)
    if zlib.crc32(table, zlib.crc32(HEADER.pack(*fields))) != crc or shift != PAGE_SHIFT:
        raise BlockCorrupt(f"{key}: checksum mismatch in the header")
    if length is not None and plain != length:
        raise BlockCorrupt(f"{key}: header says {plain} bytes, the key {length}")
    base = HEADER.size + len(table)
    if fixed:
        if version == 2 and stored != plain:
            raise BlockCorrupt(f"{key}: plain block of {plain} bytes stores {stored}")
        bounds = array("Q", (base + min(i << PAGE_SHIFT, stored) for i in range(n + 1)))
        return Layout(key, version, flags, plain, bounds, table)
    lengths = struct.unpack_from(f"<{n}I", table)
    if sum(lengths) != stored:
        raise BlockCorrupt(f"{key}: page table adds up to {sum(lengths)} bytes, not {stored}")
    bounds = array("Q", accumulate(lengths, initial=base))
    return Layout(key, version, flags, plain, bounds, b"" if flags & ENCRYPTED else table[4 * n :])


def _check_cipher(layout: Layout, cipher: AESGCM | None) -> None:
    if bool(layout.flags & ENCRYPTED) != (cipher is not None):
        if layout.flags & ENCRYPTED:
            raise BlockCorrupt(f"{layout.key}: block is encrypted, the volume is not")
        raise BlockCorrupt(f"{layout.key}: block is not encrypted, the volume is")


def _page_aad(key: str, flags: int, plain: int, index: int) -> bytes:
    return b"%s|2|%d|%d|%d|%d" % (key.encode(), flags, plain, PAGE_SHIFT, index)


def decode_page(
    layout: Layout, index: int, stored, cipher: AESGCM | None = None, out=None
) -> bytes | memoryview:
    """The plain bytes of page `index` of a `paged` block from its stored bytes (object bytes
    `layout.span(range(index, index + 1))`); BlockCorrupt naming the page if they do not check
    out. Written into `out` (a writable view of the page's plain length) when given, else
    returned (a plain page as a view of `stored`, no copy)."""
    _check_cipher(layout, cipher)
    key = layout.key
    want = min(PAGE_SIZE, layout.length - (index << PAGE_SHIFT))
    view = memoryview(stored)
    lo, hi = layout.bounds[index], layout.bounds[index + 1]
    if len(view) != hi - lo:
        raise BlockCorrupt(
            f"{key}: page {index} truncated ({len(view)} of {hi - lo} bytes)", (index,)
        )
    if layout.crcs:
        (expected,) = struct.unpack_from("<I", layout.crcs, 4 * index)
        if zlib.crc32(view) != expected:
            raise BlockCorrupt(f"{key}: checksum mismatch in page {index}", (index,))
    body = view
    if cipher is not None:
        if len(view) < SEALED or len(view) - SEALED > want:
            raise BlockCorrupt(f"{key}: page {index} cannot be {len(view)} bytes long", (index,))
        aad = _page_aad(key, layout.flags, layout.length, index)
        try:
            if len(view) - SEALED == want and out is not None:  # raw: decrypt in place
                cipher.decrypt_into(view[:NONCE], view[NONCE:], aad, out)
                return out
            body = cipher.decrypt(view[:NONCE], view[NONCE:], aad)
        except InvalidTag:
            raise BlockCorrupt(
                f"{key}: authentication failed in page {index} (altered, moved or truncated)",
                (index,),
            ) from None
    if len(body) != want:
        algo = layout.flags & _COMPRESSION_MASK
        try:
            if algo == 1:
                body = _zstd()[1].decompress(body, max_output_size=want)
            elif algo == 2:
                body = lz4.block.decompress(body, uncompressed_size=want)
            else:
                raise BlockCorrupt(f"{key}: page {index}: {len(body)} bytes, not {want}", (index,))
        except (zstandard.ZstdError, lz4.block.LZ4BlockError) as e:
            raise BlockCorrupt(f"{key}: cannot decompress page {index}: {e}", (index,)) from e
        if len(body) != want:
            raise BlockCorrupt(f"{key}: page {index} decompresses to {len(body)} bytes", (index,))
    if out is None:
        return body
    out[:] = body
    return out


def pages_corrupt(key: str, errors: list[BlockCorrupt]) -> BlockCorrupt:
    """One BlockCorrupt for the pages that failed (each error names one page)."""
    if len(errors) == 1:
        return errors[0]
    pages = tuple(p for e in errors for p in e.pages)
    why = "; ".join(str(e).removeprefix(f"{key}: ") for e in errors)
    return BlockCorrupt(f"{key}: {len(pages)} bad pages: {why}", pages)


def decode_block(
    raw: bytes | memoryview, key: str, cipher: AESGCM | None = None
) -> bytes | memoryview:
    """The plaintext of a stored block; BlockCorrupt if anything does not check out (naming
    every bad page in `pages` when the header is intact and pages are at fault).

    A plain block comes back as a view into `raw` (no copy); others as one read-only buffer.
    """
    layout = read_layout(raw, key)
    raw = memoryview(raw)
    if len(raw) > layout.size:
        raise BlockCorrupt(f"{key}: {len(raw)} bytes, longer than the {layout.size} it should be")
    if not layout.paged:
        return _decode_v1(layout, raw, cipher)
    _check_cipher(layout, cipher)
    plain = layout.plain
    out = None if plain else memoryview(bytearray(layout.length))
    bad: list[BlockCorrupt] = []
    bounds = layout.bounds
    for i in range(layout.page_count):
        try:
            dst = None if plain else out[i << PAGE_SHIFT : (i << PAGE_SHIFT) + PAGE_SIZE]
            decode_page(layout, i, raw[bounds[i] : bounds[i + 1]], cipher, dst)
        except BlockCorrupt as e:
            bad.append(e)
    if bad:
        raise pages_corrupt(key, bad)
    if plain:
        return raw[bounds[0] :]
    return out.toreadonly()


def _decode_v1(layout: Layout, raw: memoryview, cipher: AESGCM | None) -> bytes:
    """A version-1 compressed or encrypted block: checked page by page, decoded whole."""
    key, flags, bounds = layout.key, layout.flags, layout.bounds
    stored = layout.size - bounds[0]
    if len(raw) != layout.size:
        raise BlockCorrupt(f"{key}: {len(raw) - bounds[0]} payload bytes, the header says {stored}")
    for i in range(layout.page_count):
        (want,) = struct.unpack_from("<I", layout.crcs, 4 * i)
        if zlib.crc32(raw[bounds[i] : bounds[i + 1]]) != want:
            raise BlockCorrupt(f"{key}: checksum mismatch in page {i}")
    _check_cipher(layout, cipher)
    payload = raw[bounds[0] :]
    if cipher is not None:
        if stored < SEALED:
            raise BlockCorrupt(f"{key}: encrypted payload of {stored} bytes is too short")
        try:
            payload = cipher.decrypt(
                payload[:NONCE], payload[NONCE:], _v1_aad(key, flags, layout.length, stored)
            )
        except InvalidTag:
            raise BlockCorrupt(
                f"{key}: authentication failed (altered, or moved from another key)"
            ) from None
    algo = flags & _COMPRESSION_MASK
    try:
        if algo == 0:
            data = bytes(payload)
        elif algo == 1:
            data = _zstd()[1].decompress(payload, max_output_size=layout.length)
        elif algo == 2:
            data = lz4.block.decompress(payload, uncompressed_size=layout.length)
        else:
            raise BlockCorrupt(f"{key}: unknown compression {algo}")
    except (zstandard.ZstdError, lz4.block.LZ4BlockError) as e:
        raise BlockCorrupt(f"{key}: cannot decompress: {e}") from e
    if len(data) != layout.length:
        raise BlockCorrupt(f"{key}: length {len(data)} != header's {layout.length}")
    return data


def _page_crcs(payload) -> bytes:
    view = memoryview(payload)
    crcs = [zlib.crc32(view[i : i + PAGE_SIZE]) for i in range(0, len(view), PAGE_SIZE)]
    return struct.pack(f"<{len(crcs)}I", *crcs)


def _header(version: int, flags: int, plain: int, stored: int, table: bytes) -> bytes:
    fields = (MAGIC, version, flags, PAGE_SHIFT, 0, plain, stored)
    return HEADER.pack(*fields, zlib.crc32(table, zlib.crc32(HEADER.pack(*fields, 0))))


def _compress(algo: int, page) -> bytes:
    if algo == 1:
        return _zstd()[0].compress(page)
    return lz4.block.compress(page, store_size=False)


def encode_block(
    data: bytes | bytearray | memoryview,
    compression: str = "none",
    cipher: AESGCM | None = None,
    key: str = "",
    version: int = VERSION,
) -> bytes | bytearray:
    """The stored form of block `key`: header, page table, pages (compressed each, encrypted
    each). `version=1` writes the old format (for tests of old volumes)."""
    if version == 1:
        return _encode_v1(data, compression, cipher, key)
    view = memoryview(data).cast("B")
    n = len(view)
    algo = COMPRESSIONS[compression]
    pages = [view[i : i + PAGE_SIZE] for i in range(0, n, PAGE_SIZE)]
    shrank = False
    if algo:
        for i, page in enumerate(pages):
            packed = _compress(algo, page)
            if len(packed) < len(page):  # else stored raw, which its length says
                pages[i], shrank = packed, True
    if cipher is None:
        if not shrank:  # stored as a plain block: read as a view, pages at fixed offsets
            table = _page_crcs(view)
            return b"".join((_header(2, 0, n, n, table), table, view))
        lengths = [len(p) for p in pages]
        table = struct.pack(f"<{2 * len(pages)}I", *lengths, *(zlib.crc32(p) for p in pages))
        return b"".join((_header(2, algo, n, sum(lengths), table), table, *pages))
    flags = algo | ENCRYPTED
    lengths = [len(p) + SEALED for p in pages]
    table = struct.pack(f"<{len(pages)}I", *lengths)
    base = HEADER.size + len(table)
    out = bytearray(base + sum(lengths))
    out[:base] = _header(2, flags, n, sum(lengths), table) + table
    dst = memoryview(out)
    nonces = os.urandom(NONCE * len(pages))
    pos = base
    for i, page in enumerate(pages):
        nonce = nonces[i * NONCE : (i + 1) * NONCE]
        dst[pos : pos + NONCE] = nonce
        pos += NONCE
        cipher.encrypt_into(
            nonce, page, _page_aad(key, flags, n, i), dst[pos : pos + len(page) + TAG]
        )
        pos += len(page) + TAG
    return out


def _v1_aad(key: str, flags: int, plain: int, stored: int) -> bytes:
    return b"%s|%d|%d|%d" % (key.encode(), flags, plain, stored)


def _encode_v1(data, compression: str, cipher: AESGCM | None, key: str) -> bytes:
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
        stored = NONCE + len(payload) + TAG
        payload = nonce + cipher.encrypt(
            nonce, bytes(payload), _v1_aad(key, flags, len(data), stored)
        )
    table = _page_crcs(payload)
    return b"".join((_header(1, flags, len(data), len(payload), table), table, payload))
