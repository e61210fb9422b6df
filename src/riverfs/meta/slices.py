"""Slice records of a chunk, and how overlapping slices resolve into what a reader sees.

A chunk row holds its slices as a blob of fixed-size records, in commit order: the later record
wins where two overlap. Each record says: at `pos` within the chunk, show `length` bytes of
slice `id` (whose whole size is `size`) starting at `offset` within that slice. Slice id 0 is a
hole: it reads as zeros (truncate writes one to hide data beyond the new end). A record with id 0
and size ALLOCATED is space fallocate allocated: it reads as zeros too, and counts in st_blocks
(meta/ranges.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_RECORD = struct.Struct("<IQIII")  # pos, id, size, offset, length
ALLOCATED = 1  # the size of an id-0 record that marks allocated space (fallocate), not a hole


@dataclass(slots=True, frozen=True)
class Slice:
    pos: int
    id: int
    size: int
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.pos + self.length


def encode_slices(slices: list[Slice]) -> bytes:
    return b"".join(_RECORD.pack(s.pos, s.id, s.size, s.offset, s.length) for s in slices)


def decode_slices(blob: bytes | None) -> list[Slice]:
    if not blob:
        return []
    return [Slice(*fields) for fields in _RECORD.iter_unpack(blob)]


def visible_segments(slices: list[Slice], chunk_size: int) -> list[Slice]:
    """The chunk as a sorted, gap-free list of segments covering [0, chunk_size).

    Each returned Slice says which bytes of which stored slice show at that position; id 0
    segments are zeros. Later slices in `slices` hide earlier ones where they overlap.
    """
    # Paint from newest to oldest into the still-uncovered intervals.
    uncovered: list[tuple[int, int]] = [(0, chunk_size)]
    painted: list[Slice] = []
    for s in reversed(slices):
        if not uncovered:
            break
        rest: list[tuple[int, int]] = []
        for start, end in uncovered:
            lo, hi = max(start, s.pos), min(end, s.end)
            if lo >= hi:
                rest.append((start, end))
                continue
            painted.append(Slice(lo, s.id, s.size, s.offset + (lo - s.pos), hi - lo))
            if start < lo:
                rest.append((start, lo))
            if hi < end:
                rest.append((hi, end))
        uncovered = rest
    painted.extend(Slice(start, 0, 0, 0, end - start) for start, end in uncovered)
    painted.sort(key=lambda seg: seg.pos)
    return painted
