"""meta/slices.py: slice records and how overlapping slices resolve into visible segments."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from riverfs.meta.slices import Slice, decode_slices, encode_slices, visible_segments


def check_cover(segments: list[Slice], chunk_size: int) -> None:
    """Sorted, gap-free, non-overlapping, exactly [0, chunk_size), no empty segments."""
    pos = 0
    for seg in segments:
        assert seg.pos == pos
        assert seg.length > 0
        pos = seg.end
    assert pos == chunk_size


def test_encode_decode_round_trip_keeps_order():
    slices = [Slice(0, 7, 100, 0, 100), Slice(50, 8, 10, 2, 8), Slice(3, 0, 0, 0, 1)]
    assert decode_slices(encode_slices(slices)) == slices
    assert decode_slices(b"") == []
    assert decode_slices(None) == []


def test_empty_chunk_is_one_hole_covering_it():
    assert visible_segments([], 1000) == [Slice(0, 0, 0, 0, 1000)]


def test_later_slice_wins_where_slices_overlap():
    a = Slice(0, 1, 100, 0, 100)
    b = Slice(20, 2, 30, 0, 30)
    segs = visible_segments([a, b], 100)
    assert segs == [
        Slice(0, 1, 100, 0, 20),
        Slice(20, 2, 30, 0, 30),
        Slice(50, 1, 100, 50, 50),
    ]
    # The other order: the big one hides the small one completely.
    assert visible_segments([b, a], 100) == [Slice(0, 1, 100, 0, 100)]


def test_gaps_between_slices_become_id_zero_segments():
    segs = visible_segments([Slice(10, 5, 10, 0, 10), Slice(40, 6, 10, 0, 10)], 60)
    assert segs == [
        Slice(0, 0, 0, 0, 10),
        Slice(10, 5, 10, 0, 10),
        Slice(20, 0, 0, 0, 20),
        Slice(40, 6, 10, 0, 10),
        Slice(50, 0, 0, 0, 10),
    ]


def test_segments_keep_the_offset_into_the_stored_slice():
    # A slice that itself starts 7 bytes into stored slice 3, partly hidden at its front.
    segs = visible_segments([Slice(10, 3, 100, 7, 50), Slice(0, 4, 20, 0, 20)], 80)
    assert segs == [
        Slice(0, 4, 20, 0, 20),
        Slice(20, 3, 100, 17, 40),
        Slice(60, 0, 0, 0, 20),
    ]


def test_hole_record_hides_older_data():
    segs = visible_segments([Slice(0, 9, 100, 0, 100), Slice(30, 0, 0, 0, 70)], 100)
    assert segs == [Slice(0, 9, 100, 0, 30), Slice(30, 0, 0, 0, 70)]


def test_slice_beyond_chunk_end_is_clipped():
    segs = visible_segments([Slice(90, 1, 50, 0, 50)], 100)
    assert segs == [Slice(0, 0, 0, 0, 90), Slice(90, 1, 50, 0, 10)]


CHUNK = 200


@st.composite
def slice_lists(draw):
    n = draw(st.integers(0, 12))
    out = []
    for i in range(n):
        pos = draw(st.integers(0, CHUNK - 1))
        length = draw(st.integers(1, CHUNK - pos))
        offset = draw(st.integers(0, 30))
        hole = draw(st.booleans()) and draw(st.booleans())  # ~1 in 4 is a hole record
        if hole:
            out.append(Slice(pos, 0, 0, 0, length))
        else:
            out.append(Slice(pos, i + 1, offset + length + draw(st.integers(0, 5)), offset, length))
    return out


@settings(max_examples=300, deadline=None)
@given(slice_lists())
def test_visible_segments_match_a_naive_byte_painting_model(slices):
    # Model: paint every slice, oldest first, into an array of (slice id, offset in slice).
    model: list[tuple[int, int]] = [(0, 0)] * CHUNK
    for s in slices:
        for i in range(s.length):
            model[s.pos + i] = (s.id, s.offset + i) if s.id else (0, 0)

    segs = visible_segments(slices, CHUNK)
    check_cover(segs, CHUNK)
    seen: list[tuple[int, int]] = []
    for seg in segs:
        for i in range(seg.length):
            seen.append((seg.id, seg.offset + i) if seg.id else (0, 0))
        if seg.id:
            assert seg.offset + seg.length <= seg.size
    assert seen == model
