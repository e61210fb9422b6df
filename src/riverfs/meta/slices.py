"""Slice records of a chunk, and how overlapping slices resolve into what a reader sees.

A chunk row holds its slices as a blob of fixed-size records, in commit order: the later record
wins where two overlap. Each record says: at `pos` within the chunk, show `length` bytes of
slice `id` (whose whole size is `size`) starting at `offset` within that slice. Slice id 0 is a
hole: it reads as zeros (truncate writes one to hide data beyond the new end). A record with id 0
and size ALLOCATED is space fallocate allocated: it reads as zeros too, and counts in st_blocks
(meta/ranges.py).
"""

from __future__ import annotations

import bisect
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

    Slices paint from newest to oldest into the still-uncovered intervals, kept sorted (as
    their starts and ends) so that each slice finds those it meets by bisection: a chunk of
    thousands of small slices (4 KiB pages written back from an mmap, say) resolves in
    n log n, not in n times the number of holes left between them.
    """
    starts: list[int] = [0]  # the uncovered intervals, sorted and disjoint
    ends: list[int] = [chunk_size]
    painted: list[Slice] = []
    for s in reversed(slices):
        if not starts:
            break
        pos, end = s.pos, s.pos + s.length
        if pos >= end:
            continue
        first = i = bisect.bisect_right(ends, pos)  # the first interval ending after pos
        rest_starts: list[int] = []
        rest_ends: list[int] = []
        while i < len(starts) and starts[i] < end:
            start, stop = starts[i], ends[i]
            lo, hi = max(start, pos), min(stop, end)
            painted.append(Slice(lo, s.id, s.size, s.offset + (lo - pos), hi - lo))
            if start < lo:
                rest_starts.append(start)
                rest_ends.append(lo)
            if hi < stop:
                rest_starts.append(hi)
                rest_ends.append(stop)
            i += 1
        if i > first:
            starts[first:i] = rest_starts
            ends[first:i] = rest_ends
    painted.extend(
        Slice(start, 0, 0, 0, stop - start) for start, stop in zip(starts, ends, strict=True)
    )
    painted.sort(key=lambda seg: seg.pos)
    return painted
